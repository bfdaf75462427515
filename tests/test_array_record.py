"""ArrayRecord conversion and reading, on real data: BreastMNIST and nih_cxr1000 at 32 px."""
import os
import pickle
from concurrent import futures

import grain
import numpy as np
import pytest
from absl import flags

from medssl_jax.data import array_record
from medssl_jax.data import catalog
from medssl_jax.data import manifest

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def breast(medmnist_dir):
  return {s: catalog.open_source("breastmnist", s, data_dir=medmnist_dir) for s in SPLITS}


@pytest.fixture(scope="module")
def nih(shared_data):
  return {s: manifest.open_nih_cxr1000(s, shared_data / "nih_cxr1000", image_size=32)
          for s in SPLITS}


@pytest.fixture(scope="module")
def nih_dir(nih, tmp_path_factory):
  out = tmp_path_factory.mktemp("nih")
  array_record.convert(nih, out, records_per_shard=128, progress=False)
  return out


def _assert_same_records(original, converted):
  assert len(converted) == len(original)
  for i in range(len(original)):
    want, got = original[i], converted[i]
    assert set(got) == set(want)
    for key in want:
      assert np.array_equal(got[key], want[key]), (i, key)
      assert np.asarray(got[key]).dtype == np.asarray(want[key]).dtype, (i, key)
      assert np.shape(got[key]) == np.shape(want[key]), (i, key)


def _assert_same_attributes(original, converted):
  for key in ("name", "split", "num_classes", "class_names", "multi_label", "image_shape"):
    assert getattr(converted, key) == getattr(original, key), key
  np.testing.assert_array_equal(converted.labels, original.labels)
  np.testing.assert_array_equal(converted.groups, original.groups)
  assert converted.labels.dtype == original.labels.dtype
  assert converted.groups.dtype == original.groups.dtype


def _shard_stats(directory):
  return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
          for p in directory.glob("*.array_record")}


def test_breastmnist_round_trip(breast, tmp_path, capsys):
  result = array_record.convert(breast, tmp_path, records_per_shard=200, progress=True)
  assert "780/780 images (100%)" in capsys.readouterr().err  # with images/s and ETA
  assert result.written == ("train-00000-of-00003.array_record",
                            "train-00001-of-00003.array_record",
                            "train-00002-of-00003.array_record",
                            "val-00000-of-00001.array_record",
                            "test-00000-of-00001.array_record")
  assert result.metadata["complete"] and result.metadata["splits"]["train"]["num_records"] == 546
  for split in SPLITS:
    converted = array_record.ArrayRecordSource(tmp_path, split)
    _assert_same_attributes(breast[split], converted)
    _assert_same_records(breast[split], converted)
    assert not converted.has_groups and not hasattr(converted, "group_names")
  assert array_record.verify(tmp_path) == 546 + 78 + 156


def test_nih_round_trip_with_patient_names(nih, nih_dir, tmp_path):
  for split in SPLITS:
    converted = array_record.ArrayRecordSource(nih_dir, split)
    _assert_same_attributes(nih[split], converted)
    _assert_same_records(nih[split], converted)
    assert converted.has_groups and converted.group_names == nih[split].group_names
    assert converted.image_shape == (32, 32, 1)
  # A converted source is a source too: converting it again gives identical records.
  again = {s: array_record.ArrayRecordSource(nih_dir, s) for s in SPLITS}
  array_record.convert(again, tmp_path, records_per_shard=128, progress=False)
  for split in SPLITS:
    with np.load(nih_dir / f"{split}-meta.npz") as a, np.load(tmp_path / f"{split}-meta.npz") as b:
      assert {k: a[k].tolist() for k in a.files} == {k: b[k].tolist() for k in b.files}


class _MultiLabel:
  """BreastMNIST val as a 3-label multi-label set (no multi-label file is in shared data)."""
  name, split, num_classes, class_names, multi_label = "multi", "val", 3, ("a", "b", "c"), True

  def __init__(self, source):
    self.images, self.image_shape, self.groups = source.images, source.image_shape, source.groups
    self.labels = np.stack([source.labels, 1 - source.labels, source.labels], 1)

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    return {"image": self.images[i], "label": self.labels[i], "group": self.groups[i],
            "index": np.int64(i)}


def test_multi_label_round_trip(breast, tmp_path):
  original = _MultiLabel(breast["val"])
  array_record.convert({"val": original}, tmp_path, progress=False)
  converted = array_record.ArrayRecordSource(tmp_path, "val")
  assert converted.multi_label and converted.labels.shape == (78, 3)
  _assert_same_attributes(original, converted)
  _assert_same_records(original, converted)


def test_reads_by_index_like_other_sources(nih, nih_dir):
  converted = array_record.ArrayRecordSource(nih_dir, "val")
  assert converted[-1]["index"] == len(converted) - 1
  with pytest.raises(IndexError):
    converted[len(converted)]
  batch = converted.__getitems__([5, 199, 0, 130])
  assert [int(r["index"]) for r in batch] == [5, 199, 0, 130]
  np.testing.assert_array_equal(batch[1]["image"], nih["val"][199]["image"])
  with futures.ThreadPoolExecutor(4) as pool:  # grain reads from several threads
    images = list(pool.map(lambda i: converted[i]["image"], range(len(converted))))
  np.testing.assert_array_equal(np.stack(images), nih["val"].images)


def test_grain_pipeline_and_pickle(nih, nih_dir):
  converted = array_record.ArrayRecordSource(nih_dir, "train")
  converted[0]  # opens its readers; pickling must drop them
  clone = pickle.loads(pickle.dumps(converted))
  assert not any(clone._readers)  # pylint: disable=protected-access
  _assert_same_attributes(nih["train"], clone)
  np.testing.assert_array_equal(clone[123]["image"], nih["train"][123]["image"])

  dataset = grain.MapDataset.source(clone).shuffle(seed=3).batch(64, drop_remainder=False)
  seen = []
  for batch in dataset:
    np.testing.assert_array_equal(batch["image"], nih["train"].images[batch["index"]])
    np.testing.assert_array_equal(batch["group"], nih["train"].groups[batch["index"]])
    seen.extend(batch["index"].tolist())
  assert sorted(seen) == list(range(len(converted))) and seen != sorted(seen)

  # In a grain worker process: the source travels pickled and reopens its shards there.
  flags.FLAGS.mark_as_parsed()  # grain's workers read absl flags
  iterator = iter(grain.MapDataset.source(converted).batch(100).to_iter_dataset()
                  .mp_prefetch(grain.MultiprocessingOptions(num_workers=1)))
  first = next(iterator)
  np.testing.assert_array_equal(first["image"], nih["train"].images[:100])


def test_rerun_after_crash_writes_only_missing_shards(breast, tmp_path, monkeypatch):
  splits = {"train": breast["train"]}  # 546 records: 6 shards of 100
  real_write = array_record._write_shard  # pylint: disable=protected-access
  calls = []

  def crash_in_fourth_shard(path, records, options):
    calls.append(path.name)
    if len(calls) == 4:
      records = (r if i < 50 else _raise(KeyboardInterrupt()) for i, r in enumerate(records))
    real_write(path, records, options)

  monkeypatch.setattr(array_record, "_write_shard", crash_in_fourth_shard)
  with pytest.raises(KeyboardInterrupt):
    array_record.convert(splits, tmp_path, records_per_shard=100, progress=False)
  names = array_record.shard_names("train", 546, 100)
  assert sorted(p.name for p in tmp_path.glob("*.array_record")) == names[:3]
  assert (tmp_path / (names[3] + ".tmp")).exists()  # the half-written shard, under its temp name
  with pytest.raises(ValueError, match="incomplete"):
    array_record.ArrayRecordSource(tmp_path, "train")

  # Also lose a finished shard, as if a copy went wrong.
  (tmp_path / names[1]).unlink()
  before = _shard_stats(tmp_path)
  calls.clear()
  monkeypatch.setattr(array_record, "_write_shard", lambda *a: (calls.append(a[0].name),
                                                                real_write(*a)))
  result = array_record.convert(splits, tmp_path, records_per_shard=100, progress=False)
  assert calls == [names[1]] + names[3:] and list(result.written) == calls
  assert list(result.kept) == [names[0], names[2]]
  after = _shard_stats(tmp_path)
  assert all(after[name] == before[name] for name in result.kept)  # untouched
  assert not list(tmp_path.glob("*.tmp"))
  assert array_record.verify(tmp_path) == 546
  _assert_same_records(breast["train"], array_record.ArrayRecordSource(tmp_path, "train"))

  calls.clear()  # a complete conversion run again writes nothing
  result = array_record.convert(splits, tmp_path, records_per_shard=100, progress=False)
  assert calls == [] and result.written == () and list(result.kept) == names


def _raise(error):
  raise error


def test_corrupt_swapped_and_truncated_shards_are_detected(breast, tmp_path):
  splits = {"train": breast["train"]}
  array_record.convert(splits, tmp_path, records_per_shard=100, progress=False)
  names = array_record.shard_names("train", 546, 100)
  data = bytearray((tmp_path / names[1]).read_bytes())
  data[len(data) // 3:len(data) // 3 + 16] = bytes(16)  # bit rot inside the records
  (tmp_path / names[1]).write_bytes(data)
  a, b = tmp_path / names[2], tmp_path / names[3]  # valid files, wrong records
  a_bytes = a.read_bytes()
  a.write_bytes(b.read_bytes())
  b.write_bytes(a_bytes)
  data = (tmp_path / names[4]).read_bytes()
  (tmp_path / names[4]).write_bytes(data[:len(data) // 2])
  with pytest.raises(array_record.VerificationError) as error:
    array_record.verify(tmp_path)
  message = str(error.value)
  assert "4 bad shard(s)" in message
  assert all(name in message for name in names[1:5])
  assert names[0] not in message and names[5] not in message

  # Converting again repairs exactly the bad shards.
  result = array_record.convert(splits, tmp_path, records_per_shard=100, progress=False)
  assert list(result.written) == names[1:5] and list(result.kept) == [names[0], names[5]]
  assert array_record.verify(tmp_path) == 546


def test_mismatch_after_writing_raises(breast, tmp_path, monkeypatch):
  real_write = array_record._write_shard  # pylint: disable=protected-access

  def write_wrong_record(path, records, options):
    records = list(records)
    records[7] = records[8]
    real_write(path, records, options)

  monkeypatch.setattr(array_record, "_write_shard", write_wrong_record)
  with pytest.raises(array_record.VerificationError, match="record 7 of the shard differs"):
    array_record.convert({"val": breast["val"]}, tmp_path, progress=False)


def test_refuses_a_directory_holding_something_else(breast, nih, tmp_path):
  array_record.convert({"val": breast["val"]}, tmp_path, progress=False)
  with pytest.raises(ValueError, match="holds a different conversion.*name"):
    array_record.convert({"val": nih["val"]}, tmp_path, progress=False)
  with pytest.raises(ValueError, match="different conversion.*records_per_shard"):
    array_record.convert({"val": breast["val"]}, tmp_path, records_per_shard=10, progress=False)
  other = tmp_path / "other"
  other.mkdir()
  (other / "notes.txt").write_text("mine")
  with pytest.raises(ValueError, match="not empty and holds no conversion.*notes.txt"):
    array_record.convert({"val": breast["val"]}, other, progress=False)
  assert (other / "notes.txt").read_text() == "mine" and len(os.listdir(other)) == 1


def test_missing_directory_split_or_shard(breast, tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    array_record.ArrayRecordSource(tmp_path / "nowhere", "train")
  with pytest.raises(FileNotFoundError, match="holds no conversion"):
    array_record.ArrayRecordSource(tmp_path, "train")
  array_record.convert({"val": breast["val"], "test": breast["test"]}, tmp_path, progress=False)
  with pytest.raises(ValueError, match="no split 'train'; it has: val, test"):
    array_record.ArrayRecordSource(tmp_path, "train")
  (tmp_path / "test-00000-of-00001.array_record").unlink()
  with pytest.raises(FileNotFoundError, match="test-00000-of-00001.array_record"):
    array_record.ArrayRecordSource(tmp_path, "test")
  with pytest.raises(array_record.VerificationError, match="missing"):
    array_record.verify(tmp_path)

"""Tests for medssl_jax.data.sources on the real MedMNIST files in shared/data."""
import logging
import pickle

import grain
import numpy as np
import pytest

from medssl_jax.data import catalog
from medssl_jax.data import sources
from medssl_jax.data import splits


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
  """No test reads the user's data dir or cache, and none can reach the internet."""
  monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))
  monkeypatch.setenv(sources.MEDMNIST_URL_ENV, "http://127.0.0.1:9/{name}.npz")


@pytest.fixture(scope="module")
def pneumonia(medmnist_dir):
  return {split: sources.MedMNISTSource("pneumoniamnist", split, data_dir=medmnist_dir)
          for split in splits.SPLITS}


def _write_medmnist(path, images, labels):
  """Writes an .npz in the official layout: the same arrays for each split."""
  arrays = {}
  for split in splits.SPLITS:
    arrays[f"{split}_images"] = images
    arrays[f"{split}_labels"] = labels
  np.savez_compressed(path, **arrays)


def test_pneumonia_splits_and_arrays(pneumonia):
  assert {s: len(src) for s, src in pneumonia.items()} == {"train": 4708, "val": 524,
                                                           "test": 624}
  src = pneumonia["train"]
  assert src.images.shape == (4708, 28, 28, 1) and src.images.dtype == np.uint8
  assert src.image_shape == (28, 28, 1)
  assert src.labels.shape == (4708,) and src.labels.dtype == np.int32
  assert set(np.unique(src.labels)) == {0, 1}
  assert src.num_classes == 2 and not src.multi_label
  assert src.class_names == ("normal", "pneumonia")
  np.testing.assert_array_equal(src.groups, np.arange(4708))
  assert src.groups.dtype == np.int64


def test_bloodmnist_is_rgb_with_eight_classes(medmnist_dir):
  src = catalog.open_source("bloodmnist", "test", data_dir=medmnist_dir)
  assert len(src) == 3421
  assert src.image_shape == (28, 28, 3)
  assert src.num_classes == 8 and len(src.class_names) == 8
  assert set(np.unique(src.labels)) == set(range(8))


def test_record_fields(pneumonia):
  src = pneumonia["val"]
  record = src[3]
  assert set(record) == {"image", "label", "group", "index"}
  assert record["image"].shape == (28, 28, 1) and record["image"].dtype == np.uint8
  np.testing.assert_array_equal(record["image"], src.images[3])
  assert record["label"].dtype == np.int32 and record["label"].shape == ()
  assert record["group"].dtype == np.int64 and record["group"] == 3
  assert record["index"].dtype == np.int64 and record["index"] == 3
  assert src[-1]["index"] == len(src) - 1
  with pytest.raises(IndexError):
    src[len(src)]


def test_records_are_read_only(pneumonia):
  with pytest.raises(ValueError):
    pneumonia["test"][0]["image"][0, 0, 0] = 1


def test_repr_names_data_set_split_and_size(pneumonia):
  assert repr(pneumonia["test"]) == (
      "MedMNISTSource(name='pneumoniamnist', split='test', size=624)")


def test_bad_split(medmnist_dir):
  with pytest.raises(ValueError, match="known: train, val, test"):
    sources.MedMNISTSource("pneumoniamnist", "validation", data_dir=medmnist_dir)


@pytest.mark.parametrize("opener", [
    lambda: catalog.open_source("nosuchmnist", "train"),
    lambda: sources.MedMNISTSource("nosuchmnist", "train"),
    lambda: sources.resolve_medmnist_file("nosuchmnist", None, None),
])
def test_unknown_name_lists_known_names(opener):
  with pytest.raises(ValueError, match="nosuchmnist") as info:
    opener()
  for name in ("pneumoniamnist", "bloodmnist", "chestmnist", "tissuemnist"):
    assert name in str(info.value)


def test_info_table_covers_the_twelve_2d_sets():
  assert len(sources.MEDMNIST_INFO) == 12
  for name, info in sources.MEDMNIST_INFO.items():
    assert info.task in sources.TASKS, name
    assert info.md5 is None or len(info.md5) == 32, name
  assert sources.MEDMNIST_INFO["chestmnist"].multi_label
  assert sources.MEDMNIST_INFO["chestmnist"].num_classes == 14


def test_env_data_dir_is_honoured(monkeypatch, medmnist_dir, tmp_path):
  monkeypatch.setenv(sources.DATA_DIR_ENV, str(medmnist_dir))
  cache = tmp_path / "cache"
  path = sources.resolve_medmnist_file("pneumoniamnist", None, cache)
  assert path == medmnist_dir / "pneumoniamnist.npz"
  assert len(sources.MedMNISTSource("breastmnist", "val", cache_dir=cache)) == 78
  assert not cache.exists()


def test_config_data_dir_wins_over_env(monkeypatch, medmnist_dir, tmp_path):
  monkeypatch.setenv(sources.DATA_DIR_ENV, str(tmp_path))
  _write_medmnist(tmp_path / "breastmnist.npz", np.zeros((2, 28, 28), np.uint8),
                  np.zeros((2, 1), np.uint8))
  path = sources.resolve_medmnist_file("breastmnist", medmnist_dir, None)
  assert path == medmnist_dir / "breastmnist.npz"


def test_missing_in_data_dir_uses_cache_and_warns(tmp_path, caplog):
  data_dir, cache = tmp_path / "data", tmp_path / "cache"
  data_dir.mkdir()
  cache.mkdir()
  _write_medmnist(cache / "breastmnist.npz", np.zeros((2, 28, 28), np.uint8),
                  np.ones((2, 1), np.uint8))
  with caplog.at_level(logging.WARNING):
    path = sources.resolve_medmnist_file("breastmnist", data_dir, cache)
  assert path == cache / "breastmnist.npz"
  assert str(data_dir) in caplog.text
  assert not (data_dir / "breastmnist.npz").exists()


def test_corrupt_npz_names_the_path(tmp_path):
  path = tmp_path / "pneumoniamnist.npz"
  path.write_bytes(b"this is not an npz file" * 10)
  with pytest.raises(ValueError, match=str(path)):
    sources.MedMNISTSource("pneumoniamnist", "train", data_dir=tmp_path)


def test_truncated_npz_names_the_path(medmnist_dir, tmp_path):
  path = tmp_path / "breastmnist.npz"
  path.write_bytes((medmnist_dir / "breastmnist.npz").read_bytes()[:100_000])
  with pytest.raises(ValueError, match=str(path)):
    sources.MedMNISTSource("breastmnist", "test", data_dir=tmp_path)


def test_missing_keys_are_named(tmp_path):
  path = tmp_path / "breastmnist.npz"
  np.savez(path, train_images=np.zeros((2, 28, 28), np.uint8))
  with pytest.raises(ValueError, match="train_labels"):
    sources.MedMNISTSource("breastmnist", "train", data_dir=tmp_path)


def test_mismatched_file_is_rejected(medmnist_dir, tmp_path):
  # BloodMNIST's RGB images under PneumoniaMNIST's name: wrong channels for the name.
  (tmp_path / "pneumoniamnist.npz").symlink_to(medmnist_dir / "bloodmnist.npz")
  with pytest.raises(ValueError, match="pneumoniamnist.npz.*test_images"):
    sources.MedMNISTSource("pneumoniamnist", "test", data_dir=tmp_path)


def test_out_of_range_labels_are_rejected(tmp_path):
  _write_medmnist(tmp_path / "breastmnist.npz", np.zeros((3, 28, 28), np.uint8),
                  np.array([[0], [1], [2]], np.uint8))
  with pytest.raises(ValueError, match="labels"):
    sources.MedMNISTSource("breastmnist", "train", data_dir=tmp_path)


def test_multi_label_layout(tmp_path):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, size=(5, 14), dtype=np.uint8)
  _write_medmnist(tmp_path / "chestmnist.npz",
                  rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8), labels)
  src = catalog.open_source("chestmnist", "val", data_dir=tmp_path)
  assert src.multi_label and src.num_classes == 14
  assert src.labels.shape == (5, 14) and src.labels.dtype == np.int32
  np.testing.assert_array_equal(src.labels, labels)
  record = src[2]
  assert record["label"].shape == (14,) and record["label"].dtype == np.int32
  assert record["image"].shape == (28, 28, 1)


def test_pickle_round_trip_is_small(pneumonia):
  src = pneumonia["train"]
  blob = pickle.dumps(src)
  assert len(blob) < 1000  # The path travels, not the arrays.
  clone = pickle.loads(blob)
  assert repr(clone) == repr(src)
  np.testing.assert_array_equal(clone.images, src.images)
  np.testing.assert_array_equal(clone.labels, src.labels)


def test_grain_map_dataset_batches_records(pneumonia):
  batch = grain.MapDataset.source(pneumonia["test"]).batch(4)[0]
  assert batch["image"].shape == (4, 28, 28, 1)
  assert batch["label"].shape == (4,)
  np.testing.assert_array_equal(batch["index"], np.arange(4))

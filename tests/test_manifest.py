"""Tests for the CSV manifest source on the real nih_cxr1000 PNGs and sample images."""
import collections
import csv
import pickle

import numpy as np
import pytest
from PIL import Image

from medssl_jax.data import catalog
from medssl_jax.data import decode
from medssl_jax.data import manifest
from medssl_jax.data import sources
from medssl_jax.data import table as table_lib


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
  """No test finds the data through the user's environment unless it sets it itself."""
  monkeypatch.delenv(manifest.NIH_CXR1000_DIR_ENV, raising=False)
  monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)


@pytest.fixture(scope="module")
def nih_dir(shared_data):
  return shared_data / "nih_cxr1000"


@pytest.fixture(scope="module")
def index_rows(nih_dir):
  with open(nih_dir / "index.csv", newline="") as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def nih(nih_dir):
  return {split: manifest.open_nih_cxr1000(split, data_dir=nih_dir)
          for split in ("train", "val", "test")}


def _rows_of(index_rows, split):
  csv_split = manifest.NIH_CXR1000_SPLITS[split]
  return [row for row in index_rows if row["split"] == csv_split]


def _write_csv(path, rows, header):
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  return path


def test_split_sizes_match_index_csv(nih, index_rows):
  counts = collections.Counter(row["split"] for row in index_rows)
  assert {s: len(src) for s, src in nih.items()} == {
      "train": counts["train"], "val": counts["valid"], "test": counts["test"]}
  assert {s: len(src) for s, src in nih.items()} == {"train": 600, "val": 200, "test": 200}
  assert [src.split for src in nih.values()] == ["train", "val", "test"]


def test_images_are_the_decoded_pngs(nih, nih_dir, index_rows):
  src = nih["train"]
  assert src.images.shape == (600, 64, 64, 1) and src.images.dtype == np.uint8
  assert src.image_shape == (64, 64, 1) and src.name == "nih_cxr1000"
  rows = _rows_of(index_rows, "train")
  for i in (0, 137, 599):  # R = G = B, so the grey image is any one channel
    rgb = np.asarray(Image.open(nih_dir / rows[i]["relpath"]))
    np.testing.assert_array_equal(src.images[i, ..., 0], rgb[..., 0])
  assert src.images.std() > 20  # real X-rays, not a blank array


def test_labels_and_class_names_follow_the_csv(nih, index_rows):
  for split, src in nih.items():
    expected = [int(row["label"]) for row in _rows_of(index_rows, split)]
    np.testing.assert_array_equal(src.labels, expected)
    assert src.labels.dtype == np.int32
    assert src.num_classes == 2 and not src.multi_label
    assert src.class_names == ("normal", "abnormal")


def test_groups_are_patients_with_one_id_across_splits(nih, index_rows):
  ids = {}
  for split, src in nih.items():
    patients = [row["patient_id"] for row in _rows_of(index_rows, split)]
    assert src.groups.dtype == np.int64
    assert [src.group_names[g] for g in src.groups] == patients
    for patient, group in zip(patients, src.groups):
      assert ids.setdefault(patient, group) == group  # same patient => same id, any split
  assert len(set(ids.values())) == len(ids) == 264  # different patients => different ids
  # The shipped split leaks patients (data README): ids make that visible.
  by_split = {s: set(src.groups.tolist()) for s, src in nih.items()}
  leaked = ((by_split["train"] & by_split["val"]) | (by_split["train"] & by_split["test"])
            | (by_split["val"] & by_split["test"]))
  assert len(leaked) == 30


def test_record_fields_and_pickle(nih):
  src = nih["val"]
  record = src[5]
  assert set(record) == {"image", "label", "group", "index"}
  np.testing.assert_array_equal(record["image"], src.images[5])
  assert record["label"] == src.labels[5] and record["group"] == src.groups[5]
  assert record["index"] == 5 and src[-1]["index"] == len(src) - 1
  with pytest.raises(IndexError):
    src[len(src)]
  with pytest.raises(ValueError, match="read-only"):
    record["image"][0, 0, 0] = 1
  copy = pickle.loads(pickle.dumps(src))
  np.testing.assert_array_equal(copy.images, src.images)
  np.testing.assert_array_equal(copy.groups, src.groups)
  assert copy.split == "val" and not copy.images.flags.writeable


def test_resize_to_32(nih_dir, nih):
  src = manifest.open_nih_cxr1000("test", nih_dir, image_size=32)
  assert src.images.shape == (200, 32, 32, 1) and src.images.dtype == np.uint8
  # A downsample keeps each image's content: mean brightness moves by little.
  full = nih["test"].images.reshape(200, -1).mean(1)
  small = src.images.reshape(200, -1).mean(1)
  assert np.abs(full - small).max() < 3


def test_unknown_split_and_name(nih_dir):
  with pytest.raises(ValueError, match="known: train, val, test"):
    manifest.open_nih_cxr1000("valid", data_dir=nih_dir)
  with pytest.raises(ValueError, match="nih_cxr1000") as info:
    catalog.open_source("nosuchset", "train")
  assert "pneumoniamnist" in str(info.value)


def test_data_dir_resolution_from_environment(nih_dir, shared_data, monkeypatch):
  monkeypatch.setenv(sources.DATA_DIR_ENV, str(shared_data / "medmnist"))  # the usual setting
  assert manifest.resolve_nih_cxr1000_dir() == shared_data / "medmnist" / ".." / "nih_cxr1000"
  monkeypatch.setenv(sources.DATA_DIR_ENV, str(shared_data))
  assert manifest.resolve_nih_cxr1000_dir() == nih_dir
  monkeypatch.setenv(manifest.NIH_CXR1000_DIR_ENV, str(nih_dir))
  assert len(manifest.open_nih_cxr1000("val")) == 200
  assert manifest.resolve_nih_cxr1000_dir(shared_data) == nih_dir  # the parent works too


def test_missing_directory_says_where_it_looked(tmp_path, monkeypatch):
  missing = tmp_path / "nowhere"
  with pytest.raises(FileNotFoundError) as info:
    manifest.open_nih_cxr1000("train", data_dir=missing)
  message = str(info.value)
  assert str(missing / "index.csv") in message
  assert manifest.NIH_CXR1000_DIR_ENV in message and "--config.data.dir" in message
  with pytest.raises(FileNotFoundError, match=manifest.NIH_CXR1000_DIR_ENV):
    manifest.open_nih_cxr1000("train")  # nothing set at all
  monkeypatch.setenv(sources.DATA_DIR_ENV, str(tmp_path / "medmnist"))
  with pytest.raises(FileNotFoundError, match="medmnist/nih_cxr1000/index.csv"):
    manifest.open_nih_cxr1000("train")


def test_small_manifest_of_real_files(tmp_path, nih_dir, index_rows):
  rows = index_rows[:2] + [r for r in index_rows if r["label"] == "1"][:2]
  path = _write_csv(tmp_path / "cases.csv",
                    [[r["relpath"], r["label"]] for r in rows], ["file", "y"])
  src = manifest.CSVManifestSource(path, nih_dir, path_column="file", label_column="y")
  assert src.image_shape == (64, 64, 1) and len(src) == 4
  np.testing.assert_array_equal(src.labels, [int(r["label"]) for r in rows])
  np.testing.assert_array_equal(src.groups, np.arange(4))  # no group column: one per image
  assert src.num_classes == 2 and src.class_names == ("0", "1")  # no name column
  assert src.name == tmp_path.name  # default: the manifest's folder


def test_colour_image_resized_with_centre_crop(tmp_path, shared_data):
  retina = shared_data / "images" / "retina.jpg"
  path = _write_csv(tmp_path / "eye.csv", [[str(retina)]], ["path"])  # absolute path
  src = manifest.CSVManifestSource(path, path_column="path", image_size=32, channels=3,
                                   name="eye")
  assert src.images.shape == (1, 32, 32, 3) and src.name == "eye"
  assert src.num_classes == 0 and src.labels.tolist() == [-1]  # unlabelled
  image = src.images[0].astype(int)
  assert np.abs(image[..., 0] - image[..., 2]).mean() > 10  # colour kept, not grey
  # The fundus is a bright disc on black: the centre is bright, the corners dark.
  assert image[12:20, 12:20].mean() > 4 * image[:3, :3].mean()


def test_non_square_image_is_centre_cropped(tmp_path, nih_dir, index_rows):
  original = np.asarray(Image.open(nih_dir / index_rows[0]["relpath"]).convert("L"))
  Image.fromarray(original[:, 16:48]).save(tmp_path / "narrow.png")  # 64 high, 32 wide
  path = _write_csv(tmp_path / "m.csv", [["narrow.png"]], ["p"])
  image = manifest.CSVManifestSource(path, tmp_path, path_column="p", image_size=32).images[0]
  # Short side 32 is kept as is; the crop takes rows 16..48 of the 64.
  np.testing.assert_array_equal(image[..., 0], original[16:48, 16:48])


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path, nih_dir, index_rows):
  original = np.asarray(Image.open(nih_dir / index_rows[0]["relpath"]).convert("L"))
  Image.fromarray(original.astype(np.uint16) * 257).save(tmp_path / "deep.png")
  assert Image.open(tmp_path / "deep.png").mode.startswith("I")
  path = _write_csv(tmp_path / "m.csv", [["deep.png"]], ["p"])
  src = manifest.CSVManifestSource(path, tmp_path, path_column="p")
  np.testing.assert_array_equal(src.images[0, ..., 0], original)


def test_images_of_different_sizes_need_image_size(tmp_path, nih_dir, index_rows, shared_data):
  ihc = shared_data / "images" / "ihc.png"
  path = _write_csv(tmp_path / "m.csv", [[index_rows[0]["relpath"]], [str(ihc)]], ["p"])
  with pytest.raises(ValueError, match="ihc.png.*image_size"):
    manifest.CSVManifestSource(path, nih_dir, path_column="p")
  src = manifest.CSVManifestSource(path, nih_dir, path_column="p", image_size=48)
  assert src.images.shape == (2, 48, 48, 1)


def test_missing_image_names_its_path(tmp_path, nih_dir, index_rows):
  path = _write_csv(tmp_path / "m.csv", [[index_rows[0]["relpath"]], ["train/no_such.png"]],
                    ["p"])
  with pytest.raises(FileNotFoundError, match=str(nih_dir / "train" / "no_such.png")):
    manifest.CSVManifestSource(path, nih_dir, path_column="p")


@pytest.mark.parametrize("content", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_corrupt_image_names_its_path(tmp_path, nih_dir, index_rows, content):
  bad = tmp_path / "broken.png"
  bad.write_bytes(content)
  path = _write_csv(tmp_path / "m.csv", [[str(nih_dir / index_rows[0]["relpath"])], [str(bad)]],
                    ["p"])
  with pytest.raises(ValueError, match=f"cannot decode image {bad}"):
    manifest.CSVManifestSource(path, path_column="p")


def test_truncated_png_names_its_path(tmp_path, nih_dir, index_rows):
  data = (nih_dir / index_rows[0]["relpath"]).read_bytes()
  bad = tmp_path / "cut.png"
  bad.write_bytes(data[: len(data) // 2])
  path = _write_csv(tmp_path / "m.csv", [["cut.png"]], ["p"])
  with pytest.raises(ValueError, match="cut.png"):
    manifest.CSVManifestSource(path, tmp_path, path_column="p")


def test_bad_manifests(tmp_path, nih_dir):
  with pytest.raises(FileNotFoundError, match="nope.csv"):
    manifest.CSVManifestSource(tmp_path / "nope.csv", path_column="p")
  index = nih_dir / "index.csv"
  with pytest.raises(ValueError, match="no column filename.*relpath"):
    manifest.CSVManifestSource(index, path_column="filename")
  with pytest.raises(ValueError, match="split='validation'.*valid"):
    manifest.CSVManifestSource(index, split="validation", split_column="split",
                               path_column="relpath")
  with pytest.raises(ValueError, match="is not a class id"):
    manifest.CSVManifestSource(index, path_column="relpath", label_column="label_name")


# Tables, multi-label columns, resizing, bad files, DICOM.


def _real_images(nih_dir, index_rows, n):
  return [str(nih_dir / row["relpath"]) for row in index_rows[:n]]


@pytest.mark.parametrize("policy,expected", [
    ("ignore", [[1, -1, -1], [0, 1, -1]]),
    ("zeros", [[1, 0, -1], [0, 1, 0]]),
    ("ones", [[1, 1, -1], [0, 1, 1]]),
])
def test_multi_label_blank_is_unknown_and_minus_one_follows_policy(
    tmp_path, nih_dir, index_rows, policy, expected):
  # Column b of row 0 is uncertain ("-1"), column c of row 0 blank, of row 1 "-1.0".
  path = _write_csv(tmp_path / "m.csv", [[p, *v] for p, v in zip(
      _real_images(nih_dir, index_rows, 2), [["1.0", "-1", ""], ["0", "1.0", "-1.0"]])],
                    ["path", "a", "b", "c"])
  table = table_lib.read_csv_table(path, path_column="path", label_columns=("a", "b", "c"),
                                   uncertain=policy)
  assert table.multi_label and table.class_names == ("a", "b", "c") and table.num_classes == 3
  assert table.labels.dtype == np.int8
  np.testing.assert_array_equal(table.labels, expected)
  src = manifest.TableSource(table)
  np.testing.assert_array_equal(src.labels, expected)
  assert src.multi_label and src[1]["label"].tolist() == expected[1]


def test_bad_label_values_and_policy_are_refused(tmp_path, nih_dir, index_rows):
  path = _write_csv(tmp_path / "m.csv", [[_real_images(nih_dir, index_rows, 1)[0], "yes"]],
                    ["path", "a"])
  with pytest.raises(ValueError, match="line 2: a='yes' is not a binary label"):
    table_lib.read_csv_table(path, path_column="path", label_columns=("a",))
  with pytest.raises(ValueError, match="ignore, zeros, ones"):
    table_lib.read_csv_table(path, path_column="path", label_columns=("a",), uncertain="u-one")
  with pytest.raises(ValueError, match="not both"):
    table_lib.read_csv_table(path, path_column="path", label_column="a", label_columns=("a",))


def test_csv_table_splits_groups_and_select(tmp_path, nih_dir, index_rows):
  images = _real_images(nih_dir, index_rows, 4)
  rows = [[images[0], "train", "p1", "0"], [images[1], "valid", "p1", ""],
          [images[2], "test", "", "1"], [images[3], "", "p2", "1"]]
  path = _write_csv(tmp_path / "m.csv", rows, ["path", "split", "patient", "y"])
  table = table_lib.read_csv_table(path, path_column="path", label_column="y",
                                   group_column="patient", split_column="split", name="mine")
  assert table.name == "mine" and len(table) == 4 and table.has_groups
  assert table.splits.tolist() == ["train", "val", "test", ""]  # "valid" normalised
  assert table.groups.tolist() == ["p1", "p1", images[2], "p2"]  # blank id: its own group
  np.testing.assert_array_equal(table.labels, [0, -1, 1, 1])  # blank: unlabelled
  sub = table.select(table.splits != "")
  assert sub.paths == tuple(images[:3]) and sub.labels.tolist() == [0, -1, 1]
  assert table.select([3, 0]).groups.tolist() == ["p2", "p1"]
  with pytest.raises(ValueError, match="'valid'.*split_values"):
    table_lib.read_csv_table(path, path_column="path", split_column="split",
                             split_values={"train": "train", "val": "val", "test": "test"})
  odd = table_lib.read_csv_table(path, path_column="path", split_column="split",
                                 split_values={"train": "test", "val": "train", "test": "valid"})
  assert odd.splits.tolist() == ["val", "test", "train", ""]
  with pytest.raises(ValueError, match="paths but 1 groups"):
    table_lib.Table("t", ("a", "b"), np.zeros(2), np.array(["g"]), np.array(["", ""]), (),
                    False, False)


def test_table_source_numbers_groups_over_the_whole_table(nih_dir, index_rows):
  table = manifest.nih_cxr1000_table(nih_dir)
  assert len(table) == 1000 and table.name == "nih_cxr1000" and table.has_groups
  assert {s: int((table.splits == s).sum()) for s in ("train", "val", "test")} == {
      "train": 600, "val": 200, "test": 200}
  assert table.class_names == ("normal", "abnormal")
  src = manifest.TableSource(table, table.splits == "val", split="val", image_size=32)
  val_rows = [row for row in index_rows if row["split"] == "valid"]
  assert len(src) == 200 and src.image_shape == (32, 32, 1) and src.split == "val"
  assert [src.group_names[g] for g in src.groups] == [r["patient_id"] for r in val_rows]
  assert len(src.group_names) == 264  # numbered over every split
  np.testing.assert_array_equal(src.labels, [int(r["label"]) for r in val_rows])
  np.testing.assert_array_equal(src.rows, np.flatnonzero(table.splits == "val"))


def test_pad_keeps_the_whole_image_and_crop_the_centre(tmp_path, nih_dir, index_rows):
  original = np.asarray(Image.open(nih_dir / index_rows[0]["relpath"]).convert("L"))
  wide = original[16:48, :]  # 32 high, 64 wide
  Image.fromarray(wide).save(tmp_path / "wide.png")
  table = table_lib.read_csv_table(_write_csv(tmp_path / "m.csv", [["wide.png"]], ["p"]),
                                   path_column="p")
  padded = manifest.TableSource(table, image_size=32, resize="pad").images[0, ..., 0]
  # Long side 64 -> 32, so the whole image is 32 x 16, centred between black bars.
  assert not padded[:8].any() and not padded[24:].any()
  small = np.asarray(Image.fromarray(wide).resize((32, 16), Image.Resampling.BICUBIC))
  np.testing.assert_array_equal(padded[8:24], small)
  assert small.mean() > 20  # the band is the X-ray, not black
  cropped = manifest.TableSource(table, image_size=32, resize="crop").images[0, ..., 0]
  np.testing.assert_array_equal(cropped, wide[:, 16:48])  # short side kept, centre cut
  with pytest.raises(ValueError, match="resize must be one of crop, pad"):
    manifest.TableSource(table, image_size=32, resize="stretch")


def _bad_manifest(tmp_path, nih_dir, index_rows):
  data = (nih_dir / index_rows[0]["relpath"]).read_bytes()
  (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
  (tmp_path / "notes.png").write_text("this is a text file, not a PNG\n")
  good = _real_images(nih_dir, index_rows, 2)
  path = _write_csv(tmp_path / "m.csv", [[good[0], "0"], ["cut.png", "1"], ["notes.png", "1"],
                                         [good[1], "1"]], ["p", "y"])
  return table_lib.read_csv_table(path, path_column="p", label_column="y"), good


def test_bad_files_stop_lists_every_one(tmp_path, nih_dir, index_rows):
  table, _ = _bad_manifest(tmp_path, nih_dir, index_rows)
  with pytest.raises(manifest.BadImageFilesError) as info:
    manifest.TableSource(table)
  message = str(info.value)
  assert "2 of 4 image files" in message and "bad_files='skip'" in message
  assert f"cannot decode image {tmp_path / 'cut.png'}" in message
  assert f"cannot decode image {tmp_path / 'notes.png'}" in message
  assert [p for p, _ in info.value.bad] == [str(tmp_path / "cut.png"),
                                            str(tmp_path / "notes.png")]
  assert isinstance(info.value, ValueError) and not isinstance(info.value, FileNotFoundError)


def test_bad_files_skip_drops_and_reports_them(tmp_path, nih_dir, index_rows, caplog):
  table, good = _bad_manifest(tmp_path, nih_dir, index_rows)
  with caplog.at_level("WARNING"):
    src = manifest.TableSource(table, bad_files="skip")
  assert len(src) == 2 and src.paths == tuple(good) and src.rows.tolist() == [0, 3]
  assert src.labels.tolist() == [0, 1] and src.groups.tolist() == [0, 1]
  assert [p for p, _ in src.skipped] == [str(tmp_path / "cut.png"), str(tmp_path / "notes.png")]
  assert "skipping 2 of 4 image files" in caplog.text and "notes.png" in caplog.text
  with pytest.raises(manifest.BadImageFilesError, match="2 of 2"):  # nothing left: refuse
    manifest.TableSource(table, [1, 2], bad_files="skip")


def test_progress_is_logged_with_rate_and_eta(nih_dir, index_rows, caplog, monkeypatch):
  monkeypatch.setattr(manifest, "_PROGRESS_EVERY_S", 0.0)
  table = manifest.nih_cxr1000_table(nih_dir)
  with caplog.at_level("INFO"):
    manifest.TableSource(table, np.arange(5), num_threads=1)
  assert "decoded 1/5 images" in caplog.text
  assert "images/s" in caplog.text and "ETA" in caplog.text


def test_sixteen_bit_png_maps_its_high_byte(tmp_path):
  # A full-range 16-bit gradient: 8-bit value = value >> 8 (Pillow alone would clip to 255).
  deep = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
  Image.fromarray(deep).save(tmp_path / "deep.png")
  table = table_lib.read_csv_table(_write_csv(tmp_path / "m.csv", [["deep.png"]], ["p"]),
                                   path_column="p")
  image = manifest.TableSource(table).images[0, ..., 0]
  np.testing.assert_array_equal(image, deep >> 8)
  assert image.min() == 0 and image.max() == 255


def test_dicom_files_decode_like_other_images(tmp_path, shared_data):
  from medssl_jax.data import dicom  # pylint: disable=g-import-not-at-top
  ct = shared_data / "dicom" / "CT_small.dcm"
  (tmp_path / "ct.dicom").write_bytes(ct.read_bytes())  # VinDr-CXR's suffix
  expected = dicom.read_dicom(ct)
  grey = decode.decode_image(ct)
  np.testing.assert_array_equal(grey[..., 0], expected)
  rgb = decode.decode_image(tmp_path / "ct.dicom", 32, channels=3)
  assert rgb.shape == (32, 32, 3) and rgb.std() > 10
  np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])  # grey repeated
  small = np.asarray(Image.fromarray(expected).resize((32, 32), Image.Resampling.BICUBIC))
  np.testing.assert_array_equal(rgb[..., 0], small)
  (tmp_path / "cut.dcm").write_bytes(ct.read_bytes()[:2000])
  with pytest.raises(ValueError, match="cannot decode image .*cut.dcm"):
    decode.decode_image(tmp_path / "cut.dcm")

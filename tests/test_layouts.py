"""Known public layouts on tiny copies of their real file trees, with real X-ray images.

Each fixture writes the release's own file names and columns (a few rows) into a temporary
folder, with nih_cxr1000 PNGs as the images (saved as JPEG where the release has JPEG) and
the shared DICOM files as VinDr-CXR's .dicom images.
"""
import csv
import gzip
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from medssl_jax.data import layouts
from medssl_jax.data import manifest

SIZE = 32
CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *layouts.CHEXPERT_LABELS]
MIMIC_META_HEADER = [
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
    "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"]
MIMIC_LABEL_HEADER = ["subject_id", "study_id", *sorted(layouts.CHEXPERT_LABELS)]
# As released: "OriginalImage[Width,Height]" is split by its comma, and a trailing comma.
NIH14_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
                "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")


@pytest.fixture(scope="module")
def xrays(shared_data):
  """Six real chest X-ray PNGs (64 x 64)."""
  with open(shared_data / "nih_cxr1000" / "index.csv", newline="") as f:
    rows = list(csv.DictReader(f))[:6]
  return [shared_data / "nih_cxr1000" / row["relpath"] for row in rows]


def _jpeg(png, path):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.open(png).convert("L").save(path, quality=95)


def _write(path, header, rows, compress=False):
  path.parent.mkdir(parents=True, exist_ok=True)
  with (gzip.open(path, "wt", newline="") if compress else open(path, "w", newline="")) as f:
    if isinstance(header, str):
      f.write(header + "\n")
    else:
      csv.writer(f).writerow(header)
    csv.writer(f).writerows(rows)


def _chexpert_row(path, view, ap_pa, **labels):
  values = [labels.get(name.replace(" ", "_"), "") for name in layouts.CHEXPERT_LABELS]
  return [path, "Female", "68", view, ap_pa, *values]


# --- CheXpert ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chexpert_root(tmp_path_factory, xrays):
  root = tmp_path_factory.mktemp("chexpert") / "CheXpert-v1.0-small"
  files = ["train/patient00001/study1/view1_frontal.jpg",
           "train/patient00001/study1/view2_lateral.jpg",
           "train/patient00002/study1/view1_frontal.jpg",
           "valid/patient64541/study1/view1_frontal.jpg"]
  for png, name in zip(xrays, files):
    _jpeg(png, root / name)
  prefix = "CheXpert-v1.0-small/"
  _write(root / "train.csv", CHEXPERT_HEADER, [
      _chexpert_row(prefix + files[0], "Frontal", "AP", Cardiomegaly="-1.0", Edema="1.0",
                    Pleural_Effusion="0.0"),
      _chexpert_row(prefix + files[1], "Lateral", "", Cardiomegaly="-1.0", Edema="1.0"),
      _chexpert_row(prefix + files[2], "Frontal", "PA", No_Finding="1.0"),
  ])
  valid = {n.replace(" ", "_"): "0.0" for n in layouts.CHEXPERT_LABELS}  # no blanks in valid
  valid["Pneumonia"] = "1.0"
  _write(root / "valid.csv", CHEXPERT_HEADER,
         [_chexpert_row(prefix + files[3], "Frontal", "AP", **valid)])
  return root


@pytest.mark.parametrize("policy,uncertain", [("ignore", -1), ("zeros", 0), ("ones", 1)])
def test_chexpert_labels_under_each_uncertainty_policy(chexpert_root, policy, uncertain):
  table = layouts.chexpert_table(chexpert_root, uncertainty=policy)
  column = {name: j for j, name in enumerate(layouts.CHEXPERT_LABELS)}
  assert table.class_names == layouts.CHEXPERT_LABELS and table.multi_label
  first = table.labels[0]
  assert first[column["Cardiomegaly"]] == uncertain  # "-1.0": by policy
  assert first[column["Edema"]] == 1 and first[column["Pleural Effusion"]] == 0
  assert first[column["Lung Opacity"]] == -1  # blank: unknown under every policy
  assert table.labels[1].tolist() == [1] + [-1] * 13  # "No Finding" only
  assert table.labels[2].tolist() == [int(n == "Pneumonia") for n in layouts.CHEXPERT_LABELS]


def test_chexpert_paths_patients_splits_and_frontal_filter(chexpert_root):
  table = layouts.chexpert_table(chexpert_root)
  assert len(table) == 3 and table.name == "chexpert" and table.has_groups
  assert table.paths[0] == str(chexpert_root / "train/patient00001/study1/view1_frontal.jpg")
  assert table.groups.tolist() == ["patient00001", "patient00002", "patient64541"]
  assert table.studies.tolist() == ["patient00001/study1", "patient00002/study1",
                                    "patient64541/study1"]
  assert table.splits.tolist() == ["train", "train", "val"]
  every_view = layouts.chexpert_table(chexpert_root.parent, frontal_only=False)  # parent too
  assert len(every_view) == 4 and every_view.paths[1].endswith("view2_lateral.jpg")
  assert every_view.groups.tolist()[:2] == ["patient00001"] * 2
  src = manifest.TableSource(every_view, every_view.splits == "train", split="train",
                             image_size=SIZE)
  assert src.images.shape == (3, SIZE, SIZE, 1) and src.images.std() > 20
  assert src.groups.tolist() == [0, 0, 1] and src.labels.dtype == np.int32


# --- MIMIC-CXR-JPG -------------------------------------------------------------------------


MIMIC_IMAGES = [  # dicom_id, subject_id, study_id, ViewPosition, split
    ("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "10000032", "50414267", "PA", "train"),
    ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "10000032", "50414267", "LATERAL", "train"),
    ("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "10000032", "53189527", "AP", "validate"),
    ("68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714", "11000011", "51000001", "PA", "test"),
    ("fffabebf-74fd3a1f-673b6b41-96ec0ac9-2ab69818", "12000012", "52000002", "", "train"),
]


@pytest.fixture(scope="module")
def mimic_root(tmp_path_factory, xrays):
  root = tmp_path_factory.mktemp("mimic-cxr-jpg") / "2.0.0"
  for png, (dicom_id, subject, study, _, _) in zip(xrays, MIMIC_IMAGES):
    folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
    _jpeg(png, folder / f"{dicom_id}.jpg")
  _write(root / "mimic-cxr-2.0.0-metadata.csv.gz", MIMIC_META_HEADER, [
      [d, s, st, "CHEST (PA AND LAT)", v, "64", "64", "21800506", "213014.531",
       "CHEST (PA AND LAT)", "postero-anterior", "Erect"] for d, s, st, v, _ in MIMIC_IMAGES],
         compress=True)
  labels = {"Pneumonia": "-1.0", "Edema": "1.0", "Atelectasis": "", "Cardiomegaly": "0.0"}
  _write(root / "mimic-cxr-2.0.0-chexpert.csv.gz", MIMIC_LABEL_HEADER, [
      ["10000032", "50414267", *[labels.get(n, "") for n in MIMIC_LABEL_HEADER[2:]]],
      ["10000032", "53189527",
       *["1.0" if n == "No Finding" else "" for n in MIMIC_LABEL_HEADER[2:]]],
      ["12000012", "52000002", *["0.0"] * 14],
  ], compress=True)
  _write(root / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "study_id", "subject_id", "split"],
         [[d, st, s, split] for d, s, st, _, split in MIMIC_IMAGES])  # plain .csv works too
  return root


@pytest.mark.parametrize("policy,uncertain", [("ignore", -1), ("zeros", 0), ("ones", 1)])
def test_mimic_cxr_labels_follow_studies_in_chexpert_order(mimic_root, policy, uncertain):
  table = layouts.mimic_cxr_table(mimic_root, uncertainty=policy)
  column = {name: j for j, name in enumerate(layouts.CHEXPERT_LABELS)}
  assert table.class_names == layouts.CHEXPERT_LABELS  # not the file's alphabetical order
  first = table.labels[0]
  assert first[column["Pneumonia"]] == uncertain
  assert first[column["Edema"]] == 1 and first[column["Cardiomegaly"]] == 0
  assert first[column["Atelectasis"]] == -1 and first[column["Fracture"]] == -1  # blank
  assert table.labels[1].tolist() == [1] + [-1] * 13
  assert table.labels[2].tolist() == [-1] * 14  # study absent from chexpert.csv: unknown


def test_mimic_cxr_views_subjects_studies_and_splits(mimic_root):
  table = layouts.mimic_cxr_table(mimic_root)
  assert len(table) == 3  # PA and AP only: the lateral and the blank view are left out
  dicom_id = MIMIC_IMAGES[0][0]
  assert table.paths[0] == str(mimic_root / "files/p10/p10000032/s50414267" / f"{dicom_id}.jpg")
  assert table.groups.tolist() == ["10000032", "10000032", "11000011"] and table.has_groups
  assert table.studies.tolist() == ["50414267", "53189527", "51000001"]
  assert table.splits.tolist() == ["train", "val", "test"]  # "validate" -> "val"
  assert len(layouts.mimic_cxr_table(mimic_root, views=None)) == 5
  src = manifest.TableSource(table, image_size=SIZE, channels=3)
  assert src.images.shape == (3, SIZE, SIZE, 3) and src.images.std() > 20
  assert src.groups.tolist() == [0, 0, 1] and src.group_names == ("10000032", "11000011")


# --- NIH ChestX-ray14 ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def nih14_root(tmp_path_factory, xrays):
  root = tmp_path_factory.mktemp("nih14")
  names = [png.name for png in xrays[:4]]  # real Image Index names: <patient>_<follow-up>.png
  for png, folder in zip(xrays[:4], ["images_001", "images_001", "images_002", "images_002"]):
    (root / folder / "images").mkdir(parents=True, exist_ok=True)
    shutil.copy(png, root / folder / "images" / png.name)
  findings = ["Pneumonia|Effusion", "No Finding", "Hernia", "Cardiomegaly|Emphysema",
              "Mass"]
  listed = names + ["00030805_000.png"]  # listed, but its image was never downloaded
  _write(root / "Data_Entry_2017.csv", NIH14_HEADER, [
      [name, finding, str(int(name[9:12])), str(int(name[:8])), "58", "M", "PA", "2682", "2749",
       "0.143", "0.143"] for name, finding in zip(listed, findings)])
  (root / "train_val_list.txt").write_text("\n".join(listed[:3]) + "\n")
  (root / "test_list.txt").write_text("\n".join(listed[3:]) + "\n")
  return root


def test_nih14_findings_patients_splits_and_image_search(nih14_root, xrays):
  table = layouts.nih14_table(nih14_root)
  column = {name: j for j, name in enumerate(layouts.NIH14_LABELS)}
  assert len(table) == 5 and table.class_names == layouts.NIH14_LABELS and table.has_groups
  assert np.flatnonzero(table.labels[0]).tolist() == sorted([column["Pneumonia"],
                                                             column["Effusion"]])
  assert not table.labels[1].any() and (table.labels >= 0).all()  # every label known
  assert np.flatnonzero(table.labels[3]).tolist() == [column["Cardiomegaly"],
                                                      column["Emphysema"]]
  assert table.paths[0] == str(nih14_root / "images_001" / "images" / xrays[0].name)
  assert table.paths[2] == str(nih14_root / "images_002" / "images" / xrays[2].name)
  assert table.paths[4] == str(nih14_root / "images" / "00030805_000.png")  # not found
  assert table.groups.tolist() == [str(int(png.name[:8])) for png in xrays[:4]] + ["30805"]
  assert table.splits.tolist() == ["train"] * 3 + ["test"] * 2
  with pytest.raises(FileNotFoundError, match="00030805_000.png"):  # reported, not hidden
    manifest.TableSource(table, image_size=SIZE)
  src = manifest.TableSource(table, image_size=SIZE, bad_files="skip")
  assert len(src) == 4 and src.skipped[0][0] == table.paths[4]
  np.testing.assert_array_equal(src.labels, table.labels[:4])


# --- VinDr-CXR -----------------------------------------------------------------------------


VINDR_IDS = ["000434271f63a053c4128a0ba6352c7f", "00053190460d56c53cc3e57321387478",
             "002a34c58c5b758217ed1f584ccbcfe9"]


def _vindr_row(*ids, names=layouts.VINDR_CXR_LABELS, **marked):
  return [*ids, *[marked.get(n.replace(" ", "_").replace("/", "_"), "0") for n in names]]


@pytest.fixture(scope="module")
def vindr_root(tmp_path_factory, shared_data):
  root = tmp_path_factory.mktemp("vindr-cxr") / "1.0.0"
  dicoms = ["CT_small.dcm", "MR_small.dcm", "chest_cr_rg1.dcm"]
  for image_id, name, split in zip(VINDR_IDS, dicoms, ["train", "train", "test"]):
    (root / split).mkdir(parents=True, exist_ok=True)
    shutil.copy(shared_data / "dicom" / name, root / split / f"{image_id}.dicom")
  a, b = VINDR_IDS[:2]
  _write(root / "annotations" / "image_labels_train.csv",
         ["image_id", "rad_id", *layouts.VINDR_CXR_LABELS], [
             # Image a: Cardiomegaly by 2 of 3 readers, Aortic enlargement by 1 of 3;
             # Calcification 1, 0 and blank: a tie between the two readers who gave it.
             _vindr_row(a, "R8", Cardiomegaly="1", Aortic_enlargement="1", Calcification="1"),
             _vindr_row(a, "R9", Cardiomegaly="1", Calcification="0"),
             _vindr_row(b, "R10", No_finding="1"),
             _vindr_row(a, "R10", No_finding="1", Calcification=""),
             _vindr_row(b, "R2", No_finding="1"),
             _vindr_row(b, "R3", Nodule_Mass="1"),
         ])
  # The test file has one consensus row per image, no rad_id, and says "Other disease".
  test_names = [n if n != "Other diseases" else "Other disease" for n in layouts.VINDR_CXR_LABELS]
  _write(root / "annotations" / "image_labels_test.csv", ["image_id", *test_names],
         [_vindr_row(VINDR_IDS[2], names=test_names, Pneumonia="1", Other_disease="1")])
  return root


def test_vindr_cxr_majority_of_readers_and_splits(vindr_root):
  table = layouts.vindr_cxr_table(vindr_root)
  column = {name: j for j, name in enumerate(layouts.VINDR_CXR_LABELS)}
  assert table.class_names == layouts.VINDR_CXR_LABELS and len(table) == 3
  assert table.paths == tuple(str(vindr_root / s / f"{i}.dicom")
                              for i, s in zip(VINDR_IDS, ["train", "train", "test"]))
  assert table.splits.tolist() == ["train", "train", "test"]
  assert not table.has_groups and table.groups.tolist() == list(table.paths)
  a, b, test = table.labels
  assert a[column["Cardiomegaly"]] == 1 and a[column["Aortic enlargement"]] == 0
  assert a[column["Calcification"]] == -1 and a[column["No finding"]] == 0
  assert np.flatnonzero(a == 1).tolist() == [column["Cardiomegaly"]]
  assert np.flatnonzero(b == 1).tolist() == [column["No finding"]]  # Nodule/Mass: 1 of 3
  assert np.flatnonzero(test == 1).tolist() == [column["Pneumonia"], column["Other diseases"]]


def test_vindr_cxr_dicom_images_load(vindr_root):
  src = manifest.TableSource(layouts.vindr_cxr_table(vindr_root), image_size=SIZE)
  assert src.images.shape == (3, SIZE, SIZE, 1)
  assert all(image.std() > 5 for image in src.images)  # CT, MR and the CR chest: not blank
  assert src.labels.shape == (3, len(layouts.VINDR_CXR_LABELS))


def test_layouts_registry_and_missing_files(tmp_path):
  assert layouts.LAYOUTS == {"chexpert": layouts.chexpert_table,
                             "mimic_cxr": layouts.mimic_cxr_table,
                             "nih14": layouts.nih14_table, "vindr_cxr": layouts.vindr_cxr_table}
  for function in layouts.LAYOUTS.values():  # an empty folder: each names where it looked
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
      function(tmp_path)
  with pytest.raises(ValueError, match="ignore, zeros, ones"):
    layouts.chexpert_table(tmp_path, uncertainty="U-Ones")

"""Known public chest X-ray data sets, read as they ship: root folder -> table.Table.

Each function needs only the folder holding the data set's files (plus the options it
documents) and reads the files and columns exactly as the official release names them.
Nothing is decoded here: manifest.TableSource decodes the rows of a split.

Labels are multi-label, (N, L) int8: 1 positive, 0 negative, -1 unknown. Where a release
marks findings as uncertain ("-1": CheXpert, MIMIC-CXR), `uncertainty` chooses what they
become: "ignore" -> -1 (left out of losses and metrics), "zeros" -> 0, "ones" -> 1 (the
U-Ignore, U-Zeros and U-Ones policies of the CheXpert paper). A blank cell is unknown (-1)
under every policy.

Splits are those the release ships, named "train" / "val" / "test" ("" for a file in
none); groups are patients wherever the release gives them, so a split can be checked for
patient leakage or drawn by patient (splits.py).
"""
from __future__ import annotations

import logging
import os
import pathlib
from typing import Sequence

import numpy as np

from medssl_jax import errors
from medssl_jax import paths as paths_lib
from medssl_jax.data import table as table_lib

# The 14 observations in the column order of CheXpert's train.csv / valid.csv; MIMIC-CXR's
# chexpert.csv has the same names (in alphabetical order) and is read in this order too,
# so one model's outputs line up across both.
CHEXPERT_LABELS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices")

# NIH ChestX-ray14's findings as "Finding Labels" spells them, in the paper's order (also
# ChestMNIST's). "No Finding" is the absence of all 14, not a 15th label.
NIH14_LABELS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
    "Hernia")
NIH14_NO_FINDING = "No Finding"

# VinDr-CXR 1.0.0 (PhysioNet) image-level labels: 22 local findings, then 6 global
# diagnoses, in the column order of annotations/image_labels_train.csv. The table takes
# its label columns from the files themselves (all but image_id and rad_id); this list
# documents them. image_labels_test.csv spells "Other diseases" as "Other disease"; it is
# read under the train file's name.
VINDR_CXR_LABELS = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture",
    "Consolidation", "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity",
    "Lung cavity", "Lung cyst", "Mediastinal shift", "Nodule/Mass", "Pleural effusion",
    "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis", "Rib fracture", "Other lesion",
    "COPD", "Lung tumor", "Pneumonia", "Tuberculosis", "Other diseases", "No finding")
_VINDR_ALIASES = {"Other disease": "Other diseases"}
_VINDR_ID_COLUMNS = ("image_id", "rad_id")

PathLike = str | os.PathLike[str]


def chexpert_table(root: PathLike, *, uncertainty: str = "ignore",
                   frontal_only: bool = True) -> table_lib.Table:
  """CheXpert v1.0 (or v1.0-small): train.csv -> "train", valid.csv -> "val".

  The public release has no test split (its test set is held by the organisers), so a
  test split must be drawn by patient (splits.group_split).

  Args:
    root: the folder holding train.csv and valid.csv (e.g. CheXpert-v1.0-small/; its
      parent works too). The CSVs' Path column starts with that folder's released name
      ("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"); that first
      component is dropped, so a renamed folder still works.
    uncertainty: what "-1" becomes: "ignore" (-1), "zeros" (0) or "ones" (1).
    frontal_only: keep only rows whose Frontal/Lateral is "Frontal".

  Returns:
    The table: groups are patients ("patient00001"), studies "patient00001/study1".
  """
  table_lib.check_uncertain(uncertainty)
  root = _chexpert_root(paths_lib.path(root))
  paths, labels, splits, patients, studies = [], [], [], [], []
  for filename, split in (("train.csv", "train"), ("valid.csv", "val")):
    csv_path = root / filename
    if split != "train" and not csv_path.is_file():
      logging.warning("CheXpert: %s is missing; the table has no %s split", csv_path, split)
      continue
    rows = table_lib.read_csv_rows(csv_path, ("Path", "Frontal/Lateral") + CHEXPERT_LABELS)
    if frontal_only:
      rows = [row for row in rows if row["Frontal/Lateral"] == "Frontal"]
    labels.append(table_lib.binary_labels(rows, CHEXPERT_LABELS, uncertainty, str(csv_path)))
    for row in rows:
      parts = _chexpert_parts(row["Path"], csv_path)
      paths.append(str(root.joinpath(*parts)))
      patients.append(parts[-3])
      studies.append(f"{parts[-3]}/{parts[-2]}")
    splits += [split] * len(rows)
  return table_lib.Table(
      name="chexpert", paths=tuple(paths), labels=np.concatenate(labels), groups=patients,
      splits=splits, class_names=CHEXPERT_LABELS, multi_label=True, has_groups=True,
      studies=studies)


def _chexpert_root(root: paths_lib.Path) -> paths_lib.Path:
  if (root / "train.csv").is_file():
    return root
  for child in ("CheXpert-v1.0-small", "CheXpert-v1.0"):
    if (root / child / "train.csv").is_file():
      return root / child
  raise errors.UserFileNotFoundError(f"CheXpert: no train.csv in {root} (nor in its CheXpert-v1.0-small/ "
                                     f"or CheXpert-v1.0/); give the folder that holds train.csv")


def _chexpert_parts(path: str, csv_path: paths_lib.Path) -> tuple[str, ...]:
  """".../train/patient00001/study1/view1_frontal.jpg" -> parts relative to the root."""
  parts = pathlib.PurePosixPath(path.strip()).parts
  if parts and parts[0] not in ("train", "valid", "test"):
    parts = parts[1:]  # the release's folder name, e.g. "CheXpert-v1.0-small"
  if len(parts) < 4:
    raise errors.UserError(f"{csv_path}: Path {path!r} is not <split>/<patient>/<study>/<file>")
  return parts


def mimic_cxr_table(root: PathLike, *, uncertainty: str = "ignore",
                    views: Sequence[str] | None = ("PA", "AP")) -> table_lib.Table:
  """MIMIC-CXR-JPG 2.0.0: splits "train" / "validate" -> "val" / "test" as shipped.

  Reads mimic-cxr-2.0.0-metadata.csv (one row per image: dicom_id, subject_id, study_id,
  ViewPosition, ...), mimic-cxr-2.0.0-chexpert.csv (one row per study: subject_id,
  study_id and the 14 CheXpert labels) and mimic-cxr-2.0.0-split.csv (dicom_id, ...,
  split), each .csv or .csv.gz. Images are files/p<first 2 digits of subject>/p<subject>/
  s<study>/<dicom_id>.jpg. A study missing from chexpert.csv has every label unknown (-1);
  an image missing from split.csv (or no split.csv at all) is in no split ("").

  Args:
    root: the folder holding the CSVs and files/ (e.g. physionet.org/files/mimic-cxr-jpg/2.0.0).
    uncertainty: what "-1" becomes: "ignore" (-1), "zeros" (0) or "ones" (1).
    views: keep only images whose ViewPosition is one of these; None or () keeps all
      (lateral views included; some images have no ViewPosition).

  Returns:
    The table: groups are subjects (patients); studies are study_ids.
  """
  table_lib.check_uncertain(uncertainty)
  root = paths_lib.path(root)
  meta_path = _mimic_file(root, "metadata")
  meta = table_lib.read_csv_rows(meta_path, ("dicom_id", "subject_id", "study_id",
                                             "ViewPosition"))
  if views:
    meta = [row for row in meta if row["ViewPosition"] in tuple(views)]
  label_path = _mimic_file(root, "chexpert")
  label_rows = table_lib.read_csv_rows(label_path, ("subject_id", "study_id") + CHEXPERT_LABELS)
  # One extra row of unknowns at the end: index -1 is what a study without labels gets.
  study_labels = np.concatenate([
      table_lib.binary_labels(label_rows, CHEXPERT_LABELS, uncertainty, str(label_path)),
      np.full((1, len(CHEXPERT_LABELS)), -1, np.int8)])
  study_row = {(r["subject_id"], r["study_id"]): i for i, r in enumerate(label_rows)}
  lookup = np.array([study_row.get((r["subject_id"], r["study_id"]), -1) for r in meta],
                    np.int64)
  if (lookup < 0).any():
    logging.warning("MIMIC-CXR: %d of %d images belong to studies absent from %s; their "
                    "labels are unknown (-1)", (lookup < 0).sum(), len(meta), label_path)
  paths = tuple(
      str(root / "files" / f"p{r['subject_id'][:2]}" / f"p{r['subject_id']}"
          / f"s{r['study_id']}" / f"{r['dicom_id']}.jpg") for r in meta)
  return table_lib.Table(
      name="mimic_cxr", paths=paths, labels=study_labels[lookup],
      groups=[r["subject_id"] for r in meta], splits=_mimic_splits(root, meta),
      class_names=CHEXPERT_LABELS, multi_label=True, has_groups=True,
      studies=[r["study_id"] for r in meta])


def _mimic_file(root: paths_lib.Path, kind: str, required: bool = True) -> paths_lib.Path | None:
  for name in (f"mimic-cxr-2.0.0-{kind}.csv", f"mimic-cxr-2.0.0-{kind}.csv.gz"):
    if (root / name).is_file():
      return root / name
  if required:
    raise errors.UserFileNotFoundError(f"MIMIC-CXR: no mimic-cxr-2.0.0-{kind}.csv(.gz) in {root}; give "
                                       f"the MIMIC-CXR-JPG folder that holds the CSVs and files/")
  return None


def _mimic_splits(root: paths_lib.Path, meta) -> np.ndarray:
  split_path = _mimic_file(root, "split", required=False)
  if split_path is None:
    logging.warning("MIMIC-CXR: no mimic-cxr-2.0.0-split.csv(.gz) in %s; the table has no "
                    "splits (draw them by patient)", root)
    return np.full(len(meta), "", dtype=str)
  split_of = {r["dicom_id"]: r["split"]
              for r in table_lib.read_csv_rows(split_path, ("dicom_id", "split"))}
  return table_lib.normalise_splits([split_of.get(r["dicom_id"], "") for r in meta],
                                    {"train": "train", "val": "validate", "test": "test"},
                                    str(split_path))


def nih14_table(root: PathLike) -> table_lib.Table:
  """NIH ChestX-ray14: Data_Entry_2017.csv, images found anywhere under the root.

  The 14 findings come from "Finding Labels" ("Effusion|Pneumonia"; "No Finding" sets
  none); every label is known (0 or 1). The images (images_001/images/ ... images_012/
  images/ as released, or one images/ folder) are found by searching the root once; an
  image found nowhere keeps the path root/images/<name>, so decoding reports it as
  missing. Splits: train_val_list.txt -> "train", test_list.txt -> "test" (the official,
  patient-disjoint split; it has no val: draw one by patient from train).

  Args:
    root: the folder holding Data_Entry_2017.csv (or Data_Entry_2017_v2020.csv).

  Returns:
    The table: groups are the Patient ID column.
  """
  root = paths_lib.path(root)
  csv_path = next((root / n for n in ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
                   if (root / n).is_file()), None)
  if csv_path is None:
    raise errors.UserFileNotFoundError(f"NIH ChestX-ray14: no Data_Entry_2017.csv in {root}")
  rows = table_lib.read_csv_rows(csv_path, ("Image Index", "Finding Labels", "Patient ID"))
  names = [row["Image Index"].strip() for row in rows]
  found = _find_files(root, set(names))
  if len(found) < len(set(names)):
    logging.warning("NIH ChestX-ray14: %d of %d images listed in %s are not under %s",
                    len(set(names)) - len(found), len(set(names)), csv_path, root)
  return table_lib.Table(
      name="nih14", paths=tuple(found.get(n, str(root / "images" / n)) for n in names),
      labels=_nih14_labels(rows, csv_path), groups=[row["Patient ID"].strip() for row in rows],
      splits=_nih14_splits(root, names), class_names=NIH14_LABELS, multi_label=True,
      has_groups=True)


def _nih14_labels(rows, csv_path: paths_lib.Path) -> np.ndarray:
  column = {name: j for j, name in enumerate(NIH14_LABELS)}
  labels = np.zeros((len(rows), len(NIH14_LABELS)), np.int8)
  for i, row in enumerate(rows):
    for finding in row["Finding Labels"].split("|"):
      finding = finding.strip()
      if finding == NIH14_NO_FINDING:
        continue
      if finding not in column:
        raise errors.UserError(f"{csv_path} line {i + 2}: unknown finding {finding!r} in Finding "
                               f"Labels; known: {', '.join(NIH14_LABELS)}, {NIH14_NO_FINDING}")
      labels[i, column[finding]] = 1
  return labels


def _nih14_splits(root: paths_lib.Path, names: Sequence[str]) -> np.ndarray:
  split_of = {}
  for filename, split in (("train_val_list.txt", "train"), ("test_list.txt", "test")):
    if (root / filename).is_file():
      for name in (root / filename).read_text().split():
        if split_of.setdefault(name, split) != split:
          raise errors.UserError(f"NIH ChestX-ray14: {name} is in both train_val_list.txt and "
                                 f"test_list.txt")
  if not split_of:
    logging.warning("NIH ChestX-ray14: no train_val_list.txt or test_list.txt in %s; the "
                    "table has no splits (draw them by patient)", root)
  return np.array([split_of.get(name, "") for name in names], dtype=str).reshape(-1)


def _find_files(root: paths_lib.Path, wanted: set[str]) -> dict[str, str]:
  """name -> the first path under root (walked in sorted order) with that file name."""
  found = {}
  for directory, subdirs, files in root.walk():
    subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
    for name in sorted(set(files) & wanted):
      found.setdefault(name, str(directory / name))
    if len(found) == len(wanted):
      break
  return found


def vindr_cxr_table(root: PathLike) -> table_lib.Table:
  """VinDr-CXR 1.0.0: image_labels_train.csv -> "train", image_labels_test.csv -> "test".

  Images are DICOM files train/<image_id>.dicom and test/<image_id>.dicom. The label CSVs
  are read from annotations/ (as released) or the root. Each training image was read by 3
  of 17 radiologists, one row per reader (image_id, rad_id, labels); a label is
  aggregated by majority of the readers who gave it a value: positive if more marked it
  1 than 0, negative if fewer, unknown (-1) on a tie (possible only when a reader left
  it blank). Majority rather than "any reader": it keeps "No finding" consistent with the
  findings (a majority for "No finding" leaves no majority for a finding). Test images
  have one row each, the consensus of 5 radiologists, kept as is. There is no val split.

  VinDr-CXR releases no patient ids, so each image is its own group (has_groups False).

  Args:
    root: the folder holding annotations/, train/ and test/ (e.g.
      physionet.org/files/vindr-cxr/1.0.0).

  Returns:
    The table; class_names are the label columns of the files (see VINDR_CXR_LABELS).
  """
  root = paths_lib.path(root)
  parts = []
  for filename, split in (("image_labels_train.csv", "train"), ("image_labels_test.csv", "test")):
    csv_path = next((p for p in (root / "annotations" / filename, root / filename)
                     if p.is_file()), None)
    if csv_path is None:
      if split == "train":
        raise errors.UserFileNotFoundError(f"VinDr-CXR: no {filename} in {root}/annotations or {root}")
      logging.warning("VinDr-CXR: no %s in %s; the table has no test split", filename, root)
      continue
    rows = [{_VINDR_ALIASES.get(k, k): v for k, v in row.items()}
            for row in table_lib.read_csv_rows(csv_path, ("image_id",))]
    parts.append((split, csv_path, rows))
  class_names = []
  for _, _, rows in parts:
    columns = rows[0].keys() if rows else ()
    class_names += [c for c in columns if c not in _VINDR_ID_COLUMNS and c not in class_names]
  paths, labels, splits = [], [], []
  for split, csv_path, rows in parts:
    image_ids, image_labels = _majority(rows, class_names, csv_path)
    paths += [str(root / split / f"{image_id}.dicom") for image_id in image_ids]
    labels.append(image_labels)
    splits += [split] * len(image_ids)
  return table_lib.Table(
      name="vindr_cxr", paths=tuple(paths), labels=np.concatenate(labels), groups=paths,
      splits=splits, class_names=tuple(class_names), multi_label=True, has_groups=False)


def _majority(rows, class_names: Sequence[str], csv_path: paths_lib.Path
              ) -> tuple[list[str], np.ndarray]:
  """Image ids (in order of first row) and their labels by majority of their readers."""
  # A column the file lacks is blank in every row: no reader's vote, so unknown (-1).
  votes = table_lib.binary_labels(rows, class_names, "ignore", str(csv_path))
  image_ids, first, inverse = np.unique([row["image_id"].strip() for row in rows],
                                        return_index=True, return_inverse=True)
  inverse = inverse.reshape(-1)
  positive = np.zeros((len(image_ids), len(class_names)), np.int32)
  negative = np.zeros_like(positive)
  np.add.at(positive, inverse, votes == 1)
  np.add.at(negative, inverse, votes == 0)
  labels = np.where(positive > negative, 1, np.where(negative > positive, 0, -1))
  order = np.argsort(first)
  return image_ids[order].tolist(), labels[order].astype(np.int8)


LAYOUTS = {
    "chexpert": chexpert_table,
    "mimic_cxr": mimic_cxr_table,
    "nih14": nih14_table,
    "vindr_cxr": vindr_cxr_table,
}

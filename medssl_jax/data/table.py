"""Image tables: what a data set lists, one row per image file, and reading them from CSV.

A `Table` holds each image file's path, labels, group (patient) and the split it ships in;
nothing is decoded (manifest.TableSource decodes chosen rows). `read_csv_table` reads one
from any CSV (custom and unlabelled data need no code: a path column is enough); the CSV
helpers here (`read_csv_rows`, `binary_labels`, `normalise_splits`, `check_uncertain`) also
serve layouts.py, which reads the known public layouts (CheXpert, MIMIC-CXR, ...).
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import gzip
import io
import math
import os
from typing import Mapping, Sequence

import numpy as np

from medssl_jax import errors
from medssl_jax import paths as paths_lib
from medssl_jax.data import splits as splits_lib

# A split column's values when no split_values are given: ours, and the usual spellings of
# "validation" (CheXpert's "valid", MIMIC-CXR's "validate").
DEFAULT_SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val",
                       "validate": "val", "test": "test"}
# What a multi-label "-1" (uncertain) becomes: CheXpert's U-Ignore, U-Zeros, U-Ones.
UNCERTAIN_POLICIES = {"ignore": -1, "zeros": 0, "ones": 1}


@dataclasses.dataclass(frozen=True, eq=False)
class Table:
  """What a data set lists, one row per image file; nothing is decoded.

  Attributes:
    name: the data set's name.
    paths: full file paths (root already joined).
    labels: (N,) int32 class ids (-1 = unlabelled), or, when multi_label, (N, L) int8 with
      1 positive, 0 negative and -1 unknown (blank) or uncertain-and-ignored.
    groups: (N,) str patient / study / lesion ids; each row's own path when the data has
      no group column.
    splits: (N,) str "train", "val" or "test" as the data set ships it, "" for none.
    class_names: one name per class (single-label) or per label column (multi-label).
    multi_label: whether labels are (N, L).
    has_groups: whether groups are real ids (patients) rather than one per file.
    studies: (N,) str study ids where the data set has studies (CheXpert, MIMIC-CXR; the
      groups there are patients), else None.
  """
  name: str
  paths: tuple[str, ...]
  labels: np.ndarray
  groups: np.ndarray
  splits: np.ndarray
  class_names: tuple[str, ...]
  multi_label: bool
  has_groups: bool
  studies: np.ndarray | None = None

  def __post_init__(self):
    # Frozen, so normalise types with object.__setattr__: callers may pass lists.
    set_ = lambda field, value: object.__setattr__(self, field, value)  # noqa: E731
    set_("paths", tuple(str(p) for p in self.paths))
    set_("class_names", tuple(self.class_names))
    n = len(self.paths)
    set_("labels", np.asarray(self.labels, np.int8 if self.multi_label else np.int32))
    for field in ("groups", "splits", "studies"):
      if getattr(self, field) is not None:
        set_(field, np.asarray(getattr(self, field), dtype=str).reshape(-1))
        if len(getattr(self, field)) != n:
          raise ValueError(f"table {self.name}: {n} paths but {len(getattr(self, field))} "
                           f"{field}")
    expected = (n, len(self.class_names)) if self.multi_label else (n,)
    if self.labels.shape != expected:
      raise ValueError(f"table {self.name}: labels have shape {self.labels.shape}; expected "
                       f"{expected}")

  def __len__(self) -> int:
    return len(self.paths)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def select(self, rows) -> Table:
    """The table of the given rows (indices or a boolean mask), in that order."""
    rows = row_indices(rows, len(self))
    return dataclasses.replace(
        self, paths=tuple(self.paths[i] for i in rows), labels=self.labels[rows],
        groups=self.groups[rows], splits=self.splits[rows],
        studies=None if self.studies is None else self.studies[rows])

  def __repr__(self) -> str:
    counts = dict(collections.Counter(self.splits.tolist()))
    return (f"Table(name={self.name!r}, rows={len(self)}, classes={self.num_classes}, "
            f"multi_label={self.multi_label}, has_groups={self.has_groups}, splits={counts})")


def row_indices(rows, n: int) -> np.ndarray:
  """Row indices (int64, negatives wrapped) from indices or a boolean mask of n rows."""
  rows = np.asarray(rows)
  if rows.dtype == bool:
    if rows.shape != (n,):
      raise ValueError(f"a row mask must have shape ({n},), got {rows.shape}")
    return np.flatnonzero(rows)
  rows = rows.astype(np.int64).reshape(-1)
  if len(rows) and (rows.min() < -n or rows.max() >= n):
    raise IndexError(f"row indices must be in [0, {n}), got [{rows.min()}, {rows.max()}]")
  return rows % n if n else rows


# ---------------------------------------------------------------------------------------
# Reading CSV files into tables.


def read_csv_rows(csv_path: str | os.PathLike[str], columns: Sequence[str | None] = ()
                  ) -> list[dict[str, str]]:
  """Every row of a CSV (.csv or .csv.gz) as a dict; raises naming any missing column."""
  csv_path = paths_lib.path(csv_path)
  if not csv_path.is_file():
    raise errors.UserFileNotFoundError(f"manifest {csv_path} does not exist")
  with csv_path.open("rb") as raw:
    data = raw.read()
  if csv_path.suffix == ".gz":
    data = gzip.decompress(data)
  # utf-8-sig: a CSV saved by Excel starts with a byte-order mark that would rename column 1.
  with io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="") as f:
    reader = csv.DictReader(f)
    rows = list(reader)
    header = reader.fieldnames or []
  missing = [c for c in columns if c and c not in header]
  if missing:
    raise errors.UserError(f"{csv_path} has no column {', '.join(missing)}; "
                           f"its columns are {', '.join(header)}")
  return rows


def check_uncertain(uncertain: str) -> int:
  """The label value a "-1" becomes under policy `uncertain`."""
  if uncertain not in UNCERTAIN_POLICIES:
    raise errors.UserError(f"uncertain labels policy must be one of {', '.join(UNCERTAIN_POLICIES)}, "
                           f"got {uncertain!r}")
  return UNCERTAIN_POLICIES[uncertain]


def binary_labels(rows: Sequence[Mapping[str, str]], columns: Sequence[str],
                  uncertain: str = "ignore", where: str = "") -> np.ndarray:
  """(N, L) int8 from binary columns: 1 / 0, blank unknown (-1), "-1" per `uncertain`.

  Values may be written as floats ("1.0", "-1.0", "0.0"), as pandas writes them; "nan"
  counts as blank.
  """
  uncertain_value = check_uncertain(uncertain)
  labels = np.empty((len(rows), len(columns)), np.int8)
  for j, column in enumerate(columns):
    values = np.array([row.get(column) or "" for row in rows], dtype=str)
    uniques, inverse = np.unique(values, return_inverse=True)
    mapped = np.empty(len(uniques), np.int8)
    for k, value in enumerate(uniques.tolist()):
      parsed = _binary_value(value, uncertain_value)
      if parsed is None:
        line = int(np.flatnonzero(inverse.reshape(-1) == k)[0]) + 2
        raise errors.UserError(f"{where} line {line}: {column}={value!r} is not a binary label "
                               f"(1, 0, -1 for uncertain, or blank for unknown)")
      mapped[k] = parsed
    labels[:, j] = mapped[inverse.reshape(-1)]
  return labels


def _number(text: str) -> float | None:
  """The number written in text; nan for blank or "nan"; None if it is not a number."""
  text = text.strip()
  if not text:
    return math.nan
  try:
    return float(text)
  except ValueError:
    return None


def _binary_value(text: str, uncertain_value: int) -> int | None:
  value = _number(text)
  if value is None:
    return None
  if math.isnan(value):
    return -1
  return {1.0: 1, 0.0: 0, -1.0: uncertain_value}.get(value)


def _class_ids(rows, column: str, where) -> np.ndarray:
  """Class ids of one column: integers >= 0; blank or -1 means unlabelled (-1)."""
  values = np.array([row[column] for row in rows], dtype=str)
  uniques, inverse = np.unique(values, return_inverse=True)
  mapped = np.empty(len(uniques), np.int32)
  for k, text in enumerate(uniques.tolist()):
    value = _number(text)
    if value is not None and math.isnan(value):
      value = -1.0
    if value is None or not value.is_integer() or value < -1:
      line = int(np.flatnonzero(inverse.reshape(-1) == k)[0]) + 2
      raise errors.UserError(f"{where} line {line}: {column}={text!r} is not a class id "
                             f"(an integer >= 0, or blank / -1 for unlabelled)")
    mapped[k] = int(value)
  return mapped[inverse.reshape(-1)]


def _class_names(rows, ids: np.ndarray, label_name_column: str | None, where) -> tuple[str, ...]:
  """Classes are counted over the whole CSV, so every split agrees on num_classes."""
  num_classes = int(ids.max()) + 1 if len(ids) else 0
  names = [str(i) for i in range(num_classes)]
  if label_name_column:
    seen = {}
    for label, row in zip(ids.tolist(), rows):
      if label < 0:
        continue
      label_name = seen.setdefault(label, row[label_name_column])
      if label_name != row[label_name_column]:
        raise errors.UserError(f"{where}: label {label} is named both {label_name!r} "
                               f"and {row[label_name_column]!r}")
      names[label] = label_name
  return tuple(names)


def normalise_splits(values: Sequence[str], split_values: Mapping[str, str] | None = None,
                     where: str = "") -> np.ndarray:
  """Split names as shipped -> "train" / "val" / "test" ("" for blank).

  Args:
    values: one split value per row, as the data set writes it.
    split_values: our split name -> the data set's value for it; None accepts our names and
      DEFAULT_SPLIT_NAMES' spellings ("valid", "validation", "validate").
    where: the file, for messages.

  Raises:
    ValueError: a non-blank value that maps to none of our splits (rather than losing rows).
  """
  if split_values is None:
    to_ours = DEFAULT_SPLIT_NAMES
  else:
    unknown = sorted(set(split_values) - set(splits_lib.SPLITS))
    if unknown:
      raise errors.UserError(f"split_values maps {', '.join(unknown)}; its keys must be among "
                             f"{', '.join(splits_lib.SPLITS)}")
    to_ours = {value: ours for ours, value in split_values.items()}
  stripped = [value.strip() for value in values]
  unmapped = sorted({v for v in stripped if v and v not in to_ours})
  if unmapped:
    raise errors.UserError(f"{where}: split values {', '.join(map(repr, unmapped))} map to none of "
                           f"{', '.join(splits_lib.SPLITS)} (mapping: {to_ours}); set split_values to name "
                           f"the data's value for each of our splits")
  return np.array([to_ours[v] if v else "" for v in stripped], dtype=str).reshape(-1)


def read_csv_table(csv_path: str | os.PathLike[str],
                   root: str | os.PathLike[str] | None = None, *, path_column: str,
                   label_column: str | None = None, label_columns: Sequence[str] = (),
                   label_name_column: str | None = None, group_column: str | None = None,
                   split_column: str | None = None,
                   split_values: Mapping[str, str] | None = None, uncertain: str = "ignore",
                   name: str | None = None) -> Table:
  """The table listed by a CSV (.csv or .csv.gz) with one row per image file.

  Args:
    csv_path: the CSV file.
    root: image paths are relative to it (absolute paths are kept); default: the CSV's folder.
    path_column: the column of image paths.
    label_column: one column of class ids (integers >= 0; blank or -1: unlabelled).
    label_columns: several binary columns, for multi-label data: 1 positive, 0 negative,
      blank unknown (-1), "-1" uncertain, handled by `uncertain`. Floats ("1.0") parse.
    label_name_column: the class name of each label_column id.
    group_column: patient / study / lesion ids; a blank id makes that row its own group.
    split_column: the split each row ships in.
    split_values: our split name ("train", "val", "test") -> the split column's value for
      it; default: our names plus the usual spellings of validation (see normalise_splits).
    uncertain: what "-1" in label_columns becomes: "ignore" -> -1 (unknown), "zeros" -> 0,
      "ones" -> 1 (CheXpert's U-Ignore, U-Zeros, U-Ones).
    name: the data set's name; default: the CSV's folder name.
  """
  csv_path = paths_lib.path(csv_path)
  if label_column and label_columns:
    raise errors.UserError("give label_column (one class column) or label_columns (several binary "
                           "columns), not both")
  check_uncertain(uncertain)
  rows = read_csv_rows(csv_path, [path_column, label_column, *label_columns, label_name_column,
                                  group_column, split_column])
  return table_from_rows(
      rows, csv_path, root, path_column=path_column, label_column=label_column,
      label_columns=tuple(label_columns), label_name_column=label_name_column,
      group_column=group_column, split_column=split_column, split_values=split_values,
      uncertain=uncertain, name=name)


def table_from_rows(rows, csv_path: paths_lib.Path, root, *, path_column, label_column,
                    label_columns, label_name_column, group_column, split_column,
                    split_values, uncertain, name) -> Table:
  """The table of CSV rows already read from csv_path; arguments as read_csv_table's."""
  root = paths_lib.path(root) if root is not None else csv_path.parent
  blank = [n for n, row in enumerate(rows, 2) if not row[path_column].strip()]
  if blank:
    raise errors.UserError(f"{csv_path} line {blank[0]}: {path_column} is blank")
  paths = tuple(paths_lib.join(root, row[path_column].strip()) for row in rows)
  if label_columns:
    labels = binary_labels(rows, label_columns, uncertain, str(csv_path))
    class_names = label_columns
  elif label_column:
    labels = _class_ids(rows, label_column, csv_path)
    class_names = _class_names(rows, labels, label_name_column, csv_path)
  else:
    labels, class_names = np.full(len(rows), -1, np.int32), ()
  if group_column:  # A row without an id is its own group: it pairs with nothing.
    groups = [row[group_column].strip() or path for row, path in zip(rows, paths)]
  else:
    groups = paths
  splits = (normalise_splits([row[split_column] for row in rows], split_values, str(csv_path))
            if split_column else np.full(len(rows), "", dtype=str))
  return Table(name=name or csv_path.parent.name, paths=paths, labels=labels,
               groups=np.array(groups, dtype=str), splits=splits, class_names=class_names,
               multi_label=bool(label_columns), has_groups=bool(group_column))

"""Image tables, and the in-memory sources decoded from them.

Two steps, kept apart so that a split (by patient, say) is drawn before anything is decoded:

1. A `Table` says what a data set lists, one row per image file: its path, labels, group
   (patient) and the split it ships in. `read_csv_table` reads one from any CSV (custom and
   unlabelled data need no code: a path column is enough); layouts.py reads the known public
   layouts (CheXpert, MIMIC-CXR, ...); `nih_cxr1000_table` reads the shared NIH subset.
2. A `TableSource` decodes chosen rows of a table once, at construction, into one uint8
   array, so records are served exactly like MedMNISTSource's and a data set must fit in
   memory at its stored size (resize with `image_size` to make it so). Unreadable files are
   all listed before training starts, or skipped on request.

`CSVManifestSource` (one CSV, optionally one split of it) and `open_nih_cxr1000` are the
one-call forms, built on these two. nih_cxr1000 is the shared NIH ChestX-ray subset
(index.csv with columns relpath,split,label,label_name,patient_id,followup); patients are
its groups, for MICLe.
"""
from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import gzip
import logging
import math
import os
import pathlib
import time
from typing import Mapping, Sequence

import numpy as np
from PIL import Image
from PIL import ImageOps

from medssl_jax.data import download
from medssl_jax.data import in_memory

NIH_CXR1000 = "nih_cxr1000"
NIH_CXR1000_DIR_ENV = "MEDSSL_NIH_CXR1000_DIR"
# Our split names -> the values of index.csv's split column.
NIH_CXR1000_SPLITS = {"train": "train", "val": "valid", "test": "test"}

SPLITS = ("train", "val", "test")
# A split column's values when no split_values are given: ours, and the usual spellings of
# "validation" (CheXpert's "valid", MIMIC-CXR's "validate").
DEFAULT_SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val",
                       "validate": "val", "test": "test"}
# What a multi-label "-1" (uncertain) becomes: CheXpert's U-Ignore, U-Zeros, U-Ones.
UNCERTAIN_POLICIES = {"ignore": -1, "zeros": 0, "ones": 1}
RESIZE_MODES = ("crop", "pad")
BAD_FILE_POLICIES = ("stop", "skip")
DICOM_SUFFIXES = (".dcm", ".dicom")

_MODES = {1: "L", 3: "RGB"}
_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
_MAX_LISTED = 20          # bad files named in full in an error or warning
_PROGRESS_EVERY_S = 10.0  # seconds between progress lines while decoding
_MAX_THREADS = 16


class BadImageFilesError(ValueError):
  """Image files that cannot be read; `bad` lists each (path, reason)."""

  def __init__(self, message: str, bad: Sequence[tuple[str, str]]):
    super().__init__(message)
    self.bad = list(bad)


class MissingImageFilesError(BadImageFilesError, FileNotFoundError):
  """Every bad file is missing: also a FileNotFoundError, as a single missing file was."""


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
    rows = _row_indices(rows, len(self))
    return dataclasses.replace(
        self, paths=tuple(self.paths[i] for i in rows), labels=self.labels[rows],
        groups=self.groups[rows], splits=self.splits[rows],
        studies=None if self.studies is None else self.studies[rows])

  def __repr__(self) -> str:
    counts = dict(collections.Counter(self.splits.tolist()))
    return (f"Table(name={self.name!r}, rows={len(self)}, classes={self.num_classes}, "
            f"multi_label={self.multi_label}, has_groups={self.has_groups}, splits={counts})")


def _row_indices(rows, n: int) -> np.ndarray:
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
  csv_path = pathlib.Path(csv_path)
  if not csv_path.is_file():
    raise FileNotFoundError(f"manifest {csv_path} does not exist")
  opener = gzip.open if csv_path.suffix == ".gz" else open
  # utf-8-sig: a CSV saved by Excel starts with a byte-order mark that would rename column 1.
  with opener(csv_path, "rt", newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    rows = list(reader)
    header = reader.fieldnames or []
  missing = [c for c in columns if c and c not in header]
  if missing:
    raise ValueError(f"{csv_path} has no column {', '.join(missing)}; "
                     f"its columns are {', '.join(header)}")
  return rows


def check_uncertain(uncertain: str) -> int:
  """The label value a "-1" becomes under policy `uncertain`."""
  if uncertain not in UNCERTAIN_POLICIES:
    raise ValueError(f"uncertain labels policy must be one of {', '.join(UNCERTAIN_POLICIES)}, "
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
        raise ValueError(f"{where} line {line}: {column}={value!r} is not a binary label "
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
      raise ValueError(f"{where} line {line}: {column}={text!r} is not a class id "
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
        raise ValueError(f"{where}: label {label} is named both {label_name!r} "
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
    unknown = sorted(set(split_values) - set(SPLITS))
    if unknown:
      raise ValueError(f"split_values maps {', '.join(unknown)}; its keys must be among "
                       f"{', '.join(SPLITS)}")
    to_ours = {value: ours for ours, value in split_values.items()}
  stripped = [value.strip() for value in values]
  unmapped = sorted({v for v in stripped if v and v not in to_ours})
  if unmapped:
    raise ValueError(f"{where}: split values {', '.join(map(repr, unmapped))} map to none of "
                     f"{', '.join(SPLITS)} (mapping: {to_ours}); set split_values to name "
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
  csv_path = pathlib.Path(csv_path)
  if label_column and label_columns:
    raise ValueError("give label_column (one class column) or label_columns (several binary "
                     "columns), not both")
  check_uncertain(uncertain)
  rows = read_csv_rows(csv_path, [path_column, label_column, *label_columns, label_name_column,
                                  group_column, split_column])
  return _table_from_rows(
      rows, csv_path, root, path_column=path_column, label_column=label_column,
      label_columns=tuple(label_columns), label_name_column=label_name_column,
      group_column=group_column, split_column=split_column, split_values=split_values,
      uncertain=uncertain, name=name)


def _table_from_rows(rows, csv_path: pathlib.Path, root, *, path_column, label_column,
                     label_columns, label_name_column, group_column, split_column,
                     split_values, uncertain, name) -> Table:
  root = pathlib.Path(root) if root is not None else csv_path.parent
  blank = [n for n, row in enumerate(rows, 2) if not row[path_column].strip()]
  if blank:
    raise ValueError(f"{csv_path} line {blank[0]}: {path_column} is blank")
  paths = tuple(str(root / row[path_column].strip()) for row in rows)
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


# ---------------------------------------------------------------------------------------
# Decoding the rows of a table.


class TableSource(in_memory.InMemoryRecords):
  """Chosen rows of a Table, decoded once into memory.

  Attributes:
    images: (N, H, W, C) uint8, read-only.
    labels: (N,) int32 class ids (-1 unlabelled), or (N, L) int32 1 / 0 / -1 (unknown) when
      multi_label.
    groups: (N,) int64 group ids, numbered over the whole table (every split), so one
      patient has the same id in every split; arange(N) when the table has no groups.
    group_names: the name of each group id (group_names[groups[i]]); the paths when the
      table has no groups.
    has_groups: whether groups are real ids (patients).
    paths: (N,) the file each image was read from.
    rows: (N,) int64 the table row of each image.
    skipped: (path, reason) of each unreadable file dropped under bad_files="skip".
    num_classes, class_names, multi_label, image_shape, name, split.
  """

  def __init__(self, table: Table, rows=None, *, split: str | None = None,
               image_size: int | None = None, resize: str = "crop", channels: int = 1,
               bad_files: str = "stop", num_threads: int | None = None):
    """Decodes the rows.

    Args:
      table: what to read.
      rows: indices or a boolean mask of the rows to decode; None for all.
      split: the split these rows are, for messages and records.
      image_size: resize every image to image_size x image_size, keeping its aspect, then
        centre-crop (resize="crop") or pad with black (resize="pad") to the square. None:
        keep the files' size, which must then be the same for all.
      resize: "crop" or "pad".
      channels: 1 (grey) or 3 (RGB); files are converted as needed.
      bad_files: "stop" raises BadImageFilesError after trying every row, listing each
        unreadable file; "skip" drops them with a warning and records them in `skipped`.
      num_threads: decoding threads (Pillow decodes without the GIL); None: one per core.

    Raises:
      BadImageFilesError: bad_files="stop" and some files cannot be read, or none can.
      ValueError: images of different sizes without image_size; bad arguments.
    """
    _check_choice("channels", channels, tuple(_MODES))
    _check_choice("resize", resize, RESIZE_MODES)
    _check_choice("bad_files", bad_files, BAD_FILE_POLICIES)
    rows = np.arange(len(table)) if rows is None else _row_indices(rows, len(table))
    where = table.name + (f" ({split})" if split else "")
    if not len(rows):
      raise ValueError(f"{where} lists no images")
    self.name, self.split = table.name, split
    self.class_names, self.multi_label = table.class_names, table.multi_label
    self.num_classes, self.has_groups = table.num_classes, table.has_groups
    paths = [table.paths[i] for i in rows]
    self.images, kept, self.skipped = _decode_files(
        paths, image_size, resize, channels, where, bad_files, num_threads)
    self.rows = rows[kept]
    self.paths = tuple(table.paths[i] for i in self.rows)
    self.labels = table.labels[self.rows].astype(np.int32)
    if table.has_groups:
      names, ids = np.unique(table.groups, return_inverse=True)
      self.groups = ids.reshape(-1).astype(np.int64)[self.rows]
      self.group_names = tuple(names.tolist())
    else:  # Each image is its own group, named by its file.
      self.groups, self.group_names = np.arange(len(self.rows), dtype=np.int64), self.paths
    self._freeze()
    self.image_shape = tuple(self.images.shape[1:])

  def _freeze(self) -> None:
    for array in (self.images, self.labels, self.groups):
      array.flags.writeable = False  # Records are views: guard the source against edits.

  # Pickled with its arrays (grain workers): decoding again in every worker would cost more
  # than copying, and a worker must see exactly the images the parent saw.
  def __setstate__(self, state):
    self.__dict__.update(state)
    self._freeze()

  def __repr__(self) -> str:
    return f"TableSource(name={self.name!r}, split={self.split!r}, size={len(self)})"


def _check_choice(what: str, value, choices) -> None:
  if value not in choices:
    raise ValueError(f"{what} must be one of {', '.join(map(str, choices))}, got {value!r}")


def _decode_files(paths: Sequence[str], image_size, resize, channels, where, bad_files,
                  num_threads) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
  """(N', H, W, C) images of the readable files, a mask of them, and the bad ones."""
  images, kept, bad, count = None, np.zeros(len(paths), bool), [], 0
  progress = _Progress(len(paths), where)

  def decode(path):
    try:
      return decode_image(path, image_size, channels, resize=resize), None
    except (FileNotFoundError, ValueError) as e:  # The file's fault: listed, not raised.
      return None, str(e)

  threads = num_threads or _default_threads()
  chunk = 64 * threads  # bounds how far decoding runs ahead of copying into `images`
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    for start in range(0, len(paths), chunk):
      for i, (image, problem) in enumerate(pool.map(decode, paths[start:start + chunk]),
                                           start):
        if problem is not None:
          bad.append((paths[i], problem))
          continue
        if images is None:
          images = np.empty((len(paths),) + image.shape, np.uint8)
          first = paths[i]
        elif image.shape != images.shape[1:]:
          raise ValueError(
              f"{paths[i]} is {image.shape[1]}x{image.shape[0]} but {first} is "
              f"{images.shape[2]}x{images.shape[1]}; images of a manifest must share one "
              f"size: set image_size to resize them all")
        images[count], kept[i] = image, True
        count += 1
        progress.update(i + 1)
  _report_bad(bad, len(paths), where, bad_files, all_bad=images is None)
  logging.info("decoded %d images of %s to %s in %.1f s", count, where, images.shape[1:],
               time.monotonic() - progress.start)
  # A view of the first `count`: skipping wastes the bad files' slots but never copies.
  return images[:count], kept, bad


def _default_threads() -> int:
  """One per core this process may use (not the machine's count, under a CPU limit)."""
  cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
           else os.cpu_count() or 1)
  return min(_MAX_THREADS, cores)


def _report_bad(bad, total: int, where: str, bad_files: str, all_bad: bool) -> None:
  if not bad:
    return
  listing = "\n".join(f"  {reason}" for _, reason in bad[:_MAX_LISTED])
  if len(bad) > _MAX_LISTED:
    listing += f"\n  ... and {len(bad) - _MAX_LISTED} more"
  if bad_files == "stop" or all_bad:
    error = (MissingImageFilesError if all(not os.path.exists(p) for p, _ in bad)
             else BadImageFilesError)
    hint = ("" if all_bad else "; fix or remove them, or set bad_files='skip' "
            "(--config.data.bad_files=skip) to go on without them")
    raise error(f"{len(bad)} of {total} image files of {where} cannot be read{hint}:\n"
                f"{listing}", bad)
  logging.warning("%s: skipping %d of %d image files that cannot be read:\n%s", where,
                  len(bad), total, listing)


class _Progress:
  """Logs images/s and the time left every _PROGRESS_EVERY_S seconds."""

  def __init__(self, total: int, where: str):
    self.total, self.where = total, where
    self.start = self.last = time.monotonic()

  def update(self, done: int) -> None:
    now = time.monotonic()
    if now - self.last < _PROGRESS_EVERY_S or done >= self.total:
      return
    self.last = now
    rate = done / max(now - self.start, 1e-9)
    logging.info("%s: decoded %d/%d images (%.0f images/s, ETA %.0f s)", self.where, done,
                 self.total, rate, (self.total - done) / rate)


def decode_image(path: str | os.PathLike[str], image_size: int | None = None,
                 channels: int = 1, csv_path=None, *, resize: str = "crop") -> np.ndarray:
  """One file as uint8 (H, W, channels), optionally resized to image_size x image_size.

  PNG, JPEG and the other formats Pillow reads, and DICOM (.dcm, .dicom; see dicom.py).
  Grey files are repeated to 3 channels and colour files made grey as channels asks.
  resize: "crop" keeps the aspect and centre-crops the square; "pad" keeps the whole
  image, with black bars.
  """
  listed = f" (listed in {csv_path})" if csv_path else ""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"image {path}{listed} does not exist")
  try:
    image = _read_8bit(path).convert(_MODES[channels])
    if image_size:
      image = (_resize_center_crop if resize == "crop" else _resize_pad)(image, image_size)
    array = np.asarray(image, np.uint8)
  except _DECODE_ERRORS as e:
    raise ValueError(f"cannot decode image {path}{listed}: {type(e).__name__}: {e}") from e
  return array.reshape(array.shape[:2] + (channels,))


def _read_8bit(path) -> Image.Image:
  """The file's image, fully read, with 8 bits per channel."""
  if str(path).lower().endswith(DICOM_SUFFIXES):
    # Imported here: pydicom is needed only by data sets of DICOM files.
    from medssl_jax.data import dicom  # pylint: disable=g-import-not-at-top
    return Image.fromarray(dicom.read_dicom(path))
  with Image.open(path) as image:
    # exif_transpose returns a loaded copy: camera photos (skin, fundus) may be rotated.
    return _to_8bit(ImageOps.exif_transpose(image))


def _to_8bit(image: Image.Image) -> Image.Image:
  """16-bit greyscale (common for X-ray PNGs) scaled to 8 bits; Pillow would clip it."""
  if image.mode not in _HIGH_BIT_MODES:
    return image
  array = np.asarray(image).astype(np.int64)
  return Image.fromarray((np.clip(array, 0, 65535) >> 8).astype(np.uint8), "L")


def _resize_center_crop(image: Image.Image, size: int) -> Image.Image:
  """Resizes the short side to `size` (aspect kept), then crops the centre square."""
  width, height = image.size
  if (width, height) == (size, size):
    return image
  scale = size / min(width, height)
  new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
  image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)  # antialiased when shrinking
  left, top = (new_w - size) // 2, (new_h - size) // 2
  return image.crop((left, top, left + size, top + size))


def _resize_pad(image: Image.Image, size: int) -> Image.Image:
  """Resizes the long side to `size` (aspect kept), then centres it on a black square."""
  width, height = image.size
  if (width, height) == (size, size):
    return image
  scale = size / max(width, height)
  new_w, new_h = max(1, min(size, round(width * scale))), max(1, min(size, round(height * scale)))
  canvas = Image.new(image.mode, (size, size), 0)
  canvas.paste(image.resize((new_w, new_h), Image.Resampling.BICUBIC),
               ((size - new_w) // 2, (size - new_h) // 2))
  return canvas


# ---------------------------------------------------------------------------------------
# One-call forms: a CSV manifest, and nih_cxr1000.


class CSVManifestSource(TableSource):
  """The images listed in a CSV file (optionally one split of it), decoded once into memory.

  Attributes: as TableSource's (multi_label is always False), plus csv_path and root;
  `split` is the split column's value as written (e.g. "valid").
  """

  def __init__(self, csv_path: str | os.PathLike[str],
               root: str | os.PathLike[str] | None = None, *,
               split: str | None = None, split_column: str | None = None,
               path_column: str, label_column: str | None = None,
               label_name_column: str | None = None, group_column: str | None = None,
               image_size: int | None = None, channels: int = 1, name: str | None = None,
               resize: str = "crop", bad_files: str = "stop"):
    _check_choice("channels", channels, tuple(_MODES))
    if (split is None) != (split_column is None):
      raise ValueError("give both split and split_column, or neither")
    self.csv_path = pathlib.Path(csv_path)
    self.root = pathlib.Path(root) if root is not None else self.csv_path.parent
    rows = read_csv_rows(self.csv_path, [path_column, split_column, label_column,
                                         label_name_column, group_column])
    table = _table_from_rows(
        rows, self.csv_path, self.root, path_column=path_column, label_column=label_column,
        label_columns=(), label_name_column=label_name_column, group_column=group_column,
        split_column=None, split_values=None, uncertain="ignore", name=name)
    keep = _split_rows(rows, split_column, split, self.csv_path)
    super().__init__(table, keep, split=split, image_size=image_size, resize=resize,
                     channels=channels, bad_files=bad_files)

  def __repr__(self) -> str:
    return (f"CSVManifestSource(name={self.name!r}, split={self.split!r}, size={len(self)}, "
            f"csv={str(self.csv_path)!r})")


def _split_rows(rows, split_column, split, csv_path) -> np.ndarray | None:
  """The rows whose split column reads exactly `split`; None (all) without a column."""
  if split_column is None:
    return None
  keep = np.array([i for i, row in enumerate(rows) if row[split_column] == split], np.int64)
  if not len(keep):
    present = sorted({row[split_column] for row in rows})
    raise ValueError(f"{csv_path} has no rows with {split_column}={split!r}; "
                     f"its values are {', '.join(present)}")
  return keep


def resolve_nih_cxr1000_dir(data_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
  """The directory holding nih_cxr1000's index.csv (never downloaded).

  Order: data_dir (or its nih_cxr1000/ subfolder) if given; else $MEDSSL_NIH_CXR1000_DIR;
  else $MEDSSL_DATA_DIR/nih_cxr1000, then $MEDSSL_DATA_DIR/../nih_cxr1000 ($MEDSSL_DATA_DIR
  usually names the MedMNIST folder beside it).
  """
  if data_dir:
    candidates = [pathlib.Path(data_dir), pathlib.Path(data_dir) / NIH_CXR1000]
  elif os.environ.get(NIH_CXR1000_DIR_ENV):
    candidates = [pathlib.Path(os.environ[NIH_CXR1000_DIR_ENV])]
  elif os.environ.get(download.DATA_DIR_ENV):
    base = pathlib.Path(os.environ[download.DATA_DIR_ENV])
    candidates = [base / NIH_CXR1000, base / ".." / NIH_CXR1000]  # ".." works for "." too
  else:
    candidates = []
  for candidate in candidates:
    if (candidate.expanduser() / "index.csv").is_file():
      return candidate.expanduser()
  looked = ", ".join(str(c / "index.csv") for c in candidates) or "nowhere (nothing set)"
  raise FileNotFoundError(
      f"{NIH_CXR1000} not found: looked for {looked}. It is not downloaded; point at the "
      f"directory holding its index.csv with --config.data.dir=DIR or "
      f"${NIH_CXR1000_DIR_ENV}=DIR (or put it at ${download.DATA_DIR_ENV}/{NIH_CXR1000}).")


def nih_cxr1000_table(data_dir: str | os.PathLike[str] | None = None) -> Table:
  """All 1000 rows of nih_cxr1000: 2 classes, patients as groups, its splits as shipped."""
  root = resolve_nih_cxr1000_dir(data_dir)
  return read_csv_table(root / "index.csv", root, path_column="relpath", label_column="label",
                        label_name_column="label_name", group_column="patient_id",
                        split_column="split", split_values=NIH_CXR1000_SPLITS,
                        name=NIH_CXR1000)


def open_nih_cxr1000(split: str, data_dir: str | os.PathLike[str] | None = None,
                     image_size: int | None = None) -> CSVManifestSource:
  """One split ("train", "val", "test") of nih_cxr1000; groups are patients."""
  if split not in NIH_CXR1000_SPLITS:
    raise ValueError(f"unknown split {split!r}; known: {', '.join(NIH_CXR1000_SPLITS)}")
  root = resolve_nih_cxr1000_dir(data_dir)
  source = CSVManifestSource(
      root / "index.csv", root, split=NIH_CXR1000_SPLITS[split], split_column="split",
      path_column="relpath", label_column="label", label_name_column="label_name",
      group_column="patient_id", image_size=image_size, channels=1, name=NIH_CXR1000)
  source.split = split  # report "val" like every other source, not the CSV's "valid"
  return source

"""In-memory sources decoded from image tables: TableSource, CSVManifestSource, nih_cxr1000.

A table (table.py) is read first, so that a split (by patient, say) is drawn before anything
is decoded. A `TableSource` then decodes chosen rows of a table once, at construction (with
decode.py, on threads), into one uint8 array, so records are served exactly like
MedMNISTSource's and a data set must fit in memory at its stored size (resize with
`image_size` to make it so). Unreadable files are all listed before training starts, or
skipped on request.

`CSVManifestSource` (one CSV, optionally one split of it) and `open_nih_cxr1000` are the
one-call forms, built on a table and a TableSource. nih_cxr1000 is the shared NIH
ChestX-ray subset (index.csv with columns relpath,split,label,label_name,patient_id,
followup); patients are its groups, for MICLe. `nih_cxr1000_table` reads its whole table.
"""
from __future__ import annotations

import concurrent.futures
import logging
import os
import time
from typing import Sequence

import numpy as np

from medssl_jax import errors
from medssl_jax import paths as paths_lib
from medssl_jax.data import decode
from medssl_jax.data import download
from medssl_jax.data import in_memory
from medssl_jax.data import table as table_lib

NIH_CXR1000 = "nih_cxr1000"
NIH_CXR1000_DIR_ENV = "MEDSSL_NIH_CXR1000_DIR"
# Our split names -> the values of index.csv's split column.
NIH_CXR1000_SPLITS = {"train": "train", "val": "valid", "test": "test"}

BAD_FILE_POLICIES = ("stop", "skip")

_MAX_LISTED = 20          # bad files named in full in an error or warning
_PROGRESS_EVERY_S = 10.0  # seconds between progress lines while decoding
_MAX_THREADS = 16


class BadImageFilesError(errors.UserError):
  """Image files that cannot be read; `bad` lists each (path, reason)."""

  def __init__(self, message: str, bad: Sequence[tuple[str, str]]):
    super().__init__(message)
    self.bad = list(bad)


class MissingImageFilesError(BadImageFilesError, FileNotFoundError):
  """Every bad file is missing: also a FileNotFoundError, as a single missing file was."""


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

  def __init__(self, table: table_lib.Table, rows=None, *, split: str | None = None,
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
    _check_choice("channels", channels, decode.CHANNELS)
    _check_choice("resize", resize, decode.RESIZE_MODES)
    _check_choice("bad_files", bad_files, BAD_FILE_POLICIES)
    rows = np.arange(len(table)) if rows is None else table_lib.row_indices(rows, len(table))
    where = table.name + (f" ({split})" if split else "")
    if not len(rows):
      raise errors.UserError(f"{where} lists no images")
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
    raise errors.UserError(f"{what} must be one of {', '.join(map(str, choices))}, got {value!r}")


def _decode_files(paths: Sequence[str], image_size, resize, channels, where, bad_files,
                  num_threads) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
  """(N', H, W, C) images of the readable files, a mask of them, and the bad ones."""
  images, kept, bad, count = None, np.zeros(len(paths), bool), [], 0
  progress = _Progress(len(paths), where)

  def decode_one(path):
    try:
      return decode.decode_image(path, image_size, channels, resize=resize), None
    except (FileNotFoundError, ValueError) as e:  # The file's fault: listed, not raised.
      return None, str(e)

  threads = num_threads or _default_threads()
  chunk = 64 * threads  # bounds how far decoding runs ahead of copying into `images`
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    for start in range(0, len(paths), chunk):
      for i, (image, problem) in enumerate(pool.map(decode_one, paths[start:start + chunk]),
                                           start):
        if problem is not None:
          bad.append((paths[i], problem))
          continue
        if images is None:
          images = np.empty((len(paths),) + image.shape, np.uint8)
          first = paths[i]
        elif image.shape != images.shape[1:]:
          raise errors.UserError(
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
    error = (MissingImageFilesError if all(not paths_lib.path(p).exists() for p, _ in bad)
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
    _check_choice("channels", channels, decode.CHANNELS)
    if (split is None) != (split_column is None):
      raise errors.UserError("give both split and split_column, or neither")
    self.csv_path = paths_lib.path(csv_path)
    self.root = paths_lib.path(root) if root is not None else self.csv_path.parent
    rows = table_lib.read_csv_rows(self.csv_path, [path_column, split_column, label_column,
                                                   label_name_column, group_column])
    table = table_lib.table_from_rows(
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
    raise errors.UserError(f"{csv_path} has no rows with {split_column}={split!r}; "
                           f"its values are {', '.join(present)}")
  return keep


def resolve_nih_cxr1000_dir(data_dir: str | os.PathLike[str] | None = None) -> paths_lib.Path:
  """The directory holding nih_cxr1000's index.csv (never downloaded).

  Order: data_dir (or its nih_cxr1000/ subfolder) if given; else $MEDSSL_NIH_CXR1000_DIR;
  else $MEDSSL_DATA_DIR/nih_cxr1000, then $MEDSSL_DATA_DIR/../nih_cxr1000 ($MEDSSL_DATA_DIR
  usually names the MedMNIST folder beside it).
  """
  if data_dir:
    candidates = [paths_lib.path(data_dir), paths_lib.path(data_dir) / NIH_CXR1000]
  elif os.environ.get(NIH_CXR1000_DIR_ENV):
    candidates = [paths_lib.path(os.environ[NIH_CXR1000_DIR_ENV])]
  elif os.environ.get(download.DATA_DIR_ENV):
    base = paths_lib.path(os.environ[download.DATA_DIR_ENV])
    candidates = [base / NIH_CXR1000, base / ".." / NIH_CXR1000]  # ".." works for "." too
  else:
    candidates = []
  for candidate in candidates:
    if (candidate / "index.csv").is_file():
      return candidate
  looked = ", ".join(str(c / "index.csv") for c in candidates) or "nowhere (nothing set)"
  raise errors.UserFileNotFoundError(
      f"{NIH_CXR1000} not found: looked for {looked}. It is not downloaded; point at the "
      f"directory holding its index.csv with --config.data.dir=DIR or "
      f"${NIH_CXR1000_DIR_ENV}=DIR (or put it at ${download.DATA_DIR_ENV}/{NIH_CXR1000}).")


def nih_cxr1000_table(data_dir: str | os.PathLike[str] | None = None) -> table_lib.Table:
  """All 1000 rows of nih_cxr1000: 2 classes, patients as groups, its splits as shipped."""
  root = resolve_nih_cxr1000_dir(data_dir)
  return table_lib.read_csv_table(
      root / "index.csv", root, path_column="relpath", label_column="label",
      label_name_column="label_name", group_column="patient_id", split_column="split",
      split_values=NIH_CXR1000_SPLITS, name=NIH_CXR1000)


def open_nih_cxr1000(split: str, data_dir: str | os.PathLike[str] | None = None,
                     image_size: int | None = None) -> CSVManifestSource:
  """One split ("train", "val", "test") of nih_cxr1000; groups are patients."""
  if split not in NIH_CXR1000_SPLITS:
    raise errors.UserError(f"unknown split {split!r}; known: {', '.join(NIH_CXR1000_SPLITS)}")
  root = resolve_nih_cxr1000_dir(data_dir)
  source = CSVManifestSource(
      root / "index.csv", root, split=NIH_CXR1000_SPLITS[split], split_column="split",
      path_column="relpath", label_column="label", label_name_column="label_name",
      group_column="patient_id", image_size=image_size, channels=1, name=NIH_CXR1000)
  source.split = split  # report "val" like every other source, not the CSV's "valid"
  return source

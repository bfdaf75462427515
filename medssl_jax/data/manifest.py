"""A source read from a CSV manifest: one row per image file, with optional label and group.

Custom and unlabelled data need no code: a CSV with a path column (relative to `root`, or
absolute) is enough; a label column, a split column and a group (patient) column are each
optional. Every listed image is decoded once, at construction, into one in-memory uint8
array, so records are served exactly like MedMNISTSource's and a data set must fit in
memory at its stored size (resize with `image_size` to make it so).

`open_nih_cxr1000` opens the shared NIH ChestX-ray subset (index.csv with columns
relpath,split,label,label_name,patient_id,followup) with patients as groups, for MICLe.
"""
from __future__ import annotations

import csv
import logging
import os
import pathlib

import numpy as np
from PIL import Image
from PIL import ImageOps

from medssl_jax.data import download
from medssl_jax.data import in_memory

NIH_CXR1000 = "nih_cxr1000"
NIH_CXR1000_DIR_ENV = "MEDSSL_NIH_CXR1000_DIR"
# Our split names -> the values of index.csv's split column.
NIH_CXR1000_SPLITS = {"train": "train", "val": "valid", "test": "test"}

_MODES = {1: "L", 3: "RGB"}
_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class CSVManifestSource(in_memory.InMemoryRecords):
  """The images listed in a CSV file, decoded once into memory.

  Attributes:
    images: (N, H, W, C) uint8, read-only.
    labels: (N,) int32 class ids; -1 everywhere when there is no label column.
    groups: (N,) int64 group ids, numbered over the whole CSV (every split), so one patient
      has the same id in every split; arange(N) when there is no group column.
    group_names: the CSV value of each group id (group_names[groups[i]]).
    paths: (N,) the file each image was read from.
    num_classes, class_names, multi_label (always False), image_shape, name, split.
  """

  def __init__(self, csv_path: str | os.PathLike[str],
               root: str | os.PathLike[str] | None = None, *,
               split: str | None = None, split_column: str | None = None,
               path_column: str, label_column: str | None = None,
               label_name_column: str | None = None, group_column: str | None = None,
               image_size: int | None = None, channels: int = 1, name: str | None = None):
    if channels not in _MODES:
      raise ValueError(f"channels must be 1 or 3, got {channels}")
    if (split is None) != (split_column is None):
      raise ValueError("give both split and split_column, or neither")
    self.csv_path = pathlib.Path(csv_path)
    self.root = pathlib.Path(root) if root is not None else self.csv_path.parent
    self.name = name or self.csv_path.parent.name
    self.split = split
    self.multi_label = False

    rows = _read_rows(self.csv_path, [path_column, split_column, label_column,
                                      label_name_column, group_column])
    self._describe_labels(rows, label_column, label_name_column)
    group_ids, group_names = _group_ids(rows, group_column)
    keep = _split_rows(rows, split_column, split, self.csv_path)
    self.paths = tuple(str(self.root / rows[i][path_column]) for i in keep)
    self.images = _decode_all(self.paths, self.csv_path, image_size, channels)
    self.labels = (np.array([int(rows[i][label_column]) for i in keep], np.int32)
                   if label_column else np.full(len(keep), -1, np.int32))
    if group_column:
      self.groups, self.group_names = group_ids[keep], group_names
    else:  # Each image is its own group, named by its file.
      self.groups, self.group_names = np.arange(len(keep), dtype=np.int64), self.paths
    self._freeze()
    self.image_shape = tuple(self.images.shape[1:])

  def _describe_labels(self, rows, label_column, label_name_column) -> None:
    """Classes are counted over the whole CSV, so every split agrees on num_classes."""
    if not label_column:
      self.num_classes, self.class_names = 0, ()
      return
    ids = [_label(row, label_column, n, self.csv_path) for n, row in enumerate(rows, 2)]
    self.num_classes = max(ids) + 1 if ids else 0
    names = [str(i) for i in range(self.num_classes)]
    if label_name_column:
      seen = {}
      for label, row in zip(ids, rows):
        label_name = seen.setdefault(label, row[label_name_column])
        if label_name != row[label_name_column]:
          raise ValueError(f"{self.csv_path}: label {label} is named both {label_name!r} "
                           f"and {row[label_name_column]!r}")
        names[label] = label_name
    self.class_names = tuple(names)

  def _freeze(self) -> None:
    for array in (self.images, self.labels, self.groups):
      array.flags.writeable = False  # Records are views: guard the source against edits.

  # Pickled with its arrays (grain workers): decoding again in every worker would cost more
  # than copying, and a worker must see exactly the images the parent saw.
  def __setstate__(self, state):
    self.__dict__.update(state)
    self._freeze()

  def __repr__(self) -> str:
    return (f"CSVManifestSource(name={self.name!r}, split={self.split!r}, size={len(self)}, "
            f"csv={str(self.csv_path)!r})")


def _read_rows(csv_path: pathlib.Path, columns) -> list[dict[str, str]]:
  if not csv_path.is_file():
    raise FileNotFoundError(f"manifest {csv_path} does not exist")
  with open(csv_path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    rows = list(reader)
    header = reader.fieldnames or []
  missing = [c for c in columns if c and c not in header]
  if missing:
    raise ValueError(f"{csv_path} has no column {', '.join(missing)}; "
                     f"its columns are {', '.join(header)}")
  return rows


def _label(row: dict, column: str, line: int, csv_path: pathlib.Path) -> int:
  try:
    label = int(row[column])
  except (TypeError, ValueError):
    label = -1
  if label < 0:
    raise ValueError(f"{csv_path} line {line}: {column}={row[column]!r} is not a class id "
                     f"(an integer >= 0)")
  return label


def _group_ids(rows, group_column) -> tuple[np.ndarray | None, tuple[str, ...]]:
  if not group_column:
    return None, ()
  names, ids = np.unique(np.array([row[group_column] for row in rows], dtype=str),
                         return_inverse=True)
  return ids.astype(np.int64).reshape(-1), tuple(names.tolist())


def _split_rows(rows, split_column, split, csv_path) -> np.ndarray:
  if split_column is None:
    return np.arange(len(rows))
  keep = np.array([i for i, row in enumerate(rows) if row[split_column] == split], np.int64)
  if not len(keep):
    present = sorted({row[split_column] for row in rows})
    raise ValueError(f"{csv_path} has no rows with {split_column}={split!r}; "
                     f"its values are {', '.join(present)}")
  return keep


def _decode_all(paths, csv_path, image_size, channels) -> np.ndarray:
  """Decodes every image into one (N, H, W, C) array; all must end the same size."""
  images = None
  for i, path in enumerate(paths):
    image = decode_image(path, image_size, channels, csv_path)
    if images is None:
      images = np.empty((len(paths),) + image.shape, np.uint8)
    elif image.shape != images.shape[1:]:
      raise ValueError(
          f"{path} is {image.shape[1]}x{image.shape[0]} but {paths[0]} is "
          f"{images.shape[2]}x{images.shape[1]}; images of a manifest must share one size: "
          f"set image_size to resize them all")
    images[i] = image
  if images is None:
    raise ValueError(f"{csv_path} lists no images")
  logging.info("decoded %d images of %s from %s", len(paths), images.shape[1:], csv_path)
  return images


def decode_image(path: str | os.PathLike[str], image_size: int | None = None,
                 channels: int = 1, csv_path=None) -> np.ndarray:
  """One file as uint8 (H, W, channels), optionally resized to image_size x image_size."""
  listed = f" (listed in {csv_path})" if csv_path else ""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"image {path}{listed} does not exist")
  try:
    with Image.open(path) as image:
      image = ImageOps.exif_transpose(image)  # camera photos (skin, fundus) may be rotated
      image = _to_8bit(image).convert(_MODES[channels])
      if image_size:
        image = _resize_center_crop(image, image_size)
      array = np.asarray(image, np.uint8)
  except _DECODE_ERRORS as e:
    raise ValueError(f"cannot decode image {path}{listed}: {type(e).__name__}: {e}") from e
  return array.reshape(array.shape[:2] + (channels,))


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

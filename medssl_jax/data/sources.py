"""Random-access data sources: records of an image, its labels and a group id.

A source follows grain's RandomAccessDataSource protocol (__len__, __getitem__) and yields
dicts {"image": uint8 (H, W, C), "label": int32 scalar, or (L,) of 1/0/-1 (unknown) for
multi-label data, "group": int64, "index": int64}. The group is the patient, study or lesion
an image belongs to; pairs.py draws two images of one group for MICLe. Sources hold no model
or augmentation logic.

This file holds MedMNIST (2-D, 28 px). Training, evaluation, conversion and preview open
every data set through the registry in catalog.py (`catalog.open_data(config.data, split)`).
"""
from __future__ import annotations

import dataclasses
import io
import logging
import os
import pathlib
import zipfile
import zlib

import numpy as np

from medssl_jax import errors
from medssl_jax import paths
from medssl_jax.data import download
from medssl_jax.data import in_memory
from medssl_jax.data import splits

DATA_DIR_ENV = download.DATA_DIR_ENV
MEDMNIST_URL_ENV = "MEDSSL_MEDMNIST_URL"
MEDMNIST_URL = "https://zenodo.org/records/10519652/files/{name}.npz?download=1"
TASKS = ("binary-class", "multi-class", "multi-label")


@dataclasses.dataclass(frozen=True)
class MedMNISTInfo:
  """What MedMNIST publishes about one 28 px data set (medmnist v3 INFO, Zenodo 10519652)."""
  md5: str | None
  task: str  # One of TASKS.
  class_names: tuple[str, ...]
  num_channels: int
  num_samples: tuple[int, int, int]  # train, val, test, as published; not enforced.

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def multi_label(self) -> bool:
    return self.task == "multi-label"


_ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right",
           "liver", "lung-left", "lung-right", "pancreas", "spleen")

# md5s and class names as in medmnist v3's INFO for the files of Zenodo record 10519652; the
# three files in shared/data were checked against them. Organ{A,C,S}MNIST files differ from
# MedMNIST v2 (record 6496656), hence their md5s and sizes differ from v2's.
MEDMNIST_INFO: dict[str, MedMNISTInfo] = {
    "pneumoniamnist": MedMNISTInfo(
        "28209eda62fecd6e6a2d98b1501bb15f", "binary-class", ("normal", "pneumonia"), 1,
        (4708, 524, 624)),
    "breastmnist": MedMNISTInfo(
        "750601b1f35ba3300ea97c75c52ff8f6", "binary-class", ("malignant", "normal, benign"),
        1, (546, 78, 156)),
    "bloodmnist": MedMNISTInfo(
        "7053d0359d879ad8a5505303e11de1dc", "multi-class",
        ("basophil", "eosinophil", "erythroblast",
         "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte",
         "monocyte", "neutrophil", "platelet"), 3, (11959, 1712, 3421)),
    "chestmnist": MedMNISTInfo(
        "02c8a6516a18b556561a56cbdd36c4a8", "multi-label",
        ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule",
         "pneumonia", "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis",
         "pleural", "hernia"), 1, (78468, 11219, 22433)),
    "dermamnist": MedMNISTInfo(
        "0744692d530f8e62ec473284d019b0c7", "multi-class",
        ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
         "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
         "vascular lesions"), 3, (7007, 1003, 2005)),
    "octmnist": MedMNISTInfo(
        "c68d92d5b585d8d81f7112f81e2d0842", "multi-class",
        ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"), 1,
        (97477, 10832, 1000)),
    "pathmnist": MedMNISTInfo(
        "a8b06965200029087d5bd730944a56c1", "multi-class",
        ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
         "normal colon mucosa", "cancer-associated stroma",
         "colorectal adenocarcinoma epithelium"), 3, (89996, 10004, 7180)),
    "organamnist": MedMNISTInfo(
        "68e3f8846a6bd62f0c9bf841c0d9eacc", "multi-class", _ORGANS, 1, (34561, 6491, 17778)),
    "organcmnist": MedMNISTInfo(
        "b9ceb9546e10131b32923c5bbeaea2b1", "multi-class", _ORGANS, 1, (12975, 2392, 8216)),
    "organsmnist": MedMNISTInfo(
        "9ab87b696fb54e2a387ebe992d6ed5f1", "multi-class", _ORGANS, 1, (13932, 2452, 8827)),
    # Published as ordinal regression (5 grades of diabetic retinopathy); evaluated as the
    # MedMNIST benchmark does, as 5 classes.
    "retinamnist": MedMNISTInfo(
        "bd4c0672f1bba3e3a89f0e4e876791e4", "multi-class", ("0", "1", "2", "3", "4"), 3,
        (1080, 120, 400)),
    "tissuemnist": MedMNISTInfo(
        "ebe78ee8b05294063de985d821c1c34b", "multi-class",
        ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
         "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes",
         "Podocytes", "Proximal Tubule Segments", "Thick Ascending Limb"), 1,
        (165466, 23640, 47280)),
}


def known_sources() -> tuple[str, ...]:
  return tuple(sorted(MEDMNIST_INFO))


def default_cache_dir() -> pathlib.Path:
  """$XDG_CACHE_HOME/medssl_jax, else ~/.cache/medssl_jax."""
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(base) / "medssl_jax"


def medmnist_info(name: str) -> MedMNISTInfo:
  if name not in MEDMNIST_INFO:
    raise errors.UserError(f"unknown MedMNIST data set {name!r}; known: {', '.join(known_sources())}")
  return MEDMNIST_INFO[name]


def medmnist_url(name: str) -> str:
  return os.environ.get(MEDMNIST_URL_ENV, MEDMNIST_URL).format(name=name)


def resolve_medmnist_file(name: str, data_dir: str | os.PathLike[str] | None = None,
                          cache_dir: str | os.PathLike[str] | None = None) -> paths.Path:
  """Returns the path of <name>.npz, downloading it into the cache only when needed.

  Order:
    1. The data directory: data_dir (from the config) if given, else $MEDSSL_DATA_DIR if
       set. If <name>.npz is there it is used as is (no md5 check: a user's own copy).
    2. The cache: cache_dir if given, else default_cache_dir(). A file there was verified
       when it was downloaded and is used as is.
    3. A download from medmnist_url(name) ($MEDSSL_MEDMNIST_URL overrides the template)
       into the cache, checked against the published md5. A data directory is never
       written to; when one was named but lacks the file, a warning says so.

  Raises:
    ValueError: name is not a known MedMNIST data set.
    download.DataUnavailableError: the file is nowhere locally and cannot be downloaded.
  """
  name = name.lower()
  info = medmnist_info(name)
  filename = f"{name}.npz"
  data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or None  # "" counts as unset.
  if data_dir is not None:
    given = paths.path(data_dir) / filename  # local or a bucket
    if given.is_file():
      return given
  cached = pathlib.Path(cache_dir or default_cache_dir()).expanduser() / filename
  if data_dir is not None:
    logging.warning("%s is not in the data directory %s; using the cache copy at %s "
                    "(downloaded if missing).", filename, data_dir, cached)
  if cached.is_file():
    return cached
  url = medmnist_url(name)
  logging.info("Downloading %s from %s to %s", filename, url, cached)
  return download.fetch(url, cached, info.md5)


class MedMNISTSource(in_memory.InMemoryRecords):
  """One split of a MedMNIST .npz, held in memory; each image is its own group.

  Attributes:
    images: (N, H, W, C) uint8, read-only; grey images get C = 1.
    labels: (N,) int32 class ids, or (N, L) int32 of 0/1 for a multi-label set.
    groups: (N,) int64; MedMNIST has no patient ids, so arange(N).
  """

  def __init__(self, name: str, split: str,
               data_dir: str | os.PathLike[str] | None = None,
               cache_dir: str | os.PathLike[str] | None = None):
    if split not in splits.SPLITS:
      raise errors.UserError(f"unknown split {split!r}; known: {', '.join(splits.SPLITS)}")
    self._describe(name.lower(), split)
    self._load(resolve_medmnist_file(self.name, data_dir, cache_dir))

  def _describe(self, name: str, split: str) -> None:
    self.name = name
    self.split = split
    self.info = medmnist_info(name)
    self.num_classes = self.info.num_classes
    self.multi_label = self.info.multi_label
    self.class_names = self.info.class_names

  def _load(self, path: paths.PathLike) -> None:
    self.path = paths.path(path)
    images, labels = _read_split(self.path, self.split)
    self.images = _check_images(images, self.info, self.path, self.split)
    self.labels = _check_labels(labels, self.info, self.path, self.split, len(self.images))
    self.groups = np.arange(len(self.images), dtype=np.int64)
    for array in (self.images, self.labels, self.groups):
      array.flags.writeable = False  # Records are views: guard the source against edits.
    self.image_shape = tuple(self.images.shape[1:])

  # Grain worker processes receive the source pickled: send the resolved path, not the
  # arrays, and let each worker read the file again (no download: the path is resolved).
  def __getstate__(self):
    return {"name": self.name, "split": self.split, "path": str(self.path)}

  def __setstate__(self, state):
    self._describe(state["name"], state["split"])
    self._load(state["path"])

  def __repr__(self) -> str:
    return f"MedMNISTSource(name={self.name!r}, split={self.split!r}, size={len(self)})"


def _corrupt(path: paths.Path, problem: str) -> errors.UserError:
  return errors.UserError(f"{path} is not a valid MedMNIST file: {problem}. Delete it to download "
                          f"it again, or replace it with the official file.")


def _read_split(path: paths.Path, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads only the two arrays of one split; any unreadable file names its path."""
  # A local file is read member by member; a bucket object is fetched whole first.
  file = os.fspath(path) if not paths.is_remote(path) else io.BytesIO(path.read_bytes())
  # np.load would misreport a non-zip file as pickled data; say what is wrong instead.
  if not zipfile.is_zipfile(file):
    raise _corrupt(path, "it is not a complete .npz (zip) archive; it may be truncated")
  if isinstance(file, io.BytesIO):
    file.seek(0)  # is_zipfile read to the end; np.load reads from the current position
  unreadable = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error)
  try:
    npz = np.load(file, allow_pickle=False)
  except unreadable as e:
    raise _corrupt(path, f"cannot read it ({type(e).__name__}: {e})") from e
  with npz:
    keys = (f"{split}_images", f"{split}_labels")
    missing = [k for k in keys if k not in npz.files]
    if missing:
      raise _corrupt(path, f"missing {', '.join(missing)} (has {', '.join(npz.files)})")
    try:
      return npz[keys[0]], npz[keys[1]]
    except unreadable as e:  # A truncated archive fails only when its members are read.
      raise _corrupt(path, f"cannot read {split} arrays ({type(e).__name__}: {e})") from e


def _check_images(images: np.ndarray, info: MedMNISTInfo, path: paths.Path,
                  split: str) -> np.ndarray:
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] != info.num_channels:
    raise _corrupt(path, f"{split}_images has shape {images.shape} and dtype {images.dtype}; "
                   f"expected (N, H, W) or (N, H, W, {info.num_channels}) uint8")
  return images


def _check_labels(labels: np.ndarray, info: MedMNISTInfo, path: paths.Path, split: str,
                  n: int) -> np.ndarray:
  width = info.num_classes if info.multi_label else 1
  if labels.ndim == 1 and not info.multi_label:
    labels = labels[:, None]
  if labels.shape != (n, width):
    raise _corrupt(path, f"{split}_labels has shape {labels.shape}; expected ({n}, {width})")
  high = 2 if info.multi_label else info.num_classes
  if n and (labels.min() < 0 or labels.max() >= high):
    raise _corrupt(path, f"{split}_labels has values in [{labels.min()}, {labels.max()}]; "
                   f"expected [0, {high - 1}]")
  labels = labels.astype(np.int32)
  return labels if info.multi_label else labels[:, 0]

"""tensorflow-datasets sets as a source: `data.name=tfds:NAME[/CONFIG][:VERSION]`.

Reads a copy that was prepared once in ArrayRecord format, in `data.dir` (a tfds data_dir:
local, or gs:// where tfds can read it), by random access into the same grain pipeline as
every other source. Training never imports TensorFlow: tfds reads ArrayRecord files and
decodes PNG/JPEG images with NumPy and Pillow. Preparing needs TensorFlow (`tfds build`):

  pip install 'medssl_jax[prepare]'
  tfds build NAME[/CONFIG][:VERSION] --file_format=array_record --data_dir=DIR

What is read (keys of `data.tfds`, see config.py):
  image_key   an Image (or uint8 Tensor) feature: uint8 (H, W, C), C from the feature
              (grey -> 1; data.channels is not used). One size for all images, unless
              data.image_size is set: then every image is resized to that square as it is
              read (data.resize: "crop" or "pad"), in the loader's threads.
  label_key   a ClassLabel feature: num_classes and class names come from it.
  group_key   optional: a Text or integer feature naming the patient (study, lesion) of an
              image, for MICLe pairs and patient-wise label fractions; "" = each image alone.
  splits      the tfds splits read as our train, val and test; tfds slices are fine
              ("train[:90%]", "train[90%:]").

`labels` and `groups` (all records of a split) are read on first use, not at open, so
pretraining without a group_key never reads them. Reading them is one pass over every
record of the split that skips decoding images (tfds `SkipDecoding`): it costs the split's
file I/O (all of it: tfds cannot read one feature alone) but no image decoding. Evaluation
needs labels; a group_key needs groups for every record (MICLe pairs, record["group"]); a
source sent to grain worker processes carries them along.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import threading

import numpy as np
from PIL import Image

from medssl_jax import errors
from medssl_jax.data import decode
from medssl_jax.data import in_memory
from medssl_jax.data import splits as splits_lib

PREFIX = "tfds:"
_NAME = re.compile(r"(?P<name>[A-Za-z][A-Za-z0-9_]*)(?:/(?P<config>[A-Za-z0-9_.\-]+))?"
                   r"(?::(?P<version>\d+\.\d+\.\d+))?")
_CHUNK = 1024  # records per read when reading labels and groups
DIR_HINT = ("the tfds data_dir that holds it, prepared in array_record format: "
            "tfds build NAME --file_format=array_record --data_dir=DIR")


@dataclasses.dataclass(frozen=True)
class TfdsName:
  """NAME[/CONFIG][:VERSION] of a tfds data set."""
  name: str
  config: str | None = None
  version: str | None = None

  def __str__(self) -> str:
    return (self.name + (f"/{self.config}" if self.config else "")
            + (f":{self.version}" if self.version else ""))


def parse_name(data_name: str) -> TfdsName:
  """The tfds data set of `data.name` "tfds:NAME[/CONFIG][:VERSION]"."""
  rest = data_name[len(PREFIX):] if data_name.lower().startswith(PREFIX) else data_name
  match = _NAME.fullmatch(rest)
  if not match:
    raise errors.UserError(f"data.name {data_name!r} is not {PREFIX}NAME[/CONFIG][:VERSION] (e.g. "
                           f"{PREFIX}patch_camelyon, {PREFIX}diabetic_retinopathy_detection/250K:3.0.0)")
  return TfdsName(**match.groupdict())


def prepare_command(name: TfdsName | str, data_dir: str) -> str:
  return f"tfds build {name} --file_format=array_record --data_dir={data_dir}"


def _how_to_prepare(name, data_dir: str, manual: bool = False) -> str:
  return (f"prepare it once, in an environment with TensorFlow (training does not need it): "
          f"pip install 'medssl_jax[prepare]' then {prepare_command(name, data_dir)}"
          + (" --manual_dir=FOLDER_WITH_ITS_FILES (it is downloaded by hand: see its tfds page)"
             if manual else ""))


def _local(data_dir: str) -> str:
  """data.dir as tfds gets it: "~" expanded for local folders; URLs (gs://) unchanged."""
  return data_dir if "://" in data_dir else os.path.expanduser(data_dir)


def _tfds():
  # Imported on first use: importing tfds costs ~0.3 s, which other data sets need not pay.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


def _builder(name: TfdsName, data_dir: str):
  """The builder of a prepared copy in data_dir; UserError if there is none.

  This is what `tfds.data_source(name, data_dir=data_dir, download=False)` does before it
  opens a split, with its errors made clear: unprepared sets otherwise fail there with
  "Random access data source for file format FileFormat.TFRECORD is not supported".
  """
  tfds = _tfds()
  try:
    builder = tfds.builder(str(name), data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    known = tfds.list_builders(with_community_datasets=False)
    near = difflib.get_close_matches(name.name, known, n=5)
    raise errors.UserError(
        f"tfds has no data set {name.name!r}: no builder of that name in tensorflow_datasets "
        f"{tfds.__version__} and no prepared copy in {data_dir}"
        + (f"; close names: {', '.join(near)}" if near else "")) from e
  except (AssertionError, ValueError) as e:  # unknown config or version
    found = _prepared_versions(data_dir, name.name)
    raise errors.UserError(f"cannot open tfds data set {name} in {data_dir}: {e}"
                           + (f"; prepared there: {', '.join(found)}" if found else "")) from e
  if not builder.is_prepared():
    found = _prepared_versions(data_dir, name.name)
    raise errors.UserError(
        f"tfds data set {name} is not prepared in {data_dir} (no {builder.data_dir}"
        f"/dataset_info.json)" + (f"; prepared there: {', '.join(found)} (name one as "
                                  f"{PREFIX}NAME[/CONFIG]:VERSION)" if found else "")
        + "; " + _how_to_prepare(name, data_dir, bool(builder.MANUAL_DOWNLOAD_INSTRUCTIONS)))
  file_format = builder.info.file_format
  if file_format is None or file_format.value not in ("array_record", "parquet"):
    raise errors.UserError(
        f"tfds data set {name} in {builder.data_dir} is stored as "
        f"{file_format.value if file_format else 'an unknown format'}, which has no random access. "
        f"Convert it: tfds convert_format --dataset_version_dir={builder.data_dir} "
        f"--out_file_format=array_record, or rebuild it: {prepare_command(name, data_dir)} "
        f"(both need TensorFlow: pip install 'medssl_jax[prepare]')")
  return builder


def _prepared_versions(data_dir: str, name: str) -> list[str]:
  """CONFIG/VERSION (or VERSION) folders of `name` in data_dir that hold a prepared copy."""
  from etils import epath  # pylint: disable=g-import-not-at-top  # a tfds dependency
  root = epath.Path(data_dir) / name
  try:
    infos = sorted(root.glob("*/dataset_info.json")) + sorted(root.glob("*/*/dataset_info.json"))
  except OSError:
    return []
  return [str(path.parent.relative_to(root)) for path in infos][:10]


def _feature(features, key: str, role: str, setting: str, name: TfdsName):
  if key not in features:
    listed = ", ".join(f"{k} ({type(f).__name__})" for k, f in features.items())
    raise errors.UserError(f"tfds data set {name} has no feature {key!r} for the {role} "
                           f"(--config.data.tfds.{setting}); its features: {listed}")
  return features[key]


def _image_shape(feature, key: str, name: TfdsName, image_size: int) -> tuple[int, int, int]:
  """(H, W, C) of every image read; checks the feature is an image of uint8."""
  tfds = _tfds()
  shape = getattr(feature, "shape", None)
  if not isinstance(feature, (tfds.features.Image, tfds.features.Tensor)) or len(shape) not in (2, 3):
    raise errors.UserError(f"feature {key!r} of tfds data set {name} is {feature!r}, not an image "
                           f"(an Image feature, or a Tensor of shape (H, W) or (H, W, C))")
  dtype = np.dtype(feature.np_dtype)
  if dtype != np.uint8:
    raise errors.UserError(f"images ({key!r}) of tfds data set {name} are {dtype}; this source reads "
                           f"uint8 images only")
  channels = shape[2] if len(shape) == 3 else 1
  if channels is None:
    raise errors.UserError(f"images ({key!r}) of tfds data set {name} have no fixed number of "
                           f"channels (shape {shape})")
  if image_size:
    return (int(image_size), int(image_size), int(channels))
  if shape[0] is None or shape[1] is None:
    raise errors.UserError(f"images ({key!r}) of tfds data set {name} vary in size (shape {shape}); "
                           f"set --config.data.image_size to resize them to one square "
                           f"(data.resize: crop or pad)")
  return (int(shape[0]), int(shape[1]), int(channels))


def _leaf_decoders(features, keep: tuple[str, ...]) -> dict:
  """tfds decoders that leave every top-level feature but `keep` undecoded (bytes as stored)."""
  tfds = _tfds()
  nested = (tfds.features.FeaturesDict, tfds.features.Sequence)
  return {key: tfds.decode.SkipDecoding() for key, feature in features.items()
          if key not in keep and not isinstance(feature, nested)}


def _group_name(value) -> str:
  if isinstance(value, (bytes, np.bytes_)):
    return value.decode("utf-8")
  return str(value.item() if isinstance(value, np.ndarray) else value)


class TfdsSource:
  """One split of a prepared tfds data set, read record by record (see the module docstring).

  Attributes:
    name (data.name as given), split (ours), tfds_name, tfds_split, data_dir, image_shape,
    num_classes, class_names, multi_label (False); labels (N,) int32 and groups (N,) int64,
    read on first use; has_groups and group_names (groups[i] indexes group_names) when
    a group feature is named.
  """

  multi_label = False

  def __init__(self, name: str, split: str, tfds_split: str, *, data_dir: str, image_key: str = "image",
               label_key: str = "label", group_key: str = "", image_size: int = 0, resize: str = "crop"):
    self.name, self.split, self.tfds_split = name, split, tfds_split
    self.tfds_name = parse_name(name)
    self.data_dir = _local(str(data_dir))
    self.image_key, self.label_key, self.group_key = image_key, label_key, group_key
    self.has_groups = bool(group_key)
    if resize not in decode.RESIZE_MODES:
      raise errors.UserError(f"data.resize must be one of {decode.RESIZE_MODES}, got {resize!r}")
    self.resize = resize
    builder = _builder(self.tfds_name, self.data_dir)
    self._check_split(builder.info)
    features = builder.info.features
    image = _feature(features, image_key, "images", "image_key", self.tfds_name)
    self.image_shape = _image_shape(image, image_key, self.tfds_name, image_size)
    label = _feature(features, label_key, "labels", "label_key", self.tfds_name)
    if not isinstance(label, _tfds().features.ClassLabel):
      raise errors.UserError(f"labels ({label_key!r}) of tfds data set {self.tfds_name} are {label!r}; "
                             f"this source reads one ClassLabel per image")
    self.num_classes = int(label.num_classes)
    self.class_names = tuple(label.names)
    if group_key:
      group = _feature(features, group_key, "groups", "group_key", self.tfds_name)
      if not (isinstance(group, _tfds().features.Text)
              or np.issubdtype(np.dtype(getattr(group, "np_dtype", object)), np.integer)):
        raise errors.UserError(f"groups ({group_key!r}) of tfds data set {self.tfds_name} are {group!r}; "
                               f"a Text or integer feature is needed")
    self._columns = None  # (labels, groups, group_names), read on first use
    self._open(builder)

  def _check_split(self, info) -> None:
    present = list(info.splits)
    named = [re.sub(r"\[.*\]$", "", part.strip()) for part in self.tfds_split.split("+")]
    missing = [s for s in named if s not in present]
    if missing:
      raise errors.UserError(
          f"tfds data set {self.tfds_name} has no split {missing[0]!r} (for our {self.split!r} split, "
          f"from --config.data.tfds.splits); its splits: {', '.join(present)}. Slices such as "
          f"'train[:90%]' and 'train[90%:]' can share one split")

  def _open(self, builder=None) -> None:
    builder = builder or _builder(self.tfds_name, self.data_dir)
    keep = (self.image_key, self.label_key)
    try:
      self._records = builder.as_data_source(
          split=self.tfds_split, decoders=_leaf_decoders(builder.info.features, keep))
    except ValueError as e:  # a malformed slice
      raise errors.UserError(f"tfds split {self.tfds_split!r} of {self.tfds_name}: {e}") from e
    self._builder = builder
    self._length = len(self._records)
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index) -> dict[str, np.ndarray]:
    index = in_memory.record_index(index, self._length, self)
    example = self._records[index]
    return {"image": self._image(example[self.image_key], index),
            "label": np.int32(example[self.label_key]),
            "group": self.groups[index] if self.has_groups else np.int64(index),
            "index": np.int64(index)}

  def _image(self, image: np.ndarray, index: int) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
      image = image[:, :, None]
    if image.shape[:2] != self.image_shape[:2]:
      mode = {1: "L", 3: "RGB"}.get(image.shape[2])
      if mode is None:
        raise errors.UserError(f"record {index} of {self.name} ({self.split}) is {image.shape}: only grey "
                               f"or RGB images can be resized")
      resize = decode._resize_center_crop if self.resize == "crop" else decode._resize_pad  # pylint: disable=protected-access
      pil = resize(Image.fromarray(image[:, :, 0] if mode == "L" else image, mode), self.image_shape[0])
      image = np.asarray(pil, np.uint8).reshape(self.image_shape)
    if image.shape != self.image_shape or image.dtype != np.uint8:
      raise errors.UserError(f"record {index} of {self.name} ({self.split}) is {image.dtype} {image.shape}; "
                             f"expected uint8 {self.image_shape}")
    return image

  # ----------------------------------------------------------------- labels and groups

  def _read_columns(self):
    """(labels, groups, group_names) of every record: one pass, images left undecoded."""
    if self._columns is not None:
      return self._columns
    with self._lock:  # grain reads from several threads
      if self._columns is None:
        keep = (self.label_key,) + ((self.group_key,) if self.group_key else ())
        records = self._builder.as_data_source(
            split=self.tfds_split, decoders=_leaf_decoders(self._builder.info.features, keep))
        labels = np.empty(self._length, np.int32)
        names = []
        for start in range(0, self._length, _CHUNK):
          chunk = records.__getitems__(list(range(start, min(start + _CHUNK, self._length))))
          for i, example in enumerate(chunk, start):
            labels[i] = example[self.label_key]
            if self.group_key:
              names.append(_group_name(example[self.group_key]))
        if self.group_key:
          group_names, groups = np.unique(np.asarray(names, dtype=str), return_inverse=True)
          groups, group_names = groups.reshape(-1).astype(np.int64), tuple(group_names.tolist())
        else:
          groups, group_names = np.arange(self._length, dtype=np.int64), None
        for array in (labels, groups):
          array.flags.writeable = False  # records are views: guard against edits
        self._columns = (labels, groups, group_names)
    return self._columns

  @property
  def labels(self) -> np.ndarray:
    return self._read_columns()[0]

  @property
  def groups(self) -> np.ndarray:
    if not self.has_groups:
      return np.arange(self._length, dtype=np.int64)
    return self._read_columns()[1]

  @property
  def group_names(self) -> tuple[str, ...] | None:
    return self._read_columns()[2]

  # Grain worker processes receive the source pickled: the tfds reader and lock stay here,
  # each process reopens the files. Labels and groups are read first when the records need
  # them (a group feature), so that no worker reads every record again.
  def __getstate__(self):
    if self.has_groups:
      self._read_columns()
    state = self.__dict__.copy()
    for key in ("_records", "_builder", "_lock"):
      del state[key]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._open()

  def __repr__(self) -> str:
    return (f"TfdsSource(name={self.name!r}, split={self.split!r} (tfds {self.tfds_split!r}), "
            f"size={self._length}, data_dir={self.data_dir!r})")


def open_tfds(data, split: str) -> TfdsSource:
  """The catalog's opener of `data.name=tfds:...` (see the module docstring)."""
  if data.split.by != "file":
    raise errors.UserError("tfds data sets keep the splits they were prepared with; choose which "
                           "are train, val and test with --config.data.tfds.splits (slices like "
                           "'train[:90%]' work) and leave data.split.by='file'")
  t = data.tfds
  if len(t.splits) != len(splits_lib.SPLITS):
    raise errors.UserError(f"data.tfds.splits must name the tfds splits of our "
                           f"{', '.join(splits_lib.SPLITS)}, got {tuple(t.splits)}")
  mapping = dict(zip(splits_lib.SPLITS, t.splits))
  if split not in mapping:
    raise errors.UserError(f"unknown split {split!r}; known: {', '.join(splits_lib.SPLITS)}")
  return TfdsSource(data.name, split, mapping[split], data_dir=data.dir, image_key=t.image_key,
                    label_key=t.label_key, group_key=t.group_key, image_size=data.image_size,
                    resize=data.resize)

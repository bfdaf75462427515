"""A tiny tensorflow-datasets data set for tests, written without TensorFlow.

`MedsslTinyBreast` (tfds name "medssl_tiny_breast") takes the first 48/16/16 images of
BreastMNIST's train/val/test splits (28 x 28 grey) with their 2 classes, and gives every 3
consecutive images of a split one made-up "patient" id, so MICLe has groups to pair. tfds
shuffles records as it writes them, so each keeps its BreastMNIST row in "npz_index".

It is written as ArrayRecord (random access: what `tfds:` sources read) from PNG bytes: tfds
encodes numpy images with TensorFlow, but stores PNG bytes (or PIL images) as they are.
`pkg_dir_path` is set so that tfds does not look for the builder's files as package resources
(a builder in a package module would need `importlib_resources` for that).

  build(data_dir, medmnist_dir)   # prepares it under data_dir/medssl_tiny_breast/1.0.0
"""
from __future__ import annotations

import io
import pathlib

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

NAME = "medssl_tiny_breast"
SIZES = {"train": 48, "validation": 16, "test": 16}  # tfds split name -> images
NPZ_SPLIT = {"train": "train", "validation": "val", "test": "test"}
CLASS_NAMES = ("malignant", "normal, benign")
PER_PATIENT = 3


def patient(split: str, i: int) -> str:
  return f"{split}-patient-{i // PER_PATIENT:03d}"


def expected(medmnist_dir, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """What the builder writes for one tfds split: images (N, 28, 28, 1), labels, patients."""
  with np.load(pathlib.Path(medmnist_dir) / "breastmnist.npz") as npz:
    n = SIZES[split]
    images = npz[f"{NPZ_SPLIT[split]}_images"][:n, :, :, None]
    labels = npz[f"{NPZ_SPLIT[split]}_labels"][:n, 0].astype(np.int64)
  return images, labels, [patient(split, i) for i in range(n)]


def _png(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image[:, :, 0]).save(buffer, format="PNG")
  return buffer.getvalue()


class MedsslTinyBreast(tfds.core.GeneratorBasedBuilder):
  """80 BreastMNIST images with made-up patients (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Test fixture."}
  medmnist_dir: str = ""  # set by build()
  # Where tfds looks for README/CITATIONS of the builder; set, it needs no package lookup.
  pkg_dir_path = epath.Path(__file__).parent

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(28, 28, 1), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
            "patient": tfds.features.Text(),
            "npz_index": tfds.features.Scalar(np.int64),  # its row in breastmnist.npz
        }),
        supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in SIZES}

  def _generate_examples(self, split):
    images, labels, patients = expected(self.medmnist_dir, split)
    for i, (image, label, name) in enumerate(zip(images, labels, patients)):
      yield i, {"image": _png(image), "label": int(label), "patient": name, "npz_index": i}


def build(data_dir, medmnist_dir) -> str:
  """Prepares the data set in array_record format under data_dir; returns its tfds name."""
  MedsslTinyBreast.medmnist_dir = str(medmnist_dir)
  tfds.disable_progress_bar()
  builder = MedsslTinyBreast(data_dir=str(data_dir), file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return NAME

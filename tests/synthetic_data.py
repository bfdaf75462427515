"""A synthetic in-memory data set for unit tests whose subject is not the data: losses,
models, augmentation, sharding, checkpointing and the loop run on it without ../shared/data.

Images are seeded noise plus a class-dependent bright square, so a probe can tell the two
classes apart; every split is a different draw from its own seed.
"""
from __future__ import annotations

import numpy as np

from medssl_jax.data import catalog
from medssl_jax.data import in_memory
from medssl_jax.data import splits

NAME = "synthetic"
SIZES = {"train": 96, "val": 32, "test": 32}


class SyntheticSource(in_memory.InMemoryRecords):
  """One split of the synthetic set: (N, size, size, channels) uint8, 2 classes, groups of 2."""

  def __init__(self, split: str, *, size: int = 28, channels: int = 1, n: int | None = None):
    if split not in splits.SPLITS:
      raise ValueError(f"unknown split {split!r}")
    self.name, self.split = NAME, split
    self.num_classes, self.multi_label = 2, False
    self.class_names = ("dark", "bright")
    n = SIZES[split] if n is None else n
    rng = np.random.default_rng(splits.SPLITS.index(split))
    self.labels = (np.arange(n) % 2).astype(np.int32)
    images = rng.integers(0, 128, size=(n, size, size, channels))
    images[self.labels == 1, size // 4:size // 2, size // 4:size // 2] += 120
    self.images = images.astype(np.uint8)
    self.groups = np.arange(n, dtype=np.int64) // 2  # two images per "patient" (MICLe pairs)
    self.image_shape = tuple(self.images.shape[1:])

  def __repr__(self) -> str:
    return f"SyntheticSource(split={self.split!r}, size={len(self)})"


def open_synthetic(data, split: str) -> SyntheticSource:
  return SyntheticSource(split, size=data.image_size or 28, channels=data.channels)


def register() -> None:
  """Makes data.name="synthetic" available through the catalog (idempotent)."""
  catalog.register(NAME, open_synthetic)

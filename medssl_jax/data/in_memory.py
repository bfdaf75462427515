"""Records of a source whose arrays are in memory: the grain random-access protocol."""
from __future__ import annotations

import operator

import numpy as np


def record_index(index, n: int, source) -> int:
  """index as a position in [0, n): negative indices count from the end, as for lists."""
  index = operator.index(index)
  if index < 0:
    index += n
  if not 0 <= index < n:
    raise IndexError(f"index {index} out of range for {source!r}")
  return index


class InMemoryRecords:
  """`__len__` and `__getitem__` over `images`, `labels` and `groups` arrays of equal length."""

  images: np.ndarray
  labels: np.ndarray
  groups: np.ndarray

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, index) -> dict[str, np.ndarray]:
    index = record_index(index, len(self.images), self)
    return {"image": self.images[index], "label": self.labels[index],
            "group": self.groups[index], "index": np.int64(index)}

"""Which source images feed the two views of a positive pair.

`SameImage` (SimCLR, SimSiam, MoCo, BYOL) emits one image; the training step augments it
twice, so the host never copies it twice to the device. Pair samplers that draw two
different images (`PatientPairs`, MICLe) emit `view1` and `view2`.

A pairing is called as `pairing(index, rng)`: `index` is the anchor image, `rng` a numpy
generator seeded per stream position by the pipeline, for any random choice of partner.
"""
from __future__ import annotations

import numpy as np

from medssl_jax import errors


class SameImage:
  """Both views come from the same image: the record carries it once, as `view1`."""

  def __init__(self, source):
    self.source = source

  def __call__(self, index: int, rng: np.random.Generator) -> dict:
    del rng
    record = self.source[index]
    return {"view1": record["image"], "index": np.int64(index)}


class PatientPairs:
  """MICLe: the second view is another image of the anchor's group (patient, study, lesion).

  The partner is drawn uniformly from the other members of the group; a group of one image
  pairs the image with itself, as SimCLR would.
  """

  def __init__(self, source):
    self.source = source
    groups = np.asarray(source.groups)
    # Members of each group sit contiguously in `_members`; each image keeps where its
    # group starts, its size and its own place in it, so a draw is O(1) with no search.
    self._members = np.argsort(groups, kind="stable")
    _, first, group_of, sizes = np.unique(groups[self._members], return_index=True,
                                          return_inverse=True, return_counts=True)
    position = np.empty_like(self._members)
    position[self._members] = np.arange(len(groups))
    group_of = group_of.reshape(-1)[position]  # unique() numbered the sorted order
    self._start = first[group_of]
    self._size = sizes[group_of]
    self._rank = position - self._start

  def partner(self, index: int, rng: np.random.Generator) -> int:
    size = int(self._size[index])
    if size == 1:
      return index
    draw = int(rng.integers(size - 1))
    draw += draw >= self._rank[index]  # skip the anchor itself
    return int(self._members[self._start[index] + draw])

  def __call__(self, index: int, rng: np.random.Generator) -> dict:
    index = int(index)
    partner = self.partner(index, rng)
    return {"view1": self.source[index]["image"], "view2": self.source[partner]["image"],
            "index": np.int64(index), "partner": np.int64(partner)}


PAIRINGS = {"same_image": SameImage, "patient": PatientPairs}


def create_pairing(name: str, source):
  if name not in PAIRINGS:
    raise errors.UserError(f"unknown data.pairing {name!r}; known: {sorted(PAIRINGS)}")
  return PAIRINGS[name](source)

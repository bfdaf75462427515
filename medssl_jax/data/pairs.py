"""Which source images feed the two views of a positive pair.

`SameImage` (SimCLR, SimSiam, MoCo, BYOL) emits one image; the training step augments it
twice, so the host never copies it twice to the device. Pair samplers that draw two
different images (MICLe) emit `view1` and `view2`.

A pairing is called as `pairing(index, rng)`: `index` is the anchor image, `rng` a numpy
generator seeded per stream position by the pipeline, for any random choice of partner.
"""
from __future__ import annotations

import numpy as np


class SameImage:
  """Both views come from the same image: the record carries it once, as `view1`."""

  def __init__(self, source):
    self.source = source

  def __call__(self, index: int, rng: np.random.Generator) -> dict:
    del rng
    record = self.source[index]
    return {"view1": record["image"], "index": np.int64(index)}


PAIRINGS = {"same_image": SameImage}


def create_pairing(name: str, source):
  if name not in PAIRINGS:
    raise ValueError(f"unknown data.pairing {name!r}; known: {sorted(PAIRINGS)}")
  return PAIRINGS[name](source)

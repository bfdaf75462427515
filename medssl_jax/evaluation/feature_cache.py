"""Frozen features on disk, one file per (checkpoint, representation, data split).

Feature extraction is the slow part of an evaluation; the probes, kNN, label fractions and
transfer all reuse it. A cached file is named by a hash of everything that determines its
contents, so a new checkpoint, data set or image size can never be served stale features.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Callable

import jax
import numpy as np
from absl import logging

from medssl_jax import paths


def cache_key(**parts) -> str:
  """A short stable hash of JSON-serialisable parts (paths, step, data config, ...)."""
  text = json.dumps(parts, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


class FeatureCache:
  """`get(name, key, compute)`: the array in DIR/name-key.npy, computed and stored if absent.

  A `directory` of None disables the cache. Only process 0 writes (all processes compute,
  since extraction is a collective over the mesh); the write is atomic, so a killed run
  leaves no half-written file behind.
  """

  def __init__(self, directory: str | os.PathLike[str] | None):
    self.directory = paths.path(directory) if directory else None
    self.hits = 0    # read from disk
    self.misses = 0  # extracted
    self._memory = {}  # evaluations of one run share arrays without rereading them

  def get(self, name: str, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    if key not in self._memory:
      self._memory[key] = self._load_or_compute(name, key, compute)
    return self._memory[key]

  def _load_or_compute(self, name: str, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    if self.directory is None:
      self.misses += 1
      return np.asarray(compute())
    path = self.directory / f"{name}-{key}.npy"
    if path.is_file():
      self.hits += 1
      return paths.load_npy(path)
    self.misses += 1
    array = np.asarray(compute())
    if jax.process_index() == 0:
      paths.save_npy(path, array)
      logging.info("cached %s features %s at %s", name, array.shape, path)
    return array

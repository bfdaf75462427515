"""Principal components of the training split, for raw-pixel baselines too wide to probe fast.

Raw pixels are thousands of strongly correlated features (2352 for a 28x28 RGB image): a
logistic probe on them is badly conditioned, and L-BFGS runs to max_iter at the larger Cs
(over 10 minutes for BloodMNIST on 2 cores). Their top principal components keep nearly all
the variance; standardised by the probe they are also uncorrelated, so the same probe
converges in tens of iterations (BENCHMARKS.md, issue 20).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

_ROWS = 8192  # rows per block of the covariance pass: no float64 copy of the whole split


@dataclasses.dataclass
class Projection:
  """x -> (x - mean) @ components: the top principal components of a training split.

  Attributes:
    mean: (D,) training mean. components: (D, k) unit eigenvectors, largest variance first.
    variance_kept: the share of the training variance the k components hold.
  """
  mean: np.ndarray
  components: np.ndarray
  variance_kept: float

  def __call__(self, x) -> np.ndarray:
    return (np.asarray(x, np.float32) - self.mean) @ self.components


def fit(train_x: np.ndarray, num_components: int) -> Projection:
  """The top num_components principal components of train_x (N, D)."""
  n, d = train_x.shape
  mean = train_x.mean(axis=0, dtype=np.float64).astype(np.float32)
  scatter = np.zeros((d, d))
  for start in range(0, n, _ROWS):  # float32 products, summed in float64
    block = np.asarray(train_x[start:start + _ROWS], np.float32) - mean
    scatter += block.T @ block
  values, vectors = np.linalg.eigh(scatter)  # ascending
  # n centred rows span at most n - 1 directions: the eigenvectors beyond are arbitrary
  # directions of zero training variance, which a standardising probe would scale by its
  # std floor (1e-6) on new rows (a 1% label draw of 47 images scored AUROC 0.39 that way).
  k = min(num_components, d, max(n - 1, 1))
  kept = float(values[-k:].sum() / max(values.sum(), 1e-300))
  return Projection(mean, np.ascontiguousarray(vectors[:, ::-1][:, :k], np.float32), kept)


class ProjectedProbe:
  """A probe fitted on projected features, applied to unprojected ones (predict_proba); every
  other attribute (C, val_score, multi_label, ...) is the inner probe's."""

  def __init__(self, probe: Any, projection: Projection):
    self.probe, self.projection = probe, projection

  def predict_proba(self, features) -> np.ndarray:
    return self.probe.predict_proba(self.projection(features))

  def __getattr__(self, name):
    return getattr(self.probe, name)

"""2-D maps of a data set: t-SimCNE's learned 2-D output, or t-SNE of frozen features.

Scored by how well classes separate in the plane: kNN accuracy (fit on the train split's
points, scored on the test split's) and the silhouette score of the test points, each with a
bootstrap interval over the scored points; the same two on the validation split.
"""
from __future__ import annotations

import numpy as np
from sklearn import manifold
from sklearn import metrics as sk_metrics
from sklearn import neighbors

from medssl_jax.evaluation import metrics


def knn_correct(train_points, train_labels, test_points, test_labels, k: int = 15) -> np.ndarray:
  """(N_test,) bool: whether the k nearest train points' majority class is the test point's."""
  classifier = neighbors.KNeighborsClassifier(n_neighbors=k).fit(train_points, train_labels)
  return classifier.predict(test_points) == np.asarray(test_labels)


_SILHOUETTE_POINTS = 5000  # silhouette is O(n^2): larger splits are subsampled


def map_scores(points: dict, labels: dict, k: int, n_boot: int, seed: int) -> dict:
  """Scores of a 2-D map given role -> points and role -> labels (train, val, test): kNN
  accuracy of train -> test and the test silhouette, each with its 95% bootstrap interval,
  and the same two on the validation split (to choose settings without the test split)."""
  scores = {}
  for prefix, role in (("", "test"), ("val_", "val")):
    if role not in points:
      continue
    correct = knn_correct(points["train"], labels["train"], points[role], labels[role], k)
    scores.update(_mean_with_interval(f"{prefix}knn_accuracy", correct, labels[role], n_boot, seed))
    keep = subsample(len(points[role]), _SILHOUETTE_POINTS, seed)
    values = sk_metrics.silhouette_samples(points[role][keep], labels[role][keep])
    scores.update(_mean_with_interval(f"{prefix}silhouette", values, labels[role][keep], n_boot, seed))
  return scores


def _mean_with_interval(name: str, values, labels, n_boot: int, seed: int) -> dict:
  """{name: mean of the per-point values, name_ci: its 95% bootstrap interval over points}
  (None with n_boot == 0). The map is held fixed, as the probes' intervals hold the trained
  model fixed; resamples keep every class, as the probes' do."""
  values = np.asarray(values, dtype=np.float64)
  if n_boot == 0:
    return {name: float(values.mean()), f"{name}_ci": None}
  mean, low, high = metrics.bootstrap_ci(lambda _, v: float(v.mean()), np.asarray(labels), values,
                                         n_boot=n_boot, seed=seed)
  return {name: mean, f"{name}_ci": [low, high]}


def tsne(features: np.ndarray, seed: int = 0) -> np.ndarray:
  perplexity = min(30.0, (len(features) - 1) / 3)
  return manifold.TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
      features.astype(np.float32))


def subsample(n: int, max_points: int, seed: int) -> np.ndarray:
  """Sorted indices of at most max_points of range(n), drawn with the seed."""
  if n <= max_points:
    return np.arange(n)
  return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))

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


def knn_correct(train_points, train_labels, test_points, test_labels, k: int = 15) -> np.ndarray:
  """(N_test,) bool: whether the k nearest train points' majority class is the test point's."""
  classifier = neighbors.KNeighborsClassifier(n_neighbors=k).fit(train_points, train_labels)
  return classifier.predict(test_points) == np.asarray(test_labels)


def knn_accuracy(train_points, train_labels, test_points, test_labels, k: int = 15) -> float:
  return float(knn_correct(train_points, train_labels, test_points, test_labels, k).mean())


def silhouette_values(points, labels, max_points: int = 5000, seed: int = 0) -> np.ndarray:
  """Per-point silhouette values (Euclidean) of a seeded subsample of at most max_points, so
  the O(n^2) cost stays bounded; their mean is the silhouette score."""
  keep = subsample(len(points), max_points, seed)
  return sk_metrics.silhouette_samples(np.asarray(points)[keep], np.asarray(labels)[keep])


def silhouette(points, labels, max_points: int = 5000, seed: int = 0) -> float:
  return float(silhouette_values(points, labels, max_points, seed).mean())


def mean_with_interval(values, n_boot: int, seed: int, alpha: float = 0.05) -> tuple[float, list | None]:
  """(mean, [low, high]): the percentile bootstrap interval of the mean over points, None
  with n_boot == 0. The map is held fixed: the interval is the uncertainty from which
  points were scored, like the probes' intervals hold the trained model fixed."""
  values = np.asarray(values, dtype=np.float64)
  if n_boot == 0:
    return float(values.mean()), None
  draws = np.random.default_rng(seed).integers(0, len(values), size=(n_boot, len(values)))
  low, high = np.quantile(values[draws].mean(axis=1), [alpha / 2.0, 1.0 - alpha / 2.0])
  return float(values.mean()), [float(low), float(high)]


def map_scores(points: dict, labels: dict, k: int, n_boot: int, seed: int) -> dict:
  """Scores of a 2-D map given role -> points and role -> labels (train, val, test): kNN
  accuracy of train -> test and the test silhouette, each with its 95% bootstrap interval,
  and the same two on the validation split (to choose settings without the test split)."""
  scores = {}
  for prefix, role in (("", "test"), ("val_", "val")):
    if role not in points:
      continue
    correct = knn_correct(points["train"], labels["train"], points[role], labels[role], k)
    scores[f"{prefix}knn_accuracy"], scores[f"{prefix}knn_accuracy_ci"] = mean_with_interval(
        correct, n_boot, seed)
    scores[f"{prefix}silhouette"], scores[f"{prefix}silhouette_ci"] = mean_with_interval(
        silhouette_values(points[role], labels[role], seed=seed), n_boot, seed)
  return scores


def tsne(features: np.ndarray, seed: int = 0) -> np.ndarray:
  perplexity = min(30.0, (len(features) - 1) / 3)
  return manifold.TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
      features.astype(np.float32))


def subsample(n: int, max_points: int, seed: int) -> np.ndarray:
  """Sorted indices of at most max_points of range(n), drawn with the seed."""
  if n <= max_points:
    return np.arange(n)
  return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))

"""2-D maps of a data set: t-SimCNE's learned 2-D output, or t-SNE of frozen features.

Scored by how well classes separate in the plane: kNN accuracy (fit on the train split's
points, scored on the test split's) and the silhouette score of the test points.
"""
from __future__ import annotations

import numpy as np
from sklearn import manifold
from sklearn import metrics as sk_metrics
from sklearn import neighbors


def knn_accuracy(train_points, train_labels, test_points, test_labels, k: int = 15) -> float:
  classifier = neighbors.KNeighborsClassifier(n_neighbors=k).fit(train_points, train_labels)
  return float(classifier.score(test_points, test_labels))


def silhouette(points, labels, max_points: int = 5000, seed: int = 0) -> float:
  """Silhouette score (Euclidean), on a seeded subsample so the O(n^2) cost stays bounded."""
  sample = min(len(points), max_points)
  return float(sk_metrics.silhouette_score(points, labels, sample_size=sample, random_state=seed))


def tsne(features: np.ndarray, seed: int = 0) -> np.ndarray:
  perplexity = min(30.0, (len(features) - 1) / 3)
  return manifold.TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
      features.astype(np.float32))


def subsample(n: int, max_points: int, seed: int) -> np.ndarray:
  """Sorted indices of at most max_points of range(n), drawn with the seed."""
  if n <= max_points:
    return np.arange(n)
  return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))

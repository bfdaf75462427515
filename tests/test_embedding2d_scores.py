"""A 2-D map's scores (kNN accuracy, silhouette, their intervals) against NumPy references."""
import numpy as np
import pytest

from medssl_jax.evaluation import embedding2d


def _three_blobs(n_per_class, spread, seed):
  rng = np.random.default_rng(seed)
  centres = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
  labels = np.repeat(np.arange(3), n_per_class)
  return centres[labels] + spread * rng.normal(size=(len(labels), 2)), labels


def _knn_reference(train, train_labels, test, test_labels, k):
  distances = ((test[:, None, :] - train[None, :, :]) ** 2).sum(-1)
  nearest = np.argsort(distances, axis=1, kind="stable")[:, :k]
  votes = np.stack([np.bincount(row, minlength=3) for row in train_labels[nearest]])
  return votes.argmax(1) == test_labels


def _silhouette_reference(points, labels):
  distances = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))
  values = []
  for i, label in enumerate(labels):
    same = (labels == label) & (np.arange(len(labels)) != i)
    a = distances[i, same].mean()
    b = min(distances[i, labels == other].mean() for other in set(labels.tolist()) - {label})
    values.append((b - a) / max(a, b))
  return np.array(values)


def test_map_scores_match_numpy_and_separate_good_from_bad_maps():
  points, labels = {}, {}
  for seed, role in enumerate(("train", "val", "test")):
    points[role], labels[role] = _three_blobs(30, 1.5, seed)
  good = embedding2d.map_scores(points, labels, k=5, n_boot=200, seed=0)
  correct = _knn_reference(points["train"], labels["train"], points["test"], labels["test"], 5)
  np.testing.assert_array_equal(
      embedding2d.knn_correct(points["train"], labels["train"], points["test"], labels["test"], k=5), correct)
  assert 0.5 < correct.mean() < 1.0  # overlapping blobs: some errors, far above chance
  assert good["knn_accuracy"] == pytest.approx(correct.mean())
  assert good["silhouette"] == pytest.approx(_silhouette_reference(points["test"], labels["test"]).mean())
  assert good["val_silhouette"] == pytest.approx(_silhouette_reference(points["val"], labels["val"]).mean())
  shuffled = {role: labels[role][np.random.default_rng(9).permutation(len(labels[role]))]
              for role in labels}
  bad = embedding2d.map_scores(points, shuffled, k=5, n_boot=200, seed=0)
  for key in ("knn_accuracy", "silhouette", "val_knn_accuracy", "val_silhouette"):
    low, high = good[f"{key}_ci"]
    assert low < good[key] < high, key
    assert low > bad[f"{key}_ci"][1], key  # intervals apart


def test_interval_is_the_bootstrap_of_the_mean_and_absent_without_resamples():
  points = {role: np.random.default_rng(seed).normal(size=(400, 2))
            for seed, role in enumerate(("train", "test"))}
  labels = {role: np.arange(400) % 2 for role in points}
  scores = embedding2d.map_scores(points, labels, k=15, n_boot=2000, seed=0)
  correct = _knn_reference(points["train"], labels["train"], points["test"], labels["test"], 15)
  standard_error = correct.std() / np.sqrt(len(correct))
  # A normal-theory 95% interval is mean +- 1.96 SE; the percentile bootstrap lands close.
  low, high = scores["knn_accuracy_ci"]
  assert low == pytest.approx(correct.mean() - 1.96 * standard_error, abs=0.3 * standard_error)
  assert high == pytest.approx(correct.mean() + 1.96 * standard_error, abs=0.3 * standard_error)
  unresampled = embedding2d.map_scores(points, labels, k=15, n_boot=0, seed=0)
  assert unresampled["knn_accuracy"] == scores["knn_accuracy"] and unresampled["knn_accuracy_ci"] is None


def test_negative_intervals_print_unambiguously():
  from medssl_jax.evaluation import report  # pylint: disable=g-import-not-at-top
  assert report.with_ci(-0.0751, [-0.084, -0.065]) == "-0.0751 (-0.084 to -0.065)"
  assert report.with_ci(0.0147, [0.0024, 0.0259]) == "0.0147 (0.002-0.026)"
  assert report.with_ci(0.5, None) == "0.5000"

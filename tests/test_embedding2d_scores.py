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


def test_knn_and_silhouette_match_numpy():
  train, train_labels = _three_blobs(30, 1.5, seed=0)
  test, test_labels = _three_blobs(20, 1.5, seed=1)
  correct = embedding2d.knn_correct(train, train_labels, test, test_labels, k=5)
  np.testing.assert_array_equal(correct, _knn_reference(train, train_labels, test, test_labels, 5))
  assert 0.5 < correct.mean() < 1.0  # overlapping blobs: some errors, far above chance
  np.testing.assert_allclose(embedding2d.silhouette_values(test, test_labels),
                             _silhouette_reference(test, test_labels), rtol=1e-10)


def test_silhouette_subsample_is_seeded_and_bounded():
  points, labels = _three_blobs(40, 1.0, seed=2)
  values = embedding2d.silhouette_values(points, labels, max_points=50, seed=3)
  assert values.shape == (50,)
  np.testing.assert_array_equal(values, embedding2d.silhouette_values(points, labels, max_points=50, seed=3))
  keep = embedding2d.subsample(len(points), 50, 3)
  np.testing.assert_allclose(values, _silhouette_reference(points[keep], labels[keep]), rtol=1e-10)


def test_mean_interval_is_the_bootstrap_of_the_mean():
  values = np.random.default_rng(0).normal(0.3, 1.0, size=400)
  mean, (low, high) = embedding2d.mean_with_interval(values, n_boot=2000, seed=0)
  assert mean == pytest.approx(values.mean())
  standard_error = values.std() / np.sqrt(len(values))
  # A normal-theory 95% interval is mean +- 1.96 SE; the percentile bootstrap lands close.
  assert low == pytest.approx(mean - 1.96 * standard_error, abs=0.3 * standard_error)
  assert high == pytest.approx(mean + 1.96 * standard_error, abs=0.3 * standard_error)
  assert embedding2d.mean_with_interval(values, n_boot=0, seed=0) == (pytest.approx(values.mean()), None)


def test_map_scores_score_test_and_validation_and_separate_good_from_bad_maps():
  points, labels = {}, {}
  for seed, role in enumerate(("train", "val", "test")):
    points[role], labels[role] = _three_blobs(30, 0.5, seed)
  good = embedding2d.map_scores(points, labels, k=5, n_boot=200, seed=0)
  shuffled = {role: labels[role][np.random.default_rng(9).permutation(len(labels[role]))]
              for role in labels}
  bad = embedding2d.map_scores(points, shuffled, k=5, n_boot=200, seed=0)
  for key in ("knn_accuracy", "silhouette", "val_knn_accuracy", "val_silhouette"):
    assert good[f"{key}_ci"][0] > bad[f"{key}_ci"][1], key  # intervals apart
  assert good["knn_accuracy"] == pytest.approx(
      _knn_reference(points["train"], labels["train"], points["test"], labels["test"], 5).mean())
  assert good["val_silhouette"] == pytest.approx(_silhouette_reference(points["val"], labels["val"]).mean())


def test_negative_intervals_print_unambiguously():
  from medssl_jax.evaluation import report  # pylint: disable=g-import-not-at-top
  assert report.with_ci(-0.0751, [-0.084, -0.065]) == "-0.0751 (-0.084 to -0.065)"
  assert report.with_ci(0.0147, [0.0024, 0.0259]) == "0.0147 (0.002-0.026)"
  assert report.with_ci(0.5, None) == "0.5000"

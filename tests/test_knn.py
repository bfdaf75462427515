"""Tests for medssl_jax.evaluation.knn against a full-matrix NumPy reference and sklearn."""
import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from medssl_jax.evaluation import knn

# Blocks smaller than the sets: 300 = 4 * 64 + 44 bank rows, 150 = 4 * 32 + 22 queries,
# so several blocks run and both last blocks are padded.
BLOCKS = {"query_block": 32, "bank_block": 64}


def _features(seed, n, dim=16):
  return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _reference(train_x, train_y, test_x, k, temperature, num_classes=None, multi_label=False):
  """Independent reference: the full (M, N) cosine matrix in float64, a stable argsort,
  weights exp(sim / T) without any shift, votes summed per class and normalised."""
  bank = train_x / np.linalg.norm(train_x, axis=1, keepdims=True).astype(np.float64)
  queries = test_x / np.linalg.norm(test_x, axis=1, keepdims=True).astype(np.float64)
  sims = queries @ bank.T
  order = np.argsort(-sims, axis=1, kind="stable")
  # The data must have no near-ties at the k-th neighbour, or float32 may pick another.
  ranked = np.take_along_axis(sims, order, axis=1)
  if k < sims.shape[1]:
    assert np.min(ranked[:, k - 1] - ranked[:, k]) > 1e-5
  top, nearest = ranked[:, :k], order[:, :k]
  weights = np.exp(top / temperature)
  if multi_label:
    votes = np.einsum("mk,mkl->ml", weights, train_y[nearest].astype(np.float64))
  else:
    num_classes = num_classes or int(train_y.max()) + 1
    votes = np.stack([(weights * (train_y[nearest] == c)).sum(axis=1)
                      for c in range(num_classes)], axis=1)
  return votes / weights.sum(axis=1, keepdims=True), nearest


@pytest.mark.parametrize("k", [20, 70, 300])  # 70 > bank_block; 300 = the whole bank.
def test_single_label_scores_match_reference(k):
  train_x, test_x = _features(0, 300), _features(1, 150)
  train_y = np.random.default_rng(2).integers(0, 4, size=300)
  got = knn.knn_scores(train_x, train_y, test_x, k=k, temperature=0.07, **BLOCKS)
  want, nearest = _reference(train_x, train_y, test_x, k, 0.07)
  assert got.shape == (150, 4) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
  sims, idx = knn.knn_neighbors(train_x, test_x, k=k, **BLOCKS)
  assert sims.shape == idx.shape == (150, k)
  if k < 300:  # With k = N only the order within ties could differ; the set cannot.
    np.testing.assert_array_equal(idx, nearest)
  assert np.all(np.diff(sims, axis=1) <= 0)  # Most similar first.


def test_multi_label_scores_match_reference():
  train_x, test_x = _features(20, 300), _features(21, 150)
  train_y = (np.random.default_rng(5).random((300, 5)) < 0.3).astype(np.int64)
  got = knn.knn_scores(train_x, train_y, test_x, k=20, temperature=0.1, multi_label=True,
                       **BLOCKS)
  want, _ = _reference(train_x, train_y, test_x, 20, 0.1, multi_label=True)
  assert got.shape == (150, 5)
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert got.min() >= 0.0 and got.max() <= 1.0


def _masked_reference(train_x, train_y, test_x, k, temperature):
  """Per label, the exp(sim / T)-weighted mean of the labels of those of the k nearest
  neighbours that know it (label != -1), 0.5 where none does; in float64, the weights
  shifted by each query's best similarity (the same for every label) so that exp stays
  finite at small T. Also returns where no neighbour knows the label."""
  # _reference for the neighbours only (and its no-near-tie check); T does not change them.
  _, nearest = _reference(train_x, np.maximum(train_y, 0), test_x, k, 1.0, multi_label=True)
  bank = train_x / np.linalg.norm(train_x, axis=1, keepdims=True).astype(np.float64)
  queries = test_x / np.linalg.norm(test_x, axis=1, keepdims=True).astype(np.float64)
  top = np.take_along_axis(queries @ bank.T, nearest, axis=1)
  weights = np.exp((top - top.max(axis=1, keepdims=True)) / temperature)
  labels = train_y[nearest]  # (M, k, L)
  votes = np.einsum("mk,mkl->ml", weights, np.where(labels == 1, 1.0, 0.0))
  mass = np.einsum("mk,mkl->ml", weights, np.where(labels >= 0, 1.0, 0.0))
  none_known = np.all(labels < 0, axis=1)
  return np.where(none_known, 0.5, votes / np.where(none_known, 1.0, mass)), none_known


def test_multi_label_unknown_neighbours_do_not_vote():
  # The shapes of test_multi_label_scores_match_reference: no new compilation.
  train_x, test_x = _features(20, 300), _features(21, 150)
  rng = np.random.default_rng(5)
  train_y = (rng.random((300, 5)) < 0.3).astype(np.int64)
  unknown = rng.random((300, 5)) < np.array([0.0, 0.3, 0.6, 0.9, 1.0])
  unknown[:3, 4] = False  # Label 4 known on three rows: most queries have none of them.
  train_y[unknown] = -1
  for temperature, atol in ((0.1, 1e-5), (1e-3, 1e-3)):
    got = knn.knn_scores(train_x, train_y, test_x, k=20, temperature=temperature,
                         multi_label=True, **BLOCKS)
    want, none_known = _masked_reference(train_x, train_y, test_x, 20, temperature)
    assert 0 < none_known[:, 4].sum() < 150 and not none_known[:, :3].any()
    np.testing.assert_allclose(got, want, atol=atol)
    assert np.all(got[none_known] == 0.5)
  # T = 1e-3 is a real check: for many queries the nearest neighbour does not know label
  # 2, and shifting by its similarity would underflow the weights of those that do.
  _, nearest = knn.knn_neighbors(train_x, test_x, k=20, **BLOCKS)
  assert np.mean(train_y[nearest[:, 0], 2] == -1) > 0.3


def test_block_sizes_do_not_change_scores_and_one_compilation_serves_all_blocks():
  train_x, test_x = _features(6, 300, dim=13), _features(7, 150, dim=13)
  train_y = np.random.default_rng(8).integers(0, 3, size=300)
  before = knn._merge_block._cache_size()  # pylint: disable=protected-access
  blocked = knn.knn_scores(train_x, train_y, test_x, k=20, **BLOCKS)
  # Five bank blocks times five query blocks, the last of each padded: one shape.
  assert knn._merge_block._cache_size() == before + 1  # pylint: disable=protected-access
  whole = knn.knn_scores(train_x, train_y, test_x, k=20, query_block=10**6, bank_block=10**6)
  np.testing.assert_allclose(blocked, whole, atol=1e-6)


def test_large_temperature_matches_sklearn_majority_vote():
  train_x, test_x = _features(9, 300), _features(10, 150)
  train_y = np.random.default_rng(11).integers(0, 3, size=300)
  sklearn_knn = KNeighborsClassifier(n_neighbors=20, metric="cosine", algorithm="brute")
  sklearn_knn.fit(train_x, train_y)
  want = sklearn_knn.predict_proba(test_x)
  for temperature in (np.inf, 1e6):  # Uniform weights, exactly or nearly.
    got = knn.knn_scores(train_x, train_y, test_x, k=20, temperature=temperature, **BLOCKS)
    np.testing.assert_allclose(got, want, atol=1e-5)
  # Predictions agree wherever the vote has a single winner (most rows).
  ranked = np.sort(want, axis=1)
  no_tie = ranked[:, -1] > ranked[:, -2]
  assert no_tie.mean() > 0.8
  np.testing.assert_array_equal(got.argmax(axis=1)[no_tie], sklearn_knn.predict(test_x)[no_tie])


def test_small_temperature_stays_finite_and_scale_does_not_matter():
  train_x, test_x = _features(12, 300), _features(13, 150)
  train_y = np.random.default_rng(14).integers(0, 2, size=300)
  cold = knn.knn_scores(train_x, train_y, test_x, k=20, temperature=1e-3, **BLOCKS)
  # exp(1 / 1e-3) would overflow without the shift by the best similarity.
  assert np.all(np.isfinite(cold))
  np.testing.assert_allclose(cold.sum(axis=1), 1.0, atol=1e-6)
  plain = knn.knn_scores(train_x, train_y, test_x, k=20, **BLOCKS)
  scaled = knn.knn_scores(train_x * 100.0, train_y, test_x * 0.01, k=20, **BLOCKS)
  np.testing.assert_allclose(plain, scaled, atol=1e-5)  # Cosine: the norm is irrelevant.


def test_evaluate_knn_summarizes_and_covers_test_only_classes():
  rng = np.random.default_rng(15)
  train_y, test_y = rng.integers(0, 2, size=300), rng.integers(0, 2, size=150)
  centers = 3.0 * np.eye(16, dtype=np.float32)[:3]
  train_x = centers[train_y] + _features(16, 300)
  test_x = centers[test_y] + _features(17, 150)
  out = knn.evaluate_knn(train_x, train_y, test_x, test_y, k=20, temperature=0.07,
                         n_boot=20, seed=0, **BLOCKS)
  assert out["k"] == 20 and out["temperature"] == 0.07 and out["n"] == 150
  assert out["auroc"] > 0.95 and out["accuracy"] > 0.9
  assert out["auroc_ci"][0] <= out["auroc"] <= out["auroc_ci"][1]
  # A class seen only in the test split gets a score column of zeros, not an error.
  test_y[-1] = 2
  extra = knn.evaluate_knn(train_x, train_y, test_x, test_y, k=20, n_boot=0, **BLOCKS)
  assert extra["n"] == 150 and extra["auroc_ci"] is None
  multi = knn.evaluate_knn(train_x, np.eye(2, dtype=int)[train_y], test_x,
                           np.eye(2, dtype=int)[test_y % 2], k=20, multi_label=True,
                           n_boot=0, **BLOCKS)
  assert set(multi["per_label"]) == {"0", "1"} and multi["auroc"] > 0.95


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 301}, "larger than the training bank"),
    ({"k": 0}, "positive integer"),
    ({"temperature": 0.0}, "temperature must be positive"),
    ({"temperature": float("nan")}, "temperature must be positive"),
    ({"num_classes": 2}, "num_classes=2"),
    ({"query_block": 0}, "query_block"),
    ({"bank_block": 2.5}, "bank_block"),
])
def test_bad_arguments_raise(kwargs, match):
  train_y = np.arange(300) % 3
  with pytest.raises(ValueError, match=match):
    knn.knn_scores(_features(0, 300), train_y, _features(1, 10), **kwargs)


def test_bad_inputs_raise():
  train_x, test_x, train_y = _features(0, 30), _features(1, 10), np.arange(30) % 2
  with pytest.raises(ValueError, match="train_x has 16 features, test_x has 8"):
    knn.knn_scores(train_x, train_y, test_x[:, :8])
  with pytest.raises(ValueError, match="NaN or inf"):
    knn.knn_scores(np.where(train_x > 2, np.nan, train_x), train_y, test_x, k=3)
  with pytest.raises(ValueError, match=r"train_y must be \(N,\) or \(N, 1\) with N=30"):
    knn.knn_scores(train_x, train_y[:20], test_x, k=3)
  with pytest.raises(ValueError, match="non-negative integer"):
    knn.knn_scores(train_x, train_y - 1, test_x, k=3)
  with pytest.raises(ValueError, match="must be 0/1"):
    knn.knn_scores(train_x, np.full((30, 2), 2), test_x, k=3, multi_label=True)
  with pytest.raises(ValueError, match="must be 0/1"):
    knn.knn_scores(train_x, np.full((30, 2), -2), test_x, k=3, multi_label=True)
  with pytest.raises(ValueError, match="non-empty"):
    knn.knn_scores(train_x, train_y, test_x[:0], k=3)

"""Tests for medssl_jax.evaluation.jax_probe: the same optimum as the scikit-learn probe.

Each test uses one data shape per model kind, so the L-BFGS loop compiles once per test.
"""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from medssl_jax.data import catalog
from medssl_jax.evaluation import jax_probe
from medssl_jax.evaluation import probes


@pytest.fixture(scope="module")
def breast_pixels(medmnist_dir):
  """BreastMNIST raw pixels in [0, 1], 4x4 average-pooled to 7x7 = 49 features: strongly
  correlated, so weakly regularised fits take L-BFGS a hundred-odd iterations."""
  splits = {}
  for split in ("train", "val", "test"):
    source = catalog.open_source("breastmnist", split, data_dir=medmnist_dir)
    pooled = source.images.reshape(len(source), 7, 4, 7, 4).mean(axis=(2, 4))
    splits[split] = (pooled.reshape(len(source), -1) / 255.0, source.labels)
  return splits


def _assert_same_probe(jax_fit, sklearn_fit, test_x, test_y):
  got, want = jax_fit.predict_proba(test_x), sklearn_fit.predict_proba(test_x)
  assert got.shape == want.shape
  assert np.abs(got - want).max() < 0.02
  got_eval = probes.evaluate_probe(jax_fit, test_x, test_y, n_boot=0)
  want_eval = probes.evaluate_probe(sklearn_fit, test_x, test_y, n_boot=0)
  assert abs(got_eval["auroc"] - want_eval["auroc"]) < 0.005
  return got


def test_binary_matches_sklearn_on_breastmnist_pixels(breast_pixels):
  train, val, test = breast_pixels["train"], breast_pixels["val"], breast_pixels["test"]
  # 546 rows in blocks of 128: four full blocks and a padded one, whose rows must not count.
  fitted = jax_probe.fit_jax_probe(*train, *val, block_size=128)
  reference = probes.fit_logistic_probe(*train, *val)
  assert [c for c, _ in fitted.val_curve] == list(probes.DEFAULT_CS)
  np.testing.assert_allclose([s for _, s in fitted.val_curve],
                             [s for _, s in reference.val_curve], atol=0.005)
  assert fitted.val_score == max(s for _, s in fitted.val_curve)
  out = probes.evaluate_probe(fitted, *test, n_boot=20)
  assert out["auroc_ci"][0] <= out["auroc"] <= out["auroc_ci"][1] and out["n"] == 156
  for c in (0.01, 1.0, 100.0):
    fitted = jax_probe.fit_jax_probe(*train, *val, Cs=(c,), block_size=128)
    got = _assert_same_probe(fitted, probes.fit_logistic_probe(*train, *val, Cs=(c,)), *test)
    # Near the exact optimum: sklearn's default tol=1e-4 itself stops up to 5e-3 away.
    z = lambda x: (x - fitted.mean) / fitted.std  # pylint: disable=cell-var-from-loop
    exact = LogisticRegression(C=c, tol=1e-12, max_iter=100_000).fit(z(train[0]), train[1])
    assert np.abs(got - exact.predict_proba(z(test[0]))).max() < 2e-3
    assert fitted.weights.shape == (49, 1) and fitted.C == c


def _gaussian_set(seed, n, num_classes, dim=20):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, num_classes, size=n)
  x = rng.standard_normal((n, dim)) * rng.uniform(0.5, 3.0, size=dim) + 5.0
  x[np.arange(n), y] += 1.0  # Class k shifts feature k.
  return x, y


def test_softmax_matches_sklearn_multinomial_and_missing_class_scores_zero(monkeypatch):
  # Host-side blocks of 7 rows: statistics, standardisation and prediction go block-wise.
  monkeypatch.setattr(jax_probe, "_HOST_ENTRIES", 7 * 20)
  (train_x, train_y), val, (test_x, test_y) = [
      _gaussian_set(seed, n, 4) for seed, n in ((0, 300), (1, 200), (2, 400))]
  keep = train_y != 2  # Class 2 never seen in training: probability 0, as in probes.py.
  train = train_x[keep], train_y[keep]
  for c in (0.01, 1.0):
    fitted = jax_probe.fit_jax_probe(*train, *val, Cs=(c,))
    reference = probes.fit_logistic_probe(*train, *val, Cs=(c,))
    got = _assert_same_probe(fitted, reference, test_x, test_y)
    assert got.shape == (400, 4) and np.all(got[:, 2] == 0.0)
    np.testing.assert_allclose(got.sum(axis=1), 1.0)
    assert fitted.weights.shape == (20, 3) and list(fitted.classes) == [0, 1, 3]


def _labelled(seed, n):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, 12))
  logits = x[:, :3] * np.array([2.0, 1.0, 0.5]) + np.array([0.0, -1.0, 1.0])
  return x, (rng.random((n, 3)) < 1 / (1 + np.exp(-logits))).astype(np.int64)


def test_multi_label_matches_sklearn_one_vs_rest():
  train, val, test = _labelled(3, 300), _labelled(4, 200), _labelled(5, 400)
  fitted = jax_probe.fit_jax_probe(*train, *val, Cs=(0.01, 0.1, 1.0), multi_label=True)
  reference = probes.fit_logistic_probe(*train, *val, Cs=(0.01, 0.1, 1.0), multi_label=True)
  np.testing.assert_allclose([s for _, s in fitted.val_curve],
                             [s for _, s in reference.val_curve], atol=0.005)
  for c in (0.01, 1.0):
    fitted = jax_probe.fit_jax_probe(*train, *val, Cs=(c,), multi_label=True)
    reference = probes.fit_logistic_probe(*train, *val, Cs=(c,), multi_label=True)
    got = _assert_same_probe(fitted, reference, *test)
    assert got.shape == (400, 3) and fitted.multi_label and fitted.num_outputs == 3
  out = probes.evaluate_probe(fitted, *test, n_boot=0)
  assert set(out["per_label"]) == {"0", "1", "2"}


def test_multi_label_unknowns_match_sklearn_fits_on_known_rows():
  # The shapes of test_multi_label_matches_sklearn_one_vs_rest: no new compilation.
  def hidden(seed, n, fractions):
    x, y = _labelled(seed, n)
    rng = np.random.default_rng(seed + 10)
    return x, np.where(rng.random(y.shape) < np.asarray(fractions), -1, y)

  # Unequal unknown fractions: each label's mean and penalty must use its own N_l.
  train = hidden(3, 300, (0.1, 0.6, 0.3))
  val, test = hidden(4, 200, 0.3), hidden(5, 400, 0.3)
  for c in (0.01, 1.0):
    fitted = jax_probe.fit_jax_probe(*train, *val, Cs=(c,), multi_label=True)
    reference = probes.fit_logistic_probe(*train, *val, Cs=(c,), multi_label=True)
    _assert_same_probe(fitted, reference, *test)
    assert fitted.val_score == pytest.approx(reference.val_score, abs=0.005)


def test_bad_input_raises():
  x, y = _gaussian_set(0, 40, 2)
  with pytest.raises(ValueError, match="single class"):
    jax_probe.fit_jax_probe(x, np.zeros(40), x, y)
  with pytest.raises(ValueError, match="Cs must be"):
    jax_probe.fit_jax_probe(x, y, x, y, Cs=(1.0, -1.0))
  with pytest.raises(ValueError, match="train_x has 20 features, val_x has 5"):
    jax_probe.fit_jax_probe(x, y, x[:, :5], y)
  with pytest.raises(ValueError, match="NaN or inf"):
    jax_probe.fit_jax_probe(np.where(x > 7, np.inf, x), y, x, y)
  with pytest.raises(ValueError, match="block_size"):
    jax_probe.fit_jax_probe(x, y, x, y, block_size=0)
  with pytest.raises(ValueError, match="labels with a single class"):
    jax_probe.fit_jax_probe(x, np.c_[y, np.ones(40)], x, np.c_[y, y], multi_label=True)
  with pytest.raises(ValueError, match="labels with a single class"):  # Known rows all 1.
    jax_probe.fit_jax_probe(x, np.c_[y, 2 * y - 1], x, np.c_[y, y], multi_label=True)
  with pytest.raises(ValueError, match="non-negative integer"):  # -1 is multi-label only.
    jax_probe.fit_jax_probe(x, np.where(np.arange(40) == 0, -1, y), x, y)
  with pytest.raises(ValueError, match=r"features must be \(N, 20\)"):
    probe = jax_probe.JaxLogisticProbe(
        mean=np.zeros(20), std=np.ones(20), weights=np.zeros((20, 1)), bias=np.zeros(1),
        classes=np.arange(2), C=1.0, val_score=0.5, multi_label=False, num_outputs=2)
    probe.predict_proba(x[:, :3])

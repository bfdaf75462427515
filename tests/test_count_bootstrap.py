"""metrics.summarize's intervals (count_bootstrap.py) against metrics.bootstrap_ci, which
copies and re-ranks each resample: the same resamples, so the same intervals."""
import numpy as np
import pytest

from medssl_jax.evaluation import metrics


def _reference(labels, scores, multi_label, n_boot, seed=0):
  acc = lambda y, s: metrics.accuracy(y, s, multi_label=multi_label)
  auc = lambda y, s: metrics.auroc(y, s, multi_label=multi_label)["auroc"]
  return ([metrics.bootstrap_ci(acc, labels, scores, n_boot, seed=seed)[1:],
           metrics.bootstrap_ci(auc, labels, scores, n_boot, seed=seed)[1:]])


def _check(labels, scores, multi_label, n_boot=200, seed=0):
  got = metrics.summarize(labels, scores, multi_label=multi_label, n_boot=n_boot, seed=seed)
  want_acc, want_auc = _reference(labels, scores, multi_label, n_boot, seed)
  np.testing.assert_allclose(got["accuracy_ci"], want_acc, rtol=0, atol=1e-12)
  np.testing.assert_allclose(got["auroc_ci"], want_auc, rtol=0, atol=1e-12)
  assert got["auroc_ci"][0] < got["auroc"] < got["auroc_ci"][1]
  return got


def test_binary_with_tied_scores():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 300)
  # Scores on a coarse grid: many ties between positives and negatives, half credit each.
  positive = np.round(np.clip(0.5 + 0.2 * (labels - 0.5) + 0.2 * rng.standard_normal(300), 0, 1), 1)
  _check(labels[:, None], np.stack([1 - positive, positive], axis=1), False)


def test_multiclass_with_a_rare_class_redraws_the_same_resamples():
  rng = np.random.default_rng(1)
  labels = np.r_[rng.integers(0, 4, 200), 4, 4]  # class 4: two examples, often drawn out
  scores = rng.dirichlet(np.ones(6), size=202)    # column 5: a class never in the labels
  scores[np.arange(202), labels] += 0.3
  got = _check(labels, scores, False, n_boot=100, seed=3)
  assert 0.3 < got["accuracy"] < 1.0


def test_multi_label_with_unknowns_and_a_single_class_label():
  rng = np.random.default_rng(2)
  labels = rng.integers(0, 2, (250, 3))
  scores = np.clip(0.3 * labels + 0.7 * rng.random((250, 3)), 0, 1)
  labels[rng.random((250, 3)) < 0.3] = -1
  labels[:, 2] = np.where(labels[:, 2] == -1, -1, 1)  # label 2: one class, left out of AUROC
  with pytest.warns(UserWarning, match="single class"):
    _check(labels, scores, True)

"""Tests for medssl_jax.evaluation.metrics against scikit-learn's reference."""
import json
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from medssl_jax.evaluation import metrics

SEEDS = (0, 1, 2, 3)


def _tied_probabilities(rng, n, k, pool_size=7):
  """(n, k) rows drawn from a small pool of probability vectors -> many ties."""
  pool = rng.dirichlet(np.ones(k), size=pool_size)
  return pool[rng.integers(0, pool_size, size=n)]


def _binary_set(rng, n):
  """Labels with a weak signal in rounded (tied) scores."""
  labels = (rng.random(n) < 0.3).astype(np.int64)
  p1 = np.clip(0.5 + 0.3 * (labels - 0.5) + 0.2 * rng.standard_normal(n), 0, 1)
  p1 = np.round(p1, 1)  # Rounding creates ties within and across classes.
  return labels, np.stack([1.0 - p1, p1], axis=1)


# --------------------------------------------------------------------------
# Accuracy.


@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_single_label_matches_sklearn(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 5, size=300)
  scores = rng.standard_normal((300, 5))
  scores[np.arange(150), labels[:150]] += 2.0  # Some signal, not perfect.
  want = skm.accuracy_score(labels, scores.argmax(1))
  assert metrics.accuracy(labels, scores) == pytest.approx(want, abs=1e-12)
  # MedMNIST-style (N, 1) labels give the same answer.
  assert metrics.accuracy(labels[:, None], scores) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_multi_label_matches_sklearn(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, size=(200, 4))
  scores = np.round(rng.random((200, 4)), 1)  # Includes exact 0.5 values.
  want = np.mean([skm.accuracy_score(labels[:, j], scores[:, j] >= 0.5)
                  for j in range(4)])
  assert metrics.accuracy(labels, scores) == pytest.approx(want, abs=1e-12)
  assert metrics.accuracy(labels, scores, multi_label=True) == pytest.approx(want)


# --------------------------------------------------------------------------
# AUROC.


@pytest.mark.parametrize("seed", SEEDS)
def test_binary_auroc_matches_sklearn_with_ties(seed):
  labels, scores = _binary_set(np.random.default_rng(seed), 400)
  assert len(np.unique(scores[:, 1])) < 20  # Really tied.
  want = skm.roc_auc_score(labels, scores[:, 1])
  assert metrics.auroc(labels, scores)["auroc"] == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_multiclass_auroc_matches_sklearn_ovr_macro(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 4, size=500)
  scores = _tied_probabilities(rng, 500, 4)
  want = skm.roc_auc_score(labels, scores, multi_class="ovr", average="macro")
  assert metrics.auroc(labels, scores)["auroc"] == pytest.approx(want, abs=1e-12)


def test_multiclass_auroc_averages_over_present_classes():
  rng = np.random.default_rng(0)
  labels = rng.choice([0, 1, 3], size=300)  # Class 2 absent.
  scores = _tied_probabilities(rng, 300, 4)
  want = np.mean([skm.roc_auc_score(labels == k, scores[:, k]) for k in (0, 1, 3)])
  assert metrics.auroc(labels, scores)["auroc"] == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_multi_label_auroc_matches_sklearn_per_label(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, size=(300, 5))
  scores = np.round(np.clip(0.3 * labels + 0.7 * rng.random((300, 5)), 0, 1), 1)
  got = metrics.auroc(labels, scores, multi_label=True)
  for j in range(5):
    want = skm.roc_auc_score(labels[:, j], scores[:, j])
    assert got["per_label"][str(j)] == pytest.approx(want, abs=1e-12)
  want = skm.roc_auc_score(labels, scores, average="macro")
  assert got["auroc"] == pytest.approx(want, abs=1e-12)


def test_multi_label_auroc_warns_and_skips_absent_label():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, size=(200, 3))
  labels[:, 1] = 0  # Label 1 never positive in this test set.
  scores = rng.random((200, 3))
  with pytest.warns(UserWarning, match="'effusion'"):
    got = metrics.auroc(labels, scores, multi_label=True,
                        label_names=["atelectasis", "effusion", "mass"])
  assert set(got["per_label"]) == {"atelectasis", "mass"}
  want = np.mean([skm.roc_auc_score(labels[:, j], scores[:, j]) for j in (0, 2)])
  assert got["auroc"] == pytest.approx(want, abs=1e-12)


def test_auroc_rejects_single_class_and_bad_shapes():
  scores = np.full((10, 2), 0.5)
  with pytest.raises(ValueError, match="one class"):
    metrics.auroc(np.zeros(10, dtype=int), scores)
  with pytest.raises(ValueError, match="disagree"):
    metrics.auroc(np.zeros(9, dtype=int), scores)
  with pytest.raises(ValueError, match="multi_label=True"):
    metrics.auroc(np.zeros((10, 2), dtype=int), scores)


# --------------------------------------------------------------------------
# Bootstrap and summary.


def _auroc_fn(labels, scores):
  return metrics.auroc(labels, scores)["auroc"]


def test_bootstrap_ci_contains_point_and_shrinks_with_n():
  widths = {}
  for n in (100, 5000):
    labels, scores = _binary_set(np.random.default_rng(n), n)
    point, lo, hi = metrics.bootstrap_ci(_auroc_fn, labels, scores, n_boot=200)
    assert point == pytest.approx(_auroc_fn(labels, scores))
    assert lo <= point <= hi
    widths[n] = hi - lo
  # Width scales like 1/sqrt(n): ~7x narrower; ask for a safe 3x.
  assert widths[5000] < widths[100] / 3


def test_bootstrap_ci_is_deterministic_by_seed():
  labels, scores = _binary_set(np.random.default_rng(0), 200)
  a = metrics.bootstrap_ci(_auroc_fn, labels, scores, n_boot=100, seed=7)
  b = metrics.bootstrap_ci(_auroc_fn, labels, scores, n_boot=100, seed=7)
  c = metrics.bootstrap_ci(_auroc_fn, labels, scores, n_boot=100, seed=8)
  assert a == b
  assert a != c


def test_bootstrap_redraws_resamples_missing_a_class():
  # A single positive: ~37% of resamples lack it, and AUROC would raise there.
  rng = np.random.default_rng(0)
  labels = np.zeros(50, dtype=np.int64)
  labels[0] = 1
  scores = np.stack([1 - rng.random(50), rng.random(50)], axis=1)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # All n_boot resamples must be found.
    point, lo, hi = metrics.bootstrap_ci(_auroc_fn, labels, scores, n_boot=50)
  assert lo <= point <= hi


def test_summarize_single_label_is_json_serialisable():
  labels, scores = _binary_set(np.random.default_rng(0), 300)
  out = metrics.summarize(labels, scores, n_boot=50)
  assert json.loads(json.dumps(out)) == out
  assert out["n"] == 300
  assert set(out) == {"accuracy", "accuracy_ci", "auroc", "auroc_ci", "n"}
  for key in ("accuracy", "auroc"):
    lo, hi = out[key + "_ci"]
    assert type(out[key]) is float and lo <= out[key] <= hi


def test_summarize_multi_label_reports_per_label():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, size=(200, 3))
  scores = np.clip(0.4 * labels + 0.6 * rng.random((200, 3)), 0, 1)
  out = metrics.summarize(labels, scores, multi_label=True, n_boot=30)
  assert json.loads(json.dumps(out)) == out
  assert set(out["per_label"]) == {"0", "1", "2"}
  assert out["auroc"] == pytest.approx(np.mean(list(out["per_label"].values())))


# --------------------------------------------------------------------------
# Unknown (-1) multi-label entries.


def _with_unknowns(rng, labels, fraction):
  """labels with about `fraction` of the entries set to -1 (unknown)."""
  return np.where(rng.random(labels.shape) < fraction, -1, labels)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_multi_label_metrics_use_only_known_rows(seed):
  rng = np.random.default_rng(seed)
  full = rng.integers(0, 2, size=(300, 4))
  scores = np.round(np.clip(0.3 * full + 0.7 * rng.random((300, 4)), 0, 1), 1)
  labels = _with_unknowns(rng, full, 0.3)
  labels[:, 3] = np.where(full[:, 3] == 1, -1, 0)  # Label 3: positives all unknown.
  with pytest.warns(UserWarning, match=r"\['3'\]"):
    got = metrics.auroc(labels, scores, multi_label=True)
  want = {}
  for j in range(3):
    known = labels[:, j] != -1
    want[str(j)] = skm.roc_auc_score(labels[known, j], scores[known, j])
  assert got["per_label"] == pytest.approx(want, abs=1e-12)
  assert got["auroc"] == pytest.approx(np.mean(list(want.values())), abs=1e-12)
  known = labels != -1
  want_acc = skm.accuracy_score(labels[known], scores[known] >= 0.5)
  assert metrics.accuracy(labels, scores) == pytest.approx(want_acc, abs=1e-12)
  # Scores of unknown entries do not matter.
  noisy = np.where(known, scores, rng.random(scores.shape))
  assert metrics.accuracy(labels, noisy) == pytest.approx(want_acc, abs=1e-12)
  with pytest.warns(UserWarning):
    assert metrics.auroc(labels, noisy, multi_label=True) == got


def test_multi_label_rejects_other_negative_labels_and_all_unknown():
  scores = np.full((4, 2), 0.5)
  with pytest.raises(ValueError, match="0/1, or -1"):
    metrics.auroc(np.full((4, 2), -2), scores, multi_label=True)
  with pytest.raises(ValueError, match="every multi-label entry is unknown"):
    metrics.accuracy(np.full((4, 2), -1), scores)
  with pytest.raises(ValueError, match="no label has both classes"):
    with pytest.warns(UserWarning, match="skipped"):
      metrics.auroc(np.full((4, 2), -1), scores, multi_label=True)
  # -1 is still no class for single-label data.
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
    metrics.auroc(np.array([0, 1, -1, 1]), scores)


def test_bootstrap_does_not_require_resamples_to_hold_unknowns():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, size=(60, 2))
  labels[:, 1] = np.arange(60) % 2
  scores = rng.random((60, 2))

  def score_mean(y, s):  # Depends on the resample only, not on the labels.
    del y
    return float(s.mean())

  # One -1 (in a column that keeps both classes) must not change which resamples are
  # kept: were it a class, the ~37% of resamples lacking row 0 would be redrawn.
  unknown = labels.copy()
  unknown[0, 1] = -1
  want = metrics.bootstrap_ci(score_mean, labels, scores, n_boot=100)
  assert metrics.bootstrap_ci(score_mean, unknown, scores, n_boot=100) == want
  out = metrics.summarize(_with_unknowns(rng, labels, 0.2), scores, multi_label=True,
                          n_boot=30)
  for key in ("accuracy", "auroc"):
    lo, hi = out[key + "_ci"]
    assert lo <= out[key] <= hi


def test_group_bootstrap_with_one_example_per_group_draws_as_the_example_bootstrap():
  rng = np.random.default_rng(5)
  labels = rng.integers(0, 3, 120)
  scores = rng.dirichlet(np.ones(3), 120)
  auroc = lambda y, p: metrics.auroc(y, p)["auroc"]
  _, low, high = metrics.bootstrap_ci(auroc, labels, scores, n_boot=200, seed=4)
  grouped = metrics.summarize(labels, scores, n_boot=200, seed=4, groups=np.arange(120))
  np.testing.assert_allclose(grouped["auroc_ci"], [low, high], rtol=1e-12)
  assert grouped["ci_groups"] == 120


def test_group_bootstrap_resamples_whole_patients():
  """12 patients of 25 images each; a patient's images share its label and nearly its score.
  Resampling images treats 300 as independent; resampling patients sees 12."""
  rng = np.random.default_rng(6)
  patient_label = np.tile([0, 1], 6)
  patient_score = np.clip(0.5 + 0.25 * (patient_label - 0.5) + rng.normal(0, 0.2, 12), 0, 1)
  patients = np.repeat(np.arange(12), 25)
  labels = patient_label[patients]
  p1 = np.clip(patient_score[patients], 0.01, 0.98) + rng.uniform(0, 0.01, 300)  # all distinct
  scores = np.stack([1 - p1, p1], axis=1)
  by_image = metrics.summarize(labels, scores, n_boot=300, seed=0)
  by_patient = metrics.summarize(labels, scores, n_boot=300, seed=0, groups=patients[::-1].copy())
  width = lambda r: r["auroc_ci"][1] - r["auroc_ci"][0]
  assert by_patient["auroc"] == by_image["auroc"] and "ci_groups" not in by_image
  assert width(by_patient) > 2 * width(by_image)
  assert by_patient["ci_groups"] == 12
  # Every patient's images move together: within a resample, all 25 are drawn equally often.
  drawn = []
  metrics.group_bootstrap_stats([lambda y, p: drawn.append(p[:, 1]) or 0.0], labels, scores, patients,
                                50, np.random.default_rng(1))
  assert len(drawn) == 50
  for resample in drawn:
    counts = np.array([np.sum(resample == value) for value in p1]).reshape(12, 25)
    assert (counts == counts[:, :1]).all() and counts.sum() == 300 and counts[:, 0].max() > 1

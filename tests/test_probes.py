"""Tests for medssl_jax.evaluation.probes: C selection, multi-label, real data."""
import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression

from medssl_jax.evaluation import probes

CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def _gaussian_set(seed, n, dim=20, num_classes=2, shift=1.0):
  """Classes are Gaussians whose means differ along the first few features."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, num_classes, size=n)
  x = rng.standard_normal((n, dim))
  x[np.arange(n), y] += shift  # Class k shifts feature k.
  return x, y


def _splits(num_classes=2, n_train=200, dim=20, shift=1.0):
  return [_gaussian_set(seed, n, dim, num_classes, shift)
          for seed, n in ((0, n_train), (1, 300), (2, 500))]


def _manual_selection(train, val, cs, multi_class):
  """The reference: sklearn directly, standardising with train statistics."""
  (tx, ty), (vx, vy) = train, val
  mean, std = tx.mean(0), np.maximum(tx.std(0), 1e-6)
  curve = []
  for c in cs:
    model = LogisticRegression(C=c, max_iter=1000, random_state=0)
    proba = model.fit((tx - mean) / std, ty).predict_proba((vx - mean) / std)
    if multi_class:
      curve.append(skm.roc_auc_score(vy, proba, multi_class="ovr"))
    else:
      curve.append(skm.roc_auc_score(vy, proba[:, 1]))
  best = int(np.argmax(curve))  # First maximum -> the smaller C on ties.
  return cs[best], curve


def test_probe_reaches_high_auroc_on_separable_gaussians():
  train, val, test = _splits(shift=2.5)
  probe = probes.fit_logistic_probe(*train, *val, Cs=CS)
  out = probes.evaluate_probe(probe, *test, n_boot=50)
  assert out["auroc"] > 0.95
  assert out["accuracy"] > 0.85
  assert out["auroc_ci"][0] <= out["auroc"] <= out["auroc_ci"][1]
  assert probe.predict_proba(test[0]).shape == (500, 2)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_c_selection_matches_manual_sklearn_loop(num_classes):
  # Few examples, many noise features: the choice of C matters here.
  train, val, _ = _splits(num_classes, n_train=60, dim=60, shift=1.0)
  probe = probes.fit_logistic_probe(*train, *val, Cs=CS)
  want_c, want_curve = _manual_selection(train, val, CS, num_classes > 2)
  assert len(set(np.round(want_curve, 6))) > 1  # Selection is not trivial.
  assert probe.C == want_c
  assert [c for c, _ in probe.val_curve] == list(CS)
  np.testing.assert_allclose([s for _, s in probe.val_curve], want_curve, atol=1e-9)
  assert probe.val_score == pytest.approx(max(want_curve), abs=1e-9)
  # The kept model is the train-only fit at the chosen C.
  (tx, ty), (vx, _) = train, val
  mean, std = tx.mean(0), tx.std(0)
  ref = LogisticRegression(C=want_c, max_iter=1000).fit((tx - mean) / std, ty)
  np.testing.assert_allclose(probe.predict_proba(vx),
                             ref.predict_proba((vx - mean) / std), atol=1e-8)


def test_c_selection_ties_go_to_smaller_c():
  # Perfectly separable: every C gives validation AUROC 1.0.
  train, val, _ = _splits(shift=8.0)
  probe = probes.fit_logistic_probe(*train, *val, Cs=(10.0, 0.1, 1.0))
  assert [s for _, s in probe.val_curve] == [1.0, 1.0, 1.0]
  assert probe.C == 0.1


def _multi_label_set(seed, n, dim=12, num_labels=3):
  """Label j is a noisy threshold on feature j."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, dim))
  noise = 0.5 * rng.standard_normal((n, num_labels))
  return x, (x[:, :num_labels] + noise > 0).astype(np.int64)


def test_multi_label_probe():
  train, val, test = (_multi_label_set(s, n) for s, n in ((0, 300), (1, 200), (2, 300)))
  probe = probes.fit_logistic_probe(*train, *val, Cs=(0.1, 1.0), multi_label=True)
  assert probe.multi_label
  assert probe.predict_proba(test[0]).shape == (300, 3)
  out = probes.evaluate_probe(probe, *test, n_boot=30)
  assert out["auroc"] > 0.9
  assert set(out["per_label"]) == {"0", "1", "2"}
  assert all(v > 0.85 for v in out["per_label"].values())


def test_bad_inputs_raise_value_error():
  (tx, ty), (vx, vy), _ = _splits()
  with pytest.raises(ValueError, match="train_y"):
    probes.fit_logistic_probe(tx, ty[:-1], vx, vy)
  with pytest.raises(ValueError, match="features"):
    probes.fit_logistic_probe(tx, ty, vx[:, :-1], vy)
  with pytest.raises(ValueError, match="val_y"):
    probes.fit_logistic_probe(tx, ty, vx, vy[:10])
  with pytest.raises(ValueError, match="single class"):
    probes.fit_logistic_probe(tx, np.zeros_like(ty), vx, vy)
  with pytest.raises(ValueError, match="single class"):
    probes.fit_logistic_probe(tx, ty, vx, np.ones_like(vy))
  with pytest.raises(ValueError, match="train_y"):  # Multi-label needs (N, L).
    probes.fit_logistic_probe(tx, ty, vx, vy, multi_label=True)
  probe = probes.fit_logistic_probe(tx, ty, vx, vy, Cs=(1.0,))
  with pytest.raises(ValueError, match="features"):
    probe.predict_proba(vx[:, :5])


def test_pneumoniamnist_raw_pixel_probe(medmnist_dir):
  data = np.load(medmnist_dir / "pneumoniamnist.npz")

  def split(name, limit=None):
    x = data[f"{name}_images"][:limit]
    return x.reshape(len(x), -1) / 255.0, data[f"{name}_labels"][:limit]

  # The small-C end of the default grid: it holds the best C (0.01) and skips
  # the slowest lbfgs fits, keeping the test fast on a busy machine.
  probe = probes.fit_logistic_probe(*split("train", 1000), *split("val"),
                                    Cs=(1e-3, 1e-2, 1e-1))
  out = probes.evaluate_probe(probe, *split("test"), n_boot=200)
  assert out["n"] == 624
  assert out["auroc"] > 0.85, out
  assert out["auroc_ci"][0] <= out["auroc"] <= out["auroc_ci"][1]


def _hide(seed, y, fractions):
  """y with a fraction of each label's entries set to -1 (unknown)."""
  rng = np.random.default_rng(seed)
  return np.where(rng.random(y.shape) < np.asarray(fractions), -1, y)


def test_multi_label_unknowns_match_per_label_sklearn_on_known_rows():
  (tx, ty), (vx, vy), (sx, sy) = (
      _multi_label_set(s, n) for s, n in ((0, 300), (1, 200), (2, 300)))
  ty, vy, sy = _hide(3, ty, (0.1, 0.5, 0.3)), _hide(4, vy, 0.3), _hide(5, sy, 0.3)
  cs = (0.01, 1.0)
  probe = probes.fit_logistic_probe(tx, ty, vx, vy, Cs=cs, multi_label=True)
  # Reference: one LogisticRegression per label on its known rows, standardised with
  # statistics of every training row; validation AUROC per label on its known rows.
  mean, std = tx.mean(0), np.maximum(tx.std(0), 1e-6)
  z = lambda x: (x - mean) / std
  curve, proba = [], {}
  for c in cs:
    known = [ty[:, j] >= 0 for j in range(3)]
    fits = [LogisticRegression(C=c, max_iter=1000).fit(z(tx)[known[j]], ty[known[j], j])
            for j in range(3)]
    proba[c] = np.stack([fit.predict_proba(z(sx))[:, 1] for fit in fits], axis=1)
    val = np.stack([fit.predict_proba(z(vx))[:, 1] for fit in fits], axis=1)
    curve.append(np.mean([skm.roc_auc_score(vy[vy[:, j] >= 0, j], val[vy[:, j] >= 0, j])
                          for j in range(3)]))
  np.testing.assert_allclose([s for _, s in probe.val_curve], curve, atol=1e-9)
  assert probe.C == cs[int(np.argmax(curve))]
  np.testing.assert_allclose(probe.predict_proba(sx), proba[probe.C], atol=1e-8)
  out = probes.evaluate_probe(probe, sx, sy, n_boot=20)
  for j in range(3):
    known = sy[:, j] >= 0
    assert out["per_label"][str(j)] == pytest.approx(
        skm.roc_auc_score(sy[known, j], proba[probe.C][known, j]), abs=1e-9)
  assert out["auroc_ci"][0] <= out["auroc"] <= out["auroc_ci"][1]


def test_unknown_labels_are_multi_label_only():
  (tx, ty), (vx, vy), _ = _splits()
  with pytest.raises(ValueError, match="non-negative integer classes"):
    probes.fit_logistic_probe(tx, np.where(np.arange(len(ty)) == 0, -1, ty), vx, vy)
  (tx, ty), (vx, vy) = _multi_label_set(0, 100), _multi_label_set(1, 100)
  with pytest.raises(ValueError, match="0/1, or -1"):
    probes.fit_logistic_probe(tx, np.where(ty == 0, -2, ty), vx, vy, multi_label=True)
  # Label 1 has positives and unknowns only: a single class among its known rows.
  ty[:, 1] = np.where(ty[:, 1] == 0, -1, 1)
  with pytest.raises(ValueError, match=r"labels with a single class: \[1\]"):
    probes.fit_logistic_probe(tx, ty, vx, vy, multi_label=True)

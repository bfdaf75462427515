"""The eval's choice of probe solver (by examples x features) and the progress lines of long
probe fits (issue 20, item 4)."""
import sys

import numpy as np
import pytest

from medssl_jax.evaluation import fit_progress
from medssl_jax.evaluation import jax_probe
from medssl_jax.evaluation import suite

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "configs" / "eval"))
import linear_probe  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def _gaussian_set(seed, n, dim=6, num_classes=3):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, num_classes, size=n)
  x = rng.standard_normal((n, dim))
  x[np.arange(n), y] += 1.5
  return x, y


def test_auto_chooses_by_examples_times_features():
  config = linear_probe.get_config()
  limit = config.probe.sklearn_max_entries
  # OrganAMNIST's raw pixels (34561 x 784): few examples, but 27M entries.
  assert suite.probe_kind(config, 34561, 784) == "jax"
  assert suite.probe_kind(config, limit // 128, 128) == "sklearn"
  assert suite.probe_kind(config, limit // 128 + 1, 128) == "jax"
  # Many examples of few features stay with scikit-learn: examples alone do not decide.
  assert suite.probe_kind(config, limit, 1) == "sklearn"
  config.probe.kind = "sklearn"
  assert suite.probe_kind(config, 34561, 784) == "sklearn"
  config.probe.kind = "cuda"
  with pytest.raises(ValueError, match="probe.kind must be one of"):
    suite.probe_kind(config, 10, 10)


def test_fit_probe_uses_the_chosen_solver_and_config():
  config = linear_probe.get_config()
  config.probe.Cs, config.probe.max_iter = (0.1, 1.0), 50
  train, val = _gaussian_set(0, 200), _gaussian_set(1, 100)
  config.probe.sklearn_max_entries = 200 * 6
  probe, kind = suite.fit_probe(config, *train, *val, multi_label=False)
  assert kind == "sklearn" and probe.model.max_iter == 50
  config.probe.sklearn_max_entries = 200 * 6 - 1
  probe, kind = suite.fit_probe(config, *train, *val, multi_label=False)
  assert kind == "jax" and isinstance(probe, jax_probe.JaxLogisticProbe)
  assert [c for c, _ in probe.val_curve] == [0.1, 1.0]


def test_eta_counts_finished_cs_and_the_current_cs_iterations():
  now = [0.0]
  progress = fit_progress.FitProgress("raw_pixels", 4, 100, every_s=0.0, clock=lambda: now[0])
  assert progress.fraction_done(50) == pytest.approx(0.5 / 4)  # max_iter before any C ends
  now[0] = 10.0
  progress.finished_c(0.01, 50)
  now[0] = 15.0
  # One C done, half of the current one (25 of the 50 a C has taken): 1.5 of 4 in 15 s.
  assert progress.fraction_done(25) == pytest.approx(1.5 / 4)
  assert progress.eta_s(25) == pytest.approx(15.0 * 2.5 / 1.5)
  # Past the finished Cs' mean (50) the current C is not taken as done: its expected count
  # becomes twice its count so far, at most max_iter (100).
  assert progress.fraction_done(60) == pytest.approx((1 + 60 / 100) / 4)
  assert progress.fraction_done(100) == pytest.approx(2 / 4)


def test_long_jax_fit_logs_progress_with_eta_and_chunks_change_nothing(monkeypatch, caplog):
  train, val = _gaussian_set(2, 300), _gaussian_set(3, 100)
  with caplog.at_level("INFO"):
    whole = jax_probe.fit_jax_probe(*train, *val, Cs=(0.01, 1.0))
  assert "probe:" not in caplog.text  # a fit shorter than EVERY_S stays quiet
  caplog.clear()
  monkeypatch.setattr(fit_progress, "EVERY_S", 0.0)  # every chunk counts as long
  monkeypatch.setattr(jax_probe, "_CHUNK", 2)
  with caplog.at_level("INFO"):
    chunked = jax_probe.fit_jax_probe(*train, *val, Cs=(0.01, 1.0), name="raw_pixels")
  text = caplog.text
  # Before the first C ends the ETA is the max_iter bound, and says so.
  assert "raw_pixels probe: 0/2 values of C fitted, at iteration 2 of C=0.01, " in text
  assert "ETA at most " in text
  assert "raw_pixels probe: 1/2 values of C fitted, at iteration" in text and "ETA 0m" in text
  assert "raw_pixels probe: fitted 2 values of C in" in text
  assert chunked.num_iterations == whole.num_iterations
  np.testing.assert_allclose(chunked.weights, whole.weights, atol=1e-6)
  assert chunked.val_curve == whole.val_curve


def test_long_sklearn_fit_logs_progress_per_c(monkeypatch, caplog):
  monkeypatch.setattr(fit_progress, "EVERY_S", 0.0)
  config = linear_probe.get_config()
  config.probe.Cs = (0.1, 1.0, 10.0)
  with caplog.at_level("INFO"):
    _, kind = suite.fit_probe(config, *_gaussian_set(4, 100), *_gaussian_set(5, 50),
                              multi_label=False, name="random_init")
  assert kind == "sklearn"
  assert "random_init probe: 1/3 values of C fitted" in caplog.text
  assert "random_init probe: 2/3 values of C fitted" in caplog.text and "ETA" in caplog.text


def test_raw_pixels_are_probed_on_their_principal_components():
  from sklearn.decomposition import PCA  # pylint: disable=g-import-not-at-top

  from medssl_jax.evaluation import pca  # pylint: disable=g-import-not-at-top
  from medssl_jax.evaluation import probes  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(6)
  mixing = rng.standard_normal((4, 30))  # 30 correlated "pixels" from 4 factors, plus noise
  def pixels(seed, n):
    (x, y), noise = _gaussian_set(seed, n, dim=4), np.random.default_rng(seed + 50)
    return x @ mixing + 0.1 * noise.standard_normal((n, 30)), y
  train, val, test = pixels(7, 300), pixels(8, 100), pixels(9, 200)
  config = linear_probe.get_config()
  config.probe.Cs, config.probe.raw_pixels_components = (0.1, 1.0), 5
  probe, kind = suite.fit_probe(config, *train, *val, multi_label=False, name="raw_pixels")
  assert kind == "sklearn" and isinstance(probe, pca.ProjectedProbe)
  reference = PCA(n_components=5).fit(train[0])
  assert probe.projection.variance_kept == pytest.approx(reference.explained_variance_ratio_.sum())
  # The same probe as one fitted on scikit-learn's PCA scores (component signs may differ;
  # float32 projections and lbfgs at tol 1e-4 leave differences near 1e-3).
  want = probes.fit_logistic_probe(reference.transform(train[0]), train[1],
                                   reference.transform(val[0]), val[1], Cs=(0.1, 1.0))
  np.testing.assert_allclose(probe.predict_proba(test[0]),
                             want.predict_proba(reference.transform(test[0])), atol=2e-3)
  assert probe.C == want.C and probes.evaluate_probe(probe, *test, n_boot=0)["auroc"] > 0.7
  # Other representations, and raw pixels no wider than the limit, are probed as they are.
  assert not isinstance(suite.fit_probe(config, *train, *val, False, name="pretrained")[0],
                        pca.ProjectedProbe)
  config.probe.raw_pixels_components = 30
  assert not isinstance(suite.fit_probe(config, *train, *val, False, name="raw_pixels")[0],
                        pca.ProjectedProbe)

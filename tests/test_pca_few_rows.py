"""Raw pixels probed on their principal components when the training rows are fewer than the
components asked for (a 1% label draw): only the directions the rows span are kept.

Before the fix, 47 PneumoniaMNIST images (1% of the labels) were projected on 256
components, 210 of them arbitrary directions of zero training variance; the probe's
standardisation (std floor 1e-6) blew those up on test rows and the test AUROC fell to 0.39.
"""
import pathlib
import runpy

import numpy as np

from medssl_jax.evaluation import pca
from medssl_jax.evaluation import probes
from medssl_jax.evaluation import suite

_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "eval" / "linear_probe.py"


def _pixels(rng, n, mixing):
  y = rng.integers(0, 2, n)
  factors = rng.standard_normal((n, mixing.shape[0])) + 1.5 * y[:, None]
  return (factors @ mixing + 0.3 * rng.standard_normal((n, mixing.shape[1]))).astype(np.float32), y


def test_projection_keeps_no_more_components_than_the_rows_span():
  x = np.random.default_rng(0).standard_normal((20, 50)).astype(np.float32)
  projection = pca.fit(x, 30)
  assert projection.components.shape == (50, 19)  # 20 centred rows span 19 directions
  assert pca.fit(x[:1], 30).components.shape == (50, 1)  # one row: still a valid projection
  assert pca.fit(x, 5).components.shape == (50, 5)


def test_raw_pixel_probe_on_few_rows_scores_new_rows():
  rng = np.random.default_rng(1)
  mixing = rng.standard_normal((4, 60))
  train, val, test = _pixels(rng, 12, mixing), _pixels(rng, 200, mixing), _pixels(rng, 400, mixing)
  config = runpy.run_path(str(_CONFIG))["get_config"]()
  config.probe.raw_pixels_components = 40  # more than the 12 training rows can span
  probe, _ = suite.fit_probe(config, *train, *val, multi_label=False, name="raw_pixels")
  assert isinstance(probe, pca.ProjectedProbe) and probe.projection.components.shape[1] == 11
  probs = probe.predict_proba(test[0])
  assert np.isfinite(probs).all()
  assert probes.evaluate_probe(probe, *test, n_boot=0)["auroc"] > 0.8

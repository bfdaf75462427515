"""Warmup + cosine schedule, LR scaling, and LARS/weight decay skipping biases and norms."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from medssl_jax.loop import defaults
from medssl_jax.loop import optim


def test_warmup_then_cosine():
  schedule = optim.warmup_cosine(peak_lr=1.0, warmup_steps=10, total_steps=110)
  np.testing.assert_allclose(schedule(0), 0.0)
  np.testing.assert_allclose(schedule(5), 0.5, rtol=1e-6)
  np.testing.assert_allclose(schedule(10), 1.0, rtol=1e-6)
  np.testing.assert_allclose(schedule(60), 0.5 * (1 + np.cos(np.pi * 0.5)), rtol=1e-5)
  np.testing.assert_allclose(schedule(110), 0.0, atol=1e-7)


def test_linear_lr_scaling():
  config = defaults.pretraining().optim
  config.base_lr, config.lr_scaling = 0.3, "linear"
  assert optim.learning_rate(config, 4096) == pytest.approx(4.8)


def test_decay_mask_skips_biases_and_norm_params():
  params = {"conv": {"kernel": jnp.ones((3, 3, 1, 4))}, "bn": {"scale": jnp.ones(4), "bias": jnp.ones(4)},
            "dense": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones(2)}}
  mask = optim.decay_mask(params)
  assert mask["conv"]["kernel"] and mask["dense"]["kernel"]
  assert not (mask["bn"]["scale"] or mask["bn"]["bias"] or mask["dense"]["bias"])


def _first_update(name):
  config = ml_collections.ConfigDict(dict(defaults.pretraining().optim))
  config.name, config.warmup_steps, config.lr_scaling, config.weight_decay = name, 0, "none", 0.1
  tx = optim.create_optimizer(config, batch_size=256, total_steps=1000)
  params = {"dense": {"kernel": jnp.full((4, 2), 2.0), "bias": jnp.full((2,), 2.0)}}
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  return params, updates, config


def test_lars_adapts_kernels_but_not_biases():
  params, updates, config = _first_update("lars")
  lr = config.base_lr
  # Bias: plain momentum SGD step, no weight decay, no trust ratio.
  np.testing.assert_allclose(updates["dense"]["bias"], -lr * np.ones(2), rtol=1e-6)
  # Kernel: gradient plus decay, scaled by trust * ||w|| / ||g + wd w||.
  w, g = np.full((4, 2), 2.0), np.ones((4, 2)) + 0.1 * np.full((4, 2), 2.0)
  trust = config.trust_coefficient * np.linalg.norm(w) / np.linalg.norm(g)
  np.testing.assert_allclose(updates["dense"]["kernel"], -lr * trust * g, rtol=1e-5)


def test_unknown_optimizer():
  config = defaults.pretraining().optim
  config.name = "adagrad"
  with pytest.raises(ValueError, match="lars"):
    optim.create_optimizer(config, 256, 10)

"""optim.weight_decay_end: AdamW's weight decay follows a cosine from weight_decay to
weight_decay_end over the run (DINO), and stays constant by default."""
import jax.numpy as jnp
import numpy as np
import pytest

from medssl_jax import errors
from medssl_jax.loop import defaults
from medssl_jax.loop import optim


def _decay_after(optim_config, steps, total_steps=10):
  """The weight decay applied at update number `steps` (0-based): with zero gradients AdamW's
  update of a kernel is exactly -lr * weight_decay * kernel."""
  optimizer = optim.create_optimizer(optim_config, 256, total_steps)
  params = {"kernel": jnp.ones((2, 2))}
  state = optimizer.init(params)
  zero = {"kernel": jnp.zeros((2, 2))}
  for _ in range(steps):
    _, state = optimizer.update(zero, state, params)
  updates, _ = optimizer.update(zero, state, params)
  lr = optim.lr_schedule(optim_config, 256, total_steps)(steps)
  return float(-updates["kernel"][0, 0] / lr)


def _adamw(end):
  config = defaults.pretraining().optim
  config.name, config.base_lr, config.lr_scaling, config.warmup_steps = "adamw", 1e-3, "none", 0
  config.weight_decay, config.weight_decay_end = 0.04, end
  return config


def test_weight_decay_goes_from_start_to_end_on_a_cosine():
  config = _adamw(0.4)
  # (At step 10 the learning rate is 0, so the decay cannot be read off the update.)
  for step, expected in ((0, 0.04), (5, 0.22), (2, 0.4 - 0.36 * 0.5 * (1 + np.cos(np.pi * 0.2))),
                         (9, 0.4 - 0.36 * 0.5 * (1 + np.cos(np.pi * 0.9)))):
    assert _decay_after(config, step) == pytest.approx(expected, rel=1e-5), step


def test_weight_decay_is_constant_by_default():
  config = _adamw(-1.0)
  assert [_decay_after(config, s) for s in (0, 5, 9)] == pytest.approx([0.04] * 3, rel=1e-5)


def test_weight_decay_end_with_another_optimizer_is_a_user_error():
  config = _adamw(0.4)
  config.name = "lars"
  with pytest.raises(errors.UserError, match="weight_decay_end"):
    optim.create_optimizer(config, 256, 10)

"""Optimizers (SGD, LARS, AdamW) and the warmup + cosine learning-rate schedule."""
from __future__ import annotations

import re

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from medssl_jax import errors

OPTIMIZERS = ("sgd", "lars", "adamw")


def learning_rate(optim_config: ml_collections.ConfigDict, batch_size: int) -> float:
  """Peak learning rate: base_lr scaled by the global batch as SimCLR does (linear or sqrt)."""
  scaling = optim_config.lr_scaling
  if scaling == "linear":
    return optim_config.base_lr * batch_size / 256
  if scaling == "sqrt":
    return optim_config.base_lr * (batch_size ** 0.5)
  if scaling == "none":
    return optim_config.base_lr
  raise errors.UserError(f"unknown optim.lr_scaling {scaling!r}; known: linear, sqrt, none")


def warmup_cosine(peak_lr: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak_lr, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=0.0)


def decay_mask(params):
  """True for weights that get weight decay and LARS adaptation: not biases nor norm params.

  Kernels of convolutions and dense layers are the only parameters with ndim > 1.
  """
  return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def trainable_labels(pattern: str):
  """Labels each parameter 'train' if its path ("projector/Dense_1/kernel") matches `pattern`."""
  regex = re.compile(pattern)

  def labels(params):
    flat = flax.traverse_util.flatten_dict(params, sep="/")
    return flax.traverse_util.unflatten_dict(
        {path: "train" if regex.fullmatch(path) else "freeze" for path in flat}, sep="/")
  return labels


def create_optimizer(optim_config: ml_collections.ConfigDict, batch_size: int,
                     total_steps: int) -> optax.GradientTransformation:
  optimizer = _base_optimizer(optim_config, batch_size, total_steps)
  if optim_config.trainable:
    # Frozen parameters get zero updates (t-SimCNE's stage 2 trains only the 2-D output layer).
    optimizer = optax.multi_transform({"train": optimizer, "freeze": optax.set_to_zero()},
                                      trainable_labels(optim_config.trainable))
  return optimizer


def lr_schedule(optim_config: ml_collections.ConfigDict, batch_size: int,
                total_steps: int) -> optax.Schedule:
  """The learning-rate schedule create_optimizer's optimizer follows (the loop logs it)."""
  return warmup_cosine(learning_rate(optim_config, batch_size), optim_config.warmup_steps,
                       total_steps)


def weight_decay_schedule(optim_config, total_steps):
  """AdamW's weight decay: constant, or a cosine from weight_decay to weight_decay_end over
  the run (DINO's 0.04 -> 0.4) when weight_decay_end >= 0."""
  end = optim_config.get("weight_decay_end", -1)
  if end < 0:
    return optim_config.weight_decay
  start = optim_config.weight_decay

  def schedule(count):
    progress = jnp.minimum(count, total_steps) / max(total_steps, 1)
    return end + (start - end) * 0.5 * (1 + jnp.cos(jnp.pi * progress))
  return schedule


def _base_optimizer(optim_config, batch_size, total_steps) -> optax.GradientTransformation:
  schedule = lr_schedule(optim_config, batch_size, total_steps)
  name = optim_config.name
  if name != "adamw" and optim_config.get("weight_decay_end", -1) >= 0:
    raise errors.UserError(f"optim.weight_decay_end is for optim.name=adamw, not {name!r}")
  if name == "sgd":
    return optax.chain(
        optax.add_decayed_weights(optim_config.weight_decay, mask=decay_mask),
        optax.sgd(schedule, momentum=optim_config.momentum, nesterov=False))
  if name == "lars":
    return optax.lars(schedule, weight_decay=optim_config.weight_decay,
                      weight_decay_mask=decay_mask, trust_coefficient=optim_config.trust_coefficient,
                      trust_ratio_mask=decay_mask, momentum=optim_config.momentum)
  if name == "adamw":
    return optax.adamw(schedule, weight_decay=weight_decay_schedule(optim_config, total_steps),
                       mask=decay_mask)
  raise errors.UserError(f"unknown optim.name {name!r}; known: {OPTIMIZERS}")


def schedule_count(opt_state) -> jax.Array:
  """The step count of the learning-rate schedule inside `opt_state` (optax's
  ScaleByScheduleState): the count the next update's learning rate is taken at."""
  is_schedule = lambda x: isinstance(x, optax.ScaleByScheduleState)  # noqa: E731
  found = [s for s in jax.tree_util.tree_leaves(opt_state, is_leaf=is_schedule) if is_schedule(s)]
  if not found:
    raise ValueError("the optimizer has no learning-rate schedule")
  return found[0].count

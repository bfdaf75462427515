"""The train state and the one jitted optax step, shared by pretraining and fine-tuning.

A step is a pure function of (state, batch, base key): its randomness comes from
`fold_in(base_key, state.step)`, so a resumed run repeats exactly what an uninterrupted one
does. What differs between pretraining and fine-tuning is passed in: `prepare` (on-device
augmentation of the batch, outside the gradient) and `loss_fn`.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from medssl_jax.loop import optim
from medssl_jax.loop import sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  extra: Any  # what a method carries between steps (EMA target, queue); {} when nothing
  probe: Any = None  # the online probe's state (loop/online_probe.py); None when off

  @classmethod
  def create(cls, params, batch_stats, optimizer: optax.GradientTransformation,
             extra: Any = None, probe: Any = None) -> TrainState:
    return cls(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
               opt_state=optimizer.init(params), extra={} if extra is None else extra,
               probe=probe)


# prepare(batch, key) -> inputs;
# loss_fn(params, batch_stats, extra, inputs, step) -> (loss, (metrics, batch_stats, extra)).
Prepare = Callable[[Any, jax.Array], Any]
LossFn = Callable[..., tuple[jax.Array, tuple[dict, Any, Any]]]


def _all_finite(tree) -> jax.Array:
  finite = jnp.array(True)
  for leaf in jax.tree_util.tree_leaves(tree):
    if jnp.issubdtype(leaf.dtype, jnp.inexact):
      finite = finite & jnp.all(jnp.isfinite(leaf))
  return finite


def train_step(state: TrainState, batch, base_key: jax.Array, *, prepare: Prepare,
               loss_fn: LossFn, optimizer: optax.GradientTransformation,
               schedule: optax.Schedule | None = None, skip_nonfinite: bool = False
               ) -> tuple[TrainState, dict]:
  """One optax update of `state.params` on `loss_fn(prepare(batch, key))`.

  Returns the new state and the loss's metrics plus the global norms of grads, params and
  updates, `finite` (False when the loss, a gradient or the new state is NaN/inf) and, given
  the optimizer's `schedule`, the learning rate this update used. With `skip_nonfinite` a
  non-finite step leaves params, optimizer and method state as they were (only the step
  counter advances, so the next step sees the next batch and key).
  """
  key = jax.random.fold_in(base_key, state.step)
  inputs = prepare(batch, key)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (loss, (metrics, batch_stats, extra)), grads = grad_fn(
      state.params, state.batch_stats, state.extra, inputs, state.step)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  grad_norm = optax.tree_utils.tree_norm(grads)
  param_norm = optax.tree_utils.tree_norm(params)
  finite = (jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
            & _all_finite((batch_stats, extra)))
  metrics = dict(metrics, grad_norm=grad_norm, param_norm=param_norm,
                 update_norm=optax.tree_utils.tree_norm(updates), finite=finite)
  if schedule is not None:
    metrics["lr"] = schedule(optim.schedule_count(state.opt_state))
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state, extra=extra)
  if skip_nonfinite:
    kept = state.replace(step=state.step + 1)
    new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old), new_state, kept)
  return new_state, metrics


def jit_train_step(mesh, *, prepare: Prepare, loss_fn: LossFn,
                   optimizer: optax.GradientTransformation):
  """train_step jitted over `mesh`: state and key replicated, every array of the batch sharded
  on the data axis, the state donated."""
  step_fn = functools.partial(train_step, prepare=prepare, loss_fn=loss_fn, optimizer=optimizer)
  replicated, batched = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  return jax.jit(step_fn, in_shardings=(replicated, batched, replicated),
                 out_shardings=(replicated, replicated), donate_argnums=(0,))

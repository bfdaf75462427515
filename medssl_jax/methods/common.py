"""Pieces several methods share: normalising, cosine similarity, both views in one forward
pass, and the exponential moving average of a target network."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def l2_normalize(x, eps=1e-12):
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))


def cosine_similarity(a, b, eps=1e-12):
  """Row-wise cosine similarity of (N, D) arrays, in float32."""
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  squared_a = jnp.maximum(jnp.sum(a * a, axis=-1), eps)
  squared_b = jnp.maximum(jnp.sum(b * b, axis=-1), eps)
  return jnp.sum(a * b, axis=-1) * jax.lax.rsqrt(squared_a * squared_b)


def apply_to_views(model, params, batch_stats, view1, view2, **kwargs):
  """Runs `model` in train mode on both views as one batch of 2N, so BatchNorm statistics
  span all 2N images. Returns (the model's outputs, each split into (view1, view2) halves,
  new batch_stats)."""
  views = jnp.concatenate([view1, view2], axis=0)
  outputs, updates = model.apply({"params": params, "batch_stats": batch_stats}, views,
                                 train=True, mutable=["batch_stats"], **kwargs)
  halves = jax.tree_util.tree_map(lambda x: tuple(jnp.split(x, 2, axis=0)), outputs)
  return halves, updates["batch_stats"]


def ema(target, online, momentum):
  """momentum * target + (1 - momentum) * online, leaf by leaf (optax.incremental_update);
  no gradient flows through it."""
  return jax.lax.stop_gradient(optax.incremental_update(online, target, 1.0 - momentum))


def fresh_copy(tree):
  """Real copies: a target network must not share buffers with the online parameters, which
  the jitted step donates."""
  return jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), tree)

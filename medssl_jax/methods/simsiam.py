"""SimSiam: a Siamese network without negatives, momentum encoder or large batches (Chen & He,
2021).

Each view goes through backbone -> projector (3-layer MLP, BN on its output) -> predictor (a
2-layer bottleneck MLP). The predictor of one view regresses the projection of the other,
whose gradient is stopped:

  L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2,   D(p, z) = -cos(p, z).

The stop-gradient is what prevents collapse; the collapse monitors (embedding_std near
1/sqrt(d)) show whether it holds.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from medssl_jax.methods import monitors
from medssl_jax.models import encoder as encoder_lib


def predictor_hidden_dim(config: ml_collections.ConfigDict) -> int:
  # 0 keeps the paper's bottleneck ratio (2048 -> 512) whatever model.projector_dim is.
  return config.simsiam.predictor_hidden_dim or max(config.model.projector_dim // 4, 1)


def create_model(config: ml_collections.ConfigDict) -> encoder_lib.EncoderWithPredictor:
  # BN on the projector's output is part of SimSiam's recipe (the paper's Table 3: 68.1%
  # with it, 67.4% with BN on hidden layers only).
  return encoder_lib.create_encoder_with_predictor(config.model, predictor_hidden_dim=predictor_hidden_dim(config),
                        projector_output_norm=True)


def init_extra_state(variables, config):
  del variables, config
  return {}


def cosine_similarity(a, b, eps=1e-12):
  """Row-wise cosine similarity of (N, D) arrays, in float32."""
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  squared_a = jnp.maximum(jnp.sum(a * a, axis=-1), eps)
  squared_b = jnp.maximum(jnp.sum(b * b, axis=-1), eps)
  return jnp.sum(a * b, axis=-1) * jax.lax.rsqrt(squared_a * squared_b)


def negative_cosine(p, z):
  """D(p, z) = -mean cos(p, sg(z)): only the prediction p receives a gradient."""
  return -jnp.mean(cosine_similarity(p, jax.lax.stop_gradient(z)))


def simsiam_loss(p1, p2, z1, z2):
  """The symmetric loss D(p1, z2) / 2 + D(p2, z1) / 2, in [-1, 1]."""
  return 0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)


def loss_fn(params, batch_stats, extra, view1, view2, rng, step, *, model, config):
  """Returns (loss, (metrics, new_batch_stats, new_extra))."""
  del rng, step, config
  # One forward pass over both views: BatchNorm statistics span all 2N images, as in SimCLR.
  views = jnp.concatenate([view1, view2], axis=0)
  (_, projections, predictions), updates = model.apply(
      {"params": params, "batch_stats": batch_stats}, views, train=True, mutable=["batch_stats"])
  z1, z2 = jnp.split(projections, 2, axis=0)
  p1, p2 = jnp.split(predictions, 2, axis=0)
  loss = simsiam_loss(p1, p2, z1, z2)
  metrics = {"loss": loss, **monitors.collapse_metrics(z1)}
  return loss, (metrics, updates["batch_stats"], extra)

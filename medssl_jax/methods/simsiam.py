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

from medssl_jax.methods import base
from medssl_jax.methods import common
from medssl_jax.methods import monitors
from medssl_jax.models import encoder as encoder_lib


def predictor_hidden_dim(config: ml_collections.ConfigDict) -> int:
  # 0 keeps the paper's bottleneck ratio (2048 -> 512) whatever model.projector_dim is.
  return config.simsiam.predictor_hidden_dim or max(config.model.projector_dim // 4, 1)


def negative_cosine(p, z):
  """D(p, z) = -mean cos(p, sg(z)): only the prediction p receives a gradient."""
  return -jnp.mean(common.cosine_similarity(p, jax.lax.stop_gradient(z)))


def simsiam_loss(p1, p2, z1, z2):
  """The symmetric loss D(p1, z2) / 2 + D(p2, z1) / 2, in [-1, 1]."""
  return 0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)


class SimSiam(base.Method):
  section = "simsiam"
  structural_keys = ("predictor_hidden_dim",)

  def defaults(self) -> ml_collections.ConfigDict:
    # 0 = model.projector_dim // 4 (the paper's 2048 -> 512)
    return ml_collections.ConfigDict({"predictor_hidden_dim": 0})

  def create_model(self, config: ml_collections.ConfigDict) -> encoder_lib.EncoderWithPredictor:
    # BN on the projector's output is part of SimSiam's recipe (the paper's Table 3: 68.1%
    # with it, 67.4% with BN on hidden layers only).
    return encoder_lib.create_encoder_with_predictor(
        config.model, predictor_hidden_dim=predictor_hidden_dim(config), projector_output_norm=True)

  def loss_fn(self, params, batch_stats, extra, view1, view2, rng, step, *, model, config):
    del rng, step, config
    # One forward pass over both views: BatchNorm statistics span all 2N images, as in SimCLR.
    (_, (z1, z2), (p1, p2)), batch_stats = common.apply_to_views(
        model, params, batch_stats, view1, view2)
    loss = simsiam_loss(p1, p2, z1, z2)
    metrics = {"loss": loss, **monitors.collapse_metrics(z1)}
    return loss, (metrics, batch_stats, extra)

"""t-SimCNE (Böhm, Berens & Kobak, ICLR 2023): contrastive learning straight into 2-D.

InfoNCE with the Cauchy similarity 1 / (1 + |z_i - z_j|^2) on Euclidean distances instead
of a temperature-scaled cosine. The recipe has three stages, each an ordinary run of the
training loop (see configs/tsimcne_bloodmnist.py and launch/tsimcne_bloodmnist.sh):
  1. pretrain with a 128-D output (model.projector_dim=128);
  2. replace the output layer by a 2-D linear layer (model.projector_dim=2, init from stage 1:
     the mismatched output layer keeps its fresh weights) and train only it
     (optim.trainable="projector/Dense_1/.*");
  3. train everything (init from stage 2).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from medssl_jax.methods import base
from medssl_jax.methods import common
from medssl_jax.methods import monitors
from medssl_jax.models import encoder as encoder_lib


def cauchy_info_nce(z1, z2):
  """Mean over the 2N embeddings of -log(sim(i, partner) / sum_{k != i} sim(i, k))."""
  n = z1.shape[0]
  z = jnp.concatenate([z1, z2], axis=0).astype(jnp.float32)
  squared = jnp.sum(z * z, axis=-1)
  distances = jnp.maximum(squared[:, None] + squared[None, :] - 2.0 * z @ z.T, 0.0)
  log_similarity = -jnp.log1p(distances)
  log_similarity = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, log_similarity)
  partners = jnp.concatenate([jnp.arange(n) + n, jnp.arange(n)])
  positive = jnp.take_along_axis(log_similarity, partners[:, None], axis=-1)[:, 0]
  return jnp.mean(jax.nn.logsumexp(log_similarity, axis=-1) - positive)


class TSimCNE(base.Method):
  """t-SimCNE's Cauchy InfoNCE; it has no keys of its own (the output size is
  model.projector_dim)."""
  section = "tsimcne"

  def create_model(self, config):
    return encoder_lib.create_encoder(config.model)

  def loss_fn(self, params, batch_stats, extra, view1, view2, rng, step, *, model, config):
    del rng, step, config
    (_, (z1, z2)), batch_stats = common.apply_to_views(model, params, batch_stats, view1, view2)
    loss = cauchy_info_nce(z1, z2)
    metrics = {"loss": loss, **monitors.collapse_metrics(z1)}
    return loss, (metrics, batch_stats, extra)

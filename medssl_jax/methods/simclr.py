"""SimCLR: NT-Xent over the whole global batch (Chen et al., 2020).

Both views go through the encoder as one batch so BatchNorm sees all 2N images. Under
`jax.jit` over a mesh the arrays are global, so the 2N x 2N similarity matrix spans every
device's examples: negatives come from the whole global batch with no explicit gather.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from medssl_jax.methods import base
from medssl_jax.methods import common
from medssl_jax.methods import monitors
from medssl_jax.models import encoder as encoder_lib

# A large finite value rather than -inf keeps gradients NaN-free in the masked entries.
_MASK_VALUE = -1e9


def nt_xent(z1, z2, temperature):
  """Normalized-temperature cross entropy for N positive pairs (z1[i], z2[i]).

  Each of the 2N embeddings is classified against the other 2N-1; its positive is its
  partner view. Returns (mean loss, top-1 accuracy of picking the positive).
  """
  n = z1.shape[0]
  z = common.l2_normalize(jnp.concatenate([z1, z2], axis=0).astype(jnp.float32))
  logits = z @ z.T / temperature
  logits = jnp.where(jnp.eye(2 * n, dtype=bool), _MASK_VALUE, logits)
  positives = jnp.concatenate([jnp.arange(n) + n, jnp.arange(n)])
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  loss = -jnp.mean(jnp.take_along_axis(log_probs, positives[:, None], axis=-1))
  accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == positives)
  return loss, accuracy


class SimCLR(base.Method):
  """SimCLR; MICLe is this method with data.pairing="patient"."""
  section = "simclr"

  def defaults(self) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"temperature": 0.1})

  def create_model(self, config: ml_collections.ConfigDict):
    return encoder_lib.create_encoder(config.model)

  def loss_fn(self, params, batch_stats, extra, view1, view2, rng, step, *, model, config):
    del rng, step
    (_, (z1, z2)), batch_stats = common.apply_to_views(model, params, batch_stats, view1, view2)
    loss, accuracy = nt_xent(z1, z2, config.simclr.temperature)
    metrics = {"loss": loss, "contrastive_accuracy": accuracy, **monitors.collapse_metrics(z1)}
    return loss, (metrics, batch_stats, extra)

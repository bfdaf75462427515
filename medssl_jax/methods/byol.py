"""BYOL: bootstrap your own latent (Grill et al., 2020).

An online network (backbone -> projector -> predictor), trained by the optimizer, predicts
the projection of the other view made by a target network (backbone -> projector) whose
weights are an exponential moving average of the online ones:

  L = |q1/|q1| - z2'/|z2'||^2 + |q2/|q2| - z1'/|z1'||^2 = 4 - 2 cos(q1, z2') - 2 cos(q2, z1'),
  target <- tau * target + (1 - tau) * online,   tau rising from tau_base to 1 on a cosine.

The target lives in `extra` as {"params", "batch_stats"} and is updated here with plain pytree
arithmetic (common.ema), never by the optimizer. Following the method interface it follows the online
parameters passed into this step (the reference implementation uses those after this step's
update: a lag of one step, negligible at tau >= 0.99).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from medssl_jax.methods import base
from medssl_jax.methods import common
from medssl_jax.methods import monitors
from medssl_jax.models import encoder as encoder_lib

# The online network's modules that the target network copies (it has no predictor).
TARGET_MODULES = ("backbone", "projector")


def predictor_hidden_dim(config: ml_collections.ConfigDict) -> int:
  # 0 = as wide as the projector's hidden layer, the paper's 4096 -> 4096 -> 256.
  return config.byol.predictor_hidden_dim or config.model.projector_hidden_dim


def _target_subset(tree) -> dict:
  return {name: common.fresh_copy(tree[name]) for name in TARGET_MODULES if name in tree}


def target_momentum(step, num_steps, tau_base):
  """tau(k) = 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2: tau_base at k = 0, 1 at k = K."""
  num_steps = max(int(num_steps), 1)
  progress = jnp.minimum(jnp.asarray(step, jnp.float32), num_steps) / num_steps
  return 1.0 - (1.0 - tau_base) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0


def regression_loss(q, z):
  """Mean over the batch of the normalised MSE 2 - 2 cos(q, sg(z)); only q gets a gradient."""
  return jnp.mean(2.0 - 2.0 * common.cosine_similarity(q, jax.lax.stop_gradient(z)))


def byol_loss(q1, q2, z1_target, z2_target):
  """Symmetric BYOL loss: each view's online prediction regresses the other's target
  projection. In [0, 8]."""
  return regression_loss(q1, z2_target) + regression_loss(q2, z1_target)


class BYOL(base.Method):
  section = "byol"
  structural_keys = ("predictor_hidden_dim",)

  def defaults(self) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "tau_base": 0.996,           # target momentum at step 0; rises to 1 on a cosine
        "predictor_hidden_dim": 0,   # 0 = model.projector_hidden_dim (the paper's 4096)
    })

  def create_model(self, config: ml_collections.ConfigDict) -> encoder_lib.EncoderWithPredictor:
    return encoder_lib.create_encoder_with_predictor(
        config.model, predictor_hidden_dim=predictor_hidden_dim(config), projector_output_norm=False)

  def init_extra_state(self, variables, config) -> dict:
    """The target network starts as a copy of the online backbone and projector."""
    del config
    return {"params": _target_subset(variables["params"]),
            "batch_stats": _target_subset(variables.get("batch_stats", {}))}

  def loss_fn(self, params, batch_stats, extra, view1, view2, rng, step, *, model, config):
    """new_extra holds the updated target."""
    del rng
    # One forward pass per network over both views: BatchNorm statistics span all 2N images.
    (_, (z1, _), (q1, q2)), batch_stats = common.apply_to_views(
        model, params, batch_stats, view1, view2)

    # The target runs in train mode, normalising with batch statistics as the reference does,
    # and keeps its own updated running averages: they then match the target's (EMA) weights,
    # which the online network's statistics would not. Nothing downstream reads them during
    # training.
    target = jax.lax.stop_gradient(extra)
    (_, (z1_target, z2_target)), target_batch_stats = common.apply_to_views(
        model, target["params"], target["batch_stats"], view1, view2,
        method=encoder_lib.EncoderWithPredictor.project)
    loss = byol_loss(q1, q2, jax.lax.stop_gradient(z1_target), jax.lax.stop_gradient(z2_target))

    tau = target_momentum(step, config.num_steps, config.byol.tau_base)
    online = {name: params[name] for name in TARGET_MODULES}
    new_extra = {"params": common.ema(target["params"], online, tau),
                 "batch_stats": target_batch_stats}
    metrics = {"loss": loss, "tau": tau, **monitors.collapse_metrics(z1)}
    return loss, (metrics, batch_stats, new_extra)

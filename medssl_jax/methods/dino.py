"""DINO: self-distillation with no labels (Caron et al., 2021).

A student (backbone -> DINO head), trained by the optimizer, matches the output
distribution of a teacher of the same architecture whose weights are an exponential moving
average of the student's (momentum rising from dino.momentum_teacher to 1 on a cosine):

  P_t = softmax((g_t(x) - c) / tau_t),  P_s = softmax(g_s(x') / tau_s),
  L = mean over pairs (teacher global view i, student view v != i) of mean_batch -sum P_t log P_s.

The teacher sees the 2 global views, the student those and dino.local_crops local views
(multicrop.py, made in the same jitted step, with the dino.*_policy policies: DINO does not
read config.augment.policy; the global views' size is config.augment.size). The center c is
an EMA (dino.center_momentum) of the teacher's mean output over the global batch; centering
and the sharp teacher temperature (warmed up linearly from warmup_teacher_temp) keep the
outputs from collapsing.

The head is DINO's: an MLP with GELU to a bottleneck, l2-normalised, then a weight-
normalised linear layer to dino.out_dim (its norm fixed to 1 with norm_last_layer), which
may be frozen for the first dino.freeze_last_layer_steps. With dino.head_bn (DINO's
use_bn_in_head) a BatchNorm follows each hidden layer; student and teacher both normalise
with the statistics of their own batch (the teacher's: the global views), as in DINO.
Each parameter's gradient is clipped to norm dino.clip_grad as in DINO's code (per tensor,
not globally).

`extra` holds the teacher {"params", "batch_stats"} and the center. As in BYOL here, the
teacher follows the student parameters passed into this step (DINO uses those after the
step: a lag of one step). The teacher runs without stochastic depth, as in DINO. DINO's
weight-decay schedule (0.04 -> 0.4, cosine) is the optimizer's: optim.weight_decay and
optim.weight_decay_end with optim.name=adamw (loop/optim.py).

Collapse monitors: the teacher's output entropy (log K when every output is uniform, 0 when
one dimension dominates) and the KL divergence of the teacher's uncentred output from the
center's softmax (0 when every image gives the same output), with the shared ones of
monitors.py on the student's backbone features of global view 1.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from medssl_jax import errors
from medssl_jax import multicrop
from medssl_jax.methods import base
from medssl_jax.methods import byol
from medssl_jax.methods import common
from medssl_jax.methods import monitors
from medssl_jax.models import encoder as encoder_lib
from medssl_jax.models import vit

STUDENT_MODULES = ("backbone", "projector")   # what the teacher copies
LAST_LAYER = ("last_layer", "last_layer_scale")  # the head's parameters that may be frozen


class DINOHead(nn.Module):
  """MLP (GELU) -> bottleneck -> l2-normalise -> weight-normalised linear layer to out_dim."""
  hidden_dim: int = 2048
  bottleneck_dim: int = 256
  out_dim: int = 65536
  num_layers: int = 3
  norm_last_layer: bool = True   # the last layer's norm fixed to 1 (no learned scale)
  use_bn: bool = False           # BatchNorm after each hidden layer (DINO's use_bn_in_head)
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    dense = functools.partial(nn.Dense, dtype=self.dtype, kernel_init=nn.initializers.truncated_normal(0.02))
    x = x.astype(self.dtype)
    for _ in range(self.num_layers - 1):
      x = dense(self.hidden_dim)(x)
      if self.use_bn:  # torch's BatchNorm1d: momentum 0.1 (flax 0.9), eps 1e-5
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype)(x)
      x = nn.gelu(x, approximate=False)
    x = common.l2_normalize(dense(self.bottleneck_dim)(x).astype(jnp.float32))
    direction = self.param("last_layer", nn.initializers.lecun_normal(), (self.bottleneck_dim, self.out_dim))
    weight = common.l2_normalize(direction.T).T  # each output unit's weight vector has norm 1
    if not self.norm_last_layer:
      weight = weight * self.param("last_layer_scale", nn.initializers.ones, (self.out_dim,))
    return x @ weight


class DINOModel(nn.Module):
  """backbone -> DINO head; `features` and `head` run the two halves (multi-crop runs the
  backbone once per view size and the head once over all views, as DINO's wrapper does)."""
  backbone: nn.Module
  projector: nn.Module

  def __call__(self, images, train: bool = True):
    """Returns (pooled backbone features, head output)."""
    features = self.backbone(images, train=train)
    return features, self.projector(features, train=train)

  def features(self, images, train: bool = True):
    return self.backbone(images, train=train)

  def head(self, features, train: bool = True):
    return self.projector(features, train=train)


def dino_loss(student_out, teacher_out, center, student_temp, teacher_temp):
  """student_out (V, B, K) for V views (the 2 globals first), teacher_out (2, B, K): the
  cross-entropy of each teacher global view's centred, sharpened softmax against the
  student's log-softmax of every other view, averaged over pairs and the batch."""
  student_log_p = jax.nn.log_softmax(student_out.astype(jnp.float32) / student_temp, axis=-1)
  teacher_p = jax.nn.softmax((teacher_out.astype(jnp.float32) - center) / teacher_temp, axis=-1)
  teacher_p = jax.lax.stop_gradient(teacher_p)
  cross = -jnp.einsum("tbk,sbk->tsb", teacher_p, student_log_p).mean(axis=-1)  # (2, V)
  num_teacher, num_student = cross.shape
  other_view = jnp.arange(num_teacher)[:, None] != jnp.arange(num_student)[None, :]
  return jnp.sum(jnp.where(other_view, cross, 0.0)) / jnp.sum(other_view)


def update_center(center, teacher_out, momentum):
  """center <- m center + (1 - m) mean of the teacher's outputs over views and the batch."""
  batch_center = jnp.mean(teacher_out.astype(jnp.float32).reshape(-1, teacher_out.shape[-1]), axis=0)
  return jax.lax.stop_gradient(momentum * center + (1.0 - momentum) * batch_center)


def teacher_temperature(step, warmup_temp, temp, warmup_steps):
  """Linear from warmup_temp at step 0 to temp at warmup_steps, then constant."""
  if warmup_steps <= 0:
    return jnp.float32(temp)
  progress = jnp.minimum(jnp.asarray(step, jnp.float32) / warmup_steps, 1.0)
  return warmup_temp + (temp - warmup_temp) * progress


def collapse_monitors(teacher_out, center, teacher_temp) -> dict:
  """Teacher output entropy (and its maximum log K) and KL(teacher softmax || center softmax)."""
  teacher_out = jax.lax.stop_gradient(teacher_out.astype(jnp.float32)).reshape(-1, teacher_out.shape[-1])
  log_p = jax.nn.log_softmax((teacher_out - center) / teacher_temp, axis=-1)
  log_uncentred = jax.nn.log_softmax(teacher_out / teacher_temp, axis=-1)
  log_center = jax.nn.log_softmax(center / teacher_temp)
  return {
      "teacher_entropy": jnp.mean(-jnp.sum(jnp.exp(log_p) * log_p, axis=-1)),
      "teacher_entropy_max": jnp.log(jnp.float32(teacher_out.shape[-1])),
      "kl_teacher_to_center": jnp.mean(jnp.sum(jnp.exp(log_uncentred) * (log_uncentred - log_center), -1)),
  }


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def clip_gradients(params, max_norm: float):
  """Identity on the parameters whose backward pass scales each tensor's gradient down to
  norm max_norm, as DINO's clip_gradients does (factor max_norm / (norm + 1e-6) when < 1)."""
  return params


def _clip_forward(params, max_norm):
  return params, None


def _clip_backward(max_norm, _, grads):
  def clip(g):
    factor = max_norm / (jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32)))) + 1e-6)
    return (g * jnp.minimum(factor, 1.0)).astype(g.dtype)
  return (jax.tree_util.tree_map(clip, grads),)


clip_gradients.defvjp(_clip_forward, _clip_backward)


def freeze_last_layer(params, step, freeze_steps):
  """params with no gradient into the head's last layer while step < freeze_steps."""
  if freeze_steps <= 0:
    return params
  frozen = jnp.asarray(step) < freeze_steps
  head = {name: jnp.where(frozen, jax.lax.stop_gradient(value), value) if name in LAST_LAYER else value
          for name, value in params["projector"].items()}
  return dict(params, projector=head)


def _apply(model, params, batch_stats, inputs, method, rng=None):
  """One train-mode call of `method`; returns (output, updated batch_stats)."""
  rngs = {"dropout": rng} if rng is not None else {}
  out, updates = model.apply({"params": params, "batch_stats": batch_stats}, inputs, train=True,
                             mutable=["batch_stats"], method=method, rngs=rngs)
  return out, updates.get("batch_stats", batch_stats)


def forward(model, params, batch_stats, global_views, local_views, rng=None):
  """Head outputs (V, B, K) of the global (2, B, ...) and local (N, B, ...) views, the
  backbone's features of the globals, and the updated batch_stats."""
  num_global, batch = global_views.shape[:2]
  rng_global, rng_local = jax.random.split(rng) if rng is not None else (None, None)
  global_features, batch_stats = _apply(model, params, batch_stats, global_views.reshape(
      -1, *global_views.shape[2:]), DINOModel.features, rng_global)
  features = global_features
  if local_views.shape[0]:
    local_features, batch_stats = _apply(model, params, batch_stats, local_views.reshape(
        -1, *local_views.shape[2:]), DINOModel.features, rng_local)
    features = jnp.concatenate([global_features, local_features])
  out, batch_stats = _apply(model, params, batch_stats, features, DINOModel.head)
  return out.reshape(num_global + local_views.shape[0], batch, -1), global_features, batch_stats


class DINO(base.Method):
  section = "dino"
  structural_keys = ("out_dim", "hidden_dim", "bottleneck_dim", "head_layers", "norm_last_layer",
                     "head_bn")

  def defaults(self) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        # The head (model.projector_* are not used by DINO).
        "out_dim": 65536,
        "hidden_dim": 2048,
        "bottleneck_dim": 256,
        "head_layers": 3,
        "norm_last_layer": True,
        "head_bn": False,                # BatchNorm in the head's MLP (DINO's use_bn_in_head)
        "freeze_last_layer_steps": 0,    # DINO: one epoch
        # Temperatures, center and teacher.
        "student_temp": 0.1,
        "teacher_temp": 0.04,            # DINO: 0.04, up to 0.07 for ViT-S/16 (after warm-up)
        "warmup_teacher_temp": 0.04,
        "warmup_teacher_temp_steps": 0,  # DINO: 30 epochs
        "center_momentum": 0.9,
        "momentum_teacher": 0.996,       # at step 0; rises to 1 on a cosine
        "clip_grad": 3.0,                # per-tensor gradient norm; 0 = off
        # Multi-crop: 2 global views at augment.size, local_crops views at local_size.
        "local_crops": 8,
        "local_size": 96,
        "global_scale": multicrop.GLOBAL_SCALE,
        "local_scale": multicrop.LOCAL_SCALE,
        "global_policy1": "dino_global1",
        "global_policy2": "dino_global2",
        "local_policy": "dino_local",
    })

  def check_config(self, config: ml_collections.ConfigDict) -> None:
    dino = config.dino
    self.policies(config)  # unknown names and bad scales, before anything is written
    if dino.local_crops < 0 or (dino.local_crops and not 0 < dino.local_size <= config.augment.size):
      raise errors.UserError(f"dino.local_crops={dino.local_crops} must be >= 0 and dino.local_size="
                             f"{dino.local_size} in (0, augment.size={config.augment.size}]")
    if config.model.name in vit.ARCHITECTURES:
      sizes = {"augment.size": config.augment.size}
      if dino.local_crops:
        sizes["dino.local_size"] = dino.local_size
      for key, size in sizes.items():
        if size % config.model.patch_size:
          raise errors.UserError(f"{key}={size} is not a multiple of "
                                 f"model.patch_size={config.model.patch_size}")
    if min(dino.student_temp, dino.teacher_temp, dino.warmup_teacher_temp) <= 0:
      raise errors.UserError("dino temperatures must be > 0")

  def policies(self, config) -> tuple[tuple, tuple, tuple]:
    dino = config.dino
    global_policies = tuple(multicrop.with_crop_scale(multicrop.get_policy(name), dino.global_scale)
                            for name in (dino.global_policy1, dino.global_policy2))
    return global_policies + (multicrop.with_crop_scale(multicrop.get_policy(dino.local_policy),
                                                        dino.local_scale),)

  def create_model(self, config: ml_collections.ConfigDict) -> DINOModel:
    dino = config.dino
    head = DINOHead(hidden_dim=dino.hidden_dim, bottleneck_dim=dino.bottleneck_dim, out_dim=dino.out_dim,
                    num_layers=dino.head_layers, norm_last_layer=dino.norm_last_layer,
                    use_bn=dino.head_bn, dtype=encoder_lib.DTYPES.get(config.model.dtype, jnp.float32))
    return DINOModel(backbone=encoder_lib.create_backbone(config.model), projector=head)

  def teacher_model(self, config) -> DINOModel:
    """The student's network without stochastic depth."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.drop_path = 0.0
    return self.create_model(config)

  def init_extra_state(self, variables, config) -> dict:
    """Teacher = copy of the student; center = 0."""
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    teacher_stats = {m: batch_stats[m] for m in STUDENT_MODULES if m in batch_stats}
    return {"params": {m: common.fresh_copy(params[m]) for m in STUDENT_MODULES},
            "batch_stats": common.fresh_copy(teacher_stats),
            "center": jnp.zeros((config.dino.out_dim,), jnp.float32)}

  def make_views(self, batch, key, config):
    """view1: the 2 global views (2, B, G, G, C); view2: the local views (N, B, L, L, C)."""
    global1, global2, local = self.policies(config)
    images = batch["view1"]
    key_views, key_loss = jax.random.split(key)
    globals_, locals_ = multicrop.multicrop(
        images, key_views, global_policies=(global1, global2), global_size=config.augment.size,
        local_policy=local, local_size=config.dino.local_size, num_local=config.dino.local_crops,
        images2=batch.get("view2", images))
    return globals_, locals_, key_loss

  def loss_fn(self, params, batch_stats, extra, view1, view2, rng, step, *, model, config):
    dino = config.dino
    student = params
    if dino.clip_grad > 0:
      student = clip_gradients(student, float(dino.clip_grad))
    student = freeze_last_layer(student, step, dino.freeze_last_layer_steps)
    student_out, features, batch_stats = forward(model, student, batch_stats, view1, view2, rng)

    teacher = jax.lax.stop_gradient({"params": extra["params"], "batch_stats": extra["batch_stats"]})
    teacher_out, _, teacher_batch_stats = forward(self.teacher_model(config), teacher["params"],
                                                  teacher["batch_stats"], view1, view2[:0])
    teacher_out = jax.lax.stop_gradient(teacher_out)
    temp = teacher_temperature(step, dino.warmup_teacher_temp, dino.teacher_temp,
                               dino.warmup_teacher_temp_steps)
    loss = dino_loss(student_out, teacher_out, extra["center"], dino.student_temp, temp)

    momentum = byol.target_momentum(step, config.num_steps, dino.momentum_teacher)
    new_extra = {"params": common.ema(teacher["params"], {m: params[m] for m in STUDENT_MODULES}, momentum),
                 "batch_stats": teacher_batch_stats,
                 "center": update_center(extra["center"], teacher_out, dino.center_momentum)}
    metrics = {"loss": loss, "teacher_temp": temp, "teacher_momentum": momentum,
               **collapse_monitors(teacher_out, extra["center"], temp),
               **monitors.collapse_metrics(features[:view1.shape[1]])}
    return loss, (metrics, batch_stats, new_extra)

"""An online linear probe and kNN monitor while pretraining (google simclr's
lineareval_while_pretraining, solo-learn's online linear/kNN), for labelled data.

The probe is a linear classifier on the backbone's pooled features (stop-gradient, eval
mode: no augmentation, running BatchNorm statistics) of each training batch's first images,
updated by its own Adam in its own jitted step after the backbone's, so it never changes the
backbone's gradients or updates. Its state lives in TrainState.probe and is checkpointed
with the rest. Every config.eval_every steps (and at the last step) the run reports the
probe's accuracy and AUROC, and a kNN accuracy (bank: the first images of the training set),
on the first online_probe.eval_images images of the validation split.
"""
from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from medssl_jax import augment
from medssl_jax import errors
from medssl_jax.data import catalog
from medssl_jax.evaluation import features as features_lib
from medssl_jax.evaluation import knn
from medssl_jax.evaluation import metrics as eval_metrics
from medssl_jax.loop import sharding
from medssl_jax.models import encoder


@flax.struct.dataclass
class ProbeState:
  params: Any      # {"kernel": (features, classes), "bias": (classes,)}
  opt_state: Any


def enabled(config) -> bool:
  return bool(config.online_probe.enabled)


def check(config, source) -> None:
  """The probe needs single-label classes on the training split."""
  if not enabled(config):
    return
  if getattr(source, "multi_label", False) or not getattr(source, "num_classes", 0):
    raise errors.UserError("online_probe.enabled needs single-label training data with classes; "
                           f"{config.data.name!r} has none (or is multi-label)")
  if config.eval_every < 0 or config.online_probe.eval_images < 1:
    raise errors.UserError("eval_every must be >= 0 (0 = last step only) and "
                           "online_probe.eval_images >= 1")


def _optimizer(config):
  return optax.adam(config.online_probe.lr)


def _backbone_variables(params, batch_stats):
  return {"params": params["backbone"], "batch_stats": batch_stats.get("backbone", {})}


def backbone_fn(config):
  backbone = encoder.create_backbone(config.model)
  return lambda variables, images: backbone.apply(variables, images, train=False)


def init(config, variables, num_classes: int, channels: int) -> ProbeState:
  """A zero probe on the backbone's feature width (traceable: called inside the state's init)."""
  size = config.augment.size
  dummy = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
  feature = jax.eval_shape(backbone_fn(config), _backbone_variables(
      variables["params"], variables.get("batch_stats", {})), dummy)
  params = {"kernel": jnp.zeros((feature.shape[-1], num_classes), jnp.float32),
            "bias": jnp.zeros((num_classes,), jnp.float32)}
  return ProbeState(params=params, opt_state=_optimizer(config).init(params))


def zero_sums():
  return {"probe_loss": jnp.zeros(()), "probe_train_accuracy": jnp.zeros(()),
          "count": jnp.zeros((), jnp.int32)}


def jit_probe_step(config, mesh):
  """(probe, sums, params, batch_stats, images, labels) -> (probe, sums): one Adam step of the
  probe on stop-gradient features of `images` (uint8), its loss and accuracy added to sums."""
  features_of = backbone_fn(config)
  optimizer = _optimizer(config)
  size, used = config.augment.size, config.online_probe.batch_images

  def step(probe, sums, params, batch_stats, images, labels):
    images, labels = images[:used], labels[:used]
    features = jax.lax.stop_gradient(features_of(
        _backbone_variables(params, batch_stats), augment.preprocess_batch(images, size)))

    def loss_fn(probe_params):
      logits = features @ probe_params["kernel"] + probe_params["bias"]
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits
    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(probe.params)
    updates, opt_state = optimizer.update(grads, probe.opt_state, probe.params)
    probe = ProbeState(params=optax.apply_updates(probe.params, updates), opt_state=opt_state)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    sums = {"probe_loss": sums["probe_loss"] + loss,
            "probe_train_accuracy": sums["probe_train_accuracy"] + accuracy,
            "count": sums["count"] + 1}
    return probe, sums

  replicated, batched = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  return jax.jit(step, in_shardings=(replicated, replicated, replicated, replicated, batched, batched),
                 out_shardings=(replicated, replicated))


class OnlineProbe:
  """The loop's side of the probe: its step after each backbone step, its interval means,
  and the evaluations every config.eval_every steps and at the last."""

  def __init__(self, config, train_source, mesh):
    self._step = jit_probe_step(config, mesh)
    self._zero = jax.device_put(zero_sums(), sharding.replicated(mesh))
    self._sums = self._zero
    self._monitor = Monitor(config, train_source, mesh)
    self._every, self._last = config.eval_every, config.num_steps

  def train(self, state, images, labels):
    probe, self._sums = self._step(state.probe, self._sums, state.params, state.batch_stats,
                                   images, labels)
    return state.replace(probe=probe)

  def interval_scalars(self) -> dict:
    sums, self._sums = jax.device_get(self._sums), self._zero
    count = int(sums["count"])
    return {k: float(v) / count for k, v in sums.items() if k != "count"} if count else {}

  def due(self, step: int) -> bool:
    return step == self._last or bool(self._every and step % self._every == 0)

  def evaluate(self, state) -> dict:
    return self._monitor.evaluate(state)


class _First:
  """The first n records of a source (in source order)."""

  def __init__(self, source, n: int):
    self.source, self.n = source, min(n, len(source))

  def __len__(self):
    return self.n

  def __getitem__(self, index):
    return self.source[index]


class Monitor:
  """Scores the probe and a kNN classifier on the first eval_images validation images."""

  def __init__(self, config, train_source, mesh):
    n = config.online_probe.eval_images
    self.val = _First(catalog.open_data(config.data, config.online_probe.eval_split), n)
    self.bank = _First(train_source, n)
    self.val_labels = np.asarray(self.val.source.labels[:len(self.val)])
    self.bank_labels = np.asarray(train_source.labels[:len(self.bank)])
    self.config, self.mesh = config, mesh
    self.extract = functools.partial(features_lib.extract_features, backbone_fn(config),
                                     image_size=config.augment.size, batch_size=config.batch_size,
                                     mesh=mesh)

  def evaluate(self, state) -> dict:
    variables = _backbone_variables(state.params, state.batch_stats)
    val_x, bank_x = self.extract(variables, self.val), self.extract(variables, self.bank)
    probe = jax.device_get(state.probe.params)
    logits = val_x @ probe["kernel"] + probe["bias"]
    scores = np.exp(logits - logits.max(-1, keepdims=True))
    scores /= scores.sum(-1, keepdims=True)
    num_classes = scores.shape[-1]
    knn_scores = knn.knn_scores(bank_x, self.bank_labels, val_x, k=min(self.config.online_probe.knn_k,
                                len(self.bank)), num_classes=num_classes)
    out = {"online_probe_accuracy": float(np.mean(scores.argmax(-1) == self.val_labels)),
           "online_knn_accuracy": float(np.mean(np.asarray(knn_scores).argmax(-1) == self.val_labels))}
    try:
      out["online_probe_auroc"] = eval_metrics.auroc(self.val_labels, scores)["auroc"]
    except ValueError:  # one class only in the capped split: AUROC is undefined
      pass
    return out

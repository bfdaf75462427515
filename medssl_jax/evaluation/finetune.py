"""End-to-end fine-tuning with labels: the backbone plus a linear head, all weights trained.

With backbone_variables=None the same network starts from a random initialisation drawn
from the seed: the supervised baseline that pretraining has to beat. Validation AUROC is
measured every `eval_every` steps and the best parameters are the ones scored on the test
split, so the test split never influences any choice.

The step is pretraining's (loop/state.py) with the classifier's loss: one jitted pure
function over the mesh; the global batch is sharded on the data axis (BatchNorm statistics
span all devices), augmentation runs on the device with per-example keys, and the state is
donated.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils

from medssl_jax import augment
from medssl_jax import errors
from medssl_jax.data import pipeline
from medssl_jax.evaluation import features
from medssl_jax.evaluation import metrics
from medssl_jax.loop import optim
from medssl_jax.loop import sharding
from medssl_jax.loop import state as state_lib
from medssl_jax.loop import writers

_WARMUP_FRACTION = 0.1  # of the steps: a short warmup keeps a fresh head from wrecking the features


class Classifier(nn.Module):
  """Backbone and a Dense head; parameters under `backbone` and `head`."""
  backbone: nn.Module
  num_outputs: int

  @nn.compact
  def __call__(self, images, train: bool = True):
    pooled = self.backbone(images, train=train)
    # Zero head: predictions start uniform, so the first updates of a pretrained backbone
    # are not driven by a random head's arbitrary errors.
    return nn.Dense(self.num_outputs, kernel_init=nn.initializers.zeros, dtype=jnp.float32,
                    name="head")(pooled.astype(jnp.float32))


@dataclasses.dataclass
class Fitted:
  """A fine-tuned classifier at its best validation step.

  Attributes:
    model: the Classifier.
    variables: {"params", "batch_stats"} at `best_step`, replicated over the mesh.
    best_step: the step with the best validation AUROC (the last step without validation).
    val_auroc: validation AUROC at `best_step` (NaN if validation is single-class).
    val_curve: every (step, validation AUROC) measured.
    losses: training loss of every step, in order.
    n_train: training examples available (len(train_indices) or the whole split).
  """
  model: Classifier
  variables: dict
  best_step: int
  val_auroc: float
  val_curve: list[tuple[int, float]]
  losses: np.ndarray
  n_train: int
  image_size: int
  multi_label: bool
  mesh: Any


# --------------------------------------------------------------------------
# Loss, optimizer, state.


def loss_fn(logits, labels, multi_label: bool) -> jax.Array:
  """Softmax cross-entropy on class ids, or sigmoid cross-entropy averaged over the known
  entries of 0/1 labels (-1 = unknown, e.g. CheXpert's uncertain under U-Ignore)."""
  if multi_label:
    labels = labels.astype(logits.dtype)
    known = (labels >= 0).astype(logits.dtype)
    entries = optax.sigmoid_binary_cross_entropy(logits, jnp.maximum(labels, 0))
    return (entries * known).sum() / jnp.maximum(known.sum(), 1)
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def probabilities(logits, multi_label: bool) -> jax.Array:
  return jax.nn.sigmoid(logits) if multi_label else jax.nn.softmax(logits)


def create_optimizer(learning_rate: float, weight_decay: float, steps: int,
                     backbone_lr_scale: float = 1.0) -> optax.GradientTransformation:
  """AdamW with warmup + cosine, no decay on biases and norms; the backbone's learning rate
  is `backbone_lr_scale` times the head's (0 freezes its weights, not its BatchNorm stats)."""
  warmup = int(_WARMUP_FRACTION * steps)

  def adamw(scale):
    schedule = optim.warmup_cosine(learning_rate * scale, warmup, steps)
    return optax.adamw(schedule, weight_decay=weight_decay, mask=optim.decay_mask)

  if backbone_lr_scale == 1.0:
    return adamw(1.0)
  labels = lambda params: {k: "backbone" if k == "backbone" else "head" for k in params}
  return optax.multi_transform({"backbone": adamw(backbone_lr_scale), "head": adamw(1.0)}, labels)


def _check_backbone_variables(given, initial) -> None:
  """Raises ValueError when given variables do not fit the backbone module."""
  for name in ("params", "batch_stats"):
    if name not in initial:
      continue
    want = jax.tree_util.tree_map(lambda x: tuple(x.shape), initial[name])
    got = jax.tree_util.tree_map(lambda x: tuple(np.shape(x)), given.get(name, {}))
    if want != got:
      raise errors.UserError(f"backbone_variables[{name!r}] do not match the backbone module "
                             f"(different architecture or width?)")


def create_state(model: Classifier, optimizer, backbone_variables, rng, image_size: int,
                 channels: int) -> state_lib.TrainState:
  """Random initialisation from `rng`, with the backbone replaced by `backbone_variables`
  when given; the head is always new."""
  dummy = jnp.zeros((2, image_size, image_size, channels), jnp.float32)
  variables = model.init(rng, dummy, train=False)
  params, batch_stats = dict(variables["params"]), dict(variables.get("batch_stats", {}))
  if backbone_variables is not None:
    params["backbone"] = backbone_variables["params"]
    if "backbone" in batch_stats:
      batch_stats["backbone"] = backbone_variables["batch_stats"]
  return state_lib.TrainState.create(params, batch_stats, optimizer)


def augment_images(batch: dict, key: jax.Array, *, policy, image_size: int):
  """The training inputs: the batch's images augmented on the device, and its labels."""
  return augment.augment_batch(batch["image"], key, policy, image_size), batch["label"]


def classifier_loss(params, batch_stats, extra, inputs, step, *, model, multi_label: bool):
  """The supervised objective in loop/state.py's form; BatchNorm in train mode (its
  statistics updated)."""
  del step
  images, labels = inputs
  logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, images,
                                train=True, mutable=["batch_stats"])
  loss = loss_fn(logits, labels, multi_label)
  return loss, ({"loss": loss}, updates.get("batch_stats", {}), extra)


# --------------------------------------------------------------------------
# Data on the host.


def _check_args(steps, batch_size, eval_every, mesh, train_source, train_indices, num_classes,
                multi_label) -> np.ndarray:
  """Validates everything cheap before compiling; returns the training indices."""
  if steps <= 0:
    raise errors.UserError(f"steps must be positive, got {steps}")
  if batch_size <= 0:
    raise errors.UserError(f"batch_size must be positive, got {batch_size}")
  if eval_every < 0:
    raise errors.UserError(f"eval_every must be >= 0 (0: validate at the end only), got {eval_every}")
  sharding.check_batch_size(batch_size, mesh)
  if num_classes < (1 if multi_label else 2):
    raise errors.UserError(f"num_classes must be >= 2 (or >= 1 labels when multi-label), got {num_classes}")
  n = len(train_source)
  if train_indices is None:
    return np.arange(n)
  indices = np.asarray(train_indices, dtype=np.int64).ravel()
  if indices.size == 0:
    raise ValueError("train_indices is empty")
  if indices.min() < 0 or indices.max() >= n:
    raise ValueError(f"train_indices must lie in [0, {n}), got [{indices.min()}, {indices.max()}]")
  return indices


def eval_labels(source, multi_label: bool) -> np.ndarray:
  """The source's labels as metrics expects them: (N,) classes or (N, L) 0/1."""
  labels = np.asarray(source.labels)
  return labels if multi_label else labels.reshape(len(labels), -1)[:, 0]  # (N, 1) too


def _check_labels(labels: np.ndarray, num_classes: int, multi_label: bool) -> None:
  # Out-of-range classes would silently give a NaN loss inside the jitted step.
  if multi_label and (labels.ndim != 2 or labels.shape[1] != num_classes):
    raise errors.UserError(f"multi-label training labels must be (N, {num_classes}), got {labels.shape}")
  if multi_label and not np.isin(labels, (-1, 0, 1)).all():
    raise errors.UserError("multi-label training labels must be 0/1, or -1 for unknown")
  if not multi_label and (labels.min() < 0 or labels.max() >= num_classes):
    raise errors.UserError(f"training labels must be classes in [0, {num_classes}), got "
                           f"[{labels.min()}, {labels.max()}]")


def _train_labels(source, multi_label: bool) -> np.ndarray:
  labels = eval_labels(source, multi_label)
  return labels.astype(np.float32 if multi_label else np.int32)


def _index_stream(indices: np.ndarray, batch_size: int, seed: int):
  """Global batches of training indices: successive seeded permutations, concatenated, so a
  training set smaller than a batch (1% fractions) still fills every batch."""
  rng = np.random.default_rng(seed)
  pending = np.empty(0, np.int64)
  while True:
    while len(pending) < batch_size:
      pending = np.concatenate([pending, rng.permutation(indices)])
    yield pending[:batch_size]
    pending = pending[batch_size:]


def _local_slice(batch_size: int) -> slice:
  """This process's rows of a global batch (every process draws the same global indices)."""
  local = batch_size // jax.process_count()
  return slice(jax.process_index() * local, (jax.process_index() + 1) * local)


def _read_images(source, indices: np.ndarray) -> np.ndarray:
  return np.stack([source[int(i)]["image"] for i in indices])


# --------------------------------------------------------------------------
# Prediction.


def make_predict_fn(model: Classifier, image_size: int, multi_label: bool, mesh):
  """Jitted (variables, uint8 images) -> probabilities, BatchNorm in inference mode."""
  def apply_fn(variables, inputs):
    return probabilities(model.apply(variables, inputs, train=False), multi_label)
  return features.make_feature_fn(apply_fn, image_size, mesh)


def _predict_with(predict_fn, variables, source, batch_size: int, mesh) -> np.ndarray:
  """Probabilities for every record of `source`, in order (last batch padded: one shape)."""
  rows = _local_slice(batch_size)
  chunks = []
  for batch in pipeline.sequential_batches(source, batch_size):
    images = batch["image"]
    n = images.shape[0]
    if n < batch_size:
      images = np.concatenate([images, np.repeat(images[-1:], batch_size - n, axis=0)])
    out = predict_fn(variables, sharding.to_global(images[rows], mesh))
    chunks.append(np.asarray(multihost_utils.process_allgather(out, tiled=True))[:n])
  return np.concatenate(chunks)


def predict(fitted: Fitted, source, batch_size: int) -> np.ndarray:
  """(N, K) class or (N, L) label probabilities of the fitted classifier on `source`."""
  sharding.check_batch_size(batch_size, fitted.mesh)
  predict_fn = make_predict_fn(fitted.model, fitted.image_size, fitted.multi_label, fitted.mesh)
  return _predict_with(predict_fn, fitted.variables, source, batch_size, fitted.mesh)


def _val_auroc(labels, probs, multi_label: bool) -> float:
  try:
    return float(metrics.auroc(labels, probs, multi_label=multi_label)["auroc"])
  except ValueError:  # a single-class validation split cannot rank checkpoints
    return float("nan")


def _better(score: float, best: float) -> bool:
  """Strictly better only, so ties keep the earlier checkpoint; NaN never wins."""
  return score > best or (np.isnan(best) and not np.isnan(score))


# --------------------------------------------------------------------------
# Training.


def _initial_state(model, optimizer, backbone_variables, init_key, image_size: int,
                   channels: int, mesh) -> state_lib.TrainState:
  """The replicated starting state; given backbone variables are checked against the module."""
  replicated = sharding.replicated(mesh)
  if backbone_variables is not None:
    dummy = jnp.zeros((2, image_size, image_size, channels), jnp.float32)
    _check_backbone_variables(backbone_variables, jax.eval_shape(
        functools.partial(model.backbone.init, train=False), init_key, dummy))
    backbone_variables = jax.device_put(backbone_variables, replicated)
  create = functools.partial(create_state, model, optimizer, image_size=image_size, channels=channels)
  return jax.jit(create, out_shardings=replicated)(backbone_variables, init_key)


def jit_train_step(model, optimizer, policy, image_size: int, multi_label: bool, mesh):
  """The shared train step (loop/state.py) on the classifier's loss: (state, {"image",
  "label"}, base_key) -> (state, metrics), batch sharded on the data axis, state donated."""
  prepare = functools.partial(augment_images, policy=policy, image_size=image_size)
  loss = functools.partial(classifier_loss, model=model, multi_label=multi_label)
  return state_lib.jit_train_step(mesh, prepare=prepare, loss_fn=loss, optimizer=optimizer)


def fit(backbone: nn.Module, backbone_variables, train_source, val_source, *, num_classes: int,
        multi_label: bool, image_size: int, steps: int, batch_size: int,
        learning_rate: float = 1e-3, weight_decay: float = 1e-4, policy: str = "crop+flip",
        eval_every: int = 0, seed: int = 0, mesh=None,
        train_indices: Sequence[int] | np.ndarray | None = None, backbone_lr_scale: float = 1.0,
        log_every: int = 0) -> Fitted:
  """Trains backbone + head and returns the parameters with the best validation AUROC.

  Args:
    backbone: the backbone module (e.g. encoder.create_backbone(config.model)).
    backbone_variables: its {"params", "batch_stats"} to start from, or None for a random
      initialisation from `seed` (the supervised baseline).
    train_source, val_source: sources with __len__, __getitem__ -> {"image" uint8 (H, W, C),
      ...} and a `labels` array ((N,) classes or (N, L) 0/1).
    num_classes: K classes, or L labels when `multi_label`.
    image_size: the network's input side; images are resized (eval) or cropped (train) to it.
    steps: optimizer steps; batch_size: global batch, a multiple of the mesh's devices.
    policy: augmentation policy name for training (augment.get_policy), e.g. "crop+flip".
    eval_every: validate every this many steps and at the last; 0: only at the last.
    seed: initialisation (with backbone_variables=None), batch order and augmentation.
    mesh: defaults to all devices on one data axis.
    train_indices: train only on these records of train_source (label fractions).
    backbone_lr_scale: backbone learning rate relative to the head's.
    log_every: progress line every this many steps (0: about ten per run).

  Raises:
    ValueError: on bad arguments (checked before anything is compiled).
  """
  mesh = sharding.create_mesh() if mesh is None else mesh
  indices = _check_args(steps, batch_size, eval_every, mesh, train_source, train_indices,
                        num_classes, multi_label)
  augment_policy = augment.get_policy(policy)
  train_labels = _train_labels(train_source, multi_label)
  val_labels = eval_labels(val_source, multi_label)
  _check_labels(train_labels, num_classes, multi_label)
  channels = np.asarray(train_source[int(indices[0])]["image"]).shape[-1]

  model = Classifier(backbone=backbone, num_outputs=num_classes)
  optimizer = create_optimizer(learning_rate, weight_decay, steps, backbone_lr_scale)
  init_key, base_key = jax.random.split(jax.random.key(seed))
  state = _initial_state(model, optimizer, backbone_variables, init_key, image_size, channels, mesh)
  step_fn = jit_train_step(model, optimizer, augment_policy, image_size, multi_label, mesh)
  predict_fn = make_predict_fn(model, image_size, multi_label, mesh)
  base_key = jax.device_put(base_key, sharding.replicated(mesh))

  log_every = log_every or max(1, steps // 10)
  progress = writers.Progress(steps, batch_size)
  rows = _local_slice(batch_size)
  stream = _index_stream(indices, batch_size, seed)
  losses, curve, best = [], [], None
  logging.info("fine-tuning %s from %s on %d examples: %d steps of %d", type(backbone).__name__,
               "random init" if backbone_variables is None else "given weights", len(indices),
               steps, batch_size)
  for step in range(1, steps + 1):
    batch = next(stream)[rows]
    inputs = {"image": sharding.to_global(_read_images(train_source, batch), mesh),
              "label": sharding.to_global(train_labels[batch], mesh)}
    state, step_metrics = step_fn(state, inputs, base_key)
    loss = step_metrics["loss"]
    losses.append(loss)  # kept on the device: reading it every step would stall the pipeline
    if step % log_every == 0 or step == steps:
      progress.report(step, {"loss": loss})
    if step == steps or (eval_every and step % eval_every == 0):
      variables = {"params": state.params, "batch_stats": state.batch_stats}
      auroc = _val_auroc(val_labels, _predict_with(predict_fn, variables, val_source, batch_size, mesh),
                         multi_label)
      curve.append((step, auroc))
      logging.info("fine-tuning step %d: validation AUROC %.4f", step, auroc)
      if best is None or _better(auroc, best[1]):
        # The next step donates the state's buffers, so keep copies.
        best = (step, auroc, jax.tree_util.tree_map(jnp.copy, variables))
  step, auroc, variables = best
  return Fitted(model=model, variables=variables, best_step=step, val_auroc=auroc, val_curve=curve,
                losses=np.asarray(jax.device_get(losses), np.float32), n_train=len(indices),
                image_size=image_size, multi_label=multi_label, mesh=mesh)


def finetune(backbone: nn.Module, backbone_variables, train_source, val_source, test_source, *,
             num_classes: int, multi_label: bool, image_size: int, steps: int, batch_size: int,
             learning_rate: float = 1e-3, weight_decay: float = 1e-4, policy: str = "crop+flip",
             eval_every: int = 0, seed: int = 0, mesh=None,
             train_indices: Sequence[int] | np.ndarray | None = None, n_boot: int = 1000,
             backbone_lr_scale: float = 1.0, log_every: int = 0, test_groups=None) -> dict:
  """Fine-tunes (see `fit`) and scores the best-validation parameters on the test split
  (`test_groups`: patient ids, for CIs that resample patients; see metrics.summarize).

  Returns:
    metrics.summarize of the test predictions (accuracy, AUROC, bootstrap CIs with
    `n_boot` resamples, seeded by `seed`), plus "best_step", "val_auroc", "val_curve"
    ([[step, AUROC], ...]), "steps", "n_train" and "final_train_loss".
  """
  fitted = fit(backbone, backbone_variables, train_source, val_source, num_classes=num_classes,
               multi_label=multi_label, image_size=image_size, steps=steps, batch_size=batch_size,
               learning_rate=learning_rate, weight_decay=weight_decay, policy=policy,
               eval_every=eval_every, seed=seed, mesh=mesh, train_indices=train_indices,
               backbone_lr_scale=backbone_lr_scale, log_every=log_every)
  result = metrics.summarize(eval_labels(test_source, multi_label), predict(fitted, test_source, batch_size),
                             multi_label=multi_label, n_boot=n_boot, seed=seed, groups=test_groups)
  result.update(best_step=fitted.best_step, val_auroc=fitted.val_auroc,
                val_curve=[[s, a] for s, a in fitted.val_curve], steps=steps,
                n_train=fitted.n_train, final_train_loss=float(fitted.losses[-1]))
  return result

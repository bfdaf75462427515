"""Fine-tuning a tiny ResNet-18 on real BreastMNIST (28 px, 546 training images) on 8 CPU devices.

Every run uses the same steps, batch and learning rate, so after the first run the train
step's compiled program comes from the session's compilation cache: only seeds, starting
weights and data differ between runs.
"""
import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from medssl_jax.data import catalog
from medssl_jax.evaluation import finetune as ft
from medssl_jax.evaluation import fractions
from medssl_jax.evaluation import metrics
from medssl_jax.models import encoder

from conftest import make_tiny_config

RECIPE = dict(num_classes=2, multi_label=False, image_size=28, steps=24, batch_size=32,
              learning_rate=3e-3, weight_decay=1e-4, policy="crop+flip", eval_every=12)


class RecordingSource:
  """A source that remembers which records were read."""

  def __init__(self, source):
    self._source = source
    self.labels, self.multi_label, self.num_classes = source.labels, source.multi_label, source.num_classes
    self.read = set()

  def __len__(self):
    return len(self._source)

  def __getitem__(self, index):
    self.read.add(int(index))
    return self._source[index]


@pytest.fixture(scope="module")
def breast(medmnist_dir):
  return {split: catalog.open_source("breastmnist", split, data_dir=medmnist_dir)
          for split in ("train", "val", "test")}


@pytest.fixture(scope="module")
def backbone(medmnist_dir):
  return encoder.create_backbone(make_tiny_config(medmnist_dir).model)


@pytest.fixture(scope="module")
def random_init_fit(backbone, breast):
  return ft.fit(backbone, None, breast["train"], breast["val"], seed=0, **RECIPE)


@pytest.fixture(scope="module")
def given_weights(random_init_fit):
  """Stand-in pretrained weights: the backbone of the supervised run (initialising another
  ResNet here would cost a second compilation of the random initialisers, ~30 s on CPU)."""
  variables = random_init_fit.variables
  return jax.device_get({"params": variables["params"]["backbone"],
                         "batch_stats": variables["batch_stats"]["backbone"]})


@pytest.fixture(scope="module")
def fraction_fit(backbone, breast, given_weights):
  """Fine-tuning from given weights on a 25% stratified draw, recording what was read."""
  train = RecordingSource(breast["train"])
  indices = fractions.draw_fraction(breast["train"].labels, 0.25, seed=0)
  fitted = ft.fit(backbone, given_weights, train, breast["val"], seed=0, train_indices=indices, **RECIPE)
  return fitted, train.read, indices


def _differs(a, b) -> bool:
  return any(not np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                                      jax.tree_util.tree_leaves(b)))


def test_given_weights_are_the_starting_point(backbone, given_weights):
  model = ft.Classifier(backbone=backbone, num_outputs=2)
  create = functools.partial(ft.create_state, model, ft.create_optimizer(1e-3, 1e-4, steps=10),
                             image_size=28, channels=1)
  # Jitted as fit does: eagerly, the discarded random initialisers would all run op by op.
  state = jax.jit(create)(given_weights, jax.random.key(0))
  assert not _differs(state.params["backbone"], given_weights["params"])
  assert not _differs(state.batch_stats["backbone"], given_weights["batch_stats"])
  assert not np.any(state.params["head"]["kernel"])  # zero head: uniform first predictions


def test_finetuning_changes_the_backbone_and_lowers_the_loss(fraction_fit, given_weights, breast):
  fitted, _, indices = fraction_fit
  assert _differs(fitted.variables["params"]["backbone"], given_weights["params"])
  assert _differs(fitted.variables["batch_stats"]["backbone"], given_weights["batch_stats"])
  # The zero head makes the loss before any update exactly ln 2 for two classes.
  assert fitted.losses.shape == (24,) and fitted.losses[0] == pytest.approx(math.log(2), abs=1e-5)
  assert fitted.losses[-8:].mean() < math.log(2) - 0.05
  # Cross-entropy of the fitted model (inference mode) on its own training images.
  probs = ft.predict(fitted, breast["train"], batch_size=32)[indices]
  labels = breast["train"].labels[indices]
  assert -np.mean(np.log(probs[np.arange(len(labels)), labels])) < math.log(2) - 0.05


def test_train_indices_restrict_training(fraction_fit):
  fitted, read, indices = fraction_fit
  assert fitted.n_train == len(indices) == 137  # round(0.25 * 147) + round(0.25 * 399)
  # 24 steps of 32 cover 5.6 passes over the draw: every drawn image, nothing else.
  assert read == set(indices.tolist())


def test_random_init_depends_on_the_seed(random_init_fit, backbone, breast):
  other = ft.fit(backbone, None, breast["train"], breast["val"], seed=1, **RECIPE)
  assert _differs(other.variables["params"]["backbone"], random_init_fit.variables["params"]["backbone"])
  assert other.val_curve != random_init_fit.val_curve


def test_finetune_reports_summarize_of_its_own_test_predictions(random_init_fit, backbone, breast,
                                                                monkeypatch):
  seen = {}
  real_predict = ft.predict

  def spy(fitted, source, batch_size):
    seen["fitted"], seen["probs"] = fitted, real_predict(fitted, source, batch_size)
    return seen["probs"]

  monkeypatch.setattr(ft, "predict", spy)
  result = ft.finetune(backbone, None, breast["train"], breast["val"], breast["test"], seed=0, n_boot=50,
                       **RECIPE)
  # Same seed, same run: the parameters reproduce exactly.
  assert not _differs(seen["fitted"].variables, random_init_fit.variables)
  np.testing.assert_array_equal(seen["probs"], real_predict(random_init_fit, breast["test"], 32))
  want = metrics.summarize(breast["test"].labels, seen["probs"], n_boot=50, seed=0)
  assert {k: result[k] for k in want} == want
  assert result["n"] == 156 and result["steps"] == 24 and result["n_train"] == 546
  assert result["best_step"] == random_init_fit.best_step in (12, 24)
  assert result["val_auroc"] == max(a for _, a in random_init_fit.val_curve)
  assert [s for s, _ in result["val_curve"]] == [12, 24]
  json.dumps(result)  # results.json-ready


def test_losses():
  logits = np.array([[2.0, -1.0], [0.5, 0.5]], np.float32)
  single, multi = jax.jit(lambda x: (ft.loss_fn(x, np.array([0, 1]), multi_label=False),
                                     ft.loss_fn(x, np.eye(2), multi_label=True)))(logits)
  softmax = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  np.testing.assert_allclose(single, -np.mean(np.log(softmax[[0, 1], [0, 1]])), rtol=1e-5)
  p, labels = 1 / (1 + np.exp(-logits)), np.eye(2)
  np.testing.assert_allclose(multi, -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)), rtol=1e-5)
  # Unknown entries (-1) are left out of the mean, not used as targets.
  partial = np.array([[1, -1], [-1, 0]])
  masked = jax.jit(lambda x: ft.loss_fn(x, partial, multi_label=True))(logits)
  np.testing.assert_allclose(masked, -np.mean([np.log(p[0, 0]), np.log(1 - p[1, 1])]), rtol=1e-5)


@pytest.mark.parametrize("change, message", [
    (dict(steps=0), "steps must be positive"),
    (dict(batch_size=12), "not divisible by the 8 devices"),
    (dict(train_indices=[0, 546]), r"train_indices must lie in \[0, 546\)"),
    (dict(train_indices=[]), "train_indices is empty"),
    (dict(policy="crop+nonsense"), "Unknown augmentation policy"),
    (dict(eval_every=-1), "eval_every"),
    (dict(num_classes=1), "num_classes"),
    (dict(multi_label=True), r"must be \(N, 2\)"),
])
def test_bad_arguments_raise_before_training(backbone, breast, change, message):
  with pytest.raises(ValueError, match=message):
    ft.finetune(backbone, None, breast["train"], breast["val"], breast["test"], **{**RECIPE, **change})


def test_mismatched_backbone_weights(backbone, breast, medmnist_dir):
  config = make_tiny_config(medmnist_dir)
  config.model.width = 1 / 8
  wider = encoder.create_backbone(config.model)
  shapes = jax.eval_shape(functools.partial(wider.init, train=False), jax.random.key(0),
                          jnp.zeros((2, 28, 28, 1)))
  variables = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  with pytest.raises(ValueError, match="do not match the backbone"):
    ft.fit(backbone, variables, breast["train"], breast["val"], **RECIPE)


def test_backbone_learning_rate_scale():
  params = {"backbone": {"kernel": np.ones((2, 2), np.float32)},
            "head": {"kernel": np.ones((2, 2), np.float32), "bias": np.ones(2, np.float32)}}
  grads = jax.tree_util.tree_map(np.ones_like, params)

  @jax.jit
  def three_updates(params):
    optimizer = ft.create_optimizer(0.1, 1e-2, steps=10, backbone_lr_scale=0.0)
    opt_state = optimizer.init(params)
    for _ in range(3):  # the warmup's first learning rate is 0
      updates, opt_state = optimizer.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
    return params

  updated = three_updates(params)
  np.testing.assert_array_equal(updated["backbone"]["kernel"], params["backbone"]["kernel"])
  assert np.all(updated["head"]["kernel"] < 1) and np.all(updated["head"]["bias"] < 1)

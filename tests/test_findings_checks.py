"""Defect checks before any tuning of the small recipes (issue 19, item 1): MICLe's positives
are two different images of one patient in the batch the loss sees; BatchNorm normalises
both views together; the probe reads the backbone's pooled output; the rotation study's two
policies differ by the rotation only."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medssl_jax import augment
from medssl_jax import methods
from medssl_jax.evaluation import context
from medssl_jax.loop import checkpointing
from medssl_jax.loop import configuration
from medssl_jax.loop import pretrain
from medssl_jax.loop import sharding
from medssl_jax.models import resnet

from conftest import REPO_ROOT


def _recipe(name: str):
  return configuration.load_config_file(str(REPO_ROOT / "configs" / name))


@pytest.fixture(scope="module")
def micle_config(shared_data):
  config = _recipe("micle_nih_cxr.py")
  config.data.dir = str(shared_data / "nih_cxr1000")
  config.augment.policy = "none"  # views are then the two source images, resized only
  return config


def test_micle_recipe_feeds_the_loss_two_images_of_one_patient(micle_config):
  config = micle_config
  source = pretrain.open_training_source(config)  # the recipe's patient-disjoint train split
  groups = np.asarray(source.groups)
  bag = np.bincount(groups)[groups]  # train images of each image's patient
  host = next(pretrain.make_data_iterator(config, source))
  index, partner = host["index"], host["partner"]
  assert len(index) == config.batch_size
  np.testing.assert_array_equal(groups[partner], groups[index])
  assert np.all((partner != index) == (bag[index] >= 2))
  # A real share of the pairs are two different images: the recipe is not SimCLR in disguise.
  assert np.mean(partner != index) > 0.5

  mesh = sharding.create_mesh(jax.devices()[:1])
  batch = sharding.to_global(pretrain.batch_arrays(host), mesh)
  method = methods.get_method(config.method)
  view1, view2, _ = jax.jit(lambda b, k: method.make_views(b, k, config))(batch, jax.random.key(0))
  view1, view2 = np.asarray(view1), np.asarray(view2)
  resize = lambda i: np.asarray(augment.preprocess_batch(source.images[i], config.augment.size))
  np.testing.assert_allclose(view1, resize(index), atol=1e-6)
  np.testing.assert_allclose(view2, resize(partner), atol=1e-6)
  different = partner != index
  assert np.all(np.abs(view1[different] - view2[different]).max(axis=(1, 2, 3)) > 0.05)


@pytest.mark.parametrize("name", ["simclr", "simsiam", "byol", "tsimcne"])
def test_batchnorm_statistics_span_both_views(synthetic_config, name):
  """The running BN statistics a step returns are those of view1 and view2 as one batch."""
  config = synthetic_config
  config.method = name
  method = methods.get_method(name)
  model = method.create_model(config)
  rng = np.random.default_rng(0)
  view1 = jnp.asarray(rng.uniform(0.0, 0.3, (8, 8, 8, 1)), jnp.float32)
  view2 = jnp.asarray(rng.uniform(0.6, 1.0, (8, 8, 8, 1)), jnp.float32)
  variables = jax.jit(functools.partial(model.init, train=True))(jax.random.key(0), view1)
  params, stats = variables["params"], variables["batch_stats"]
  extra = method.init_extra_state(variables, config)
  loss_fn = jax.jit(functools.partial(method.loss_fn, model=model, config=config))
  _, (_, new_stats, _) = loss_fn(params, stats, extra, view1, view2, jax.random.key(1), jnp.int32(0))

  @jax.jit
  def stats_of(images):
    _, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
    return updates["batch_stats"]
  both = stats_of(jnp.concatenate([view1, view2]))
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                         new_stats, both)
  first_mean = lambda tree: np.asarray(tree["backbone"]["bn_init"]["mean"])
  assert not np.allclose(first_mean(new_stats), first_mean(stats_of(view1)), atol=1e-4)


def test_probe_features_are_the_backbones_pooled_output(synthetic_config, tmp_path, monkeypatch):
  """EvalRun's "pretrained" features equal the encoder's pooled backbone output in eval mode
  (running BN statistics), not its projection. The checkpoint is faked: restoring is not the
  subject here, and training one would cost most of this test's time."""
  config = synthetic_config
  model = methods.get_method(config.method).create_model(config)
  dummy = jnp.zeros((2, config.augment.size, config.augment.size, 1), jnp.float32)
  fresh = jax.jit(functools.partial(model.init, train=True))(jax.random.key(0), dummy)
  # "Trained" running statistics (a fresh network has mean 0, var 1): eval mode must use them.
  shift = lambda x: np.asarray(x) + np.random.default_rng(x.size).uniform(0.1, 0.5, x.shape)
  variables = {"params": fresh["params"],
               "batch_stats": jax.tree_util.tree_map(shift, fresh["batch_stats"])}
  monkeypatch.setattr(checkpointing, "restore_variables", lambda workdir, step: (config, variables, 7))
  eval_config = _recipe("eval/linear_probe.py")
  eval_config.pretrain_workdir = str(tmp_path / "run")
  eval_config.batch_size = 32
  run = context.EvalRun(eval_config, cache_dir=str(tmp_path / "cache"))
  test = run.splits["test"]
  features = run.features_of("pretrained", test, run.data, "test")
  images = augment.preprocess_batch(test.images, config.augment.size)
  pooled, projection = jax.jit(functools.partial(model.apply, train=False))(variables, images)
  assert features.shape == (len(test), resnet.feature_dim("resnet18", config.model.width))
  np.testing.assert_allclose(features, np.asarray(pooled), rtol=1e-4, atol=1e-5)
  assert projection.shape[-1] == config.model.projector_dim != features.shape[-1]
  untrained_stats = jax.jit(functools.partial(model.apply, train=False))(fresh, images)[0]
  assert not np.allclose(features, np.asarray(untrained_stats), atol=1e-3)  # the statistics matter


@pytest.mark.parametrize("without, with_rotation", [
    ("simclr", "microscopy"),  # SimCLR's default policy, as in the paper
    ("crop+flip+brightness_contrast", _recipe("simclr_bloodmnist.py").augment.policy),  # the recipe's
])
def test_rotation_study_policies_differ_by_the_rotation_only(without, with_rotation):
  """The arms of configs/simclr_bloodmnist.py's two rotation studies."""
  default, rotation = augment.get_policy(without), augment.get_policy(with_rotation)
  rotations = [op for op in rotation if op not in default]
  assert rotations == [augment.Rotate(180.0)] and dataclasses.asdict(rotations[0])["p"] == 1.0
  assert tuple(op for op in rotation if op in default) == default


def test_study_table_gives_each_arm_a_mean_and_t_interval(tmp_path):
  import importlib.util  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("study_table", REPO_ROOT / "launch" / "study_table.py")
  study_table = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(study_table)
  row = lambda acc: {"accuracy": acc, "accuracy_ci": [acc - 0.01, acc + 0.01], "auroc": 0.9,
                     "auroc_ci": [0.89, 0.91], "val_auroc": 0.95}
  for arm, accuracies in (("default", (0.70, 0.72, 0.74)), ("rotation", (0.80,))):
    for seed, acc in enumerate(accuracies):
      (tmp_path / f"{arm}_s{seed}" / "eval").mkdir(parents=True)
      (tmp_path / f"{arm}_s{seed}" / "eval" / "results.json").write_text(
          json.dumps({"linear_probe": {"pretrained": row(acc)}}))
  (tmp_path / "baselines").mkdir()
  (tmp_path / "baselines" / "results.json").write_text(
      json.dumps({"linear_probe": {"pretrained": row(0.7), "raw_pixels": row(0.83)}}))
  lines = study_table.table(tmp_path).splitlines()
  # mean 0.72, t(0.975, 2) = 4.303 x sd 0.02 / sqrt(3) = 0.0497
  text = "\n".join(lines)
  assert ("| **default, mean of 3 (95% t-interval)** | 0,1,2 | 0.9500 (0.950-0.950) | "
          "0.7200 (0.670-0.770) |") in text
  assert "| **rotation, mean of 1 (95% t-interval)** | 0 | 0.9500 | 0.8000 |" in text
  assert lines[-1].startswith("| raw_pixels (baseline) | - | 0.9500 | 0.8300 (0.820-0.840)")
  assert len(lines) == 2 + 4 + 2 + 1

"""Backbone export, the Python API, and runs initialised from another run's weights."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

from medssl_jax.data import catalog
from medssl_jax.loop import checkpointing
from medssl_jax.loop import pretrain
from medssl_jax.loop import sharding
from medssl_jax.weights import api
from medssl_jax.weights import export

from conftest import make_tiny_config
from conftest import REPO_ROOT


def assert_trees_equal(a, b):
  """Bitwise: same structure, same dtypes, same values."""
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def pretrained_run(medmnist_dir, tmp_path_factory):
  """A tiny SimCLR run with checkpoints at steps 2 and 4."""
  config = make_tiny_config(medmnist_dir)
  config.num_steps, config.checkpoint_every = 4, 2
  workdir = tmp_path_factory.mktemp("pretrained") / "run"
  pretrain.run(config, workdir)
  return workdir


@pytest.fixture(scope="module")
def test_images(medmnist_dir):
  return catalog.open_source("pneumoniamnist", "test", data_dir=str(medmnist_dir)).images[:16]


def test_export_then_load_is_bitwise_equal_with_identical_features(pretrained_run, test_images, tmp_path):
  info = export.export(pretrained_run, tmp_path / "export")
  _, expected, _ = checkpointing.restore_backbone(pretrained_run)
  from_export = api.load_backbone(tmp_path / "export")
  from_workdir = api.load_backbone(pretrained_run)
  assert_trees_equal(expected, from_export.variables)
  assert_trees_equal(expected, from_workdir.variables)
  features = np.asarray(from_export.features(test_images))
  np.testing.assert_array_equal(features, np.asarray(from_workdir.features(test_images)))
  assert features.shape == (16, info["feature_dim"]) and np.isfinite(features).all()

  described = json.loads((tmp_path / "export" / export.INFO_FILE).read_text())
  assert described["architecture"] == "resnet18" and described["method"] == "simclr"
  assert described["step"] == 4 and described["data"] == "pneumoniamnist"
  assert described["input"]["size"] == 28 and described["input"]["channels"] == 1
  assert described["modules"] == ["backbone"]


def test_export_with_projector(pretrained_run, tmp_path):
  export.export(pretrained_run, tmp_path / "export", step=2, include_projector=True)
  info, tree = export.load(tmp_path / "export")
  _, variables, _ = checkpointing.restore_variables(pretrained_run, 2)
  assert info["modules"] == ["backbone", "projector"] and info["step"] == 2
  assert_trees_equal(variables["params"]["projector"], tree["projector"]["params"])


def test_export_command_checks_and_refuses_to_overwrite(pretrained_run, tmp_path):
  command = [sys.executable, "-m", "medssl_jax.cli.export", f"--workdir={pretrained_run}",
             f"--out={tmp_path / 'export'}"]
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
  done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
  assert done.returncode == 0, done.stderr
  assert "exported simclr resnet18" in done.stdout and "from step 4" in done.stdout
  again = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
  assert again.returncode == 2 and "not empty" in again.stderr


def test_load_given_step_and_missing_step(pretrained_run):
  step2 = api.load_backbone(pretrained_run, step=2)
  step4 = api.load_backbone(pretrained_run)
  assert step2.info["step"] == 2 and step4.info["step"] == 4
  kernel = lambda b: b.variables["params"]["conv_init"]["kernel"]
  assert not np.array_equal(kernel(step2), kernel(step4))
  with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 3 .*steps present: \[2, 4\]"):
    api.load_backbone(pretrained_run, step=3)


def test_load_onto_a_mesh(pretrained_run, test_images):
  mesh = sharding.create_mesh()
  replicated = NamedSharding(mesh, PartitionSpec())
  backbone = api.load_backbone(pretrained_run, sharding=replicated)
  for leaf in jax.tree_util.tree_leaves(backbone.variables):
    assert leaf.sharding == replicated
  single = api.load_backbone(pretrained_run)
  np.testing.assert_allclose(np.asarray(backbone.features(test_images[:8])),
                             np.asarray(single.features(test_images[:8])), rtol=1e-5, atol=1e-6)


def test_corrupt_or_foreign_exports_say_which(pretrained_run, tmp_path):
  with pytest.raises(FileNotFoundError, match="not an exported backbone"):
    export.load(tmp_path)
  with pytest.raises(FileNotFoundError, match="not a medssl-jax pretraining workdir"):
    api.load_backbone(tmp_path)
  export.export(pretrained_run, tmp_path / "export")
  for path in (tmp_path / "export" / export.VARIABLES_DIR).rglob("*"):
    if path.is_file() and path.stat().st_size > 0:
      path.write_bytes(b"\0" * 7)
  with pytest.raises(ValueError, match="missing or corrupt"):
    export.load(tmp_path / "export")
  (tmp_path / "export" / export.INFO_FILE).write_text("{not json")
  with pytest.raises(ValueError, match="backbone.json is corrupt"):
    export.load(tmp_path / "export")


@pytest.mark.parametrize("source", ["workdir", "export"])
def test_run_initialised_from_another_starts_from_exactly_its_backbone(
    source, pretrained_run, medmnist_dir, tmp_path):
  init_from = pretrained_run
  if source == "export":
    init_from = tmp_path / "export"
    export.export(pretrained_run, init_from)
  config = make_tiny_config(medmnist_dir)
  config.init_from, config.num_steps, config.seed = str(init_from), 0, 7
  state = pretrain.run(config, tmp_path / "continued")

  _, variables, _ = checkpointing.restore_variables(pretrained_run)
  assert_trees_equal(variables["params"]["backbone"], jax.device_get(state.params["backbone"]))
  assert_trees_equal(variables["batch_stats"]["backbone"], jax.device_get(state.batch_stats["backbone"]))
  fresh = state.params["projector"]["Dense_0"]["kernel"]
  trained = variables["params"]["projector"]["Dense_0"]["kernel"]
  assert not np.array_equal(np.asarray(fresh), trained)
  record = json.loads((tmp_path / "continued" / "init.json").read_text())
  assert record["kind"] == source and record["step"] == 4
  assert json.loads((tmp_path / "continued" / "config.json").read_text())["init_from"] == str(init_from)


def test_init_from_another_architecture_is_refused_before_writing(pretrained_run, medmnist_dir, tmp_path):
  config = make_tiny_config(medmnist_dir)
  config.init_from = str(pretrained_run)
  config.model.width = 1 / 8
  with pytest.raises(ValueError, match=r"another architecture.*\n  width: .* has 0.0625, this run has 0.125"):
    pretrain.run(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_finetuning_example_runs_on_an_export(pretrained_run, medmnist_dir, tmp_path):
  export.export(pretrained_run, tmp_path / "export")
  command = [sys.executable, str(REPO_ROOT / "examples" / "finetune_breastmnist.py"),
             f"--backbone={tmp_path / 'export'}", f"--data_dir={medmnist_dir}", "--epochs=2"]
  done = subprocess.run(command, capture_output=True, text=True, check=False,
                        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
  assert done.returncode == 0, done.stderr
  assert "epoch 2/2: train loss" in done.stdout
  result = done.stdout.strip().splitlines()[-1]
  assert result.startswith("BreastMNIST test (156 images): accuracy")
  auroc = float(result.rsplit("AUROC", 1)[1])
  assert 0.0 <= auroc <= 1.0

"""SimSiam: its loss against NumPy, the stop-gradient, and training that resumes exactly."""
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from medssl_jax.loop import configuration
from medssl_jax.loop import pretrain
from medssl_jax.methods import simsiam

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def negative_cosine_numpy(p, z):
  p, z = p.astype(np.float64), z.astype(np.float64)
  cosines = [pi @ zi / (np.linalg.norm(pi) * np.linalg.norm(zi)) for pi, zi in zip(p, z)]
  return -np.mean(cosines)


def _correlated(rng, n, d):
  # Partners that agree in part keep the mean cosine away from 0, where rtol means little.
  z = rng.normal(size=(n, d))
  return z + rng.normal(size=(n, d)), z


@pytest.mark.parametrize("n,d", [(4, 8), (16, 32), (7, 3)])
def test_simsiam_loss_matches_numpy(n, d):
  rng = np.random.default_rng(n * d)
  p1, z2 = _correlated(rng, n, d)
  p2, z1 = _correlated(rng, n, d)
  expected = 0.5 * negative_cosine_numpy(p1, z2) + 0.5 * negative_cosine_numpy(p2, z1)
  f32 = lambda x: x.astype(np.float32)
  np.testing.assert_allclose(float(simsiam.negative_cosine(f32(p1), f32(z2))),
                             negative_cosine_numpy(p1, z2), rtol=1e-5)
  np.testing.assert_allclose(float(simsiam.simsiam_loss(f32(p1), f32(p2), f32(z1), f32(z2))),
                             expected, rtol=1e-5)


def test_gradient_stops_at_the_projections():
  rng = np.random.default_rng(0)
  p1, p2, z1, z2 = (jnp.asarray(rng.normal(size=(8, 16)), jnp.float32) for _ in range(4))
  grads = jax.grad(simsiam.simsiam_loss, argnums=(0, 1, 2, 3))(p1, p2, z1, z2)
  assert all(float(jnp.max(jnp.abs(g))) > 1e-4 for g in grads[:2]), "predictions get no gradient"
  for g in grads[2:]:
    np.testing.assert_array_equal(np.asarray(g), 0.0)


def _simsiam_config(config):
  config.method = "simsiam"
  config.data.channels = 3           # RGB images (the recipe's BloodMNIST) and its policy
  config.augment.policy = "microscopy"
  config.model.projector_layers = 3
  config.simsiam = ml_collections.ConfigDict(dict(predictor_hidden_dim=0))  # 0 -> dim / 4
  config.optim.name = "sgd"
  config.optim.base_lr = 0.05
  config.num_steps = 4
  config.checkpoint_every = 2
  return config


def _saved_state(workdir, step):
  manager = ocp.CheckpointManager((workdir / "checkpoints").absolute(),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]


def test_training_on_rgb_images_resumes_exactly(synthetic_config, tmp_path):
  """Synthetic RGB data through the real loop: finite loss, the three modules, exact resume."""
  config = _simsiam_config(synthetic_config)
  workdir = tmp_path / "run"
  final = pretrain.run(config, workdir)
  params = jax.device_get(final.params)
  assert set(params) == {"backbone", "projector", "predictor"}
  assert params["backbone"]["conv_init"]["kernel"].shape[2] == 3  # trained on RGB images
  assert params["predictor"]["Dense_0"]["kernel"].shape == (16, 4)  # bottleneck d/4
  assert "BatchNorm_2" in final.batch_stats["projector"], "projector output has no BatchNorm"
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  for line in lines:
    assert np.isfinite(line["loss"]) and -1.0 <= line["loss"] <= 1.0
    assert line["embedding_std"] > 0
  uninterrupted = _saved_state(workdir, 4)

  shutil.rmtree(workdir / "checkpoints" / "4")  # preempted right after the step-2 checkpoint
  pretrain.run(config, workdir)
  resumed = dict(jax.tree_util.tree_leaves_with_path(_saved_state(workdir, 4)))
  leaves = jax.tree_util.tree_leaves_with_path(uninterrupted)
  assert len(leaves) == len(resumed) > 10
  for path, a in leaves:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(resumed[path]), err_msg=str(path))


@pytest.mark.parametrize("name", ["simsiam_bloodmnist", "simsiam_resnet50"])
def test_recipes_load(name):
  config = configuration.load_config_file(str(REPO_ROOT / "configs" / f"{name}.py"))
  assert config.method == "simsiam" and config.model.projector_layers == 3
  assert config.simsiam.predictor_hidden_dim == config.model.projector_dim // 4

"""BYOL: loss, EMA and momentum schedule against NumPy; no gradient into the target; the target
following the online network through the real loop, and exact resume including the target."""
import json
import pathlib
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from medssl_jax.loop import configuration
from medssl_jax.loop import pretrain
from medssl_jax.methods import byol
from medssl_jax.models import encoder
from medssl_jax.models import heads

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _saved_state(workdir, step):
  manager = ocp.CheckpointManager((workdir / "checkpoints").absolute(),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]


def _flat(tree) -> np.ndarray:
  leaves = jax.tree_util.tree_leaves(tree)
  return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in leaves])


def _online_part(params):
  return {m: params[m] for m in byol.TARGET_MODULES}


def _tau(step, num_steps, tau_base):
  return 1 - (1 - tau_base) * (np.cos(np.pi * step / num_steps) + 1) / 2


def byol_loss_numpy(q1, q2, z1, z2):
  """Mean squared distance of l2-normalised vectors, each view predicting the other's target."""
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  mse = lambda q, z: np.mean(np.sum((unit(q) - unit(z)) ** 2, axis=1))
  return mse(q1, z2) + mse(q2, z1)


@pytest.mark.parametrize("n,d", [(4, 8), (16, 32), (7, 3)])
def test_byol_loss_matches_numpy(n, d):
  rng = np.random.default_rng(n + d)
  q1, q2, z1, z2 = (rng.normal(size=(n, d)) for _ in range(4))
  f32 = lambda x: x.astype(np.float32)
  loss = byol.byol_loss(f32(q1), f32(q2), f32(z1), f32(z2))
  np.testing.assert_allclose(float(loss), byol_loss_numpy(q1, q2, z1, z2), rtol=1e-5)


def test_target_momentum_rises_from_tau_base_to_one():
  num_steps, tau_base = 100, 0.996
  taus = np.array([float(byol.target_momentum(k, num_steps, tau_base))
                   for k in range(num_steps + 1)])
  np.testing.assert_allclose(taus[0], tau_base, rtol=1e-7)
  np.testing.assert_allclose(taus[num_steps // 2], tau_base + (1 - tau_base) / 2, rtol=1e-7)
  assert taus[-1] == 1.0
  assert np.all(np.diff(taus) >= 0) and taus[1] > taus[0] and taus[-1] > taus[-2]
  assert float(byol.target_momentum(num_steps + 10, num_steps, tau_base)) == 1.0


def test_target_starts_as_a_copy_of_the_online_backbone_and_projector():
  modules = ("backbone", "projector", "predictor")
  variables = {"params": {m: {"w": np.full(3, i, np.float32)} for i, m in enumerate(modules)},
               "batch_stats": {m: {"mean": np.zeros(3, np.float32)} for m in modules[:2]}}
  extra = byol.BYOL().init_extra_state(jax.tree_util.tree_map(jnp.asarray, variables), None)
  assert set(extra["params"]) == set(extra["batch_stats"]) == {"backbone", "projector"}
  jax.tree_util.tree_map(np.testing.assert_array_equal, extra["params"],
                         {m: variables["params"][m] for m in modules[:2]})


class _TinyBackbone(nn.Module):
  """Enough network (a dense layer and BatchNorm) to take gradients through quickly."""

  @nn.compact
  def __call__(self, images, train: bool = True):
    x = nn.Dense(8)(images.reshape((images.shape[0], -1)))
    return nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)


def test_no_gradient_reaches_the_target():
  model = encoder.EncoderWithPredictor(backbone=_TinyBackbone(), projector=heads.MLPHead(16, 8),
                                       predictor=heads.MLPHead(16, 8))
  config = ml_collections.ConfigDict(dict(num_steps=10, byol=dict(tau_base=0.99)))
  rng = np.random.default_rng(0)
  view1, view2 = rng.uniform(size=(2, 8, 6, 6, 1)).astype(np.float32)
  # NumPy-filled variables of the right shapes: no PRNG code to compile, so the test is quick.
  shapes = jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=True), view1)
  normal = lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.3, jnp.float32)
  ones = lambda s: jnp.ones(s.shape, jnp.float32)
  variables = {"params": jax.tree_util.tree_map(normal, shapes["params"]),
               "batch_stats": jax.tree_util.tree_map(ones, shapes["batch_stats"])}
  params, batch_stats = variables["params"], variables["batch_stats"]
  # A target that differs from the online network, as it does after a few steps.
  extra = byol.BYOL().init_extra_state(variables, config)
  extra["params"] = jax.tree_util.tree_map(lambda x: x + 0.1, extra["params"])
  assert set(params) == {"backbone", "projector", "predictor"}
  assert "predictor" not in extra["params"]

  def loss(params, extra):
    return byol.BYOL().loss_fn(params, batch_stats, extra, view1, view2, None, 3, model=model,
                               config=config)

  (value, (metrics, _, new_extra)), (grad_params, grad_extra) = jax.jit(jax.value_and_grad(
      loss, argnums=(0, 1), has_aux=True))(params, extra)
  assert np.isfinite(float(value)) and "tau" in metrics and "embedding_std" in metrics
  for leaf in jax.tree_util.tree_leaves(grad_extra):
    np.testing.assert_array_equal(np.asarray(leaf), 0.0)
  for module in ("backbone", "projector", "predictor"):
    assert np.max(np.abs(_flat(grad_params[module]))) > 0, f"no gradient into {module}"
  # The returned target is the EMA with this step's online parameters.
  tau = _tau(3, 10, 0.99)
  expected = jax.tree_util.tree_map(lambda t, o: tau * t + (1 - tau) * o, extra["params"],
                                    _online_part(params))
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                         new_extra["params"], expected)
  # ... and keeps the running statistics of its own forward pass.
  assert not np.array_equal(_flat(new_extra["batch_stats"]), _flat(extra["batch_stats"]))


def _check_target_follows_online(states, tau_base, num_steps):
  """After step k+1: target = tau(k) * target after k + (1 - tau(k)) * online after k."""
  for k in range(1, num_steps):
    tau = _tau(k, num_steps, tau_base)
    target, online = _flat(states[k]["extra"]["params"]), _flat(_online_part(states[k]["params"]))
    np.testing.assert_allclose(_flat(states[k + 1]["extra"]["params"]),
                               tau * target + (1 - tau) * online, rtol=1e-5, atol=1e-7,
                               err_msg=f"target after step {k + 1}")
  # The first update mixes the initial target with identical online weights, so the target
  # after step 1 is the initialisation; by step 4 it has moved, less far than the online net.
  first, last = states[1], states[num_steps]
  init = _flat(first["extra"]["params"])
  target_moved = np.linalg.norm(_flat(last["extra"]["params"]) - init)
  online_moved = np.linalg.norm(_flat(_online_part(last["params"])) - init)
  assert 0 < target_moved < online_moved, (target_moved, online_moved)
  # The target keeps its own running BatchNorm statistics.
  assert not np.array_equal(_flat(first["extra"]["batch_stats"]),
                            _flat(last["extra"]["batch_stats"]))


def test_training_moves_the_target_and_resumes_exactly(synthetic_config, tmp_path):
  """Synthetic data through the real loop, a checkpoint after every step to see each EMA update;
  then a preemption after step 2 and a resume that ends bitwise equal, target included."""
  config = synthetic_config
  config.method = "byol"
  config.byol = ml_collections.ConfigDict(dict(tau_base=0.9, predictor_hidden_dim=8))
  config.num_steps = 4
  config.checkpoint_every = 1
  config.log_every = 1  # logged scalars are interval means: one step each, to see each tau
  workdir = tmp_path / "run"
  final = pretrain.run(config, workdir)
  assert set(final.params) == {"backbone", "projector", "predictor"}
  assert set(final.extra["params"]) == {"backbone", "projector"}
  assert final.params["predictor"]["Dense_0"]["kernel"].shape == (16, 8)
  for line in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines()):
    assert np.isfinite(line["loss"]) and 0 <= line["loss"] <= 8
    np.testing.assert_allclose(line["tau"], _tau(line["step"] - 1, 4, 0.9), rtol=1e-6)
  states = {k: _saved_state(workdir, k) for k in range(1, 5)}
  _check_target_follows_online(states, 0.9, 4)

  for step in (3, 4):  # preempted right after the step-2 checkpoint
    shutil.rmtree(workdir / "checkpoints" / str(step))
  pretrain.run(config, workdir)
  resumed = dict(jax.tree_util.tree_leaves_with_path(_saved_state(workdir, 4)))
  leaves = jax.tree_util.tree_leaves_with_path(states[4])
  assert len(leaves) == len(resumed)
  assert any("extra" in jax.tree_util.keystr(path) for path, _ in leaves)
  for path, a in leaves:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(resumed[path]), err_msg=str(path))


@pytest.mark.parametrize("name", ["byol_pneumoniamnist", "byol_resnet50"])
def test_recipes_load(name):
  config = configuration.load_config_file(str(REPO_ROOT / "configs" / f"{name}.py"))
  assert config.method == "byol" and config.optim.name == "lars"
  assert 0.9 <= config.byol.tau_base < 1 and config.byol.predictor_hidden_dim > 0

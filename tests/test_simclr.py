"""NT-Xent against an independent NumPy implementation, and 1 vs 8 devices on one global batch."""
import jax
import numpy as np
import pytest

from medssl_jax.loop import optim
from medssl_jax.loop import pretrain
from medssl_jax.loop import sharding
from medssl_jax.methods import simclr


def nt_xent_numpy(z1, z2, temperature):
  """SimCLR's loss written out per anchor, as in the paper's algorithm 1."""
  z = np.concatenate([z1, z2]).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  n = len(z1)
  total = 0.0
  for i in range(2 * n):
    j = (i + n) % (2 * n)
    others = [k for k in range(2 * n) if k != i]
    denominator = sum(np.exp(z[i] @ z[k] / temperature) for k in others)
    total += -np.log(np.exp(z[i] @ z[j] / temperature) / denominator)
  return total / (2 * n)


@pytest.mark.parametrize("n,d,temperature", [(4, 8, 0.1), (16, 32, 0.5), (7, 3, 1.0)])
def test_nt_xent_matches_numpy(n, d, temperature):
  rng = np.random.default_rng(n * d)
  z1, z2 = rng.normal(size=(n, d)), rng.normal(size=(n, d))
  loss, _ = simclr.nt_xent(z1.astype(np.float32), z2.astype(np.float32), temperature)
  np.testing.assert_allclose(float(loss), nt_xent_numpy(z1, z2, temperature), rtol=1e-5)


def test_nt_xent_prefers_aligned_pairs():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(8, 16)).astype(np.float32)
  aligned, accuracy = simclr.nt_xent(z, z + 0.01, 0.1)
  shuffled, _ = simclr.nt_xent(z, z[::-1].copy(), 0.1)
  assert float(aligned) < float(shuffled)
  assert float(accuracy) == 1.0


def _one_step(config, mesh, images):
  method = simclr.SimCLR()
  model = method.create_model(config)
  optimizer = optim.create_optimizer(config.optim, config.batch_size, config.num_steps)
  state = pretrain.create_train_state(config, model, method, optimizer, jax.random.key(0), images.shape[1:])
  state = jax.device_put(state, sharding.replicated(mesh))
  step = pretrain.jit_train_step(config, model, method, optimizer, mesh)
  batch = sharding.to_global({"view1": images}, mesh)
  new_state, metrics = step(state, batch, jax.random.key(1))
  return jax.device_get(new_state.params), jax.device_get(metrics)


def test_one_device_and_eight_devices_agree(synthetic_config):
  """Same global batch on 1 and 8 devices: same loss (negatives and BatchNorm span the
  whole batch either way) and the same updated parameters."""
  assert jax.device_count() >= 8, "conftest must give 8 simulated devices"
  images = np.random.default_rng(0).integers(0, 256, size=(16, 28, 28, 1), dtype=np.uint8)
  params1, metrics1 = _one_step(synthetic_config, sharding.create_mesh(jax.devices()[:1]), images)
  params8, metrics8 = _one_step(synthetic_config, sharding.create_mesh(jax.devices()[:8]), images)
  np.testing.assert_allclose(metrics1["loss"], metrics8["loss"], rtol=1e-5)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                         params1, params8)

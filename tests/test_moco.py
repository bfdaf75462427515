"""MoCo v2: InfoNCE with a queue against NumPy, the FIFO queue, the momentum encoder,
shuffling BN, and exact resume through the real training loop."""
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
from medssl_jax.methods import moco
from medssl_jax.models import encoder
from medssl_jax.models import heads

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _moco_config(config, queue_size=40, groups=2):
  config.method = "moco"
  config.augment.policy = "mocov2_cxr"
  config.moco = ml_collections.ConfigDict(dict(
      queue_size=queue_size, temperature=0.2, momentum=0.99, shuffle_bn_groups=groups))
  return config


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def info_nce_numpy(q, k, queue, temperature):
  """MoCo's loss written out per query: -log(exp(q.k+/T) / (exp(q.k+/T) + sum_j exp(q.n_j/T)))."""
  q, k, queue = _unit(q.astype(np.float64)), _unit(k.astype(np.float64)), queue.astype(np.float64)
  total = 0.0
  for qi, ki in zip(q, k):
    positive = np.exp(qi @ ki / temperature)
    negatives = sum(np.exp(qi @ n / temperature) for n in queue)
    total += -np.log(positive / (positive + negatives))
  return total / len(q)


@pytest.mark.parametrize("n,d,size,temperature",
                         [(4, 8, 16, 0.2), (16, 32, 40, 0.07), (5, 3, 7, 1.0)])
def test_info_nce_with_queue_matches_numpy(n, d, size, temperature):
  rng = np.random.default_rng(n * d + size)
  q, k = rng.normal(size=(n, d)), rng.normal(size=(n, d))
  queue = _unit(rng.normal(size=(size, d)))
  loss, _ = moco.info_nce_with_queue(q.astype(np.float32), k.astype(np.float32),
                                     queue.astype(np.float32), temperature)
  np.testing.assert_allclose(float(loss), info_nce_numpy(q, k, queue, temperature), rtol=1e-5)


def test_info_nce_accuracy_and_preference():
  rng = np.random.default_rng(0)
  q = rng.normal(size=(8, 16)).astype(np.float32)
  queue = _unit(rng.normal(size=(32, 16))).astype(np.float32)
  aligned, accuracy = moco.info_nce_with_queue(q, q + 0.01, queue, 0.2)
  unrelated, _ = moco.info_nce_with_queue(q, q[::-1].copy(), queue, 0.2)
  assert float(aligned) < float(unrelated)
  assert float(accuracy) == 1.0


def test_enqueue_one_batch():
  queue = np.zeros((5, 2), np.float32)
  keys = np.arange(4, dtype=np.float32).reshape(2, 2) + 1
  new_queue, ptr = moco.enqueue(queue, jnp.int32(0), keys)
  np.testing.assert_array_equal(new_queue[:2], keys)
  np.testing.assert_array_equal(new_queue[2:], 0)
  assert int(ptr) == 2 and ptr.dtype == jnp.int32


def test_enqueue_wraps_around():
  queue = np.zeros((5, 1), np.float32)
  keys = np.array([[1.0], [2.0], [3.0]], np.float32)
  new_queue, ptr = moco.enqueue(queue, jnp.int32(4), keys)  # ptr + B = 7 > K = 5
  np.testing.assert_array_equal(new_queue[:, 0], [2.0, 3.0, 0.0, 0.0, 1.0])
  assert int(ptr) == 2


def test_enqueue_is_a_fifo_of_the_last_keys():
  """Over many batches (K not a multiple of B) the queue holds exactly the last K keys,
  the oldest overwritten first, with key number j at row j mod K."""
  size, batch, steps = 7, 3, 10
  queue, ptr = jnp.zeros((size, 1)), jnp.int32(0)
  step = jax.jit(moco.enqueue)
  for s in range(steps):
    keys = jnp.arange(s * batch, (s + 1) * batch, dtype=jnp.float32)[:, None]
    queue, ptr = step(queue, ptr, keys)
    pushed = (s + 1) * batch
    assert int(ptr) == pushed % size
    expected = np.zeros(size)
    for j in range(max(0, pushed - size), pushed):  # the last K keys pushed
      expected[j % size] = j
    np.testing.assert_array_equal(np.asarray(queue)[:, 0], expected)


class _TinyBackbone(nn.Module):
  """One conv + BN: the unit tests need BatchNorm, not depth (ResNet runs in the loop test)."""

  @nn.compact
  def __call__(self, x, train=True):
    x = nn.Conv(4, (3, 3), strides=(2, 2), use_bias=False)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
    return jnp.mean(x, axis=(1, 2))


def _setup(base_config, groups=2):
  config = _moco_config(base_config, groups=groups)
  config.moco.momentum = 0.5  # a large (1 - m) makes any gradient through the keys obvious
  config.model.projector_dim = 8
  model = encoder.Encoder(backbone=_TinyBackbone(), projector=heads.MLPHead(16, 8))
  images = jax.random.uniform(jax.random.key(0), (16, 28, 28, 1))
  variables = jax.jit(lambda x: model.init(jax.random.key(1), x, train=True))(images)
  extra = moco.MoCo().init_extra_state(variables, config)
  # Make the key encoder differ from the query encoder, as it does after a few steps.
  extra["key_params"] = jax.tree_util.tree_map(lambda x: x * 0.9, extra["key_params"])
  return config, model, images, variables, extra


def test_no_gradient_reaches_the_key_encoder(synthetic_config):
  config, model, images, variables, extra = _setup(synthetic_config)
  view2 = images[:, ::-1]

  floats = {k: v for k, v in extra.items() if k != "queue_ptr"}  # what can carry a gradient

  def loss(params, floats):
    full_extra = dict(floats, queue_ptr=extra["queue_ptr"])
    return moco.MoCo().loss_fn(params, variables["batch_stats"], full_extra, images, view2,
                               jax.random.key(2), 0, model=model, config=config)

  (_, (_, _, new_extra)), (grad_params, grad_extra) = jax.jit(
      jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(variables["params"], floats)
  assert set(grad_extra) == {"key_params", "key_batch_stats", "queue"}
  for leaf in jax.tree_util.tree_leaves(grad_extra):
    np.testing.assert_array_equal(leaf, 0.0)

  # The query gradient equals that of the loss with the keys as constants.
  keys = new_extra["queue"][:16]  # ptr was 0: this batch's keys

  def constant_key_loss(params):
    q, _ = moco.grouped_apply(model, {"params": params, "batch_stats": variables["batch_stats"]},
                              images, config.moco.shuffle_bn_groups)
    return moco.info_nce_with_queue(q, keys, extra["queue"], config.moco.temperature)[0]

  expected = jax.jit(jax.grad(constant_key_loss))(variables["params"])
  # atol 1e-5 on gradients of order 0.1: float32 sums fused differently by XLA in the two
  # programs (jax 0.10.2 on CPU: 1.6e-6 on one entry); a gradient leaking through the
  # keys would differ by far more.
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                         grad_params, expected)


def test_shuffling_bn_takes_statistics_per_group(synthetic_config):
  config, model, images, variables, _ = _setup(synthetic_config)
  apply = jax.jit(lambda x: model.apply(variables, x, train=True, mutable=["batch_stats"])[0][1])
  z, _ = moco.grouped_apply(model, variables, images, 2)
  np.testing.assert_allclose(z, jnp.concatenate([apply(images[:8]), apply(images[8:])]),
                             rtol=1e-3, atol=1e-4)
  assert np.max(np.abs(z - apply(images))) > 1e-2  # global statistics give other outputs

  rng = jax.random.key(3)
  keys, _ = moco.shuffled_keys(model, variables, images, rng, 2)
  permutation = np.asarray(jax.random.permutation(rng, 16))
  shuffled = jnp.concatenate([apply(images[permutation[:8]]), apply(images[permutation[8:]])])
  expected = np.empty_like(shuffled)
  expected[permutation] = shuffled  # row i of the result belongs to image i
  np.testing.assert_allclose(keys, expected, rtol=1e-3, atol=1e-4)


def test_config_checks(synthetic_config):
  config = _moco_config(synthetic_config, queue_size=8)
  with pytest.raises(ValueError, match="queue_size"):
    moco.MoCo().check_config(config)
  config = _moco_config(synthetic_config, groups=3)
  with pytest.raises(ValueError, match="shuffle_bn_groups"):
    moco.MoCo().check_config(config)


@pytest.mark.parametrize("name",
                         ["moco_pneumoniamnist", "moco_cxr_resnet18", "moco_cxr_densenet121"])
def test_config_files(name):
  config = configuration.load_config_file(str(REPO_ROOT / "configs" / f"{name}.py"))
  assert config.method == "moco" and config.augment.policy == "mocov2_cxr"
  assert set(config.moco) == {"queue_size", "temperature", "momentum", "shuffle_bn_groups"}
  moco.MoCo().check_config(config)


def _saved_state(workdir, step):
  manager = ocp.CheckpointManager((workdir / "checkpoints").absolute(),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]


def test_training_loop_resumes_bitwise_and_fills_the_queue(synthetic_config, tmp_path):
  config = _moco_config(synthetic_config)
  config.num_steps, config.checkpoint_every, config.log_every = 4, 2, 2
  workdir = tmp_path / "run"
  pretrain.run(config, workdir)
  uninterrupted = _saved_state(workdir, 4)

  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [l["step"] for l in lines] == [2, 4]
  assert all(np.isfinite(l["loss"]) and l["loss"] > 0 for l in lines)
  # Logged scalars are interval means: the pointer after steps 1-2 (16, 32), then 3-4 (8, 24).
  assert [l["queue_ptr"] for l in lines] == [np.mean([16, 32]), np.mean([48 % 40, 64 % 40])]
  extra = uninterrupted["extra"]
  assert int(extra["queue_ptr"]) == 24
  # 64 keys went into a queue of 40: every initial random row has been overwritten.
  initial = moco.MoCo().init_extra_state({"params": {}}, config)["queue"]
  assert not np.any(np.all(np.isclose(np.asarray(extra["queue"]), np.asarray(initial)), axis=1))
  np.testing.assert_allclose(np.linalg.norm(extra["queue"], axis=1), 1.0, rtol=1e-5)

  # Preemption right after the step-2 checkpoint: steps 3-4 are run again.
  shutil.rmtree(workdir / "checkpoints" / "4")
  pretrain.run(config, workdir)
  resumed = dict(jax.tree_util.tree_leaves_with_path(_saved_state(workdir, 4)))
  leaves = jax.tree_util.tree_leaves_with_path(uninterrupted)
  assert len(leaves) == len(resumed)
  for part in ("params", "key_params", "key_batch_stats", "'queue'", "queue_ptr"):
    assert any(part in jax.tree_util.keystr(path) for path, _ in leaves), part
  for path, a in leaves:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(resumed[path]), err_msg=str(path))

"""MoCo v2: momentum contrast with a queue of negative keys (He et al. 2020; Chen et al. 2020).

The query encoder (backbone + MLP projector) is trained; the key encoder is an EMA copy of
it held in `extra`, with a FIFO queue of the last K l2-normalised keys. Each query is
classified (InfoNCE, temperature T) against its own key and the K queued keys.

As in MoCo v2's code the loss is not symmetrised: view1 is the query, view2 the key. (MoCo v3
symmetrises and drops the queue.)

Shuffling BN. With BatchNorm, the query and its positive key computed from the same batch
share that batch's statistics; keys in the queue were normalised with other batches'
statistics, so the network can pick out the positive by that signature and "cheat". MoCo
computes BN per GPU and shuffles the key batch across GPUs, so a query and its key are
normalised over different random subsets. BN over the whole global batch (SyncBN, which is
what jit over a mesh gives) is not enough (facebookresearch/moco#46): the positive still
shares the current batch's statistics. So both encoders here split the global batch into
`moco.shuffle_bn_groups` groups ("virtual GPUs") and take BN statistics (backbone and
projector) per group; the key batch is randomly permuted before grouping and restored after.
The result does not depend on the device count. shuffle_bn_groups=1 gives plain global BN
(what MoCo's code does on a single GPU).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from medssl_jax import errors
from medssl_jax.methods import base
from medssl_jax.methods import common
from medssl_jax.methods import monitors
from medssl_jax.models import encoder as encoder_lib

# Folded into the seed so the initial queue does not reuse the network's init key.
_QUEUE_SEED_SALT = 0x6D6F636F

def info_nce_with_queue(q, k, queue, temperature):
  """MoCo's (1 + K)-way InfoNCE: each query against its key (label 0) and the queued keys.

  q, k: (N, d) queries and their positive keys (normalised here); queue: (K, d), already
  l2-normalised. Returns (mean loss, top-1 accuracy of picking the positive).
  """
  q = common.l2_normalize(q.astype(jnp.float32))
  k = common.l2_normalize(k.astype(jnp.float32))
  positive = jnp.sum(q * k, axis=-1, keepdims=True)
  negatives = q @ queue.astype(jnp.float32).T
  logits = jnp.concatenate([positive, negatives], axis=-1) / temperature
  loss = jnp.mean(jax.nn.logsumexp(logits, axis=-1) - logits[:, 0])
  accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == 0)
  return loss, accuracy


def enqueue(queue, ptr, keys):
  """Writes `keys` (B, d) over the oldest entries, from `ptr` with wrap-around.

  K need not be a multiple of B, but B <= K (checked in MoCo.check_config). Returns (queue, ptr).
  """
  queue = jnp.asarray(queue)
  size, batch = queue.shape[0], keys.shape[0]
  index = (ptr + jnp.arange(batch)) % size
  queue = queue.at[index].set(keys.astype(queue.dtype))
  return queue, ((ptr + batch) % size).astype(jnp.int32)


def grouped_apply(model, variables, images, groups):
  """Projections of `images` in train mode, BatchNorm statistics per contiguous group.

  Returns (projections (N, d), batch_stats averaged over the groups' running updates).
  """
  if groups == 1:
    (_, z), updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
    return z, updates["batch_stats"]
  n = images.shape[0]

  def apply(x):
    (_, z), updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    return z, updates["batch_stats"]
  z, stats = jax.vmap(apply)(images.reshape(groups, n // groups, *images.shape[1:]))
  return z.reshape(n, -1), jax.tree_util.tree_map(lambda s: jnp.mean(s, axis=0), stats)


def shuffled_keys(model, variables, images, rng, groups):
  """Key projections with MoCo's shuffling BN: permute, encode per group, unpermute."""
  if groups == 1:
    return grouped_apply(model, variables, images, 1)  # global BN: order is irrelevant
  permutation = jax.random.permutation(rng, images.shape[0])
  z, stats = grouped_apply(model, variables, images[permutation], groups)
  return z[jnp.argsort(permutation)], stats


class MoCo(base.Method):
  section = "moco"
  structural_keys = ("queue_size",)

  def defaults(self) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "queue_size": 65536,      # negative keys; must be >= batch_size
        "temperature": 0.2,
        "momentum": 0.999,        # key encoder EMA
        "shuffle_bn_groups": 8,   # BN groups (MoCo: 8 GPUs x 32); must divide batch_size; 1 = global BN
    })

  def check_config(self, config: ml_collections.ConfigDict) -> None:
    queue_size, groups = config.moco.queue_size, config.moco.shuffle_bn_groups
    if config.batch_size > queue_size:
      raise errors.UserError(f"moco.queue_size={queue_size} must be at least "
                             f"batch_size={config.batch_size}: one batch of keys is enqueued per step")
    if groups < 1 or config.batch_size % groups:
      raise errors.UserError(f"moco.shuffle_bn_groups={groups} must be >= 1 and divide "
                             f"batch_size={config.batch_size}")

  def create_model(self, config: ml_collections.ConfigDict):
    return encoder_lib.create_encoder(config.model)

  def init_extra_state(self, variables, config):
    """Key encoder = copy of the query encoder; queue = random unit vectors; ptr = 0."""
    key = jax.random.fold_in(jax.random.key(config.seed), _QUEUE_SEED_SALT)
    queue = jax.random.normal(key, (config.moco.queue_size, config.model.projector_dim), jnp.float32)
    return {
        "key_params": common.fresh_copy(variables["params"]),
        "key_batch_stats": common.fresh_copy(variables.get("batch_stats", {})),
        "queue": common.l2_normalize(queue),
        "queue_ptr": jnp.zeros((), jnp.int32),
    }

  def loss_fn(self, params, batch_stats, extra, view1, view2, rng, step, *, model, config):
    del step
    moco = config.moco
    groups = moco.shuffle_bn_groups
    q, new_batch_stats = grouped_apply(model, {"params": params, "batch_stats": batch_stats},
                                       view1, groups)
    # As in MoCo's code: update the key encoder from the current query weights, then encode.
    key_params = common.ema(extra["key_params"], params, moco.momentum)
    k, key_batch_stats = shuffled_keys(
        model, {"params": key_params, "batch_stats": extra["key_batch_stats"]}, view2, rng, groups)
    k = jax.lax.stop_gradient(common.l2_normalize(k))
    # Logits use the queue before this batch is added, so a key is never its own negative;
    # the queue holds constants (detached in MoCo's code too).
    negatives = jax.lax.stop_gradient(extra["queue"])
    loss, accuracy = info_nce_with_queue(q, k, negatives, moco.temperature)
    # The arrays are global under jit, so the whole global batch's keys are enqueued.
    queue, queue_ptr = enqueue(extra["queue"], extra["queue_ptr"], k)
    new_extra = {"key_params": key_params,
                 "key_batch_stats": jax.lax.stop_gradient(key_batch_stats),
                 "queue": queue, "queue_ptr": queue_ptr}
    metrics = {"loss": loss, "contrastive_accuracy": accuracy, "queue_ptr": queue_ptr,
               **monitors.collapse_metrics(q)}
    return loss, (metrics, new_batch_stats, new_extra)

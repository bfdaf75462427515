"""Augmentation speed: images/s of every op in augment.OPS and every named policy.

  python benchmarks/augment_speed.py [--batch=256] [--size=224] [--channels=3] [--steps=10] \
      [--config=configs/simclr_pneumoniamnist.py [--config.key=value ...]]

Each op runs alone as a one-op policy (so it includes the one bilinear resample every policy
does; "none" is that resample alone) on a uint8 batch already on the first device, --size px
in and out, jitted, after one untimed call (compilation), timed to block_until_ready.

With --config: the share of that config's train step (data on the devices, as
benchmarks/throughput.py) spent augmenting, measured two ways: augment_batch for both views
jitted alone vs the whole step, and the whole step vs the same step with policy "none".
The second is what turning augmentation off would save, but as a difference of two timings
it is noise when augmentation is cheap (use --steps=10 or more); the first can differ a
little since XLA schedules the step as one program.
"""
import functools
import time

import jax
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from medssl_jax import augment
from medssl_jax.loop import pretrain
from medssl_jax.loop import sharding
from medssl_jax.methods import base as method_base

_BATCH = flags.DEFINE_integer("batch", 256, "Images per augment_batch call.")
_SIZE = flags.DEFINE_integer("size", 224, "Side of the input and output images in pixels.")
_CHANNELS = flags.DEFINE_integer("channels", 3, "Channels: 1 (grey) or 3 (RGB).")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed calls per measurement.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Optional pretraining config: also time augmentation's share of its step.")


def _seconds_per_call(fn, *args, keys):
  """Mean seconds of fn(*args, key) over `keys`, after one untimed (compiling) call."""
  jax.block_until_ready(fn(*args, keys[0]))
  start = time.perf_counter()
  for key in keys:
    out = fn(*args, key)
  jax.block_until_ready(out)  # one device runs calls in order: the last done means all done
  return (time.perf_counter() - start) / len(keys)


def _augment_table(images, keys):
  """Prints images/s and ms per batch for each op alone and each named policy."""
  print(f"{'op / policy':<22} {'images/s':>12} {'ms/batch':>10}")
  cases = [(f"op {name}", (op,)) for name, op in augment.OPS.items()]
  cases += [(f"policy {name}", name) for name in augment.POLICIES]
  for label, policy in cases:
    fn = jax.jit(functools.partial(augment.augment_batch, policy=policy, out_size=_SIZE.value))
    seconds = _seconds_per_call(fn, images, keys=keys)
    print(f"{label:<22} {images.shape[0] / seconds:12.1f} {1e3 * seconds:10.2f}")


def _train_step_seconds(config, steps):
  """Seconds per train step of `config` on one batch kept on the devices."""
  mesh = sharding.create_mesh()
  source, state, step_fn = pretrain.fresh_state_and_step(config, mesh)
  local_batch = pretrain.batch_arrays(next(pretrain.make_data_iterator(config, source)))
  batch = sharding.to_global(local_batch, mesh)
  base_key = jax.random.key(1)
  state, metrics = step_fn(state, batch, base_key)  # compile
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = step_fn(state, batch, base_key)
  jax.block_until_ready(metrics)
  return (time.perf_counter() - start) / steps, batch


def _augment_both_views_seconds(config, batch, steps):
  """Seconds for the train step's two augment_batch calls alone, on the same batch."""
  policies = method_base.view_policies(config)
  size = config.augment.size

  @jax.jit
  def both_views(batch, key):
    key1, key2 = jax.random.split(key)
    images2 = batch.get("view2", batch["view1"])
    return (augment.augment_batch(batch["view1"], key1, policies[0], size),
            augment.augment_batch(images2, key2, policies[1], size))

  keys = [jax.random.key(i) for i in range(steps)]
  return _seconds_per_call(both_views, batch, keys=keys)


def _train_step_share(config, steps):
  step_s, batch = _train_step_seconds(config, steps)
  augment_s = _augment_both_views_seconds(config, batch, steps)
  plain = config.copy_and_resolve_references()
  plain.augment.policy, plain.augment.policy_view2 = "none", ""
  plain_s, _ = _train_step_seconds(plain, steps)
  views = f"{config.augment.policy} / {config.augment.policy_view2 or config.augment.policy}"
  print(f"\n{config.method} {config.model.name} width {config.model.width}, global batch "
        f"{config.batch_size}, {config.augment.size} px, policies {views}, "
        f"{jax.device_count()} x {jax.devices()[0].device_kind}")
  print(f"  train step:                 {1e3 * step_s:9.2f} ms")
  print(f"  train step, policy 'none':  {1e3 * plain_s:9.2f} ms")
  print(f"  both views' augment alone:  {1e3 * augment_s:9.2f} ms")
  print(f"  augmentation share of the step: {augment_s / step_s:.1%} (alone / step), "
        f"{(step_s - plain_s) / step_s:.1%} (step - step with 'none', / step)")


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  shape = (_BATCH.value, _SIZE.value, _SIZE.value, _CHANNELS.value)
  images = jax.device_put(rng.integers(0, 256, size=shape, dtype=np.uint8), jax.devices()[0])
  keys = [jax.random.key(i) for i in range(_STEPS.value)]
  print(f"augment_batch: {shape[0]} x {shape[1]}x{shape[2]}x{shape[3]} uint8 -> {_SIZE.value} px "
        f"float32 on 1 x {jax.devices()[0].device_kind} ({jax.default_backend()})")
  _augment_table(images, keys)
  if _CONFIG.value is not None:
    _train_step_share(_CONFIG.value, _STEPS.value)


if __name__ == "__main__":
  app.run(main)

"""Training throughput: images/s per device with real data and with data already on the device.

  python benchmarks/throughput.py --config=configs/simclr_pneumoniamnist.py [--config.key=value ...] \
      [--steps=20] [--warmup=3]

Runs the real jitted train step of the config's method, backbone, resolution and batch.
"device": one batch kept on the device, so only compute is timed. "real data": every step
takes the next batch from the grain pipeline through the device prefetch, as training does.
The host share is the fraction of a real-data step spent waiting for the next batch.
"""
import time

import jax
from absl import app
from absl import flags
from ml_collections import config_flags

from medssl_jax.loop import pretrain
from medssl_jax.loop import sharding

_CONFIG = config_flags.DEFINE_config_file("config", None, "Pretraining config file.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per measurement.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first (compilation).")


def _time_steps(step_fn, state, next_batch, base_key, steps):
  """Returns (state, seconds in total, seconds waiting for batches)."""
  waiting = 0.0
  start = time.perf_counter()
  for _ in range(steps):
    t = time.perf_counter()
    batch = next_batch()
    waiting += time.perf_counter() - t
    state, metrics = step_fn(state, batch, base_key)
  jax.block_until_ready(metrics)
  return state, time.perf_counter() - start, waiting


def main(argv):
  del argv
  config = _CONFIG.value
  mesh = sharding.create_mesh()
  source, state, step_fn = pretrain.fresh_state_and_step(config, mesh)
  iterator = sharding.DevicePrefetch(pretrain.make_data_iterator(config, source), mesh,
                                     size=config.data.prefetch_to_device, transform=pretrain.batch_arrays)
  real_batch = lambda: next(iterator)
  device_batch = real_batch()
  base_key = jax.random.key(1)

  state, _, _ = _time_steps(step_fn, state, lambda: device_batch, base_key, _WARMUP.value)
  state, device_s, _ = _time_steps(step_fn, state, lambda: device_batch, base_key, _STEPS.value)
  state, real_s, waiting_s = _time_steps(step_fn, state, real_batch, base_key, _STEPS.value)

  devices = jax.device_count()
  images = config.batch_size * _STEPS.value
  device_kind = jax.devices()[0].device_kind
  print(f"{config.method} {config.model.name} width {config.model.width} {config.model.dtype}, "
        f"{config.augment.size} px, global batch {config.batch_size}, {devices} x {device_kind}")
  print(f"  data on device: {images / device_s:10.1f} images/s  "
        f"({images / device_s / devices:.1f} per device)")
  print(f"  real data:      {images / real_s:10.1f} images/s  ({images / real_s / devices:.1f} per device)")
  print(f"  host pipeline share of a real-data step: {waiting_s / real_s:.1%}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)

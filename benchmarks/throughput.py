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


def measure(config, steps: int, warmup: int, mesh=None) -> dict:
  """Images/s of `config`'s train step with one batch kept on the device and with real data
  through grain and the device prefetch, and the host's share of a real-data step."""
  mesh = sharding.create_mesh() if mesh is None else mesh
  source, state, step_fn = pretrain.fresh_state_and_step(config, mesh)
  iterator = sharding.DevicePrefetch(pretrain.make_data_iterator(config, source), mesh,
                                     size=config.data.prefetch_to_device, transform=pretrain.batch_arrays)
  real_batch = lambda: next(iterator)
  device_batch = real_batch()
  base_key = jax.random.key(1)

  start = time.perf_counter()
  state, _, _ = _time_steps(step_fn, state, lambda: device_batch, base_key, warmup)
  warmup_s = time.perf_counter() - start
  state, device_s, _ = _time_steps(step_fn, state, lambda: device_batch, base_key, steps)
  state, real_s, waiting_s = _time_steps(step_fn, state, real_batch, base_key, steps)
  images = config.batch_size * steps
  return {"devices": mesh.devices.size, "device_kind": mesh.devices.flat[0].device_kind,
          "image_shape": list(source.image_shape), "warmup_s": warmup_s,
          "images_per_s_device_data": images / device_s, "images_per_s_real_data": images / real_s,
          "host_share": waiting_s / real_s}


def main(argv):
  del argv
  config = flags.FLAGS.config
  result = measure(config, flags.FLAGS.steps, flags.FLAGS.warmup)
  devices = result["devices"]
  print(f"{config.method} {config.model.name} width {config.model.width} {config.model.dtype}, "
        f"{config.augment.size} px, global batch {config.batch_size}, {devices} x {result['device_kind']}")
  device, real = result["images_per_s_device_data"], result["images_per_s_real_data"]
  print(f"  data on device: {device:10.1f} images/s  ({device / devices:.1f} per device)")
  print(f"  real data:      {real:10.1f} images/s  ({real / devices:.1f} per device)")
  print(f"  host pipeline share of a real-data step: {result['host_share']:.1%}")


def define_flags():
  """Only when run as a script: benchmarks/device_check.py imports measure()."""
  config_flags.DEFINE_config_file("config", None, "Pretraining config file.")
  flags.DEFINE_integer("steps", 20, "Timed steps per measurement.")
  flags.DEFINE_integer("warmup", 3, "Untimed steps first (compilation).")
  flags.mark_flags_as_required(["config"])


if __name__ == "__main__":
  define_flags()
  app.run(main)

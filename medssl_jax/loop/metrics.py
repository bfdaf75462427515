"""Training scalars averaged over each logging interval, accumulated on the device.

The jitted loop step adds each step's metrics into a small pytree (`accumulate`); the host
reads it once per interval (`means`), so a logged value is the interval's mean, not a sample
of the step that happens to fall on log_every. clu.metrics.Average does the same for a fixed
set of names, but each method returns its own metrics and clu has no min/max: this is the
few lines it takes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def zeros(step_metrics) -> dict:
  """An empty interval for metrics shaped like `step_metrics` (arrays or ShapeDtypeStructs)."""
  averaged = {k: v for k, v in step_metrics.items() if k != "finite"}
  return {
      "sum": {k: jnp.zeros(v.shape, jnp.float32) for k, v in averaged.items()},
      "count": jnp.zeros((), jnp.int32),     # steps whose update was applied (finite)
      "skipped": jnp.zeros((), jnp.int32),   # non-finite steps
      "first_nonfinite": jnp.zeros((), jnp.int32),  # the step number of the first; 0 = none
      "loss_min": jnp.full((), jnp.inf, jnp.float32),
      "loss_max": jnp.full((), -jnp.inf, jnp.float32),
  }


def accumulate(interval: dict, step_metrics: dict, step: jax.Array) -> dict:
  """`interval` with one more step (number `step`) added: a non-finite step is counted as
  skipped and left out of the means, so one NaN does not hide the rest of the interval."""
  finite = step_metrics["finite"]
  loss = step_metrics["loss"].astype(jnp.float32)
  sums = {k: s + jnp.where(finite, step_metrics[k].astype(jnp.float32), 0.0)
          for k, s in interval["sum"].items()}
  first = interval["first_nonfinite"]
  return {
      "sum": sums,
      "count": interval["count"] + finite.astype(jnp.int32),
      "skipped": interval["skipped"] + (~finite).astype(jnp.int32),
      "first_nonfinite": jnp.where((first == 0) & ~finite, step.astype(jnp.int32), first),
      "loss_min": jnp.where(finite, jnp.minimum(interval["loss_min"], loss), interval["loss_min"]),
      "loss_max": jnp.where(finite, jnp.maximum(interval["loss_max"], loss), interval["loss_max"]),
  }


def means(interval: dict) -> dict:
  """Host scalars of a (device_get) interval: each metric's mean over its applied steps (NaN
  when none was), loss_min, loss_max and skipped_steps."""
  count = np.int32(interval["count"])
  out = {}
  for name, total in interval["sum"].items():
    total = np.asarray(total, np.float32)
    out[name] = total / np.float32(count) if count else np.full_like(total, np.nan)
  out["loss_min"] = interval["loss_min"] if count else np.nan
  out["loss_max"] = interval["loss_max"] if count else np.nan
  out["skipped_steps"] = int(interval["skipped"])
  return out

"""A trace of a few steps on demand (config.profile): jax.profiler writes it in WORKDIR/profile
for TensorBoard's profile plugin, and a Perfetto trace (perfetto_trace.json.gz) beside it.

clu.profiler only wraps jax.profiler.start_trace/stop_trace by duration, not by step, so
this calls jax.profiler directly.
"""
from __future__ import annotations

import jax
from absl import logging

from medssl_jax import errors
from medssl_jax import paths


class StepProfiler:
  """Starts a trace before step `start_step` and stops it after `num_steps` steps."""

  def __init__(self, profile_config, workdir):
    self.start_step = int(profile_config.start_step)
    self.num_steps = int(profile_config.num_steps)
    if self.start_step < 0 or (self.start_step and self.num_steps < 1):
      raise errors.UserError("profile.start_step must be >= 0 (0 = off) and profile.num_steps >= 1")
    self.directory = paths.path(workdir) / "profile"
    self._active = False

  def before(self, step: int) -> None:
    if self.start_step and step == self.start_step:
      self.directory.mkdir(parents=True, exist_ok=True)
      jax.profiler.start_trace(str(self.directory), create_perfetto_trace=True)
      self._active = True

  def after(self, step: int, state) -> None:
    if self._active and step >= self.start_step + self.num_steps - 1:
      self.stop(state)

  def stop(self, state) -> None:
    if self._active:
      jax.block_until_ready(state)  # the traced steps ran to the end, not just dispatched
      jax.profiler.stop_trace()
      self._active = False
      logging.info("profile of steps %d-%d written to %s", self.start_step,
                   self.start_step + self.num_steps - 1, self.directory)

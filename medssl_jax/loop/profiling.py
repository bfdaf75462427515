"""A trace of a few steps on demand (config.profile): jax.profiler writes it in WORKDIR/profile
for TensorBoard's profile plugin, and a Perfetto trace (perfetto_trace.json.gz) beside it.

clu.profiler only wraps jax.profiler.start_trace/stop_trace by duration, not by step, so
this calls jax.profiler directly. jax.profiler writes to local disk only, so for a bucket
workdir the trace goes to a local temporary folder and is copied into WORKDIR/profile once
it stops.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import jax
from absl import logging

from medssl_jax import errors
from medssl_jax import paths


def copy_tree(local_dir: str, target) -> int:
  """Copies every file under local_dir to the same relative path under target (local or
  bucket); returns the number of files."""
  count = 0
  for root, _, files in os.walk(local_dir):
    for name in files:
      source = os.path.join(root, name)
      destination = paths.path(target) / os.path.relpath(source, local_dir)
      destination.parent.mkdir(parents=True, exist_ok=True)
      with open(source, "rb") as f:
        destination.write_bytes(f.read())
      count += 1
  return count


class StepProfiler:
  """Starts a trace before step `start_step` and stops it after `num_steps` steps."""

  def __init__(self, profile_config, workdir):
    self.start_step = int(profile_config.start_step)
    self.num_steps = int(profile_config.num_steps)
    if self.start_step < 0 or (self.start_step and self.num_steps < 1):
      raise errors.UserError("profile.start_step must be >= 0 (0 = off) and profile.num_steps >= 1")
    self.directory = paths.path(workdir) / "profile"
    self._local = None  # where jax.profiler writes while tracing
    self._active = False

  def before(self, step: int) -> None:
    if self.start_step and step == self.start_step:
      if paths.is_remote(self.directory):
        self._local = tempfile.mkdtemp(prefix="medssl_profile_")
      else:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._local = str(self.directory)
      jax.profiler.start_trace(self._local, create_perfetto_trace=True)
      self._active = True

  def after(self, step: int, state) -> None:
    if self._active and step >= self.start_step + self.num_steps - 1:
      self.stop(state)

  def stop(self, state) -> None:
    if not self._active:
      return
    jax.block_until_ready(state)  # the traced steps ran to the end, not just dispatched
    jax.profiler.stop_trace()
    self._active = False
    if paths.is_remote(self.directory):
      copied = copy_tree(self._local, self.directory)
      shutil.rmtree(self._local, ignore_errors=True)
      logging.info("profile: %d files copied to %s", copied, self.directory)
    logging.info("profile of steps %d-%d written to %s", self.start_step,
                 self.start_step + self.num_steps - 1, self.directory)

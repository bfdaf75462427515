"""Stopping cleanly on preemption, and time-based checkpoints that every process agrees on.

On one process a SIGTERM handler sets a flag; the loop saves a checkpoint and returns, and
the binary exits 0. With several processes, jax.distributed's preemption sync manager (it
listens for SIGTERM on every host) picks a step that all processes reach, so they save the
same step together.
"""
from __future__ import annotations

import signal
import threading
import time

import jax
from jax.experimental import multihost_utils


class PreemptionWatch:
  """Context manager: `should_stop(step)` turns True once a SIGTERM was received."""

  def __init__(self):
    self._multi_process = jax.process_count() > 1
    self._received = threading.Event()
    self._previous_handler = None

  def __enter__(self):
    if not self._multi_process and threading.current_thread() is threading.main_thread():
      self._previous_handler = signal.signal(signal.SIGTERM, lambda *_: self._received.set())
    return self

  def __exit__(self, *exc):
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)

  def should_stop(self, step: int) -> bool:
    if self._multi_process:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._received.is_set()


class TimedSaves:
  """True every `minutes` of wall time, decided by process 0 so all processes save together."""

  def __init__(self, minutes: float):
    self._seconds = minutes * 60
    self._last = time.monotonic()

  def due(self) -> bool:
    if self._seconds <= 0:
      return False
    due = time.monotonic() - self._last >= self._seconds
    if jax.process_count() > 1:
      due = bool(multihost_utils.broadcast_one_to_all(due))
    if due:
      self._last = time.monotonic()
    return due

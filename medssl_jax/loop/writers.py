"""Metrics to TensorBoard event files and a JSONL file, and a progress line with images/s and ETA.

Only process 0 writes. TensorBoard files come from tensorboardX, which needs no TensorFlow
and writes gs:// itself (through google-cloud-storage).
"""
from __future__ import annotations

import json
import time

import jax
import numpy as np
from absl import logging

from medssl_jax import paths


def _finite_or_none(value):
  # Strict JSON has no NaN/Infinity: a non-finite value is written as null.
  if isinstance(value, float) and not np.isfinite(value):
    return None
  if isinstance(value, list):
    return [_finite_or_none(v) for v in value]
  return value


def _to_python(value):
  value = np.asarray(value)
  return _finite_or_none(value.item() if value.size == 1 else value.tolist())


class MetricWriter:
  """Appends {"step": s, **metrics} lines to workdir/metrics.jsonl and scalars to TensorBoard.

  A bucket object cannot be appended to, so in a bucket the file is rewritten whole at each
  write (its lines are kept in memory: a few per logging interval).
  """

  def __init__(self, workdir: paths.PathLike, filename: str = "metrics.jsonl"):
    self.enabled = jax.process_index() == 0
    if not self.enabled:
      return
    workdir = paths.path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    self.jsonl_path = workdir / filename
    self._remote_text = None
    if paths.is_remote(workdir):
      self._remote_text = self.jsonl_path.read_text() if self.jsonl_path.exists() else ""
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._tensorboard = SummaryWriter(str(workdir / "tensorboard"))

  def write_scalars(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    scalars = {k: _to_python(v) for k, v in scalars.items()}
    line = json.dumps({"step": int(step), **scalars}, allow_nan=False) + "\n"
    if self._remote_text is None:
      with self.jsonl_path.open("a") as f:
        f.write(line)
    else:
      self._remote_text += line
      self.jsonl_path.write_text(self._remote_text)
    for name, value in scalars.items():
      if isinstance(value, (int, float)):
        self._tensorboard.add_scalar(name, value, global_step=int(step))

  def write_text(self, tag: str, text: str) -> None:
    """Markdown text in TensorBoard's Text tab (shown as written: indented as code)."""
    if self.enabled:
      self._tensorboard.add_text(tag, "\n".join("    " + line for line in text.splitlines()))

  def write_hparams(self, hparams: dict) -> None:
    """`hparams` ({name: bool/int/float/str}) in TensorBoard's HParams tab, in this run's own
    event file (tensorboardX's add_hparams would make a separate run of it)."""
    if not self.enabled:
      return
    from tensorboardX.summary import hparams as hparams_summary  # pylint: disable=g-import-not-at-top
    for summary in hparams_summary(hparams, {}):
      self._tensorboard.file_writer.add_summary(summary)

  def close(self) -> None:
    if self.enabled:
      bucket_files = _bucket_event_files(self._tensorboard)
      self._tensorboard.close()
      for event_file in bucket_files:
        # tensorboardX uploads a gs:// event file again when it is garbage-collected, even
        # after close(): at exit, with the bucket unreachable, that retried for 2 minutes.
        event_file.close = lambda: None


def _bucket_event_files(summary_writer) -> list:
  """tensorboardX's open gs:// event-file objects (GCSRecordWriter) behind a SummaryWriter."""
  found = []
  for file_writer in (summary_writer.all_writers or {}).values():
    events = getattr(getattr(file_writer, "event_writer", None), "_ev_writer", None)
    record_file = getattr(getattr(events, "_py_recordio_writer", None), "_writer", None)
    if type(record_file).__name__ == "GCSRecordWriter":
      found.append(record_file)
  return found


def format_duration(seconds: float) -> str:
  seconds = int(max(0, seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class Progress:
  """Throughput, ETA and where the time went, measured between reports, excluding the first
  (compiling) interval."""

  def __init__(self, total_steps: int, global_batch: int, start_step: int = 0,
               num_devices: int | None = None):
    self.total_steps = total_steps
    self.global_batch = global_batch
    self.num_devices = num_devices  # the mesh's; None = every device
    self._last_step = start_step
    self._last_time = None

  def report(self, step: int, metrics: dict, data_wait_s: float | None = None) -> dict:
    """Returns throughput figures and logs one progress line (process 0). `data_wait_s`: the
    time the loop waited for batches since the last report."""
    now = time.perf_counter()
    figures = {}
    if self._last_time is not None and step > self._last_step:
      steps = step - self._last_step
      steps_per_s = steps / (now - self._last_time)
      images_per_s = steps_per_s * self.global_batch
      figures = {"steps_per_s": steps_per_s, "images_per_s": images_per_s,
                 "images_per_s_per_device": images_per_s / (self.num_devices or jax.device_count())}
      if data_wait_s is not None:
        # The loop waits for the device every step (the divergence check), so the time not
        # spent waiting for data is the device's (and dispatch).
        step_s = 1 / steps_per_s
        figures.update(step_time_s=step_s, data_wait_s=data_wait_s / steps,
                       device_time_s=max(0.0, step_s - data_wait_s / steps))
      eta = format_duration((self.total_steps - step) / steps_per_s)
      speed = f"{images_per_s:.1f} img/s, ETA {eta}"
    else:
      speed = "compiling/warming up"
    self._last_step, self._last_time = step, now
    if jax.process_index() == 0:
      loss = float(metrics.get("loss", float("nan")))
      spread = ""
      if "loss_min" in metrics:
        spread = f" [{float(metrics['loss_min']):.4f}, {float(metrics['loss_max']):.4f}]"
      logging.info("step %d/%d  loss %.4f%s  %s", step, self.total_steps, loss, spread, speed)
    return figures


class _DropLibraryInfo:
  """Drops INFO records logged from inside these libraries (Orbax logs each save in ~30 lines)."""

  def __init__(self, libraries):
    self._markers = tuple(f"/{name}/" for name in libraries)

  def filter(self, record) -> bool:
    return record.levelno >= 30 or not any(m in record.pathname for m in self._markers)


def quiet_library_logs(libraries=("orbax", "grain")) -> None:
  logging.get_absl_handler().addFilter(_DropLibraryInfo(libraries))

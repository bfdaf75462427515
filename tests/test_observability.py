"""Watching a run: interval means of the training scalars, the learning rate from the
optimizer's own schedule, norms, timings, the start-of-run overview in TensorBoard, strict
JSON in metrics.jsonl, and a profile on demand (loop/metrics.py, writers.py, overview.py,
profiling.py)."""
import json
import struct
import sys

import jax
import numpy as np
import pytest

from medssl_jax import errors
from medssl_jax.loop import optim
from medssl_jax.loop import pretrain
from medssl_jax.loop import sharding
from medssl_jax.loop import writers

STEPS = 5
DEVICES = 2  # a small mesh compiles faster than all eight, and still divides images/s


def _run(config, workdir):
  return pretrain.run(config, workdir, mesh=sharding.create_mesh(jax.devices()[:DEVICES]))


def _strict_lines(path):
  def refuse(token):
    raise AssertionError(f"non-strict JSON token {token} in {path}")
  return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def _config(log_every):
  import conftest  # pylint: disable=g-import-not-at-top
  import synthetic_data  # pylint: disable=g-import-not-at-top
  synthetic_data.register()
  config = conftest.make_tiny_config("")
  config.data.name = synthetic_data.NAME
  config.num_steps = STEPS
  config.log_every = log_every
  config.checkpoint_every = 100
  return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The same five steps logged every step, and logged once (with steps 2-3 profiled)."""
  every_step = tmp_path_factory.mktemp("every_step")
  _run(_config(1), every_step)
  once = tmp_path_factory.mktemp("once")
  config = _config(STEPS)
  config.profile.start_step, config.profile.num_steps = 2, 2
  _run(config, once)
  return every_step, once


def _f32_mean(values):
  # The device adds float32 step by step and divides by the count in float32.
  total = np.float32(0)
  for value in values:
    total = np.float32(total + np.float32(value))
  return float(total / np.float32(len(values)))


def test_logged_scalars_are_interval_means_of_the_per_step_values(runs):
  every_step, once = runs
  per_step = _strict_lines(every_step / "metrics.jsonl")
  assert [line["step"] for line in per_step] == list(range(1, STEPS + 1))
  [interval] = _strict_lines(once / "metrics.jsonl")
  assert interval["step"] == STEPS
  losses = [line["loss"] for line in per_step]
  assert len(set(losses)) == STEPS  # five different values: a sample would not pass
  for name in ("loss", "grad_norm", "param_norm", "update_norm", "lr", "contrastive_accuracy"):
    assert interval[name] == _f32_mean([line[name] for line in per_step]), name
  assert interval["loss_min"] == min(losses) and interval["loss_max"] == max(losses)
  assert interval["skipped_steps"] == 0


def test_logged_learning_rate_is_the_optimizer_schedule(runs):
  every_step, _ = runs
  config = _config(1)
  schedule = optim.lr_schedule(config.optim, config.batch_size, config.num_steps)
  lines = _strict_lines(every_step / "metrics.jsonl")
  # The update of step s (1-based) is optax's count s - 1.
  assert [line["lr"] for line in lines] == [float(np.float32(schedule(s - 1))) for s in range(1, STEPS + 1)]
  assert lines[0]["lr"] == 0.0 and lines[0]["update_norm"] == 0.0  # warmup starts at 0
  assert all(line["update_norm"] > 0 for line in lines[1:])


def test_timings_and_images_per_second_are_logged_after_the_first_interval(runs):
  every_step, _ = runs
  lines = _strict_lines(every_step / "metrics.jsonl")
  assert "images_per_s" not in lines[0]  # the compiling step is not a throughput
  for line in lines[1:]:
    assert line["images_per_s_per_device"] * DEVICES == pytest.approx(line["images_per_s"])
    assert line["step_time_s"] == pytest.approx(line["data_wait_s"] + line["device_time_s"])
    assert 0 <= line["data_wait_s"] < line["step_time_s"]


def _event_tags(workdir):
  """{tag: plugin name} of the summaries in the run's TensorBoard event files (TFRecords)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  tags = {}
  for path in (workdir / "tensorboard").iterdir():
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      for value in event.summary.value:
        tags[value.tag] = value.metadata.plugin_data.plugin_name
  return tags


def test_start_of_run_overview_is_in_tensorboard(runs):
  _, once = runs
  tags = _event_tags(once)
  for tag in ("run/devices", "run/parameters", "run/config"):
    assert tags.get(tag + "/text_summary") == "text", tags
  assert "_hparams_/experiment" in tags and "_hparams_/session_start_info" in tags
  assert "loss" in tags and "lr" in tags and "images_per_s" not in tags


def test_profile_trace_files_exist_and_are_not_empty(runs):
  _, once = runs
  traces = list((once / "profile").rglob("*.xplane.pb"))
  perfetto = list((once / "profile").rglob("perfetto_trace.json.gz"))
  assert traces and perfetto, list((once / "profile").rglob("*"))
  assert all(path.stat().st_size > 0 for path in traces + perfetto)
  # No profile unless asked for.
  every_step, _ = runs
  assert not (every_step / "profile").exists()


def test_bad_profile_setting_is_a_user_error(synthetic_config, tmp_path):
  synthetic_config.profile.start_step = -1
  with pytest.raises(errors.UserError, match="profile.start_step"):
    pretrain.run(synthetic_config, tmp_path)
  assert not list(tmp_path.iterdir())  # rejected before anything was written


def test_non_finite_values_are_written_as_null(tmp_path, monkeypatch):
  monkeypatch.setattr(writers.jax, "process_index", lambda: 0)
  writer = writers.MetricWriter(tmp_path)
  writer.write_scalars(1, {"loss": np.float32("nan"), "norm": float("inf"),
                           "per_class": np.array([1.0, np.nan]), "ok": 2.5})
  writer.close()
  [line] = _strict_lines(tmp_path / "metrics.jsonl")
  assert line == {"step": 1, "loss": None, "norm": None, "per_class": [1.0, None], "ok": 2.5}


def test_training_needs_no_tensorflow():
  import subprocess  # pylint: disable=g-import-not-at-top
  code = ("import sys; from medssl_jax.loop import pretrain, overview, metrics, profiling; "
          "print('tensorflow' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"

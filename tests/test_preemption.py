"""A run sent SIGTERM saves, exits 0, and the restarted command ends where an
uninterrupted run ends, bitwise."""
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from medssl_jax.loop import checkpointing

import conftest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _command(workdir, tiny_config):
  c = tiny_config
  return [sys.executable, "-m", "medssl_jax.cli.train", "--config=configs/simclr_pneumoniamnist.py",
          f"--workdir={workdir}", f"--config.data.dir={c.data.dir}", "--config.model.width=0.0625",
          "--config.model.projector_hidden_dim=32", "--config.model.projector_dim=16",
          "--config.batch_size=16", "--config.num_steps=40", "--config.log_every=1",
          "--config.checkpoint_every=100", "--config.optim.warmup_steps=2"]


def test_sigterm_saves_exits_zero_and_resumes_exactly(tiny_config, tmp_path):
  workdir = tmp_path / "run"
  env = dict(os.environ, XLA_FLAGS=conftest.xla_flags(1))
  process = subprocess.Popen(_command(workdir, tiny_config), cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  metrics = workdir / "metrics.jsonl"
  deadline = time.monotonic() + 300
  while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
    assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
    time.sleep(0.2)
  process.send_signal(signal.SIGTERM)
  output, _ = process.communicate(timeout=120)
  assert process.returncode == 0, output
  stopped_at = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert 2 <= stopped_at < 40, "SIGTERM should stop the run before its end"
  assert "preempted" in output

  restarted = subprocess.run(_command(workdir, tiny_config), cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=600)
  assert restarted.returncode == 0, restarted.stderr[-3000:]
  assert f"resumed from step {stopped_at}" in restarted.stderr

  # The same command, never interrupted, in the same environment (XLA's CPU code can differ
  # between a 1-device process and this test process's 8 simulated devices).
  uninterrupted = subprocess.run(_command(tmp_path / "uninterrupted", tiny_config), cwd=REPO, env=env,
                                 capture_output=True, text=True, timeout=600)
  assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
  _, expected, _ = checkpointing.restore_variables(tmp_path / "uninterrupted", 40)
  _, actual, _ = checkpointing.restore_variables(workdir, 40)
  jax.tree_util.tree_map(np.testing.assert_array_equal, expected, actual)

"""A normal run says nothing a user would read as a fault: the README's main job (train, then
the linear probe), at tiny scale, logs no warning or error and no INFO line from a library
(Orbax's read-only and "could not be restored" warnings, JAX's missing-libtpu notice)."""
import os
import re
import subprocess
import sys

import conftest
from conftest import REPO_ROOT

LOG_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ([\w.]+):\d+\]")
OWN_MODULES = {p.name for p in (REPO_ROOT / "medssl_jax").rglob("*.py")}
TINY = ["--config.model.width=0.0625", "--config.model.projector_hidden_dim=32",
        "--config.model.projector_dim=16", "--config.batch_size=16", "--config.num_steps=4",
        "--config.log_every=2", "--config.checkpoint_every=2", "--config.optim.warmup_steps=2"]


def _unwanted_lines(log: str) -> list[str]:
  unwanted = []
  for line in log.splitlines():
    match = LOG_LINE.match(line)
    if match and (match.group(1) != "I" or match.group(2) not in OWN_MODULES):
      unwanted.append(line)
    elif "Traceback" in line or line.lower().startswith(("warning", "error")):
      unwanted.append(line)
  return unwanted


def test_the_main_job_logs_nothing_to_worry_about(medmnist_dir, tmp_path):
  env = dict(os.environ, XLA_FLAGS=conftest.xla_flags(1), MEDSSL_DATA_DIR=str(medmnist_dir))
  workdir = tmp_path / "run"
  commands = [
      [sys.executable, "-m", "medssl_jax.cli.train", "--config=configs/simclr_pneumoniamnist.py",
       f"--workdir={workdir}", *TINY],
      [sys.executable, "-m", "medssl_jax.cli.evaluate", "--config=configs/eval/linear_probe.py",
       f"--config.pretrain_workdir={workdir}", f"--workdir={workdir / 'eval'}",
       "--config.baselines=('raw_pixels',)"],
  ]
  for command in commands:
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert _unwanted_lines(log) == [], log[-3000:]
  assert (workdir / "eval" / "results.json").exists()


def test_the_check_itself_catches_library_warnings_and_info():
  assert _unwanted_lines(
      "W1201 20:09:02.639873 139716313746304 checkpoint_manager.py:452] read_only=True\n"
      "I1201 20:08:00.088980 139862583561088 xla_bridge.py:849] Unable to initialize backend\n"
      "I1201 20:08:00.089727 139862583561088 train.py:35] JAX process 0/1\n") == [
          "W1201 20:09:02.639873 139716313746304 checkpoint_manager.py:452] read_only=True",
          "I1201 20:08:00.088980 139862583561088 xla_bridge.py:849] Unable to initialize backend"]

"""Launch scripts, checked without gcloud, SLURM or a network.

tpu_pod.sh: DRY_RUN=1 output, and a real run against a fake `gcloud` that executes the
remote commands in a local "worker home". slurm_gpu.sbatch: fake `srun`, `scancel` and
`scontrol` first on PATH record what the script asks of SLURM.
"""
import os
import pathlib
import shlex
import signal
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
TPU_POD = LAUNCH / "tpu_pod.sh"
SBATCH = LAUNCH / "slurm_gpu.sbatch"
# Arguments that break naive quoting: a space, both quote kinds, $ ; & and \ (must not expand).
TRAIN_ARGS = ["--config=configs/simclr_resnet50.py", "--workdir=gs://bucket/runs/r50",
              "--config.data.name=it's \"my\" set", "--config.data.dir=/data/$HOME;x&y\\z",
              "--config.batch_size=4096"]
TPU_ENV = {"TPU_NAME": "pod-a", "ZONE": "us-central2-b", "ACCELERATOR_TYPE": "v4-64",
           "TPU_VERSION": "tpu-ubuntu2204-base"}


def _write_executable(path: pathlib.Path, text: str) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  path.chmod(0o755)


def _wait_for(predicate, timeout=10.0):
  deadline = time.monotonic() + timeout
  while not predicate():
    assert time.monotonic() < deadline, "timed out"
    time.sleep(0.02)


def _read_argv(path: pathlib.Path) -> list[str]:
  return path.read_text().split("\0")[:-1]


@pytest.mark.parametrize("script", sorted(LAUNCH.glob("*.sh")) + sorted(LAUNCH.glob("*.sbatch")),
                         ids=lambda p: p.name)
def test_scripts_parse(script):
  result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", sorted(LAUNCH.glob("*.sh")) + sorted(LAUNCH.glob("*.py")),
                         ids=lambda p: p.name)
def test_scripts_with_a_shebang_are_executable(script):
  # The docs run them as launch/NAME; a missing mode bit fails only when a user tries.
  has_shebang = script.read_text().startswith("#!")
  assert has_shebang == os.access(script, os.X_OK), (
      f"{script.name}: shebang {has_shebang}, executable {os.access(script, os.X_OK)}")


def _dry_run(*args, **env):
  result = subprocess.run(["bash", str(TPU_POD), *args], capture_output=True, text=True,
                          env=dict(os.environ, DRY_RUN="1", **TPU_ENV, **env), timeout=30)
  assert result.returncode == 0, result.stderr
  commands = [shlex.split(line) for line in result.stdout.splitlines() if line.startswith("gcloud")]
  assert commands, result.stdout
  for argv in commands:
    assert argv[:4] == ["gcloud", "compute", "tpus", "tpu-vm"]
    assert argv[5] == "pod-a" or argv[5].startswith("pod-a:") or argv[4] == "scp"
    assert "--zone=us-central2-b" in argv
  return commands


def _remote_command(argv) -> str:
  assert "--worker=all" in argv
  (command,) = [a[len("--command="):] for a in argv if a.startswith("--command=")]
  return command


def test_tpu_dry_run_create_and_delete():
  (create,) = _dry_run("create", "--spot", "--project=my-proj")
  assert create[4:6] == ["create", "pod-a"]
  for flag in ["--accelerator-type=v4-64", "--version=tpu-ubuntu2204-base", "--spot",
               "--project=my-proj"]:
    assert flag in create
  (delete,) = _dry_run("delete")
  assert delete[4:6] == ["delete", "pod-a"] and "--quiet" in delete


def test_tpu_dry_run_install_and_copy():
  (install,) = _dry_run("install")
  words = shlex.split(_remote_command(install))
  pip_install = [".venv/bin/pip", "install", "-q", "-e", ".", "jax[tpu]"]
  assert any(words[i:i + len(pip_install)] == pip_install for i in range(len(words)))
  (clone,) = _dry_run("copy", "--repo=https://example.com/org/medssl-jax.git", "--ref=v1.0")
  remote = _remote_command(clone)
  assert "git clone --quiet https://example.com/org/medssl-jax.git medssl-jax" in remote
  assert "fetch --quiet origin v1.0" in remote
  scp, extract = _dry_run("copy")
  assert scp[4] == "scp" and scp[6] == "pod-a:medssl-jax-code.tar.gz" and "--worker=all" in scp
  assert "tar -xzf medssl-jax-code.tar.gz -C medssl-jax" in _remote_command(extract)


def test_tpu_dry_run_run_passes_training_args_intact():
  (run,) = _dry_run("run", "--", *TRAIN_ARGS)
  assert run[4:6] == ["ssh", "pod-a"]
  words = shlex.split(_remote_command(run))
  start = words.index("medssl_jax.cli.train") + 1
  assert words[start - 3:start] == [".venv/bin/python", "-m", "medssl_jax.cli.train"]
  assert words[start:words.index(">", start)] == ["--coordinator_address=auto", *TRAIN_ARGS]
  (logs,) = _dry_run("logs", "3")
  assert "--worker=3" in logs


def test_tpu_run_refuses_missing_workdir_and_name():
  result = subprocess.run(["bash", str(TPU_POD), "run", "--config=c.py"], capture_output=True,
                          text=True, env=dict(os.environ, DRY_RUN="1", **TPU_ENV))
  assert result.returncode == 2 and "--workdir" in result.stderr
  env = dict(os.environ, DRY_RUN="1", ZONE="z")
  env.pop("TPU_NAME", None)
  result = subprocess.run(["bash", str(TPU_POD), "delete"], capture_output=True, text=True, env=env)
  assert result.returncode == 2 and "TPU_NAME" in result.stderr


FAKE_GCLOUD = r"""#!/usr/bin/env bash
# Runs `tpu-vm ssh --command` locally in $FAKE_HOME and copies `tpu-vm scp` files there.
set -eu
printf '%s\n' "$*" >> "$FAKE_HOME/../gcloud.log"
case "$4" in
  ssh)
    for a in "$@"; do case "$a" in --command=*) cmd=${a#--command=} ;; esac; done
    cd "$FAKE_HOME" && HOME=$FAKE_HOME exec bash -c "$cmd" ;;
  scp) cp "$5" "$FAKE_HOME/${6#*:}" ;;
esac
"""

# Stands in for the venv's python: records argv, waits, exits 0 on SIGTERM as the binary does.
FAKE_PYTHON = r"""#!/usr/bin/env bash
trap 'echo TERM >> "$HOME/python.signals"; kill "$sleeper" 2>/dev/null; exit 0' TERM
sleep 30 & sleeper=$!
printf '%s\0' "$@" > "$HOME/python.argv"
wait "$sleeper"
"""


def test_tpu_copy_run_stop_against_fake_gcloud(tmp_path):
  home = tmp_path / "worker"
  home.mkdir()
  _write_executable(tmp_path / "bin" / "gcloud", FAKE_GCLOUD)
  env = dict(os.environ, **TPU_ENV, FAKE_HOME=str(home),
             PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
  launch = lambda *args: subprocess.run(["bash", str(TPU_POD), *args], capture_output=True,
                                        text=True, env=env, timeout=60)

  result = launch("copy")
  assert result.returncode == 0, result.stderr
  code = home / "medssl-jax"
  assert (code / "medssl_jax" / "cli" / "train.py").is_file() and (code / "launch" / "tpu_pod.sh").is_file()
  assert not (code / ".venv").exists() and not (home / "medssl-jax-code.tar.gz").exists()

  _write_executable(code / ".venv" / "bin" / "python", FAKE_PYTHON)
  pid = None
  try:
    result = launch("run", *TRAIN_ARGS)
    assert result.returncode == 0, result.stderr
    _wait_for(lambda: (home / "python.argv").exists())
    assert _read_argv(home / "python.argv") == ["-m", "medssl_jax.cli.train", "--coordinator_address=auto",
                                                *TRAIN_ARGS]
    (pid_file,) = (code / "logs").glob("train-*.pid")
    pid = int(pid_file.read_text())
    assert (code / "logs" / pid_file.name.replace(".pid", ".log")).is_file()

    again = launch("run", *TRAIN_ARGS)
    assert again.returncode != 0 and "already running" in again.stderr

    result = launch("stop")
    assert result.returncode == 0 and "SIGTERM sent" in result.stdout, result.stderr
    _wait_for(lambda: (home / "python.signals").exists())
    assert (home / "python.signals").read_text() == "TERM\n"
  finally:
    if pid is not None:
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass


def test_tpu_copy_from_git_repo_against_fake_gcloud(tmp_path):
  home, origin = tmp_path / "worker", tmp_path / "origin"
  home.mkdir()
  git = lambda *args: subprocess.run(["git", "-C", str(origin), "-c", "user.name=t",
                                      "-c", "user.email=t@t", *args], check=True,
                                     capture_output=True)
  origin.mkdir()
  git("init", "-q")
  (origin / "marker.txt").write_text("one")
  git("add", "marker.txt")
  git("commit", "-q", "-m", "one")
  _write_executable(tmp_path / "bin" / "gcloud", FAKE_GCLOUD)
  env = dict(os.environ, **TPU_ENV, FAKE_HOME=str(home), REPO_URL=str(origin),
             PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
  for content in ["one", "two"]:  # the second copy updates the existing clone
    if content == "two":
      (origin / "marker.txt").write_text("two")
      git("commit", "-q", "-am", "two")
    result = subprocess.run(["bash", str(TPU_POD), "copy"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (home / "medssl-jax" / "marker.txt").read_text() == content


FAKE_SRUN = r"""#!/usr/bin/env bash
# Stands in for srun and its tasks: records argv and env, exits 0 on SIGTERM like the binary.
trap 'echo TERM >> "$FAKE_OUT/srun.signals"; kill "$sleeper" 2>/dev/null; exit 0' TERM
printf '%s\0' "$@" > "$FAKE_OUT/srun.argv"
env > "$FAKE_OUT/srun.env"
echo $$ > "$FAKE_OUT/srun.pid"
if [ "${FAKE_SRUN_WAIT:-0}" = 1 ]; then
  sleep 30 & sleeper=$!
  wait "$sleeper"
fi
"""
# `scancel --signal=TERM JOB` reaches the tasks: here, the fake srun.
FAKE_SCANCEL = r"""#!/usr/bin/env bash
printf '%s\0' "$@" > "$FAKE_OUT/scancel.argv"
kill -TERM "$(cat "$FAKE_OUT/srun.pid")"
"""
FAKE_SCONTROL = r"""#!/usr/bin/env bash
printf '%s\0' "$@" > "$FAKE_OUT/scontrol.argv"
"""


@pytest.fixture
def slurm_env(tmp_path):
  bin_dir = tmp_path / "bin"
  for name, text in [("srun", FAKE_SRUN), ("scancel", FAKE_SCANCEL), ("scontrol", FAKE_SCONTROL)]:
    _write_executable(bin_dir / name, text)
  return dict(os.environ, FAKE_OUT=str(tmp_path), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
              SLURM_JOB_ID="4242", SLURM_CPUS_PER_TASK="8", SLURM_NNODES="2",
              SLURM_NTASKS_PER_NODE="8", SLURM_JOB_NODELIST="gpu[01-02]", MEDSSL_MARK="kept")


def test_sbatch_directives():
  directives = [line.split()[1] for line in SBATCH.read_text().splitlines()
                if line.startswith("#SBATCH")]
  for prefix in ["--nodes=", "--ntasks-per-node=", "--gres=gpu:", "--cpus-per-task=", "--time=",
                 "--output=", "--requeue", "--signal=B:USR1@"]:
    assert any(d.startswith(prefix) for d in directives), prefix
  # One GPU bound per task breaks JAX's SLURM auto-detection (it picks GPU SLURM_LOCALID).
  assert not any(d.startswith("--gpus-per-task") for d in directives)


def test_sbatch_runs_training_args_through_srun(slurm_env, tmp_path):
  result = subprocess.run(["bash", str(SBATCH), *TRAIN_ARGS], capture_output=True, text=True,
                          env=slurm_env, timeout=30)
  assert result.returncode == 0, result.stderr
  argv = _read_argv(tmp_path / "srun.argv")
  start = argv.index("medssl_jax.cli.train") + 1
  assert argv[start - 3:] == ["python", "-m", "medssl_jax.cli.train", *TRAIN_ARGS]
  assert "--cpus-per-task=8" in argv[:start - 3]
  assert "MEDSSL_MARK=kept" in (tmp_path / "srun.env").read_text().splitlines()
  assert not (tmp_path / "scontrol.argv").exists()  # finished: no requeue


def test_sbatch_time_limit_signal_stops_tasks_and_requeues(slurm_env, tmp_path):
  process = subprocess.Popen(["bash", str(SBATCH), *TRAIN_ARGS], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True,
                             env=dict(slurm_env, FAKE_SRUN_WAIT="1"))
  try:
    _wait_for(lambda: (tmp_path / "srun.pid").exists())
    process.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@120 delivers
    output, _ = process.communicate(timeout=20)
  finally:
    if process.poll() is None:
      process.kill()
  assert process.returncode == 0, output
  assert _read_argv(tmp_path / "scancel.argv") == ["--signal=TERM", "4242"]
  assert (tmp_path / "srun.signals").read_text() == "TERM\n"
  assert _read_argv(tmp_path / "scontrol.argv") == ["requeue", "4242"]


def test_sbatch_refuses_to_run_outside_slurm(slurm_env):
  env = {k: v for k, v in slurm_env.items() if k != "SLURM_JOB_ID"}
  result = subprocess.run(["bash", str(SBATCH), *TRAIN_ARGS], capture_output=True, text=True,
                          env=env, timeout=30)
  assert result.returncode == 2 and "sbatch" in result.stderr

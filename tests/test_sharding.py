"""Device prefetch (order and checkpointable state, on the synthetic data set) and
multi-process set-up from SLURM's environment with two real processes."""
import os
import random
import socket
import subprocess
import sys
import textwrap

import numpy as np

from medssl_jax.loop import pretrain
from medssl_jax.loop import sharding

import conftest
import synthetic_data
from conftest import REPO_ROOT


def _free_port(ports) -> int:
  for port in random.Random().sample(ports, 64):
    with socket.socket() as s:
      try:
        s.bind(("127.0.0.1", port))
        return port
      except OSError:
        continue
  raise RuntimeError("no free port")


def _host_iterator(config):
  return pretrain.make_data_iterator(config, synthetic_data.SyntheticSource("train"))


def test_prefetch_keeps_order_and_the_state_of_consumed_batches(synthetic_config):
  mesh = sharding.create_mesh()
  plain = _host_iterator(synthetic_config)
  prefetched = sharding.DevicePrefetch(_host_iterator(synthetic_config), mesh, size=3,
                                       transform=pretrain.batch_arrays)
  for _ in range(4):
    expected = pretrain.batch_arrays(next(plain))
    batch = next(prefetched)
    assert batch["view1"].sharding == sharding.batch_sharding(mesh)
    np.testing.assert_array_equal(np.asarray(batch["view1"]), expected["view1"])
    # Three batches further have been read, but the state is that after the consumed one.
    assert prefetched.get_state() == plain.get_state()

  saved = prefetched.get_state()
  after_save = [np.asarray(next(prefetched)["view1"]) for _ in range(2)]
  restored = sharding.DevicePrefetch(_host_iterator(synthetic_config), mesh, size=3,
                                     transform=pretrain.batch_arrays)
  restored.set_state(saved)
  for expected in after_save:
    np.testing.assert_array_equal(np.asarray(next(restored)["view1"]), expected)


def test_single_process_needs_no_set_up():
  assert sharding.slurm_task_count({}) == 1
  assert sharding.initialize_multiprocess(None, None, None, env={"SLURM_NTASKS": "4"}) == "single"


_SLURM_PROCESS = textwrap.dedent("""
    import jax, numpy as np
    from jax.experimental import multihost_utils
    from medssl_jax.loop import sharding
    import sys
    how = sharding.initialize_multiprocess()
    total = multihost_utils.process_allgather(np.array([jax.process_index() + 1])).sum()
    with open(sys.argv[1], "w") as f:  # not stdout: gloo writes there too
      f.write(f"{how} {jax.process_index()} {jax.process_count()} {jax.device_count()} {total}")
""")


def _run_slurm_step(job_id, out_dir):
  """Starts the two tasks of a SLURM step; returns [(returncode, stderr)] and their reports."""
  processes = []
  for task in range(2):
    env = dict(os.environ, SLURM_JOB_ID=str(job_id), SLURM_STEP_NODELIST="localhost",
               SLURM_NTASKS="2", SLURM_PROCID=str(task), SLURM_LOCALID=str(task),
               XLA_FLAGS=conftest.xla_flags(2), JAX_PLATFORMS="cpu",
               PYTHONPATH=str(REPO_ROOT))
    processes.append(subprocess.Popen([sys.executable, "-c", _SLURM_PROCESS, str(out_dir / f"task{task}")],
                                      env=env, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
  status = [(p.wait(timeout=120), p.stderr.read()) for p in processes]
  reports = sorted(f.read_text() for f in out_dir.glob("task*"))
  return status, reports


def test_processes_join_from_the_slurm_environment(tmp_path):
  """What srun sets for a 2-task step on one node is all the processes need to find each other."""
  for attempt in range(2):
    out_dir = tmp_path / str(attempt)
    out_dir.mkdir()
    # jax puts the coordinator on port 61440 + job id % 4096: use a job id whose port is free.
    # Another program can take that port before jax binds it: then one more try, new port.
    status, reports = _run_slurm_step(_free_port(range(61440, 65536)) - 61440, out_dir)
    if all(code == 0 for code, _ in status):
      break
  for code, err in status:
    assert code == 0, err[-3000:]
  assert reports == ["environment 0 2 4 3", "environment 1 2 4 3"]

"""Device mesh, multi-host initialisation, and global batches from per-process data.

Training uses one mesh axis, `data`: the batch is split over it and everything else is
replicated. Each process feeds its own slice of the global batch; the step sees one global
`jax.Array`, so BatchNorm statistics and contrastive negatives span all devices.
"""
from __future__ import annotations

import collections
import copy
import os
from typing import Callable, Mapping, Sequence

import grain
import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from medssl_jax import errors

DATA_AXIS = "data"


def slurm_task_count(env: Mapping[str, str] = os.environ) -> int:
  """Tasks of the SLURM job step this process belongs to (1 outside SLURM)."""
  needed = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
  return int(env["SLURM_NTASKS"]) if all(k in env for k in needed) else 1


def initialize_multiprocess(coordinator_address: str | None = None, num_processes: int | None = None,
                            process_id: int | None = None, env: Mapping[str, str] = os.environ) -> str:
  """Joins the other processes of a multi-process run; returns where the set-up came from.

  "flags": coordinator_address HOST:PORT with num_processes and process_id.
  "environment": coordinator_address "auto" (Cloud TPU pods: jax reads the TPU metadata),
  or none given under `srun` with more than one task (jax reads the SLURM variables).
  "single": one process, nothing to join.
  """
  if not coordinator_address and slurm_task_count(env) > 1:
    coordinator_address = "auto"
  if not coordinator_address:
    return "single"
  # Cross-process collectives for CPU devices (tests, local runs); GPUs and TPUs ignore it.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if coordinator_address == "auto":
    jax.distributed.initialize()
    return "environment"
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)
  return "flags"


def create_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, mesh: Mesh) -> int:
  """Returns the per-process batch, or raises a clear error if devices don't divide it."""
  num_devices = mesh.devices.size
  if global_batch % num_devices:
    raise errors.UserError(
        f"batch_size={global_batch} is not divisible by the {num_devices} devices of the mesh; "
        f"use a multiple of {num_devices} (e.g. {num_devices * max(1, global_batch // num_devices)}).")
  return global_batch // jax.process_count()


def local_devices_of(mesh: Mesh) -> list[jax.Device]:
  return [d for d in mesh.devices.flat if d.process_index == jax.process_index()]


def to_global(local_batch, mesh: Mesh):
  """Per-process numpy arrays (leading dim = local batch) -> global arrays sharded on `data`."""
  sharding = batch_sharding(mesh)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


class DevicePrefetch(grain.DatasetIterator):
  """Global device batches from a host iterator, read `size` batches ahead: while step k runs,
  batches k+1 .. k+size are already on their way to the devices (transfers are asynchronous).

  It is checkpointed in place of the host iterator. Its state is the host iterator's state
  after the last batch it handed out, not after the last one it read ahead, so a restored run
  continues with the first batch the step never saw.
  """

  def __init__(self, host_iterator: grain.DatasetIterator, mesh: Mesh, *, size: int = 2,
               transform: Callable[[dict], dict] = lambda batch: batch):
    super().__init__(host_iterator)
    self._mesh, self._size, self._transform = mesh, max(1, size), transform
    self._ahead = collections.deque()  # (device batch, host state after it)
    self._state = host_iterator.get_state()

  def __next__(self):
    while len(self._ahead) < self._size:
      batch = to_global(self._transform(next(self._parent)), self._mesh)
      self._ahead.append((batch, copy.deepcopy(self._parent.get_state())))
    batch, self._state = self._ahead.popleft()
    return batch

  def get_state(self) -> dict:
    return copy.deepcopy(self._state)

  def set_state(self, state: dict) -> None:
    self._parent.set_state(state)
    self._ahead.clear()
    self._state = copy.deepcopy(state)

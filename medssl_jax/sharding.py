"""Device mesh, multi-host initialisation, and global batches from per-process data.

Training uses one mesh axis, `data`: the batch is split over it and everything else is
replicated. Each process feeds its own slice of the global batch; the step sees one global
`jax.Array`, so BatchNorm statistics and contrastive negatives span all devices.
"""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


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
    raise ValueError(
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

"""Orbax checkpoints: train state and data-iterator state together, restore-latest, and the
config compatibility check that runs before anything is written.
"""
from __future__ import annotations

import json
import os

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

from medssl_jax import errors
from medssl_jax import paths
from medssl_jax.loop import defaults
from medssl_jax.loop import storage

storage.bound_tensorstore_retries()

CONFIG_FILE = "config.json"
# Config keys of the loop that decide the shapes and structure of the saved state: a checkpoint
# written with other values cannot be restored into this run. The method adds its own.
LOOP_STRUCTURAL_KEYS = ("method", "model", "optim.name", "optim.trainable")


class IncompatibleCheckpointError(errors.UserError):
  pass


def create_manager(workdir, *, max_to_keep: int = 3) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
  return ocp.CheckpointManager(paths.path(workdir) / "checkpoints", options=options)


def has_checkpoint(workdir) -> bool:
  directory = paths.path(workdir) / "checkpoints"
  return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def save(manager, step: int, state, data_iterator=None) -> None:
  items = {"state": ocp.args.StandardSave(state)}
  if data_iterator is not None:
    items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
  manager.save(step, args=ocp.args.Composite(**items))


class Saver:
  """A run's asynchronous saves, knowing which step is committed without asking the storage,
  and turning a failed save into a one-line StorageError (loop/storage.py)."""

  def __init__(self, manager: ocp.CheckpointManager, data_iterator=None):
    self.manager = manager
    self.data_iterator = data_iterator
    self.committed = manager.latest_step()
    self._in_flight = None

  def _guard(self):
    directory = self.manager.directory
    last = None
    if self.committed is not None and not paths.is_remote(directory):
      last = os.fspath(directory / str(self.committed))
    return storage.writes_to(directory, last_committed=self.committed, checkpoint_dir=last)

  def save(self, step: int, state) -> None:
    with self._guard():
      save(self.manager, step, state, self.data_iterator)  # waits for the save in flight first
    if self._in_flight is not None:
      self.committed = self._in_flight
    self._in_flight = step

  def finish(self) -> None:
    with self._guard():
      self.manager.wait_until_finished()
    if self._in_flight is not None:
      self.committed, self._in_flight = self._in_flight, None


def restore(manager, abstract_state, data_iterator=None, step: int | None = None):
  """Restores `state` (into the given abstract state's shapes and shardings) and, in place,
  the data iterator. Returns the restored state.

  The iterator's state counts global batches (see data/pipeline.py), so it is the same on
  every process; a checkpoint written by another number of processes restores from
  process 0's copy, and the run continues without repeating or skipping examples.
  """
  step = manager.latest_step() if step is None else step
  items = {"state": ocp.args.StandardRestore(abstract_state)}
  data_dir = manager.directory / str(step) / "data"
  same_topology = (data_dir / f"process_{jax.process_index()}-of-{jax.process_count()}.json").exists()
  if data_iterator is not None and same_topology:
    items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
  state = manager.restore(step, args=ocp.args.Composite(**items))["state"]
  if data_iterator is not None and not same_topology:
    written = sorted(data_dir.glob("process_0-of-*.json"))
    if not written:
      raise errors.UserFileNotFoundError(f"no data-iterator state in {data_dir}")
    data_iterator.set_state(json.loads(written[0].read_text()))
  return state


def _flatten(config: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      flat.update(_flatten(value, name + "."))
    else:
      flat[name] = value
  return flat


def structural_differences(saved: dict, current: dict, structural_keys) -> list[str]:
  """The keys under `structural_keys` (dotted; a section covers its keys) whose values differ."""
  saved_flat, current_flat = _flatten(saved), _flatten(current)
  differences = []
  # A key the saved config lacks was added to the defaults after the run was written; its
  # default keeps the behaviour the run had, so it cannot differ.
  for key in sorted(set(saved_flat) & set(current_flat)):
    if any(key == k or key.startswith(k + ".") for k in structural_keys):
      if saved_flat.get(key) != current_flat.get(key):
        differences.append(f"{key}: checkpoint has {saved_flat.get(key)!r}, "
                           f"config has {current_flat.get(key)!r}")
  return differences


def _with_missing_keys(saved: dict, defaults: dict) -> dict:
  merged = dict(saved)
  for key, value in defaults.items():
    if key not in merged:
      merged[key] = value
    elif isinstance(value, dict) and isinstance(merged[key], dict):
      merged[key] = _with_missing_keys(merged[key], value)
  return merged


def load_config(workdir) -> ml_collections.ConfigDict:
  """A workdir's config, with keys added to the defaults since it was written at their defaults."""
  path = paths.path(workdir) / CONFIG_FILE
  if not path.exists():
    raise errors.UserFileNotFoundError(f"{path} not found: {workdir} is not a medssl-jax pretraining workdir")
  saved = json.loads(path.read_text())
  return ml_collections.ConfigDict(_with_missing_keys(saved, defaults.pretraining().to_dict()))


def check_compatible(workdir, config: ml_collections.ConfigDict, structural_keys) -> None:
  """Raises IncompatibleCheckpointError if `workdir` holds a run whose config differs from
  `config` in one of `structural_keys` (LOOP_STRUCTURAL_KEYS and the method's)."""
  path = paths.path(workdir) / CONFIG_FILE
  if not path.exists():
    return
  differences = structural_differences(json.loads(path.read_text()), json.loads(config.to_json()),
                                       structural_keys)
  if differences:
    raise IncompatibleCheckpointError(
        f"workdir {workdir} holds a run with an incompatible config; use a new --workdir or the "
        "same settings. Differences:\n  " + "\n  ".join(differences))


def write_config(workdir, config: ml_collections.ConfigDict) -> None:
  path = paths.path(workdir) / CONFIG_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(config.to_json(indent=2))


def _read_only_manager(workdir) -> ocp.CheckpointManager:
  directory = paths.path(workdir) / "checkpoints"
  return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True),
                               item_handlers={"state": ocp.StandardCheckpointHandler()})


def checkpoint_steps(workdir) -> list[int]:
  """The steps of the finished checkpoints in a workdir (Orbax lists none still being written)."""
  if not (paths.path(workdir) / "checkpoints").is_dir():
    return []
  return sorted(_read_only_manager(workdir).all_steps())


def restore_variables(workdir, step: int | None = None):
  """The trained network's variables of a pretraining workdir, as host arrays.

  Returns (pretraining config, {"params", "batch_stats"}, step).
  """
  config = load_config(workdir)
  directory = paths.path(workdir) / "checkpoints"
  manager = _read_only_manager(workdir)
  steps = manager.all_steps()
  if not steps:
    raise errors.UserFileNotFoundError(f"no checkpoint in {directory}")
  step = max(steps) if step is None else step
  if step not in steps:
    raise errors.UserFileNotFoundError(
        f"no checkpoint for step {step} in {directory}; steps present: {sorted(steps)}")
  # Restore onto one local device whatever mesh wrote the checkpoint (any process count).
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                                  manager.item_metadata(step)["state"])
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
  variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
  return config, jax.device_get(variables), step


def restore_backbone(workdir, step: int | None = None):
  """The backbone's variables from any pretraining workdir (any method).

  Every method names its backbone `backbone`, so this needs no knowledge of the method.
  Returns (pretraining config, {"params", "batch_stats"} of the backbone, step).
  """
  config, variables, step = restore_variables(workdir, step)
  backbone = {"params": variables["params"]["backbone"],
              "batch_stats": variables["batch_stats"].get("backbone", {})}
  return config, backbone, step

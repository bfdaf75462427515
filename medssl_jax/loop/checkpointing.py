"""Orbax checkpoints: train state and data-iterator state together, restore-latest, and the
config compatibility check that runs before anything is written.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging as std_logging
import os

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from medssl_jax import errors
from medssl_jax import paths
from medssl_jax.loop import defaults
from medssl_jax.loop import fingerprint
from medssl_jax.loop import storage

storage.bound_tensorstore_retries()

CONFIG_FILE = "config.json"
COMMIT_MARKER = "commit_success.txt"   # written last by Orbax: a step without it did not finish
SET_ASIDE_DIR = "checkpoints_set_aside"  # unrestorable steps are moved here, never deleted
# Config keys of the loop that decide the shapes and structure of the saved state: a checkpoint
# written with other values cannot be restored into this run. The method adds its own.
LOOP_STRUCTURAL_KEYS = ("method", "model", "optim.name", "optim.trainable", "online_probe.enabled")


class IncompatibleCheckpointError(errors.UserError):
  pass


class UnrestorableCheckpointError(errors.UserError):
  pass


def _short(error: BaseException) -> str:
  """The first line of an error, without tensorstore's spec dump."""
  text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
  return text.split(" See full TensorStore details")[0].split(" [tensorstore_spec=")[0][:300]


def _try_restore(manager, step, restore_fn):
  """(restore_fn(step), None), or (None, why the step cannot be restored)."""
  if not (manager.directory / str(step) / COMMIT_MARKER).exists():
    return None, f"its commit marker {COMMIT_MARKER} is missing (a save that did not finish)"
  try:
    return restore_fn(step), None
  except Exception as e:  # pylint: disable=broad-except  # tensorstore, zstd, OS and Orbax errors alike
    return None, f"{type(e).__name__}: {_short(e)}"


def create_manager(workdir, *, max_to_keep: int = 3) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
  return ocp.CheckpointManager(paths.path(workdir) / "checkpoints", options=options)


def has_checkpoint(workdir) -> bool:
  directory = paths.path(workdir) / "checkpoints"
  return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


FINGERPRINT_ITEM = "fingerprint"


def check_fingerprint(manager, step: int, state) -> None:
  """Raises if `state` is not what was saved at `step` (checkpoints without a fingerprint,
  written before it existed, are not checked)."""
  if not (manager.directory / str(step) / FINGERPRINT_ITEM).exists():
    return
  expected = manager.restore(step, args=ocp.args.Composite(
      **{FINGERPRINT_ITEM: ocp.args.JsonRestore()}))[FINGERPRINT_ITEM]
  wrong = fingerprint.mismatches(state, expected)
  if wrong:
    raise ValueError(f"restored arrays differ from what was saved (checksum): {', '.join(wrong[:3])}"
                     + (f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""))


def save(manager, step: int, state, data_iterator=None) -> None:
  items = {"state": ocp.args.StandardSave(state),
           FINGERPRINT_ITEM: ocp.args.JsonSave(fingerprint.fingerprint(state))}
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

  @contextlib.contextmanager
  def _guard(self):
    directory = self.manager.directory
    last = None
    if self.committed is not None and not paths.is_remote(directory):
      last = os.fspath(directory / str(self.committed))
    with storage.deadline(directory, last_committed=self.committed):
      with storage.writes_to(directory, last_committed=self.committed, checkpoint_dir=last):
        yield

  def save(self, step: int, state) -> None:
    self.finish()  # Orbax's save would wait for the save in flight anyway; now it is known committed
    with self._guard():
      save(self.manager, step, state, self.data_iterator)
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
  check_fingerprint(manager, step, state)
  if data_iterator is not None and not same_topology:
    written = sorted(data_dir.glob("process_0-of-*.json"))
    if not written:
      raise errors.UserFileNotFoundError(f"no data-iterator state in {data_dir}")
    data_iterator.set_state(json.loads(written[0].read_text()))
  return state


def set_aside(manager, step: int, reason: str) -> None:
  """Moves an unrestorable step out of the checkpoints folder (renamed, never deleted)."""
  source = manager.directory / str(step)
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  target = manager.directory.parent / SET_ASIDE_DIR / f"{step}-{stamp}"
  target.parent.mkdir(parents=True, exist_ok=True)
  source.rename(target)
  logging.warning("checkpoint step %d cannot be restored (%s); moved it to %s", step, reason, target)


def restore_newest_good(manager, abstract_state, data_iterator=None):
  """Restores the newest step that restores. Newer steps that do not (a corrupt or truncated
  file, a save that never finished) are set aside with a warning, so that a requeued job
  resumes instead of crash-looping; if no step restores, nothing is moved and a
  UnrestorableCheckpointError lists what was tried."""
  failures, state = [], None
  for step in sorted(manager.all_steps(), reverse=True):
    state, reason = _try_restore(manager, step,
                                 lambda s: restore(manager, abstract_state, data_iterator, s))
    if reason is None:
      break
    failures.append((step, reason))
  if state is None:
    tried = "; ".join(f"step {step}: {reason}" for step, reason in failures)
    raise UnrestorableCheckpointError(
        f"no checkpoint in {manager.directory} can be restored ({tried}); move that folder aside "
        "to start again from scratch, or use another --workdir")
  if failures:
    if jax.process_index() == 0:
      for step, reason in failures:
        set_aside(manager, step, reason)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("checkpoints set aside")
    manager.reload()
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
  """A manager that only reads (an evaluation may watch a run that is still saving). Every
  item has a handler and the options are what read-only implies, so Orbax has nothing to
  warn about; its unconditional "directory is read only" warning is silenced."""
  directory = paths.path(workdir) / "checkpoints"
  options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
  absl_logger = logging.get_absl_logger()
  level = absl_logger.level  # restored as it was (NOTSET included), not as the effective level
  absl_logger.setLevel(std_logging.ERROR)
  try:
    return ocp.CheckpointManager(directory, options=options,
                                 item_handlers={"state": ocp.StandardCheckpointHandler(),
                                                "data": grain.checkpoint.CheckpointHandler(),
                                                FINGERPRINT_ITEM: ocp.JsonCheckpointHandler()})
  finally:
    absl_logger.setLevel(level)


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

  def restore_checked(s):
    # The metadata is read inside the check: a damaged OCDBT tree fails already here.
    target = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                                    manager.item_metadata(s)["state"])
    restored = manager.restore(s, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
    check_fingerprint(manager, s, restored)
    return restored

  state, reason = _try_restore(manager, step, restore_checked)
  if reason is not None:
    others = sorted(s for s in steps if s != step)
    raise UnrestorableCheckpointError(
        f"checkpoint step {step} in {directory} cannot be restored ({reason}); other steps "
        f"present: {others or 'none'} (choose one with the step setting, e.g. --config.init.step)")
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

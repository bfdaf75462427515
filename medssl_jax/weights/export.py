"""Backbone export: a pretraining checkpoint's backbone (and optionally projector) alone, as a
small standalone Orbax checkpoint with a JSON description, and reading it back. The binary
is medssl_jax/cli/export.py (`medssl-export`).

OUT/backbone.json says what the weights are (architecture, width, stem, feature size, input
size, channels and pixel scaling, method, step, data set); OUT/variables is the Orbax
checkpoint {module: {"params", "batch_stats"}}. The command reads the export back and checks
it equals the checkpoint bit for bit before it reports success.
"""
from __future__ import annotations

import datetime
import json

import jax
import numpy as np
import orbax.checkpoint as ocp

from medssl_jax import errors
from medssl_jax import paths
from medssl_jax.loop import checkpointing
from medssl_jax.models import resnet

INFO_FILE = "backbone.json"
VARIABLES_DIR = "variables"
FORMAT = "medssl_jax.backbone/1"
# How images are turned into network input here (augment.preprocess_batch): no mean/std.
INPUT_SCALING = "uint8 / 255 -> [0, 1], bilinear resize to size x size, no mean/std normalisation"


def input_channels(backbone_params) -> int:
  return int(backbone_params["conv_init"]["kernel"].shape[2])


def describe(config, backbone_params, step: int, workdir, modules=("backbone",)) -> dict:
  """The JSON description of a run's backbone, as written next to an export."""
  model = config.model
  info = {
      "format": FORMAT,
      "architecture": model.name, "width": model.width, "small_stem": model.small_stem,
      "model": model.to_dict(),
      "input": {"size": config.augment.size,
                "channels": input_channels(backbone_params),
                "scaling": INPUT_SCALING},
      "method": config.method, "step": int(step), "data": config.data.name,
      "source_workdir": str(paths.path(workdir)),
      "modules": list(modules),
  }
  if model.name in resnet.ARCHITECTURES:
    info["feature_dim"] = resnet.feature_dim(model.name, model.width)
  return info


def _modules_tree(variables, modules) -> dict:
  return {m: {"params": variables["params"][m], "batch_stats": variables["batch_stats"].get(m, {})}
          for m in modules}


def export(workdir, out_dir, *, step: int | None = None, include_projector: bool = False) -> dict:
  """Writes the export of `workdir`'s checkpoint (latest or `step`) to `out_dir`; returns its info."""
  paths.check_buckets(workdir, out_dir)
  out_dir = paths.path(out_dir)
  if out_dir.exists() and any(out_dir.iterdir()):
    raise errors.UserFileExistsError(f"{out_dir} exists and is not empty; choose a new --out")
  config, variables, step = checkpointing.restore_variables(workdir, step)
  modules = ("backbone", "projector") if include_projector else ("backbone",)
  missing = [m for m in modules if m not in variables["params"]]
  if missing:
    raise errors.UserError(f"the {config.method} network in {workdir} has no {missing}; "
                           f"modules: {sorted(variables['params'])}")
  info = describe(config, variables["params"]["backbone"], step, workdir, modules)
  info["exported"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(out_dir / VARIABLES_DIR, _modules_tree(variables, modules))
  (out_dir / INFO_FILE).write_text(json.dumps(info, indent=2))
  return info


def is_export(path) -> bool:
  return (paths.path(path) / INFO_FILE).is_file()


def load(path) -> tuple[dict, dict]:
  """(info, {module: {"params", "batch_stats"}}) of an export, as host arrays."""
  path = paths.path(path)
  if not is_export(path):
    raise errors.UserFileNotFoundError(f"{path / INFO_FILE} not found: {path} is not an exported backbone "
                                       "(write one with medssl-export)")
  try:
    info = json.loads((path / INFO_FILE).read_text())
  except json.JSONDecodeError as e:
    raise errors.UserError(f"{path / INFO_FILE} is corrupt: {e}") from e
  if info.get("format") != FORMAT:
    raise errors.UserError(f"{path} has format {info.get('format')!r}; this version reads {FORMAT!r}")
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      metadata = checkpointer.metadata(path / VARIABLES_DIR)
      metadata = getattr(metadata, "item_metadata", metadata)  # newer Orbax wraps the tree
      target = jax.tree_util.tree_map(
          lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
      tree = checkpointer.restore(path / VARIABLES_DIR, target)
  except (FileNotFoundError, ValueError, OSError) as e:
    raise errors.UserError(f"the weights in {path / VARIABLES_DIR} are missing or corrupt: "
                           f"{type(e).__name__}: {e}") from e
  return info, jax.device_get(tree)


def check_round_trip(workdir, out_dir, step) -> None:
  _, variables, _ = checkpointing.restore_variables(workdir, step)
  info, tree = load(out_dir)
  expected = _modules_tree(variables, info["modules"])
  same = jax.tree_util.tree_map(lambda a, b: a.dtype == b.dtype and np.array_equal(a, b), expected, tree)
  if not all(jax.tree_util.tree_leaves(same)):
    raise RuntimeError(f"the export in {out_dir} differs from the checkpoint it was made from")

"""Starting a run from another run's weights: continued pretraining and staged recipes.

`config.init.workdir` names a pretraining workdir; the top-level modules listed in
`config.init.modules` (e.g. "backbone", or "backbone" and "projector") are copied into the
fresh network wherever a parameter has the same path and shape. Everything else (new heads,
a replaced output layer) keeps its fresh initialisation, and the optimizer starts fresh.
"""
from __future__ import annotations

import flax
import jax
from absl import logging

from medssl_jax import checkpointing


def copy_matching(target: dict, source: dict, modules) -> tuple[dict, list[str], list[str]]:
  """Returns (target with matching leaves replaced by source's, copied paths, skipped paths)."""
  flat_target = flax.traverse_util.flatten_dict(target, sep="/")
  flat_source = flax.traverse_util.flatten_dict(source, sep="/")
  copied, skipped = [], []
  for path, value in flat_target.items():
    if path.split("/")[0] not in modules:
      continue
    other = flat_source.get(path)
    if other is not None and other.shape == value.shape:
      flat_target[path] = jax.numpy.asarray(other, value.dtype)
      copied.append(path)
    else:
      skipped.append(path)
  return flax.traverse_util.unflatten_dict(flat_target, sep="/"), copied, skipped


def initialize_from(params, batch_stats, init_config):
  """(params, batch_stats) with init_config.modules taken from the run in init_config.workdir."""
  step = None if init_config.step < 0 else init_config.step
  _, source, step = checkpointing.restore_variables(init_config.workdir, step)
  modules = tuple(init_config.modules)
  params, copied, skipped = copy_matching(params, source["params"], modules)
  batch_stats, _, _ = copy_matching(batch_stats, source["batch_stats"], modules)
  if not copied:
    raise ValueError(f"init.workdir={init_config.workdir} shares no parameter of modules {modules} "
                     "with this network: is it the same architecture?")
  logging.info("initialised %d parameters of %s from %s (step %d); %d kept fresh: %s", len(copied),
               modules, init_config.workdir, step, len(skipped), skipped)
  return params, batch_stats

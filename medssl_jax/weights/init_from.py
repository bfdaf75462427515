"""Starting a run from other weights: continued pretraining, staged recipes, ImageNet init.

`config.init_from` names one of
  - a pretraining workdir (latest checkpoint, or `config.init.step`),
  - a backbone exported with `medssl-export`,
  - a torchvision or timm ResNet weights file (.pth / .safetensors), see torch_weights.py,
    or a timm/DINO ViT weights file for a vit_* model, see timm_vit.py.
The top-level modules in `config.init.modules` (e.g. "backbone", or "backbone" and
"projector") are copied into the fresh network wherever a parameter has the same path and
shape. Everything else (new heads, a replaced output layer) keeps its fresh initialisation,
and the optimizer starts fresh. A source of another architecture is refused, naming both.
"""
from __future__ import annotations

import json

import flax
import jax
import numpy as np
from absl import logging

from medssl_jax import errors
from medssl_jax import paths
from medssl_jax.loop import checkpointing
from medssl_jax.models import vit
from medssl_jax.weights import export
from medssl_jax.weights import input_norm
from medssl_jax.weights import timm_vit
from medssl_jax.weights import torch_export
from medssl_jax.weights import torch_weights

RECORD_FILE = "init.json"
# The model settings that make two backbones the same network.
_ARCHITECTURE_KEYS = ("name", "width", "small_stem")


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


def _check_architecture(source_model: dict, model_config, source: str) -> None:
  # A ViT's patch size decides its stem and position embeddings (other backbones ignore it,
  # and configs written before the key existed lack it).
  keys = _ARCHITECTURE_KEYS + (("patch_size",) if model_config.name in vit.ARCHITECTURES else ())
  differences = [f"{k}: {source} has {source_model.get(k)!r}, this run has {model_config[k]!r}"
                 for k in keys if source_model.get(k) != model_config[k]]
  if differences:
    raise errors.UserError(f"init_from={source} is another architecture than this run's model:\n  "
                           + "\n  ".join(differences))


def _shapes(tree) -> dict:
  return jax.tree_util.tree_map(np.shape, tree)


def _torch_backbone(state_dict: dict, model_config, target_backbone: dict) -> dict:
  """A torchvision-keyed state dict as this run's backbone: taken as it is when its shapes are
  exactly the backbone's (a medssl-export of any width, stem and channels, DenseNet
  included), else converted from stock ImageNet weights (width 1, standard stem; RGB
  kernels summed for grey input)."""
  if model_config.name in torch_export.supported():
    try:
      exact = torch_export.from_state_dict(state_dict, model_config.name)
    except errors.UserError:
      exact = None
    if exact is not None and _shapes(exact["params"]) == _shapes(target_backbone):
      return exact
  torch_weights.check_convertible(model_config)
  return torch_weights.resnet_variables(state_dict, model_config.name,
                                        in_channels=export.input_channels(target_backbone))


def load_source(config, target_params) -> tuple[dict, str, int | None]:
  """({"params", "batch_stats"} keyed by module, kind of source, step) of config.init_from."""
  source = config.init_from
  norm = config.init.get("input_norm", "none")
  if torch_weights.is_weights_file(source) and norm == "none":
    logging.warning("init_from=%s is taken to expect [0, 1] pixels; if it was trained on normalised "
                    "inputs (torchvision, timm, DINO: ImageNet mean/std; timm augreg ViTs: 0.5/0.5), "
                    "set --config.init.input_norm=imagenet or half", source)
  elif not torch_weights.is_weights_file(source) and norm != "none":
    raise errors.UserError(f"init.input_norm={norm} applies to torchvision/timm/DINO weights files; "
                           f"init_from={source} was trained here on [0, 1] pixels: use input_norm=none")
  if torch_weights.is_weights_file(source) and config.model.name in vit.ARCHITECTURES:
    return timm_vit.load_variables(source, target_params["backbone"], norm), "timm_vit", None
  if torch_weights.is_weights_file(source):
    state_dict = input_norm.fold(torch_weights.read_state_dict(source), norm)
    backbone = _torch_backbone(state_dict, config.model, target_params["backbone"])
    variables = {"params": {"backbone": backbone["params"]},
                 "batch_stats": {"backbone": backbone["batch_stats"]}}
    return variables, "torch", None
  if export.is_export(source):
    info, tree = export.load(source)
    _check_architecture(info["model"], config.model, source)
    variables = {"params": {m: v["params"] for m, v in tree.items()},
                 "batch_stats": {m: v["batch_stats"] for m, v in tree.items()}}
    return variables, "export", info["step"]
  step = None if config.init.step < 0 else config.init.step
  source_config, variables, step = checkpointing.restore_variables(source, step)
  _check_architecture(source_config.model.to_dict(), config.model, source)
  return variables, "workdir", step


def initialize_from(params, batch_stats, config) -> tuple[dict, dict, dict]:
  """(params, batch_stats, record): config.init.modules taken from config.init_from.

  The record (source, kind, step, copied and fresh parameter paths) is what the run keeps
  of where its weights came from.
  """
  source, kind, step = load_source(config, params)
  modules = tuple(config.init.modules)
  params, copied, skipped = copy_matching(params, source["params"], modules)
  batch_stats, _, _ = copy_matching(batch_stats, source["batch_stats"], modules)
  if not copied:
    raise errors.UserError(f"init_from={config.init_from} shares no parameter of modules {modules} "
                           "with this network: is it the same architecture?")
  logging.info("initialised %d parameters of %s from %s %s (step %s); %d kept fresh: %s",
               len(copied), modules, kind, config.init_from, step, len(skipped), skipped)
  record = {"init_from": config.init_from, "kind": kind, "step": step, "modules": list(modules),
            "input_norm_folded": config.init.get("input_norm", "none"), "copied": copied,
            "kept_fresh": skipped}
  return params, batch_stats, record


def write_record(workdir, record: dict) -> None:
  """Keeps, next to the run's config.json, where its initial weights came from."""
  (paths.path(workdir) / RECORD_FILE).write_text(json.dumps(record, indent=2))

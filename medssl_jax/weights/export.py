"""Backbone export: a pretraining checkpoint's backbone, alone, in one or more formats, and
reading the Orbax format back. The binary is medssl_jax/cli/export.py (`medssl-export`).

Formats (`formats`, any of them into one folder):
  orbax        OUT/backbone.json says what the weights are (architecture, width, stem, feature
               size, input size, channels and pixel scaling, method, step, data set);
               OUT/variables is the Orbax checkpoint {module: {"params", "batch_stats"}}.
               The only format that can also hold the projector.
  torch        OUT/model.pth, a PyTorch state_dict with torchvision's key names (torch_export.py).
  safetensors  OUT/model.safetensors, the same tensors; reading it needs no torch.
  hf           A folder to upload to the Hugging Face Hub as it is: model.safetensors,
               config.json and a README.md model card generated from the run (model_card.py).
The PyTorch formats also write OUT/config.json (architecture, width, stem, channels, the exact
preprocessing of a uint8 image, method, pretraining data and steps) and OUT/medssl_backbone.py,
a copy of torch_backbone.py: the network in plain PyTorch, which builds what torchvision's
constructors cannot (the small-image stem, width multipliers, a one-channel stem) with
torchvision's key names. With naming="timm", config.json is also timm's Hub config
(architecture, num_classes=0, pretrained_cfg, model_args); networks timm cannot build are
refused, naming what it lacks.

Every export is read back and checked bit for bit against the checkpoint before the binary
reports success (check_round_trip).
"""
from __future__ import annotations

import datetime
import io
import json
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp

from medssl_jax import errors
from medssl_jax import paths
from medssl_jax.loop import checkpointing
from medssl_jax.models import densenet
from medssl_jax.models import resnet
from medssl_jax.models import vit

INFO_FILE = "backbone.json"
VARIABLES_DIR = "variables"
FORMAT = "medssl_jax.backbone/1"
# How images are turned into network input here (augment.preprocess_batch): no mean/std.
INPUT_SCALING = "uint8 / 255 -> [0, 1], bilinear resize to size x size, no mean/std normalisation"

FORMATS = ("orbax", "torch", "safetensors", "hf")
NAMINGS = ("torchvision", "timm")
TORCH_FORMAT = "medssl_jax.torch_backbone/1"
CONFIG_FILE = "config.json"
MODULE_FILE = "medssl_backbone.py"
CARD_FILE = "README.md"
WEIGHT_FILES = {"torch": "model.pth", "safetensors": "model.safetensors", "hf": "model.safetensors"}


def input_channels(backbone_params) -> int:
  return int(backbone_params["conv_init"]["kernel"].shape[2])


def feature_dim(model) -> int | None:
  if model.name in resnet.ARCHITECTURES:
    return resnet.feature_dim(model.name, model.width)
  if model.name in densenet.ARCHITECTURES:
    return densenet.feature_dim(model.name, model.width)
  if model.name in vit.ARCHITECTURES:
    return vit.hidden_dim(model.name, model.width)
  return None


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
  if feature_dim(model) is not None:
    info["feature_dim"] = feature_dim(model)
  return info


def preprocessing(size: int, channels: int) -> dict:
  """How a uint8 image becomes the network's input, exactly (augment.preprocess_batch, in
  PyTorch's terms): enough to preprocess with nothing but this description."""
  if channels == 1:
    handling = ("grey: the network takes 1 channel; a colour image is made grey first, as Pillow's "
                "Image.convert('L') does (L = R * 299/1000 + G * 587/1000 + B * 114/1000), which is how "
                "medssl-jax reads colour files for a 1-channel run")
  else:
    handling = (f"{channels} channels in the image's own order (R, G, B for colour files); medssl-jax "
                "repeats a grey file to 3 channels")
  return {
      "input": "uint8 images, channels last: (H, W, C) or (N, H, W, C), any H and W",
      "channels": channels,
      "channel_handling": handling,
      "scale": 255.0,
      "resize": {"size": [size, size], "mode": "bilinear", "align_corners": False, "antialias": False,
                 "aspect": "not kept: every image is stretched to size x size",
                 "edges": "sample points outside the image take the nearest edge pixel"},
      "clip": [0.0, 1.0],
      "mean": [0.0] * channels,
      "std": [1.0] * channels,
      "order": "x = uint8 / scale; resize; clip to [0, 1]; (x - mean) / std; NCHW float32",
      "pytorch": (f"x = F.interpolate(torch.as_tensor(u8).permute(0, 3, 1, 2).float() / 255, size=({size}, "
                  f"{size}), mode='bilinear', align_corners=False, antialias=False).clamp(0, 1)"),
  }


def _modules_tree(variables, modules) -> dict:
  return {m: {"params": variables["params"][m], "batch_stats": variables["batch_stats"].get(m, {})}
          for m in modules}


def _check_request(formats, naming, include_projector, eval_dirs) -> tuple[str, ...]:
  formats = tuple(dict.fromkeys(formats.split(",") if isinstance(formats, str) else formats))
  unknown = [f for f in formats if f not in FORMATS]
  if unknown or not formats:
    raise errors.UserError(f"unknown --format {unknown or '(none)'}; choose from {list(FORMATS)}, "
                           "several separated by commas")
  if naming not in NAMINGS:
    raise errors.UserError(f"unknown --naming {naming!r}; choose from {list(NAMINGS)}")
  if include_projector and formats != ("orbax",):
    raise errors.UserError("--include_projector needs --format=orbax alone: the PyTorch formats hold "
                           "the backbone only")
  if eval_dirs and "hf" not in formats:
    raise errors.UserError("--eval_dir is read for the model card of --format=hf only")
  if "torch" in formats:
    try:
      import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    except ImportError as e:
      raise errors.UserError("--format=torch writes a .pth file, which needs PyTorch (pip install torch); "
                             "--format=safetensors needs only safetensors") from e
  return formats


def export(workdir, out_dir, *, step: int | None = None, include_projector: bool = False,
           formats=("orbax",), naming: str = "torchvision", eval_dirs=()) -> dict:
  """Writes the export of `workdir`'s checkpoint (latest or `step`) to `out_dir` in each of
  `formats`; returns its description (backbone.json's, with "formats" and "files")."""
  formats = _check_request(formats, naming, include_projector, eval_dirs)
  paths.check_buckets(workdir, out_dir, *eval_dirs)
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
  torch_formats = [f for f in formats if f != "orbax"]
  files = {}
  if torch_formats:
    # Everything that can refuse the export does so before the first file is written.
    from medssl_jax.weights import model_card  # pylint: disable=g-import-not-at-top
    from medssl_jax.weights import torch_export  # pylint: disable=g-import-not-at-top
    backbone = _modules_tree(variables, ("backbone",))["backbone"]
    state_dict = torch_export.to_state_dict(backbone, config.model.name, step=step)
    weights = sorted({WEIGHT_FILES[f] for f in torch_formats})
    torch_info = torch_description(config, backbone["params"], step, workdir, naming, weights,
                                   info["exported"])
    card = None
    if "hf" in formats:
      evaluations, notes = model_card.find_results(workdir, step, eval_dirs)
      init_record = _read_json(paths.path(workdir) / "init.json")
      card = model_card.render(torch_info, json.loads(config.to_json()), evaluations, notes, init_record)
  if "orbax" in formats:
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(out_dir / VARIABLES_DIR, _modules_tree(variables, modules))
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=2))
    files["orbax"] = [INFO_FILE, VARIABLES_DIR]
  if torch_formats:
    for name in weights:
      paths.write_bytes_atomic(out_dir / name, _serialise(state_dict, name))
    paths.write_bytes_atomic(out_dir / MODULE_FILE,
                             pathlib.Path(__file__).with_name("torch_backbone.py").read_bytes())
    (out_dir / CONFIG_FILE).write_text(json.dumps(torch_info, indent=2))
    for f in torch_formats:
      files[f] = [WEIGHT_FILES[f], CONFIG_FILE, MODULE_FILE]
    if card is not None:
      (out_dir / CARD_FILE).write_text(card)
      files["hf"].append(CARD_FILE)
  info["formats"], info["files"] = list(formats), files
  return info


def torch_description(config, backbone_params, step, workdir, naming, weights, exported) -> dict:
  """config.json of the PyTorch formats (and, with naming="timm", timm's Hub config)."""
  from medssl_jax.weights import torch_export  # pylint: disable=g-import-not-at-top
  model = config.model
  name = model.name
  torch_export.check_supported(name)
  channels = input_channels(backbone_params)
  stock = torch_export.stock_models(name, model.width, model.small_stem, channels)
  if naming == "timm" and not stock["timm"]:
    raise errors.UserError(f"--naming=timm: timm's {name} cannot build this network: "
                           + "; ".join(stock["not_expressible"]) + ". The keys are the same as "
                           "torchvision's: export with --naming=torchvision, whose medssl_backbone.py "
                           "builds it")
  size = config.augment.size
  is_resnet = name in resnet.ARCHITECTURES
  info = {
      "format": TORCH_FORMAT,
      "architecture": name,
      "naming": naming,
      "width": model.width,
      "small_stem": bool(model.small_stem),
      "in_channels": channels,
      "num_features": feature_dim(model),
      "stem": ("3x3 stride-1 convolution, no max-pool (small images)" if model.small_stem else
               "7x7 stride-2 convolution, 3x3 stride-2 max-pool (torchvision's)"),
      "weights": list(weights),
      "state_dict": (f"torchvision's {name} keys without the classifier "
                     f"({'fc' if is_resnet else 'classifier'}); num_batches_tracked = checkpoint step"),
      "module_file": MODULE_FILE,
      "stock_models": stock,
      "preprocessing": preprocessing(size, channels),
      "pretraining": {"method": config.method, "data": config.data.name,
                      "train_split": config.data.train_split, "step": int(step),
                      "num_steps": config.num_steps, "batch_size": config.batch_size,
                      "image_size": size, "augment_policy": config.augment.policy,
                      "source_workdir": str(paths.path(workdir))},
      "exported": exported,
  }
  if naming == "timm":
    info.update({
        "num_classes": 0,
        "global_pool": "avg",
        "model_args": {"in_chans": channels},
        "pretrained_cfg": {"input_size": [channels, size, size], "interpolation": "bilinear",
                           "crop_pct": 1.0, "crop_mode": "center", "mean": [0.0] * channels,
                           "std": [1.0] * channels, "num_classes": 0,
                           "first_conv": "conv1" if is_resnet else "features.conv0",
                           "classifier": "fc" if is_resnet else "classifier"},
    })
  return info


def _serialise(state_dict: dict, name: str) -> bytes:
  if name.endswith(".safetensors"):
    from safetensors.numpy import save  # pylint: disable=g-import-not-at-top
    return save(state_dict, metadata={"format": "pt"})
  import torch  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  torch.save({k: torch.tensor(v) for k, v in state_dict.items()}, buffer)  # in torchvision's order
  return buffer.getvalue()


def _read_json(path) -> dict | None:
  return json.loads(path.read_text()) if path.is_file() else None


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


def _same(a, b) -> bool:
  return all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(
      lambda x, y: np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y), a, b)))


def check_round_trip(workdir, out_dir, step) -> None:
  """Reads every format in `out_dir` back and compares it, bit for bit, with the checkpoint:
  the Orbax tree, and each PyTorch weights file converted back into our variables."""
  _, variables, _ = checkpointing.restore_variables(workdir, step)
  out_dir = paths.path(out_dir)
  if is_export(out_dir):
    info, tree = load(out_dir)
    if not _same(_modules_tree(variables, info["modules"]), tree):
      raise RuntimeError(f"the export in {out_dir} differs from the checkpoint it was made from")
  if (out_dir / CONFIG_FILE).is_file():
    from medssl_jax.weights import torch_export  # pylint: disable=g-import-not-at-top
    from medssl_jax.weights import torch_weights  # pylint: disable=g-import-not-at-top
    torch_info = json.loads((out_dir / CONFIG_FILE).read_text())
    backbone = _modules_tree(variables, ("backbone",))["backbone"]
    expected = torch_export.to_state_dict(backbone, torch_info["architecture"], step=step)
    for name in torch_info["weights"]:
      read = torch_weights.read_state_dict(out_dir / name)
      if sorted(read) != sorted(expected) or not _same(expected, {k: read[k] for k in expected}):
        raise RuntimeError(f"{out_dir / name} differs from the state_dict made from the checkpoint")
      if not _same(backbone, torch_export.from_state_dict(read, torch_info["architecture"])):
        raise RuntimeError(f"{out_dir / name} does not convert back to the checkpoint's variables")

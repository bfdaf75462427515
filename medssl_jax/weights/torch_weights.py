"""ImageNet initialisation: torchvision or timm ResNet weights from a local file, as our ResNet.

Reads a `.pth`/`.pt`/`.bin` file (needs torch) or a `.safetensors` file (needs only the
small `safetensors` package), checks which ResNet it holds from its keys, and renames and
transposes every tensor into `models/resnet.py`'s variables. Nothing is downloaded: point
`--config.init_from` at a file you already have. timm's ResNets use torchvision's names.

The converted network computes what the PyTorch one computes (tests/test_torch_weights.py),
given the same input. torchvision's ImageNet weights expect RGB normalised with the
ImageNet mean and std, while this project feeds pixels scaled to [0, 1]:
`--config.init.input_norm=imagenet` folds that normalisation into the stem
(weights/input_norm.py; exact but for the stem's zero-padded border). For one-channel
images the stem's kernel is summed over its three input channels, which is exact for a grey
image repeated as RGB.
"""
from __future__ import annotations

import io
import re

import numpy as np

from medssl_jax import errors
from medssl_jax import paths
from medssl_jax.models import resnet

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
_BLOCK_KEY = re.compile(r"^layer(\d)\.(\d+)\.")


def is_weights_file(path) -> bool:
  return paths.path(path).suffix in TORCH_SUFFIXES + (SAFETENSORS_SUFFIX,)


def read_state_dict(path) -> dict[str, np.ndarray]:
  """The file's tensors as NumPy arrays, keyed as in the PyTorch state_dict."""
  path = paths.path(path)
  if not path.is_file():
    raise errors.UserFileNotFoundError(f"weights file {path} not found")
  if not is_weights_file(path):
    raise errors.UserError(f"{path}: unknown weights format {path.suffix!r}; expected one of "
                           f"{TORCH_SUFFIXES + (SAFETENSORS_SUFFIX,)}")
  load = _load_safetensors if path.suffix == SAFETENSORS_SUFFIX else _load_torch
  try:
    loaded = load(path)
  except ImportError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # torch and safetensors raise many kinds
    raise errors.UserError(f"{path} is not a readable {path.suffix} weights file (corrupt or truncated?): "
                           f"{type(e).__name__}: {e}") from e
  for wrapper in ("state_dict", "model", "teacher"):  # training checkpoints nest the weights
    if isinstance(loaded.get(wrapper), dict):
      loaded = loaded[wrapper]
  tensors = {k: v for k, v in loaded.items() if isinstance(v, np.ndarray)}
  if not tensors:
    raise errors.UserError(f"{path} holds no tensors (keys: {sorted(loaded)[:5]})")
  # Checkpoints saved from DataParallel / DistributedDataParallel prefix every key.
  return {k.removeprefix("module."): v for k, v in tensors.items()}


def _load_safetensors(path: paths.Path) -> dict:
  from safetensors.numpy import load  # pylint: disable=g-import-not-at-top
  return load(path.read_bytes())


def _load_torch(path: paths.Path) -> dict:
  """A torch file's (possibly nested) dict with every tensor as a NumPy array."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"reading {path} needs PyTorch (pip install torch), or convert it to "
                      ".safetensors, which needs only `pip install safetensors`") from e
  def to_numpy(value):
    if isinstance(value, torch.Tensor):
      return value.float().numpy() if value.is_floating_point() else value.numpy()
    if isinstance(value, dict):
      return {k: to_numpy(v) for k, v in value.items()}
    return value
  loaded = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
  if not isinstance(loaded, dict):
    raise TypeError(f"holds a {type(loaded).__name__}, not a state_dict")
  return to_numpy(loaded)


def infer_architecture(state_dict: dict) -> str:
  """Which of resnet.ARCHITECTURES the state_dict holds, from its block keys."""
  blocks = [0, 0, 0, 0]
  for key in state_dict:
    match = _BLOCK_KEY.match(key)
    if match:
      stage, index = int(match.group(1)) - 1, int(match.group(2))
      blocks[stage] = max(blocks[stage], index + 1)
  kind = "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic"
  for name, layout in resnet.ARCHITECTURES.items():
    if layout == (kind, tuple(blocks)):
      return name
  raise errors.UserError(f"the weights are not a torchvision/timm ResNet we know ({kind} blocks per "
                         f"stage {blocks}, keys like {sorted(state_dict)[:3]}); known: "
                         f"{sorted(resnet.ARCHITECTURES)}")


def _conv(weight: np.ndarray) -> np.ndarray:
  return np.transpose(weight, (2, 3, 1, 0))  # OIHW -> HWIO


def _norm(state_dict, prefix):
  params = {"scale": state_dict[f"{prefix}.weight"], "bias": state_dict[f"{prefix}.bias"]}
  stats = {"mean": state_dict[f"{prefix}.running_mean"], "var": state_dict[f"{prefix}.running_var"]}
  return params, stats


def resnet_variables(state_dict: dict, name: str, in_channels: int = 3) -> dict:
  """{"params", "batch_stats"} of models.resnet.create_resnet(name) (width 1, standard stem)."""
  held = infer_architecture(state_dict)
  if held != name:
    raise errors.UserError(f"the weights file holds a {held}, but the model is {name}: set "
                           f"--config.model.name={held} or use {name} weights")
  kind, stages = resnet.ARCHITECTURES[name]
  stem = _conv(state_dict["conv1.weight"])
  if in_channels == 1 and stem.shape[2] == 3:
    stem = stem.sum(axis=2, keepdims=True)
  elif in_channels != stem.shape[2]:
    raise errors.UserError(f"the stem takes {stem.shape[2]} channels; images have {in_channels}")
  params, stats = {"conv_init": {"kernel": stem}}, {}
  params["bn_init"], stats["bn_init"] = _norm(state_dict, "bn1")
  block_name = "BasicBlock" if kind == "basic" else "BottleneckBlock"
  convs = 2 if kind == "basic" else 3
  index = 0
  for stage, num_blocks in enumerate(stages):
    for block in range(num_blocks):
      torch_prefix, ours = f"layer{stage + 1}.{block}", f"{block_name}_{index}"
      p, s = {}, {}
      for i in range(convs):
        p[f"Conv_{i}"] = {"kernel": _conv(state_dict[f"{torch_prefix}.conv{i + 1}.weight"])}
        p[f"BatchNorm_{i}"], s[f"BatchNorm_{i}"] = _norm(state_dict, f"{torch_prefix}.bn{i + 1}")
      if f"{torch_prefix}.downsample.0.weight" in state_dict:
        p["conv_proj"] = {"kernel": _conv(state_dict[f"{torch_prefix}.downsample.0.weight"])}
        p["norm_proj"], s["norm_proj"] = _norm(state_dict, f"{torch_prefix}.downsample.1")
      params[ours], stats[ours] = p, s
      index += 1
  return {"params": params, "batch_stats": stats}


def check_convertible(model_config) -> None:
  """ImageNet ResNets exist at width 1 with the standard 7x7 stem only."""
  if model_config.name not in resnet.ARCHITECTURES:
    raise errors.UserError(f"torchvision/timm weights convert to ResNets only, not {model_config.name}")
  if model_config.width != 1 or model_config.small_stem:
    raise errors.UserError("torchvision/timm weights need model.width=1 and model.small_stem=False "
                           f"(config has width {model_config.width}, small_stem {model_config.small_stem})")

"""timm and DINO Vision Transformer weights from a local file, as models/vit.py's variables.

timm's `VisionTransformer` state dict (and DINO's released backbones, which use the same
names; a DINO "teacher"/"student" dict saved on its own has them under "backbone.") maps one
tensor to one tensor: Linear weights are transposed, the patch embedding's OIHW kernel
becomes HWIO, LayerNorm `weight` is `scale`. Classifier and DINO-head tensors are ignored.

The position embeddings are resized to this run's patch grid (bicubic, as vit.py does for
another input size). The patch size must match the run's model.patch_size. For one-channel
images the RGB patch kernel is summed over its input channels, which is exact for a grey
image repeated as RGB. timm's and DINO's weights expect normalised inputs while this project
feeds [0, 1] pixels: `--config.init.input_norm` (imagenet, half) folds the normalisation into
the patch embedding, exactly (weights/input_norm.py).
"""
from __future__ import annotations

import re

import numpy as np

from medssl_jax import errors
from medssl_jax.models import vit
from medssl_jax.weights import input_norm as input_norm_lib
from medssl_jax.weights import torch_weights

_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")
# timm name inside a block -> our (module path) inside blocks_<i>
_BLOCK_LAYERS = {"norm1": ("norm1",), "attn.qkv": ("attn", "qkv"), "attn.proj": ("attn", "proj"),
                 "norm2": ("norm2",), "mlp.fc1": ("fc1",), "mlp.fc2": ("fc2",)}


def is_vit_state_dict(state_dict: dict) -> bool:
  return "pos_embed" in _strip_prefix(state_dict)


def _strip_prefix(state_dict: dict) -> dict:
  if "pos_embed" not in state_dict and "backbone.pos_embed" in state_dict:
    return {k.removeprefix("backbone."): v for k, v in state_dict.items() if k.startswith("backbone.")}
  return state_dict


def _layer_norm(state_dict, prefix) -> dict:
  return {"scale": state_dict[f"{prefix}.weight"], "bias": state_dict[f"{prefix}.bias"]}


def _dense(state_dict, prefix) -> dict:
  return {"kernel": state_dict[f"{prefix}.weight"].T, "bias": state_dict[f"{prefix}.bias"]}


def _describe(depth, width) -> str:
  return f"{depth} blocks of width {width}"


def backbone_params(state_dict: dict, target: dict) -> dict:
  """models.vit params shaped as `target` (this run's backbone params or their shapes)."""
  state_dict = _strip_prefix(state_dict)
  depth = 1 + max((int(m.group(1)) for m in map(_BLOCK_KEY.match, state_dict) if m), default=-1)
  width = state_dict["pos_embed"].shape[-1]
  target_depth = sum(1 for name in target if name.startswith("blocks_"))
  target_kernel = target["conv_init"]["kernel"].shape  # (patch, patch, channels, width)
  if (depth, width) != (target_depth, target_kernel[-1]):
    raise errors.UserError(f"the ViT weights hold {_describe(depth, width)}, this run's model "
                           f"{_describe(target_depth, target_kernel[-1])}: choose the matching "
                           f"model.name and model.width (known: {sorted(vit.ARCHITECTURES)})")
  kernel = np.transpose(state_dict["patch_embed.proj.weight"], (2, 3, 1, 0))  # OIHW -> HWIO
  if kernel.shape[0] != target_kernel[0]:
    raise errors.UserError(f"the ViT weights use patch {kernel.shape[0]}; set "
                           f"--config.model.patch_size={kernel.shape[0]} (this run has {target_kernel[0]})")
  if target_kernel[2] == 1 and kernel.shape[2] == 3:
    kernel = kernel.sum(axis=2, keepdims=True)
  elif target_kernel[2] != kernel.shape[2]:
    raise errors.UserError(f"the patch embedding takes {kernel.shape[2]} channels; images have "
                           f"{target_kernel[2]}")
  grid = int(round((target["pos_embed"].shape[1] - 1) ** 0.5))
  params = {
      "conv_init": {"kernel": kernel, "bias": state_dict["patch_embed.proj.bias"]},
      "cls_token": state_dict["cls_token"],
      "pos_embed": np.asarray(vit.resize_position_embedding(state_dict["pos_embed"], grid)),
      # timm's mean-pooling models keep the final norm as fc_norm.
      "norm": _layer_norm(state_dict, "norm" if "norm.weight" in state_dict else "fc_norm"),
  }
  for i in range(depth):
    block = params.setdefault(f"blocks_{i}", {})
    for timm_name, ours in _BLOCK_LAYERS.items():
      prefix = f"blocks.{i}.{timm_name}"
      layer = _layer_norm(state_dict, prefix) if timm_name.startswith("norm") else _dense(state_dict, prefix)
      node = block
      for part in ours[:-1]:
        node = node.setdefault(part, {})
      node[ours[-1]] = layer
  return params


def load_variables(path, target_backbone: dict, input_norm: str = "none") -> dict:
  """{"params": {"backbone": ...}, "batch_stats": {}} from a timm/DINO ViT weights file, with
  the file's input normalisation folded into the patch embedding (weights/input_norm.py)."""
  state_dict = torch_weights.read_state_dict(path)
  if not is_vit_state_dict(state_dict):
    raise errors.UserError(f"{path} holds no ViT (no pos_embed; keys like {sorted(state_dict)[:3]})")
  state_dict = input_norm_lib.fold(state_dict, input_norm)
  return {"params": {"backbone": backbone_params(state_dict, target_backbone)}, "batch_stats": {}}

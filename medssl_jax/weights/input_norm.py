"""The input normalisation an imported weights file was trained with, folded into its first layer.

torchvision, timm and DINO networks were trained on RGB inputs normalised as (x - mean) / std,
while this project feeds pixels scaled to [0, 1] (augment.preprocess_batch). With
`--config.init.input_norm` naming the file's normalisation, the first layer is rewritten so
that it computes on [0, 1] pixels what the original computed on normalised ones:

  W . (x - m) / s  =  (W / s) . x  -  sum(W m / s)

The kernel is divided by std per input channel; the constant goes into the patch
embedding's bias (ViT: exact) or the stem BatchNorm's running mean (ResNet). For a ResNet
this is exact except where the 7x7 stem reads its zero padding: the original pads
normalised inputs with 0 (a mean-grey pixel), the folded stem pads [0, 1] pixels with 0
(black), so stem outputs whose 7x7 window reaches the padding differ, and the difference
spreads inward layer by layer (benchmarks/input_norm_fold.py measures it). Folding happens on the RGB
kernel, before it is summed for one-channel images, so grey images stay exact too.
"""
from __future__ import annotations

import numpy as np

from medssl_jax import errors

# name -> (mean, std) per RGB channel; "none": the file expects [0, 1] pixels (no folding).
NORMS = {
    "none": None,
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # torchvision, timm ResNets, DINO
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # timm's augreg ViTs: [-1, 1]
}
# (first layer's OIHW kernel, the tensor its constant goes into, sign of the constant there)
_FIRST_LAYERS = (
    ("patch_embed.proj.weight", "patch_embed.proj.bias", +1.0),            # timm / DINO ViT
    ("backbone.patch_embed.proj.weight", "backbone.patch_embed.proj.bias", +1.0),  # DINO teacher
    ("conv1.weight", "bn1.running_mean", -1.0),                            # torchvision / timm ResNet
)


def mean_std(name: str):
  if name not in NORMS:
    raise errors.UserError(f"unknown init.input_norm {name!r}; known: {sorted(NORMS)}")
  return NORMS[name]


def fold(state_dict: dict, name: str) -> dict:
  """`state_dict` (PyTorch names, NumPy arrays) with normalisation `name` folded into its
  first layer; the same dict for "none"."""
  norm = mean_std(name)
  if norm is None:
    return state_dict
  for kernel_key, constant_key, sign in _FIRST_LAYERS:
    if kernel_key in state_dict and constant_key in state_dict:
      break
  else:
    raise errors.UserError(f"init.input_norm={name}: found no first layer to fold it into "
                           f"(looked for {[k for k, _, _ in _FIRST_LAYERS]})")
  kernel = np.asarray(state_dict[kernel_key], np.float64)  # (out, in, h, w)
  if kernel.shape[1] != 3:
    raise errors.UserError(f"init.input_norm={name} is an RGB normalisation, but the weights' first "
                           f"layer takes {kernel.shape[1]} channel(s): use init.input_norm=none")
  mean, std = (np.asarray(v, np.float64)[None, :, None, None] for v in norm)
  constant = -(kernel * mean / std).sum(axis=(1, 2, 3))
  folded = dict(state_dict)
  folded[kernel_key] = (kernel / std).astype(np.float32)
  folded[constant_key] = (state_dict[constant_key] + sign * constant).astype(np.float32)
  return folded

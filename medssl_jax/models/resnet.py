"""ResNet-18/34/50 backbones in Flax linen, with a width multiplier and a small-image stem.

The small-image stem (a 3x3 stride-1 convolution, no max-pool) keeps 28-64 px inputs from
being reduced to 1x1 before the last stage, as in the CIFAR variants used by SimCLR.
The backbone returns pooled features; heads live in `heads.py`.

Strided 3x3 convolutions and the stem's max-pool pad one pixel on every side, as PyTorch
does, rather than Flax's "SAME" (which pads only after): torchvision weights converted by
`torch_weights.py` then compute exactly what they computed in PyTorch.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from medssl_jax import errors

ModuleDef = Any
_PAD_1 = ((1, 1), (1, 1))

# name -> (block kind, blocks per stage)
ARCHITECTURES = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}


class BasicBlock(nn.Module):
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides), padding=_PAD_1)(x)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters, (3, 3), padding=_PAD_1)(y)
    # Zero-init the last norm's scale so each block starts as the identity.
    y = self.norm(scale_init=nn.initializers.zeros_init())(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters, (1, 1), (self.strides, self.strides), name="conv_proj")(residual)
      residual = self.norm(name="norm_proj")(residual)
    return nn.relu(residual + y)


class BottleneckBlock(nn.Module):
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1

  @nn.compact
  def __call__(self, x):
    residual = x
    y = nn.relu(self.norm()(self.conv(self.filters, (1, 1))(x)))
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides), padding=_PAD_1)(y)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters * 4, (1, 1))(y)
    y = self.norm(scale_init=nn.initializers.zeros_init())(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters * 4, (1, 1), (self.strides, self.strides), name="conv_proj")(residual)
      residual = self.norm(name="norm_proj")(residual)
    return nn.relu(residual + y)


class ResNet(nn.Module):
  """A ResNet trunk: stem, four stages, global average pool. Returns (N, features)."""
  stage_sizes: Sequence[int]
  block_cls: ModuleDef
  width: float = 1.0
  small_stem: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    base = max(1, int(round(64 * self.width)))
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                             kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"))
    # BatchNorm statistics are computed over the whole (globally sharded) batch: jit over a
    # mesh makes them cross-device without any hand-written collective.
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype)
    x = x.astype(self.dtype)
    if self.small_stem:
      x = conv(base, (3, 3), name="conv_init")(x)
      x = nn.relu(norm(name="bn_init")(x))
    else:
      x = conv(base, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv_init")(x)
      x = nn.relu(norm(name="bn_init")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=_PAD_1)
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = self.block_cls(base * 2**i, conv=conv, norm=norm, strides=strides)(x)
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


def feature_dim(name: str, width: float) -> int:
  """Size of the pooled feature vector of backbone `name` at `width`."""
  kind, _ = ARCHITECTURES[name]
  base = max(1, int(round(64 * width)))
  return base * 8 * (4 if kind == "bottleneck" else 1)


def create_resnet(name: str, width: float = 1.0, small_stem: bool = False,
                  dtype: Any = jnp.float32) -> ResNet:
  if name not in ARCHITECTURES:
    raise errors.UserError(f"unknown backbone {name!r}; known: {sorted(ARCHITECTURES)}")
  kind, stages = ARCHITECTURES[name]
  block = BasicBlock if kind == "basic" else BottleneckBlock
  return ResNet(stage_sizes=stages, block_cls=block, width=width, small_stem=small_stem, dtype=dtype)

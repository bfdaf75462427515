"""DenseNet-121 backbone in Flax linen (Huang et al. 2017), torchvision's layout.

MoCo-CXR's second backbone. Each dense layer is BN-ReLU-1x1 conv (bn_size * growth) then
BN-ReLU-3x3 conv (growth), its output concatenated to its input; transitions halve the
channels (compression 0.5) and the resolution. A width multiplier scales the growth rate
and the stem, and the small-image stem (3x3 stride-1 conv, no max-pool) keeps 28-64 px
inputs from shrinking below 1x1. Same call convention as resnet.ResNet: pooled features.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from medssl_jax import errors

ModuleDef = Any

# name -> dense layers per block
ARCHITECTURES = {
    "densenet121": (6, 12, 24, 16),
}
BN_SIZE = 4
COMPRESSION = 0.5


def _growth(width: float) -> int:
  return max(1, int(round(32 * width)))


class DenseLayer(nn.Module):
  growth: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    y = self.conv(BN_SIZE * self.growth, (1, 1))(nn.relu(self.norm()(x)))
    y = self.conv(self.growth, (3, 3), padding=[(1, 1), (1, 1)])(nn.relu(self.norm()(y)))
    return jnp.concatenate([x, y], axis=-1)


class Transition(nn.Module):
  filters: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    x = self.conv(self.filters, (1, 1))(nn.relu(self.norm()(x)))
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


class DenseNet(nn.Module):
  """Stem, dense blocks with transitions between them, final BN-ReLU, global average pool."""
  block_sizes: Sequence[int]
  width: float = 1.0
  small_stem: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    growth = _growth(self.width)
    # torchvision initialises convolutions with Kaiming normal (fan_in).
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                             kernel_init=nn.initializers.variance_scaling(2.0, "fan_in", "normal"))
    # Statistics over the whole (globally sharded) batch, as in resnet.py.
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype)
    channels = 2 * growth  # 64 at full width
    x = x.astype(self.dtype)
    if self.small_stem:
      x = nn.relu(norm(name="bn_init")(conv(channels, (3, 3), name="conv_init")(x)))
    else:
      x = conv(channels, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv_init")(x)
      x = nn.relu(norm(name="bn_init")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)])
    for i, num_layers in enumerate(self.block_sizes):
      for _ in range(num_layers):
        x = DenseLayer(growth, conv=conv, norm=norm)(x)
      channels += num_layers * growth
      if i < len(self.block_sizes) - 1:
        channels = int(channels * COMPRESSION)
        x = Transition(channels, conv=conv, norm=norm)(x)
    x = nn.relu(norm(name="bn_final")(x))
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


def _check_name(name: str) -> None:
  if name not in ARCHITECTURES:
    raise errors.UserError(f"unknown backbone {name!r}; known densenets: {sorted(ARCHITECTURES)}")


def feature_dim(name: str, width: float = 1.0) -> int:
  """Size of the pooled feature vector of backbone `name` at `width` (1024 for densenet121)."""
  _check_name(name)
  growth = _growth(width)
  channels = 2 * growth
  blocks = ARCHITECTURES[name]
  for i, num_layers in enumerate(blocks):
    channels += num_layers * growth
    if i < len(blocks) - 1:
      channels = int(channels * COMPRESSION)
  return channels


def create_densenet(name: str, width: float = 1.0, small_stem: bool = False,
                    dtype: Any = jnp.float32) -> DenseNet:
  _check_name(name)
  return DenseNet(block_sizes=ARCHITECTURES[name], width=width, small_stem=small_stem, dtype=dtype)

"""Projector and predictor MLPs that sit on top of the backbone's pooled features."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class MLPHead(nn.Module):
  """Linear -> BN -> ReLU repeated, then a final linear layer (BN optional).

  SimCLR's projector is this with 2 layers; SimSiam/BYOL reuse it as projector and
  predictor with different sizes.
  """
  hidden_dim: int
  output_dim: int
  num_layers: int = 2
  output_norm: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = x.astype(self.dtype)
    for _ in range(self.num_layers - 1):
      x = nn.Dense(self.hidden_dim, use_bias=False, dtype=self.dtype)(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
      x = nn.relu(x)
    x = nn.Dense(self.output_dim, use_bias=not self.output_norm, dtype=self.dtype)(x)
    if self.output_norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, use_scale=False,
                       dtype=self.dtype)(x)
    return x.astype(jnp.float32)

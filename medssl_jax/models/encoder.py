"""The network a method trains: a backbone followed by a projector head.

Parameters live under two top-level names, `backbone` and `projector`, so evaluation and
transfer can take the backbone alone from any checkpoint.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from medssl_jax.models import heads
from medssl_jax.models import resnet

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class Encoder(nn.Module):
  backbone: nn.Module
  projector: nn.Module

  def __call__(self, images, train: bool = True):
    """Returns (pooled backbone features, projection)."""
    features = self.backbone(images, train=train)
    return features, self.projector(features, train=train)


def _dtype(name: str) -> Any:
  if name not in DTYPES:
    raise ValueError(f"unknown model.dtype {name!r}; known: {sorted(DTYPES)}")
  return DTYPES[name]


def create_backbone(model_config: ml_collections.ConfigDict) -> nn.Module:
  if model_config.name.startswith("densenet"):
    from medssl_jax.models import densenet  # pylint: disable=g-import-not-at-top
    return densenet.create_densenet(model_config.name, width=model_config.width,
                                    small_stem=model_config.small_stem,
                                    dtype=_dtype(model_config.dtype))
  return resnet.create_resnet(model_config.name, width=model_config.width,
                              small_stem=model_config.small_stem,
                              dtype=_dtype(model_config.dtype))


def create_encoder(model_config: ml_collections.ConfigDict) -> Encoder:
  dtype = _dtype(model_config.dtype)
  projector = heads.MLPHead(hidden_dim=model_config.projector_hidden_dim,
                            output_dim=model_config.projector_dim,
                            num_layers=model_config.projector_layers, dtype=dtype)
  return Encoder(backbone=create_backbone(model_config), projector=projector)

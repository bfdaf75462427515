"""The network a method trains: a backbone followed by a projector head.

Parameters live under two top-level names, `backbone` and `projector`, so evaluation and
transfer can take the backbone alone from any checkpoint.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from medssl_jax import errors
from medssl_jax.models import densenet
from medssl_jax.models import heads
from medssl_jax.models import resnet
from medssl_jax.models import vit

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
BackboneFactory = Callable[[ml_collections.ConfigDict], nn.Module]


class Encoder(nn.Module):
  backbone: nn.Module
  projector: nn.Module

  def __call__(self, images, train: bool = True):
    """Returns (pooled backbone features, projection)."""
    features = self.backbone(images, train=train)
    return features, self.projector(features, train=train)


def _dtype(name: str) -> Any:
  if name not in DTYPES:
    raise errors.UserError(f"unknown model.dtype {name!r}; known: {sorted(DTYPES)}")
  return DTYPES[name]


def _resnet(name: str) -> BackboneFactory:
  return lambda model_config: resnet.create_resnet(
      name, width=model_config.width, small_stem=model_config.small_stem, dtype=_dtype(model_config.dtype))


def _densenet(name: str) -> BackboneFactory:
  return lambda model_config: densenet.create_densenet(
      name, width=model_config.width, small_stem=model_config.small_stem, dtype=_dtype(model_config.dtype))


def _vit(name: str) -> BackboneFactory:
  # small_stem has no meaning for a ViT: model.patch_size sets how finely images are cut.
  return lambda model_config: vit.create_vit(
      name, width=model_config.width, patch_size=model_config.patch_size, pool=model_config.pool,
      drop_path=model_config.drop_path, dtype=_dtype(model_config.dtype))


# model.name -> factory(model config) -> backbone module: the one list of backbones.
BACKBONES: dict[str, BackboneFactory] = {
    **{name: _resnet(name) for name in resnet.ARCHITECTURES},
    **{name: _densenet(name) for name in densenet.ARCHITECTURES},
    **{name: _vit(name) for name in vit.ARCHITECTURES},
}


def create_backbone(model_config: ml_collections.ConfigDict) -> nn.Module:
  _dtype(model_config.dtype)  # a bad dtype is reported before a bad name, as it always was
  if model_config.name not in BACKBONES:
    raise errors.UserError(f"unknown backbone {model_config.name!r}; known: {', '.join(sorted(BACKBONES))}")
  return BACKBONES[model_config.name](model_config)


def create_encoder(model_config: ml_collections.ConfigDict) -> Encoder:
  dtype = _dtype(model_config.dtype)
  projector = heads.MLPHead(hidden_dim=model_config.projector_hidden_dim,
                            output_dim=model_config.projector_dim,
                            num_layers=model_config.projector_layers, dtype=dtype)
  return Encoder(backbone=create_backbone(model_config), projector=projector)


class EncoderWithPredictor(nn.Module):
  """backbone -> projector -> predictor: SimSiam's network and BYOL's online network.

  `project` stops at the projector, so a network holding only backbone and projector
  parameters (BYOL's target) can be applied with `method=EncoderWithPredictor.project`.
  """
  backbone: nn.Module
  projector: nn.Module
  predictor: nn.Module

  def __call__(self, images, train: bool = True):
    """Returns (pooled backbone features, projection, prediction)."""
    features, projection = self.project(images, train=train)
    return features, projection, self.predictor(projection, train=train)

  def project(self, images, train: bool = True):
    """Returns (pooled backbone features, projection)."""
    features = self.backbone(images, train=train)
    return features, self.projector(features, train=train)


def create_encoder_with_predictor(model_config: ml_collections.ConfigDict, *, predictor_hidden_dim: int,
                                  projector_output_norm: bool) -> EncoderWithPredictor:
  """The backbone and projector of `model_config` plus a 2-layer predictor back to the
  projection's dimension."""
  backbone = create_backbone(model_config)  # validates model.dtype first
  dtype = DTYPES[model_config.dtype]
  projector = heads.MLPHead(hidden_dim=model_config.projector_hidden_dim,
                            output_dim=model_config.projector_dim,
                            num_layers=model_config.projector_layers,
                            output_norm=projector_output_norm, dtype=dtype)
  predictor = heads.MLPHead(hidden_dim=predictor_hidden_dim, output_dim=model_config.projector_dim,
                            num_layers=2, dtype=dtype)
  return EncoderWithPredictor(backbone=backbone, projector=projector, predictor=predictor)

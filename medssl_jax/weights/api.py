"""The Python API for using pretrained backbones in your own code.

  from medssl_jax.weights import api

  backbone = api.load_backbone("runs/simclr_pneumonia")     # a workdir, or a medssl-export dir
  features = backbone.features(images_uint8)                 # (N, feature_dim), frozen, eval mode
  module, variables = backbone.module, backbone.variables    # plain Flax: module.apply(variables, x)

Works for any method's run (every method names its backbone `backbone`), at the latest or a
given checkpoint step, and needs no training state, optimizer or method code. `preprocess`
turns images into the input the backbone was trained on; fine-tune by applying `module` with
`train=True, mutable=["batch_stats"]` (see examples/finetune_breastmnist.py).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from medssl_jax import augment
from medssl_jax import errors
from medssl_jax.loop import checkpointing
from medssl_jax.models import encoder
from medssl_jax.weights import export


@dataclasses.dataclass
class Backbone:
  """A pretrained backbone: Flax module, its variables and what its input must look like."""
  module: nn.Module
  variables: dict        # {"params", "batch_stats"}
  info: dict             # as in an export's backbone.json: architecture, input, method, step...

  @property
  def image_size(self) -> int:
    return self.info["input"]["size"]

  def preprocess(self, images) -> jax.Array:
    """uint8 or [0, 1] float images [N, H, W, C] -> the network's float32 input."""
    return augment.preprocess_batch(images, self.image_size)

  def features(self, images) -> jax.Array:
    """Pooled features of the frozen backbone (BatchNorm in inference mode)."""
    return _features(self.module, self.image_size, self.variables, images)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _features(module, image_size, variables, images):
  return module.apply(variables, augment.preprocess_batch(images, image_size), train=False)


def load_backbone(path, step: int | None = None, *, sharding: Any = None,
                  dtype: str | None = None) -> Backbone:
  """The backbone of a pretraining workdir (latest checkpoint or `step`) or of an export.

  sharding: where the variables go, a jax Device or Sharding (e.g. replicated over your
  mesh: NamedSharding(mesh, PartitionSpec())); default: jax's default device.
  dtype: compute dtype ("float32", "bfloat16"); default: the one the run trained with.
  """
  if export.is_export(path):
    info, tree = export.load(path)
    if step is not None and step != info["step"]:
      raise errors.UserError(f"{path} is an export of step {info['step']} only; the workdir it came "
                             f"from, {info['source_workdir']}, may hold step {step}")
    variables = tree["backbone"]
  else:
    config, variables, step = checkpointing.restore_backbone(path, step)
    info = export.describe(config, variables["params"], step, path)
  model_config = ml_collections.ConfigDict(info["model"])
  if dtype:
    model_config.dtype = dtype
  module = encoder.create_backbone(model_config)
  return Backbone(module=module, variables=jax.device_put(variables, sharding), info=info)

"""Frozen-feature extraction: no augmentation, jitted over the mesh, memory flat in N.

Images are processed in fixed-size batches (the last one padded, so one compiled shape
serves every batch); only the pooled features of each batch come back to the host.
"""
from __future__ import annotations

import functools

import jax
import numpy as np
from jax.experimental import multihost_utils

from medssl_jax import augment
from medssl_jax.data import pipeline
from medssl_jax.loop import sharding


def backbone_output(backbone):
  """apply_fn giving the pooled backbone features (the representation that is probed)."""
  return lambda variables, images: backbone.apply(variables, images, train=False)


def projection_output(model):
  """apply_fn giving the projector's output (t-SimCNE's 2-D embedding)."""
  return lambda variables, images: model.apply(variables, images, train=False)[1]


def make_feature_fn(apply_fn, image_size: int, mesh):
  @functools.partial(jax.jit, in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)),
                     out_shardings=sharding.batch_sharding(mesh))
  def features(variables, images):
    return apply_fn(variables, augment.preprocess_batch(images, image_size))
  return features


def _pad_to(batch: np.ndarray, size: int) -> np.ndarray:
  pad = size - batch.shape[0]
  return np.concatenate([batch, np.repeat(batch[-1:], pad, axis=0)]) if pad else batch


def extract_features(apply_fn, variables, source, *, image_size: int, batch_size: int,
                     mesh=None) -> np.ndarray:
  """apply_fn's outputs (N, D) for every image of `source`, in source order, e.g. with
  apply_fn=backbone_output(backbone) the pooled backbone features."""
  mesh = sharding.create_mesh() if mesh is None else mesh
  sharding.check_batch_size(batch_size, mesh)
  feature_fn = make_feature_fn(apply_fn, image_size, mesh)
  variables = jax.device_put(variables, sharding.replicated(mesh))
  local = batch_size // jax.process_count()
  begin = jax.process_index() * local
  chunks = []
  for batch in pipeline.sequential_batches(source, batch_size):
    n = batch["image"].shape[0]
    images = _pad_to(batch["image"], batch_size)[begin:begin + local]
    out = feature_fn(variables, sharding.to_global(images, mesh))
    chunks.append(np.asarray(multihost_utils.process_allgather(out, tiled=True))[:n])
  return np.concatenate(chunks)

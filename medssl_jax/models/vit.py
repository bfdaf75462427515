"""Vision Transformers (Dosovitskiy et al., 2021) as backbones: ViT-Ti/S/B and a CPU-sized one.

Pre-norm blocks (LayerNorm -> attention -> residual, LayerNorm -> GELU MLP -> residual), a
learned class token and learned position embeddings, a final LayerNorm, and as the feature
either the class token ("cls") or the mean of the patch tokens ("mean").

The layers and their names follow timm's `VisionTransformer` (fused `qkv`, `proj`, `fc1`,
`fc2`, `norm1`, `norm2`, LayerNorm eps 1e-6, exact GELU), so weights/timm_vit.py maps a
timm or DINO state dict one tensor to one tensor and the parameter counts equal timm's.
The patch embedding is named `conv_init`, the stem's name in every backbone here (export
reads the input channels from it).

Position embeddings are stored for the grid of the size the model was initialised at; an
input of another size gets them resized bicubically (the class token's is kept), as timm
and DINO do when fine-tuning or evaluating at another resolution.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from medssl_jax import errors

# name -> (hidden dim, depth, heads); the MLP is 4x the hidden dim. The digits of a name are
# the family's usual patch; the patch actually used is model.patch_size.
ARCHITECTURES = {
    "vit_nano": (128, 4, 4),    # CPU-sized, for 28-32 px images with patch 4
    "vit_ti16": (192, 12, 3),   # timm vit_tiny_patch16_224
    "vit_s16": (384, 12, 6),    # timm vit_small_patch16_224, DINO ViT-S/16
    "vit_b16": (768, 12, 12),   # timm vit_base_patch16_224, DINO ViT-B/16
}
POOLS = ("cls", "mean")
LAYER_NORM_EPS = 1e-6  # timm's ViT LayerNorm


def resize_position_embedding(pos_embed, grid: int):
  """(1, 1 + g*g, D) position embeddings -> (1, 1 + grid*grid, D): bicubic on the patch grid,
  the class token's embedding unchanged."""
  cls_embed, patch_embed = pos_embed[:, :1], pos_embed[:, 1:]
  old = int(round(patch_embed.shape[1] ** 0.5))
  if old == grid:
    return pos_embed
  patch_embed = patch_embed.reshape(1, old, old, -1)
  patch_embed = jax.image.resize(patch_embed, (1, grid, grid, patch_embed.shape[-1]), "cubic")
  return jnp.concatenate([cls_embed, patch_embed.reshape(1, grid * grid, -1)], axis=1)


class DropPath(nn.Module):
  """Stochastic depth: drops a residual branch for whole examples with probability `rate`."""
  rate: float

  @nn.compact
  def __call__(self, x, train: bool):
    if not train or self.rate == 0.0 or self.is_initializing():
      return x
    if not self.has_rng("dropout"):
      raise errors.UserError("model.drop_path > 0 needs a 'dropout' random stream, which this "
                             "method does not pass; use --config.model.drop_path=0")
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, 0.0).astype(x.dtype)


class Attention(nn.Module):
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    batch, tokens, dim = x.shape
    qkv = nn.Dense(3 * dim, dtype=self.dtype, name="qkv")(x)
    # timm's layout of the fused projection: (3, heads, head_dim) along the output axis.
    q, k, v = jnp.moveaxis(qkv.reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads), 2, 0)
    out = jax.nn.dot_product_attention(q, k, v)
    return nn.Dense(dim, dtype=self.dtype, name="proj")(out.reshape(batch, tokens, dim))


class Block(nn.Module):
  num_heads: int
  mlp_dim: int
  drop_path: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    norm = lambda name: nn.LayerNorm(epsilon=LAYER_NORM_EPS, dtype=self.dtype, name=name)
    y = Attention(self.num_heads, dtype=self.dtype, name="attn")(norm("norm1")(x))
    x = x + DropPath(self.drop_path)(y, train)
    y = nn.Dense(self.mlp_dim, dtype=self.dtype, name="fc1")(norm("norm2")(x))
    y = nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(nn.gelu(y, approximate=False))
    return x + DropPath(self.drop_path)(y, train)


class ViT(nn.Module):
  """Images (N, H, W, C) -> pooled features (N, hidden_dim) in float32."""
  hidden_dim: int
  depth: int
  num_heads: int
  patch_size: int = 16
  pool: str = "cls"
  drop_path: float = 0.0   # rate of the last block; linear from 0 at the first (DINO, DeiT)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = True):
    p = self.patch_size
    if images.shape[1] != images.shape[2] or images.shape[1] % p:
      raise errors.UserError(f"a ViT with patch {p} needs square images whose side is a multiple of "
                             f"{p}; got {images.shape[1]}x{images.shape[2]} (set augment.size)")
    x = nn.Conv(self.hidden_dim, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                name="conv_init")(images.astype(self.dtype))
    batch, grid = x.shape[0], x.shape[1]
    x = x.reshape(batch, grid * grid, self.hidden_dim)
    cls_token = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, self.hidden_dim))
    if self.has_variable("params", "pos_embed"):  # stored for the grid of the init size
      pos_embed = self.get_variable("params", "pos_embed")
    else:
      pos_embed = self.param("pos_embed", nn.initializers.normal(0.02), (1, 1 + grid * grid, self.hidden_dim))
    x = jnp.concatenate([jnp.broadcast_to(cls_token, (batch, 1, self.hidden_dim)).astype(x.dtype), x], 1)
    x = x + resize_position_embedding(pos_embed, grid).astype(x.dtype)
    for i in range(self.depth):
      rate = self.drop_path * i / max(self.depth - 1, 1)
      x = Block(self.num_heads, 4 * self.hidden_dim, drop_path=rate, dtype=self.dtype,
                name=f"blocks_{i}")(x, train)
    x = nn.LayerNorm(epsilon=LAYER_NORM_EPS, dtype=self.dtype, name="norm")(x)
    features = x[:, 0] if self.pool == "cls" else jnp.mean(x[:, 1:], axis=1)
    return features.astype(jnp.float32)


def hidden_dim(name: str, width: float = 1.0) -> int:
  """The token (and feature) size of `name` at `width`: a multiple of its head count."""
  dim, _, heads = ARCHITECTURES[name]
  return max(1, int(round(dim * width / heads))) * heads


def create_vit(name: str, *, width: float = 1.0, patch_size: int = 16, pool: str = "cls",
               drop_path: float = 0.0, dtype: Any = jnp.float32) -> ViT:
  """`width` scales the hidden dim (heads and depth kept): 1 gives the published sizes."""
  if name not in ARCHITECTURES:
    raise errors.UserError(f"unknown ViT {name!r}; known: {sorted(ARCHITECTURES)}")
  if pool not in POOLS:
    raise errors.UserError(f"unknown model.pool {pool!r}; known: {POOLS}")
  if patch_size < 1 or not 0.0 <= drop_path < 1.0:
    raise errors.UserError(f"model.patch_size={patch_size} must be >= 1 and model.drop_path={drop_path} "
                           "in [0, 1)")
  _, depth, heads = ARCHITECTURES[name]
  return ViT(hidden_dim=hidden_dim(name, width), depth=depth, num_heads=heads, patch_size=patch_size,
             pool=pool, drop_path=drop_path, dtype=dtype)

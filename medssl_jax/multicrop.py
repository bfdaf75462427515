"""Multi-crop on the device (Caron et al., 2020; DINO, 2021): 2 global views at one size and
N local views at a smaller size from the same uint8 batch, in one jitted computation.

Built from augment.py's public pieces only: each view is `augment.augment_batch` with its
own key (split there into one key per example). The N local views share one traced
augmentation, vmapped over their N keys, so their number does not add compile time.

DINO's three policies are named here ("dino_global1", "dino_global2", "dino_local"): the
globals are BYOL's asymmetric pair (blur always / blur 0.1 and solarize 0.2) on crops of
40-100% of the image, the locals crops of 5-40% with blur 0.5. `get_policy` finds them and
every name augment.get_policy knows; `with_crop_scale` sets a policy's crop scale (DINO's
global_crops_scale / local_crops_scale).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from medssl_jax import augment
from medssl_jax import errors

GLOBAL_SCALE = (0.4, 1.0)   # DINO's default global_crops_scale
LOCAL_SCALE = (0.05, 0.4)   # and local_crops_scale
# DINO's colour distortion: BYOL's jitter (p 0.8) then grey (p 0.2), after crop and flip.
_FLIP_AND_COLOUR = (augment.HorizontalFlip(0.5), augment.ColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8),
                    augment.RandomGrayscale(0.2))

POLICIES: dict[str, tuple] = {
    # DINO global view 1: blur always.
    "dino_global1": ((augment.RandomResizedCrop(GLOBAL_SCALE),) + _FLIP_AND_COLOUR
                     + (augment.GaussianBlur(p=1.0),)),
    # DINO global view 2: blur p 0.1, solarize p 0.2.
    "dino_global2": ((augment.RandomResizedCrop(GLOBAL_SCALE),) + _FLIP_AND_COLOUR
                     + (augment.GaussianBlur(p=0.1), augment.Solarize(0.5, p=0.2))),
    # DINO local views: small crops, blur p 0.5.
    "dino_local": ((augment.RandomResizedCrop(LOCAL_SCALE),) + _FLIP_AND_COLOUR
                   + (augment.GaussianBlur(p=0.5),)),
}


def get_policy(name: str) -> tuple:
  """A multi-crop policy named here, or any policy augment.get_policy knows."""
  if name in POLICIES:
    return POLICIES[name]
  try:
    return augment.get_policy(name)
  except errors.UserError as e:
    raise errors.UserError(f"{e}; multi-crop policies: {sorted(POLICIES)}") from None


def with_crop_scale(policy: tuple, scale) -> tuple:
  """`policy` with every RandomResizedCrop's area fraction set to `scale` (low, high)."""
  scale = tuple(float(s) for s in scale)
  if len(scale) != 2 or not 0.0 < scale[0] <= scale[1] <= 1.0:
    raise errors.UserError(f"a crop scale must be (low, high) with 0 < low <= high <= 1; got {scale}")
  return tuple(dataclasses.replace(op, scale=scale) if isinstance(op, augment.RandomResizedCrop) else op
               for op in policy)


def view_keys(key: jax.Array):
  """(key of global view 1, of global view 2, of the local views, left over for the caller)."""
  return tuple(jax.random.split(key, 4))


def multicrop(images, key: jax.Array, *, global_policies: tuple, global_size: int, local_policy: tuple,
              local_size: int, num_local: int, images2=None):
  """(globals [2, B, G, G, C], locals [num_local, B, L, L, C]) float32 in [0, 1].

  Global view 1 comes from `images`, global view 2 from `images2` (the second image of a
  pair, e.g. MICLe's; default the same images), the local views from `images`. Keep the
  policies, sizes and num_local static under jit.
  """
  key_1, key_2, key_local, _ = view_keys(key)
  images2 = images if images2 is None else images2
  globals_ = jnp.stack([augment.augment_batch(images, key_1, global_policies[0], global_size),
                        augment.augment_batch(images2, key_2, global_policies[1], global_size)])
  if num_local == 0:
    return globals_, jnp.zeros((0,) + globals_.shape[1:2] + (local_size, local_size) + globals_.shape[-1:])
  local_keys = jax.random.split(key_local, num_local)
  locals_ = jax.vmap(lambda k: augment.augment_batch(images, k, local_policy, local_size))(local_keys)
  return globals_, locals_

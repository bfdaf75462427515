"""On-device, jitted, per-example random augmentations and named policies.

A policy is a tuple of small frozen dataclasses (hashable, so it can be a static `jax.jit`
argument). Geometric ops (crop, flip, rotate) do not touch pixels: each returns a 3x3
affine matrix, the matrices compose into one map from output pixels to input pixels, and
the image is resampled ONCE (bilinear) at out_size x out_size. Photometric ops then run in
policy order on float32 in [0, 1], clipping after each.

Coordinates: a "normalized frame" with pixel centres at (i + 0.5) / n - 0.5, i.e. the
image spans [-0.5, 0.5] on both axes, centre at 0. Vectors are (row, col, 1). The output
is square, so rotations composed after a crop are true rotations of the output; a rotation
applied directly to a non-square input acts in this normalized (stretched) frame.

Typical use inside a jitted train step (policy and out_size static):

  view1 = augment_batch(images, k1, "simclr", 224)
"""
from __future__ import annotations

import dataclasses
import math
from typing import Union

import jax
import jax.numpy as jnp

# torchvision RandomResizedCrop tries this many (area, ratio) draws before falling back.
_CROP_ATTEMPTS = 10
# ITU-R 601 luma, as torchvision uses for the contrast mean of RGB images.
_LUMA = (0.299, 0.587, 0.114)


class GeometricOp:
  """Contributes an affine map (output -> input, normalized frame); never resamples."""

  def matrix(self, key: jax.Array, in_hw: tuple[int, int]) -> jnp.ndarray:
    raise NotImplementedError


class PhotometricOp:
  """Maps a float32 [H, W, C] image in [0, 1] to another one."""

  def apply(self, image: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
    raise NotImplementedError


Op = Union[GeometricOp, PhotometricOp]


def _coin(u, p):
  """Per-example Bernoulli(p) from a uniform draw u; static shortcuts for p in {0, 1}."""
  if p >= 1.0:
    return jnp.array(True)
  if p <= 0.0:
    return jnp.array(False)
  return u < p


def _uniform(u, low, high):
  return low + (high - low) * u


def _affine(rows) -> jnp.ndarray:
  return jnp.asarray(rows, dtype=jnp.float32)


def _rotation(degrees) -> jnp.ndarray:
  """Samples the source at R q so the content turns counter-clockwise (np.rot90 sense)."""
  theta = jnp.deg2rad(degrees)
  c, s = jnp.cos(theta), jnp.sin(theta)
  zero, one = jnp.zeros_like(c), jnp.ones_like(c)
  return jnp.stack([jnp.stack([c, s, zero]),
                    jnp.stack([-s, c, zero]),
                    jnp.stack([zero, zero, one])]).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class RandomResizedCrop(GeometricOp):
  """Inception-style crop: area fraction in `scale`, aspect ratio w/h in `ratio` (log-uniform).

  Follows torchvision: up to 10 draws, the first that fits is used, else a centre crop of
  the whole image with the ratio clamped. Offsets are continuous rather than integer.
  """
  scale: tuple[float, float] = (0.08, 1.0)
  ratio: tuple[float, float] = (3 / 4, 4 / 3)

  def matrix(self, key, in_hw):
    h_in, w_in = in_hw
    # One draw for everything: each jax.random call adds compile time under vmap.
    u = jax.random.uniform(key, (2 * _CROP_ATTEMPTS + 2,))
    area = _uniform(u[:_CROP_ATTEMPTS], *self.scale) * (h_in * w_in)
    log_r = _uniform(u[_CROP_ATTEMPTS:-2], math.log(self.ratio[0]), math.log(self.ratio[1]))
    r = jnp.exp(log_r)
    w_px, h_px = jnp.sqrt(area * r), jnp.sqrt(area / r)
    fits = (w_px <= w_in) & (h_px <= h_in)
    first = jnp.argmax(fits)  # index of the first draw that fits (0 if none does)
    fb_h, fb_w = self._fallback(h_in, w_in)
    h = jnp.where(fits.any(), h_px[first], fb_h) / h_in
    w = jnp.where(fits.any(), w_px[first], fb_w) / w_in
    # Top-left corner uniform over the positions that keep the crop inside the image.
    top = u[-2] * (1.0 - h)
    left = u[-1] * (1.0 - w)
    zero = jnp.zeros_like(h)
    return jnp.stack([jnp.stack([h, zero, top + h / 2 - 0.5]),
                      jnp.stack([zero, w, left + w / 2 - 0.5]),
                      jnp.array([0.0, 0.0, 1.0])]).astype(jnp.float32)

  def _fallback(self, h_in, w_in):
    """Static (Python) fallback crop size in pixels, as torchvision."""
    in_ratio = w_in / h_in
    if in_ratio < min(self.ratio):
      return w_in / min(self.ratio), w_in
    if in_ratio > max(self.ratio):
      return h_in, h_in * max(self.ratio)
    return h_in, w_in


@dataclasses.dataclass(frozen=True)
class HorizontalFlip(GeometricOp):
  """Mirror left-right with probability p."""
  p: float = 0.5

  def matrix(self, key, in_hw):
    del in_hw
    sign = jnp.where(_coin(jax.random.uniform(key), self.p), -1.0, 1.0)
    return _affine([[1.0, 0.0, 0.0], [0.0, sign, 0.0], [0.0, 0.0, 1.0]])


@dataclasses.dataclass(frozen=True)
class Rotate(GeometricOp):
  """Rotate about the centre by an angle uniform in [-max_degrees, max_degrees].

  Corners outside the source take the nearest edge pixel (see `_resample`).
  """
  max_degrees: float = 180.0
  p: float = 1.0

  def matrix(self, key, in_hw):
    del in_hw
    u = jax.random.uniform(key, (2,))
    angle = _uniform(u[1], -self.max_degrees, self.max_degrees)
    return _rotation(jnp.where(_coin(u[0], self.p), angle, 0.0))


@dataclasses.dataclass(frozen=True)
class FixedRotate(GeometricOp):
  """Deterministic counter-clockwise rotation (tests, test-time augmentation)."""
  degrees: float = 90.0

  def matrix(self, key, in_hw):
    del key, in_hw
    return _rotation(jnp.float32(self.degrees))


def _gray_mean(image):
  if image.shape[-1] == 3:
    return sum(w * jnp.mean(image[..., i]) for i, w in enumerate(_LUMA))
  return jnp.mean(image)


@dataclasses.dataclass(frozen=True)
class BrightnessContrast(PhotometricOp):
  """With probability p: brightness x factor in [1-b, 1+b], then contrast (blend with the
  grey mean by a factor in [1-c, 1+c]); one coin for both, as RandomApply(ColorJitter)."""
  brightness: float = 0.4
  contrast: float = 0.4
  p: float = 0.8

  def apply(self, image, key):
    u = jax.random.uniform(key, (3,))
    b = _uniform(u[1], max(0.0, 1 - self.brightness), 1 + self.brightness)
    c = _uniform(u[2], max(0.0, 1 - self.contrast), 1 + self.contrast)
    out = jnp.clip(image * b, 0.0, 1.0)
    out = jnp.clip(c * out + (1 - c) * _gray_mean(out), 0.0, 1.0)
    return jnp.where(_coin(u[0], self.p), out, image)


def blur_kernel_size(side: int, kernel_fraction: float) -> int:
  """Odd kernel size about `kernel_fraction` of the side, at least 3."""
  size = int(round(kernel_fraction * side))
  return max(3, size + 1 - size % 2)


def _blur_axis(image, kernel, axis):
  """Correlate along `axis` with reflect padding; taps unrolled (size is static)."""
  size = kernel.shape[0]
  pad = [(0, 0)] * image.ndim
  pad[axis] = (size // 2, size // 2)
  padded = jnp.pad(image, pad, mode="reflect")
  n = image.shape[axis]
  return sum(kernel[t] * jax.lax.slice_in_dim(padded, t, t + n, axis=axis)
             for t in range(size))


@dataclasses.dataclass(frozen=True)
class GaussianBlur(PhotometricOp):
  """Separable Gaussian blur with probability p; sigma (output pixels) uniform in `sigma`."""
  sigma: tuple[float, float] = (0.1, 2.0)
  p: float = 0.5
  kernel_fraction: float = 0.1

  def apply(self, image, key):
    u = jax.random.uniform(key, (2,))
    sigma = _uniform(u[1], *self.sigma)
    size = blur_kernel_size(image.shape[0], self.kernel_fraction)
    x = jnp.arange(size, dtype=jnp.float32) - size // 2
    kernel = jnp.exp(-0.5 * jnp.square(x / sigma))
    kernel = kernel / jnp.sum(kernel)
    out = _blur_axis(_blur_axis(image, kernel, 0), kernel, 1)
    return jnp.where(_coin(u[0], self.p), jnp.clip(out, 0.0, 1.0), image)


POLICIES: dict[str, tuple[Op, ...]] = {
    # No augmentation: bilinear resize to out_size only.
    "none": (),
    # SimCLR (Chen et al., 2020) minus colour hue/saturation, which grey medical images lack.
    "simclr": (RandomResizedCrop((0.08, 1.0)), HorizontalFlip(0.5),
               BrightnessContrast(0.4, 0.4, p=0.8), GaussianBlur(p=0.5)),
    # Chest X-ray: crop + brightness/contrast, the best pair in Sowrirajan/Azizi-style studies.
    "cxr": (RandomResizedCrop((0.3, 1.0)), BrightnessContrast(0.5, 0.5, p=1.0)),
    # Microscopy/histology has no canonical orientation: SimCLR set plus any rotation.
    "microscopy": (RandomResizedCrop((0.08, 1.0)), HorizontalFlip(0.5), Rotate(180.0),
                   BrightnessContrast(0.4, 0.4, p=0.8), GaussianBlur(p=0.5)),
    # MoCo-CXR (Sowrirajan et al., 2021): small rotation + horizontal flip.
    "mocov2_cxr": (Rotate(10.0), HorizontalFlip(0.5)),
}


def get_policy(name: str) -> tuple[Op, ...]:
  if name not in POLICIES:
    raise ValueError(f"Unknown augmentation policy {name!r}; valid: {sorted(POLICIES)}")
  return POLICIES[name]


def _split_policy(policy) -> tuple[tuple[int, GeometricOp], tuple[int, PhotometricOp]]:
  """Geometric and photometric ops with their policy index (the index seeds their key)."""
  if isinstance(policy, str):
    policy = get_policy(policy)
  geometric, photometric = [], []
  for i, op in enumerate(policy):
    if isinstance(op, GeometricOp):
      # All resampling happens at once before photometric ops; a later geometric op would
      # silently run out of order, so reject it.
      if photometric:
        raise ValueError(f"Geometric op {op} follows a photometric op in {policy}")
      geometric.append((i, op))
    elif isinstance(op, PhotometricOp):
      photometric.append((i, op))
    else:
      raise TypeError(f"Not an augmentation op: {op!r}")
  return tuple(geometric), tuple(photometric)


def _to_float(images) -> jnp.ndarray:
  images = jnp.asarray(images)
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def _resample(image, matrix, out_size):
  """Bilinear sample of [H, W, C] at out_size^2 points given by `matrix` (output -> input).

  mode='nearest' rather than 'constant': with pixel-centre sampling, a plain resize reads
  up to half a pixel outside the image, and 'constant' would blend the border with black;
  'nearest' also fills rotated-away corners with edge pixels instead of black.
  """
  h_in, w_in = image.shape[:2]
  q = (jnp.arange(out_size, dtype=jnp.float32) + 0.5) / out_size - 0.5
  qy, qx = jnp.meshgrid(q, q, indexing="ij")
  # Elementwise rather than a dot: TF32/bf16 matmul defaults on GPU/TPU would shift
  # sample points by a fraction of a pixel.
  v = [matrix[r, 0] * qy + matrix[r, 1] * qx + matrix[r, 2] for r in range(2)]
  rows = (v[0] + 0.5) * h_in - 0.5
  cols = (v[1] + 0.5) * w_in - 0.5
  sample = lambda channel: jax.scipy.ndimage.map_coordinates(
      channel, [rows, cols], order=1, mode="nearest")
  out = jax.vmap(sample, in_axes=-1, out_axes=-1)(image)
  return jnp.clip(out, 0.0, 1.0)


def augment_image(image, key, policy, out_size) -> jnp.ndarray:
  """One example: float [H, W, C] in [0, 1] -> float32 [out_size, out_size, C] in [0, 1]."""
  geometric, photometric = _split_policy(policy)
  image = _to_float(image)
  matrix = jnp.eye(3, dtype=jnp.float32)
  # Ops in policy order: the first op is nearest the input, so it is the leftmost factor.
  for i, op in geometric:
    op_matrix = op.matrix(jax.random.fold_in(key, i), image.shape[:2])
    matrix = jnp.matmul(matrix, op_matrix, precision=jax.lax.Precision.HIGHEST)
  out = _resample(image, matrix, out_size)
  for i, op in photometric:
    out = jnp.clip(op.apply(out, jax.random.fold_in(key, i)), 0.0, 1.0)
  return out


def _check_batch(images):
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"Expected images [B, H, W, C] with C in (1, 3); got {images.shape}")


def augment_batch(images, rng, policy, out_size: int) -> jnp.ndarray:
  """Per-example augmentation: uint8 or float [B, H, W, C] -> float32 [B, out, out, C].

  `rng` is one key, split into B per-example keys. `policy` is a tuple of ops or a name in
  POLICIES; keep `policy` and `out_size` static under jit.
  """
  images = jnp.asarray(images)
  _check_batch(images)
  _split_policy(policy)  # validate once, outside vmap, for a clearer traceback
  keys = jax.random.split(rng, images.shape[0])
  return jax.vmap(lambda im, k: augment_image(im, k, policy, out_size))(images, keys)


def preprocess_batch(images, out_size) -> jnp.ndarray:
  """Deterministic evaluation input: the same bilinear resize as training, no augmentation."""
  images = _to_float(images)
  _check_batch(images)
  identity = jnp.eye(3, dtype=jnp.float32)
  return jax.vmap(lambda im: _resample(im, identity, out_size))(images)

"""On-device, jitted, per-example random augmentations and named policies.

A policy is a tuple of small frozen dataclasses (hashable, so it can be a static `jax.jit`
argument). Geometric ops (crop, flips, rotations) do not touch pixels: each returns a 3x3
affine matrix, the matrices compose into one map from output pixels to input pixels, and
the image is resampled ONCE (bilinear) at out_size x out_size. Pixel ops (`PhotometricOp`:
colour, blur, noise, cutout, ..., and the non-affine elastic warp) then run in policy order
on float32 in [0, 1], clipping after each.

Coordinates: a "normalized frame" with pixel centres at (i + 0.5) / n - 0.5, i.e. the
image spans [-0.5, 0.5] on both axes, centre at 0. Vectors are (row, col, 1). The output
is square, so rotations composed after a crop are true rotations of the output; a rotation
applied directly to a non-square input acts in this normalized (stretched) frame.

`POLICIES` holds the named recipes, `OPS` one default instance per short op name, and
`policy_from_ops(["crop", "blur"])` builds a policy from such names (ablations, previews);
wherever a policy name is taken, "crop+blur" means the same.

Typical use inside a jitted train step (policy and out_size static):

  view1 = augment_batch(images, k1, "simclr", 224)
"""
from __future__ import annotations

import dataclasses
import math
from typing import Union

import jax
import jax.numpy as jnp

from medssl_jax import errors

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
  return _rotation_cos_sin(jnp.cos(theta), jnp.sin(theta))


def _rotation_cos_sin(c, s) -> jnp.ndarray:
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
class VerticalFlip(GeometricOp):
  """Mirror top-bottom with probability p."""
  p: float = 0.5

  def matrix(self, key, in_hw):
    del in_hw
    sign = jnp.where(_coin(jax.random.uniform(key), self.p), -1.0, 1.0)
    return _affine([[sign, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


# cos and sin of k quarter turns, exact: cos(pi / 2) is not 0 in float32.
_QUARTER_COS = (1.0, 0.0, -1.0, 0.0)
_QUARTER_SIN = (0.0, 1.0, 0.0, -1.0)


@dataclasses.dataclass(frozen=True)
class Rotate90(GeometricOp):
  """Counter-clockwise by k quarter turns (np.rot90's k), k uniform over `turns`.

  `Rotate` covers arbitrary angles; this one is exact and leaves no corners to fill.
  """
  turns: tuple[int, ...] = (0, 1, 2, 3)

  def matrix(self, key, in_hw):
    del in_hw
    k = jnp.asarray(self.turns)[jax.random.randint(key, (), 0, len(self.turns))] % 4
    return _rotation_cos_sin(jnp.asarray(_QUARTER_COS)[k], jnp.asarray(_QUARTER_SIN)[k])


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


def _luma(image):
  """[H, W, 1] grey level of an RGB or grey [H, W, C] image."""
  if image.shape[-1] == 3:
    return sum(w * image[..., i:i + 1] for i, w in enumerate(_LUMA))
  return image


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


@dataclasses.dataclass(frozen=True)
class Gamma(PhotometricOp):
  """With probability p: x ** g with g log-uniform in `gamma` (g < 1 brightens)."""
  gamma: tuple[float, float] = (0.5, 2.0)
  p: float = 0.5

  def apply(self, image, key):
    u = jax.random.uniform(key, (2,))
    g = jnp.exp(_uniform(u[1], math.log(self.gamma[0]), math.log(self.gamma[1])))
    return jnp.where(_coin(u[0], self.p), jnp.power(image, g), image)


def _blend(image, other, factor):
  return jnp.clip(factor * image + (1 - factor) * other, 0.0, 1.0)


def _shift_hue(image, shift):
  """Adds `shift` (in turns) to the HSV hue of an RGB image; value and saturation kept."""
  r, g, b = image[..., 0], image[..., 1], image[..., 2]
  value = jnp.max(image, axis=-1)
  chroma = value - jnp.min(image, axis=-1)
  safe = jnp.where(chroma > 0, chroma, 1.0)
  # Pick the largest channel by comparing channels, not by `value == r`: XLA may recompute
  # the image in several fusions, rounded differently, and then no channel equals the max.
  hue = jnp.where((r >= g) & (r >= b), (g - b) / safe,
                  jnp.where(g >= b, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
  hue = jnp.mod(hue / 6.0 + shift, 1.0)
  # HSV -> RGB without branches: channel n in (R, G, B) = (5, 3, 1).
  out = [value - chroma * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)
         for k in (jnp.mod(n + 6.0 * hue, 6.0) for n in (5.0, 3.0, 1.0))]
  return jnp.stack(out, axis=-1)


@dataclasses.dataclass(frozen=True)
class ColorJitter(PhotometricOp):
  """torchvision ColorJitter inside RandomApply(p), as in SimCLR and BYOL.

  Factors as torchvision: brightness (x times b), contrast (blend with the grey mean) and
  saturation (blend with the grey image), each uniform in [max(0, 1 - x), 1 + x]; hue adds a
  shift uniform in [-hue, hue] turns of the HSV circle. With `random_order` (torchvision,
  SimCLR, BYOL) the four run in a per-example random order; every one clips to [0, 1].
  Grey (1-channel) images have no saturation or hue, so those two are no-ops there while
  brightness and contrast still apply. `color_jitter(s)` gives SimCLR's strength s.
  """
  brightness: float = 0.8
  contrast: float = 0.8
  saturation: float = 0.8
  hue: float = 0.2
  p: float = 0.8
  random_order: bool = True

  def apply(self, image, key):
    u = jax.random.uniform(key, (9,))
    b = _uniform(u[1], max(0.0, 1 - self.brightness), 1 + self.brightness)
    c = _uniform(u[2], max(0.0, 1 - self.contrast), 1 + self.contrast)
    s = _uniform(u[3], max(0.0, 1 - self.saturation), 1 + self.saturation)
    shift = _uniform(u[4], -self.hue, self.hue)
    rgb = image.shape[-1] == 3
    candidates = [(self.brightness, lambda x: jnp.clip(x * b, 0.0, 1.0)),
                  (self.contrast, lambda x: _blend(x, _gray_mean(x), c)),
                  (self.saturation if rgb else 0.0, lambda x: _blend(x, _luma(x), s)),
                  (self.hue if rgb else 0.0, lambda x: jnp.clip(_shift_hue(x, shift), 0.0, 1.0))]
    # Inactive ops are left out statically: less to compile, and exact no-ops.
    active = [i for i, (strength, _) in enumerate(candidates) if strength > 0]
    steps = [candidates[i][1] for i in active]
    out = image
    if self.random_order and len(steps) > 1:
      # Ranks of one draw per op: two ops' relative order does not depend on the others.
      order = jnp.argsort(u[5:][jnp.asarray(active)])
      for i in range(len(steps)):
        # Under vmap every branch runs at every position (n x the work; see BENCHMARKS.md).
        out = jax.lax.switch(order[i], steps, out)
    else:
      for step in steps:
        out = step(out)
    return jnp.where(_coin(u[0], self.p), out, image)


def color_jitter(strength: float = 1.0, p: float = 0.8) -> ColorJitter:
  """SimCLR's colour distortion of strength s: brightness, contrast, saturation 0.8 s, hue 0.2 s."""
  return ColorJitter(0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength, p=p)


@dataclasses.dataclass(frozen=True)
class RandomGrayscale(PhotometricOp):
  """With probability p: every channel set to the ITU-R 601 luma; grey images unchanged."""
  p: float = 0.2

  def apply(self, image, key):
    if image.shape[-1] == 1:
      return image
    grey = jnp.broadcast_to(_luma(image), image.shape)
    return jnp.where(_coin(jax.random.uniform(key), self.p), grey, image)


@dataclasses.dataclass(frozen=True)
class GaussianNoise(PhotometricOp):
  """With probability p: add i.i.d. N(0, std^2) per pixel and channel, std uniform in `std`."""
  std: tuple[float, float] = (0.0, 0.1)
  p: float = 0.5

  def apply(self, image, key):
    key_u, key_noise = jax.random.split(key)
    u = jax.random.uniform(key_u, (2,))
    noisy = image + _uniform(u[1], *self.std) * jax.random.normal(key_noise, image.shape)
    return jnp.where(_coin(u[0], self.p), jnp.clip(noisy, 0.0, 1.0), image)


@dataclasses.dataclass(frozen=True)
class Sobel(PhotometricOp):
  """With probability p: per-channel Sobel gradient magnitude / 4 (a unit step gives 1).

  Edge-replicated borders; a constant image gives exactly 0 (each derivative is a
  difference of two identically computed terms).
  """
  p: float = 1.0

  def apply(self, image, key):
    w = image.shape[1]
    padded = jnp.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    row_diff = padded[2:] - padded[:-2]                      # [H, W + 2, C]
    row_smooth = padded[2:] + 2 * padded[1:-1] + padded[:-2]
    d_row = row_diff[:, :w] + 2 * row_diff[:, 1:w + 1] + row_diff[:, 2:]
    d_col = row_smooth[:, 2:] - row_smooth[:, :w]
    edges = jnp.clip(jnp.sqrt(d_row**2 + d_col**2) / 4.0, 0.0, 1.0)
    return jnp.where(_coin(jax.random.uniform(key), self.p), edges, image)


@dataclasses.dataclass(frozen=True)
class Cutout(PhotometricOp):
  """With probability p: a rectangle set to `fill` (DeVries & Taylor, 2017).

  Height and width are independent fractions of the side, uniform in `size`, rounded to
  whole pixels (at least 1); the rectangle lies fully inside the image, so its area is
  exactly what was drawn.
  """
  size: tuple[float, float] = (0.1, 0.5)
  fill: float = 0.0
  p: float = 0.5

  def apply(self, image, key):
    h, w = image.shape[:2]
    u = jax.random.uniform(key, (5,))
    cut_h = jnp.clip(jnp.round(_uniform(u[1], *self.size) * h), 1, h)
    cut_w = jnp.clip(jnp.round(_uniform(u[2], *self.size) * w), 1, w)
    top = jnp.floor(u[3] * (h - cut_h + 1))
    left = jnp.floor(u[4] * (w - cut_w + 1))
    rows = jnp.arange(h, dtype=jnp.float32)[:, None, None]
    cols = jnp.arange(w, dtype=jnp.float32)[None, :, None]
    inside = (rows >= top) & (rows < top + cut_h) & (cols >= left) & (cols < left + cut_w)
    return jnp.where(inside & _coin(u[0], self.p), jnp.float32(self.fill), image)


@dataclasses.dataclass(frozen=True)
class Solarize(PhotometricOp):
  """With probability p: values >= threshold become 1 - value (torchvision, BYOL)."""
  threshold: float = 0.5
  p: float = 0.2

  def apply(self, image, key):
    solarized = jnp.where(image >= self.threshold, 1.0 - image, image)
    return jnp.where(_coin(jax.random.uniform(key), self.p), solarized, image)


# The elastic warp is not affine, so it cannot join the fused matrix. It is a pixel op that
# resamples the already-resampled output once more: one extra bilinear pass (slight blur)
# on out_size pixels, in exchange for leaving the single-resample geometric path untouched.
@dataclasses.dataclass(frozen=True)
class ElasticDeformation(PhotometricOp):
  """With probability p: warp by a smooth random displacement field.

  Displacements of a `grid` x `grid` lattice of control points are uniform in
  [-magnitude, magnitude] (fraction of the side) and interpolated bicubically to every
  pixel; the image is sampled bilinearly at the displaced points, edges replicated.
  """
  magnitude: float = 0.05
  grid: int = 4
  p: float = 0.5

  def apply(self, image, key):
    h, w = image.shape[:2]
    u = jax.random.uniform(key, (2 * self.grid * self.grid + 1,))
    coarse = (2.0 * u[1:].reshape(self.grid, self.grid, 2) - 1.0) * self.magnitude
    field = jax.image.resize(coarse, (h, w, 2), "cubic")
    rows = jnp.arange(h, dtype=jnp.float32)[:, None] + field[..., 0] * h
    cols = jnp.arange(w, dtype=jnp.float32)[None, :] + field[..., 1] * w
    sample = lambda channel: jax.scipy.ndimage.map_coordinates(
        channel, [rows, cols], order=1, mode="nearest")
    warped = jax.vmap(sample, in_axes=-1, out_axes=-1)(image)
    return jnp.where(_coin(u[0], self.p), warped, image)


_SIMCLR_COLOUR = (color_jitter(1.0, p=0.8), RandomGrayscale(0.2), GaussianBlur(p=0.5))
# BYOL's colour jitter: weaker saturation and hue than SimCLR's strength 1.
_BYOL_JITTER = ColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8)
_MOCO_CXR = (Rotate(10.0), HorizontalFlip(0.5))

POLICIES: dict[str, tuple[Op, ...]] = {
    # No augmentation: bilinear resize to out_size only.
    "none": (),
    # SimCLR (Chen et al., 2020) default: crop, flip, colour jitter s=1 (p 0.8), grey 0.2, blur 0.5.
    "simclr": (RandomResizedCrop((0.08, 1.0)), HorizontalFlip(0.5)) + _SIMCLR_COLOUR,
    # Chest X-ray: crop + brightness/contrast, the pair a chest X-ray augmentation study found best.
    "cxr": (RandomResizedCrop((0.3, 1.0)), BrightnessContrast(0.5, 0.5, p=1.0)),
    # Microscopy/histology has no canonical orientation: SimCLR set plus any rotation
    # (t-SimCNE on medical data, Nwabufo et al., 2024).
    "microscopy": ((RandomResizedCrop((0.08, 1.0)), HorizontalFlip(0.5), Rotate(180.0))
                   + _SIMCLR_COLOUR),
    # MoCo-CXR (Sowrirajan et al., 2021): rotation up to 10 degrees + horizontal flip.
    "mocov2_cxr": _MOCO_CXR,
    "moco_cxr": _MOCO_CXR,
    # MICLe (Azizi et al., 2021): crop, flip, rotation up to 45 degrees, SimCLR colour
    # distortion at strength 0.5 (jitter p 0.8, then grey p 0.2 as in SimCLR's distortion).
    "micle": (RandomResizedCrop((0.08, 1.0)), HorizontalFlip(0.5), Rotate(45.0),
              color_jitter(0.5, p=0.8), RandomGrayscale(0.2)),
    # BYOL (Grill et al., 2020) view 1: blur always, never solarize.
    "byol_view1": (RandomResizedCrop((0.08, 1.0)), HorizontalFlip(0.5), _BYOL_JITTER,
                   RandomGrayscale(0.2), GaussianBlur(p=1.0)),
    # BYOL view 2: blur p 0.1, solarize p 0.2 (use as config.augment.policy_view2).
    "byol_view2": (RandomResizedCrop((0.08, 1.0)), HorizontalFlip(0.5), _BYOL_JITTER,
                   RandomGrayscale(0.2), GaussianBlur(p=0.1), Solarize(0.5, p=0.2)),
}

# One instance per op with its usual parameters, for single-op ablations and previews;
# `dataclasses.replace(OPS["blur"], p=1.0)` changes a parameter.
OPS: dict[str, Op] = {
    "crop": RandomResizedCrop(),
    "flip": HorizontalFlip(),
    "vflip": VerticalFlip(),
    "rotate": Rotate(),
    "rot90": Rotate90(),
    "brightness": BrightnessContrast(brightness=0.4, contrast=0.0),
    "contrast": BrightnessContrast(brightness=0.0, contrast=0.4),
    "brightness_contrast": BrightnessContrast(),  # siaug's "brightness/contrast" as one op
    "gamma": Gamma(),
    "color_jitter": ColorJitter(),
    "grayscale": RandomGrayscale(),
    "blur": GaussianBlur(),
    "noise": GaussianNoise(),
    "sobel": Sobel(),
    "cutout": Cutout(),
    "solarize": Solarize(),
    "elastic": ElasticDeformation(),
}


def get_policy(name: str) -> tuple[Op, ...]:
  """A named policy, or OPS names joined by "+" ("crop+blur"; see policy_from_ops).

  Configs hold the policy as a string, so an op combination (augmentation studies, previews)
  needs a string form too; "+" is the only syntax.
  """
  if name in POLICIES:
    return POLICIES[name]
  op_names = name.split("+")
  if all(op in OPS for op in op_names):
    return policy_from_ops(op_names)
  raise errors.UserError(f"Unknown augmentation policy {name!r}; valid: {sorted(POLICIES)}, or op "
                         f"names joined by '+' from {sorted(OPS)}")


def policy_from_ops(names) -> tuple[Op, ...]:
  """The policy of the OPS named, geometric ops first (so they fuse), else in given order."""
  names = (names,) if isinstance(names, str) else tuple(names)
  unknown = [n for n in names if n not in OPS]
  if unknown:
    raise errors.UserError(f"Unknown augmentation op(s) {unknown}; valid: {sorted(OPS)}")
  ops = [OPS[n] for n in names]
  return (tuple(op for op in ops if isinstance(op, GeometricOp))
          + tuple(op for op in ops if not isinstance(op, GeometricOp)))


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


def augment_batch(images, rng, policy, out_size: int, keep_dtype: bool = False) -> jnp.ndarray:
  """Per-example augmentation: uint8 or float [B, H, W, C] -> float32 [B, out, out, C] in
  [0, 1], the network's input; with keep_dtype, in the input's dtype (uint8 rounded to 0-255).

  `rng` is one key, split into B per-example keys. `policy` is a tuple of ops or a name in
  POLICIES; keep `policy`, `out_size` and `keep_dtype` static under jit.
  """
  images = jnp.asarray(images)
  _check_batch(images)
  _split_policy(policy)  # validate once, outside vmap, for a clearer traceback
  keys = jax.random.split(rng, images.shape[0])
  out = jax.vmap(lambda im, k: augment_image(im, k, policy, out_size))(images, keys)
  if keep_dtype and images.dtype == jnp.uint8:
    return jnp.round(out * 255.0).astype(jnp.uint8)
  return out.astype(images.dtype) if keep_dtype else out


def preprocess_batch(images, out_size) -> jnp.ndarray:
  """Deterministic evaluation input: the same bilinear resize as training, no augmentation."""
  images = _to_float(images)
  _check_batch(images)
  identity = jnp.eye(3, dtype=jnp.float32)
  return jax.vmap(lambda im: _resample(im, identity, out_size))(images)

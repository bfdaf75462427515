"""Tests for medssl_jax.augment: each property checked against an independent numpy result."""

import colorsys
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from medssl_jax import augment

# One jitted entry point shared by all tests so each (policy, size, shape) compiles once.
# LLVM optimisation (backend level 0 here) takes most of each compile and buys nothing on
# 16 x 16 images. Results can differ from a default compile in the last bits (multiply-adds
# contracted or not); the hue test compiles with the defaults as a check on exactly that.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}
_jit_augment = jax.jit(augment.augment_batch, static_argnums=(2, 3), compiler_options=_FAST_COMPILE)
_KEY = jax.random.PRNGKey(0)


def _images(b=2, h=16, w=16, c=1, dtype=np.uint8, seed=0):
  rng = np.random.default_rng(seed)
  if dtype == np.uint8:
    return rng.integers(0, 256, size=(b, h, w, c), dtype=np.uint8)
  return rng.uniform(0.0, 1.0, size=(b, h, w, c)).astype(dtype)


def _np_resize(images, out):
  """Reference bilinear resize: pixel-centre alignment, edge clamping."""
  b, h, w, c = images.shape

  def axis_weights(n_in):
    src = np.clip((np.arange(out) + 0.5) * n_in / out - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, src - lo

  r0, r1, fr = axis_weights(h)
  c0, c1, fc = axis_weights(w)
  fr, fc = fr[None, :, None, None], fc[None, None, :, None]
  top = images[:, r0][:, :, c0] * (1 - fc) + images[:, r0][:, :, c1] * fc
  bottom = images[:, r1][:, :, c0] * (1 - fc) + images[:, r1][:, :, c1] * fc
  return top * (1 - fr) + bottom * fr


def _np_blur(image, sigma, size):
  """Reference separable Gaussian blur of [H, W, C] with reflect padding."""
  x = np.arange(size) - size // 2
  k = np.exp(-0.5 * (x / sigma) ** 2)
  k /= k.sum()
  pad = size // 2
  out = image
  for axis in (0, 1):
    widths = [(0, 0)] * 3
    widths[axis] = (pad, pad)
    padded = np.pad(out, widths, mode="reflect")
    out = np.apply_along_axis(lambda v: np.correlate(v, k, mode="valid"), axis, padded)
  return out


def test_none_policy_same_size_is_identity():
  images = _images(b=3, c=3)
  out = np.asarray(_jit_augment(images, _KEY, "none", 16))
  np.testing.assert_allclose(out, images / 255.0, atol=1e-5)


@pytest.mark.parametrize("out_size", [8, 24])
def test_none_policy_matches_numpy_bilinear_resize(out_size):
  images = _images(b=2, h=16, w=12, c=1, dtype=np.float32)
  out = np.asarray(_jit_augment(images, _KEY, "none", out_size))
  np.testing.assert_allclose(out, _np_resize(images, out_size), atol=1e-5)


def test_preprocess_is_deterministic_resize():
  images = _images(b=2, h=20, w=20, c=3)
  out = np.asarray(augment.preprocess_batch(images, 12))
  assert out.dtype == np.float32 and out.shape == (2, 12, 12, 3)
  np.testing.assert_allclose(out, _np_resize(images / 255.0, 12), atol=1e-5)


def test_whole_image_crop_and_zero_rotation_are_identity():
  images = _images(b=4, c=1, dtype=np.float32)
  policy = (augment.RandomResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0)), augment.Rotate(0.0))
  out = np.asarray(_jit_augment(images, _KEY, policy, 16))
  np.testing.assert_allclose(out, images, atol=1e-5)


def test_single_flip_mirrors_and_double_flip_is_identity():
  images = _images(b=2, c=3)
  flip = augment.HorizontalFlip(p=1.0)
  once = np.asarray(_jit_augment(images, _KEY, (flip,), 16))
  twice = np.asarray(_jit_augment(images, _KEY, (flip, flip), 16))
  np.testing.assert_allclose(once, np.flip(images, axis=2) / 255.0, atol=1e-5)
  np.testing.assert_allclose(twice, images / 255.0, atol=1e-5)


def test_flip_probability_is_per_example():
  # Asymmetric images: each output is either the image or its mirror, and both occur.
  images = np.repeat(_images(b=1, h=8, w=8, dtype=np.float32), 32, axis=0)
  out = np.asarray(_jit_augment(images, _KEY, (augment.HorizontalFlip(p=0.5),), 8))
  same = np.all(np.abs(out - images) < 1e-5, axis=(1, 2, 3))
  mirrored = np.all(np.abs(out - np.flip(images, axis=2)) < 1e-5, axis=(1, 2, 3))
  assert np.all(same | mirrored)
  assert 4 <= mirrored.sum() <= 28


@pytest.mark.parametrize("degrees,k", [(90.0, 1), (180.0, 2), (-90.0, 3)])
def test_fixed_rotation_matches_rot90(degrees, k):
  images = _images(b=2, h=16, w=16, c=1, dtype=np.float32)
  out = np.asarray(_jit_augment(images, _KEY, (augment.FixedRotate(degrees),), 16))
  expected = np.rot90(images, k=k, axes=(1, 2))
  # Interior only: cos(90 deg) is not exactly 0 in float32, edges can clamp differently.
  np.testing.assert_allclose(out[:, 1:-1, 1:-1], expected[:, 1:-1, 1:-1], atol=1e-4)


def test_random_rotation_turns_about_the_centre():
  # A radially symmetric blob is unchanged by any rotation about the image centre.
  n = 32
  yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
  blob = np.exp(-(yy**2 + xx**2) / (2 * 4.0**2)).astype(np.float32)
  images = np.repeat(blob[None, :, :, None], 4, axis=0)
  out = np.asarray(_jit_augment(images, _KEY, (augment.Rotate(180.0),), n))
  np.testing.assert_allclose(out, images, atol=0.03)
  # ...whereas an off-centre pattern moves, differently per example.
  ramp = np.repeat(np.tile(np.linspace(0, 1, n, dtype=np.float32), (n, 1))[None, :, :, None], 4, 0)
  turned = np.asarray(_jit_augment(ramp, _KEY, (augment.Rotate(180.0),), n))
  assert np.abs(turned - ramp).max() > 0.1
  assert np.abs(turned[0] - turned[1]).max() > 0.05


def test_random_resized_crop_respects_scale_and_ratio():
  # Channel 0 is a column ramp, channel 1 a row ramp: bilinear sampling of a linear
  # function is exact, so the output slopes give back each crop's width and height.
  h = w = 32
  out_size = 16
  rows, cols = np.mgrid[:h, :w].astype(np.float32)
  ramp = np.stack([cols / (w - 1), rows / (h - 1), np.zeros_like(rows)], axis=-1)
  images = np.repeat(ramp[None], 8, axis=0)
  scale, ratio = (0.2, 0.6), (1.2, 2.0)  # asymmetric: catches w/h swapped
  policy = (augment.RandomResizedCrop(scale=scale, ratio=ratio),)
  out = np.asarray(_jit_augment(images, _KEY, policy, out_size))
  dx = np.diff(out[..., 0], axis=2)
  dy = np.diff(out[..., 1], axis=1)
  assert np.allclose(dx, dx[:, :1, :1], atol=1e-4) and np.allclose(dy, dy[:, :1, :1], atol=1e-4)
  crop_w = dx[:, 0, 0] * out_size * (w - 1) / w  # fraction of the image width
  crop_h = dy[:, 0, 0] * out_size * (h - 1) / h
  area = crop_w * crop_h
  assert np.all(area >= scale[0] - 1e-3) and np.all(area <= scale[1] + 1e-3)
  assert np.all(crop_w / crop_h >= ratio[0] - 1e-3) and np.all(crop_w / crop_h <= ratio[1] + 1e-3)
  # Crops stay inside the image and differ between examples.
  assert out.min() >= 0.0 and out.max() <= 1.0
  assert len(np.unique(np.round(area, 4))) == len(area)


@pytest.mark.parametrize("op", [augment.BrightnessContrast(brightness=0.4, contrast=0.0, p=1.0),
                                augment.ColorJitter(0.4, 0.0, 0.0, 0.0, p=1.0)])
def test_brightness_scales_each_image_by_one_factor(op):
  images = _images(b=6, c=3, dtype=np.float32) * 0.4 + 0.2  # max 0.6: x1.4 cannot clip
  policy = (op,)
  out = np.asarray(_jit_augment(images, _KEY, policy, 16))
  ratio = out / images
  factor = ratio.reshape(6, -1)[:, 0]
  np.testing.assert_allclose(ratio, factor[:, None, None, None] * np.ones_like(ratio), atol=1e-5)
  assert np.all((factor >= 0.6) & (factor <= 1.4))
  assert len(np.unique(np.round(factor, 5))) == 6
  # The mean scales by the same factor.
  np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), factor * images.mean(axis=(1, 2, 3)),
                             rtol=1e-5)


def test_contrast_blends_with_the_mean():
  images = _images(b=6, c=1, dtype=np.float32) * 0.4 + 0.3  # in [0.3, 0.7]: x1.5 stays in [0, 1]
  policy = (augment.BrightnessContrast(brightness=0.0, contrast=0.5, p=1.0),)
  out = np.asarray(_jit_augment(images, _KEY, policy, 16))
  mean = images.mean(axis=(1, 2, 3), keepdims=True)
  # out - mean = c * (x - mean) with one c per image, c in [0.5, 1.5].
  centred = images - mean
  c = ((out - mean) * centred).sum(axis=(1, 2, 3)) / (centred**2).sum(axis=(1, 2, 3))
  np.testing.assert_allclose(out, mean + c[:, None, None, None] * (images - mean), atol=1e-5)
  assert np.all((c >= 0.5) & (c <= 1.5))
  np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), mean.ravel(), atol=1e-5)


def test_photometric_probability_zero_and_partial():
  images = np.repeat(_images(b=1, h=8, w=8, dtype=np.float32), 32, axis=0) * 0.5 + 0.25
  never = (augment.BrightnessContrast(0.4, 0.4, p=0.0), augment.GaussianBlur(p=0.0))
  np.testing.assert_allclose(np.asarray(_jit_augment(images, _KEY, never, 8)), images, atol=1e-5)
  half = (augment.BrightnessContrast(0.4, 0.4, p=0.5),)
  out = np.asarray(_jit_augment(images, _KEY, half, 8))
  unchanged = np.all(np.abs(out - images) < 1e-6, axis=(1, 2, 3))
  assert 4 <= unchanged.sum() <= 28


def test_gaussian_blur_matches_numpy():
  images = _images(b=2, h=20, w=20, c=3, dtype=np.float32)
  sigma = 1.3
  policy = (augment.GaussianBlur(sigma=(sigma, sigma), p=1.0, kernel_fraction=0.25),)
  out = np.asarray(_jit_augment(images, _KEY, policy, 20))
  size = augment.blur_kernel_size(20, 0.25)
  assert size == 5
  for i in range(2):
    np.testing.assert_allclose(out[i], _np_blur(images[i], sigma, size), atol=1e-5)


def test_blur_kernel_size_is_odd_and_at_least_three():
  assert augment.blur_kernel_size(28, 0.1) == 3
  assert augment.blur_kernel_size(224, 0.1) == 23
  assert augment.blur_kernel_size(96, 0.1) == 11
  assert augment.blur_kernel_size(8, 0.1) == 3


def _jit_two_inputs(rgb_uint8, grey_float, key, policy, out_size):
  """Both input kinds in one compile: uint8 RGB and float32 grey."""
  return (augment.augment_batch(rgb_uint8, key, policy, out_size),
          augment.augment_batch(grey_float, key, policy, out_size))


_jit_both = jax.jit(_jit_two_inputs, static_argnums=(3, 4), compiler_options=_FAST_COMPILE)


def _check_generic(policy, random=(True, True), all_distinct=False):
  """Range, dtype, shape; same key -> same output; other examples and keys -> other outputs.

  Every example is the same image, so differences come from the per-example keys only.
  `random`: whether the policy is random on (RGB, grey) images.
  """
  rgb = np.repeat(_images(b=1, h=16, w=16, c=3, seed=1), 8, axis=0)
  grey = np.repeat(_images(b=1, h=16, w=16, c=1, dtype=np.float32, seed=2), 8, axis=0)
  outs = [np.asarray(o) for o in _jit_both(rgb, grey, _KEY, policy, 16)]
  again = [np.asarray(o) for o in _jit_both(rgb, grey, _KEY, policy, 16)]
  other = [np.asarray(o) for o in _jit_both(rgb, grey, jax.random.PRNGKey(7), policy, 16)]
  for out, same, diff, channels, is_random in zip(outs, again, other, (3, 1), random):
    assert out.dtype == np.float32 and out.shape == (8, 16, 16, channels)
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(out, same)
    if is_random:
      flat = out.reshape(8, -1)
      dists = np.abs(flat[:, None] - flat[None]).max(axis=-1)[~np.eye(8, dtype=bool)]
      assert np.all(dists > 1e-3) if all_distinct else np.any(dists > 1e-3)
      assert np.abs(diff - out).max() > 1e-3


@pytest.mark.parametrize("name", sorted(augment.OPS))
def test_every_op_generic_properties(name):
  op = augment.OPS[name]
  # p = 0.5 (where the op has one): every op is then random, on the general branch.
  if "p" in {f.name for f in dataclasses.fields(op)}:
    op = dataclasses.replace(op, p=0.5)
  _check_generic((op,), random=(True, name != "grayscale"))  # grey images stay as they are


@pytest.mark.parametrize("name", sorted(augment.POLICIES))
def test_every_named_policy_generic_properties(name):
  # Each named policy has a continuous random draw applied to every example (crop or angle).
  _check_generic(name, random=(name != "none",) * 2, all_distinct=True)


def test_jit_matches_eager_and_accepts_typed_keys():
  # cxr (a crop + a photometric op) keeps the op-by-op eager run short.
  images = _images(b=2, h=16, w=16, c=1)
  policy = augment.get_policy("cxr")
  eager = np.asarray(augment.augment_batch(images, _KEY, policy, 12))
  jitted = np.asarray(_jit_augment(images, _KEY, policy, 12))
  np.testing.assert_allclose(jitted, eager, atol=1e-5)
  typed = _jit_augment(images, jax.random.key(0), policy, 12)
  assert typed.shape == (2, 12, 12, 1)


def test_get_policy_unknown_name_lists_valid_names():
  with pytest.raises(ValueError) as err:
    augment.get_policy("nope")
  for name in augment.POLICIES:
    assert name in str(err.value)
  assert augment.get_policy("cxr") is augment.POLICIES["cxr"]


def test_policies_are_hashable_and_validated():
  for policy in augment.POLICIES.values():
    hash(policy)
  bad_order = (augment.GaussianBlur(), augment.HorizontalFlip())
  with pytest.raises(ValueError, match="Geometric op"):
    augment.augment_batch(_images(), _KEY, bad_order, 16)
  with pytest.raises(ValueError, match="C in"):
    augment.augment_batch(np.zeros((2, 16, 16), np.uint8), _KEY, "none", 16)


def test_cxr_policy_on_real_pneumoniamnist(shared_data):
  data = np.load(shared_data / "medmnist" / "pneumoniamnist.npz")
  images = data["train_images"][:4, :, :, None]
  assert images.shape == (4, 28, 28, 1) and images.dtype == np.uint8
  out = np.asarray(_jit_augment(images, _KEY, "cxr", 28))
  assert out.shape == (4, 28, 28, 1) and out.dtype == np.float32
  assert out.min() >= 0.0 and out.max() <= 1.0
  diff = np.abs(out - images / 255.0).mean(axis=(1, 2, 3))
  assert np.all(diff > 0.01), diff


# ---- Geometric ops added with the op library: flips and quarter turns. ----


def test_vertical_flip_mirrors_and_double_flip_is_identity():
  images = _images(b=2, c=3)
  flip = augment.VerticalFlip(p=1.0)
  once = np.asarray(_jit_augment(images, _KEY, (flip,), 16))
  twice = np.asarray(_jit_augment(images, _KEY, (flip, flip), 16))
  np.testing.assert_allclose(once, np.flip(images, axis=1) / 255.0, atol=1e-5)
  np.testing.assert_allclose(twice, images / 255.0, atol=1e-5)


def test_quarter_turn_matches_rot90_and_four_are_identity():
  images = _images(b=2, h=16, w=16, c=1, dtype=np.float32)
  quarter = augment.Rotate90(turns=(1,))
  once = np.asarray(_jit_augment(images, _KEY, (quarter,), 16))
  four = np.asarray(_jit_augment(images, _KEY, (quarter,) * 4, 16))
  # Exact cos/sin: the whole image matches, edges included.
  np.testing.assert_allclose(once, np.rot90(images, k=1, axes=(1, 2)), atol=1e-5)
  np.testing.assert_allclose(four, images, atol=1e-5)


def test_random_rot90_gives_only_quarter_turns():
  images = np.repeat(_images(b=1, h=16, w=16, c=1, dtype=np.float32), 8, axis=0)
  out = np.asarray(_jit_augment(images, _KEY, (augment.Rotate90(),), 16))
  turns = []
  for example in out:
    matches = [k for k in range(4)
               if np.allclose(example, np.rot90(images[0], k=k, axes=(0, 1)), atol=1e-5)]
    assert len(matches) == 1
    turns.append(matches[0])
  assert len(set(turns)) >= 2


# ---- Photometric ops: each defining property against numpy. ----


def test_gamma_matches_power_and_gamma_one_is_identity():
  images = _images(b=6, c=1, dtype=np.float32) * 0.9 + 0.05  # away from 0 and 1: log defined
  out = np.asarray(_jit_augment(images, _KEY, (augment.Gamma((0.5, 2.0), p=1.0),), 16))
  g = np.log(out[:, 0, 0, 0]) / np.log(images[:, 0, 0, 0])
  np.testing.assert_allclose(out, images ** g[:, None, None, None], rtol=1e-4)
  assert np.all((g >= 0.5 - 1e-4) & (g <= 2.0 + 1e-4)) and len(np.unique(np.round(g, 4))) == 6
  same = np.asarray(_jit_augment(images, _KEY, (augment.Gamma((1.0, 1.0), p=1.0),), 16))
  np.testing.assert_allclose(same, images, atol=1e-6)


def _np_hsv(image):
  return np.array([[colorsys.rgb_to_hsv(*pixel) for pixel in row] for row in image])


def test_hue_jitter_turns_hue_by_one_shift_and_keeps_saturation_and_value():
  # After a rotation and with XLA's default (optimising) compile: that once broke the hue,
  # as the fused resample rounded differently in two places and `max == r` matched no channel.
  images = _images(b=4, h=16, w=16, c=3, dtype=np.float32)  # 8 x 8 did not show it
  rotate = augment.Rotate(45.0)
  hue = augment.ColorJitter(0.0, 0.0, 0.0, hue=0.2, p=1.0)

  # conftest sets optimisation level 0 for every test; this one asks for XLA's default (2).
  @functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 2})
  def rotated_and_turned(images):  # same key: the same rotation in both
    return (augment.augment_batch(images, _KEY, (rotate,), 16),
            augment.augment_batch(images, _KEY, (rotate, hue), 16))

  rotated, out = (np.asarray(x) for x in rotated_and_turned(images))
  shifts = []
  for before, after in zip(rotated, out):
    hsv_in, hsv_out = _np_hsv(before), _np_hsv(after)
    np.testing.assert_allclose(hsv_out[..., 1:], hsv_in[..., 1:], atol=1e-4)
    coloured = hsv_in[..., 1] * hsv_in[..., 2] > 0.1  # hue is ill-conditioned near grey
    turn = (hsv_out[..., 0] - hsv_in[..., 0] + 0.5) % 1.0 - 0.5
    np.testing.assert_allclose(turn[coloured], turn[coloured][0], atol=1e-4)
    shifts.append(turn[coloured][0])
  assert np.all(np.abs(shifts) <= 0.2 + 1e-4) and len(np.unique(np.round(shifts, 4))) == 4


def test_saturation_jitter_scales_colour_about_the_luma():
  images = 0.5 + 0.2 * (_images(b=6, c=3, dtype=np.float32) - 0.5)  # near grey: x1.8 cannot clip
  policy = (augment.ColorJitter(0.0, 0.0, saturation=0.8, hue=0.0, p=1.0),)
  out = np.asarray(_jit_augment(images, _KEY, policy, 16))
  luma = lambda x: (x * np.array([0.299, 0.587, 0.114], np.float32)).sum(-1, keepdims=True)
  np.testing.assert_allclose(luma(out), luma(images), atol=1e-5)
  colour_in, colour_out = images - luma(images), out - luma(out)
  s = (colour_out * colour_in).sum(axis=(1, 2, 3)) / (colour_in**2).sum(axis=(1, 2, 3))
  np.testing.assert_allclose(colour_out, s[:, None, None, None] * colour_in, atol=1e-5)
  assert np.all((s >= 0.2 - 1e-4) & (s <= 1.8 + 1e-4)) and len(np.unique(np.round(s, 4))) == 6


def test_colour_jitter_on_grey_images_is_brightness_and_contrast_only():
  images = _images(b=4, c=1, dtype=np.float32)
  full = np.asarray(_jit_augment(images, _KEY, (augment.ColorJitter(p=1.0),), 16))
  grey_only = augment.ColorJitter(0.8, 0.8, saturation=0.0, hue=0.0, p=1.0)
  np.testing.assert_array_equal(full, np.asarray(_jit_augment(images, _KEY, (grey_only,), 16)))
  assert np.abs(full - images).max() > 0.05


def test_colour_jitter_random_order_is_per_example():
  # Same key, same factors; contrast and hue do not commute, so an example matches the fixed
  # order (contrast, then hue) exactly when its random order happens to be that one.
  images = np.repeat(_images(b=1, h=8, w=8, c=3, dtype=np.float32), 8, axis=0)
  jitter = augment.ColorJitter(0.0, contrast=0.8, saturation=0.0, hue=0.2, p=1.0)
  shuffled = np.asarray(_jit_augment(images, _KEY, (jitter,), 8))
  fixed = np.asarray(_jit_augment(
      images, _KEY, (dataclasses.replace(jitter, random_order=False),), 8))
  same = np.all(np.abs(shuffled - fixed) < 1e-6, axis=(1, 2, 3))
  assert 0 < same.sum() < 8


def test_color_jitter_strength_follows_simclr():
  assert augment.color_jitter(0.5) == augment.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8)
  assert augment.color_jitter(1.0, p=1.0) == augment.ColorJitter(0.8, 0.8, 0.8, 0.2, p=1.0)


def test_grayscale_is_the_luma_in_every_channel():
  images = _images(b=2, c=3, dtype=np.float32)
  out = np.asarray(_jit_augment(images, _KEY, (augment.RandomGrayscale(p=1.0),), 16))
  luma = images @ np.array([0.299, 0.587, 0.114], np.float32)
  for channel in range(3):
    np.testing.assert_allclose(out[..., channel], luma, atol=1e-5)
  grey = augment.RandomGrayscale(p=1.0).apply(jnp.asarray(images[0, ..., :1]), _KEY)
  np.testing.assert_array_equal(np.asarray(grey), images[0, ..., :1])  # grey input: no-op


def test_gaussian_noise_has_the_requested_std():
  images = np.full((8, 16, 16, 1), 0.5, np.float32)  # 10 std from 0 and 1: no clipping
  policy = (augment.GaussianNoise(std=(0.05, 0.05), p=1.0),)
  noise = np.asarray(_jit_augment(images, _KEY, policy, 16)) - images
  assert abs(noise.std() - 0.05) < 0.005 and abs(noise.mean()) < 0.005
  assert np.abs(noise[0] - noise[1]).max() > 0.01  # independent per example


def test_sobel_matches_scipy_and_is_zero_on_a_constant_image():
  images = _images(b=4, c=3, dtype=np.float32)
  images[:2] = 0.37
  out = np.asarray(_jit_augment(images, _KEY, (augment.Sobel(p=1.0),), 16))
  assert out.shape == images.shape
  np.testing.assert_array_equal(out[:2], 0.0)
  for image, edges in zip(images[2:], out[2:]):
    for c in range(3):
      d_row = scipy.ndimage.sobel(image[..., c], axis=0, mode="nearest")
      d_col = scipy.ndimage.sobel(image[..., c], axis=1, mode="nearest")
      expected = np.clip(np.hypot(d_row, d_col) / 4.0, 0.0, 1.0)
      np.testing.assert_allclose(edges[..., c], expected, atol=1e-5)


def test_cutout_fills_exactly_the_drawn_rectangle():
  images = _images(b=8, c=3, dtype=np.float32) * 0.8 + 0.2  # no zeros of its own
  policy = (augment.Cutout(size=(0.25, 0.25), fill=0.0, p=1.0),)
  out = np.asarray(_jit_augment(images, _KEY, policy, 16))
  corners = set()
  for before, after in zip(images, out):
    filled = np.all(after == 0.0, axis=-1)
    assert filled.sum() == 16  # 4 x 4 of 16 x 16: area fraction 1/16
    rows, cols = np.nonzero(filled)
    assert rows.max() - rows.min() == 3 and cols.max() - cols.min() == 3
    np.testing.assert_array_equal(after[~filled], before[~filled])
    corners.add((rows.min(), cols.min()))
  assert len(corners) > 1


def test_solarize_matches_numpy():
  images = _images(b=2, c=3, dtype=np.float32)
  out = np.asarray(_jit_augment(images, _KEY, (augment.Solarize(0.6, p=1.0),), 16))
  np.testing.assert_allclose(out, np.where(images >= 0.6, 1.0 - images, images), atol=1e-6)


def test_elastic_zero_magnitude_is_identity():
  images = _images(b=2, c=1, dtype=np.float32)
  policy = (augment.ElasticDeformation(magnitude=0.0, p=1.0),)
  np.testing.assert_allclose(np.asarray(_jit_augment(images, _KEY, policy, 16)), images, atol=1e-6)


def test_elastic_moves_pixels_not_values():
  images = _images(b=4, c=1, dtype=np.float32)
  images[:2] = 0.3
  images[3] = images[2]
  policy = (augment.ElasticDeformation(magnitude=0.1, p=1.0),)
  out = np.asarray(_jit_augment(images, _KEY, policy, 16))
  np.testing.assert_allclose(out[:2], 0.3, atol=1e-6)  # a warp of a constant is that constant
  assert out.min() >= images.min() - 1e-6 and out.max() <= images.max() + 1e-6  # bilinear
  assert np.abs(out[2:] - images[2:]).mean() > 0.05
  assert np.abs(out[2] - out[3]).max() > 0.05  # one field per example


# ---- Named policies, the op table and policies built from op names. ----


def test_recipes_hold_their_papers_parameters():
  micle = augment.POLICIES["micle"]
  assert augment.Rotate(45.0) in micle and augment.color_jitter(0.5) in micle
  assert augment.RandomGrayscale(0.2) in micle and augment.HorizontalFlip(0.5) in micle
  assert augment.POLICIES["moco_cxr"] == augment.POLICIES["mocov2_cxr"]
  assert augment.color_jitter(1.0) in augment.POLICIES["simclr"]
  assert augment.Rotate(180.0) in augment.POLICIES["microscopy"]
  view1, view2 = augment.POLICIES["byol_view1"], augment.POLICIES["byol_view2"]
  blur_p = lambda policy: [op.p for op in policy if isinstance(op, augment.GaussianBlur)]
  assert blur_p(view1) == [1.0] and blur_p(view2) == [0.1]
  assert not any(isinstance(op, augment.Solarize) for op in view1)
  assert augment.Solarize(0.5, p=0.2) in view2


def test_policy_from_ops_puts_geometric_ops_first():
  policy = augment.policy_from_ops(["blur", "crop", "elastic", "flip"])
  assert policy == (augment.OPS["crop"], augment.OPS["flip"], augment.OPS["blur"],
                    augment.OPS["elastic"])
  assert augment.policy_from_ops("rot90") == (augment.OPS["rot90"],)
  for name, op in augment.OPS.items():
    assert augment.policy_from_ops([name]) == (op,)
    hash(op)
  with pytest.raises(ValueError) as err:
    augment.policy_from_ops(["crop", "warp"])
  assert "warp" in str(err.value) and all(name in str(err.value) for name in augment.OPS)


def test_get_policy_takes_op_names_joined_by_plus():
  assert augment.get_policy("blur+crop") == augment.policy_from_ops(["blur", "crop"])
  assert augment.get_policy("brightness") == (augment.OPS["brightness"],)
  with pytest.raises(ValueError) as err:
    augment.get_policy("crop+warp")
  assert all(name in str(err.value) for name in (*augment.OPS, *augment.POLICIES))


def test_keep_dtype_returns_the_input_dtype():
  images = _images(b=4, h=16, w=16, c=3, seed=3)
  as_float = np.asarray(augment.augment_batch(images, _KEY, "cxr", 16))
  as_uint8 = np.asarray(augment.augment_batch(images, _KEY, "cxr", 16, keep_dtype=True))
  assert as_float.dtype == np.float32 and as_uint8.dtype == np.uint8 and as_uint8.shape == as_float.shape
  np.testing.assert_array_equal(as_uint8, np.round(as_float * 255).astype(np.uint8))
  floats = (images / 255.0).astype(np.float16)
  assert augment.augment_batch(floats, _KEY, "cxr", 16, keep_dtype=True).dtype == np.float16

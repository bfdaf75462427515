"""Tests for medssl_jax.augment: each property checked against an independent numpy result."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medssl_jax import augment

# One jitted entry point shared by all tests so each (policy, size, shape) compiles once.
_jit_augment = jax.jit(augment.augment_batch, static_argnums=(2, 3))
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


def test_brightness_scales_each_image_by_one_factor():
  images = _images(b=6, c=3, dtype=np.float32) * 0.4 + 0.2  # max 0.6: x1.4 cannot clip
  policy = (augment.BrightnessContrast(brightness=0.4, contrast=0.0, p=1.0),)
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


# Every policy once, every (channels, dtype) pair at least once; each case costs a compile.
_POLICY_CASES = [("simclr", 3, np.uint8), ("microscopy", 1, np.float32), ("cxr", 1, np.uint8),
                 ("mocov2_cxr", 3, np.float32)] + [
                     ("none", c, d) for c in (1, 3) for d in (np.uint8, np.float32)]


def test_policy_cases_cover_all_policies():
  assert {name for name, _, _ in _POLICY_CASES} == set(augment.POLICIES)


@pytest.mark.parametrize("name,channels,dtype", _POLICY_CASES)
def test_named_policies_shape_dtype_range(name, channels, dtype):
  images = _images(b=4, h=24, w=24, c=channels, dtype=dtype)
  out = _jit_augment(images, _KEY, name, 16)
  assert out.dtype == jnp.float32 and out.shape == (4, 16, 16, channels)
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_same_key_same_output_and_views_differ_across_examples():
  # Same shapes as the simclr case above, so the compiled function is reused.
  images = np.repeat(_images(b=1, h=24, w=24, c=3), 4, axis=0)
  a = np.asarray(_jit_augment(images, _KEY, "simclr", 16))
  b = np.asarray(_jit_augment(images, _KEY, "simclr", 16))
  np.testing.assert_array_equal(a, b)
  flat = a.reshape(4, -1)
  dists = np.abs(flat[:, None] - flat[None]).max(axis=-1)
  assert np.all(dists[~np.eye(4, dtype=bool)] > 1e-3)
  other = np.asarray(_jit_augment(images, jax.random.PRNGKey(1), "simclr", 16))
  assert np.abs(other - a).max() > 1e-3


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

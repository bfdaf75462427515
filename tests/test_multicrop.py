"""Multi-crop on the device: 2 global and N local views of real BloodMNIST images equal to
augment.augment_batch with each view's own key, in one jitted call; DINO's named policies
and crop scales; DINO's views; and the preview grid of global and local views."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from medssl_jax import augment
from medssl_jax import errors
from medssl_jax import methods
from medssl_jax import multicrop
from medssl_jax.cli import preview
from medssl_jax.data import catalog
from medssl_jax.loop import defaults


@pytest.fixture(scope="module")
def blood_images(medmnist_dir):
  source = catalog.open_source("bloodmnist", "train", data_dir=str(medmnist_dir))
  return np.stack([source[i]["image"] for i in range(4)])


def _crop_and_flip(scale):
  return (augment.RandomResizedCrop(scale), augment.HorizontalFlip(0.5))


# Both globals share a policy here (one reference program to compile fewer); their keys differ.
POLICIES = (_crop_and_flip((0.4, 1.0)),) * 2
LOCAL = _crop_and_flip((0.05, 0.4))


def test_views_equal_augment_batch_with_their_own_keys_in_one_jitted_call(blood_images):
  crops = jax.jit(multicrop.multicrop, static_argnames=(
      "global_policies", "global_size", "local_policy", "local_size", "num_local"))
  kwargs = dict(global_policies=POLICIES, global_size=28, local_policy=LOCAL, local_size=12, num_local=3)
  key = jax.random.key(7)
  globals_, locals_ = crops(blood_images, key, **kwargs)
  crops(blood_images, jax.random.key(8), **kwargs)  # another key: the same compiled program
  assert crops._cache_size() == 1  # pylint: disable=protected-access
  assert globals_.shape == (2, 4, 28, 28, 3) and locals_.shape == (3, 4, 12, 12, 3)
  assert globals_.dtype == locals_.dtype == jnp.float32
  key_1, key_2, key_local, _ = multicrop.view_keys(key)
  reference = jax.jit(augment.augment_batch, static_argnums=(2, 3))
  np.testing.assert_allclose(globals_[0], reference(blood_images, key_1, POLICIES[0], 28), atol=1e-6)
  np.testing.assert_allclose(globals_[1], reference(blood_images, key_2, POLICIES[1], 28), atol=1e-6)
  for i, k in enumerate(jax.random.split(key_local, 3)):
    np.testing.assert_allclose(locals_[i], reference(blood_images, k, LOCAL, 12), atol=1e-6)
  assert not np.allclose(locals_[0], locals_[1])
  # Per-example keys: the same image twice in a batch gets two different crops.
  assert not np.allclose(globals_[0], globals_[1])
  same = np.stack([blood_images[0]] * 4)
  _, locals_same = crops(same, key, **kwargs)
  assert not np.allclose(locals_same[0, 0], locals_same[0, 1])


def test_no_local_views():
  images = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.uint8)
  globals_, locals_ = jax.eval_shape(lambda x: multicrop.multicrop(
      x, jax.random.key(0), global_policies=POLICIES, global_size=8, local_policy=LOCAL, local_size=4,
      num_local=0), images)
  assert globals_.shape == (2, 2, 8, 8, 1) and locals_.shape == (0, 2, 4, 4, 1)


def _horizontal_extent(policy, n=128):
  """Mean fraction of the width a crop spans, read off a horizontal ramp image."""
  ramp = np.broadcast_to(np.linspace(0, 255, 64, dtype=np.float32)[None, :, None], (n, 64, 64, 1))
  views = np.asarray(augment.augment_batch(ramp / 255.0, jax.random.key(0), policy, 16))
  return float(np.mean(views.max(axis=(1, 2, 3)) - views.min(axis=(1, 2, 3))))


def test_local_crops_are_smaller_than_global_crops():
  crop_only = lambda name: multicrop.POLICIES[name][:1]
  global_extent, local_extent = _horizontal_extent(crop_only("dino_global1")), _horizontal_extent(
      crop_only("dino_local"))
  assert 0.6 < global_extent <= 1.0 and local_extent < 0.45
  tiny = multicrop.with_crop_scale(crop_only("dino_local"), (0.01, 0.01))
  assert _horizontal_extent(tiny) < 0.15  # sqrt(0.01 x 4/3) at most, plus a pixel


def test_dino_policies_are_asymmetric_and_scales_are_set():
  ops = {name: {type(op).__name__: op for op in policy} for name, policy in multicrop.POLICIES.items()}
  assert ops["dino_global1"]["GaussianBlur"].p == 1.0 and "Solarize" not in ops["dino_global1"]
  assert ops["dino_global2"]["GaussianBlur"].p == 0.1 and ops["dino_global2"]["Solarize"].p == 0.2
  assert ops["dino_local"]["GaussianBlur"].p == 0.5
  assert ops["dino_local"]["RandomResizedCrop"].scale == multicrop.LOCAL_SCALE
  changed = multicrop.with_crop_scale(multicrop.POLICIES["dino_global1"], (0.25, 1.0))
  assert changed[0] == dataclasses.replace(multicrop.POLICIES["dino_global1"][0], scale=(0.25, 1.0))
  assert changed[1:] == multicrop.POLICIES["dino_global1"][1:]
  assert multicrop.get_policy("cxr") == augment.get_policy("cxr")
  with pytest.raises(errors.UserError, match="dino_global1"):
    multicrop.get_policy("dino_global3")


def test_dino_makes_global_and_local_views(blood_images):
  config = defaults.pretraining()
  config.method, config.augment.size = "dino", 28
  config.dino.local_crops, config.dino.local_size = 2, 12
  # Cheap policies: this checks the views' wiring (test_dino trains with DINO's own policies).
  config.dino.update(global_policy1="crop", global_policy2="crop+flip", local_policy="crop")
  method = methods.get_method("dino")
  view1, view2, key = jax.jit(lambda x, k: method.make_views({"view1": x}, k, config))(blood_images,
                                                                                       jax.random.key(0))
  assert view1.shape == (2, 4, 28, 28, 3) and view2.shape == (2, 4, 12, 12, 3)
  assert not np.allclose(view1[0], view1[1]) and key.shape == ()


def test_preview_shows_global_and_local_views(medmnist_dir, tmp_path):
  source = catalog.open_source("bloodmnist", "train", data_dir=str(medmnist_dir))
  policies = dict(global_policies=("crop", "crop+solarize"), local_policy="crop")  # cheap to compile
  grid = preview.multicrop_views(source.images[:3], **policies, local_crops=2, size=28, local_size=12, seed=0)
  assert grid.shape == (3, 5, 28, 28, 3)
  np.testing.assert_array_equal(grid[:, 0], np.asarray(augment.preprocess_batch(source.images[:3], 28)))
  np.testing.assert_array_equal(grid[:, 3:, :8], 1.0)  # local views drawn to scale, white around
  assert not np.all(grid[:, 3:, 8:20, 8:20] == 1.0)
  path = preview.write_multicrop_preview(source, tmp_path, **policies, local_crops=2, n=3, size=28,
                                         local_size=12, seed=0)
  assert path.name == "preview_multicrop.png"
  with Image.open(path) as image:
    assert image.size[0] > image.size[1] > 100

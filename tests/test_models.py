"""Backbones and heads: shapes, width multiplier, stems, dtypes."""
import jax
import jax.numpy as jnp
import pytest

from medssl_jax.models import heads
from medssl_jax.models import resnet


@pytest.mark.parametrize("name,width,expected", [("resnet18", 1 / 16, 32), ("resnet50", 1 / 16, 128),
                                                 ("resnet18", 1.0, 512), ("resnet50", 1.0, 2048)])
def test_feature_dim(name, width, expected):
  assert resnet.feature_dim(name, width) == expected


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
@pytest.mark.parametrize("small_stem,size", [(True, 28), (False, 64)])
def test_backbone_output_shape(name, small_stem, size):
  model = resnet.create_resnet(name, width=1 / 16, small_stem=small_stem)
  x = jnp.ones((2, size, size, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  out = model.apply(variables, x, train=False)
  assert out.shape == (2, resnet.feature_dim(name, 1 / 16))
  assert out.dtype == jnp.float32


def test_small_stem_keeps_resolution():
  """The small-image stem does not downsample; the ImageNet stem divides the side by 4."""
  def stem_output_side(small_stem):
    model = resnet.create_resnet("resnet18", width=1 / 16, small_stem=small_stem)
    x = jnp.ones((1, 32, 32, 1))
    _, state = model.init_with_output(jax.random.key(0), x, train=False,
                                      capture_intermediates=lambda mdl, _: mdl.name == "bn_init")
    return state["intermediates"]["bn_init"]["__call__"][0].shape[1]
  assert stem_output_side(True) == 32
  assert stem_output_side(False) == 16  # conv stride 2 (the max-pool follows the BN)


def test_bfloat16_compute_keeps_float32_params():
  model = resnet.create_resnet("resnet18", width=1 / 16, small_stem=True, dtype=jnp.bfloat16)
  x = jnp.ones((2, 28, 28, 1))
  variables = model.init(jax.random.key(0), x, train=False)
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables["params"]))
  assert model.apply(variables, x, train=False).dtype == jnp.float32


def test_unknown_backbone():
  with pytest.raises(ValueError, match="resnet18"):
    resnet.create_resnet("resnet7")


def test_projector_shape():
  head = heads.MLPHead(hidden_dim=16, output_dim=8, num_layers=3)
  x = jnp.ones((4, 32))
  variables = head.init(jax.random.key(0), x, train=False)
  assert head.apply(variables, x, train=False).shape == (4, 8)

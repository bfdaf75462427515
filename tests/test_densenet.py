"""DenseNet-121: output shapes, torchvision's parameter count, the encoder hook, bad names."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from medssl_jax.models import densenet
from medssl_jax.models import encoder

# torchvision densenet121: 7,978,856 parameters minus the 1024 x 1000 classifier (+ bias).
TORCHVISION_FEATURE_PARAMS = 7_978_856 - 1_025_000


def _param_count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _init_and_apply(model, size, channels=1):
  """Shapes of (variables, outputs); eval_shape traces without compiling DenseNet-121."""
  x = jnp.zeros((2, size, size, channels))

  def run():
    variables = model.init(jax.random.key(0), x, train=False)
    return variables, model.apply(variables, x, train=False)
  return jax.eval_shape(run)


@pytest.mark.parametrize("small_stem,size", [(True, 28), (False, 64)])
def test_output_shape_is_feature_dim(small_stem, size):
  model = densenet.create_densenet("densenet121", width=1 / 8, small_stem=small_stem)
  _, features = _init_and_apply(model, size)
  assert features.shape == (2, densenet.feature_dim("densenet121", 1 / 8))
  assert features.dtype == jnp.float32


def test_feature_dim_full_width():
  assert densenet.feature_dim("densenet121", 1.0) == 1024


def test_parameter_count_matches_torchvision():
  variables, features = _init_and_apply(densenet.create_densenet("densenet121"), 224, channels=3)
  assert features.shape == (2, 1024)
  params = jax.tree_util.tree_leaves(variables["params"])
  assert _param_count(params) == TORCHVISION_FEATURE_PARAMS
  # Every BN has a scale and a bias (parameters) and a mean and a variance (batch_stats,
  # torchvision's buffers), so the statistics count what is not a convolution kernel.
  not_conv = sum(int(np.prod(p.shape)) for p in params if p.ndim != 4)
  assert _param_count(variables["batch_stats"]) == not_conv


def test_train_mode_uses_and_updates_batch_stats():
  # A shallow DenseNet: the same layers as DenseNet-121, quick to compile on CPU.
  model = densenet.DenseNet(block_sizes=(1, 1, 1, 1), width=1 / 8, small_stem=True)

  @jax.jit
  def run(x):
    variables = model.init(jax.random.key(0), x, train=False)
    train_out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    return variables, train_out, updates, model.apply(variables, x, train=False)
  x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
  variables, train_out, updates, eval_out = run(x)
  assert train_out.shape == eval_out.shape == (4, model_dim(model))
  assert not np.allclose(train_out, eval_out)  # train mode normalises with batch statistics
  changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)),
                                   variables["batch_stats"], updates["batch_stats"])
  assert all(jax.tree_util.tree_leaves(changed))


def model_dim(model):
  growth = max(1, int(round(32 * model.width)))
  channels = 2 * growth
  for i, n in enumerate(model.block_sizes):
    channels += n * growth
    channels = channels // 2 if i < len(model.block_sizes) - 1 else channels
  return channels


def test_encoder_builds_densenet_backbone():
  config = ml_collections.ConfigDict(dict(
      name="densenet121", width=1 / 8, small_stem=True, dtype="float32",
      projector_hidden_dim=16, projector_dim=8, projector_layers=2))
  variables, (features, projection) = _init_and_apply(encoder.create_encoder(config), 28)
  assert features.shape == (2, densenet.feature_dim("densenet121", 1 / 8))
  assert projection.shape == (2, 8)
  assert set(variables["params"]) == {"backbone", "projector"}


def test_unknown_densenet():
  with pytest.raises(ValueError, match="densenet121"):
    densenet.create_densenet("densenet169")
  with pytest.raises(ValueError, match="densenet121"):
    densenet.feature_dim("densenet201", 1.0)

"""The pieces methods share (methods/common.py) against NumPy, on pytrees."""
import jax
import jax.numpy as jnp
import numpy as np

from medssl_jax.methods import common


def _trees(seed):
  rng = np.random.default_rng(seed)
  target = {"a": rng.normal(size=(3, 4)), "b": {"c": rng.normal(size=(5,))}}
  online = jax.tree_util.tree_map(lambda x: x + rng.normal(size=x.shape), target)
  return target, online


def test_ema_matches_numpy_on_a_pytree():
  target, online = _trees(0)
  for momentum in (0.9, 0.99, 0.996):
    new = common.ema(jax.tree_util.tree_map(np.float32, target),
                     jax.tree_util.tree_map(np.float32, online), jnp.float32(momentum))
    expected = jax.tree_util.tree_map(lambda t, o: momentum * t + (1 - momentum) * o, target, online)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                           new, expected)


def test_ema_passes_no_gradient():
  k, q = jnp.ones(3), jnp.full(3, 2.0)
  grads = jax.grad(lambda k, q: jnp.sum(common.ema(k, q, 0.5) ** 2), argnums=(0, 1))(k, q)
  for g in grads:
    np.testing.assert_array_equal(g, 0.0)


def test_cosine_similarity_and_l2_normalize_match_numpy():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(2, 6, 5))
  expected = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
  np.testing.assert_allclose(common.cosine_similarity(a, b), expected, rtol=1e-5)
  np.testing.assert_allclose(common.l2_normalize(a.astype(np.float32)),
                             a / np.linalg.norm(a, axis=-1, keepdims=True), rtol=1e-5)


def test_fresh_copy_shares_no_buffer():
  tree = {"w": jnp.arange(4.0)}
  copy = common.fresh_copy(tree)
  np.testing.assert_array_equal(copy["w"], tree["w"])
  assert copy["w"].unsafe_buffer_pointer() != tree["w"].unsafe_buffer_pointer()

"""A checksum of every array of the train state, saved with each checkpoint and checked after
each restore.

Orbax's array files are zstd-compressed without a checksum: a flipped byte can decode into
wrong numbers without any error, and a run would go on from garbage. The checksum is a
position-weighted sum of each array's bits (mod 2**32), computed on the devices where the
arrays live, so saving costs one small reduction and no host copy of the weights.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_GOLDEN = np.uint32(2654435761)  # Knuth's multiplicative hash: weights differ by position


def _bits(x) -> jnp.ndarray:
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  x = jnp.ravel(x)
  if x.dtype == jnp.bool_ or x.dtype.itemsize == 1:
    return x.astype(jnp.uint32)
  if x.dtype.itemsize == 2:
    return jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
  return jnp.ravel(jax.lax.bitcast_convert_type(x, jnp.uint32))


@jax.jit
def _checksums(leaves):
  def one(x):
    bits = _bits(x)
    weights = jnp.arange(bits.size, dtype=jnp.uint32) * _GOLDEN + jnp.uint32(1)
    return jnp.sum(bits * weights, dtype=jnp.uint32)
  return [one(x) for x in leaves]


def fingerprint(tree) -> dict[str, int]:
  """{path of each array leaf ("params/backbone/...", the same for a TrainState and the dict
  it restores as): its checksum}, JSON-able."""
  leaves_with_paths = [(jax.tree_util.keystr(path, simple=True, separator="/"), leaf)
                       for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
                       if hasattr(leaf, "dtype")]
  sums = jax.device_get(_checksums([leaf for _, leaf in leaves_with_paths]))
  return {name: int(value) for (name, _), value in zip(leaves_with_paths, sums)}


def mismatches(tree, expected: dict[str, int]) -> list[str]:
  """The leaves of `tree` whose checksum differs from the saved one (or that are missing)."""
  actual = fingerprint(tree)
  return sorted(name for name in set(actual) | set(expected) if actual.get(name) != expected.get(name))

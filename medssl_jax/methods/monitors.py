"""Collapse monitors shared by every method.

The per-dimension standard deviation of l2-normalised embeddings falls towards 0 when the
representation collapses to a point and sits near 1/sqrt(d) when it is spread out; the mean
cosine similarity between different images rises towards 1 on collapse.
"""
import jax
import jax.numpy as jnp


def collapse_metrics(z):
  z = jax.lax.stop_gradient(z.astype(jnp.float32))
  n, d = z.shape
  z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  cosine = z @ z.T
  off_diagonal_mean = (jnp.sum(cosine) - jnp.trace(cosine)) / (n * (n - 1))
  return {
      "embedding_std": jnp.mean(jnp.std(z, axis=0)),
      "embedding_std_healthy": jnp.asarray(1.0 / jnp.sqrt(d), jnp.float32),
      "mean_cosine_between_images": off_diagonal_mean,
  }

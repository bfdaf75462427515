"""Weighted k-nearest-neighbour probe on frozen features, blocked so memory stays flat.

Similarity is the cosine of L2-normalised features. Each of a query's k nearest training
features votes for its label with weight exp(similarity / temperature), as in Wu et al.
2018 (instance discrimination) and DINO; the votes are normalised to sum to one so the
class scores can feed AUROC as probabilities. Multi-label votes are the weighted average
of the neighbours' 0/1 labels, one probability per label. A neighbour whose label is -1
(unknown) does not vote on that label: each label averages over the neighbours that know
it, and scores 0.5 (no evidence either way) when none of the k does.

A 100k-image bank never becomes a 100k x 100k matrix: queries go in blocks, the bank goes
in blocks, and each bank block's top-k is merged into a running top-k. Every block has one
fixed shape (the last one padded, padded bank rows at similarity -inf so they are never
picked), so one compilation serves all of them. Memory beyond the inputs and the (M, K)
output is O(query_block * bank_block + query_block * k).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from medssl_jax import errors
from medssl_jax.evaluation import metrics
from medssl_jax.evaluation import probes

# probes.py's label rules and messages, so every probe accepts the same labels.
_NORM_FLOOR = 1e-12  # An all-zero feature would otherwise divide by zero.


# --------------------------------------------------------------------------
# Input checks.


def _all_finite(x: np.ndarray) -> bool:
  # By blocks of ~4M entries: np.isfinite of the whole set would be an N * D temporary.
  rows = max(1, (1 << 22) // max(1, x.shape[1]))
  return all(np.isfinite(x[s:s + rows]).all() for s in range(0, x.shape[0], rows))


def _check_features(x, name: str) -> np.ndarray:
  # float32 without a copy when it already is: a float64 copy of a large bank
  # would double the memory this module exists to keep flat.
  x = np.asarray(x, dtype=np.float32)
  if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
    raise ValueError(f"{name} must be non-empty (N, D) features, got {x.shape}")
  if not _all_finite(x):
    raise ValueError(f"{name} contains NaN or inf")
  return x


def _check_same_dim(train_x: np.ndarray, test_x: np.ndarray) -> None:
  if train_x.shape[1] != test_x.shape[1]:
    raise ValueError(f"train_x has {train_x.shape[1]} features, test_x has {test_x.shape[1]}")


def _check_block(value: int, name: str) -> int:
  if int(value) != value or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {value}")
  return int(value)


def _check_k(k: int, bank_size: int) -> int:
  if int(k) != k or k < 1:
    raise errors.UserError(f"k must be a positive integer, got {k}")
  if k > bank_size:
    raise errors.UserError(f"k={k} is larger than the training bank ({bank_size} features)")
  return int(k)


# --------------------------------------------------------------------------
# Jitted pieces; every call sees the same block shapes.


@jax.jit
def _normalize(x):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=1, keepdims=True), _NORM_FLOOR)


@functools.partial(jax.jit, static_argnames="k")
def _merge_block(top_sims, top_idx, queries, block, num_valid, offset, *, k: int):
  """Merges one bank block's top-k into the running (top_sims, top_idx) of the queries."""
  # HIGHEST: GPUs otherwise use TF32 for float32 matmuls, enough to reorder neighbours.
  sims = jnp.dot(queries, _normalize(block).T, precision=jax.lax.Precision.HIGHEST)
  valid = jnp.arange(block.shape[0]) < num_valid
  sims = jnp.where(valid[None, :], sims, -jnp.inf)  # Padded rows are never picked.
  block_sims, block_idx = jax.lax.top_k(sims, min(k, block.shape[0]))
  # Running entries first: top_k keeps the lower position among equal values, so ties
  # go to the lower bank index, as a stable argsort would.
  sims = jnp.concatenate([top_sims, block_sims], axis=1)
  idx = jnp.concatenate([top_idx, block_idx + offset], axis=1)
  top_sims, pos = jax.lax.top_k(sims, k)
  return top_sims, jnp.take_along_axis(idx, pos, axis=1)


@jax.jit
def _masked_vote(top_sims, top_idx, bank_labels, bank_known, temperature):
  """(Q, L) per-label weighted mean of the neighbours' 0/1 labels, over the neighbours
  whose label is known; 0.5 where none of them knows it."""
  known = bank_known[top_idx]  # (Q, k, L) booleans.
  sims = jnp.where(known, top_sims[:, :, None], -jnp.inf)
  # Shift by the best known neighbour per label, not the best overall: an unknown nearest
  # neighbour would otherwise let every known weight underflow at small temperatures.
  best = jnp.max(sims, axis=1, keepdims=True)
  weights = jnp.where(known, jnp.exp((sims - jnp.where(known, best, 0.0)) / temperature),
                      0.0)
  votes = jnp.sum(weights * bank_labels[top_idx], axis=1)
  mass = jnp.sum(weights, axis=1)  # >= 1 wherever a neighbour knows the label.
  return jnp.where(mass > 0, votes / jnp.maximum(mass, 1.0), 0.5)


@jax.jit
def _vote(top_sims, top_idx, bank_targets, temperature):
  """(Q, K) weighted votes: sum of exp(sim / T) per class, normalised to sum 1."""
  # Shifting by the best similarity cancels in the normalisation and keeps exp() finite
  # for small temperatures (exp(1 / 0.01) overflows float32).
  weights = jnp.exp((top_sims - top_sims[:, :1]) / temperature)
  votes = jnp.einsum("qk,qkc->qc", weights, bank_targets[top_idx],
                     precision=jax.lax.Precision.HIGHEST)
  return votes / jnp.sum(weights, axis=1, keepdims=True)


# --------------------------------------------------------------------------
# Blocked search.


def _padded(x: np.ndarray, start: int, size: int) -> np.ndarray:
  block = x[start:start + size]
  pad = size - block.shape[0]
  return np.pad(block, ((0, pad), (0, 0))) if pad else block


def _bank_blocks(bank: np.ndarray, bank_block: int) -> list[tuple[jax.Array, int, int]]:
  """(device block, number of real rows, offset) for each fixed-size bank block."""
  return [(jax.device_put(_padded(bank, start, bank_block)),
           min(bank_block, bank.shape[0] - start), start)
          for start in range(0, bank.shape[0], bank_block)]


def _blocked_top_k(bank: np.ndarray, queries: np.ndarray, k: int, query_block: int,
                   bank_block: int):
  """Yields (start, count, top_sims, top_idx) per query block; arrays are on device and
  padded to the block size (the rows past `count` are padding)."""
  # Blocks no larger than the sets themselves: small sets compute no padding.
  query_block = min(query_block, queries.shape[0])
  blocks = _bank_blocks(bank, min(bank_block, bank.shape[0]))
  for start in range(0, queries.shape[0], query_block):
    q = _normalize(jax.device_put(_padded(queries, start, query_block)))
    top_sims = jnp.full((query_block, k), -jnp.inf, dtype=jnp.float32)
    top_idx = jnp.zeros((query_block, k), dtype=jnp.int32)
    for block, num_valid, offset in blocks:
      top_sims, top_idx = _merge_block(top_sims, top_idx, q, block, num_valid, offset, k=k)
    yield start, min(query_block, queries.shape[0] - start), top_sims, top_idx


def knn_neighbors(train_x, test_x, *, k: int = 20, query_block: int = 1024,
                  bank_block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
  """Cosine similarities (M, k) and training indices (M, k) of each test feature's k
  nearest training features, most similar first."""
  train_x = _check_features(train_x, "train_x")
  test_x = _check_features(test_x, "test_x")
  _check_same_dim(train_x, test_x)
  k = _check_k(k, train_x.shape[0])
  sims = np.empty((test_x.shape[0], k), np.float32)
  idx = np.empty((test_x.shape[0], k), np.int64)
  for start, count, top_sims, top_idx in _blocked_top_k(
      train_x, test_x, k, _check_block(query_block, "query_block"),
      _check_block(bank_block, "bank_block")):
    sims[start:start + count] = np.asarray(top_sims)[:count]
    idx[start:start + count] = np.asarray(top_idx)[:count]
  return sims, idx


def _bank_targets(train_y: np.ndarray, multi_label: bool, num_classes: int | None
                  ) -> tuple[np.ndarray, np.ndarray | None, int]:
  """(N, K) float32 one-hot classes (or the 0/1 labels, -1 set to 0), the (N, L) known
  mask (multi-label only, else None) and K."""
  if multi_label:
    known = train_y >= 0
    return np.where(known, train_y, 0).astype(np.float32), known, train_y.shape[1]
  if num_classes is None:
    num_classes = int(train_y.max()) + 1
  if int(num_classes) != num_classes or num_classes <= train_y.max():
    raise ValueError(f"num_classes={num_classes} but train_y has class {train_y.max()}")
  one_hot = np.zeros((train_y.shape[0], int(num_classes)), np.float32)
  one_hot[np.arange(train_y.shape[0]), train_y] = 1.0
  return one_hot, None, int(num_classes)


def knn_scores(train_x, train_y, test_x, *, k: int = 20, temperature: float = 0.07,
               num_classes: int | None = None, multi_label: bool = False,
               query_block: int = 1024, bank_block: int = 8192) -> np.ndarray:
  """Weighted kNN class scores of each test feature against the training bank.

  Args:
    train_x: (N, D) training features (the bank).
    train_y: (N,) / (N, 1) integer classes, or (N, L) 0/1 when `multi_label`, where -1
      marks an unknown entry that does not vote.
    test_x: (M, D) query features.
    k: neighbours per query; at most N.
    temperature: weight = exp(cosine / temperature); inf gives a plain majority vote.
    num_classes: K for single-label scores (default: largest training class + 1).
    multi_label: score each label as the weighted mean of the labels of the neighbours
      that know it (0.5 when none of the k does).
    query_block: queries per block.
    bank_block: bank features per block.

  Returns:
    (M, K) float32 class probabilities summing to one, or (M, L) per-label
    probabilities when `multi_label`.

  Raises:
    ValueError: on malformed features or labels, k > N, or a non-positive temperature.
  """
  train_x = _check_features(train_x, "train_x")
  test_x = _check_features(test_x, "test_x")
  _check_same_dim(train_x, test_x)
  train_y = probes.check_labels(train_y, train_x.shape[0], multi_label, "train_y")
  k = _check_k(k, train_x.shape[0])
  if not temperature > 0:  # Also rejects NaN.
    raise errors.UserError(f"temperature must be positive, got {temperature}")
  targets, known, num_outputs = _bank_targets(train_y, multi_label, num_classes)
  targets = jax.device_put(targets)
  known = None if known is None else jax.device_put(known)
  scores = np.empty((test_x.shape[0], num_outputs), np.float32)
  for start, count, top_sims, top_idx in _blocked_top_k(
      train_x, test_x, k, _check_block(query_block, "query_block"),
      _check_block(bank_block, "bank_block")):
    if known is None:
      votes = _vote(top_sims, top_idx, targets, jnp.float32(temperature))
    else:
      votes = _masked_vote(top_sims, top_idx, targets, known, jnp.float32(temperature))
    scores[start:start + count] = np.asarray(votes)[:count]
  return scores


def evaluate_knn(train_x, train_y, test_x, test_y, *, k: int = 20,
                 temperature: float = 0.07, multi_label: bool = False,
                 n_boot: int = 1000, seed: int = 0, query_block: int = 1024,
                 bank_block: int = 8192, test_groups=None) -> dict:
  """metrics.summarize of knn_scores on (test_x, test_y), plus "k" and "temperature"
  (`test_groups`: patient ids, for CIs that resample patients)."""
  num_classes = None
  if not multi_label:
    test_y = probes.check_labels(test_y, np.shape(test_x)[0], False, "test_y")
    train_max = probes.check_labels(train_y, np.shape(train_x)[0], False, "train_y").max()
    num_classes = int(max(train_max, test_y.max())) + 1  # Test-only classes score 0.
  scores = knn_scores(train_x, train_y, test_x, k=k, temperature=temperature,
                      num_classes=num_classes, multi_label=multi_label,
                      query_block=query_block, bank_block=bank_block)
  result = metrics.summarize(test_y, scores, multi_label=multi_label, n_boot=n_boot,
                             seed=seed, groups=test_groups)
  result.update(k=int(k), temperature=float(temperature))
  return result

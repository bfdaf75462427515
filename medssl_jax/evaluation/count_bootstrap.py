"""Bootstrap intervals of accuracy and AUROC computed from resample counts, not copies.

metrics.bootstrap_ci copies and re-ranks every resample: a sort of N scores per class per
resample, about a minute for 1000 resamples of an 18k-image, 11-class test set on 2 cores.
A resample is fully described by how often it draws each example, m (N,). With each score
column sorted once, AUROC on the resample is a weighted Mann-Whitney U,

    U = sum over positives i of m_i * (negative weight below s_i + half that tied with s_i),
    AUROC = U / (positive weight * negative weight),

which is what ranking the resample with its copies gives (a positive and a negative are
never the same example, so only ties between different examples count, at half). The
resamples are the ones metrics.bootstrap_ci draws (the same generator calls, the same rule
that a resample must keep every class of the full set), so the intervals agree with it up to
floating-point rounding; tests/test_count_bootstrap.py checks that.
"""
from __future__ import annotations

import numpy as np

_BATCH_ENTRIES = 1 << 22  # resamples scored together: (batch, N) float64 arrays of ~32 MB


class _SortedColumn:
  """One score column sorted once: the permutation, and where each run of equal scores starts.

  Counts, their running sums and the products below are integers or halves, exact in float32
  while N times the largest draw count stays under 2^23 (test sets up to about half a million
  images) and off by under 1e-7 relative beyond; float32 halves the memory traffic. Without
  tied scores each example is its own run, and the per-run sums are skipped.
  """

  def __init__(self, scores: np.ndarray, positive: np.ndarray, known: np.ndarray):
    self.order = np.argsort(scores, kind="stable")
    ordered = scores[self.order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    self.starts = None if starts.size == scores.size else starts  # None: no ties
    self.positive = (positive & known)[self.order].astype(np.float32)
    self.negative = (~positive & known)[self.order].astype(np.float32)

  def auroc(self, counts: np.ndarray) -> np.ndarray:
    """(B,) AUROCs of B resamples given as (B, N) float32 draw counts."""
    weights = counts[:, self.order]
    pos, neg = weights * self.positive, weights * self.negative
    if self.starts is not None:  # tied scores: one entry per run of equal scores
      pos = np.add.reduceat(pos, self.starts, axis=1)
      neg = np.add.reduceat(neg, self.starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    u = np.sum(pos * (below + 0.5 * neg), axis=1, dtype=np.float64)
    return u / (pos.sum(axis=1, dtype=np.float64) * neg.sum(axis=1, dtype=np.float64))


class _Scorer:
  """Accuracy and AUROC of (B, N) resample counts, and the classes each resample holds."""

  def __init__(self, labels: np.ndarray, scores: np.ndarray, multi_label: bool):
    if multi_label:
      known = labels >= 0
      self.correct = ((scores >= 0.5) == (labels == 1)) & known  # (N, L)
      self.correct, self.known = self.correct.sum(axis=1), known.sum(axis=1)
      # Per column, indicators of each class among the known rows: (N, 2L).
      self.class_members = np.concatenate([labels == 0, labels == 1], axis=1).astype(np.float64)
      scored = [j for j in range(labels.shape[1])
                if (labels[:, j] == 0).any() and (labels[:, j] == 1).any()]
      self.columns = [_SortedColumn(scores[:, j], labels[:, j] == 1, known[:, j]) for j in scored]
      return
    self.correct = (np.argmax(scores, axis=1) == labels)
    self.known = np.ones(labels.shape[0])
    self.class_members = np.eye(max(scores.shape[1], labels.max() + 1))[labels]
    everyone = np.ones(labels.shape[0], bool)
    if scores.shape[1] == 2:
      self.columns = [_SortedColumn(scores[:, 1], labels == 1, everyone)]
    else:
      self.columns = [_SortedColumn(scores[:, k], labels == k, everyone) for k in np.unique(labels)]

  def classes_present(self, counts: np.ndarray) -> np.ndarray:
    return counts @ self.class_members > 0

  def score(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    accuracy = (counts @ self.correct) / (counts @ self.known)
    auroc = np.mean([column.auroc(counts) for column in self.columns], axis=0)
    return accuracy, auroc


def resample_scores(labels: np.ndarray, scores: np.ndarray, multi_label: bool, n_boot: int,
                    seed: int, max_draws: int) -> tuple[np.ndarray, np.ndarray]:
  """(accuracy, AUROC) on up to n_boot resamples that keep every class of the full set,
  drawn as metrics.bootstrap_ci draws them (at most max_draws draws in all).

  Args:
    labels: validated (N,) int classes, or (N, L) in {-1, 0, 1} when multi_label.
    scores: validated (N, K) class scores, or (N, L) per-label probabilities.
  """
  n = labels.shape[0]
  scorer = _Scorer(labels, scores, multi_label)
  full = scorer.classes_present(np.ones((1, n)))[0]
  rng = np.random.default_rng(seed)
  batch = max(1, _BATCH_ENTRIES // max(n, 1))
  kept, accuracies, aurocs = [], [], []

  def flush():
    if kept:
      accuracy, auroc = scorer.score(np.stack(kept))
      accuracies.append(accuracy)
      aurocs.append(auroc)
      kept.clear()

  total = 0
  for _ in range(max_draws):
    counts = np.bincount(rng.integers(0, n, size=n), minlength=n).astype(np.float64)
    if not np.array_equal(scorer.classes_present(counts[None])[0], full):
      continue  # A missing class would make AUROC undefined or change its meaning.
    kept.append(counts.astype(np.float32))
    total += 1
    if len(kept) == batch:
      flush()
    if total == n_boot:
      break
  flush()
  if not accuracies:
    return np.zeros(0), np.zeros(0)
  return np.concatenate(accuracies), np.concatenate(aurocs)

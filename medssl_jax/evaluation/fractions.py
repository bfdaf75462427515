"""Label-fraction evaluations: train on 1%, 10%, 100% of the labels, repeated over seeds.

A draw keeps about `fraction` of each class of the training split (stratified), and
when images carry group ids (patients) it keeps or drops whole groups, so a patient's
images are never divided between the drawn and the left-out examples. Groups that also
appear in the validation or test split can be excluded, so no patient ends up on both
sides of the train/test boundary. Results over seeds are summarised by their mean and
a Student's t interval.

Rounding: in each stratum (class) the target is round(fraction * count) images (Python's
round: exact halves go to the even number), and at least 1 for every class present, so
rare classes are never dropped at 1% (which makes small draws slightly larger than
fraction * N). With groups, whole groups are taken in a seeded random order and the
prefix whose image count is closest to the target is kept (at least one group), so large
patients make group draws coarser than image draws. For one seed the random order does
not depend on the fraction, so draws are nested: the 1% draw is a subset of the 10% draw.
"""
from __future__ import annotations

import math
import textwrap
from typing import Any, Callable, Mapping, Sequence

import matplotlib  # pylint: disable=g-bad-import-order
import numpy as np
from absl import logging
from scipy import stats

from medssl_jax import errors
from medssl_jax.evaluation import plots

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

_NO_POSITIVE = -1  # The stratum of a multi-label example with no positive label.


# --------------------------------------------------------------------------
# Drawing a fraction.


def _strata(labels: np.ndarray) -> np.ndarray:
  """(N,) int stratum of each example.

  Single-label: the class. Multi-label (N, L): the example's rarest positive label (by
  count in `labels`), or -1 for no positive; the rarest one keeps rare findings in small
  draws, where stratifying by every label pattern would give each pattern its own minimum
  of one and overshoot the fraction.
  """
  if labels.ndim == 2 and labels.shape[1] == 1:
    labels = labels[:, 0]  # MedMNIST-style (N, 1) single labels.
  if labels.ndim == 1:
    return labels.astype(np.int64)
  positives = labels.astype(bool)
  counts = positives.sum(axis=0)
  # Absent labels sort last; among present ones the rarest wins (ties: lowest index).
  rarity = np.where(positives, counts[None, :], np.iinfo(np.int64).max)
  rarest = np.argmin(rarity, axis=1)
  return np.where(positives.any(axis=1), rarest, _NO_POSITIVE).astype(np.int64)


def _group_members(group_index: np.ndarray, num_groups: int) -> list[np.ndarray]:
  """Indices of each group's images (sorting once: a loop over groups would be O(N^2))."""
  order = np.argsort(group_index, kind="stable")
  return np.split(order, np.cumsum(np.bincount(group_index, minlength=num_groups))[:-1])


def _majority_stratum(group_index: np.ndarray, strata: np.ndarray, num_groups: int) -> np.ndarray:
  """(G,) the most common stratum of each group's images; ties go to the smallest."""
  pairs, counts = np.unique(np.stack([group_index, strata], axis=1), axis=0, return_counts=True)
  # Sort by group, then most frequent first, then smallest stratum: the first row of each
  # group is its majority.
  order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))
  pairs = pairs[order]
  first = np.ones(len(pairs), bool)
  first[1:] = pairs[1:, 0] != pairs[:-1, 0]
  majority = np.empty(num_groups, np.int64)
  majority[pairs[first, 0]] = pairs[first, 1]
  return majority


def _closest_prefix(sizes: np.ndarray, target: int) -> int:
  """How many leading groups (at least 1) have an image count closest to `target`.

  Ties go to the larger prefix, so a group is never dropped for being a near tie.
  """
  totals = np.cumsum(sizes)
  m = min(int(np.searchsorted(totals, target)) + 1, len(sizes))  # first prefix >= target
  if m > 1 and target - totals[m - 2] < totals[m - 1] - target:
    m -= 1
  return m


def _is_text(array: np.ndarray) -> bool:
  return array.dtype.kind in "USO"


def _check_inputs(labels, fraction, groups, exclude_groups, candidates):
  labels = np.asarray(labels)
  if labels.ndim not in (1, 2) or labels.shape[0] == 0:
    raise ValueError(f"labels must be a non-empty (N,), (N, 1) or (N, L) array, got {labels.shape}")
  n = labels.shape[0]
  if not 0.0 < float(fraction) <= 1.0:
    raise errors.UserError(f"fraction must be in (0, 1], got {fraction}")
  if groups is not None:
    groups = np.asarray(groups)
    if groups.shape != (n,):
      raise ValueError(f"groups must be (N,) = ({n},) like labels, got {groups.shape}")
  if exclude_groups is not None and groups is None:
    raise ValueError("exclude_groups needs the training images' groups; pass groups=")
  if candidates is None:
    candidates = np.arange(n)
  else:
    candidates = np.unique(np.asarray(candidates, dtype=np.int64))
    if candidates.size and (candidates[0] < 0 or candidates[-1] >= n):
      raise ValueError(f"candidates must be indices in [0, {n}), got "
                       f"[{candidates[0]}, {candidates[-1]}]")
  return labels, groups, candidates


def draw_fraction(labels, fraction: float, seed: int, groups=None, exclude_groups=None,
                  candidates=None) -> np.ndarray:
  """Indices of a stratified (and group-level) draw of `fraction` of the training labels.

  Args:
    labels: (N,) or (N, 1) int classes, or (N, L) 0/1 multi-label targets (stratified
      by each example's rarest positive label, see `_strata`).
    fraction: in (0, 1]; 1.0 returns every eligible index.
    seed: the draw is a pure function of the inputs and the seed.
    groups: optional (N,) group ids (patients; ints or strings). Whole groups are drawn,
      each stratified by the majority stratum of its images.
    exclude_groups: optional group ids present in the validation or test split; their
      training images are skipped (logged) so no patient spans train and test.
    candidates: optional indices into `labels` that may be drawn (the training part of a
      pooled index set); the rest (validation, test) are never returned. A group is
      eligible only if all its images are candidates.

  Returns:
    Sorted int64 indices into `labels`.

  Raises:
    ValueError: on a bad fraction, mismatched shapes, or when nothing is eligible.
  """
  labels, groups, candidates = _check_inputs(labels, fraction, groups, exclude_groups, candidates)
  n = labels.shape[0]
  strata = _strata(labels)
  # Every image is its own group when none are given.
  group_of = np.arange(n) if groups is None else groups
  group_ids, group_index = np.unique(group_of, return_inverse=True)
  eligible = np.zeros(len(group_ids), bool)
  eligible[np.unique(group_index[candidates])] = True
  outside = np.setdiff1d(np.arange(n), candidates)
  eligible[np.unique(group_index[outside])] = False  # a group half in val/test is not training data
  if exclude_groups is not None:
    exclude_groups = np.asarray(exclude_groups)
    if exclude_groups.size and _is_text(exclude_groups) != _is_text(group_ids):
      raise ValueError(f"exclude_groups ({exclude_groups.dtype}) and groups ({group_ids.dtype}) must "
                       "both be names or both be numbers, or nothing would ever match")
    excluded = np.isin(group_ids, exclude_groups) & eligible
    if excluded.any():
      logging.info("label fractions: skipping %d training groups (%d images) that also appear "
                   "in the held-out splits", excluded.sum(),
                   np.isin(group_index, np.flatnonzero(excluded)).sum())
    eligible &= ~excluded
  if not eligible.any():
    raise errors.UserError(
        "no training examples are eligible for a draw (all excluded or outside candidates)")

  members = _group_members(group_index, len(group_ids))
  group_stratum = _majority_stratum(group_index, strata, len(group_ids))
  rng = np.random.default_rng(seed)
  chosen = []
  for stratum in np.unique(group_stratum[eligible]):
    in_stratum = np.flatnonzero(eligible & (group_stratum == stratum))
    order = rng.permutation(in_stratum)  # independent of `fraction`: nested draws
    sizes = np.array([len(members[g]) for g in order])
    target = max(1, round(float(fraction) * sizes.sum()))
    chosen.extend(order[:_closest_prefix(sizes, target)])
  return np.sort(np.concatenate([members[g] for g in chosen])).astype(np.int64)


# --------------------------------------------------------------------------
# Repeated draws and their summary.


def mean_and_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
  """(mean, lo, hi): Student's t interval of the mean over seeds.

  With one value there is no spread to estimate: lo = hi = mean (a point, not a claim of
  certainty).
  """
  values = np.asarray(values, dtype=np.float64).ravel()
  if values.size == 0:
    raise ValueError("mean_and_interval needs at least one value")
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  mean = float(values.mean())
  if values.size == 1:
    return mean, mean, mean
  half = stats.t.ppf((1.0 + confidence) / 2.0, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)
  return mean, float(mean - half), float(mean + half)


def run_fractions(fit_and_score: Callable[[np.ndarray, int], Mapping[str, Any]], labels,
                  fractions: Sequence[float], seeds: Sequence[int], groups=None,
                  exclude_groups=None) -> list[dict]:
  """Calls fit_and_score(train_indices, seed) for every fraction and seed.

  fit_and_score returns a mapping of metric name to value (e.g. a metrics.summarize dict);
  each row is {"fraction", "seed", "n_train", **that mapping}.
  """
  rows = []
  for fraction in fractions:
    for seed in seeds:
      indices = draw_fraction(labels, fraction, seed, groups=groups, exclude_groups=exclude_groups)
      scores = fit_and_score(indices, seed)
      if not isinstance(scores, Mapping):
        raise TypeError(f"fit_and_score must return a mapping of metric -> value, got {type(scores)}")
      rows.append({"fraction": fraction, "seed": seed, "n_train": int(len(indices)), **scores})
  return rows


def summarise(rows: Sequence[Mapping[str, Any]], metric: str, confidence: float = 0.95) -> dict:
  """Per fraction, in increasing order, keyed by str(fraction) (JSON keys):
  {"fraction", "mean", "ci": [lo, hi], "values", "seeds", "n_train"}."""
  by_fraction: dict[Any, list] = {}
  for row in rows:
    if metric not in row:
      raise KeyError(f"row {dict(row)} has no metric {metric!r}")
    by_fraction.setdefault(row["fraction"], []).append(row)
  summary = {}
  for fraction in sorted(by_fraction, key=float):
    group = by_fraction[fraction]
    values = [float(r[metric]) for r in group]
    mean, lo, hi = mean_and_interval(values, confidence)
    summary[str(fraction)] = {"fraction": float(fraction), "mean": mean, "ci": [lo, hi],
                              "values": values, "seeds": [r.get("seed") for r in group],
                              "n_train": [r.get("n_train") for r in group]}
  return summary


# --------------------------------------------------------------------------
# Plot.


def _percent(fraction: float) -> str:
  return f"{100 * fraction:g}%"


def plot_fractions(summaries: Mapping[str, Mapping[str, dict]], path, metric_name: str,
                   title: str = ""):
  """Metric against label fraction (log x axis): one line per representation, the mean
  over seeds with its interval as a band. `summaries` maps representation -> summarise()."""
  if not summaries:
    raise ValueError("plot_fractions needs at least one representation's summary")
  for name, summary in summaries.items():
    if not isinstance(summary, Mapping) or "mean" in summary or not all(
        isinstance(v, Mapping) and "mean" in v for v in summary.values()):
      raise ValueError(f"summaries[{name!r}] is not a summarise() result; pass "
                       "{representation: summarise(rows, metric)}")
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
  ticks = set()
  for name, summary in summaries.items():
    points = sorted(summary.values(), key=lambda s: s["fraction"])
    x = np.array([p["fraction"] for p in points])
    mean = np.array([p["mean"] for p in points])
    lo = np.array([p["ci"][0] for p in points])
    hi = np.array([p["ci"][1] for p in points])
    line, = ax.plot(x, mean, marker="o", label=name)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ticks.update(x.tolist())
  ax.set_xscale("log")
  ax.set_xticks(sorted(ticks), [_percent(t) for t in sorted(ticks)])
  ax.minorticks_off()  # the log axis' minor ticks would crowd the few fractions
  ax.set_xlabel("fraction of training labels")
  ax.set_ylabel(metric_name)
  ax.grid(True, alpha=0.3)
  ax.legend(frameon=False)
  ax.set_title(textwrap.fill(title, 80), fontsize=10)
  fig.tight_layout()
  return plots.save_figure(fig, path)

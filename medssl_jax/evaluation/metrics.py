"""Classification metrics for probe evaluation: accuracy, AUROC and bootstrap CIs.

Numpy and scikit-learn/scipy only (no jax), so evaluation runs anywhere.

Conventions:
  * single-label: `labels` (N,) or (N,1) integer classes, `scores` (N,K) with
    K >= 2 columns (probabilities or logits; only their order matters for AUROC).
  * multi-label: `labels` (N,L) of 0/1, or -1 where the label is unknown (blank,
    or uncertain under U-Ignore), `scores` (N,L) per-label probabilities. Unknown
    entries are left out: each label is scored on its known rows only.

AUROC is computed directly from the Mann-Whitney U statistic (with average
ranks for ties) rather than through sklearn, so the tests can check it against
`sklearn.metrics.roc_auc_score` as an independent implementation.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
from scipy import stats

from medssl_jax import errors
from medssl_jax.evaluation import count_bootstrap

# Give up redrawing bootstrap resamples after this many draws per requested one.
_MAX_DRAWS_PER_BOOT = 20


# --------------------------------------------------------------------------
# Input checks.


def _single_label_inputs(labels, scores) -> tuple[np.ndarray, np.ndarray]:
  """Returns (labels (N,) int64, scores (N,K) float64) or raises ValueError."""
  labels = np.asarray(labels)
  scores = np.asarray(scores, dtype=np.float64)
  if labels.ndim == 2 and labels.shape[1] == 1:
    labels = labels[:, 0]  # MedMNIST stores single labels as (N, 1).
  if labels.ndim != 1:
    raise ValueError(
        f"single-label labels must be (N,) or (N,1), got {labels.shape}; "
        "pass multi_label=True for (N,L) 0/1 labels")
  if scores.ndim != 2 or scores.shape[1] < 2:
    raise ValueError(f"scores must be (N,K) with K>=2 columns, got {scores.shape}")
  if labels.shape[0] != scores.shape[0]:
    raise ValueError(
        f"labels and scores disagree on N: {labels.shape[0]} vs {scores.shape[0]}")
  if not np.all(labels == np.round(labels)):
    raise ValueError("single-label labels must be integers")
  labels = labels.astype(np.int64)
  num_classes = scores.shape[1]
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise errors.UserError(f"labels must lie in [0, {num_classes}), "
                           f"got [{labels.min()}, {labels.max()}]")
  return labels, scores


def _multi_label_inputs(labels, scores) -> tuple[np.ndarray, np.ndarray]:
  """Returns (labels (N,L) int64 in {-1, 0, 1}, scores (N,L) float64) or raises."""
  labels = np.asarray(labels)
  scores = np.asarray(scores, dtype=np.float64)
  if labels.ndim != 2 or labels.shape != scores.shape:
    raise ValueError("multi-label labels and scores must both be (N,L), got "
                     f"{labels.shape} and {scores.shape}")
  if not np.all((labels == 0) | (labels == 1) | (labels == -1)):
    raise errors.UserError("multi-label labels must be 0/1, or -1 for unknown")
  return labels.astype(np.int64), scores


def _is_multi_label(labels, scores) -> bool:
  """Infers the task type: (N,L) labels shaped like the scores are multi-label."""
  labels = np.asarray(labels)
  scores = np.asarray(scores)
  return labels.ndim == 2 and labels.shape == scores.shape and (
      labels.shape[1] > 1 or scores.shape[1] == 1)


# --------------------------------------------------------------------------
# Point metrics.


def accuracy(labels, scores, multi_label: bool | None = None) -> float:
  """Top-1 accuracy (single-label) or mean per-element accuracy at 0.5 (multi-label).

  Multi-label accuracy is the mean over the known (label != -1) entries only.

  Args:
    labels: (N,) / (N,1) integer classes, or (N,L) 0/1 (-1 unknown) for multi-label.
    scores: (N,K) class scores, or (N,L) per-label probabilities.
    multi_label: task type; None infers it from the shapes ((N,L) labels shaped
      like the scores with L > 1 are multi-label).

  Returns:
    The accuracy as a python float.
  """
  if multi_label is None:
    multi_label = _is_multi_label(labels, scores)
  if multi_label:
    labels, scores = _multi_label_inputs(labels, scores)
    known = labels >= 0
    if not known.any():
      raise errors.UserError("accuracy is undefined: every multi-label entry is unknown")
    return float(np.mean((scores[known] >= 0.5) == (labels[known] == 1)))
  labels, scores = _single_label_inputs(labels, scores)
  return float(np.mean(np.argmax(scores, axis=1) == labels))


def binary_auroc(is_positive, scores) -> float:
  """AUROC of 1-D `scores` for a 0/1 target, via the Mann-Whitney U statistic.

  AUROC = P(score_pos > score_neg) + 0.5 * P(score_pos == score_neg); with
  average ranks, U_pos = sum(ranks of positives) - n_pos (n_pos + 1) / 2.

  Raises:
    ValueError: if the target does not contain both classes.
  """
  is_positive = np.asarray(is_positive).astype(bool).ravel()
  scores = np.asarray(scores, dtype=np.float64).ravel()
  if is_positive.shape != scores.shape:
    raise ValueError(f"shape mismatch: {is_positive.shape} vs {scores.shape}")
  n_pos = int(is_positive.sum())
  n_neg = is_positive.size - n_pos
  if n_pos == 0 or n_neg == 0:
    raise errors.UserError("AUROC is undefined when only one class is present")
  ranks = stats.rankdata(scores)  # 'average' ties -> half credit per tied pair.
  u_pos = ranks[is_positive].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u_pos / (n_pos * n_neg))


def _single_label_auroc(labels, scores) -> float:
  """Binary AUROC on column 1 (K == 2) or one-vs-rest macro mean (K > 2)."""
  labels, scores = _single_label_inputs(labels, scores)
  if scores.shape[1] == 2:
    return binary_auroc(labels == 1, scores[:, 1])
  present = np.unique(labels)
  if present.size < 2:
    raise errors.UserError("AUROC is undefined when only one class is present")
  # Classes absent from the labels have no positives: macro over present ones.
  return float(np.mean([binary_auroc(labels == k, scores[:, k]) for k in present]))


def _multi_label_auroc(labels, scores, label_names) -> dict:
  """Per-label AUROC on each label's known rows and their mean, skipping labels
  whose known rows hold a single class."""
  labels, scores = _multi_label_inputs(labels, scores)
  names = _label_names(label_names, labels.shape[1])
  per_label, skipped = {}, []
  for j, name in enumerate(names):
    known = labels[:, j] >= 0
    column = labels[known, j]
    if column.size == 0 or column.min() == column.max():
      skipped.append(name)
      continue
    per_label[name] = binary_auroc(column, scores[known, j])
  if skipped:
    warnings.warn(
        f"AUROC skipped for labels with a single class present (among their "
        f"known rows): {skipped}",
        stacklevel=3)
  if not per_label:
    raise errors.UserError("AUROC is undefined: no label has both classes present")
  return {"auroc": float(np.mean(list(per_label.values()))),
          "per_label": per_label}


def _label_names(label_names: Sequence[str] | None, num_labels: int) -> list[str]:
  if label_names is None:
    return [str(j) for j in range(num_labels)]
  if len(label_names) != num_labels:
    raise ValueError(f"{len(label_names)} label names for {num_labels} labels")
  return [str(name) for name in label_names]


def auroc(labels, scores, multi_label: bool = False,
          label_names: Sequence[str] | None = None) -> dict:
  """Area under the ROC curve.

  Args:
    labels: (N,) / (N,1) integer classes, or (N,L) 0/1 (-1 unknown) when
      `multi_label`.
    scores: (N,K) class scores, or (N,L) per-label probabilities.
    multi_label: whether labels are (N,L) independent binary targets.
    label_names: optional names for the multi-label `per_label` keys
      (default: the column index as a string).

  Returns:
    {"auroc": float}; multi-label adds "per_label": {name: float}. Binary
    (K == 2) uses scores[:, 1]; K > 2 is the one-vs-rest macro mean over the
    classes present in `labels`; multi-label scores each label on the rows where
    it is known (not -1) and averages over the labels whose known rows hold both
    classes (skipped labels trigger a warning naming them).

  Raises:
    ValueError: on malformed inputs, or when AUROC is undefined.
  """
  if multi_label:
    return _multi_label_auroc(labels, scores, label_names)
  return {"auroc": _single_label_auroc(labels, scores)}


# --------------------------------------------------------------------------
# Bootstrap.


def _class_signature(labels: np.ndarray) -> list[tuple[int, ...]]:
  """The classes present per label column; resamples must keep all of them.

  -1 marks an unknown multi-label entry, not a class: requiring resamples to hold
  one would redraw them for no reason and bias the interval.
  """
  if labels.ndim == 1:
    labels = labels[:, None]
  labels = labels.reshape(labels.shape[0], -1)
  return [tuple(np.unique(column[column != -1]).tolist()) for column in labels.T]


def _bootstrap_stats(metric_fn, labels, scores, n_boot, rng) -> np.ndarray:
  """Metric values on `n_boot` resamples that keep every class of the full set."""
  n = labels.shape[0]
  full_signature = _class_signature(labels)
  values = []
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Skipped-label warnings repeat per draw.
    for _ in range(_MAX_DRAWS_PER_BOOT * n_boot):
      idx = rng.integers(0, n, size=n)
      if _class_signature(labels[idx]) != full_signature:
        continue  # A missing class would make AUROC undefined or change its meaning.
      values.append(metric_fn(labels[idx], scores[idx]))
      if len(values) == n_boot:
        break
  return np.asarray(values, dtype=np.float64)


def group_bootstrap_stats(metric_fns, labels, scores, groups, n_boot, rng) -> list[np.ndarray]:
  """Each metric's values on `n_boot` resamples of whole groups (patients): a resample draws
  as many groups as there are, with replacement, and takes every example of each. Images of
  one patient are not independent, so resampling them one by one gives too narrow intervals.
  With one example per group (in order) the draws are those of _bootstrap_stats."""
  groups = np.asarray(groups)
  if groups.shape[0] != labels.shape[0]:
    raise ValueError(f"groups and labels disagree on N: {groups.shape[0]} vs {labels.shape[0]}")
  _, inverse = np.unique(groups, return_inverse=True)
  order = np.argsort(inverse.reshape(-1), kind="stable")
  members = np.split(order, np.flatnonzero(np.diff(inverse.reshape(-1)[order])) + 1)
  full_signature = _class_signature(labels)
  values = [[] for _ in metric_fns]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Skipped-label warnings repeat per draw.
    for _ in range(_MAX_DRAWS_PER_BOOT * n_boot):
      idx = np.concatenate([members[g] for g in rng.integers(0, len(members), size=len(members))])
      if _class_signature(labels[idx]) != full_signature:
        continue  # as in _bootstrap_stats: every class of the full set must stay
      for fn, kept in zip(metric_fns, values):
        kept.append(fn(labels[idx], scores[idx]))
      if len(values[0]) == n_boot:
        break
  return [np.asarray(v, dtype=np.float64) for v in values]


def bootstrap_ci(metric_fn: Callable[[np.ndarray, np.ndarray], float],
                 labels, scores, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float, float]:
  """Percentile bootstrap confidence interval over examples.

  Args:
    metric_fn: (labels, scores) -> float.
    labels: (N, ...) labels; resampled along axis 0 together with `scores`.
    scores: (N, ...) scores.
    n_boot: number of resamples.
    alpha: 1 - confidence level (0.05 -> 95% interval).
    seed: seed of the resampling, so intervals are reproducible.

  Returns:
    (point estimate on the full set, low, high) as python floats. Resamples
    lacking any class present in the full set are redrawn.
  """
  labels = np.asarray(labels)
  scores = np.asarray(scores)
  if labels.shape[0] != scores.shape[0]:
    raise ValueError(
        f"labels and scores disagree on N: {labels.shape[0]} vs {scores.shape[0]}")
  _check_boot(n_boot, alpha)
  point = float(metric_fn(labels, scores))
  values = _bootstrap_stats(metric_fn, labels, scores, n_boot,
                            np.random.default_rng(seed))
  return (point,) + _interval(values, n_boot, alpha)


def _check_boot(n_boot: int, alpha: float) -> None:
  if n_boot < 1 or not 0.0 < alpha < 1.0:
    raise ValueError(f"need n_boot >= 1 and 0 < alpha < 1, got {n_boot}, {alpha}")


def _interval(values: np.ndarray, n_boot: int, alpha: float) -> tuple[float, float]:
  """The percentile interval of the kept resamples' values."""
  if values.size == 0:
    raise errors.UserError("no bootstrap resample contained every class; "
                           "the evaluation set is too small for a CI")
  if values.size < n_boot:
    warnings.warn(f"only {values.size} of {n_boot} bootstrap resamples kept "
                  "every class; the interval is less reliable", stacklevel=3)
  low, high = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
  return float(low), float(high)


# --------------------------------------------------------------------------
# Summary.


def summarize(labels, scores, multi_label: bool = False, n_boot: int = 1000,
              seed: int = 0, alpha: float = 0.05,
              label_names: Sequence[str] | None = None, groups=None) -> dict:
  """Accuracy and AUROC with bootstrap CIs, as a JSON-serialisable dict.

  `groups` (N,) (patient ids, say): the CIs resample whole groups instead of examples.

  Returns:
    {"accuracy", "accuracy_ci": [lo, hi], "auroc", "auroc_ci": [lo, hi], "n"},
    plus "per_label" AUROCs for multi-label, and "ci_groups" (how many groups the CIs
    resampled) when `groups` is given. With n_boot == 0 the CIs are None.
  """
  full = auroc(labels, scores, multi_label=multi_label, label_names=label_names)
  result = {"accuracy": accuracy(labels, scores, multi_label=multi_label), "accuracy_ci": None,
            "auroc": full["auroc"], "auroc_ci": None,
            "n": int(np.asarray(labels).shape[0])}
  if "per_label" in full:
    result["per_label"] = full["per_label"]
  if n_boot > 0 and groups is not None:
    _check_boot(n_boot, alpha)
    checked = (_multi_label_inputs if multi_label else _single_label_inputs)(labels, scores)
    metric_fns = (lambda y, p: accuracy(y, p, multi_label=multi_label),
                  lambda y, p: auroc(y, p, multi_label=multi_label)["auroc"])
    acc_values, auroc_values = group_bootstrap_stats(metric_fns, *checked, groups, n_boot,
                                                     np.random.default_rng(seed))
    result["accuracy_ci"] = list(_interval(acc_values, n_boot, alpha))
    result["auroc_ci"] = list(_interval(auroc_values, n_boot, alpha))
    result["ci_groups"] = int(np.unique(groups).size)
  elif n_boot > 0:
    # Both metrics on the same resamples (paired CIs), the ones bootstrap_ci would draw,
    # scored from draw counts: count_bootstrap.py, much faster on large test sets.
    _check_boot(n_boot, alpha)
    checked = (_multi_label_inputs if multi_label else _single_label_inputs)(labels, scores)
    acc_values, auroc_values = count_bootstrap.resample_scores(
        *checked, multi_label, n_boot, seed, _MAX_DRAWS_PER_BOOT * n_boot)
    result["accuracy_ci"] = list(_interval(acc_values, n_boot, alpha))
    result["auroc_ci"] = list(_interval(auroc_values, n_boot, alpha))
  return result

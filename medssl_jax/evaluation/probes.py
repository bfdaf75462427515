"""Linear (logistic-regression) probes on frozen features.

The probe standardises features with training-set statistics, fits one
scikit-learn LogisticRegression per regularisation strength C on the training
split, and keeps the C with the best validation AUROC. The validation split is
used for selection only, never merged into the training data, so the test
split stays untouched until `evaluate_probe`.

Multi-label labels may be -1 (unknown: blank, or uncertain under U-Ignore). Such
an entry is left out: each label's logistic regression is fitted on the rows
where that label is known, with the same C and the same standardisation (whose
statistics use every training row, since features are never missing).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import sklearn.base
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from medssl_jax import errors
from medssl_jax.evaluation import fit_progress
from medssl_jax.evaluation import metrics

DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
_STD_FLOOR = 1e-6  # Constant features would otherwise divide by zero.
_TIE_TOL = 1e-12  # Validation AUROCs closer than this count as a tie.


@dataclasses.dataclass
class LogisticProbe:
  """A fitted logistic probe.

  Attributes:
    mean: (D,) training feature mean.
    std: (D,) training feature std, floored at 1e-6.
    model: the fitted sklearn estimator (OneVsRestClassifier when multi-label;
      _KnownRowsOneVsRest when the multi-label training labels have -1 entries).
    C: the selected inverse regularisation strength.
    val_score: validation AUROC at `C`.
    multi_label: whether targets are (N,L) independent binary labels.
    num_outputs: K classes (single-label) or L labels (multi-label).
    val_curve: every (C, validation AUROC) pair tried, in increasing C.
  """
  mean: np.ndarray
  std: np.ndarray
  model: Any
  C: float
  val_score: float
  multi_label: bool
  num_outputs: int
  val_curve: list[tuple[float, float]] = dataclasses.field(default_factory=list)

  def standardize(self, features) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] != self.mean.shape[0]:
      raise ValueError(f"features must be (N, {self.mean.shape[0]}), "
                       f"got {features.shape}")
    return (features - self.mean) / self.std

  def predict_proba(self, features) -> np.ndarray:
    """(N,K) class probabilities, or (N,L) per-label probabilities."""
    return _predict_proba(self.model, self.standardize(features),
                          self.multi_label, self.num_outputs)


# --------------------------------------------------------------------------
# Input checks.


def _check_features(x, name: str) -> np.ndarray:
  x = np.asarray(x, dtype=np.float64)
  if x.ndim != 2:
    raise ValueError(f"{name} must be (N, D) features, got {x.shape}")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} contains NaN or inf")
  return x


def check_labels(y, n: int, multi_label: bool, name: str) -> np.ndarray:
  """Returns (N,) int labels, or (N,L) labels in {-1, 0, 1} when multi-label."""
  y = np.asarray(y)
  if not multi_label and y.ndim == 2 and y.shape[1] == 1:
    y = y[:, 0]  # MedMNIST stores single labels as (N, 1).
  want_ndim = 2 if multi_label else 1
  if y.ndim != want_ndim or y.shape[0] != n:
    shape = "(N, L)" if multi_label else "(N,) or (N, 1)"
    raise ValueError(f"{name} must be {shape} with N={n}, got {y.shape}")
  if multi_label and not np.all((y == 0) | (y == 1) | (y == -1)):
    raise errors.UserError(f"{name} must be 0/1, or -1 for unknown, for multi-label probes")
  if not multi_label and (not np.all(y == np.round(y)) or y.min() < 0):
    raise errors.UserError(f"{name} must be non-negative integer classes")
  return y.astype(np.int64)


def _check_has_classes(y, multi_label: bool, name: str, every_label: bool):
  """Raises ValueError when a split cannot train or score a probe."""
  if not multi_label:
    if np.unique(y).size < 2:
      raise errors.UserError(f"{name} has a single class; need at least two")
    return
  # Both classes among the known rows; -1 entries count as neither.
  varies = np.any(y == 0, axis=0) & np.any(y == 1, axis=0)
  if every_label and not varies.all():
    raise errors.UserError(f"{name} has labels with a single class: "
                           f"{np.flatnonzero(~varies).tolist()}")
  if not varies.any():
    raise errors.UserError(f"{name} has no label with both classes present")


# --------------------------------------------------------------------------
# Fitting.


class _KnownRowsOneVsRest:
  """One binary estimator per label, each fitted on the rows where its label is
  known (not -1); OneVsRestClassifier would need every entry to be 0/1.

  Attributes:
    estimators_: the fitted per-label estimators, as OneVsRestClassifier names them.
  """

  def __init__(self, estimator):
    self.estimator = estimator
    self.estimators_ = []

  def fit(self, x, y):
    self.estimators_ = []
    for j in range(y.shape[1]):
      known = y[:, j] >= 0
      model = sklearn.base.clone(self.estimator)
      self.estimators_.append(model.fit(x[known], y[known, j]))
    return self

  def predict_proba(self, x) -> np.ndarray:
    """(N, L) positive-class probabilities, as OneVsRestClassifier gives."""
    return np.stack([m.predict_proba(x)[:, 1] for m in self.estimators_], axis=1)


def _make_model(c: float, multi_label: bool, max_iter: int, seed: int,
                has_unknown: bool = False, tol: float = 1e-4):
  model = LogisticRegression(C=c, max_iter=max_iter, random_state=seed, tol=tol)
  if not multi_label:
    return model
  # Fully known labels keep sklearn's own one-vs-rest; the same fits either way.
  return _KnownRowsOneVsRest(model) if has_unknown else OneVsRestClassifier(model)


def _predict_proba(model, x, multi_label: bool, num_outputs: int) -> np.ndarray:
  proba = model.predict_proba(x)
  if multi_label:
    return proba
  # Classes missing from training get probability 0 in their column.
  full = np.zeros((x.shape[0], num_outputs), dtype=np.float64)
  full[:, model.classes_] = proba
  return full


def fit_logistic_probe(train_x, train_y, val_x, val_y, *,
                       Cs: Sequence[float] = DEFAULT_CS,
                       multi_label: bool = False, max_iter: int = 1000,
                       seed: int = 0, name: str = "logistic",
                       tol: float = 1e-4) -> LogisticProbe:
  """Fits a logistic probe, choosing C by validation AUROC.

  Args:
    train_x: (N, D) training features.
    train_y: (N,) / (N,1) integer classes, or (N, L) 0/1 when `multi_label`;
      multi-label entries may be -1 (unknown), left out of that label's fit.
    val_x: (M, D) validation features.
    val_y: validation labels, shaped like `train_y`; -1 entries are left out of
      the validation AUROC.
    Cs: inverse regularisation strengths to try.
    multi_label: fit one binary logistic regression per label.
    max_iter: lbfgs iteration limit.
    seed: random_state for sklearn.
    name: what is probed, for the progress lines of a long fit (fit_progress.py).
    tol: lbfgs stops when every gradient entry of the mean objective is below this
      (sklearn's default, 1e-4).

  Returns:
    The probe fitted on the training split with the selected C. Ties in
    validation AUROC go to the smaller (more regularised) C.

  Raises:
    ValueError: when shapes disagree or a split has a single class (for
      multi-label: a training label with a single class among its known rows,
      or no validation label with both).
  """
  train_x = _check_features(train_x, "train_x")
  val_x = _check_features(val_x, "val_x")
  if val_x.shape[1] != train_x.shape[1]:
    raise ValueError(f"train_x has {train_x.shape[1]} features, "
                     f"val_x has {val_x.shape[1]}")
  train_y = check_labels(train_y, train_x.shape[0], multi_label, "train_y")
  val_y = check_labels(val_y, val_x.shape[0], multi_label, "val_y")
  if multi_label and val_y.shape[1] != train_y.shape[1]:
    raise ValueError(f"train_y has {train_y.shape[1]} labels, "
                     f"val_y has {val_y.shape[1]}")
  _check_has_classes(train_y, multi_label, "train_y", every_label=True)
  _check_has_classes(val_y, multi_label, "val_y", every_label=False)
  if not Cs or min(Cs) <= 0:
    raise errors.UserError(f"Cs must be a non-empty list of positive values, got {Cs}")

  mean = train_x.mean(axis=0)
  std = np.maximum(train_x.std(axis=0), _STD_FLOOR)
  train_z, val_z = (train_x - mean) / std, (val_x - mean) / std
  num_outputs = (train_y.shape[1] if multi_label
                 else int(max(train_y.max(), val_y.max())) + 1)

  has_unknown = multi_label and bool(np.any(train_y < 0))
  best, curve = None, []
  progress = fit_progress.FitProgress(name, len(Cs), max_iter)
  for c in sorted(float(c) for c in Cs):
    model = _make_model(c, multi_label, max_iter, seed, has_unknown, tol)
    model = model.fit(train_z, train_y)
    val_proba = _predict_proba(model, val_z, multi_label, num_outputs)
    score = metrics.auroc(val_y, val_proba, multi_label=multi_label)["auroc"]
    curve.append((c, score))
    # Strictly better only: ascending C order makes ties keep the smaller C.
    if best is None or score > best[1] + _TIE_TOL:
      best = (c, score, model)
    progress.finished_c(c)

  # lbfgs is deterministic, so the train-only fit at the chosen C already is
  # the refit the selection calls for; no need to fit it again.
  c, score, model = best
  progress.close(c)
  return LogisticProbe(mean=mean, std=std, model=model, C=c, val_score=score,
                       multi_label=multi_label, num_outputs=num_outputs,
                       val_curve=curve)


def evaluate_probe(probe: LogisticProbe, x, y, n_boot: int = 1000,
                   seed: int = 0, groups=None) -> dict:
  """metrics.summarize of the probe's predictions on (x, y) (`groups`: patient ids, for CIs
  that resample patients)."""
  x = _check_features(x, "x")
  y = check_labels(y, x.shape[0], probe.multi_label, "y")
  return metrics.summarize(y, probe.predict_proba(x),
                           multi_label=probe.multi_label, n_boot=n_boot,
                           seed=seed, groups=groups)

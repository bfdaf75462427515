"""Logistic-regression probe in JAX, for feature sets too large for scikit-learn.

The same model and objective as probes.py's LogisticRegression, so the two agree at the
same C: features standardised with training statistics, an unpenalised intercept, and

    sklearn:  0.5 * ||W||^2 + C * sum_i loss_i
    here:     mean_i loss_i + ||W||^2 / (2 * C * N)       (the same, divided by C * N).

The loss is binary logistic for two classes (one weight vector, as sklearn fits), softmax
cross-entropy for more, and one sigmoid per label for multi-label (the sum of independent
per-label problems, i.e. sklearn's OneVsRestClassifier). A multi-label entry of -1 is
unknown and carries no loss; label l then sums its own sklearn problem over its N_l known
rows, divided by C * N_l:

    sum_l [ mean_{i known for l} loss_il + ||w_l||^2 / (2 * C * N_l) ],

whose minimiser is, label by label, probes.py's fit on that label's known rows (the
terms share no parameters, so the per-label scales do not couple them). It is minimised
full-batch with
optax.lbfgs (zoom line search), the whole loop one jitted `while_loop`, so it reaches the
same optimum rather than an Adam approximation of it. C is chosen by validation AUROC
exactly as probes.fit_logistic_probe does; probes.evaluate_probe accepts the result.

Memory: the standardised training features sit on the device once (float32, as large as
the input); every pass over them runs block by block under `lax.scan`, and the gradient
of each block is taken inside the pass (a custom VJP), so nothing else grows with N.
"""
from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from medssl_jax import errors
from medssl_jax.evaluation import fit_progress
from medssl_jax.evaluation import metrics
from medssl_jax.evaluation import probes

# probes.py's label checks: the same rules and messages for both probes.
_check_has_classes = probes._check_has_classes  # pylint: disable=protected-access

_STD_FLOOR = 1e-6  # As probes.py: constant features would otherwise divide by zero.
_TIE_TOL = 1e-12  # As probes.py: validation AUROCs closer than this count as a tie.
_HOST_ENTRIES = 1 << 22  # Host-side blocks of ~4M entries (32 MB in float64).


@dataclasses.dataclass
class JaxLogisticProbe:
  """A fitted probe with probes.LogisticProbe's interface (predict_proba, C, val_score,
  multi_label, num_outputs, val_curve), so probes.evaluate_probe works on it.

  Attributes:
    mean: (D,) training feature mean.
    std: (D,) training feature std, floored at 1e-6.
    weights: (D, P) float64 weights on standardised features; P = 1 (binary), the
      number of training classes (softmax), or L (multi-label).
    bias: (P,) intercepts.
    classes: the class ids of the P softmax columns (or the two binary classes); empty
      for multi-label.
    C: the selected inverse regularisation strength.
    val_score: validation AUROC at `C`.
    multi_label: whether targets are (N,L) independent binary labels.
    num_outputs: K classes (single-label) or L labels (multi-label).
    val_curve: every (C, validation AUROC) pair tried, in increasing C.
    num_iterations: L-BFGS iterations of the fit at `C`.
  """
  mean: np.ndarray
  std: np.ndarray
  weights: np.ndarray
  bias: np.ndarray
  classes: np.ndarray
  C: float
  val_score: float
  multi_label: bool
  num_outputs: int
  val_curve: list[tuple[float, float]] = dataclasses.field(default_factory=list)
  num_iterations: int = 0

  def standardize(self, features) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] != self.mean.shape[0]:
      raise ValueError(f"features must be (N, {self.mean.shape[0]}), got {features.shape}")
    return (features - self.mean) / self.std

  def predict_proba(self, features) -> np.ndarray:
    """(N,K) class probabilities, or (N,L) per-label probabilities."""
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[1] != self.mean.shape[0]:
      raise ValueError(f"features must be (N, {self.mean.shape[0]}), got {features.shape}")
    return np.concatenate(
        [self._proba(self.standardize(features[rows])) for rows in _row_blocks(features)] or
        [np.zeros((0, self.num_outputs))])

  def _proba(self, z: np.ndarray) -> np.ndarray:
    logits = z @ self.weights + self.bias
    if self.multi_label:
      return _sigmoid(logits)
    if self.weights.shape[1] == 1:
      positive = _sigmoid(logits[:, 0])
      proba = np.stack([1.0 - positive, positive], axis=1)
    else:
      logits = logits - logits.max(axis=1, keepdims=True)
      proba = np.exp(logits)
      proba /= proba.sum(axis=1, keepdims=True)
    # Classes missing from training get probability 0 in their column, as in probes.py.
    full = np.zeros((z.shape[0], self.num_outputs), dtype=np.float64)
    full[:, self.classes] = proba
    return full


def _sigmoid(x: np.ndarray) -> np.ndarray:
  return 0.5 * (1.0 + np.tanh(0.5 * x))  # Overflow-free for any x.


# --------------------------------------------------------------------------
# Host-side preparation, block by block so no float64 copy of the set is made.


def _row_blocks(x: np.ndarray):
  """Slices of ~4M entries: whole-set temporaries (a float64 copy, np.isfinite) would
  be as large as N * D."""
  n, rows = x.shape[0], max(1, _HOST_ENTRIES // max(1, x.shape[1]))
  return [slice(s, min(s + rows, n)) for s in range(0, n, rows)]


def _all_finite(x: np.ndarray) -> bool:
  return all(np.isfinite(x[rows]).all() for rows in _row_blocks(x))


def _check_features(x, name: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 2 or x.shape[0] == 0:
    raise ValueError(f"{name} must be non-empty (N, D) features, got {x.shape}")
  if not np.issubdtype(x.dtype, np.number) or not _all_finite(x):
    raise ValueError(f"{name} contains NaN or inf, or is not numeric")
  return x


def _mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Float64 mean and (ddof=0) std in two blocked passes, as np.mean / np.std give."""
  blocks = _row_blocks(x)
  mean = sum(x[rows].sum(axis=0, dtype=np.float64) for rows in blocks) / x.shape[0]
  var = sum(np.square(x[rows] - mean).sum(axis=0) for rows in blocks) / x.shape[0]
  return mean, np.maximum(np.sqrt(var), _STD_FLOOR)


def _device_blocks(x, targets, weights, mean, std, block: int):
  """Standardised x, targets and loss weights as (num_blocks, block, ...) arrays;
  padded rows carry weight 0, so every block has one shape and padding adds nothing."""
  n = x.shape[0]
  padded = -(-n // block) * block
  z = np.zeros((padded, x.shape[1]), np.float32)
  for rows in _row_blocks(x):
    z[rows] = (x[rows] - mean) / std

  split = lambda a: a.reshape((padded // block, block) + a.shape[1:])

  def pad(a):
    out = np.zeros((padded,) + a.shape[1:], a.dtype)
    out[:n] = a
    return split(out)

  return jax.device_put((split(z), pad(targets), pad(weights)))


# --------------------------------------------------------------------------
# The objective and its L-BFGS minimisation, all on the device.


def _losses(kind: str, logits, targets):
  """(block,) softmax losses, or (block, P) sigmoid losses, one per column."""
  if kind == "softmax":
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  # "sigmoid": one logit and 0/1 target per column; binary is the one-column case.
  return optax.sigmoid_binary_cross_entropy(logits, targets)


def _block_loss(params, z, targets, weights, kind: str):
  logits = jnp.dot(z, params["w"], precision=jax.lax.Precision.HIGHEST) + params["b"]
  return jnp.sum(weights * _losses(kind, logits, targets))


def _value_and_grad(params, data, kind: str):
  """Objective and gradient in one blocked pass; each block's gradient is summed as the
  pass goes, so no per-block activations are kept for a backward pass. The loss weights
  already hold the 1 / N_l of the means; l2 is (P,), 1 / (C * N_l) per column."""
  blocks, l2 = data

  def body(carry, block):
    value, grad = jax.value_and_grad(functools.partial(_block_loss, kind=kind))(params, *block)
    return jax.tree.map(jnp.add, carry, (value, grad)), None

  zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
  (value, grad), _ = jax.lax.scan(body, zero, blocks)
  value = value + 0.5 * jnp.sum(l2 * jnp.square(params["w"]))
  grad = {"w": grad["w"] + l2 * params["w"], "b": grad["b"]}
  return value, grad


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _objective(params, data, kind):
  return _value_and_grad(params, data, kind)[0]


def _objective_fwd(params, data, kind):
  value, grad = _value_and_grad(params, data, kind)
  return value, grad


def _objective_bwd(kind, grad, cotangent):
  del kind
  return jax.tree.map(lambda g: cotangent * g, grad), None


_objective.defvjp(_objective_fwd, _objective_bwd)


_SOLVER = optax.lbfgs()  # zoom line search; stateless, so one instance serves every fit
_CHUNK = 20  # L-BFGS iterations per jitted call: the host logs progress between calls


@functools.partial(jax.jit, static_argnames=("kind",))
def _minimize(params, state, data, tol, stop_at, *, kind: str):
  """L-BFGS from (params, state) until the gradient's max-abs entry is below tol (sklearn's
  stopping rule) or the iteration count reaches stop_at (traced, so resuming a fit chunk by
  chunk compiles once); returns (params, state, iterations, final max-abs gradient)."""
  fun = lambda p: _objective(p, data, kind)
  value_and_grad = optax.value_and_grad_from_state(fun)

  def step(carry):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = _SOLVER.update(grad, state, params, value=value, grad=grad, value_fn=fun)
    return optax.apply_updates(params, updates), state

  def grad_max(state):
    grad = optax.tree.get(state, "grad")
    return jnp.maximum(jnp.max(jnp.abs(grad["w"])), jnp.max(jnp.abs(grad["b"])))

  def keep_going(carry):
    count = optax.tree.get(carry[1], "count")
    return (count == 0) | ((count < stop_at) & (grad_max(carry[1]) >= tol))

  params, state = jax.lax.while_loop(keep_going, step, (params, state))
  return params, state, optax.tree.get(state, "count"), grad_max(state)


def _minimize_with_progress(params, data, tol: float, *, kind: str, max_iter: int, c: float,
                            progress: fit_progress.FitProgress):
  """_minimize in chunks of _CHUNK iterations, reporting progress between them."""
  state, iterations = _SOLVER.init(params), 0
  while True:
    params, state, count, grad_max = _minimize(
        params, state, data, jnp.float32(tol), jnp.int32(min(iterations + _CHUNK, max_iter)),
        kind=kind)
    iterations, grad_max = int(count), float(grad_max)
    if iterations >= max_iter or grad_max < tol:
      return params, iterations, grad_max
    progress.update(c, iterations)


# --------------------------------------------------------------------------
# Fitting with C selection.


def _task(train_y: np.ndarray, multi_label: bool):
  """(kind, (N, P) or (N,) training targets, known entries shaped like the targets,
  classes of the P columns)."""
  if multi_label:
    known = train_y >= 0  # -1 is unknown: weight 0, any valid target.
    targets = np.where(known, train_y, 0).astype(np.float32)
    return "sigmoid", targets, known, np.zeros(0, np.int64)
  classes = np.unique(train_y)
  if classes.size == 2:  # One weight vector, as sklearn fits for two classes.
    targets = (train_y == classes[1]).astype(np.float32)[:, None]
  else:
    targets = np.searchsorted(classes, train_y).astype(np.int32)
  kind = "sigmoid" if classes.size == 2 else "softmax"
  return kind, targets, np.ones(targets.shape, bool), classes


def fit_jax_probe(train_x, train_y, val_x, val_y, *,
                  Cs: Sequence[float] = probes.DEFAULT_CS, multi_label: bool = False,
                  max_iter: int = 1000, tol: float = 1e-5, block_size: int = 8192,
                  seed: int = 0, name: str = "logistic") -> JaxLogisticProbe:
  """Fits a logistic probe with L-BFGS in JAX, choosing C by validation AUROC.

  Args:
    train_x: (N, D) training features.
    train_y: (N,) / (N,1) integer classes, or (N, L) 0/1 when `multi_label`;
      multi-label entries may be -1 (unknown), left out of that label's loss.
    val_x: (M, D) validation features.
    val_y: validation labels, shaped like `train_y`; -1 entries are left out of
      the validation AUROC.
    Cs: inverse regularisation strengths to try (sklearn's C).
    multi_label: one independent sigmoid per label.
    max_iter: L-BFGS iteration limit per C.
    tol: stop when every gradient entry of the mean objective is below this (sklearn
      stops at 1e-4; float32 gradients are reliable to about 1e-6).
    block_size: training rows per block of the on-device pass.
    seed: unused: the objective is convex and the start is zero, so every fit is
      deterministic; kept so the call mirrors probes.fit_logistic_probe.
    name: what is probed, for the progress lines of a long fit (fit_progress.py).

  Returns:
    The probe fitted on the training split with the selected C. Ties in validation
    AUROC go to the smaller C.

  Raises:
    ValueError: when shapes disagree, a split has a single class, or Cs is bad.
  """
  del seed
  train_x = _check_features(train_x, "train_x")
  val_x = _check_features(val_x, "val_x")
  if val_x.shape[1] != train_x.shape[1]:
    raise ValueError(f"train_x has {train_x.shape[1]} features, val_x has {val_x.shape[1]}")
  train_y = probes.check_labels(train_y, train_x.shape[0], multi_label, "train_y")
  val_y = probes.check_labels(val_y, val_x.shape[0], multi_label, "val_y")
  if multi_label and val_y.shape[1] != train_y.shape[1]:
    raise ValueError(f"train_y has {train_y.shape[1]} labels, val_y has {val_y.shape[1]}")
  _check_has_classes(train_y, multi_label, "train_y", every_label=True)
  _check_has_classes(val_y, multi_label, "val_y", every_label=False)
  if not Cs or min(Cs) <= 0:
    raise errors.UserError(f"Cs must be a non-empty list of positive values, got {Cs}")
  if int(block_size) != block_size or block_size < 1:
    raise ValueError(f"block_size must be a positive integer, got {block_size}")

  n = train_x.shape[0]
  mean, std = _mean_std(train_x)
  kind, targets, known, classes = _task(train_y, multi_label)
  # Per column N_l: every row for single-label, the known rows of each label otherwise
  # (at least two: _check_has_classes wants both classes known).
  counts = known.sum(axis=0).astype(np.float64)
  weights = (known / counts).astype(np.float32)  # The mean over known rows, as weights.
  blocks = _device_blocks(train_x, targets, weights, mean, std, min(int(block_size), n))
  num_outputs = (train_y.shape[1] if multi_label
                 else int(max(train_y.max(), val_y.max())) + 1)
  width = targets.shape[1] if kind == "sigmoid" else classes.size
  inverse_counts = np.broadcast_to(1.0 / counts, (width,))
  params = {"w": jnp.zeros((train_x.shape[1], width), jnp.float32),
            "b": jnp.zeros((width,), jnp.float32)}

  best, curve = None, []
  progress = fit_progress.FitProgress(name, len(Cs), int(max_iter))
  for c in sorted(float(c) for c in Cs):
    # Ascending C with a warm start: each optimum is a short walk from the last one.
    data = (blocks, jnp.asarray(inverse_counts / c, jnp.float32))  # l2 = 1 / (C * N_l).
    params, iterations, grad_max = _minimize_with_progress(
        params, data, tol, kind=kind, max_iter=int(max_iter), c=c, progress=progress)
    progress.finished_c(c, iterations)
    if iterations >= max_iter:
      warnings.warn(f"L-BFGS reached max_iter={max_iter} at C={c} with gradient "
                    f"{grad_max:.2e} > tol={tol}", stacklevel=2)
    probe = JaxLogisticProbe(
        mean=mean, std=std, weights=np.asarray(params["w"], np.float64),
        bias=np.asarray(params["b"], np.float64), classes=classes, C=c, val_score=0.0,
        multi_label=multi_label, num_outputs=num_outputs, num_iterations=iterations)
    score = metrics.auroc(val_y, probe.predict_proba(val_x),
                          multi_label=multi_label)["auroc"]
    curve.append((c, score))
    # Strictly better only: ascending C order makes ties keep the smaller C.
    if best is None or score > best.val_score + _TIE_TOL:
      best = dataclasses.replace(probe, val_score=score)
  best.val_curve = curve
  progress.close(best.C)
  return best

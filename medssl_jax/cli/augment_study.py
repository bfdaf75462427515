"""The augmentation-pair study: which two augmentations together make the best representation?

  python -m medssl_jax.cli.augment_study --config=configs/simclr_pneumoniamnist.py \
      --eval_config=configs/eval/linear_probe.py --ops=crop,rotate,brightness,blur \
      --workdir=runs/study [--config.num_steps=200] [--shard=0/4]

For every ordered pair (first, second) of --ops, one pretraining run of --config (the same
fixed budget for all) with both views augmented by "first+second" (the diagonal: one op
alone), then the linear probe of --eval_config on its frozen backbone. Writes
WORKDIR/matrix.csv (rows: first op, columns: second op, values: the probe's test --metric)
and WORKDIR/matrix.png. Geometric ops are applied before photometric ones, so for such a
mixed pair the order within the pair does not change the policy: it is trained once (in the
order --ops names the two) and fills both cells.

Resumable: a cell with results is skipped, and an interrupted cell resumes from its last
checkpoint. A SIGTERM (preemption) saves the running cell's checkpoint and ends the study
with exit code 0, the cell unevaluated. Spread the cells over machines that share WORKDIR
with --shard=I/N on each; afterwards any call with --collect_only writes the matrix of every finished cell.
"""
from __future__ import annotations

import csv
import io
import json
import time

import numpy as np
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from medssl_jax import augment
from medssl_jax import errors
from medssl_jax import paths
from medssl_jax.evaluation import plots
from medssl_jax.evaluation import runner
from medssl_jax.loop import configuration
from medssl_jax.loop import pretrain
from medssl_jax.loop import writers


def cell_name(first: str, second: str) -> str:
  return first if first == second else f"{first}+{second}"


def parse_shard(shard: str) -> tuple[int, int]:
  try:
    index, count = (int(x) for x in shard.split("/"))
  except ValueError:
    index, count = -1, 0
  if not 0 <= index < count:
    raise errors.UserError(f"--shard={shard!r}: expected I/N with 0 <= I < N, e.g. 0/4")
  return index, count


def all_cells(ops) -> list[tuple[str, str]]:
  return [(first, second) for first in ops for second in ops]


def shared_cell(first: str, second: str, ops) -> tuple[str, str]:
  """The cell whose run (first, second) shares: a geometric op paired with a photometric one
  makes the same policy in either order (geometric ops run first, with the same keys), so
  only the order in which `ops` names them is trained; any other cell is its own."""
  mirror = (second, first)
  if ops.index(first) > ops.index(second) and (
      augment.get_policy(cell_name(first, second)) == augment.get_policy(cell_name(*mirror))):
    return mirror
  return first, second


def cells_to_train(ops) -> list[tuple[str, str]]:
  return [cell for cell in all_cells(ops) if shared_cell(*cell, ops) == cell]


class Preempted(Exception):
  """A SIGTERM stopped a cell's pretraining early: its last checkpoint is saved, nothing of it
  is evaluated, and rerunning the same command resumes it."""


def run_cell(config, eval_config, study_dir: paths.Path, first: str, second: str) -> dict:
  """Pretrains and probes one cell (or reads its results if it is done); returns results.
  Raises Preempted when the pretraining returned before its last step (a SIGTERM)."""
  name = cell_name(first, second)
  results_file = study_dir / name / "eval" / "results.json"
  if results_file.exists():
    return json.loads(results_file.read_text())
  config = config.copy_and_resolve_references()
  config.augment.policy, config.augment.policy_view2 = name, ""
  state = pretrain.run(config, study_dir / name)
  if int(state.step) < config.num_steps:
    raise Preempted(f"cell {name} stopped at step {int(state.step)} of {config.num_steps} (SIGTERM); "
                    "its checkpoint is saved and it is not evaluated: rerun the same command to "
                    "resume the study")
  eval_config = eval_config.copy_and_resolve_references()
  eval_config.pretrain_workdir = str(study_dir / name)
  return runner.evaluate(eval_config, study_dir / name / "eval")


def collect(study_dir: paths.Path, ops, metric: str) -> np.ndarray:
  """The matrix of finished cells (NaN where a cell has no results yet), as CSV and PNG."""
  matrix = np.full((len(ops), len(ops)), np.nan)
  for i, first in enumerate(ops):
    for j, second in enumerate(ops):
      results_file = study_dir / cell_name(*shared_cell(first, second, ops)) / "eval" / "results.json"
      if results_file.exists():
        matrix[i, j] = json.loads(results_file.read_text())["linear_probe"]["pretrained"][metric]
  table = io.StringIO()
  writer = csv.writer(table)
  writer.writerow(["first \\ second", *ops])
  for op, row in zip(ops, matrix):
    writer.writerow([op, *("" if np.isnan(v) else f"{v:.4f}" for v in row)])
  paths.write_bytes_atomic(study_dir / "matrix.csv", table.getvalue().encode())
  done = int(np.isfinite(matrix).sum())
  plots.heatmap(matrix, ops, ops, study_dir / "matrix.png", value_label=f"linear probe test {metric}",
                row_title="first augmentation", col_title="second augmentation",
                title=f"Augmentation pairs: linear probe test {metric} ({done}/{matrix.size} cells)")
  return matrix


def run_study(config, eval_config, study_dir, ops, *, shard=(0, 1), metric="auroc",
              collect_only=False) -> np.ndarray:
  study_dir = paths.path(study_dir)
  if len(set(ops)) != len(ops) or not ops:
    raise errors.UserError(f"--ops must name distinct ops, got {ops}")
  for first, second in all_cells(ops):  # every policy is checked before any work
    augment.get_policy(cell_name(first, second))
  if metric not in ("auroc", "accuracy"):
    raise errors.UserError(f"--metric must be auroc or accuracy, not {metric!r}")
  eval_config = eval_config.copy_and_resolve_references()
  eval_config.evaluations, eval_config.baselines = ("linear_probe",), ()
  study_dir.mkdir(parents=True, exist_ok=True)
  mine = cells_to_train(ops)[shard[0]::shard[1]] if not collect_only else []
  start = time.monotonic()
  for k, (first, second) in enumerate(mine):
    logging.info("cell %d/%d: %s", k + 1, len(mine), cell_name(first, second))
    result = run_cell(config, eval_config, study_dir, first, second)
    elapsed = time.monotonic() - start
    logging.info("cell %s: test %s %.4f; %d/%d cells done, ETA %s", cell_name(first, second), metric,
                 result["linear_probe"]["pretrained"][metric], k + 1, len(mine),
                 writers.format_duration(elapsed / (k + 1) * (len(mine) - k - 1)))
  return collect(study_dir, ops, metric)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  args = flags.FLAGS
  writers.quiet_library_logs()
  try:
    matrix = run_study(args.config, args.eval_config, args.workdir, args.ops, shard=parse_shard(args.shard),
                       metric=args.metric, collect_only=args.collect_only)
  except Preempted as stopped:  # exit 0, as medssl-train does on preemption
    print(f"preempted: {stopped}")
    return
  print(f"{np.isfinite(matrix).sum()}/{matrix.size} cells; matrix in {args.workdir}/matrix.csv "
        "and matrix.png")


def run():
  config_flags.DEFINE_config_file("config", None, "Pretraining config (the budget of every cell).",
                                  lock_config=True)
  config_flags.DEFINE_config_file("eval_config", "configs/eval/linear_probe.py", "Linear-probe config.",
                                  lock_config=True)
  flags.DEFINE_list("ops", None, f"Ops to pair, comma-separated; known: {sorted(augment.OPS)}")
  flags.DEFINE_string("workdir", None, "Study directory (shared by all shards).")
  flags.DEFINE_string("shard", "0/1", "I/N: run every N-th cell starting at I.")
  flags.DEFINE_string("metric", "auroc", "Probe metric in the matrix: auroc or accuracy.")
  flags.DEFINE_bool("collect_only", False, "Only write the matrix of the cells finished so far.")
  flags.mark_flags_as_required(["config", "ops", "workdir"])
  configuration.run_binary(main)


if __name__ == "__main__":
  run()

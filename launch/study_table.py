"""The table of a seed study (launch/seed_study.sh): linear-probe test accuracy and AUROC of
every run with its 95% bootstrap interval, each arm's mean over seeds with a 95% Student-t
interval, and the baselines (the same network at random init, raw pixels). The validation
AUROC (of the probe's chosen C) is the column to choose arms on; test is for reporting.

  python launch/study_table.py OUT        # OUT/NAME_sSEED/eval/results.json, OUT/baselines/
"""
from __future__ import annotations

import collections
import json
import pathlib
import re
import sys

from medssl_jax.evaluation import fractions

_RUN = re.compile(r"^(?P<arm>.+)_s(?P<seed>\d+)$")


def _cell(row: dict, metric: str) -> str:
  low, high = row[f"{metric}_ci"]
  return f"{row[metric]:.4f} ({low:.3f}-{high:.3f})"


def _interval(values) -> str:
  mean, low, high = fractions.mean_and_interval(values)
  return f"{mean:.4f} ({low:.3f}-{high:.3f})" if len(values) > 1 else f"{mean:.4f}"


def table(out: pathlib.Path) -> str:
  arms = collections.defaultdict(list)  # arm -> [(seed, row)]
  for path in sorted(out.glob("*/eval/results.json")):
    match = _RUN.match(path.parent.parent.name)
    if match:
      row = json.loads(path.read_text())["linear_probe"]["pretrained"]
      arms[match["arm"]].append((int(match["seed"]), row))
  lines = ["| arm | seed | val AUROC | test accuracy (95% CI) | test AUROC (95% CI) |",
           "|---|---|---|---|---|"]
  for arm, runs in arms.items():
    for seed, row in sorted(runs, key=lambda run: run[0]):
      lines.append(f"| {arm} | {seed} | {row['val_auroc']:.4f} | {_cell(row, 'accuracy')} | "
                   f"{_cell(row, 'auroc')} |")
  for arm, runs in arms.items():
    rows = [row for _, row in runs]
    seeds = ",".join(str(seed) for seed, _ in sorted(runs, key=lambda run: run[0]))
    means = " | ".join(_interval([r[key] for r in rows]) for key in ("val_auroc", "accuracy", "auroc"))
    lines.append(f"| **{arm}, mean of {len(rows)} (95% t-interval)** | {seeds} | {means} |")
  baselines = out / "baselines" / "results.json"
  if baselines.is_file():
    probe = json.loads(baselines.read_text())["linear_probe"]
    for name in ("random_init", "raw_pixels"):
      if name in probe:
        row = probe[name]
        lines.append(f"| {name} (baseline) | - | {row['val_auroc']:.4f} | {_cell(row, 'accuracy')} | "
                     f"{_cell(row, 'auroc')} |")
  return "\n".join(lines)


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit(__doc__)
  print(table(pathlib.Path(sys.argv[1])))

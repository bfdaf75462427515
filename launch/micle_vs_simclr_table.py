"""Table of the MICLe vs SimCLR study (launch/micle_vs_simclr.sh; issue 19, item 4).

  python launch/micle_vs_simclr_table.py OUT

Reads OUT/{micle,simclr}_sS/eval/results.json and OUT/baselines/results.json and prints a
markdown table (also written to OUT/micle_vs_simclr.md): per run the linear-probe validation
and test AUROC and the label-fraction probe test AUROC (mean over its draws), then each arm's
mean over pretraining seeds with a 95% Student-t interval, the paired difference MICLe minus
SimCLR (same seed), and the baselines. On nih_cxr1000 most test images come from 3 patients;
results.json's bootstrap intervals resample patients (since fa8e89f), and this table adds the
seed-level interval. Takes seconds; no training.
"""
from __future__ import annotations

import collections
import json
import pathlib
import re
import sys

import numpy as np

from medssl_jax.evaluation import fractions

_RUN = re.compile(r"^(?P<arm>micle|simclr)_s(?P<seed>\d+)$")


def _row(results: dict, representation: str) -> dict:
  """{"val": , "test": , fraction: mean over draws} of one representation."""
  probe = results["linear_probe"][representation]
  row = {"val": probe["val_auroc"], "test": probe["auroc"]}
  for cell in results.get("label_fractions", {}).get("linear_probe", {}).get(representation, {}).values():
    row[cell["fraction"]] = float(np.mean(cell["values"]))
  return row


def _interval(values) -> str:
  if len(values) < 2:
    return f"{values[0]:.4f} (1 seed)" if values else "-"
  mean, low, high = fractions.mean_and_interval(values)
  return f"{mean:.4f} ({low:.3f}-{high:.3f})"


def table(out: pathlib.Path) -> str:
  runs = collections.defaultdict(dict)  # arm -> seed -> row
  for path in sorted(out.glob("*/eval/results.json")):
    match = _RUN.match(path.parent.parent.name)
    if match:
      runs[match["arm"]][int(match["seed"])] = _row(json.loads(path.read_text()), "pretrained")
  fracs = sorted({k for arm in runs.values() for row in arm.values() for k in row if isinstance(k, float)})
  keys = ["val", "test"] + fracs
  head = " | ".join(f"probe on {100 * f:g}% of labels" for f in fracs)
  lines = [f"| arm | seed | val AUROC | test AUROC | {head} |", "|---|---|" + "---|" * len(keys)]
  for arm in ("micle", "simclr"):
    for seed, row in sorted(runs.get(arm, {}).items()):
      lines.append(f"| {arm} | {seed} | " + " | ".join(
          f"{row[k]:.4f}" if k in row else "-" for k in keys) + " |")
  for arm in ("micle", "simclr"):
    rows = runs.get(arm, {})
    if rows:
      seeds = ",".join(map(str, sorted(rows)))
      lines.append(f"| **{arm}, mean (95% t-interval over seeds)** | {seeds} | " + " | ".join(
          _interval([r[k] for r in rows.values() if k in r]) for k in keys) + " |")
  common = sorted(set(runs.get("micle", {})) & set(runs.get("simclr", {})))
  if common:
    diffs = [_interval([runs["micle"][s][k] - runs["simclr"][s][k] for s in common
                        if k in runs["micle"][s] and k in runs["simclr"][s]]) for k in keys]
    lines.append(f"| MICLe minus SimCLR, paired by seed | {','.join(map(str, common))} | "
                 + " | ".join(diffs) + " |")
  baselines = out / "baselines" / "results.json"
  if baselines.is_file():
    results = json.loads(baselines.read_text())
    for name in ("random_init", "raw_pixels"):
      if name in results["linear_probe"]:
        row = _row(results, name)
        lines.append(f"| {name} (baseline, seed 0) | - | " + " | ".join(
            f"{row[k]:.4f}" if k in row else "-" for k in keys) + " |")
  return "\n".join(lines)


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit(__doc__)
  text = table(pathlib.Path(sys.argv[1]))
  (pathlib.Path(sys.argv[1]) / "micle_vs_simclr.md").write_text(text + "\n")
  print(text)

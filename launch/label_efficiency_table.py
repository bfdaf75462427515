"""Table and plot of the label-efficiency study (launch/label_efficiency.sh; issue 19, item 5).

  python launch/label_efficiency_table.py OUT [PNG]

Reads OUT/{simclr,moco}_sS/eval_le/results.json (one seed S per run) and prints a markdown
table of test AUROC per arm and label fraction: every seed's figure, the mean over seeds with
its 95% Student-t interval, and the paired difference (same seed, hence the same labelled
draw) of each pretrained fine-tune minus supervised from scratch. Arms: MoCo and SimCLR
fine-tuned, the same network fine-tuned from random initialisation (supervised from scratch),
and linear probes on frozen features (random init, MoCo, SimCLR, raw pixels). Writes the plot
(default OUT/label_efficiency.png): AUROC against label fraction, log x axis, one line per arm
(raw pixels in the table only), error bars the 95% t-interval over seeds. Takes seconds; no training.
"""
from __future__ import annotations

import collections
import json
import pathlib
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from medssl_jax.evaluation import fractions  # pylint: disable=wrong-import-position

_RUN = re.compile(r"^(?P<method>simclr|moco)_s(?P<seed>\d+)$")
_METHOD = {"simclr": "SimCLR", "moco": "MoCo"}
# (arm, protocol, representation, which run's results hold it); "pretrained" is the run's method.
ARMS = (
    ("MoCo, fine-tuned", "finetune", "pretrained", "moco"),
    ("SimCLR, fine-tuned", "finetune", "pretrained", "simclr"),
    ("supervised from scratch (random init, fine-tuned)", "finetune", "random_init", "simclr"),
    ("random init, frozen (linear probe)", "linear_probe", "random_init", "simclr"),
    ("MoCo, frozen (linear probe)", "linear_probe", "pretrained", "moco"),
    ("SimCLR, frozen (linear probe)", "linear_probe", "pretrained", "simclr"),
    ("raw pixels (linear probe)", "linear_probe", "raw_pixels", "simclr"),
)
_SCRATCH = ARMS[2][0]
# Plotted arms: (format, colour); raw pixels is in the table only.
_PLOTTED = {arm[0]: style for arm, style in zip(ARMS, (
    ("s-", "tab:blue"), ("o-", "tab:orange"), ("^-", "tab:green"), ("v--", "tab:red"),
    ("s:", "tab:blue"), ("o:", "tab:orange")))}


def collect(out: pathlib.Path) -> dict:
  """arm -> fraction -> {seed: AUROC}."""
  scores = collections.defaultdict(lambda: collections.defaultdict(dict))
  for path in sorted(out.glob("*/eval_le/results.json")):
    match = _RUN.match(path.parent.parent.name)
    if not match:
      continue
    results = json.loads(path.read_text())["label_fractions"]
    for arm, protocol, representation, method in ARMS:
      summary = results.get(protocol, {}).get(representation)
      if method != match["method"] or summary is None:
        continue
      for cell in summary.values():
        for seed, value in zip(cell["seeds"], cell["values"]):
          scores[arm][cell["fraction"]][int(seed)] = float(value)
  return scores


def _interval(values) -> str:
  if len(values) < 2:
    return f"{values[0]:.4f} (1 seed)"
  mean, low, high = fractions.mean_and_interval(values)
  return f"**{mean:.4f}** ({low:.3f}-{high:.3f})"


def table(scores: dict) -> str:
  fracs = sorted({f for arm in scores.values() for f in arm})
  head = " | ".join(f"{100 * f:g}% of labels" for f in fracs)
  lines = [f"| arm | seeds | {head} |", "|---|---|" + "---|" * len(fracs)]
  for arm, *_ in ARMS:
    if arm not in scores:
      continue
    cells, seeds = [], set()
    for f in fracs:
      by_seed = scores[arm].get(f, {})
      seeds.update(by_seed)
      if not by_seed:
        cells.append("-")
        continue
      per_seed = ", ".join(f"{by_seed[s]:.4f}" for s in sorted(by_seed))
      cells.append(f"{_interval([by_seed[s] for s in sorted(by_seed)])}; per seed {per_seed}")
    lines.append(f"| {arm} | {','.join(map(str, sorted(seeds)))} | " + " | ".join(cells) + " |")
  if _SCRATCH in scores:
    for arm in ("MoCo, fine-tuned", "SimCLR, fine-tuned"):
      if arm not in scores:
        continue
      cells = []
      for f in fracs:
        common = sorted(set(scores[arm].get(f, {})) & set(scores[_SCRATCH].get(f, {})))
        diffs = [scores[arm][f][s] - scores[_SCRATCH][f][s] for s in common]
        cells.append(_interval(diffs).replace("**", "") if diffs else "-")
      lines.append(f"| {arm} minus supervised from scratch, paired by seed | | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot(scores: dict, path: pathlib.Path) -> None:
  fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=100)
  fracs = sorted({f for arm in scores.values() for f in arm})
  shown = [arm for arm, *_ in ARMS if arm in scores and arm in _PLOTTED]
  for k, arm in enumerate(shown):
    points = sorted(scores[arm].items())
    x = np.array([f for f, _ in points])
    stats = [fractions.mean_and_interval(list(by_seed.values())) for _, by_seed in points]
    mean = np.array([s[0] for s in stats])
    err = np.array([[s[0] - s[1] for s in stats], [s[2] - s[0] for s in stats]])
    nudge = 1.0 + 0.04 * (k - (len(shown) - 1) / 2)  # side by side, so the bars do not hide each other
    n = min(len(by_seed) for _, by_seed in points)
    fmt, colour = _PLOTTED[arm]
    ax.errorbar(x * nudge, mean, yerr=err, fmt=fmt, color=colour, capsize=3, markersize=5,
                label=f"{arm} (n={n} seeds)")
  ax.set_xscale("log")
  ax.set_xticks(fracs, [f"{100 * f:g}%" for f in fracs])
  ax.minorticks_off()
  ax.set_xlabel("fraction of PneumoniaMNIST training labels (log scale)")
  ax.set_ylabel("test AUROC")
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=7, frameon=False, loc="lower right")
  ax.set_title("Label efficiency, PneumoniaMNIST 28 px: mean and 95% t-interval over seeds", fontsize=9)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def main(argv) -> None:
  if len(argv) not in (2, 3):
    sys.exit(__doc__)
  out = pathlib.Path(argv[1])
  scores = collect(out)
  if not scores:
    sys.exit(f"no OUT/{{simclr,moco}}_sS/eval_le/results.json under {out}")
  png = pathlib.Path(argv[2]) if len(argv) == 3 else out / "label_efficiency.png"
  plot(scores, png)
  text = table(scores)
  (out / "label_efficiency.md").write_text(text + "\n")
  print(text)
  print(f"\nplot: {png}")


if __name__ == "__main__":
  main(sys.argv)

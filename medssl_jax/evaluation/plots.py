"""Plots written as PNG files (matplotlib's Agg backend: no display needed)."""
from __future__ import annotations

import pathlib
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np


def scatter_2d(points: np.ndarray, labels: np.ndarray, class_names, path, title: str = "") -> pathlib.Path:
  """2-D embedding, one colour per class, legend with class names."""
  fig, ax = plt.subplots(figsize=(10, 7), dpi=120)
  colours = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
  order = np.random.default_rng(0).permutation(len(points))  # no class drawn on top of all others
  ax.scatter(points[order, 0], points[order, 1], c=[colours(int(l) % colours.N) for l in labels[order]],
             s=3, alpha=0.6, linewidths=0)
  for k, name in enumerate(class_names):
    short = name if len(name) <= 28 else name[:27] + "…"  # long names would squeeze the map
    ax.scatter([], [], color=colours(k % colours.N), s=20, label=f"{short} ({np.sum(labels == k)})")
  ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False, markerscale=1.5)
  ax.set_title(textwrap.fill(title, 80), fontsize=10)
  ax.set_aspect("equal", adjustable="datalim")
  ax.set_xticks([])
  ax.set_yticks([])
  fig.tight_layout()
  path = pathlib.Path(path)
  fig.savefig(path)
  plt.close(fig)
  return path

"""Plots written as PNG files (matplotlib's Agg backend: no display needed)."""
from __future__ import annotations

import io
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np

from medssl_jax import paths


def scatter_2d(points: np.ndarray, labels: np.ndarray, class_names, path, title: str = "") -> paths.Path:
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
  return save_figure(fig, path)


def save_figure(fig, path) -> paths.Path:
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  plt.close(fig)
  return paths.write_bytes_atomic(path, buffer.getvalue())


def heatmap(matrix: np.ndarray, row_labels, col_labels, path, *, title: str = "",
            value_label: str = "", row_title: str = "", col_title: str = "") -> paths.Path:
  """A matrix with its value written in every cell; NaN cells (not measured) left blank."""
  n_rows, n_cols = matrix.shape
  fig, ax = plt.subplots(figsize=(1.1 * n_cols + 3, 0.8 * n_rows + 2), dpi=120)
  shown = np.ma.masked_invalid(matrix)
  image = ax.imshow(shown, cmap="viridis")
  finite = matrix[np.isfinite(matrix)]
  middle = (finite.min() + finite.max()) / 2 if finite.size else 0
  for i in range(n_rows):
    for j in range(n_cols):
      if np.isfinite(matrix[i, j]):
        ax.text(j, i, f"{matrix[i, j]:.3f}", ha="center", va="center", fontsize=9,
                color="black" if matrix[i, j] > middle else "white")
  ax.set_xticks(range(n_cols), col_labels, rotation=45, ha="right")
  ax.set_yticks(range(n_rows), row_labels)
  ax.set_xlabel(col_title)
  ax.set_ylabel(row_title)
  fig.colorbar(image, ax=ax, label=value_label, shrink=0.8)
  ax.set_title(textwrap.fill(title, 60), fontsize=10)
  fig.tight_layout()
  return save_figure(fig, path)


def image_grid(rows: np.ndarray, path, *, row_labels=(), col_labels=(), title: str = "") -> paths.Path:
  """Images in a grid: rows [R, C, H, W, channels] of floats in [0, 1] (1 channel drawn grey)."""
  n_rows, n_cols = rows.shape[:2]
  fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.3 * n_cols, 1.3 * n_rows + 0.6), dpi=120,
                           squeeze=False)
  for i in range(n_rows):
    for j in range(n_cols):
      image = np.clip(rows[i, j], 0, 1)
      ax = axes[i, j]
      if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
      else:
        ax.imshow(image)
      ax.set_xticks([])
      ax.set_yticks([])
      if i == 0 and j < len(col_labels):
        ax.set_title(col_labels[j], fontsize=8)
      if j == 0 and i < len(row_labels):
        ax.set_ylabel(row_labels[i], fontsize=7)
  fig.suptitle(textwrap.fill(title, 90), fontsize=9)
  fig.tight_layout()
  return save_figure(fig, path)

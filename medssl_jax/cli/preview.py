"""Augmentation previews: what the network will see, as a PNG grid per policy.

  python -m medssl_jax.cli.preview --data=pneumoniamnist --data_dir=../shared/data/medmnist \
      --policies=cxr,moco_cxr,micle --n=6 --k=5 --size=112 --out=previews

Writes OUT/preview_<policy>.png: N images of the data set (a seeded sample of --split), each
row the original (resized only) then K augmented views, exactly as the train step makes them
(same jitted ops, one key per view). A policy is a name in augment.POLICIES or ops joined
by "+" (e.g. crop+rotate).
"""
from __future__ import annotations

import jax
import numpy as np
from absl import app
from absl import flags

from medssl_jax import augment
from medssl_jax import paths
from medssl_jax.data import catalog
from medssl_jax.evaluation import plots
from medssl_jax.loop import configuration


def preview_views(images: np.ndarray, policy: str, *, k: int, size: int, seed: int) -> np.ndarray:
  """[N, 1 + k, size, size, C] floats in [0, 1]: each image resized, then k augmented views."""
  originals = np.asarray(augment.preprocess_batch(images, size))
  keys = jax.random.split(jax.random.key(seed), k)
  views = [np.asarray(augment.augment_batch(images, key, policy, size)) for key in keys]
  return np.stack([originals, *views], axis=1)


def write_preview(source, policy: str, out_dir, *, n: int, k: int, size: int, seed: int) -> paths.Path:
  chosen = np.sort(np.random.default_rng(seed).choice(len(source), size=min(n, len(source)), replace=False))
  images = np.stack([source[int(i)]["image"] for i in chosen])
  grid = preview_views(images, policy, k=k, size=size, seed=seed)
  names = getattr(source, "class_names", None)
  row_labels = [f"#{i}" + (f" {names[int(source.labels[i])]}"[:18] if names is not None and
                           np.ndim(source.labels[i]) == 0 else "") for i in chosen]
  return plots.image_grid(grid, paths.path(out_dir) / f"preview_{policy}.png",
                          row_labels=row_labels,
                          col_labels=["original"] + [f"view {j + 1}" for j in range(k)],
                          title=f"{source.name} ({source.split}), policy {policy!r}: "
                                f"{len(chosen)} images x {k} augmented views at {size} px")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  args = flags.FLAGS
  for policy in args.policies:
    augment.get_policy(policy)  # every name checked before any work
  source = catalog.open_source(args.data, args.split, data_dir=args.data_dir or None)
  for policy in args.policies:
    path = write_preview(source, policy, args.out, n=args.n, k=args.k, size=args.size, seed=args.seed)
    print(f"wrote {path}")


def run():
  flags.DEFINE_string("data", "pneumoniamnist", "Data set name (as data.name in configs).")
  flags.DEFINE_string("data_dir", "", "Folder of the data files ('' -> $MEDSSL_DATA_DIR, the cache).")
  flags.DEFINE_string("split", "train", "Split to sample images from.")
  flags.DEFINE_list("policies", ["simclr"], "Policies, comma-separated: names or op+op.")
  flags.DEFINE_integer("n", 6, "Images (rows).")
  flags.DEFINE_integer("k", 5, "Augmented views per image (columns after the original).")
  flags.DEFINE_integer("size", 112, "Side of the views in pixels.")
  flags.DEFINE_integer("seed", 0, "Seed of the image sample and the augmentations.")
  flags.DEFINE_string("out", "previews", "Output folder.")
  configuration.run_binary(main)


if __name__ == "__main__":
  run()

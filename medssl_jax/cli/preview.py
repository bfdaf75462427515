"""Augmentation previews: what the network will see, as a PNG grid per policy.

  python -m medssl_jax.cli.preview --data=pneumoniamnist --data_dir=../shared/data/medmnist \
      --policies=cxr,moco_cxr,micle --n=6 --k=5 --size=112 --out=previews

Writes OUT/preview_<policy>.png: N images of the data set (a seeded sample of --split), each
row the original (resized only) then K augmented views, exactly as the train step makes them
(same jitted ops, one key per view). A policy is a name in augment.POLICIES or
multicrop.POLICIES, or ops joined by "+" (e.g. crop+rotate).

Multi-crop (as DINO sees a batch): --local_crops=N writes OUT/preview_multicrop.png instead,
each row the original, the 2 global views (--global_policies, at --size) and N local views
(--local_policy, at --local_size, drawn to scale on a white square of the global size):

  python -m medssl_jax.cli.preview --data=bloodmnist --data_dir=../shared/data/medmnist \
      --local_crops=6 --size=28 --local_size=16 --out=previews
"""
from __future__ import annotations

import jax
import numpy as np
from absl import app
from absl import flags

from medssl_jax import augment
from medssl_jax import errors
from medssl_jax import multicrop
from medssl_jax import paths
from medssl_jax.data import catalog
from medssl_jax.evaluation import plots
from medssl_jax.loop import configuration


def preview_views(images: np.ndarray, policy: str, *, k: int, size: int, seed: int) -> np.ndarray:
  """[N, 1 + k, size, size, C] floats in [0, 1]: each image resized, then k augmented views."""
  originals = np.asarray(augment.preprocess_batch(images, size))
  keys = jax.random.split(jax.random.key(seed), k)
  views = [np.asarray(augment.augment_batch(images, key, multicrop.get_policy(policy), size)) for key in keys]
  return np.stack([originals, *views], axis=1)


# One compiled program, as in the train step.
_jitted_multicrop = jax.jit(multicrop.multicrop, static_argnames=(
    "global_policies", "global_size", "local_policy", "local_size", "num_local"))


def multicrop_views(images: np.ndarray, *, global_policies, local_policy: str, local_crops: int,
                    size: int, local_size: int, seed: int) -> np.ndarray:
  """[N, 3 + local_crops, size, size, C] in [0, 1]: each image resized, its 2 global views, then
  its local views (made as the train step makes them) centred on white at their own scale."""
  originals = np.asarray(augment.preprocess_batch(images, size))
  globals_, locals_ = _jitted_multicrop(
      images, jax.random.key(seed), global_policies=tuple(multicrop.get_policy(p) for p in global_policies),
      global_size=size, local_policy=multicrop.get_policy(local_policy), local_size=local_size,
      num_local=local_crops)
  start = (size - local_size) // 2
  canvas = np.ones((local_crops,) + originals.shape, np.float32)
  canvas[:, :, start:start + local_size, start:start + local_size] = np.asarray(locals_)
  return np.concatenate([originals[:, None], np.moveaxis(np.asarray(globals_), 0, 1),
                         np.moveaxis(canvas, 0, 1)], axis=1)


def _sample(source, n: int, seed: int):
  """(indices, images, row labels) of a seeded sample of `source`."""
  chosen = np.sort(np.random.default_rng(seed).choice(len(source), size=min(n, len(source)), replace=False))
  images = np.stack([source[int(i)]["image"] for i in chosen])
  names = getattr(source, "class_names", None)
  row_labels = [f"#{i}" + (f" {names[int(source.labels[i])]}"[:18] if names is not None and
                           np.ndim(source.labels[i]) == 0 else "") for i in chosen]
  return chosen, images, row_labels


def write_preview(source, policy: str, out_dir, *, n: int, k: int, size: int, seed: int) -> paths.Path:
  chosen, images, row_labels = _sample(source, n, seed)
  grid = preview_views(images, policy, k=k, size=size, seed=seed)
  return plots.image_grid(grid, paths.path(out_dir) / f"preview_{policy}.png",
                          row_labels=row_labels,
                          col_labels=["original"] + [f"view {j + 1}" for j in range(k)],
                          title=f"{source.name} ({source.split}), policy {policy!r}: "
                                f"{len(chosen)} images x {k} augmented views at {size} px")


def write_multicrop_preview(source, out_dir, *, global_policies, local_policy: str, local_crops: int,
                            n: int, size: int, local_size: int, seed: int) -> paths.Path:
  chosen, images, row_labels = _sample(source, n, seed)
  grid = multicrop_views(images, global_policies=global_policies, local_policy=local_policy,
                         local_crops=local_crops, size=size, local_size=local_size, seed=seed)
  return plots.image_grid(grid, paths.path(out_dir) / "preview_multicrop.png", row_labels=row_labels,
                          col_labels=["original", "global 1", "global 2"]
                          + [f"local {j + 1}" for j in range(local_crops)],
                          title=f"{source.name} ({source.split}), multi-crop: 2 global views at {size} px "
                                f"({', '.join(global_policies)}), {local_crops} local views at "
                                f"{local_size} px ({local_policy})")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  args = flags.FLAGS
  if args.local_crops and not 0 < args.local_size <= args.size:
    raise errors.UserError(f"--local_size={args.local_size} must be in (0, --size={args.size}]")
  if args.local_crops and len(args.global_policies) != 2:
    raise errors.UserError(f"--global_policies takes 2 policies; got {args.global_policies}")
  names = (list(args.global_policies) + [args.local_policy]) if args.local_crops else args.policies
  for policy in names:
    multicrop.get_policy(policy)  # every name checked before any work
  source = catalog.open_source(args.data, args.split, data_dir=args.data_dir or None)
  if args.local_crops:
    path = write_multicrop_preview(source, args.out, global_policies=args.global_policies,
                                   local_policy=args.local_policy, local_crops=args.local_crops, n=args.n,
                                   size=args.size, local_size=args.local_size, seed=args.seed)
    print(f"wrote {path}")
    return
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
  flags.DEFINE_integer("local_crops", 0, "Multi-crop: local views per image (0 = no multi-crop grid).")
  flags.DEFINE_integer("local_size", 48, "Multi-crop: side of the local views in pixels.")
  flags.DEFINE_list("global_policies", ["dino_global1", "dino_global2"], "Multi-crop: the 2 global policies.")
  flags.DEFINE_string("local_policy", "dino_local", "Multi-crop: the local views' policy.")
  configuration.run_binary(main)


if __name__ == "__main__":
  run()

"""Patient-safe splits: split by group (patient, study, lesion) and check for leakage.

Clinical data sets often ship splits drawn per image, so one patient's images land in both
train and test and a probe scores the patient, not the finding. `crossing_groups` lists
every such group; `group_split` draws a split in which none can exist. Both work on plain
arrays (one group name and one split name per image), so any source can use them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from medssl_jax import errors

SPLITS = ("train", "val", "test")


class LeakySplitError(errors.UserError):
  """A split puts images of one group (patient) in more than one split."""


def crossing_groups(groups: Sequence[str], splits: Sequence[str]) -> dict[str, list[str]]:
  """Every group with images in more than one split -> the sorted splits it is in.

  Rows with an empty split name (not in any split) are ignored.
  """
  groups, splits = np.asarray(groups, dtype=str), np.asarray(splits, dtype=str)
  if groups.shape != splits.shape:
    raise ValueError(f"{groups.shape[0]} group names but {splits.shape[0]} split names")
  assigned = splits != ""
  pairs = np.unique(np.stack([groups[assigned], splits[assigned]], axis=1), axis=0)
  names, counts = np.unique(pairs[:, 0], return_counts=True)
  crossing = set(names[counts > 1].tolist())
  found: dict[str, list[str]] = {}
  for group, split in pairs.tolist():
    if group in crossing:
      found.setdefault(group, []).append(split)
  return {group: sorted(found[group]) for group in sorted(found)}


def describe_leak(crossing: dict[str, list[str]], what: str = "patients") -> str:
  listing = ", ".join(f"{group} ({'+'.join(splits)})" for group, splits in crossing.items())
  return f"{len(crossing)} {what} have images in more than one split: {listing}"


def check_no_leakage(groups, splits, *, name: str, allow: bool = False) -> dict[str, list[str]]:
  """Raises LeakySplitError listing every crossing group unless `allow`; returns them."""
  crossing = crossing_groups(groups, splits)
  if crossing and not allow:
    raise LeakySplitError(
        f"{name}: {describe_leak(crossing)}. Split by patient with "
        f"--config.data.split.by=group, or set --config.data.split.allow_leakage=True to "
        f"use the split as it is.")
  return crossing


def group_split(groups: Sequence[str], fractions: Sequence[float] = (0.7, 0.15, 0.15),
                seed: int = 0) -> np.ndarray:
  """A train/val/test split name for each row, with every group wholly in one split.

  Groups are shuffled with the seed and dealt out in that order until each split holds its
  fraction of the images (not of the groups: one patient may have 60 images), so the image
  fractions come out close to `fractions` but not exact. The same groups and seed always
  give the same split, whatever the row order.
  """
  fractions = np.asarray(fractions, dtype=np.float64)
  if fractions.shape != (len(SPLITS),) or (fractions < 0).any() or fractions.sum() <= 0:
    raise errors.UserError(f"fractions must be 3 non-negative numbers (train, val, test), got "
                           f"{fractions.tolist()}")
  groups = np.asarray(groups, dtype=str)
  names, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
  order = np.random.default_rng(seed).permutation(len(names))
  # Each group goes to the split in which the middle of its run of images falls.
  ends = np.cumsum(counts[order])
  middles = (ends - counts[order] / 2) / len(groups)
  bounds = np.cumsum(fractions / fractions.sum())
  split_of_group = np.empty(len(names), dtype=np.int64)
  split_of_group[order] = np.minimum(np.searchsorted(bounds, middles), len(SPLITS) - 1)
  return np.asarray(SPLITS)[split_of_group[inverse.reshape(-1)]]

"""The one registry of data sources: `data.name` -> opener, used by train, eval, convert and
preview through `open_data(config.data, split)`.

Registered here: the MedMNIST sets, `nih_cxr1000`, `csv` (any CSV manifest), the clinical
layouts (`chexpert`, `mimic_cxr`, `nih14`, `vindr_cxr`; only `data.dir` is needed) and
`array_record` (shards written by `medssl-convert`). For sets with patients, the split is
checked for leakage before anything is decoded, so a leaky split costs no time.

Adding a source: write its opener `(data config, split) -> source` (a grain random-access
source of {"image", "label", "group", "index"} records, see sources.py) in its own module and
`register` it below with the data.* keys it needs.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import ml_collections
import numpy as np

from medssl_jax import errors
from medssl_jax import paths
from medssl_jax.data import config as data_config
from medssl_jax.data import layouts
from medssl_jax.data import manifest
from medssl_jax.data import sources
from medssl_jax.data import splits as splits_lib
from medssl_jax.data import table as table_lib
from medssl_jax.data import tfds_source

with_defaults = data_config.with_defaults
Opener = Callable[[ml_collections.ConfigDict, str], Any]


@dataclasses.dataclass(frozen=True)
class SourceEntry:
  """How to open one data set: `open(data, split)`, and the data.* keys that must be set
  (dotted, e.g. "manifest.csv")."""
  open: Opener
  needs: tuple[str, ...] = ()
  hint: str = ""  # said when a needed key is unset


_REGISTRY: dict[str, SourceEntry] = {}
# Families of data sets named "PREFIX:REST" (e.g. "tfds:patch_camelyon"): prefix -> entry.
_PREFIXES: dict[str, SourceEntry] = {}


def register(name: str, open_fn: Opener, *, needs: tuple[str, ...] = (), hint: str = "") -> None:
  """Makes `data.name=name` open its splits with `open_fn(data, split)`; a name ending in ":"
  registers a family: every `data.name` starting with it (`open_fn` reads the rest)."""
  registry = _PREFIXES if name.endswith(":") else _REGISTRY
  registry[name.lower()] = SourceEntry(open_fn, tuple(needs), hint)


def unregister(name: str) -> None:
  (_PREFIXES if name.endswith(":") else _REGISTRY).pop(name.lower(), None)


CSV = "csv"
ARRAY_RECORD = "array_record"


def known_names() -> list[str]:
  return sorted(_REGISTRY) + [f"{prefix}NAME" for prefix in sorted(_PREFIXES)]


def _entry(name: str) -> SourceEntry | None:
  if name in _REGISTRY:
    return _REGISTRY[name]
  prefix = name.split(":", 1)[0] + ":"
  return _PREFIXES.get(prefix) if ":" in name else None


def _data_dir(data) -> paths.Path:
  directory = paths.path(data.dir)
  if not directory.is_dir():
    raise errors.UserFileNotFoundError(
        f"data directory {directory} (data.dir of {data.name!r}) does not exist")
  return directory


def _csv_table(data) -> table_lib.Table:
  m = data.manifest
  if len(m.split_values) != 3:
    raise errors.UserError(f"data.manifest.split_values must name the CSV's train, val and test values, "
                           f"got {m.split_values}")
  return table_lib.read_csv_table(
      m.csv, m.root or None, path_column=m.path_column, label_column=m.label_column or None,
      label_columns=tuple(c for c in m.label_columns if c),
      label_name_column=m.label_name_column or None, group_column=m.group_column or None,
      split_column=m.split_column or None,
      split_values=dict(zip(splits_lib.SPLITS, m.split_values)), uncertain=data.uncertain)


def split_names(table: table_lib.Table, data) -> np.ndarray:
  """The split of every row of `table`: as shipped, or drawn by group; checked for leakage."""
  if data.split.by == "group":
    names = splits_lib.group_split(table.groups, data.split.fractions, data.split.seed)
  elif data.split.by == "file":
    names = table.splits
  else:
    raise errors.UserError(f"data.split.by must be 'file' or 'group', got {data.split.by!r}")
  if table.has_groups:
    splits_lib.check_no_leakage(table.groups, names, name=table.name, allow=data.split.allow_leakage)
  return names


def _open_table_split(table: table_lib.Table, split: str, data) -> manifest.TableSource:
  names = split_names(table, data)
  rows = np.flatnonzero(names == split)
  if not len(rows):
    present = sorted(set(names.tolist()) - {""})
    raise errors.UserError(f"{table.name} has no images in split {split!r}; splits present: {present}. "
                           f"Without a split in the data, set --config.data.split.by=group")
  return manifest.TableSource(table, rows, split=split, image_size=data.image_size or None,
                              resize=data.resize, channels=data.channels, bad_files=data.bad_files)


def _open_array_record(split: str, data):
  from medssl_jax.data import array_record  # pylint: disable=g-import-not-at-top
  directory = _data_dir(data)
  if data.split.by != "file":
    raise errors.UserError("array_record shards keep the split they were converted with; "
                           "choose the split when converting")
  source = array_record.ArrayRecordSource(directory, split)
  if source.has_groups:
    present = list(array_record.read_metadata(directory)["splits"])
    opened = [source if s == split else array_record.ArrayRecordSource(directory, s) for s in present]
    groups = np.concatenate([np.asarray(s.group_names)[s.groups] for s in opened])
    names = np.concatenate([np.full(len(s), s.split) for s in opened])
    splits_lib.check_no_leakage(groups, names, name=source.name, allow=data.split.allow_leakage)
  return source


def _table_opener(read_table: Callable[[ml_collections.ConfigDict], table_lib.Table]) -> Opener:
  return lambda data, split: _open_table_split(read_table(data), split, data)


def _open_medmnist(data, split: str) -> sources.MedMNISTSource:
  if data.split.by != "file":
    raise errors.UserError(f"{data.name} has no patient ids to split by; use data.split.by='file'")
  return sources.MedMNISTSource(data.name, split, data_dir=data.dir or None,
                                cache_dir=data.cache_dir or None)


def _lookup(data, key: str):
  for part in key.split("."):
    data = data[part]
  return data


def open_data(data: ml_collections.ConfigDict, split: str):
  """The source of split "train", "val" or "test" of the data set `data` describes."""
  data = with_defaults(data)
  entry = _entry(data.name.lower())
  if entry is None:
    raise errors.UserError(f"unknown data set {data.name!r}; known: {', '.join(known_names())}")
  unset = [key for key in entry.needs if not _lookup(data, key)]
  if unset:
    raise errors.UserError(f"data set {data.name!r} needs " + " and ".join(
        f"--config.data.{key}" for key in unset) + (f" ({entry.hint})" if entry.hint else ""))
  return entry.open(data, split)


def open_source(name: str, split: str, data_dir: str | None = None, cache_dir: str | None = None):
  """open_data for a data set given by name and folder alone (tests, notebooks, preview)."""
  data = data_config.defaults()
  data.name, data.dir, data.cache_dir = name, str(data_dir or ""), str(cache_dir or "")
  return open_data(data, split)


def _nih_cxr1000_table(data):
  return manifest.nih_cxr1000_table(data.dir or None)


def _chexpert_table(data):
  return layouts.chexpert_table(_data_dir(data), uncertainty=data.uncertain,
                                frontal_only=data.frontal_only)


def _mimic_cxr_table(data):
  return layouts.mimic_cxr_table(_data_dir(data), uncertainty=data.uncertain)


_IN_DIR = dict(needs=("dir",), hint="the folder that holds it; it is never downloaded")
for _name in sources.MEDMNIST_INFO:
  register(_name, _open_medmnist)
register(manifest.NIH_CXR1000, _table_opener(_nih_cxr1000_table))
register(CSV, _table_opener(_csv_table), needs=("manifest.csv",),
         hint="and path_column, label_column or label_columns, group_column, split_column as it has them")
register("chexpert", _table_opener(_chexpert_table), **_IN_DIR)
register("mimic_cxr", _table_opener(_mimic_cxr_table), **_IN_DIR)
register("nih14", _table_opener(lambda data: layouts.nih14_table(_data_dir(data))), **_IN_DIR)
register("vindr_cxr", _table_opener(lambda data: layouts.vindr_cxr_table(_data_dir(data))), **_IN_DIR)
register(ARRAY_RECORD, lambda data, split: _open_array_record(split, data), **_IN_DIR)
register(tfds_source.PREFIX, tfds_source.open_tfds, needs=("dir",), hint=tfds_source.DIR_HINT)

"""A config's data section -> the source of one split: the one entry point of train and eval.

`data.name` picks the kind: a MedMNIST set, `nih_cxr1000`, `csv` (any CSV manifest), a known
clinical layout (`chexpert`, `mimic_cxr`, `nih14`, `vindr_cxr`; only `data.dir` is needed), or
`array_record` (shards written by `medssl-convert`). For sets with patients, the split is
checked for leakage before anything is decoded, so a leaky split costs no time.
"""
from __future__ import annotations

import pathlib

import ml_collections
import numpy as np

from medssl_jax import defaults
from medssl_jax.data import layouts
from medssl_jax.data import manifest
from medssl_jax.data import sources
from medssl_jax.data import splits as splits_lib
from medssl_jax.data import table as table_lib

CSV = "csv"
ARRAY_RECORD = "array_record"


def with_defaults(data: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`data` with every key of defaults.pretraining().data that it lacks (older workdirs)."""
  full = defaults.pretraining().data
  full.update(ml_collections.ConfigDict(data.to_dict()))
  return full


def known_names() -> list[str]:
  return sorted(set(sources.MEDMNIST_INFO) | set(layouts.LAYOUTS)
                | {manifest.NIH_CXR1000, CSV, ARRAY_RECORD})


def _data_dir(data) -> pathlib.Path:
  if not data.dir:
    raise ValueError(f"data set {data.name!r} is never downloaded: set --config.data.dir to the "
                     f"folder that holds it")
  directory = pathlib.Path(data.dir).expanduser()
  if not directory.is_dir():
    raise FileNotFoundError(f"data directory {directory} (data.dir of {data.name!r}) does not exist")
  return directory


def _csv_table(data) -> table_lib.Table:
  m = data.manifest
  if not m.csv:
    raise ValueError("data.name='csv' needs --config.data.manifest.csv=PATH (and path_column, "
                     "label_column or label_columns, group_column, split_column as it has them)")
  if len(m.split_values) != 3:
    raise ValueError(f"data.manifest.split_values must name the CSV's train, val and test values, "
                     f"got {m.split_values}")
  return table_lib.read_csv_table(
      m.csv, m.root or None, path_column=m.path_column, label_column=m.label_column or None,
      label_columns=tuple(c for c in m.label_columns if c),
      label_name_column=m.label_name_column or None, group_column=m.group_column or None,
      split_column=m.split_column or None,
      split_values=dict(zip(splits_lib.SPLITS, m.split_values)), uncertain=data.uncertain)


_TABLES = {
    CSV: _csv_table,
    manifest.NIH_CXR1000: lambda data: manifest.nih_cxr1000_table(data.dir or None),
    "chexpert": lambda data: layouts.chexpert_table(
        _data_dir(data), uncertainty=data.uncertain, frontal_only=data.frontal_only),
    "mimic_cxr": lambda data: layouts.mimic_cxr_table(_data_dir(data), uncertainty=data.uncertain),
    "nih14": lambda data: layouts.nih14_table(_data_dir(data)),
    "vindr_cxr": lambda data: layouts.vindr_cxr_table(_data_dir(data)),
}


def split_names(table: table_lib.Table, data) -> np.ndarray:
  """The split of every row of `table`: as shipped, or drawn by group; checked for leakage."""
  if data.split.by == "group":
    names = splits_lib.group_split(table.groups, data.split.fractions, data.split.seed)
  elif data.split.by == "file":
    names = table.splits
  else:
    raise ValueError(f"data.split.by must be 'file' or 'group', got {data.split.by!r}")
  if table.has_groups:
    splits_lib.check_no_leakage(table.groups, names, name=table.name, allow=data.split.allow_leakage)
  return names


def _open_table_split(table: table_lib.Table, split: str, data) -> manifest.TableSource:
  names = split_names(table, data)
  rows = np.flatnonzero(names == split)
  if not len(rows):
    present = sorted(set(names.tolist()) - {""})
    raise ValueError(f"{table.name} has no images in split {split!r}; splits present: {present}. "
                     f"Without a split in the data, set --config.data.split.by=group")
  return manifest.TableSource(table, rows, split=split, image_size=data.image_size or None,
                              resize=data.resize, channels=data.channels, bad_files=data.bad_files)


def _open_array_record(split: str, data):
  from medssl_jax.data import array_record  # pylint: disable=g-import-not-at-top
  directory = _data_dir(data)
  if data.split.by != "file":
    raise ValueError("array_record shards keep the split they were converted with; "
                     "choose the split when converting")
  source = array_record.ArrayRecordSource(directory, split)
  if source.has_groups:
    present = list(array_record.read_metadata(directory)["splits"])
    opened = [source if s == split else array_record.ArrayRecordSource(directory, s) for s in present]
    groups = np.concatenate([np.asarray(s.group_names)[s.groups] for s in opened])
    names = np.concatenate([np.full(len(s), s.split) for s in opened])
    splits_lib.check_no_leakage(groups, names, name=source.name, allow=data.split.allow_leakage)
  return source


def open_data(data: ml_collections.ConfigDict, split: str):
  """The source of split "train", "val" or "test" of the data set `data` describes."""
  data = with_defaults(data)
  name = data.name.lower()
  if name in sources.MEDMNIST_INFO:
    if data.split.by != "file":
      raise ValueError(f"{name} has no patient ids to split by; use data.split.by='file'")
    return sources.open_source(name, split, data_dir=data.dir or None,
                               cache_dir=data.cache_dir or None)
  if name == ARRAY_RECORD:
    return _open_array_record(split, data)
  if name in _TABLES:
    return _open_table_split(_TABLES[name](data), split, data)
  raise ValueError(f"unknown data set {data.name!r}; known: {', '.join(known_names())}")

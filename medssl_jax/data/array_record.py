"""Any source converted to ArrayRecord shards once, then read by random access from disk.

A data set too large to hold in memory (or slow to decode, like PNG files) is converted once
with `convert` and read with `ArrayRecordSource`, which follows the same source protocol as
MedMNISTSource and CSVManifestSource but keeps only labels and groups in memory.

Layout of a conversion directory:
  metadata.json      name, class_names, num_classes, multi_label, image_shape, label_shape,
                     writer options, per split its record count and shard file names, and
                     "complete" (true once every shard was written and verified).
  {split}-{i:05d}-of-{n:05d}.array_record
                     records i*R .. (i+1)*R-1 of the split (R = records_per_shard).
  {split}-meta.npz   labels, groups, hashes (one per record) and, when the source had them,
                     group_names: what a pipeline needs without reading any image.

A record is bytes, no pickle: a header (struct "<4sqq": magic b"MSR1", index, group), the
label as little-endian int32 (1 value, or L for multi-label), then the image's uint8 bytes in
C order; shapes come from metadata.json. The hash of a record is blake2b (8 bytes) of those
bytes, so verification needs neither the source nor a second copy.

ArrayRecordSource reads with array_record's own reader, one per shard opened on first use
(and again in each grain worker process after unpickling), rather than through grain's
ArrayRecordDataSource: its per-record overhead was several times the read itself.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import struct
import sys
import tempfile
import threading
import time
from typing import Any, Iterable, Mapping

import numpy as np
from array_record.python import array_record_module

from medssl_jax import errors
from medssl_jax import paths
from medssl_jax.data import in_memory

FORMAT = "medssl_jax.array_record"
FORMAT_VERSION = 1
METADATA = "metadata.json"
# group_size:1 makes every record its own compressed chunk, so a random read decodes only it
# (grain's advice for ArrayRecord). zstd is ArrayRecord's default codec.
DEFAULT_WRITER_OPTIONS = "group_size:1"
TARGET_SHARD_BYTES = 128 << 20  # when records_per_shard is None
# No readahead: a random read should fetch one record, not the 16 MB that follow it.
_RANDOM_ACCESS = "readahead_buffer_size:0,max_parallelism:0"

_HEADER = struct.Struct("<4sqq")  # magic, index, group
_MAGIC = b"MSR1"
_LABEL = struct.Struct("<i")
_LABEL_DTYPE = np.dtype("<i4")
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_.]+")
_COPY_CHUNK = 16 << 20  # bytes per read when uploading a shard
_READ_CHUNK = 256  # records per sequential read while verifying; bounds memory for big images


class VerificationError(errors.UserError):
  """Shards whose records differ from what was converted (corrupt, truncated or swapped)."""


@dataclasses.dataclass(frozen=True)
class ConvertResult:
  """What one `convert` call did: shard names written now and kept (already valid)."""
  directory: paths.Path
  metadata: dict
  written: tuple[str, ...]
  kept: tuple[str, ...]


# ----------------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True)
class RecordCodec:
  """Bytes <-> record for one conversion's shapes (see the module docstring for the layout)."""
  image_shape: tuple[int, ...]
  label_shape: tuple[int, ...]  # () for one class id, (L,) for multi-label

  def __post_init__(self):
    # Worked out once: the reader decodes every record, so keep per-record work minimal.
    object.__setattr__(self, "image_shape", tuple(int(d) for d in self.image_shape))
    object.__setattr__(self, "label_shape", tuple(int(d) for d in self.label_shape))
    num_labels = math.prod(self.label_shape)
    object.__setattr__(self, "_num_labels", num_labels)
    object.__setattr__(self, "_image_offset", _HEADER.size + 4 * num_labels)
    object.__setattr__(self, "size", self._image_offset + math.prod(self.image_shape))

  def encode(self, record: Mapping[str, Any]) -> bytes:
    image = np.asarray(record["image"])
    if image.dtype != np.uint8 or image.shape != self.image_shape:
      raise ValueError(f"record {int(record['index'])}: image is {image.dtype} {image.shape}; "
                       f"expected uint8 {self.image_shape} (every image of a conversion "
                       f"has one size)")
    label = np.asarray(record["label"])
    as_int32 = label.astype(_LABEL_DTYPE)
    if label.shape != self.label_shape or not np.array_equal(as_int32, label):
      raise ValueError(f"record {int(record['index'])}: label {label!r} is not an int32 "
                       f"array of shape {self.label_shape}")
    header = _HEADER.pack(_MAGIC, int(record["index"]), int(record["group"]))
    return b"".join((header, as_int32.tobytes(), np.ascontiguousarray(image).tobytes()))

  def decode(self, data: bytes) -> dict[str, np.ndarray]:
    """The record; its image is a read-only view of `data` (no copy)."""
    if len(data) != self.size or data[:4] != _MAGIC:
      raise errors.UserError(f"not a record of this conversion: {len(data)} bytes starting "
                             f"{bytes(data[:4])!r}; expected {self.size} bytes starting {_MAGIC!r}")
    _, index, group = _HEADER.unpack_from(data)
    if self.label_shape:
      label = np.frombuffer(data, _LABEL_DTYPE, self._num_labels, _HEADER.size)
      label = label.astype(np.int32).reshape(self.label_shape)
    else:
      label = np.int32(_LABEL.unpack_from(data, _HEADER.size)[0])
    image = np.frombuffer(data, np.uint8, offset=self._image_offset).reshape(self.image_shape)
    return {"image": image, "label": label, "group": np.int64(group), "index": np.int64(index)}


def record_hash(data: bytes) -> int:
  return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


# ----------------------------------------------------------------------------- metadata


def shard_names(split: str, num_records: int, records_per_shard: int) -> list[str]:
  n = math.ceil(num_records / records_per_shard)
  return [f"{split}-{i:05d}-of-{n:05d}.array_record" for i in range(n)]


def _meta_npz(split: str) -> str:
  return f"{split}-meta.npz"


def _describe(source) -> dict:
  """What every split of a conversion shares, as JSON values."""
  return {"name": source.name, "class_names": list(source.class_names),
          "num_classes": int(source.num_classes), "multi_label": bool(source.multi_label),
          "image_shape": [int(d) for d in source.image_shape],
          "label_shape": [int(d) for d in np.shape(source.labels)[1:]]}


def _plan(source_by_split: Mapping[str, Any], records_per_shard: int | None,
          writer_options: str) -> dict:
  """metadata.json's content for these sources (with "complete": False)."""
  if not source_by_split:
    raise errors.UserError("source_by_split is empty: nothing to convert")
  (first_split, first), *_ = source_by_split.items()
  meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **_describe(first),
          "writer_options": writer_options}
  image_shape, label_shape = meta["image_shape"], meta["label_shape"]
  if records_per_shard is None:
    records_per_shard = max(1, TARGET_SHARD_BYTES // RecordCodec(image_shape, label_shape).size)
  if records_per_shard < 1:
    raise errors.UserError(f"records_per_shard must be >= 1, got {records_per_shard}")
  meta["records_per_shard"] = int(records_per_shard)
  meta["splits"] = {}
  for split, source in source_by_split.items():
    if not _SPLIT_NAME.fullmatch(split):
      raise errors.UserError(f"split name {split!r} must match {_SPLIT_NAME.pattern} (file names)")
    for key, value in _describe(source).items():
      if value != meta[key]:
        raise errors.UserError(f"split {split!r} has {key}={value!r} but split {first_split!r} has "
                               f"{meta[key]!r}; the splits of one conversion must agree")
    if not len(source):
      raise errors.UserError(f"split {split!r} has no records")
    meta["splits"][split] = {
        "num_records": len(source), "meta": _meta_npz(split),
        "has_group_names": getattr(source, "group_names", None) is not None,
        "shards": shard_names(split, len(source), records_per_shard)}
  meta["complete"] = False
  return meta


def read_metadata(directory: str | os.PathLike[str]) -> dict:
  """metadata.json of a conversion; FileNotFoundError/ValueError say what is missing."""
  directory = paths.path(directory)
  if not directory.is_dir():
    parent = directory.parent
    near = sorted(p.name for p in parent.iterdir())[:20] if parent.is_dir() else []
    raise errors.UserFileNotFoundError(f"ArrayRecord directory {directory} does not exist"
                                       + (f"; {parent} has: {', '.join(near)}" if near else ""))
  path = directory / METADATA
  if not path.is_file():
    found = sorted(p.name for p in directory.iterdir())[:20]
    raise errors.UserFileNotFoundError(f"{path} does not exist, so {directory} holds no conversion "
                                       f"(it has: {', '.join(found) or 'nothing'}); "
                                       f"create one with array_record.convert")
  meta = json.loads(path.read_text())
  if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
    raise errors.UserError(f"{path} is format {meta.get('format')!r} version "
                           f"{meta.get('format_version')!r}; this code reads {FORMAT!r} version "
                           f"{FORMAT_VERSION}")
  return meta


def _write_atomically(path: paths.Path, write) -> None:
  """`write(tmp)` to a local file, then renamed over `path`; into a bucket, the local file is
  uploaded (an object appears only once its upload completes)."""
  if paths.is_remote(path):
    with tempfile.TemporaryDirectory() as local_dir:
      tmp = paths.path(local_dir) / path.name
      write(tmp)
      with tmp.open("rb") as src, path.open("wb") as dst:
        shutil.copyfileobj(src, dst, _COPY_CHUNK)
    return
  tmp = path.with_name(path.name + ".tmp")
  write(tmp)
  os.replace(tmp, path)


def _write_metadata(directory: paths.Path, meta: dict) -> None:
  _write_atomically(directory / METADATA,
                    lambda tmp: tmp.write_text(json.dumps(meta, indent=1) + "\n"))


def _claim(directory: paths.Path, plan: dict) -> None:
  """Makes `directory` this conversion's: new, empty, or an earlier run of the same one."""
  directory.mkdir(parents=True, exist_ok=True)
  if (directory / METADATA).is_file():
    there = read_metadata(directory)
    differ = [k for k in sorted(set(plan) | set(there))
              if k != "complete" and plan.get(k) != there.get(k)]
    if differ:
      detail = "; ".join(f"{k}: {_short(there.get(k))} there, {_short(plan.get(k))} now"
                         for k in differ)
      raise errors.UserError(f"{directory} holds a different conversion ({detail}). Delete it or "
                             f"choose another output directory.")
  else:
    # A bucket "folder" with nothing in it does not exist; a local one was just made.
    found = sorted(p.name for p in directory.iterdir()) if directory.exists() else []
    if found:
      raise errors.UserError(f"{directory} is not empty and holds no conversion (no {METADATA}): "
                             f"{', '.join(found[:10])}{' ...' if len(found) > 10 else ''}. "
                             f"Choose an empty or new directory.")
    _write_metadata(directory, plan)  # marks the directory as ours before any shard
  for split in plan["splits"].values():  # temp files of an interrupted run
    for name in split["shards"] + [split["meta"]]:
      (directory / (name + ".tmp")).unlink(missing_ok=True)


def _short(value, limit: int = 120) -> str:
  text = json.dumps(value)
  return text if len(text) <= limit else text[:limit] + "..."


# ----------------------------------------------------------------------------- convert


class _Progress:
  """A line on stderr every few seconds: images done, images/s and ETA."""

  def __init__(self, total: int, enabled: bool, every_s: float = 2.0):
    self.total, self.enabled, self.every_s = total, enabled, every_s
    self.done = 0
    self.start = self.last = time.perf_counter()

  def update(self, n: int, what: str, force: bool = False) -> None:
    self.done += n
    now = time.perf_counter()
    if not self.enabled or (now - self.last < self.every_s and not force):
      return
    self.last = now
    rate = self.done / max(now - self.start, 1e-9)
    eta = (self.total - self.done) / rate if rate else float("inf")
    print(f"array_record convert: {what} {self.done}/{self.total} images "
          f"({100 * self.done / self.total:.0f}%), {rate:.0f} images/s, ETA {eta:.0f}s",
          file=sys.stderr, flush=True)


def _shard_problem(path: paths.Path, expected: np.ndarray) -> str | None:
  """Why the shard at `path` does not hold records with hashes `expected`; None if it does."""
  try:
    reader = array_record_module.ArrayRecordReader(str(path))
  except Exception as e:  # pylint: disable=broad-except  # the C++ binding raises various types
    return f"cannot open it ({type(e).__name__}: {e})"
  problem = None
  try:
    if reader.num_records() != len(expected):
      problem = f"it has {reader.num_records()} records, expected {len(expected)}"
    for start in range(0, len(expected) if problem is None else 0, _READ_CHUNK):
      stop = min(start + _READ_CHUNK, len(expected))
      bad = [i for i, data in enumerate(reader.read(start, stop), start)
             if record_hash(data) != expected[i]]
      if bad:
        problem = f"record {bad[0]} of the shard differs from the converted one"
        break
  except Exception as e:  # pylint: disable=broad-except  # Riegeli checksum errors etc.
    problem = f"cannot read it ({type(e).__name__}: {e})"
  try:
    reader.close()
  except Exception as e:  # pylint: disable=broad-except  # a damaged footer fails on close
    problem = problem or f"cannot close it ({type(e).__name__}: {e})"
  return problem


def _write_shard(path: paths.Path, records: Iterable[bytes], options: str) -> None:
  def write(tmp: paths.Path) -> None:
    writer = array_record_module.ArrayRecordWriter(str(tmp), options)
    for data in records:
      writer.write(data)
    ok = writer.ok()
    writer.close()
    if not ok:
      raise OSError(f"writing {tmp} failed")
  _write_atomically(path, write)


def _convert_split(source, split: str, plan: dict, directory: paths.Path,
                   progress: _Progress, written: list, kept: list) -> None:
  info = plan["splits"][split]
  codec = RecordCodec(plan["image_shape"], plan["label_shape"])
  n, per_shard = info["num_records"], plan["records_per_shard"]
  labels = np.empty((n,) + codec.label_shape, np.int32)
  groups = np.empty(n, np.int64)
  hashes = np.empty(n, np.uint64)
  for k, name in enumerate(info["shards"]):
    lo, hi = k * per_shard, min((k + 1) * per_shard, n)
    # Every record is read from the source on every run: its hash decides whether a shard
    # already on disk is right, and labels/groups come from the same records.
    encoded = []
    for i in range(lo, hi):
      record = source[i]
      encoded.append(codec.encode(record))
      labels[i], groups[i], hashes[i] = record["label"], record["group"], record_hash(encoded[-1])
    path = directory / name
    if path.exists():
      problem = _shard_problem(path, hashes[lo:hi])
      if problem is None:
        kept.append(name)
        progress.update(hi - lo, f"{split} (kept {name})")
        continue
      logging.warning("%s does not match the source (%s); writing it again", path, problem)
    _write_shard(path, encoded, plan["writer_options"])
    problem = _shard_problem(path, hashes[lo:hi])  # read back every record just written
    if problem is not None:
      raise VerificationError(f"{path} was just written but {problem}")
    written.append(name)
    progress.update(hi - lo, split)
  arrays = {"labels": labels, "groups": groups, "hashes": hashes}
  group_names = getattr(source, "group_names", None)
  if group_names is not None:
    arrays["group_names"] = np.asarray(group_names, dtype=str)
  _write_atomically(directory / info["meta"], lambda tmp: _save_npz(tmp, arrays))


def _save_npz(path: paths.Path, arrays: dict[str, np.ndarray]) -> None:
  with path.open("wb") as f:  # a file object: np.savez would append ".npz" to a name
    np.savez(f, **arrays)


def _load_npz(path: paths.Path):
  return np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)


def convert(source_by_split: Mapping[str, Any], out_dir: str | os.PathLike[str], *,
            records_per_shard: int | None = None,
            writer_options: str = DEFAULT_WRITER_OPTIONS,
            progress: bool = True) -> ConvertResult:
  """Writes every split's records as ArrayRecord shards, then verifies them.

  Resumable: shards are written under a temporary name and renamed when complete, so an
  interrupted run leaves only whole shards; a rerun keeps each shard that already holds
  exactly the source's records and writes the others. Every shard, kept or written, is read
  back record by record and compared with the source (by hash).

  Args:
    source_by_split: split name -> source (the protocol of sources.py); all splits must
      share name, classes and image shape.
    out_dir: a new or empty directory, or one holding an earlier run of this conversion.
    records_per_shard: records per shard file; None aims at about 128 MiB per shard.
    writer_options: ArrayRecordWriter options (e.g. "group_size:1,uncompressed").
    progress: print images/s and ETA to stderr every few seconds.

  Returns:
    The shard names written and kept, and the metadata.

  Raises:
    ValueError: out_dir holds something else, or the sources disagree or break the protocol.
    VerificationError: a shard read back differs from what was written.
  """
  directory = paths.path(out_dir)
  plan = _plan(source_by_split, records_per_shard, writer_options)
  _claim(directory, plan)
  total = sum(s["num_records"] for s in plan["splits"].values())
  bar = _Progress(total, progress)
  written, kept = [], []
  for split, source in source_by_split.items():
    _convert_split(source, split, plan, directory, bar, written, kept)
  bar.update(0, "done,", force=True)
  plan["complete"] = True
  _write_metadata(directory, plan)
  logging.info("converted %d records to %s: %d shards written, %d kept", total, directory,
               len(written), len(kept))
  return ConvertResult(directory, plan, tuple(written), tuple(kept))


def verify(directory: str | os.PathLike[str], splits: Iterable[str] | None = None) -> int:
  """Reads every record of a conversion and checks it against its stored hash.

  Returns:
    The number of records checked.

  Raises:
    VerificationError: naming each shard that is missing, truncated, corrupt or swapped.
  """
  directory = paths.path(directory)
  meta = read_metadata(directory)
  problems, checked = [], 0
  for split in splits or meta["splits"]:
    info = _split_info(meta, split, directory)
    with _load_npz(directory / info["meta"]) as arrays:
      hashes = arrays["hashes"]
    per_shard = meta["records_per_shard"]
    for k, name in enumerate(info["shards"]):
      path = directory / name
      expected = hashes[k * per_shard:(k + 1) * per_shard]
      problem = _shard_problem(path, expected) if path.is_file() else "it is missing"
      if problem:
        problems.append(f"{path}: {problem}")
      checked += len(expected)
  if problems:
    raise VerificationError(f"{len(problems)} bad shard(s) in {directory}: "
                            + "; ".join(problems)
                            + ". Rerun convert with the same sources to rewrite them.")
  return checked


def _split_info(meta: dict, split: str, directory: paths.Path) -> dict:
  if split not in meta["splits"]:
    raise errors.UserError(f"{directory} has no split {split!r}; it has: "
                           f"{', '.join(meta['splits'])}")
  return meta["splits"][split]


# ----------------------------------------------------------------------------- reader


class ArrayRecordSource:
  """One split of a conversion, read record by record from its shards (images stay on disk).

  Attributes:
    labels: (N,) int32, or (N, L) for multi-label; groups: (N,) int64.
    group_names: patient/study ids (group_names[groups[i]]); only when the converted source
      had them, and then has_groups is True.
    name, split, num_classes, class_names, multi_label, image_shape, directory, metadata,
    shard_paths.
  """

  def __init__(self, directory: str | os.PathLike[str], split: str):
    self.directory = paths.path(directory)
    self.split = split
    self.metadata = meta = read_metadata(self.directory)
    info = _split_info(meta, split, self.directory)
    if not meta["complete"]:
      raise errors.UserError(f"the conversion in {self.directory} is incomplete (interrupted?); "
                             f"rerun convert with the same sources to finish it")
    missing = [s for s in info["shards"] + [info["meta"]] if not (self.directory / s).is_file()]
    if missing:
      raise errors.UserFileNotFoundError(f"{self.directory} lacks {', '.join(missing)} of split {split!r}")
    self.name = meta["name"]
    self.num_classes = meta["num_classes"]
    self.class_names = tuple(meta["class_names"])
    self.multi_label = meta["multi_label"]
    self.image_shape = tuple(meta["image_shape"])
    self._codec = RecordCodec(meta["image_shape"], meta["label_shape"])
    with _load_npz(self.directory / info["meta"]) as arrays:
      self.labels, self.groups = arrays["labels"], arrays["groups"]
      self.has_groups = "group_names" in arrays.files
      if self.has_groups:
        self.group_names = tuple(arrays["group_names"].tolist())
    self.shard_paths = tuple(str(self.directory / name) for name in info["shards"])
    self._per_shard = meta["records_per_shard"]
    self._open()

  def _open(self) -> None:
    for array in (self.labels, self.groups):
      array.flags.writeable = False  # records are views: guard against edits
    self._readers = [None] * len(self.shard_paths)  # opened on first read
    self._lock = threading.Lock()

  def _reader(self, shard: int):
    reader = self._readers[shard]
    if reader is None:
      with self._lock:  # grain reads from several threads
        reader = self._readers[shard]
        if reader is None:
          reader = self._readers[shard] = array_record_module.ArrayRecordReader(
              self.shard_paths[shard], _RANDOM_ACCESS, file_reader_buffer_size=32768)
    return reader

  def __len__(self) -> int:
    return len(self.labels)

  def _locate(self, index) -> tuple[int, int]:
    """(shard, position in it) of a record index; negative indices count from the end."""
    return divmod(in_memory.record_index(index, len(self.labels), self), self._per_shard)

  def __getitem__(self, index) -> dict[str, np.ndarray]:
    shard, position = self._locate(index)
    # A range read: 2-4x faster than read([position]), which grain's ArrayRecordDataSource
    # uses, for small records. Both are const C++ reads, safe from several threads at once.
    return self._codec.decode(self._reader(shard).read(position, position + 1)[0])

  def __getitems__(self, indices) -> list[dict[str, np.ndarray]]:
    """Many records at once: one parallel read per shard touched."""
    located = [self._locate(i) for i in indices]
    by_shard = {}
    for k, (shard, position) in enumerate(located):
      by_shard.setdefault(shard, []).append((position, k))
    out = [None] * len(located)
    for shard, items in by_shard.items():
      datas = self._reader(shard).read([position for position, _ in items])
      for (_, k), data in zip(items, datas):
        out[k] = self._codec.decode(data)
    return out

  def close(self) -> None:
    for reader in self._readers:
      if reader is not None:
        reader.close()
    self._readers = [None] * len(self.shard_paths)

  # Grain worker processes receive the source pickled: open readers and locks cannot travel;
  # each process reopens the shards it reads.
  def __getstate__(self):
    state = self.__dict__.copy()
    del state["_readers"], state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._open()

  def __repr__(self) -> str:
    return (f"ArrayRecordSource(name={self.name!r}, split={self.split!r}, size={len(self)}, "
            f"directory={str(self.directory)!r})")

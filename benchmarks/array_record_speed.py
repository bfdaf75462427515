"""Per-image read speed: original files vs an ArrayRecord conversion, alone and through grain.

  python benchmarks/array_record_speed.py [--data=nih_cxr1000,pneumoniamnist] \
      [--data_dir=../shared/data] [--split=train] [--n_reads=2000] [--batch=64] [--out=DIR]

For each data set, converts one split with array_record.convert (into --out, or a temporary
directory removed afterwards), then prints images/s for:
  original       nih_cxr1000 (a CSV manifest): decode.decode_image on each PNG file, in
                 shuffled order. MedMNIST: loading the split from its .npz (all of it at
                 once; there is no per-image file), per image of the split.
  in memory      source[i] on the opened source (its images decoded into memory already).
  array_record   ArrayRecordSource[i] in shuffled order, one process, one thread.
  grain map      grain.MapDataset.source(src).shuffle(seed).repeat().batch(B), iterated.
  grain iter     the same through to_iter_dataset with 4 read threads (pipeline.make_iterator).
  (both grain rows again over the in-memory source: what grain itself costs per image)
The shards were just written, so they are in the page cache: the figures are CPU costs
(read, decode, copy), not disk speed. --n_reads images are read per measurement; each
figure is the best of 3 runs, since other processes on the machine only slow runs down.
"""
from __future__ import annotations

import argparse
import itertools
import pathlib
import shlex
import sys
import tempfile
import time

import grain
import numpy as np

from medssl_jax.data import array_record
from medssl_jax.data import catalog
from medssl_jax.data import decode
from medssl_jax.data import manifest

_DEFAULT_DATA_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
_REPEATS = 3


def _open(name: str, split: str, data_dir: pathlib.Path, image_size: int | None):
  if name == manifest.NIH_CXR1000:
    return manifest.open_nih_cxr1000(split, data_dir, image_size=image_size)
  medmnist = data_dir / "medmnist"  # the shared layout; else the npz files are in data_dir
  return catalog.open_source(name, split, data_dir=medmnist if medmnist.is_dir() else data_dir)


def _original_rate(name: str, source, data_dir, image_size, order) -> tuple[float, str]:
  """images/s reading from the files the source was made from."""
  if isinstance(source, manifest.CSVManifestSource):
    decode_one = lambda i: decode.decode_image(source.paths[i], image_size,  # noqa: E731
                                               source.image_shape[-1])
    return _rate(decode_one, order), "decode PNG per image"
  return (_best_rate(lambda: _open(name, source.split, data_dir, image_size), len(source)),
          "load split from .npz")


def _best_rate(run, images: int) -> float:
  """images/s of the fastest of _REPEATS runs: other processes only ever slow a run down."""
  best = float("inf")
  for _ in range(_REPEATS):
    start = time.perf_counter()
    run()
    best = min(best, time.perf_counter() - start)
  return images / best


def _rate(read, order) -> float:
  def run():
    for i in order:
      read(i)
  return _best_rate(run, len(order))


def _grain_rates(source, n_reads: int, batch: int) -> tuple[float, float]:
  steps = -(-n_reads // batch)
  dataset = grain.MapDataset.source(source).shuffle(seed=0).repeat().batch(batch)
  threaded = dataset.to_iter_dataset(grain.ReadOptions(num_threads=4, prefetch_buffer_size=8))

  def consume(iterable):
    return lambda: all(True for _ in itertools.islice(iterable, steps))
  return (_best_rate(consume(dataset), steps * batch),
          _best_rate(consume(threaded), steps * batch))


def _size_mb(directory: pathlib.Path) -> float:
  return sum(p.stat().st_size for p in directory.iterdir()) / 1e6


def benchmark(name: str, args, out: pathlib.Path) -> None:
  start = time.perf_counter()
  source = _open(name, args.split, args.data_dir, args.image_size)
  opened_s = time.perf_counter() - start
  start = time.perf_counter()
  array_record.convert({args.split: source}, out, records_per_shard=args.records_per_shard,
                       writer_options=args.writer_options, progress=False)
  convert_s = time.perf_counter() - start
  converted = array_record.ArrayRecordSource(out, args.split)
  order = np.random.default_rng(0).choice(len(source), args.n_reads,
                                          replace=args.n_reads > len(source))
  original, how = _original_rate(name, source, args.data_dir, args.image_size, order)
  rows = [(f"original ({how})", original),
          ("in memory: source[i]", _rate(source.__getitem__, order)),
          ("array_record: ArrayRecordSource[i]", _rate(converted.__getitem__, order))]
  mapped, threaded = _grain_rates(converted, args.n_reads, args.batch)
  rows += [(f"grain MapDataset shuffle+batch({args.batch})", mapped),
           ("grain to_iter_dataset, 4 threads", threaded)]
  mapped, threaded = _grain_rates(source, args.n_reads, args.batch)
  rows += [("  same, in-memory source (grain's own cost)", mapped),
           ("  same, in-memory source, 4 threads", threaded)]
  print(f"\n{name} {args.split}: {len(source)} images of {source.image_shape}; opened in "
        f"{opened_s:.2f} s; converted in {convert_s:.2f} s "
        f"({len(source) / convert_s:.0f} images/s, incl. verification) to "
        f"{len(converted.shard_paths)} shard(s), {_size_mb(out):.2f} MB "
        f"(writer options {args.writer_options!r})")
  print(f"  {'read path':<46} {'images/s':>10} {'us/image':>9}")
  for label, rate in rows:
    print(f"  {label:<46} {rate:10.0f} {1e6 / rate:9.1f}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data", default="nih_cxr1000,pneumoniamnist",
                      help="comma-separated data sets (nih_cxr1000 or a MedMNIST name)")
  parser.add_argument("--data_dir", type=pathlib.Path, default=_DEFAULT_DATA_DIR,
                      help="holds nih_cxr1000/ and medmnist/ (or the .npz files themselves)")
  parser.add_argument("--split", default="train")
  parser.add_argument("--n_reads", type=int, default=2000, help="images read per measurement")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--image_size", type=int, default=None,
                      help="resize manifest images (nih_cxr1000 is stored at 64 px)")
  parser.add_argument("--records_per_shard", type=int, default=None)
  parser.add_argument("--writer_options", default=array_record.DEFAULT_WRITER_OPTIONS)
  parser.add_argument("--out", type=pathlib.Path, default=None,
                      help="keep the conversions in OUT/<data set> (default: a temp dir)")
  args = parser.parse_args()
  print("command: " + shlex.join(["python"] + sys.argv))
  with tempfile.TemporaryDirectory(prefix="array_record_speed_") as tmp:
    for name in args.data.split(","):
      benchmark(name, args, (args.out or pathlib.Path(tmp)) / name)


if __name__ == "__main__":
  main()

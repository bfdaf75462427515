"""Host pipeline headroom: images/s per host CPU core that the real grain pipeline delivers.

  python benchmarks/pipeline_speed.py [--medmnist_dir=../shared/data/medmnist] \
      [--array_record=/tmp/nih_shards_320,...] \
      [--csv=../shared/data/nih_cxr1000/index.csv --csv_path_column=relpath \
       --csv_split=split,train,valid,test --csv_image_size=320] \
      [--workers=0,1,2] [--batch=256] [--batches=20] [--warmup=3] [--min_seconds=3] \
      [--cores=16] [--target=8000] [--json=OUT.json]

Each source is opened through data/catalog (as training opens it) and read through
loop/pretrain.make_data_iterator (seeded shuffle, same-image pairs, batches of --batch, grain
read threads, --workers worker processes), exactly the iterator training uses, without the
device. After --warmup untimed batches (worker start-up), --batches batches (and more until
--min_seconds have passed) are timed.

"per core" is images / CPU seconds: the user + system time this process and its grain
workers spent while the timed batches were read (psutil), so it does not depend on how many
cores were free on a shared machine, unlike images/s of wall time (printed too). A host
with C cores can feed about C x that, if nothing else runs there; the verdict uses
--cores and --target (16 cores, 8,000 images/s by default). A CSV source decodes its image
files once, when opened (timed separately); batches are then read from memory.

Sources: --medmnist_dir (pneumoniamnist, 28 px arrays in one .npz), each --array_record
directory (shards written by medssl-convert), and --csv (a CSV of image files).
"""
from __future__ import annotations

import dataclasses
import json
import time

import psutil
from absl import app
from absl import flags

from medssl_jax.data import catalog
from medssl_jax.loop import defaults
from medssl_jax.loop import pretrain


@dataclasses.dataclass
class Speed:
  source: str
  image_shape: tuple
  workers: int
  images: int  # read in the timed window
  images_per_s: float
  cpu_s: float
  images_per_cpu_s: float  # "per core"
  open_s: float


def data_sections(medmnist_dir="", array_record=(), csv="", csv_path_column="path",
                  csv_split=(), csv_image_size=0) -> list[tuple[str, dict]]:
  """(label, data.* keys) of each source asked for."""
  sections = []
  if medmnist_dir:
    sections.append(("pneumoniamnist arrays", {"name": "pneumoniamnist", "dir": medmnist_dir}))
  for directory in array_record:
    sections.append((f"ArrayRecord {directory}", {"name": "array_record", "dir": directory}))
  if csv:
    sections.append((f"CSV {csv}", {
        "name": "csv", "image_size": csv_image_size,
        "manifest": {"csv": csv, "path_column": csv_path_column, **_split_keys(csv_split)}}))
  return sections


def _split_keys(split: list[str]) -> dict:
  if not split:
    return {}
  return {"split_column": split[0], "split_values": tuple(split[1:])}


def pipeline_config(data_keys: dict, batch: int, workers: int):
  config = defaults.pretraining()
  config.data.update(data_keys)
  config.batch_size, config.data.num_workers = batch, workers
  return config


def cpu_seconds(process: psutil.Process) -> float:
  """User + system CPU time of `process` and its live descendants (grain workers)."""
  total = 0.0
  for p in [process] + process.children(recursive=True):
    try:
      times = p.cpu_times()
      total += times.user + times.system
    except psutil.NoSuchProcess:
      pass
  return total


def measure(config, source, label: str, open_s: float, batches: int, warmup: int,
            min_seconds: float = 0.0) -> Speed:
  iterator = pretrain.make_data_iterator(config, source)
  try:
    for _ in range(warmup):
      next(iterator)
    process = psutil.Process()
    cpu_start, start = cpu_seconds(process), time.perf_counter()
    read = 0
    while read < batches or time.perf_counter() - start < min_seconds:
      batch = next(iterator)
      assert batch["view1"].shape[0] == config.batch_size, batch["view1"].shape
      read += 1
    wall, cpu = time.perf_counter() - start, cpu_seconds(process) - cpu_start
  finally:
    if hasattr(iterator, "close"):
      iterator.close()
  images = read * config.batch_size
  return Speed(label, tuple(source.image_shape), config.data.num_workers, images, images / wall,
               cpu, images / max(cpu, 1e-9), open_s)


def markdown(speeds: list[Speed], cores: int, target: float) -> str:
  lines = [f"| source | image | workers | images/s (wall) | CPU s | images/s per core | "
           f"{cores} cores x per core | feeds {target:,.0f}/s? |",
           "|---|---|---:|---:|---:|---:|---:|---|"]
  for s in speeds:
    host = cores * s.images_per_cpu_s
    lines.append(f"| {s.source} | {'x'.join(map(str, s.image_shape))} | {s.workers} | "
                 f"{s.images_per_s:,.0f} | {s.cpu_s:.2f} | {s.images_per_cpu_s:,.0f} | {host:,.0f} | "
                 f"{'yes' if host >= target else 'NO'} |")
  opened = {s.source: s.open_s for s in speeds}
  lines.append("")
  lines += [f"Opening {name}: {seconds:.1f} s." for name, seconds in opened.items()]
  return "\n".join(lines)


def run(sections, workers, batch, batches, warmup, min_seconds, *, cores=16, target=8000.0,
        log=print) -> list[Speed]:
  speeds = []
  for label, keys in sections:
    start = time.perf_counter()
    source = catalog.open_data(pipeline_config(keys, batch, 0).data, "train")
    open_s = time.perf_counter() - start
    for count in workers:
      config = pipeline_config(keys, batch, count)
      speeds.append(measure(config, source, label, open_s, batches, warmup, min_seconds))
      log(markdown(speeds[-1:], cores, target).splitlines()[-3])
  return speeds


def main(argv):
  del argv
  f = flags.FLAGS
  sections = data_sections(f.medmnist_dir, f.array_record, f.csv, f.csv_path_column, f.csv_split,
                           f.csv_image_size)
  speeds = run(sections, [int(w) for w in f.workers], f.batch, f.batches, f.warmup, f.min_seconds,
               cores=f.cores, target=f.target)
  print()
  print(markdown(speeds, f.cores, f.target))
  if f.json:
    with open(f.json, "w") as out:
      json.dump([dataclasses.asdict(s) for s in speeds], out, indent=1)


def define_flags():
  """Only when run as a script, so that importing this module defines no flags."""
  flags.DEFINE_string("medmnist_dir", "../shared/data/medmnist",
                      "Folder of pneumoniamnist.npz; '' to leave it out.")
  flags.DEFINE_list("array_record", [], "Shard directories written by medssl-convert.")
  flags.DEFINE_string("csv", "", "A CSV manifest of image files; '' to leave it out.")
  flags.DEFINE_string("csv_path_column", "path", "Its column of file paths.")
  flags.DEFINE_list("csv_split", [], "Its split column and that column's values for train, val, "
                    "test (split,train,valid,test); empty: no split column.")
  flags.DEFINE_integer("csv_image_size", 0, "Decode its files to this size; 0 = as stored.")
  flags.DEFINE_list("workers", ["0", "1", "2"], "grain worker processes to try.")
  flags.DEFINE_integer("batch", 256, "Images per batch.")
  flags.DEFINE_integer("batches", 20, "Timed batches per measurement.")
  flags.DEFINE_integer("warmup", 3, "Untimed batches first.")
  flags.DEFINE_float("min_seconds", 3.0, "Read on past --batches until this much wall time has "
                     "passed (CPU time is counted in 10 ms ticks).")
  flags.DEFINE_integer("cores", 16, "Host cores of the verdict.")
  flags.DEFINE_float("target", 8000.0, "Images/s the host must feed, for the verdict.")
  flags.DEFINE_string("json", "", "Also write the figures to this JSON file.")


if __name__ == "__main__":
  define_flags()
  app.run(main)

"""Peak memory of frozen-feature extraction and of the blocked kNN probe, at two sizes each.

  python benchmarks/eval_memory.py [--feature_sizes=4000,16000] [--knn_sizes=20000,80000] \
      [--knn_dim=512] [--knn_queries=0.1] [--k=20] [--width=0.0625] [--batch=256] \
      [--warmup_batches=16]

(about two minutes on 2 CPU cores with the defaults.)

Each (job, size) runs in a fresh subprocess, so one measurement's high-water mark cannot
hide the next one's. In the child: build the inputs, run the job once on a small input
with the same block shapes (so compilation, and for extraction the first batches' growth
of the allocator's pools, is not counted), reset the high-water mark
(`echo 5 > /proc/self/clear_refs`, which also resets getrusage's ru_maxrss), then time
the real call and read ru_maxrss; tracemalloc gives the Python heap's peak during the
call (numpy buffers included, XLA's own buffers not).

  features: medssl_jax.evaluation.features.extract_features with a ResNet-18 backbone
    (random init, --width) over N random 28x28x1 uint8 images in memory.
  knn: medssl_jax.evaluation.knn.knn_scores over a bank of N random --knn_dim float32
    features (10 classes) and N * --knn_queries queries.

Columns: input (the arrays the call reads, made before it), output (the returned array),
copy (what the call puts on the device for its whole duration: kNN's padded bank and
one-hot labels, a host copy on a CPU backend; nothing for extraction, which streams
batches), RSS before the call, peak RSS during it, added = peak - before, beyond = added -
output - copy (the call's working memory), and the Python heap's peak. The growth lines
split the growth of `added` between the two sizes into output, copy and beyond: what must
stay flat is `beyond`.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import pathlib
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

_MB = 2.0 ** 20
_REPO = pathlib.Path(__file__).resolve().parents[1]


def _rss_mb(field: str = "VmRSS") -> float:
  with open("/proc/self/status", encoding="ascii") as status:
    for line in status:
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024 / _MB
  raise RuntimeError(f"{field} missing from /proc/self/status")


def _reset_peak() -> bool:
  """Resets the kernel's RSS high-water mark; False where the kernel does not allow it."""
  try:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
      clear_refs.write("5")
    return True
  except OSError:
    return False


def _measure(call) -> dict:
  """Runs call() once with the high-water mark reset; returns the memory figures."""
  gc.collect()
  reset = _reset_peak()
  before = _rss_mb()
  tracemalloc.start()
  start = time.perf_counter()
  output = call()
  seconds = time.perf_counter() - start
  _, heap_peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / _MB  # KiB on Linux.
  return {"rss_before_mb": before, "peak_rss_mb": peak, "heap_peak_mb": heap_peak / _MB,
          "output_mb": output.nbytes / _MB, "seconds": seconds, "peak_was_reset": reset}


# --------------------------------------------------------------------------
# The two jobs, each run inside a child process.


def _feature_job(size: int, args) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top

  from medssl_jax.data import in_memory  # pylint: disable=g-import-not-at-top
  from medssl_jax.evaluation import features  # pylint: disable=g-import-not-at-top
  from medssl_jax.models import encoder  # pylint: disable=g-import-not-at-top

  class RandomImages(in_memory.InMemoryRecords):
    def __init__(self, n: int):
      rng = np.random.default_rng(n)
      self.images = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
      self.labels = np.zeros(n, np.int64)
      self.groups = np.arange(n, dtype=np.int64)

  model = ml_collections.ConfigDict({"name": "resnet18", "width": args.width,
                                     "small_stem": True, "dtype": "float32"})
  backbone = encoder.create_backbone(model)
  variables = backbone.init(jax.random.PRNGKey(0), jnp.zeros((2, 28, 28, 1)), train=False)
  apply_fn = features.backbone_output(backbone)

  def run(source):
    return features.extract_features(apply_fn, variables, source, image_size=28,
                                     batch_size=args.batch)

  # Compiles the one batch shape every call uses, and runs enough batches for the
  # allocator and XLA's thread pool to reach their steady state (about 50 MB on CPU).
  run(RandomImages(args.warmup_batches * args.batch))
  source = RandomImages(size)
  result = _measure(lambda: run(source))
  result["input_mb"] = source.images.nbytes / _MB
  result["copy_mb"] = 0.0  # Images go to the device one batch at a time.
  return result


def _knn_job(size: int, args) -> dict:
  from medssl_jax.evaluation import knn  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(size)
  bank = rng.standard_normal((size, args.knn_dim), dtype=np.float32)
  labels = rng.integers(0, 10, size=size)
  queries = rng.standard_normal((max(1, int(size * args.knn_queries)), args.knn_dim),
                                dtype=np.float32)
  blocks = {"query_block": 1024, "bank_block": 8192}
  # Full-size blocks on a small input: the same compiled shapes as the real call.
  warm = min(size, blocks["bank_block"])
  knn.knn_scores(bank[:warm], labels[:warm], queries[:blocks["query_block"]], k=args.k,
                 num_classes=10, **blocks)
  result = _measure(lambda: knn.knn_scores(bank, labels, queries, k=args.k,
                                           num_classes=10, **blocks))
  result["input_mb"] = (bank.nbytes + labels.nbytes + queries.nbytes) / _MB
  # The bank, padded to whole blocks, goes to the device once, and so do its one-hot
  # labels (built on the host first): on a CPU backend both are host memory.
  padded = -(-size // blocks["bank_block"]) * blocks["bank_block"]
  result["copy_mb"] = (padded * args.knn_dim * 4 + 2 * size * 10 * 4) / _MB
  return result


_JOBS = {"features": _feature_job, "knn": _knn_job}


# --------------------------------------------------------------------------
# The parent: one child per measurement, then the table.


def _run_child(job: str, size: int, argv: list[str]) -> dict:
  command = [sys.executable, __file__, f"--child={job}:{size}"] + argv
  # The repository on the path, so the child imports medssl_jax even when not installed.
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      p for p in (str(_REPO), os.environ.get("PYTHONPATH")) if p))
  done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
  if done.returncode:
    sys.exit(f"{job} at size {size} failed:\n{done.stderr[-3000:]}")
  result = json.loads(done.stdout.strip().splitlines()[-1])
  result.update(job=job, size=size)
  result["added_mb"] = result["peak_rss_mb"] - result["rss_before_mb"]
  result["beyond_mb"] = result["added_mb"] - result["output_mb"] - result["copy_mb"]
  return result


_COLUMNS = (("size", "{:>7d}"), ("input_mb", "{:>9.1f}"), ("output_mb", "{:>9.1f}"),
            ("copy_mb", "{:>9.1f}"),
            ("rss_before_mb", "{:>10.1f}"), ("peak_rss_mb", "{:>9.1f}"),
            ("added_mb", "{:>9.1f}"), ("beyond_mb", "{:>9.1f}"),
            ("heap_peak_mb", "{:>9.1f}"), ("seconds", "{:>7.1f}"))
_HEADER = ("size", "input MB", "output MB", "copy MB", "before MB", "peak MB", "added MB",
           "beyond MB", "heap MB", "s")


def _print_table(results: list[dict]) -> None:
  widths = [len(fmt.format(0)) for _, fmt in _COLUMNS]
  print(f"{'job':<9}" + " ".join(f"{h:>{w}}" for h, w in zip(_HEADER, widths)))
  for r in results:
    print(f"{r['job']:<9}" + " ".join(fmt.format(r[key]) for key, fmt in _COLUMNS))
  print()
  for job in _JOBS:
    rows = [r for r in results if r["job"] == job]
    for small, large in zip(rows, rows[1:]):
      growth = {key: large[key] - small[key]
                for key in ("input_mb", "output_mb", "copy_mb", "added_mb", "beyond_mb",
                            "heap_peak_mb")}
      print(f"{job}: {small['size']} -> {large['size']} "
            f"(x{large['size'] / small['size']:.1f}): added {growth['added_mb']:+.1f} MB "
            f"= output {growth['output_mb']:+.1f} + copy {growth['copy_mb']:+.1f} "
            f"+ beyond {growth['beyond_mb']:+.1f} MB (input {growth['input_mb']:+.1f} MB, "
            f"Python heap peak {growth['heap_peak_mb']:+.1f} MB)")
  if not all(r["peak_was_reset"] for r in results):
    print("note: /proc/self/clear_refs refused; peaks include the warm-up call")


def _sizes(text: str) -> list[int]:
  return [int(s) for s in text.split(",") if s]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--feature_sizes", type=_sizes, default=[4000, 16000],
                      help="images per feature-extraction run, comma-separated")
  parser.add_argument("--knn_sizes", type=_sizes, default=[20000, 80000],
                      help="bank features per kNN run, comma-separated")
  parser.add_argument("--knn_dim", type=int, default=512, help="kNN feature dimension")
  parser.add_argument("--knn_queries", type=float, default=0.1,
                      help="kNN queries as a fraction of the bank size")
  parser.add_argument("--k", type=int, default=20, help="kNN neighbours")
  parser.add_argument("--width", type=float, default=1 / 16, help="ResNet-18 width factor")
  parser.add_argument("--batch", type=int, default=256, help="feature-extraction batch")
  parser.add_argument("--warmup_batches", type=int, default=16,
                      help="feature-extraction batches run before measuring")
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args, _ = parser.parse_known_args()
  if args.child:  # Inside a child: measure one (job, size) and print it as JSON.
    job, size = args.child.split(":")
    print(json.dumps(_JOBS[job](int(size), args)))
    return
  argv = [a for a in sys.argv[1:] if not a.startswith("--child")]
  results = [_run_child("features", n, argv) for n in args.feature_sizes]
  results += [_run_child("knn", n, argv) for n in args.knn_sizes]
  _print_table(results)


if __name__ == "__main__":
  main()

"""grain loaders: seeded shuffle, per-process shard of each global batch, checkpointable iterator.

The global stream of examples is a seeded shuffle of the source, reshuffled every epoch.
Global batch `s` is positions [s*G, (s+1)*G) of that stream; process `p` of `P` reads the
contiguous slice [s*G + p*L, s*G + (p+1)*L) with L = G/P. The order of examples that make
up a global batch thus depends only on the seed and G, not on the number of processes, and
the iterator's state (how many batches were read, i.e. the global step) is the same on every
process and fully determines where a resumed run continues, on any number of processes.
"""
from __future__ import annotations

import dataclasses
import signal
import sys

import grain
import numpy as np

from medssl_jax import errors


@dataclasses.dataclass(frozen=True)
class GlobalPosition:
  """Maps a process-local stream position to a position in the global shuffled stream."""
  local_batch: int
  global_batch: int
  process_index: int

  def __call__(self, local_position: int) -> int:
    step, offset = divmod(int(local_position), self.local_batch)
    return step * self.global_batch + self.process_index * self.local_batch + offset


@dataclasses.dataclass(frozen=True)
class ReadPair:
  """The record at a local position: the source index at its global position, paired by
  `pairing` with a generator seeded by (seed, global position), so any random choice a
  pairing makes is reproducible and independent of the number of processes. Picklable, for
  grain worker processes."""
  stream: grain.MapDataset
  to_global: GlobalPosition
  pairing: object
  seed: int

  def __call__(self, local_position: int) -> dict:
    position = self.to_global(local_position)
    return self.pairing(self.stream[position], np.random.default_rng((self.seed, position)))


def shuffled_stream(num_examples: int, seed: int) -> grain.MapDataset:
  """Indices 0..n-1, shuffled with `seed`, repeated forever with a new order each epoch."""
  return grain.MapDataset.range(num_examples).shuffle(seed=seed).repeat()


def pretraining_dataset(pairing, num_examples: int, *, global_batch: int, seed: int,
                        process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
  if global_batch % process_count:
    raise errors.UserError(f"batch_size={global_batch} must be divisible by the {process_count} processes")
  local_batch = global_batch // process_count
  stream = shuffled_stream(num_examples, seed)
  to_global = GlobalPosition(local_batch, global_batch, process_index)
  return (grain.MapDataset.range(sys.maxsize)
          .map(ReadPair(stream, to_global, pairing, seed))
          .batch(local_batch, drop_remainder=True))


def workers_ignore_sigterm(worker_index: int, worker_count: int) -> None:
  """A scheduler's SIGTERM (SLURM's scancel, a preempted VM) reaches grain's worker processes
  too. They ignore it, so that the main process can still read batches until it has saved its
  checkpoint; it stops its workers itself when it exits."""
  del worker_index, worker_count
  signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_iterator(dataset: grain.MapDataset, num_workers: int = 0) -> grain.DatasetIterator:
  """An iterator whose state (`get_state`/`set_state`) is saved with every checkpoint."""
  iter_ds = dataset.to_iter_dataset(grain.ReadOptions(num_threads=4, prefetch_buffer_size=8))
  if num_workers > 0:
    iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers),
                                  worker_init_fn=workers_ignore_sigterm)
  return iter(iter_ds)


def sequential_batches(source, batch_size: int):
  """Every record of a source once, in order, in batches (the last may be short)."""
  for start in range(0, len(source), batch_size):
    records = [source[i] for i in range(start, min(start + batch_size, len(source)))]
    yield {key: np.stack([r[key] for r in records]) for key in records[0]}

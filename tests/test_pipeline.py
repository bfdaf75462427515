"""The grain pipeline: seeded order, epochs, per-process shards, checkpointable state."""
import numpy as np
import pytest

from medssl_jax.data import pairs
from medssl_jax.data import pipeline


class IndexSource:
  """A source whose image is its own index, so batches reveal the order."""

  def __init__(self, n):
    self.n = n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    return {"image": np.full((2, 2, 1), i % 256, np.uint8), "label": np.int32(0)}


def _indices(iterator, num_batches):
  return np.stack([next(iterator)["index"] for _ in range(num_batches)])


def _loader(n=40, batch=8, seed=0, process_index=0, process_count=1):
  source = IndexSource(n)
  dataset = pipeline.pretraining_dataset(pairs.SameImage(source), n, global_batch=batch, seed=seed,
                                         process_index=process_index, process_count=process_count)
  return pipeline.make_iterator(dataset)


def test_same_seed_same_order_and_other_seed_differs():
  np.testing.assert_array_equal(_indices(_loader(seed=3), 6), _indices(_loader(seed=3), 6))
  assert not np.array_equal(_indices(_loader(seed=3), 6), _indices(_loader(seed=4), 6))


def test_each_epoch_is_a_new_permutation():
  order = _indices(_loader(n=40, batch=8), 10).reshape(2, 40)
  for epoch in order:
    np.testing.assert_array_equal(np.sort(epoch), np.arange(40))
  assert not np.array_equal(order[0], order[1])


def test_processes_split_each_global_batch():
  """Process p reads slice p of every global batch: the union over processes is what one
  process would read, whatever the process count."""
  single = _indices(_loader(batch=8), 5)
  two = [_indices(_loader(batch=8, process_index=p, process_count=2), 5) for p in range(2)]
  np.testing.assert_array_equal(np.concatenate(two, axis=1), single)


def test_restored_state_continues_exactly():
  iterator = _loader()
  _indices(iterator, 3)
  state = iterator.get_state()
  expected = _indices(iterator, 4)
  fresh = _loader()
  fresh.set_state(state)
  np.testing.assert_array_equal(_indices(fresh, 4), expected)


def test_batch_not_divisible_by_processes():
  with pytest.raises(ValueError, match="divisible"):
    _loader(batch=9, process_count=2)


def test_sequential_batches_cover_source_in_order():
  batches = list(pipeline.sequential_batches(IndexSource(10), 4))
  assert [len(b["image"]) for b in batches] == [4, 4, 2]
  np.testing.assert_array_equal(np.concatenate([b["image"][:, 0, 0, 0] for b in batches]), np.arange(10))


def test_worker_processes_outlive_a_sigterm_to_the_whole_job():
  """scancel and preempted VMs signal every process: grain's workers must keep serving
  batches so the main process can finish its step and save."""
  import multiprocessing  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top

  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()  # grain's workers read absl flags
  source = IndexSource(40)
  dataset = pipeline.pretraining_dataset(pairs.SameImage(source), 40, global_batch=8, seed=0,
                                         process_index=0, process_count=1)
  with_workers = pipeline.make_iterator(dataset, num_workers=1)
  expected = _indices(_loader(), 6)
  first = _indices(with_workers, 2)
  workers = multiprocessing.active_children()
  assert workers, "grain started no worker process"
  for worker in workers:
    os.kill(worker.pid, signal.SIGTERM)
  rest = _indices(with_workers, 4)
  assert all(worker.is_alive() for worker in workers)
  np.testing.assert_array_equal(np.concatenate([first, rest]), expected)

"""MICLe pairs on the real NIH patients: two different images of one patient per pair."""
import collections
import csv
import pickle
import types

import jax
import numpy as np
import pytest

from medssl_jax.data import manifest
from medssl_jax.data import pairs
from medssl_jax.data import pipeline
from medssl_jax.loop import pretrain
from medssl_jax.loop import sharding


@pytest.fixture(scope="module")
def nih_dir(shared_data):
  return shared_data / "nih_cxr1000"


@pytest.fixture(scope="module")
def patients(nih_dir):
  """patient_id of every row of index.csv, read independently of the source."""
  with open(nih_dir / "index.csv", newline="") as f:
    return np.array([row["patient_id"] for row in csv.DictReader(f)])


@pytest.fixture(scope="module")
def source(nih_dir):
  """All 1000 rows: 264 patients, 136 with 2 or more images."""
  return manifest.CSVManifestSource(nih_dir / "index.csv", nih_dir, path_column="relpath",
                                    label_column="label", group_column="patient_id")


@pytest.fixture(scope="module")
def pairing(source):
  return pairs.create_pairing("patient", source)


def _epochs(pairing, n, *, seed, batch=100, num_batches=10):
  iterator = pipeline.make_iterator(
      pipeline.pretraining_dataset(pairing, n, global_batch=batch, seed=seed))
  batches = [next(iterator) for _ in range(num_batches)]
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


@pytest.fixture(scope="module")
def epoch(pairing, source):
  return _epochs(pairing, len(source), seed=0)


def test_real_data_has_patient_bags(patients):
  sizes = collections.Counter(patients.tolist())
  assert len(sizes) == 264 and sum(s >= 2 for s in sizes.values()) == 136


def test_pairs_share_a_patient_and_differ_when_possible(epoch, patients):
  index, partner = epoch["index"], epoch["partner"]
  np.testing.assert_array_equal(patients[index], patients[partner])
  sizes = collections.Counter(patients.tolist())
  bag = np.array([sizes[p] for p in patients[index]])
  assert np.all(partner[bag >= 2] != index[bag >= 2])
  assert np.all(partner[bag == 1] == index[bag == 1])  # a group of one: itself
  assert (bag == 1).sum() == 128


def test_views_are_the_two_images(epoch, source):
  np.testing.assert_array_equal(epoch["view1"], source.images[epoch["index"]])
  np.testing.assert_array_equal(epoch["view2"], source.images[epoch["partner"]])
  assert epoch["view2"].shape == (1000, 64, 64, 1)


def test_an_epoch_uses_every_image_of_every_patient(epoch, patients):
  assert sorted(epoch["index"]) == list(range(1000))  # each image once as anchor
  used = collections.defaultdict(set)
  for i in np.concatenate([epoch["index"], epoch["partner"]]):
    used[patients[i]].add(int(i))
  for patient in set(patients.tolist()):
    assert used[patient] == set(np.flatnonzero(patients == patient).tolist()), patient


def test_draws_are_reproducible_from_the_seed(pairing, epoch):
  again = _epochs(pairing, 1000, seed=0)
  np.testing.assert_array_equal(again["index"], epoch["index"])
  np.testing.assert_array_equal(again["partner"], epoch["partner"])
  other = _epochs(pairing, 1000, seed=1)
  first = dict(zip(epoch["index"].tolist(), epoch["partner"].tolist()))
  second = dict(zip(other["index"].tolist(), other["partner"].tolist()))
  changed = sum(first[i] != second[i] for i in range(1000))
  assert changed > 200  # half of the images have one partner only in bags of 2, or none


def test_partner_is_drawn_uniformly_from_the_other_images(pairing, patients):
  sizes = collections.Counter(patients.tolist())
  patient = next(p for p in patients if sizes[p] == 4)
  members = np.flatnonzero(patients == patient)
  anchor = int(members[1])
  draws = [pairing.partner(anchor, np.random.default_rng(s)) for s in range(600)]
  counts = collections.Counter(draws)
  assert set(counts) == set(members.tolist()) - {anchor}
  assert min(counts.values()) > 150  # about 200 each: no partner is favoured
  largest = max(sizes, key=sizes.get)  # the bag of 66 images
  anchor = int(np.flatnonzero(patients == largest)[0])
  assert len({pairing.partner(anchor, np.random.default_rng(s)) for s in range(50)}) > 20


def test_pickled_pairing_draws_the_same(pairing):
  copy = pickle.loads(pickle.dumps(pairing))
  for i in range(0, 1000, 7):
    assert copy.partner(i, np.random.default_rng(i)) == pairing.partner(i, np.random.default_rng(i))


def test_unsorted_groups_at_scale():
  """300k images in 50k groups, in random order: precomputation is vectorised."""
  groups = np.random.default_rng(0).integers(0, 50_000, 300_000)
  pairing = pairs.PatientPairs(types.SimpleNamespace(groups=groups))
  rng = np.random.default_rng(1)
  anchors = rng.integers(0, len(groups), 2000)
  partners = np.array([pairing.partner(int(i), rng) for i in anchors])
  np.testing.assert_array_equal(groups[partners], groups[anchors])
  alone = np.bincount(groups)[groups[anchors]] == 1
  assert np.all((partners == anchors) == alone)


def test_micle_training_steps_have_finite_loss(synthetic_config, tmp_path):
  """The loop with patient pairs, on the synthetic set (two images per group); MICLe on the
  real NIH files from the command line is tested in test_csv_manifest_cli."""
  import json  # pylint: disable=g-import-not-at-top
  config = synthetic_config
  config.method = "micle"
  config.data.pairing = "patient"
  config.data.image_size = 64  # 64 px images, as nih_cxr1000's
  config.augment.size = 32  # views downsampled from 64 px: CPU-sized
  config.num_steps = 2
  config.log_every = 2
  config.checkpoint_every = 2
  mesh = sharding.create_mesh(jax.devices()[:1])  # 8-device runs are tested in test_train
  state = pretrain.run(config, tmp_path, mesh=mesh)
  assert int(state.step) == 2
  (line,) = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert np.isfinite(line["loss"]) and line["loss"] > 0

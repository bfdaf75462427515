"""Label-fraction draws on real labels: BloodMNIST classes and NIH CXR patients."""
import csv
import math

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from medssl_jax.data import catalog
from medssl_jax.evaluation import fractions


@pytest.fixture(scope="module")
def blood_labels(medmnist_dir) -> np.ndarray:
  return np.asarray(catalog.open_source("bloodmnist", "train", data_dir=medmnist_dir).labels)


@pytest.fixture(scope="module")
def nih_rows(shared_data) -> list[dict]:
  with open(shared_data / "nih_cxr1000" / "index.csv", newline="") as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def nih_train(nih_rows):
  """(labels, patient ids) of the training split and the patients of valid + test."""
  train = [r for r in nih_rows if r["split"] == "train"]
  labels = np.array([int(r["label"]) for r in train])
  groups = np.array([r["patient_id"] for r in train])
  held_out = np.array([r["patient_id"] for r in nih_rows if r["split"] != "train"])
  assert np.isin(groups, held_out).any(), "the index should have patients in train and test"
  return labels, groups, held_out


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.37])
def test_each_class_keeps_its_fraction(blood_labels, fraction):
  drawn = fractions.draw_fraction(blood_labels, fraction, seed=0)
  assert np.all(np.diff(drawn) > 0) and drawn.dtype == np.int64  # sorted, no repeats
  counts = np.bincount(blood_labels, minlength=8)
  kept = np.bincount(blood_labels[drawn], minlength=8)
  assert np.all(np.abs(kept - fraction * counts) <= 1) and np.all(kept >= 1)


def test_fraction_one_returns_everything(blood_labels):
  np.testing.assert_array_equal(fractions.draw_fraction(blood_labels, 1.0, seed=3),
                                np.arange(len(blood_labels)))


def test_draws_reproduce_from_the_seed_and_nest(blood_labels):
  a = fractions.draw_fraction(blood_labels, 0.1, seed=0)
  np.testing.assert_array_equal(a, fractions.draw_fraction(blood_labels, 0.1, seed=0))
  b = fractions.draw_fraction(blood_labels, 0.1, seed=1)
  assert len(a) == len(b) and not np.array_equal(a, b)
  # One seed's 1% draw is part of its 10% draw: smaller fractions are subsets.
  assert np.isin(fractions.draw_fraction(blood_labels, 0.01, seed=0), a).all()


def test_multi_label_stratified_by_rarest_positive(blood_labels):
  # Real classes as one-hot labels, the last class turned into "no positive label".
  multi = np.eye(8, dtype=np.int32)[blood_labels][:, :7]
  drawn = fractions.draw_fraction(multi, 0.1, seed=0)
  kept, counts = multi[drawn].sum(0), multi.sum(0)
  assert np.all(np.abs(kept - 0.1 * counts) <= 1)
  none = multi.sum(1) == 0
  assert abs(none[drawn].sum() - 0.1 * none.sum()) <= 1


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5, 1.0])
def test_patients_are_drawn_whole_and_held_out_ones_skipped(nih_train, fraction):
  labels, groups, held_out = nih_train
  drawn = fractions.draw_fraction(labels, fraction, seed=0, groups=groups, exclude_groups=held_out)
  patients = np.unique(groups[drawn])
  np.testing.assert_array_equal(np.sort(drawn), np.flatnonzero(np.isin(groups, patients)))
  assert not np.isin(patients, held_out).any()
  assert set(np.unique(labels[drawn])) == {0, 1}  # every class keeps at least one patient
  if fraction == 1.0:  # everything that is allowed, nothing else
    np.testing.assert_array_equal(drawn, np.flatnonzero(~np.isin(groups, held_out)))


def test_without_exclusion_shared_patients_would_be_drawn(nih_train):
  labels, groups, held_out = nih_train
  drawn = fractions.draw_fraction(labels, 1.0, seed=0, groups=groups)
  assert np.isin(groups[drawn], held_out).any()


def test_pooled_index_draws_only_training_patients(nih_rows):
  labels = np.array([int(r["label"]) for r in nih_rows])
  groups = np.array([r["patient_id"] for r in nih_rows])
  train = np.flatnonzero([r["split"] == "train" for r in nih_rows])
  for fraction in (0.1, 1.0):
    drawn = fractions.draw_fraction(labels, fraction, seed=0, groups=groups, candidates=train)
    assert np.isin(drawn, train).all()
    # A patient with any val/test image is not training data at all.
    assert not np.isin(groups[drawn], groups[np.setdiff1d(np.arange(len(groups)), train)]).any()


def test_bad_draw_arguments(blood_labels, nih_train):
  labels, groups, _ = nih_train
  for fraction in (0.0, -0.1, 1.5):
    with pytest.raises(ValueError, match="fraction"):
      fractions.draw_fraction(blood_labels, fraction, seed=0)
  with pytest.raises(ValueError, match="exclude_groups needs"):
    fractions.draw_fraction(labels, 0.1, seed=0, exclude_groups=groups[:3])
  with pytest.raises(ValueError, match="both be names or both be numbers"):
    fractions.draw_fraction(labels, 0.1, seed=0, groups=groups, exclude_groups=np.array([1, 2]))
  with pytest.raises(ValueError, match="no training examples"):
    fractions.draw_fraction(labels, 0.1, seed=0, groups=groups, exclude_groups=groups)
  with pytest.raises(ValueError, match="groups must be"):
    fractions.draw_fraction(labels, 0.1, seed=0, groups=groups[:-1])


def test_t_interval_matches_scipy():
  values = [0.81, 0.84, 0.79, 0.86]
  mean, lo, hi = fractions.mean_and_interval(values, confidence=0.95)
  want = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
  assert mean == pytest.approx(np.mean(values))
  assert (lo, hi) == pytest.approx(want, rel=1e-12)
  # A textbook value: t(0.975, df=2) = 4.302653; values 1, 2, 3 have standard error 1/sqrt(3).
  _, lo, hi = fractions.mean_and_interval([1.0, 2.0, 3.0])
  assert (hi - lo) / 2 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
  assert fractions.mean_and_interval([0.7]) == (0.7, 0.7, 0.7)


def test_run_summarise_and_plot(blood_labels, tmp_path):
  def fit_and_score(indices, seed):
    # A stand-in "model": score grows with the training set, seed adds a known offset.
    return {"auroc": 0.5 + 0.4 * len(indices) / len(blood_labels) + 0.01 * seed, "accuracy": 0.5}

  rows = fractions.run_fractions(fit_and_score, blood_labels, (0.1, 0.01, 1.0), seeds=(0, 1, 2))
  assert len(rows) == 9 and {r["seed"] for r in rows} == {0, 1, 2}
  assert [r["n_train"] for r in rows if r["fraction"] == 1.0] == [len(blood_labels)] * 3
  summary = fractions.summarise(rows, "auroc")
  assert list(summary) == ["0.01", "0.1", "1.0"]  # increasing fraction, JSON-ready keys
  full = summary["1.0"]
  assert full["values"] == pytest.approx([0.9, 0.91, 0.92])
  assert full["mean"] == pytest.approx(0.91) and full["ci"][0] < 0.91 < full["ci"][1]
  assert full["ci"] == pytest.approx(list(fractions.mean_and_interval([0.9, 0.91, 0.92])[1:]))

  shifted = {k: dict(v, mean=v["mean"] - 0.05, ci=[c - 0.05 for c in v["ci"]]) for k, v in summary.items()}
  path = fractions.plot_fractions({"pretrained": summary, "random_init": shifted}, tmp_path / "f" / "fr.png",
                                  "AUROC", title="bloodmnist")
  assert path.read_bytes().startswith(b"\x89PNG")  # a local or bucket path: read it back
  with Image.open(path) as image:
    assert image.format == "PNG" and min(image.size) > 100
    image.verify()
  with pytest.raises(ValueError, match="not a summarise"):
    fractions.plot_fractions(summary, tmp_path / "bad.png", "AUROC")  # forgot the representation level

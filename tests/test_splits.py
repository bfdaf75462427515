"""Patient-safe splits: the leakage check on real NIH patient ids, group splits, refusals."""
import csv

import numpy as np
import pytest

from medssl_jax.data import splits
from medssl_jax.loop import pretrain


@pytest.fixture(scope="module")
def nih_rows(shared_data):
  with open(shared_data / "nih_cxr1000" / "index.csv", newline="") as f:
    return list(csv.DictReader(f))


def _independent_crossing(groups, split_names):
  seen = {}
  for group, split in zip(groups, split_names):
    seen.setdefault(group, set()).add(split)
  return {g: sorted(s) for g, s in seen.items() if len(s) > 1}


def test_folder_split_of_nih_cxr1000_leaks_30_patients(nih_rows):
  groups = [r["patient_id"] for r in nih_rows]
  folder = [{"valid": "val"}.get(r["split"], r["split"]) for r in nih_rows]
  crossing = splits.crossing_groups(groups, folder)
  assert len(crossing) == 30
  assert crossing == _independent_crossing(groups, folder)
  with pytest.raises(splits.LeakySplitError) as error:
    splits.check_no_leakage(groups, folder, name="nih_cxr1000")
  message = str(error.value)
  assert "30 patients" in message and all(group in message for group in crossing)
  assert splits.check_no_leakage(groups, folder, name="nih_cxr1000", allow=True) == crossing


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_group_split_of_nih_cxr1000_has_no_leak_and_follows_fractions(nih_rows, seed):
  groups = np.array([r["patient_id"] for r in nih_rows])
  names = splits.group_split(groups, (0.6, 0.2, 0.2), seed)
  assert splits.crossing_groups(groups, names) == {}
  counts = {s: int((names == s).sum()) for s in splits.SPLITS}
  # Whole patients move, and the largest has 66 images: fractions hold to within that.
  for split, fraction in zip(splits.SPLITS, (0.6, 0.2, 0.2)):
    assert abs(counts[split] - fraction * len(groups)) <= 66
  # Reproducible from the seed, whatever the row order; another seed gives another split.
  order = np.random.default_rng(3).permutation(len(groups))
  np.testing.assert_array_equal(splits.group_split(groups[order], (0.6, 0.2, 0.2), seed), names[order])
  assert not np.array_equal(splits.group_split(groups, (0.6, 0.2, 0.2), seed + 100), names)


def test_group_split_rejects_bad_fractions():
  with pytest.raises(ValueError, match="fractions"):
    splits.group_split(["a", "b"], (0.5, 0.5))
  with pytest.raises(ValueError, match="fractions"):
    splits.group_split(["a", "b"], (1.0, -0.1, 0.1))


def test_training_refuses_the_leaky_split_before_writing(tiny_config, shared_data, tmp_path):
  tiny_config.method = "micle"
  tiny_config.data.name = "nih_cxr1000"
  tiny_config.data.pairing = "patient"
  tiny_config.data.dir = str(shared_data / "nih_cxr1000")
  workdir = tmp_path / "run"
  with pytest.raises(splits.LeakySplitError, match="30 patients have images in more than one split"):
    pretrain.run(tiny_config, workdir)
  assert not workdir.exists() or not any(workdir.iterdir())

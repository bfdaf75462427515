"""medssl-convert: any data set a config opens -> ArrayRecord shards -> the same records,
opened by data.name=array_record, with the leakage check still applied."""
import numpy as np
import pytest

from medssl_jax.cli import convert
from medssl_jax.data import catalog
from medssl_jax.data import splits
from medssl_jax.loop import defaults


def _nih_data(shared_data, **split):
  data = defaults.pretraining().data
  data.name, data.dir, data.image_size = "nih_cxr1000", str(shared_data / "nih_cxr1000"), 32
  data.split.update(split)
  return data


def _shards(out):
  data = defaults.pretraining().data
  data.name, data.dir = "array_record", str(out)
  return data


def test_patient_split_converted_reads_back_identical(shared_data, tmp_path):
  data = _nih_data(shared_data, by="group", fractions=(0.6, 0.2, 0.2))
  convert.convert(data, tmp_path / "shards")
  for split in splits.SPLITS:
    original = catalog.open_data(data, split)
    shards = catalog.open_data(_shards(tmp_path / "shards"), split)
    assert len(shards) == len(original) and shards.image_shape == (32, 32, 1)
    for i in range(len(original)):
      a, b = original[i], shards[i]
      np.testing.assert_array_equal(a["image"], b["image"])
      assert a["label"] == b["label"] and a["group"] == b["group"]
    assert list(np.asarray(shards.group_names)[shards.groups]) == list(
        np.asarray(original.group_names)[original.groups])


def test_leaky_split_converted_is_still_refused_when_read(shared_data, tmp_path):
  convert.convert(_nih_data(shared_data, allow_leakage=True), tmp_path / "shards")
  with pytest.raises(splits.LeakySplitError, match="30 patients"):
    catalog.open_data(_shards(tmp_path / "shards"), "train")
  allowed = _shards(tmp_path / "shards")
  allowed.split.allow_leakage = True
  assert len(catalog.open_data(allowed, "train")) == 600

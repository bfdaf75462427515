"""`data.name=tfds:NAME`: a tiny tfds set written without TensorFlow (tfds_fixture.py), read
back, paired by patient, pretrained on and probed, resumed exactly, and never TensorFlow."""
import json
import pickle
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow_datasets as tfds
import tfds_fixture
from PIL import Image

from medssl_jax import errors
from medssl_jax.data import catalog
from medssl_jax.data import config as data_config
from medssl_jax.data import decode
from medssl_jax.data import pairs
from medssl_jax.data import tfds_source
from medssl_jax.evaluation import runner
from medssl_jax.loop import configuration
from medssl_jax.loop import pretrain

from conftest import REPO_ROOT

NAME = "tfds:" + tfds_fixture.NAME
TFDS_SPLIT = {"train": "train", "val": "validation", "test": "test"}  # the default data.tfds.splits


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory, medmnist_dir):
  directory = tmp_path_factory.mktemp("tfds")
  tfds_fixture.build(directory, medmnist_dir)
  return directory


def _data(tfds_dir, group_key="patient", **tfds_keys):
  data = data_config.defaults()
  data.name, data.dir = NAME, str(tfds_dir)
  data.tfds.group_key = group_key
  data.tfds.update(tfds_keys)
  return data


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_records_are_what_the_builder_wrote(tfds_dir, medmnist_dir, split):
  source = catalog.open_data(_data(tfds_dir), split)
  images, labels, patients = tfds_fixture.expected(medmnist_dir, TFDS_SPLIT[split])
  # tfds shuffled the records when writing: each keeps its BreastMNIST row.
  rows = [int(r["npz_index"]) for r in tfds.data_source(tfds_fixture.NAME, split=TFDS_SPLIT[split],
                                                        data_dir=str(tfds_dir), download=False)]
  assert sorted(rows) == list(range(len(images)))
  assert (len(source), source.image_shape, source.num_classes) == (len(images), (28, 28, 1), 2)
  assert source.class_names == tfds_fixture.CLASS_NAMES and not source.multi_label
  for i, row in enumerate(rows):
    record = source[i]
    assert record["image"].dtype == np.uint8
    np.testing.assert_array_equal(record["image"], images[row])
    assert record["label"] == labels[row] and record["label"].dtype == np.int32
    assert record["index"] == i and source.group_names[record["group"]] == patients[row]
  np.testing.assert_array_equal(source.labels, labels[rows])
  assert source.groups.dtype == np.int64 and len(set(source.groups.tolist())) == len(set(patients))
  copy = pickle.loads(pickle.dumps(source))  # what a grain worker process gets
  np.testing.assert_array_equal(copy[3]["image"], source[3]["image"])
  np.testing.assert_array_equal(copy.groups, source.groups)


def test_without_group_key_each_image_is_its_own_group(tfds_dir):
  source = catalog.open_data(_data(tfds_dir, group_key=""), "val")
  np.testing.assert_array_equal(source.groups, np.arange(16))
  assert source[5]["group"] == 5 and not source.has_groups and source._columns is None


def test_micle_pairs_two_images_of_one_patient(tfds_dir):
  source = catalog.open_data(_data(tfds_dir), "train")
  pairing = pairs.create_pairing("patient", source)
  rng = np.random.default_rng(0)
  for i in range(len(source)):
    pair = pairing(i, rng)
    partner = int(pair["partner"])
    assert partner != i and source.groups[partner] == source.groups[i]
    np.testing.assert_array_equal(pair["view2"], source[partner]["image"])


def test_resize_to_image_size(tfds_dir):
  data = _data(tfds_dir)
  data.image_size = 40
  resized = catalog.open_data(data, "test")
  original = catalog.open_data(_data(tfds_dir), "test")
  assert resized.image_shape == (40, 40, 1)
  want = decode._resize_center_crop(Image.fromarray(original[2]["image"][:, :, 0]), 40)
  np.testing.assert_array_equal(resized[2]["image"][:, :, 0], np.asarray(want))


def _tiny(tiny_config, tfds_dir, pairing="patient"):
  config = tiny_config
  config.data.name, config.data.dir = NAME, str(tfds_dir)
  config.data.tfds.group_key, config.data.pairing = "patient", pairing
  return config


def test_pretrain_and_linear_probe_by_name(tiny_config, tfds_dir, tmp_path):
  # SimCLR with tiny_config's 6 steps as they are: its compiled step is the other tests' own
  # (same shapes and schedule), found in the session's compilation cache. MICLe pairs are
  # the same pipeline with another pairing (test_resumed_iterator_is_exact).
  config = _tiny(tiny_config, tfds_dir, pairing="same_image")
  pretrain.run(config, tmp_path / "run")
  eval_config = configuration.load_config_file(str(REPO_ROOT / "configs" / "eval" / "linear_probe.py"))
  eval_config.pretrain_workdir = str(tmp_path / "run")
  eval_config.probe.Cs, eval_config.n_boot, eval_config.baselines = (1.0,), 20, ()
  results = runner.evaluate(eval_config, tmp_path / "eval")
  assert results["step"] == 6 and results["data"] == NAME
  probe = results["linear_probe"]["pretrained"]
  assert probe["n"] == 16 and 0.0 <= probe["auroc"] <= 1.0 and 0.0 <= probe["accuracy"] <= 1.0


def test_resumed_iterator_is_exact(tiny_config, tfds_dir):
  config = _tiny(tiny_config, tfds_dir)
  source = pretrain.open_training_source(config)

  def read(iterator, n):
    return [next(iterator) for _ in range(n)]

  iterator = pretrain.make_data_iterator(config, source)
  read(iterator, 2)
  state = iterator.get_state()
  expected = read(iterator, 3)  # into the second epoch (48 images, batches of 16)
  resumed = pretrain.make_data_iterator(config, source)
  resumed.set_state(state)
  for want, got in zip(expected, read(resumed, 3)):
    assert want.keys() == got.keys() == {"view1", "view2", "index", "partner"}
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_unprepared_set_says_how_to_prepare(tmp_path):
  with pytest.raises(errors.UserError) as raised:
    catalog.open_data(_data(tmp_path), "train")
  message = str(raised.value)
  assert "TFRECORD" not in message and "is not prepared in" in message
  assert "pip install 'medssl_jax[prepare]'" in message
  assert f"tfds build {tfds_fixture.NAME} --file_format=array_record --data_dir={tmp_path}" in message


def test_set_prepared_without_random_access_says_how_to_convert(tfds_dir, tmp_path):
  # A copy whose dataset_info.json says tfrecord (writing real TFRecords needs TensorFlow).
  shutil.copytree(tfds_dir / tfds_fixture.NAME, tmp_path / tfds_fixture.NAME)
  info = tmp_path / tfds_fixture.NAME / "1.0.0" / "dataset_info.json"
  info.write_text(info.read_text().replace('"fileFormat": "array_record"', '"fileFormat": "tfrecord"'))
  with pytest.raises(errors.UserError, match=r"stored as tfrecord, which has no random access. Convert it: "
                                             r"tfds convert_format --dataset_version_dir=.*1\.0\.0 "
                                             r"--out_file_format=array_record"):
    catalog.open_data(_data(tmp_path), "train")


@pytest.mark.parametrize("keys, match", [
    (dict(image_key="img"), r"no feature 'img' .*image \(Image\), label \(ClassLabel\), patient \(Text\)"),
    (dict(label_key="patient"), "one ClassLabel per image"),
    (dict(group_key="npz_indx"), "no feature 'npz_indx' for the groups"),
    (dict(splits=("train", "valid", "test")), "no split 'valid' .*its splits: train, validation, test"),
])
def test_bad_keys_are_user_errors(tfds_dir, keys, match):
  with pytest.raises(errors.UserError, match=match):
    catalog.open_data(_data(tfds_dir, **keys), "val")


def test_bad_names_and_images_are_user_errors(tfds_dir):
  for name, match in [("tfds:medssl_tiny_brest", "close names: medssl_tiny_breast"),
                      ("tfds:two words", "is not tfds:NAME"),
                      ("tfds:medssl_tiny_breast:9.0.0", "at version 9.0.0.*; prepared there: 1.0.0")]:
    data = _data(tfds_dir)
    data.name = name
    with pytest.raises(errors.UserError, match=match):
      catalog.open_data(data, "train")
  name = tfds_source.TfdsName("x")
  with pytest.raises(errors.UserError, match="are uint16; this source reads uint8 images only"):
    tfds_source._image_shape(tfds.features.Image(shape=(8, 8, 1), dtype=np.uint16), "image", name, 0)
  with pytest.raises(errors.UserError, match="vary in size .* set --config.data.image_size"):
    tfds_source._image_shape(tfds.features.Image(shape=(None, None, 3)), "image", name, 0)
  any_size = tfds.features.Image(shape=(None, None, 3))
  assert tfds_source._image_shape(any_size, "image", name, 64) == (64, 64, 3)


def test_tensorflow_is_never_imported(tfds_dir):
  """In a fresh process that has not imported the builder (tfds reads the prepared files
  alone), a stand-in `tensorflow` module records any import of it while a source is opened,
  read, pickled and batched."""
  script = textwrap.dedent(f"""
      import importlib.abc, importlib.machinery, json, pickle, sys
      attempts = []

      class Refuse(importlib.abc.Loader):
        def create_module(self, spec):
          return None

        def exec_module(self, module):
          attempts.append(module.__name__)
          raise ImportError("tensorflow is not to be imported")

      class Finder:
        def find_spec(self, name, path=None, target=None):
          if name.split(".")[0] == "tensorflow":
            return importlib.machinery.ModuleSpec(name, Refuse())

      sys.meta_path.insert(0, Finder())
      from medssl_jax.data import catalog, config, pipeline
      data = config.defaults()
      data.name, data.dir, data.tfds.group_key = {NAME!r}, {str(tfds_dir)!r}, "patient"
      source = catalog.open_data(data, "train")
      records = [source[i] for i in range(len(source))]
      labels, groups = source.labels, source.groups
      copy = pickle.loads(pickle.dumps(source))
      batches = list(pipeline.sequential_batches(copy, 20))
      loaded = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
      print(json.dumps({{"attempts": attempts, "loaded": loaded}}))
      """)
  done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                        cwd=REPO_ROOT)
  assert done.returncode == 0, done.stderr[-3000:]
  assert json.loads(done.stdout.strip().splitlines()[-1]) == {"attempts": [], "loaded": []}
  assert "tensorflow" not in sys.modules

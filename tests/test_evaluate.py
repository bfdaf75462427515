"""The evaluation binary end to end on a tiny pretraining run over real PneumoniaMNIST."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from medssl_jax import checkpointing
from medssl_jax import configuration
from medssl_jax import evaluate
from medssl_jax import train
from medssl_jax.data import sources
from medssl_jax.evaluation import features

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory, medmnist_dir):
  config = configuration.load_config_file(str(REPO / "configs" / "simclr_pneumoniamnist.py"))
  config.data.dir = str(medmnist_dir)
  config.model.width, config.model.projector_hidden_dim, config.model.projector_dim = 1 / 16, 32, 16
  config.batch_size, config.num_steps, config.checkpoint_every, config.log_every = 16, 4, 2, 2
  workdir = tmp_path_factory.mktemp("pretrain")
  train.train_and_evaluate(config, workdir)
  return workdir


def _eval_config(run):
  config = configuration.load_config_file(str(REPO / "configs" / "eval" / "linear_probe.py"))
  config.pretrain_workdir = str(run)
  config.probe.Cs = (0.01, 1.0)
  config.n_boot = 50
  config.baselines = ("random_init",)
  return config


def test_linear_probe_writes_results(pretrained_run, tmp_path, capsys):
  results = evaluate.evaluate(_eval_config(pretrained_run), tmp_path)
  on_disk = json.loads((tmp_path / "results.json").read_text())
  assert on_disk == json.loads(json.dumps(results))
  assert on_disk["step"] == 4 and on_disk["method"] == "simclr" and on_disk["data"] == "pneumoniamnist"
  for name in ("pretrained", "random_init"):
    r = on_disk["linear_probe"][name]
    assert 0.5 < r["auroc"] <= 1.0 and 0.0 <= r["accuracy"] <= 1.0
    assert r["auroc_ci"][0] <= r["auroc"] <= r["auroc_ci"][1]
    assert r["n"] == 624 and r["feature_dim"] == 32 and r["C"] in (0.01, 1.0)
  printed = capsys.readouterr().out
  assert "pretrained" in printed and "random_init" in printed and "AUROC" in printed


def test_restore_backbone_of_earlier_step_and_missing_step(pretrained_run):
  _, variables_2, step = checkpointing.restore_backbone(pretrained_run, step=2)
  _, variables_4, _ = checkpointing.restore_backbone(pretrained_run)
  assert step == 2
  assert not np.array_equal(variables_2["params"]["conv_init"]["kernel"],
                            variables_4["params"]["conv_init"]["kernel"])
  with pytest.raises(FileNotFoundError, match=r"steps present: \[2, 4\]"):
    checkpointing.restore_backbone(pretrained_run, step=3)


def test_features_same_on_one_and_eight_devices(pretrained_run, medmnist_dir):
  import jax  # pylint: disable=g-import-not-at-top
  from medssl_jax import sharding  # pylint: disable=g-import-not-at-top
  from medssl_jax.models import encoder  # pylint: disable=g-import-not-at-top
  pretrain_config, variables, _ = checkpointing.restore_backbone(pretrained_run)
  backbone = encoder.create_backbone(pretrain_config.model)
  source = sources.open_source("breastmnist", "val", data_dir=medmnist_dir)  # 78 images: a short last batch
  one = features.extract_features(features.backbone_output(backbone), variables, source, image_size=28, batch_size=32,
                                  mesh=sharding.create_mesh(jax.devices()[:1]))
  eight = features.extract_features(features.backbone_output(backbone), variables, source, image_size=28, batch_size=32,
                                    mesh=sharding.create_mesh(jax.devices()[:8]))
  assert one.shape == (78, 32)
  np.testing.assert_allclose(one, eight, rtol=1e-4, atol=1e-5)


def test_cli_rejects_unknown_baseline_before_writing(pretrained_run, tmp_path, medmnist_dir):
  base = [sys.executable, "-m", "medssl_jax.evaluate", "--config=configs/eval/linear_probe.py",
          f"--config.pretrain_workdir={pretrained_run}", f"--workdir={tmp_path}"]
  bad = subprocess.run(base + ["--config.baselines=('imagenet',)"], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
  assert bad.returncode == 2 and "unknown baselines ['imagenet']" in bad.stderr
  assert not (tmp_path / "results.json").exists()


def test_embedding_2d_tsne_writes_map_plot_and_scores(pretrained_run, tmp_path):
  config = _eval_config(pretrained_run)
  config.evaluations = ("embedding_2d",)
  config.embedding_2d.max_points = 150
  results = evaluate.evaluate(config, tmp_path)["embedding_2d"]
  assert results["kind"] == "tsne"
  assert 0.0 <= results["knn_accuracy"] <= 1.0 and -1.0 <= results["silhouette"] <= 1.0
  saved = np.load(tmp_path / "embedding_2d.npz")
  assert saved["points"].shape == (450, 2) and saved["labels"].shape == (450,)
  assert sorted(set(saved["split"])) == ["test", "train", "val"]
  import matplotlib.image  # pylint: disable=g-import-not-at-top
  image = matplotlib.image.imread(tmp_path / "embedding_2d.png")
  assert image.shape[0] > 400 and image.shape[1] > 400
  assert image[..., :3].std() > 0.05, "the plot is blank"

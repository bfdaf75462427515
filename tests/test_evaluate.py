"""The evaluation binary end to end on a tiny pretraining run over real PneumoniaMNIST."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from medssl_jax.data import catalog
from medssl_jax.evaluation import features
from medssl_jax.evaluation import runner
from medssl_jax.loop import checkpointing
from medssl_jax.loop import configuration
from medssl_jax.loop import pretrain

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory, medmnist_dir):
  config = configuration.load_config_file(str(REPO / "configs" / "simclr_pneumoniamnist.py"))
  config.data.dir = str(medmnist_dir)
  config.model.width, config.model.projector_hidden_dim, config.model.projector_dim = 1 / 16, 32, 16
  config.batch_size, config.num_steps, config.checkpoint_every, config.log_every = 16, 4, 2, 2
  workdir = tmp_path_factory.mktemp("pretrain")
  pretrain.run(config, workdir)
  return workdir


def _eval_config(run):
  config = configuration.load_config_file(str(REPO / "configs" / "eval" / "linear_probe.py"))
  config.pretrain_workdir = str(run)
  config.probe.Cs = (0.01, 1.0)
  config.n_boot = 50
  config.baselines = ("random_init",)
  return config


def test_linear_probe_writes_results(pretrained_run, tmp_path, capsys):
  results = runner.evaluate(_eval_config(pretrained_run), tmp_path)
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

  from medssl_jax.loop import sharding  # pylint: disable=g-import-not-at-top
  from medssl_jax.models import encoder  # pylint: disable=g-import-not-at-top
  pretrain_config, variables, _ = checkpointing.restore_backbone(pretrained_run)
  backbone = encoder.create_backbone(pretrain_config.model)
  source = catalog.open_source("breastmnist", "val", data_dir=medmnist_dir)  # 78 images: a short last batch
  apply_fn = features.backbone_output(backbone)
  one = features.extract_features(apply_fn, variables, source, image_size=28, batch_size=32,
                                  mesh=sharding.create_mesh(jax.devices()[:1]))
  eight = features.extract_features(apply_fn, variables, source, image_size=28, batch_size=32,
                                    mesh=sharding.create_mesh(jax.devices()[:8]))
  assert one.shape == (78, 32)
  np.testing.assert_allclose(one, eight, rtol=1e-4, atol=1e-5)


def test_cli_rejects_unknown_baseline_before_writing(pretrained_run, tmp_path, medmnist_dir):
  base = [sys.executable, "-m", "medssl_jax.cli.evaluate", "--config=configs/eval/linear_probe.py",
          f"--config.pretrain_workdir={pretrained_run}", f"--workdir={tmp_path}"]
  bad = subprocess.run(base + ["--config.baselines=('imagenet',)"], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
  assert bad.returncode == 2 and "unknown baselines ['imagenet']" in bad.stderr
  assert not (tmp_path / "results.json").exists()


def test_embedding_2d_tsne_writes_map_plot_and_scores(pretrained_run, tmp_path):
  config = _eval_config(pretrained_run)
  config.evaluations = ("embedding_2d",)
  config.embedding_2d.max_points = 150
  results = runner.evaluate(config, tmp_path)["embedding_2d"]
  assert results["kind"] == "tsne"
  assert 0.0 <= results["knn_accuracy"] <= 1.0 and -1.0 <= results["silhouette"] <= 1.0
  baseline = results["baselines"]["random_init"]  # the baseline's t-SNE map, scored alike
  assert baseline["kind"] == "tsne" and 0.0 <= baseline["knn_accuracy"] <= 1.0
  scores = lambda r: (r["knn_accuracy"], r["silhouette"])
  assert scores(baseline) != scores(results)
  for r in (results, baseline):  # every score has its interval, on test and on validation
    for key in ("knn_accuracy", "silhouette", "val_knn_accuracy", "val_silhouette"):
      low, high = r[f"{key}_ci"]
      assert low <= r[key] <= high and low < high, (key, r)
  assert (tmp_path / "embedding_2d_random_init.png").stat().st_size > 10_000
  report = (tmp_path / "results.md").read_text()
  assert "| random_init (tsne) |" in report and "validation silhouette" in report
  assert f"{results['val_knn_accuracy']:.4f} ({results['val_knn_accuracy_ci'][0]:.3f}-" in report
  saved = np.load(tmp_path / "embedding_2d.npz")
  assert saved["points"].shape == (450, 2) and saved["labels"].shape == (450,)
  assert sorted(set(saved["split"])) == ["test", "train", "val"]
  import matplotlib.image  # pylint: disable=g-import-not-at-top
  image = matplotlib.image.imread(tmp_path / "embedding_2d.png")
  assert image.shape[0] > 400 and image.shape[1] > 400
  assert image[..., :3].std() > 0.05, "the plot is blank"


def test_every_evaluation_in_one_run_writes_json_markdown_and_plots(pretrained_run, tmp_path, shared_data):
  config = _eval_config(pretrained_run)
  config.evaluations = ("linear_probe", "knn", "finetune", "label_fractions", "transfer")
  config.finetune.steps, config.finetune.batch_size, config.finetune.eval_every = 4, 16, 2
  config.label_fractions.fractions, config.label_fractions.seeds = (0.1, 1.0), (0, 1)
  config.transfer.data.name = "nih_cxr1000"
  config.transfer.data.dir = str(shared_data / "nih_cxr1000")
  config.transfer.data.image_size = 28
  config.transfer.data.split.allow_leakage = True
  config.transfer.label_map = (("normal", "normal"), ("abnormal", "pneumonia"))
  results = runner.evaluate(config, tmp_path)
  for name in ("linear_probe", "knn", "finetune"):
    for rep in ("pretrained", "random_init"):
      r = results[name][rep]
      assert r["n"] == 624 and r["auroc_ci"][0] <= r["auroc"] <= r["auroc_ci"][1]
  assert results["linear_probe"]["pretrained"]["probe"] == "sklearn"
  # Label fractions: 10% of each class (1214 normal, 3494 pneumonia); 100% is the whole split.
  fractions = results["label_fractions"]
  assert fractions["linear_probe"]["pretrained"]["0.1"]["n_train"] == [121 + 349, 121 + 349]
  full = fractions["linear_probe"]["pretrained"]["1.0"]
  assert full["mean"] == pytest.approx(results["linear_probe"]["pretrained"]["auroc"], abs=1e-9)
  assert (tmp_path / "label_fractions_linear_probe.png").stat().st_size > 10_000
  # Transfer: the same probes scored on 200 NIH test images with their classes mapped.
  assert results["transfer"]["target"] == "nih_cxr1000" and results["transfer"]["n_unmapped"] == 0
  assert results["transfer"]["pretrained"]["n"] == 200
  markdown = (tmp_path / "results.md").read_text()
  for heading in ("## Linear probe", "## kNN", "## Fine-tuning", "## Label fractions", "## Transfer"):
    assert heading in markdown
  assert "![label_fractions_linear_probe.png](label_fractions_linear_probe.png)" in markdown
  assert f"| pretrained | {results['knn']['pretrained']['auroc']:.4f}" in markdown


def test_features_are_cached_per_checkpoint(pretrained_run, tmp_path, monkeypatch):
  config = _eval_config(pretrained_run)
  first = runner.evaluate(config, tmp_path)
  assert first["feature_cache"] == {"hits": 0, "misses": 6}
  monkeypatch.setattr(features, "extract_features", lambda *a, **k: pytest.fail("extracted again"))
  second = runner.evaluate(config, tmp_path)
  assert second["feature_cache"] == {"hits": 6, "misses": 0}
  assert second["linear_probe"] == first["linear_probe"]
  # Another checkpoint is another key: its features are extracted, not served from step 4's.
  monkeypatch.undo()
  config.step = 2
  assert runner.evaluate(config, tmp_path)["feature_cache"]["misses"] == 6


def test_watch_evaluates_each_checkpoint_once_and_logs_to_the_run(pretrained_run, tmp_path):
  config = _eval_config(pretrained_run)
  config.baselines = ()
  config.n_boot = 0
  assert runner.watch(config, tmp_path, sleep=lambda s: pytest.fail("waited")) == [2, 4]
  log = [json.loads(line) for line in (pretrained_run / runner.WATCH_LOG).read_text().splitlines()]
  assert [line["step"] for line in log] == [2, 4]
  step_4 = json.loads((tmp_path / "step_4" / "results.json").read_text())
  assert log[1]["eval/linear_probe/pretrained/auroc"] == step_4["linear_probe"]["pretrained"]["auroc"]
  # A restarted watcher finds both steps done: nothing to evaluate, no waiting.
  assert runner.watch(config, tmp_path, sleep=lambda s: pytest.fail("waited")) == []
  (pretrained_run / runner.WATCH_LOG).unlink()

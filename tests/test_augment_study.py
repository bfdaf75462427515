"""The augmentation-pair study at tiny scale, and preview grids from real images."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from medssl_jax import augment
from medssl_jax.cli import augment_study
from medssl_jax.cli import preview
from medssl_jax.data import catalog
from medssl_jax.evaluation import runner
from medssl_jax.loop import checkpointing
from medssl_jax.loop import configuration
from medssl_jax.loop import preemption
from medssl_jax.loop import pretrain

from conftest import REPO_ROOT


def _eval_config():
  config = configuration.load_config_file(str(REPO_ROOT / "configs" / "eval" / "linear_probe.py"))
  config.probe.Cs, config.n_boot, config.batch_size = (1.0,), 20, 128
  return config


def _read_matrix(study_dir):
  with open(study_dir / "matrix.csv") as f:
    rows = list(csv.reader(f))
  return rows[0][1:], {row[0]: row[1:] for row in rows[1:]}


def test_two_by_two_study_in_two_shards_then_collected(tiny_config, tmp_path, monkeypatch):
  ops = ["flip", "brightness"]
  tiny_config.num_steps = 2
  tiny_config.data.name = "breastmnist"  # 780 images: the probes' features come quickly
  study = tmp_path / "study"
  # flip (geometric) + brightness is the same policy in either order: 3 runs, not 4.
  assert augment_study.cells_to_train(ops) == [("flip", "flip"), ("flip", "brightness"),
                                               ("brightness", "brightness")]
  augment_study.run_study(tiny_config, _eval_config(), study, ops, shard=(0, 2))
  columns, rows = _read_matrix(study)
  assert columns == ops
  assert rows["flip"][0] and rows["brightness"][1] and not rows["flip"][1] and not rows["brightness"][0]

  augment_study.run_study(tiny_config, _eval_config(), study, ops, shard=(1, 2))
  policies = {json.loads((study / name / "config.json").read_text())["augment"]["policy"]
              for name in ("flip", "flip+brightness", "brightness")}
  assert policies == {"flip", "flip+brightness", "brightness"}
  assert not (study / "brightness+flip").exists()
  _, rows = _read_matrix(study)
  assert rows["brightness"][0] == rows["flip"][1] != ""

  # Finished cells are never trained again: collecting reads their results only.
  monkeypatch.setattr(pretrain, "run", lambda *a, **k: pytest.fail("retrained a cell"))
  matrix = augment_study.run_study(tiny_config, _eval_config(), study, ops, collect_only=True)
  assert np.isfinite(matrix).all() and ((0 <= matrix) & (matrix <= 1)).all()
  _, rows = _read_matrix(study)
  for i, first in enumerate(ops):
    for j, second in enumerate(ops):
      cell = augment_study.cell_name(*augment_study.shared_cell(first, second, ops))
      expected = json.loads((study / cell / "eval" / "results.json").read_text())
      assert float(rows[first][j]) == pytest.approx(expected["linear_probe"]["pretrained"]["auroc"], abs=1e-4)
      assert matrix[i, j] == expected["linear_probe"]["pretrained"]["auroc"]
  with Image.open(study / "matrix.png") as image:
    assert image.size[0] > 200 and image.size[1] > 200


def test_sigterm_mid_cell_stops_the_study_without_evaluating_the_cell(tiny_config, tmp_path, monkeypatch):
  """A preempted cell used to be evaluated as if finished, and the study went on to the next."""
  monkeypatch.setattr(preemption.PreemptionWatch, "should_stop", lambda self, step: step == 1)
  monkeypatch.setattr(runner, "evaluate", lambda *a, **k: pytest.fail("evaluated a cut-short cell"))
  tiny_config.num_steps, tiny_config.checkpoint_every = 3, 3
  study = tmp_path / "study"
  with pytest.raises(augment_study.Preempted, match=r"cell flip stopped at step 1 of 3"):
    augment_study.run_study(tiny_config, _eval_config(), study, ["flip", "brightness"])
  assert checkpointing.checkpoint_steps(study / "flip") == [1]
  assert not (study / "flip+brightness").exists()  # the study stopped; no next cell


def test_study_rejects_an_unknown_op_before_any_work(tiny_config, tmp_path):
  with pytest.raises(ValueError, match="valid"):
    augment_study.run_study(tiny_config, _eval_config(), tmp_path / "study", ["flip", "twirl"])
  assert not (tmp_path / "study").exists()
  with pytest.raises(ValueError, match="0 <= I < N"):
    augment_study.parse_shard("2/2")


@pytest.mark.parametrize("data,policy", [("pneumoniamnist", "cxr"), ("bloodmnist", "micle")])
def test_preview_grid_of_real_images(data, policy, medmnist_dir, tmp_path):
  source = catalog.open_source(data, "train", data_dir=str(medmnist_dir))
  grid = preview.preview_views(source.images[:3], policy, k=4, size=56, seed=0)
  assert grid.shape == (3, 5, 56, 56, source.images.shape[-1])
  np.testing.assert_array_equal(grid[:, 0], np.asarray(augment.preprocess_batch(source.images[:3], 56)))
  for j in range(1, 5):  # every view differs from the original and from the other views
    assert not np.allclose(grid[:, j], grid[:, 0])
  assert not np.allclose(grid[:, 1], grid[:, 2])
  np.testing.assert_array_equal(grid, preview.preview_views(source.images[:3], policy, k=4, size=56, seed=0))

  path = preview.write_preview(source, policy, tmp_path, n=3, k=4, size=56, seed=0)
  assert path.name == f"preview_{policy}.png"
  with Image.open(path) as image:
    assert image.size[0] > image.size[1] > 100

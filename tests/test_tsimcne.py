"""t-SimCNE: the Cauchy InfoNCE against NumPy, its three stages through the real loop (on the
synthetic data set), and the learned 2-D map of real BreastMNIST through the evaluation binary."""
import jax
import numpy as np
import pytest

from medssl_jax.data import catalog
from medssl_jax.loop import checkpointing
from medssl_jax.loop import pretrain
from medssl_jax.methods import tsimcne


def cauchy_info_nce_numpy(z1, z2):
  z = np.concatenate([z1, z2]).astype(np.float64)
  n = len(z1)
  similarity = lambda a, b: 1.0 / (1.0 + np.sum((a - b) ** 2))
  total = 0.0
  for i in range(2 * n):
    partner = (i + n) % (2 * n)
    denominator = sum(similarity(z[i], z[k]) for k in range(2 * n) if k != i)
    total += -np.log(similarity(z[i], z[partner]) / denominator)
  return total / (2 * n)


@pytest.mark.parametrize("n,d", [(4, 2), (9, 2), (6, 128)])
def test_cauchy_info_nce_matches_numpy(n, d):
  rng = np.random.default_rng(n + d)
  z1, z2 = rng.normal(size=(n, d)) * 3, rng.normal(size=(n, d)) * 3
  loss = tsimcne.cauchy_info_nce(z1.astype(np.float32), z2.astype(np.float32))
  np.testing.assert_allclose(float(loss), cauchy_info_nce_numpy(z1, z2), rtol=1e-5)


def test_three_stages_freeze_and_replace_the_output_layer(synthetic_config, tmp_path):
  """Stage 2 starts from stage 1 with a new 2-D output layer and changes only that layer."""
  synthetic_config.method = "tsimcne"
  synthetic_config.num_steps = 2
  synthetic_config.model.projector_dim = 16
  stage1 = tmp_path / "stage1"
  pretrain.run(synthetic_config, stage1)

  synthetic_config.model.projector_dim = 2
  synthetic_config.init_from = str(stage1)
  synthetic_config.init.modules = ("backbone", "projector")
  synthetic_config.optim.trainable = "projector/Dense_1/.*"
  stage2 = tmp_path / "stage2"
  pretrain.run(synthetic_config, stage2)

  _, before, _ = checkpointing.restore_variables(stage1)
  _, after, _ = checkpointing.restore_variables(stage2)
  assert after["params"]["projector"]["Dense_1"]["kernel"].shape == (32, 2)
  frozen = [(before["params"]["backbone"], after["params"]["backbone"]),
            (before["params"]["projector"]["Dense_0"], after["params"]["projector"]["Dense_0"])]
  for old, new in frozen:
    jax.tree_util.tree_map(np.testing.assert_array_equal, old, new)

  synthetic_config.init_from = str(stage2)
  synthetic_config.optim.trainable = ""
  stage3 = tmp_path / "stage3"
  pretrain.run(synthetic_config, stage3)
  _, final, _ = checkpointing.restore_variables(stage3)
  assert not np.array_equal(final["params"]["backbone"]["conv_init"]["kernel"],
                            after["params"]["backbone"]["conv_init"]["kernel"])


def test_learned_2d_map_through_the_evaluation_binary(tiny_config, tmp_path):
  from medssl_jax.evaluation import runner  # pylint: disable=g-import-not-at-top
  from medssl_jax.loop import configuration  # pylint: disable=g-import-not-at-top
  tiny_config.method, tiny_config.num_steps, tiny_config.model.projector_dim = "tsimcne", 1, 2
  tiny_config.data.name = "breastmnist"  # 780 images: a quick full map
  pretrain.run(tiny_config, tmp_path / "run")
  config = configuration.load_config_file("configs/eval/embedding_2d.py")
  config.pretrain_workdir, config.baselines = str(tmp_path / "run"), ()
  result = runner.evaluate(config, tmp_path / "eval")["embedding_2d"]
  assert result["kind"] == "learned"
  assert result["baselines"] == {}  # t-SNE maps of baselines: test_evaluate.py (slow here)
  saved = np.load(tmp_path / "eval" / "embedding_2d.npz")
  assert saved["points"].shape == (780, 2)
  expected = np.concatenate([catalog.open_source("breastmnist", split, tiny_config.data.dir).labels
                             for split in ("train", "val", "test")])
  np.testing.assert_array_equal(saved["labels"], expected)
  assert (tmp_path / "eval" / "embedding_2d.png").stat().st_size > 10_000

"""Training resumes exactly: a run interrupted after step k ends bitwise equal to one that was not.

The loop's mechanics, on the synthetic in-memory data set (tests/synthetic_data.py)."""
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp

from medssl_jax.loop import checkpointing
from medssl_jax.loop import pretrain


def _saved_state(workdir, step):
  manager = ocp.CheckpointManager((workdir / "checkpoints").absolute(),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]


def _data_state(workdir, step):
  files = sorted((workdir / "checkpoints" / str(step) / "data").iterdir())
  return [f.read_text() for f in files]


def test_resume_after_interruption_is_bitwise_exact(synthetic_config, tmp_path):
  workdir = tmp_path / "run"
  final = pretrain.run(synthetic_config, workdir)
  assert int(final.step) == 6
  uninterrupted = _saved_state(workdir, 6)
  uninterrupted_data = _data_state(workdir, 6)

  # Simulate a preemption right after the step-3 checkpoint: everything later is lost.
  shutil.rmtree(workdir / "checkpoints" / "6")
  resumed_final = pretrain.run(synthetic_config, workdir)
  assert int(resumed_final.step) == 6
  resumed = _saved_state(workdir, 6)

  leaves_a = jax.tree_util.tree_leaves_with_path(uninterrupted)
  leaves_b = dict(jax.tree_util.tree_leaves_with_path(resumed))
  assert len(leaves_a) == len(leaves_b) > 10
  for path, a in leaves_a:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(leaves_b[path]), err_msg=str(path))
  # The data iterator ended at the same place, so the same batches were seen.
  assert _data_state(workdir, 6) == uninterrupted_data


def test_training_writes_metrics_and_loss_is_finite(synthetic_config, tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  synthetic_config.num_steps = 3
  pretrain.run(synthetic_config, tmp_path)
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [l["step"] for l in lines] == [3]
  assert np.isfinite(lines[0]["loss"]) and lines[0]["loss"] > 0
  assert list((tmp_path / "tensorboard").iterdir()), "no TensorBoard event file"
  assert checkpointing.load_config(tmp_path).model.width == synthetic_config.model.width

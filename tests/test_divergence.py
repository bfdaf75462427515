"""A diverging run (an absurd learning rate) stops at once with a one-line error naming the
step and the last good checkpoint, which stays restorable; nan_policy=skip_step discards the
non-finite updates instead. Nothing non-finite is ever saved or written as bare NaN."""
import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from medssl_jax import errors
from medssl_jax.loop import pretrain
from medssl_jax.loop import sharding


def _saved_state(workdir, step):
  manager = ocp.CheckpointManager((workdir / "checkpoints").absolute(),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]


def _all_finite(tree):
  return all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(tree)
             if np.issubdtype(np.asarray(x).dtype, np.inexact))


def _one_device():
  # One device compiles faster than eight; the policy is the same on any mesh.
  return sharding.create_mesh(jax.devices()[:1])


def _strict_lines(path):
  def refuse(token):
    raise AssertionError(f"non-strict JSON token {token}")
  return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def test_absurd_lr_stops_then_skip_step_resumes_from_the_last_good_checkpoint(synthetic_config, tmp_path):
  config = synthetic_config
  config.optim.base_lr = 1e12
  config.num_steps, config.log_every, config.checkpoint_every = 4, 1, 1
  # Steps 1-2 are finite (warmup starts at lr 0), step 3 is not: measured with this config.
  with pytest.raises(pretrain.DivergedError) as raised:
    pretrain.run(config, tmp_path, mesh=_one_device())
  message = str(raised.value)
  assert isinstance(raised.value, errors.UserError) and "\n" not in message
  assert "at step 3;" in message and "last good checkpoint is step 2" in message, message
  saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert saved == [1, 2]
  last_good = _saved_state(tmp_path, 2)
  assert _all_finite(last_good)
  assert [line["step"] for line in _strict_lines(tmp_path / "metrics.jsonl")] == [1, 2]

  # skip_step resumes from step 2 (it restores) and discards every non-finite update.
  config.nan_policy = "skip_step"
  final = pretrain.run(config, tmp_path, mesh=_one_device())
  assert int(final.step) == 4
  lines = _strict_lines(tmp_path / "metrics.jsonl")
  assert [line["step"] for line in lines] == [1, 2, 3, 4]
  assert [line["skipped_steps"] for line in lines[2:]] == [1, 1]
  assert lines[3]["loss"] is None  # no applied step in that interval: null, not NaN
  end = _saved_state(tmp_path, 4)
  assert _all_finite(end)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(last_good["params"]),
                          jax.tree_util.tree_leaves(end["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))


def test_unknown_nan_policy_is_a_user_error(synthetic_config, tmp_path):
  synthetic_config.nan_policy = "ignore"
  with pytest.raises(errors.UserError, match="nan_policy"):
    pretrain.run(synthetic_config, tmp_path)
  assert not list(tmp_path.iterdir())

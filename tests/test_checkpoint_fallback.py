"""A latest checkpoint that cannot be restored (bytes flipped in an array file, a truncated
file, a missing commit marker) is set aside and training resumes from the step before it,
ending exactly where an uninterrupted run ends; evaluation and init_from name the step."""
import errno
import os
import shutil

import jax
import numpy as np
import pytest

from medssl_jax.loop import checkpointing
from medssl_jax.loop import pretrain
from medssl_jax.loop import storage

import conftest
import synthetic_data


def _array_data_files(workdir, step):
  """Every file of the step's OCDBT data folders. How tensorstore spreads the arrays over
  them varies with timing (one large file on an idle machine, several under load, beside
  B-tree files no restore reads), so every one is corrupted, not only the largest."""
  state_dir = workdir / "checkpoints" / str(step) / "state"
  files = [os.path.join(root, name) for root, _, names in os.walk(state_dir)
           for name in names if os.path.basename(root) == "d"]
  assert files, f"no OCDBT data files under {state_dir}"
  return files


def _flip_bytes(workdir, step):
  for path in _array_data_files(workdir, step):
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    data[max(0, middle - 512):middle + 512] = bytes(b ^ 0xFF for b in data[max(0, middle - 512):middle + 512])
    open(path, "wb").write(bytes(data))


def _truncate(workdir, step):
  for path in _array_data_files(workdir, step):
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])


def _delete_commit_marker(workdir, step):
  os.remove(workdir / "checkpoints" / str(step) / checkpointing.COMMIT_MARKER)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """An uninterrupted 6-step run, and a copy of it without step 6: a run stopped at step 4."""
  root = tmp_path_factory.mktemp("fallback")
  synthetic_data.register()
  config = conftest.make_tiny_config("")
  config.data.name = synthetic_data.NAME
  config.checkpoint_every = 2
  config.num_steps = 6
  pretrain.run(config, root / "uninterrupted")
  assert checkpointing.checkpoint_steps(root / "uninterrupted") == [2, 4, 6]
  shutil.copytree(root / "uninterrupted", root / "stopped_at_4")
  shutil.rmtree(root / "stopped_at_4" / "checkpoints" / "6")
  return config, root


@pytest.mark.parametrize("corrupt", [_flip_bytes, _truncate, _delete_commit_marker])
def test_unrestorable_latest_step_is_set_aside_and_training_resumes_from_the_one_before(
    runs, corrupt, tmp_path, caplog):
  config, root = runs
  workdir = tmp_path / "run"
  shutil.copytree(root / "stopped_at_4", workdir)
  corrupt(workdir, 4)
  config = config.copy_and_resolve_references()
  config.num_steps = 6
  pretrain.run(config, workdir)

  assert "checkpoint step 4 cannot be restored" in caplog.text
  set_aside = list((workdir / checkpointing.SET_ASIDE_DIR).iterdir())
  assert [p.name.split("-")[0] for p in set_aside] == ["4"]
  _, expected, _ = checkpointing.restore_variables(root / "uninterrupted", 6)
  _, actual, _ = checkpointing.restore_variables(workdir, 6)
  jax.tree_util.tree_map(np.testing.assert_array_equal, actual, expected)


def test_no_restorable_step_stops_in_one_line_and_moves_nothing(runs, tmp_path):
  config, root = runs
  workdir = tmp_path / "run"
  shutil.copytree(root / "stopped_at_4", workdir)
  _truncate(workdir, 4)
  _delete_commit_marker(workdir, 2)
  config = config.copy_and_resolve_references()
  config.num_steps = 6
  with pytest.raises(checkpointing.UnrestorableCheckpointError) as error:
    pretrain.run(config, workdir)
  message = str(error.value)
  assert "step 4: " in message and "step 2: its commit marker" in message and "\n" not in message
  assert checkpointing.checkpoint_steps(workdir) == [2, 4]
  assert not (workdir / checkpointing.SET_ASIDE_DIR).exists()


def test_evaluation_and_init_from_name_the_unrestorable_step(runs, tmp_path):
  _, root = runs
  workdir = tmp_path / "run"
  shutil.copytree(root / "stopped_at_4", workdir)
  _truncate(workdir, 4)
  with pytest.raises(checkpointing.UnrestorableCheckpointError,
                     match=r"checkpoint step 4 in .* cannot be restored .*other steps present: \[2\]"):
    checkpointing.restore_variables(workdir)
  _, variables, step = checkpointing.restore_variables(workdir, 2)  # no silent fallback, but 2 is fine
  assert step == 2 and variables["params"]


def test_fingerprint_changes_with_one_flipped_bit_or_swapped_values():
  from medssl_jax.loop import fingerprint  # pylint: disable=g-import-not-at-top
  tree = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "n": np.int32(7),
          "h": np.ones(5, np.float16)}
  saved = fingerprint.fingerprint(tree)
  assert fingerprint.mismatches(tree, saved) == []
  flipped = dict(tree, w=tree["w"].copy())
  flipped["w"].view(np.uint32)[1, 2] ^= 1 << 7
  swapped = dict(tree, w=tree["w"][::-1].copy())
  assert fingerprint.mismatches(flipped, saved) == ["w"]
  assert fingerprint.mismatches(swapped, saved) == ["w"]
  assert fingerprint.mismatches({"w": tree["w"]}, saved) == ["h", "n"]


def test_a_full_disk_stops_in_one_line_and_the_rerun_resumes_from_the_last_checkpoint(
    runs, tmp_path, monkeypatch):
  """The disk fills up at the save of step 4 (an injected ENOSPC where Orbax's save starts; a
  real full tmpfs gives the same message, see the issue note): the run stops naming the
  path, the free space and the checkpoint size, step 2 stays, and the rerun ends exactly as
  an uninterrupted run."""
  config, root = runs
  workdir = tmp_path / "run"
  real_save = checkpointing.save

  def save_on_a_full_disk(manager, step, state, data_iterator=None):
    if step == 4:
      raise OSError(errno.ENOSPC, "No space left on device")
    real_save(manager, step, state, data_iterator)

  monkeypatch.setattr(checkpointing, "save", save_on_a_full_disk)
  with pytest.raises(storage.StorageError) as error:
    pretrain.run(config, workdir)
  message = str(error.value)
  assert message.startswith(f"no space left on the device writing {workdir}/checkpoints ("), message
  assert "MB free): a checkpoint of this run takes" in message
  assert "the last committed checkpoint (step 2) is intact" in message
  monkeypatch.setattr(checkpointing, "save", real_save)
  pretrain.run(config, workdir)
  _, expected, _ = checkpointing.restore_variables(root / "uninterrupted", 6)
  _, actual, _ = checkpointing.restore_variables(workdir, 6)
  jax.tree_util.tree_map(np.testing.assert_array_equal, actual, expected)

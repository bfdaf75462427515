"""Bad input gets a clear error and changes nothing on disk."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import pytest

from medssl_jax import methods
from medssl_jax.data import download
from medssl_jax.loop import checkpointing
from medssl_jax.loop import defaults
from medssl_jax.loop import pretrain
from medssl_jax.loop import sharding

REPO = pathlib.Path(__file__).resolve().parents[1]


def _snapshot(directory: pathlib.Path):
  return sorted((str(p.relative_to(directory)), p.stat().st_mtime_ns) for p in directory.rglob("*"))


def test_unknown_config_key_lists_valid_keys(tmp_path):
  workdir = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "-m", "medssl_jax.cli.train", "--config=configs/simclr_pneumoniamnist.py",
       f"--workdir={workdir}", "--config.data.nme=x"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert "unknown config key(s) data.nme" in result.stderr
  assert "data.name" in result.stderr and "batch_size" in result.stderr
  assert "Traceback" not in result.stderr
  assert not workdir.exists()


def test_batch_size_not_divisible_by_devices(tiny_config, tmp_path):
  tiny_config.batch_size = 12
  with pytest.raises(ValueError, match="not divisible by the 8 devices"):
    pretrain.run(tiny_config, tmp_path / "run", mesh=sharding.create_mesh(jax.devices()[:8]))
  assert not (tmp_path / "run").exists()


def test_missing_data_file_names_file_url_and_fix(tiny_config, tmp_path, monkeypatch):
  empty = tmp_path / "empty"
  empty.mkdir()
  tiny_config.data.dir = str(empty)
  tiny_config.data.cache_dir = str(tmp_path / "cache")
  # Port 9 on loopback: nothing listens, so the download fails at once, offline or not.
  monkeypatch.setenv("MEDSSL_MEDMNIST_URL", "http://127.0.0.1:9/{name}.npz")
  with pytest.raises(download.DataUnavailableError) as error:
    pretrain.run(tiny_config, tmp_path / "run")
  message = str(error.value)
  assert "pneumoniamnist.npz" in message and "http://127.0.0.1:9/pneumoniamnist.npz" in message
  assert "MEDSSL_DATA_DIR" in message and "--config.data.dir" in message
  assert not (tmp_path / "run").exists()
  assert not list((tmp_path / "cache").glob("*.npz")), "a failed download left a file in the cache"


def test_incompatible_workdir_is_refused_untouched(tiny_config, tmp_path):
  workdir = tmp_path / "run"
  tiny_config.num_steps = 1
  tiny_config.checkpoint_every = 1
  pretrain.run(tiny_config, workdir)
  before = _snapshot(workdir)
  tiny_config.model.width = 1 / 8
  with pytest.raises(checkpointing.IncompatibleCheckpointError, match="model.width"):
    pretrain.run(tiny_config, workdir)
  assert _snapshot(workdir) == before


def test_cli_reports_user_errors_without_traceback(tmp_path):
  env = dict(os.environ, MEDSSL_DATA_DIR=str(tmp_path), MEDSSL_MEDMNIST_URL="http://127.0.0.1:9/{name}.npz",
             XDG_CACHE_HOME=str(tmp_path / "cache"))
  result = subprocess.run(
      [sys.executable, "-m", "medssl_jax.cli.train", "--config=configs/simclr_pneumoniamnist.py",
       f"--workdir={tmp_path / 'run'}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("error: Could not download pneumoniamnist.npz")
  assert "Traceback" not in result.stderr


def test_internal_errors_keep_their_traceback(medmnist_dir, tmp_path):
  """A ValueError raised by a bug (here: patched into the augmentation inside the jitted step)
  is not mistaken for a user error: the binary shows the full traceback, not one line."""
  code = "\n".join([
      "import sys",
      "from medssl_jax import augment",
      "def broken(*args, **kwargs):",
      "  raise ValueError('internal bug deep in the step')",
      "augment.augment_batch = broken",
      "from medssl_jax.cli import train",
      f"sys.argv = ['medssl-train', '--config=configs/simclr_pneumoniamnist.py', "
      f"'--workdir={tmp_path / 'run'}', '--config.data.dir={medmnist_dir}', "
      "'--config.model.width=0.0625', '--config.batch_size=16', '--config.num_steps=1']",
      "train.run()",
  ])
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode not in (0, 2)
  assert "Traceback" in result.stderr
  assert "ValueError: internal bug deep in the step" in result.stderr
  assert "error: internal bug" not in result.stderr


def test_workdir_written_before_a_key_was_added_still_resumes_and_loads(tmp_path):
  """A key added to the defaults later (model.patch_size) is absent from an older config.json:
  that is not a structural difference, and loading the config fills it with its default."""
  config = defaults.pretraining()
  saved = config.to_dict()
  del saved["model"]["patch_size"]
  (tmp_path / checkpointing.CONFIG_FILE).write_text(json.dumps(saved))
  checkpointing.check_compatible(tmp_path, config, pretrain.structural_keys(methods.get_method("simclr")))
  assert checkpointing.load_config(tmp_path).model.patch_size == config.model.patch_size
  saved["model"]["width"] = 2.0
  (tmp_path / checkpointing.CONFIG_FILE).write_text(json.dumps(saved))
  with pytest.raises(checkpointing.IncompatibleCheckpointError, match="model.width"):
    checkpointing.check_compatible(tmp_path, config, pretrain.structural_keys(methods.get_method("simclr")))


def test_turning_the_online_probe_on_in_a_workdir_without_it_is_refused_in_one_line(tmp_path):
  """The probe's state is part of the checkpoint: a resume with it switched is another state."""
  config = defaults.pretraining()
  (tmp_path / checkpointing.CONFIG_FILE).write_text(config.to_json())
  config.online_probe.enabled = not config.online_probe.enabled
  with pytest.raises(checkpointing.IncompatibleCheckpointError, match="online_probe.enabled"):
    checkpointing.check_compatible(tmp_path, config, pretrain.structural_keys(methods.get_method("simclr")))

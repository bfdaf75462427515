"""Every numeric setting is checked before anything is written: one rule per key, a bad value
refused in one line naming it; a workdir that is a file, a batch larger than the training
split and a value of the wrong type are refused the same way, with exit 2 from the binary."""
import pathlib
import subprocess
import sys

import pytest

from medssl_jax import errors
from medssl_jax.loop import defaults
from medssl_jax.loop import pretrain
from medssl_jax.loop import validation

REPO = pathlib.Path(__file__).resolve().parents[1]

BAD_VALUES = {
    validation.POSITIVE_INT: [0, -5, 2.5],
    validation.NON_NEGATIVE_INT: [-1, 0.5],
    validation.ANY_INT: [1.5],
    validation.POSITIVE: [0, -0.1, float("nan"), float("inf")],
    validation.NON_NEGATIVE: [-1e-3],
    validation.FRACTION: [-0.1, 1.5],
    validation.BELOW_ONE: [1.0],
    validation.CHANNELS: [2],
    validation.WEIGHT_DECAY_END: [-0.5, -2.0],
    validation.STEP_OR_LATEST: [-2],
    validation.SCALE_RANGE: [(0.5, 0.2), (0.0, 1.0), (0.2, 1.5)],
    validation.SPLIT_FRACTIONS: [(0.5, 0.3, 0.3), (1.2, -0.1, -0.1)],
}


def test_every_numeric_key_of_the_defaults_has_a_rule():
  keys = validation.numeric_keys(defaults.pretraining())
  assert sorted(set(keys) - set(validation.RULES)) == []
  assert sorted(set(validation.RULES) - set(keys)) == [], "rules for keys that do not exist"
  validation.check_settings(defaults.pretraining())  # every default is allowed


@pytest.mark.parametrize("key", sorted(validation.RULES))
def test_each_bad_value_is_refused_in_one_line_naming_the_key(key):
  rule = validation.RULES[key]
  for bad in BAD_VALUES[rule]:
    config = defaults.pretraining()
    section, _, name = key.rpartition(".")
    target = config
    for part in filter(None, section.split(".")):
      target = target[part]
    with target.ignore_type():
      target[name] = bad
    stored = target[name]  # as the config holds it (0 in a float field is 0.0)
    with pytest.raises(errors.UserError) as error:
      validation.check_settings(config)
    message = str(error.value)
    assert message.startswith(f"{key}={stored!r} is not allowed: it must be {rule.says}"), message
    assert "\n" not in message


def test_a_batch_larger_than_the_training_split_is_refused_before_writing(tiny_config, tmp_path):
  tiny_config.data.name = "breastmnist"  # 546 training images
  tiny_config.batch_size = 4096
  with pytest.raises(errors.UserError, match="batch_size=4096 is larger than the 546 images"):
    pretrain.run(tiny_config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_a_workdir_that_is_a_file_is_refused(synthetic_config, tmp_path):
  a_file = tmp_path / "notes.txt"
  a_file.write_text("not a run")
  with pytest.raises(errors.UserFileExistsError, match="is an existing file, not a folder"):
    pretrain.run(synthetic_config, a_file)
  assert a_file.read_text() == "not a run"


@pytest.mark.parametrize("override, expected", [
    ("--config.batch_size=abc", "error: --config.batch_size=abc: batch_size must be an integer"),
    ("--config.num_steps=-5", "error: num_steps=-5 is not allowed: it must be an integer >= 0"),
    ("--config.simclr.temperature=0", "error: simclr.temperature=0.0 is not allowed"),
])
def test_the_binary_exits_2_in_one_line_and_writes_nothing(override, expected, tmp_path):
  workdir = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "-m", "medssl_jax.cli.train", "--config=configs/simclr_pneumoniamnist.py",
       f"--workdir={workdir}", override], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1].startswith(expected), result.stderr[-500:]
  assert "Traceback" not in result.stderr
  assert not workdir.exists()

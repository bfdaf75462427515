"""Every numeric pretraining setting checked before anything is written.

One rule per key (RULES): an impossible value (`num_steps=-5`, `simclr.temperature=0`, a
momentum of 2) ends the run at once with one line naming the key, the value and what is
allowed, instead of doing nothing, dividing by zero, or training something meaningless.
tests/test_validation.py checks that every numeric key of the defaults has a rule.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import ml_collections

from medssl_jax import errors
from medssl_jax import paths


class Rule(NamedTuple):
  allows: Callable[[object], bool]
  says: str  # what is allowed, completing "must be ..."


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


POSITIVE_INT = Rule(lambda v: _integer(v) and v > 0, "an integer > 0")
NON_NEGATIVE_INT = Rule(lambda v: _integer(v) and v >= 0, "an integer >= 0")
ANY_INT = Rule(_integer, "an integer")
POSITIVE = Rule(lambda v: _number(v) and v > 0, "a number > 0")
NON_NEGATIVE = Rule(lambda v: _number(v) and v >= 0, "a number >= 0")
FRACTION = Rule(lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]")
BELOW_ONE = Rule(lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)")
WEIGHT_DECAY_END = Rule(lambda v: _number(v) and (v >= 0 or v == -1), "a number >= 0, or -1 for constant")
CHANNELS = Rule(lambda v: v in (1, 3), "1 or 3")
STEP_OR_LATEST = Rule(lambda v: _integer(v) and v >= -1, "an integer >= 0, or -1 for the latest")
SCALE_RANGE = Rule(lambda v: (isinstance(v, (tuple, list)) and len(v) == 2 and all(_number(x) for x in v)
                              and 0 < v[0] <= v[1] <= 1), "(low, high) with 0 < low <= high <= 1")
SPLIT_FRACTIONS = Rule(lambda v: (isinstance(v, (tuple, list)) and len(v) == 3
                                  and all(_number(x) and x >= 0 for x in v) and abs(sum(v) - 1) < 1e-6),
                       "three fractions >= 0 (train, val, test) that sum to 1")

RULES: dict[str, Rule] = {
    "seed": ANY_INT,
    "batch_size": POSITIVE_INT,
    "num_steps": NON_NEGATIVE_INT,            # 0 = initialise (and init_from), write the config, stop
    "log_every": POSITIVE_INT,
    "checkpoint_every": POSITIVE_INT,
    "checkpoint_every_minutes": NON_NEGATIVE,
    "keep_checkpoints": POSITIVE_INT,
    "init.step": STEP_OR_LATEST,
    "eval_every": NON_NEGATIVE_INT,           # 0 = at the last step only
    "profile.start_step": NON_NEGATIVE_INT,   # 0 = no profile
    "profile.num_steps": POSITIVE_INT,
    "online_probe.lr": POSITIVE,
    "online_probe.batch_images": POSITIVE_INT,
    "online_probe.eval_images": POSITIVE_INT,
    "online_probe.knn_k": POSITIVE_INT,
    "augment.size": POSITIVE_INT,
    "data.channels": CHANNELS,
    "data.image_size": NON_NEGATIVE_INT,      # 0 = the data's own size
    "data.num_workers": NON_NEGATIVE_INT,
    "data.prefetch_to_device": POSITIVE_INT,
    "data.split.seed": ANY_INT,
    "data.split.fractions": SPLIT_FRACTIONS,
    "model.width": POSITIVE,
    "model.patch_size": POSITIVE_INT,
    "model.drop_path": BELOW_ONE,
    "model.projector_hidden_dim": POSITIVE_INT,
    "model.projector_dim": POSITIVE_INT,
    "model.projector_layers": POSITIVE_INT,
    "optim.base_lr": POSITIVE,
    "optim.warmup_steps": NON_NEGATIVE_INT,
    "optim.weight_decay": NON_NEGATIVE,
    "optim.weight_decay_end": WEIGHT_DECAY_END,
    "optim.momentum": FRACTION,
    "optim.trust_coefficient": POSITIVE,
    "simclr.temperature": POSITIVE,
    "moco.temperature": POSITIVE,
    "moco.momentum": FRACTION,
    "moco.queue_size": POSITIVE_INT,
    "moco.shuffle_bn_groups": POSITIVE_INT,
    "byol.tau_base": FRACTION,
    "byol.predictor_hidden_dim": NON_NEGATIVE_INT,    # 0 = the projector's hidden size
    "simsiam.predictor_hidden_dim": NON_NEGATIVE_INT,  # 0 = a quarter of the projection
    "dino.out_dim": POSITIVE_INT,
    "dino.hidden_dim": POSITIVE_INT,
    "dino.bottleneck_dim": POSITIVE_INT,
    "dino.head_layers": POSITIVE_INT,
    "dino.student_temp": POSITIVE,
    "dino.teacher_temp": POSITIVE,
    "dino.warmup_teacher_temp": POSITIVE,
    "dino.warmup_teacher_temp_steps": NON_NEGATIVE_INT,
    "dino.center_momentum": FRACTION,
    "dino.momentum_teacher": FRACTION,
    "dino.clip_grad": NON_NEGATIVE,            # 0 = no clipping
    "dino.freeze_last_layer_steps": NON_NEGATIVE_INT,
    "dino.local_crops": NON_NEGATIVE_INT,
    "dino.local_size": POSITIVE_INT,
    "dino.global_scale": SCALE_RANGE,
    "dino.local_scale": SCALE_RANGE,
}


def numeric_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Dotted keys whose value is a number or a tuple of numbers."""
  keys = []
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      keys += numeric_keys(value, name + ".")
    elif _number(value) or (isinstance(value, (tuple, list)) and value and all(_number(v) for v in value)):
      keys.append(name)
  return keys


def get_dotted(config, dotted: str):
  """config[a][b] for "a.b"; None if a part is missing."""
  value = config
  for part in dotted.split("."):
    if part not in value:
      return None
    value = value[part]
  return value


def check_settings(config: ml_collections.ConfigDict) -> None:
  """Raises a UserError naming the first setting outside what its rule allows."""
  for key, rule in RULES.items():
    value = get_dotted(config, key)
    if value is not None and not rule.allows(value):
      raise errors.UserError(f"{key}={value!r} is not allowed: it must be {rule.says}")


def check_workdir(workdir) -> None:
  path = paths.path(workdir)
  if path.exists() and not path.is_dir():
    raise errors.UserFileExistsError(f"--workdir {workdir} is an existing file, not a folder: "
                                     "name a new or existing run folder")


def check_batch_against_split(config: ml_collections.ConfigDict, split_size: int) -> None:
  """A batch larger than the training split repeats images within every batch, and the
  copies of an image become each other's negatives: refused."""
  if config.batch_size > split_size:
    raise errors.UserError(
        f"batch_size={config.batch_size} is larger than the {split_size} images of the "
        f"{config.data.name} '{config.data.train_split}' split: every batch would hold copies of "
        "the same images, and a contrastive loss would treat those copies as negatives; use "
        f"batch_size <= {split_size}")

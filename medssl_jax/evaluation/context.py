"""What every evaluation reads: one restored checkpoint, its data splits and its features.

Each representation (the pretrained backbone, and the baselines it must beat: the same
network at random initialisation, and raw pixels) is extracted once per split and cached on
disk per checkpoint, so the probes, kNN, label fractions and transfer all share it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from medssl_jax import augment
from medssl_jax import errors
from medssl_jax import methods
from medssl_jax import paths
from medssl_jax.data import catalog
from medssl_jax.data import pipeline
from medssl_jax.data import splits
from medssl_jax.evaluation import feature_cache
from medssl_jax.evaluation import features as features_lib
from medssl_jax.loop import checkpointing
from medssl_jax.models import encoder as encoder_lib

ROLES = splits.SPLITS  # an evaluation fits on train, chooses on val, reports on test
BASELINES = ("random_init", "raw_pixels")
RAW_PIXEL_MAX_SIZE = 32  # raw pixels beyond 32x32 would swamp a logistic probe


def data_config(config, pretrain_config) -> ml_collections.ConfigDict:
  """The eval's data section: the run's own (data.name == "") or the one the eval config gives."""
  if config.data.name:
    return catalog.with_defaults(config.data)
  data = catalog.with_defaults(pretrain_config.data)
  for key in ("dir", "cache_dir"):  # the same data may sit elsewhere on the eval machine
    if config.data.get(key):
      data[key] = config.data[key]
  return data


def raw_pixels(source, size: int, batch_size: int = 512) -> np.ndarray:
  """Every image resized as the network sees it (capped at 32 px), flattened, in [0, 1]."""
  size = min(size, RAW_PIXEL_MAX_SIZE)
  resize = jax.jit(lambda images: augment.preprocess_batch(images, size).reshape(images.shape[0], -1))
  return np.concatenate([np.asarray(resize(batch["image"]))
                         for batch in pipeline.sequential_batches(source, batch_size)])


def random_init_variables(backbone, image_size: int, channels: int, seed: int):
  dummy = jnp.zeros((2, image_size, image_size, channels), jnp.float32)
  return jax.device_get(backbone.init(jax.random.key(seed), dummy, train=False))


class EvalRun:
  """One checkpoint of a pretraining workdir, opened for evaluation.

  Attributes:
    config: the eval config; pretrain_config: the run's; step: the checkpoint's step.
    data: the data section the splits were opened with; splits: role -> source.
    model: the method's full network; backbone and backbone_variables: the part probed.
  """

  def __init__(self, config, step: int | None = None, cache_dir=None):
    if not config.pretrain_workdir:
      raise errors.UserError("set --config.pretrain_workdir to a pretraining workdir")
    self.config = config
    self.workdir = paths.path(config.pretrain_workdir)
    self.pretrain_config, self.variables, self.step = checkpointing.restore_variables(self.workdir, step)
    self.data = data_config(config, self.pretrain_config)
    self.splits = {role: catalog.open_data(self.data, config.data[f"{role}_split"]) for role in ROLES}
    self.image_size = self.pretrain_config.augment.size
    self.channels = self.splits["train"].image_shape[-1]
    self.model = methods.get_method(self.pretrain_config.method).create_model(self.pretrain_config)
    self.backbone = encoder_lib.create_backbone(self.pretrain_config.model)
    self.backbone_variables = {"params": self.variables["params"]["backbone"],
                               "batch_stats": self.variables["batch_stats"].get("backbone", {})}
    self.cache = feature_cache.FeatureCache(cache_dir)
    # What evaluations compute once per run and share (probe fits, label-fraction scores).
    self.memo: dict = {}

  @property
  def representations(self) -> tuple[str, ...]:
    return ("pretrained",) + tuple(self.config.baselines)

  def _network_output(self, apply_fn, variables, source) -> np.ndarray:
    return features_lib.extract_features(apply_fn, variables, source, image_size=self.image_size,
                                         batch_size=self.config.batch_size)

  def _compute(self, representation: str, source) -> np.ndarray:
    if representation == "pretrained":
      return self._network_output(features_lib.backbone_output(self.backbone),
                                  self.backbone_variables, source)
    if representation == "random_init":
      variables = random_init_variables(self.backbone, self.image_size, self.channels, self.config.seed)
      return self._network_output(features_lib.backbone_output(self.backbone), variables, source)
    if representation == "raw_pixels":
      return raw_pixels(source, self.image_size)
    if representation == "projection":  # the projector's output (t-SimCNE's 2-D map)
      return self._network_output(features_lib.projection_output(self.model), self.variables, source)
    raise errors.UserError(f"unknown representation {representation!r}")

  def features_of(self, representation: str, source, data: ml_collections.ConfigDict,
                  split: str) -> np.ndarray:
    """Features of any source (e.g. another data set, for transfer), cached per checkpoint."""
    key = feature_cache.cache_key(
        workdir=str(self.workdir), step=int(self.step), representation=representation,
        data=data.to_dict(), split=split, image_size=self.image_size, n=len(source),
        seed=self.config.seed if representation == "random_init" else None)
    return self.cache.get(f"{representation}-{split}-step{self.step}", key,
                          lambda: self._compute(representation, source))

  def features(self, representation: str) -> dict[str, np.ndarray]:
    """role -> (N, D) features of this run's train, val and test splits."""
    return {role: self.features_of(representation, source, self.data,
                                   self.config.data[f"{role}_split"])
            for role, source in self.splits.items()}

  def labels(self) -> dict[str, np.ndarray]:
    return {role: np.asarray(source.labels) for role, source in self.splits.items()}

  def test_groups(self) -> np.ndarray | None:
    """The test split's patient (group) ids when it has real ones, else None: the CIs then
    resample patients, since images of one patient are not independent."""
    source = self.splits["test"]
    return np.asarray(source.groups) if getattr(source, "has_groups", False) else None

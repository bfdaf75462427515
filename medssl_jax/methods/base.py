"""The interface every self-supervised objective implements, and nothing else.

A method is a `Method` subclass registered under a name (methods/__init__.py). It owns:
  - `section`: the config section it reads (`config.<section>`), with `defaults()` giving
    every key of that section, so `--config.<section>.key=value` works on any config file;
  - `structural_keys`: the keys of its section that decide the saved state's shapes (a
    workdir written with other values cannot be resumed);
  - `create_model(config)`: a flax Module whose submodules include `backbone` and
    `projector` (the backbone's parameters are always under params["backbone"], so
    evaluation, export and init-from work for every method);
  - `init_extra_state(variables, config)`: what it carries between steps besides the
    optimised parameters (an EMA target, a queue); {} by default;
  - `make_views(batch, key, config)`: the augmented views of one batch, made on the device
    (two views from config.augment by default; multi-crop methods return more);
  - `loss_fn(...)`: the objective of one step on those views.

The loop looks a method up once by `config.method` and never branches on its name.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import ml_collections

from medssl_jax import augment


def view_policies(config: ml_collections.ConfigDict):
  """The augmentation policy of each view; a second policy makes the pair asymmetric."""
  first = augment.get_policy(config.augment.policy)
  second = augment.get_policy(config.augment.policy_view2 or config.augment.policy)
  return first, second


def two_views(batch: dict, key: jax.Array, config: ml_collections.ConfigDict):
  """Both views augmented on the device, one key per view (and one left for the loss)."""
  policies = view_policies(config)
  key_view1, key_view2, key_loss = jax.random.split(key, 3)
  images1 = batch["view1"]
  images2 = batch.get("view2", images1)  # same-image pairs send the image once
  view1 = augment.augment_batch(images1, key_view1, policies[0], config.augment.size)
  view2 = augment.augment_batch(images2, key_view2, policies[1], config.augment.size)
  return view1, view2, key_loss


class Method:
  """Base of every method. Subclasses set `section` and implement create_model and loss_fn."""

  section: str = ""                      # config.<section> holds this method's keys
  structural_keys: tuple[str, ...] = ()  # keys of that section that decide the state's structure

  def defaults(self) -> ml_collections.ConfigDict:
    """Every key of config.<section> with its default."""
    return ml_collections.ConfigDict()

  def check_config(self, config: ml_collections.ConfigDict) -> None:
    """Raises errors.UserError for settings this method cannot run with (before any write)."""
    del config

  def create_model(self, config: ml_collections.ConfigDict) -> nn.Module:
    raise NotImplementedError

  def init_extra_state(self, variables: dict, config: ml_collections.ConfigDict) -> Any:
    """State carried from step to step besides params and batch_stats; built from the initial
    (or init-from) variables."""
    del variables, config
    return {}

  def make_views(self, batch: dict, key: jax.Array, config: ml_collections.ConfigDict):
    """(view1, view2, key left for the loss) from a batch of uint8 images on the device.

    `batch` holds "view1" (and "view2" when pairs are two different images, as in MICLe).
    view1 and view2 may be any pytree of arrays: loss_fn receives them as they are.
    """
    return two_views(batch, key, config)

  def loss_fn(self, params, batch_stats, extra, view1, view2, rng: jax.Array, step, *,
              model: nn.Module, config: ml_collections.ConfigDict):
    """The objective on two augmented views of one batch.

    `params` are what the optimizer updates; `extra` is updated here by the method itself
    (from the parameters of this step, as MoCo and BYOL do); `step` counts the updates done
    so far (for momentum schedules).

    Returns (loss, (metrics dict, new batch_stats, new extra)).
    """
    raise NotImplementedError

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
  - `loss_fn(...)`: the objective of one step on two augmented views.

The loop looks a method up once by `config.method` and never branches on its name.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import ml_collections


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

  def loss_fn(self, params, batch_stats, extra, view1, view2, rng: jax.Array, step, *,
              model: nn.Module, config: ml_collections.ConfigDict):
    """The objective on two augmented views of one batch.

    `params` are what the optimizer updates; `extra` is updated here by the method itself
    (from the parameters of this step, as MoCo and BYOL do); `step` counts the updates done
    so far (for momentum schedules).

    Returns (loss, (metrics dict, new batch_stats, new extra)).
    """
    raise NotImplementedError

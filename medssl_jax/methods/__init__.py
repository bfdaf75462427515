"""Self-supervised objectives, one module each, all with the same small interface:

  create_model(config) -> flax Module with `backbone` and `projector` submodules
  init_extra_state(variables, config) -> pytree (EMA target, queue; {} when none)
  loss_fn(params, batch_stats, extra, view1, view2, rng, *, model, config)
      -> (loss, (metrics, new_batch_stats, new_extra))
"""
from medssl_jax.methods import simclr

METHODS = {"simclr": simclr}


def get_method(name: str):
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}")
  return METHODS[name]

"""Self-supervised objectives, one module each, all with the same small interface:

  create_model(config) -> flax Module with `backbone` and `projector` submodules
  init_extra_state(variables, config) -> pytree (EMA target, queue; {} when none)
  loss_fn(params, batch_stats, extra, view1, view2, rng, step, *, model, config)
      -> (loss, (metrics, new_batch_stats, new_extra))

`params` are what the optimizer updates; anything else a method carries from step to step
(an EMA target network, a queue of keys) lives in `extra`, which the method updates itself
from the current parameters (as MoCo and BYOL do: the target follows the online network
used in this step). `step` is the number of updates done so far (for momentum schedules).
The backbone's parameters are always under params["backbone"], so evaluation and transfer
work for every method.
"""
import importlib

# config.method -> module in this package. MICLe is SimCLR's loss with data.pairing="patient".
METHODS = {"simclr": "simclr", "micle": "simclr", "simsiam": "simsiam", "byol": "byol",
           "moco": "moco", "tsimcne": "tsimcne"}


def get_method(name: str):
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}")
  return importlib.import_module(f"medssl_jax.methods.{METHODS[name]}")

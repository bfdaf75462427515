"""Self-supervised objectives: one `base.Method` subclass per file, found through one registry.

Adding a method is one new file here (a Method subclass: its config section and defaults,
structural keys, model, extra state and loss; see base.py), one `register` line below, a
recipe in configs/ and its tests. Code outside this package only calls `get_method`.
"""
from __future__ import annotations

from medssl_jax import errors
from medssl_jax.methods import base
from medssl_jax.methods import byol
from medssl_jax.methods import dino
from medssl_jax.methods import moco
from medssl_jax.methods import simclr
from medssl_jax.methods import simsiam
from medssl_jax.methods import tsimcne

_REGISTRY: dict[str, base.Method] = {}
DEFAULT_METHOD = "simclr"


def register(name: str, method: base.Method) -> None:
  """Makes `method` available as config.method=name (its config section joins the defaults)."""
  if not method.section:
    raise ValueError(f"method {name!r} ({type(method).__name__}) sets no config section")
  _REGISTRY[name] = method


def unregister(name: str) -> None:
  _REGISTRY.pop(name, None)


def get_method(name: str) -> base.Method:
  if name not in _REGISTRY:
    raise errors.UserError(f"unknown method {name!r}; known: {', '.join(sorted(_REGISTRY))}")
  return _REGISTRY[name]


def sections() -> dict[str, base.Method]:
  """config section -> the method that owns it (methods sharing a section appear once)."""
  return {method.section: method for method in _REGISTRY.values()}


register("simclr", simclr.SimCLR())
register("micle", simclr.SimCLR())  # SimCLR's loss on two images of one patient: data.pairing="patient"
register("simsiam", simsiam.SimSiam())
register("byol", byol.BYOL())
register("moco", moco.MoCo())
register("tsimcne", tsimcne.TSimCNE())
register("dino", dino.DINO())

"""Adding a method or a data source is one new piece of code: here both live in this file
alone, are registered, and a run pretrains with them through the real loop."""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from medssl_jax import methods
from medssl_jax.data import catalog
from medssl_jax.data import in_memory
from medssl_jax.loop import checkpointing
from medssl_jax.loop import defaults
from medssl_jax.loop import pretrain
from medssl_jax.methods import base
from medssl_jax.models import encoder


class MeanSquaredViews(base.Method):
  """A toy objective: the two views' projections should agree (collapses, which is fine here).
  It keeps a step counter in its extra state and one structural key."""
  section = "toy"
  structural_keys = ("width_hint",)

  def defaults(self):
    return ml_collections.ConfigDict({"weight": 1.0, "width_hint": 0})

  def create_model(self, config):
    return encoder.create_encoder(config.model)

  def init_extra_state(self, variables, config):
    del variables, config
    return {"seen": jnp.zeros((), jnp.int32)}

  def loss_fn(self, params, batch_stats, extra, view1, view2, rng, step, *, model, config):
    del rng, step
    views = jnp.concatenate([view1, view2])
    (_, z), updates = model.apply({"params": params, "batch_stats": batch_stats}, views,
                                  train=True, mutable=["batch_stats"])
    z1, z2 = jnp.split(z, 2)
    loss = config.toy.weight * jnp.mean((z1 - z2) ** 2)
    new_extra = {"seen": extra["seen"] + view1.shape[0]}
    return loss, ({"loss": loss}, updates["batch_stats"], new_extra)


class Stripes(in_memory.InMemoryRecords):
  """A toy source: 40 images of horizontal stripes, their period as the label."""

  def __init__(self, split, size):
    n = {"train": 40, "val": 8, "test": 8}[split]
    self.name, self.split, self.num_classes, self.multi_label = "stripes", split, 2, False
    self.labels = (np.arange(n) % 2).astype(np.int32)
    rows = np.arange(size)[None, :, None, None]
    period = 2 + 2 * self.labels[:, None, None, None]
    self.images = np.broadcast_to(((rows // period) % 2) * 255, (n, size, size, 1)).astype(np.uint8)
    self.groups = np.arange(n, dtype=np.int64)
    self.image_shape = self.images.shape[1:]


@pytest.fixture
def registered():
  methods.register("toy", MeanSquaredViews())
  catalog.register("stripes", lambda data, split: Stripes(split, data.image_size or 28))
  yield
  methods.unregister("toy")
  catalog.unregister("stripes")


def _toy_config():
  config = defaults.pretraining()  # after registering: holds the toy section
  config.method = "toy"
  config.data.name = "stripes"
  config.model.width, config.model.projector_hidden_dim, config.model.projector_dim = 1 / 16, 16, 8
  config.batch_size, config.num_steps, config.log_every, config.checkpoint_every = 8, 3, 1, 3
  config.optim.warmup_steps = 1
  return config


def test_a_method_and_a_source_defined_here_pretrain_through_the_loop(registered, tmp_path):
  config = _toy_config()
  assert config.toy.weight == 1.0  # the method's own section joined the defaults
  workdir = tmp_path / "run"
  state = pretrain.run(config, workdir)
  assert int(state.step) == 3
  assert int(state.extra["seen"]) == 3 * config.batch_size  # the method's extra state is carried
  lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [line["step"] for line in lines] == [1, 2, 3]
  assert all(np.isfinite(line["loss"]) for line in lines)
  _, variables, step = checkpointing.restore_variables(workdir)
  assert step == 3 and "backbone" in variables["params"]
  leaves = jax.tree_util.tree_leaves(variables["params"]["backbone"])
  assert all(np.isfinite(leaf).all() for leaf in leaves)


def test_the_methods_structural_key_guards_its_workdir(registered, tmp_path):
  config = _toy_config()
  config.num_steps = 1
  pretrain.run(config, tmp_path / "run")
  config.toy.weight = 2.0  # not structural: the run may continue with it
  checkpointing.check_compatible(tmp_path / "run", config,
                                 pretrain.structural_keys(methods.get_method("toy")))
  config.toy.width_hint = 1
  with pytest.raises(checkpointing.IncompatibleCheckpointError, match="toy.width_hint"):
    pretrain.run(config, tmp_path / "run")


def test_unknown_names_list_the_registered_ones(registered):
  with pytest.raises(ValueError, match="known: .*toy"):
    methods.get_method("nosuchmethod")
  with pytest.raises(ValueError, match="known: .*stripes"):
    catalog.open_source("nosuchdata", "train")

"""Where a train step's work goes, from XLA itself: FLOPs and bytes of each part.

  python benchmarks/step_cost.py --config=configs/simclr_resnet50.py --config.batch_size=256 \
      [--image_shape=224,224,3] [--json=OUT.json] [--config.key=value ...]

Compiles the real pretraining step of the config (loop/pretrain.jit_train_step: the
method's views, its loss, the optax update, jitted over a mesh of this host's devices) with
`.lower(...).compile()` and runs nothing: no weights are made (the state is abstract, from
jax.eval_shape), so a ResNet-50 step at batch 256 compiles on a CPU. Totals are
`compiled.cost_analysis()`'s "flops" and "bytes accessed". Shares come from the compiled HLO:
  1. The step's parts are traced under jax.named_scope, which changes only the op_name
     metadata of the program: the step's `prepare` (the method's views; each
     augment.augment_batch call is one view, numbered in call order), its `loss_fn`, the
     optimizer's update with optax.apply_updates, and methods.common.ema (target networks).
     The scoped step is built from the parts of the real jitted step (its __wrapped__
     partial), and its lowered program is checked to cost what the real one costs.
  2. Inside loss_fn, Flax's module paths split the network: ops under a `backbone` module are
     the backbone (forward and backward; the forward of a target or key encoder too, which
     is backbone work); under `projector` or `predictor`, the heads; every other op of
     loss_fn is the loss (normalising, similarities, softmax, metrics computed there).
  3. benchmarks/hlo_cost.py gives each instruction of the optimised HLO its FLOPs and bytes
     by XLA's counting rules (an instruction XLA made without a name takes a neighbour's);
     this walk's totals are printed beside cost_analysis()'s (FLOPs within 0.4%, bytes
     within 5% on the ResNet-50 steps) and only its shares are used.
"other" (everything else) is what no scope covers: the per-step key, the gradient norm
metric, the state update's bookkeeping, copies XLA inserts. Work the views share, which XLA
computes once (the uint8 to float conversion of one source batch), is charged to view 1.
The compile bypasses any persistent compilation cache, whose key leaves op_names out.

FLOPs do not depend on the backend. Bytes do: they follow XLA's fusion decisions, and on a
CPU compile a bf16 model's convolutions may run in float32; bytes from a CPU compile are an
estimate of the accelerator's, which benchmarks/device_check.sh measures on the GPU.

The physical limit is step FLOPs / peak dense bf16 FLOP/s (990 TFLOP/s on an H100 SXM,
197 TFLOP/s on a TPU v5e): no step can be faster; images/s = batch / that time, views/s
twice that for two-view methods (multi-crop makes more views of each image).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import re
import time
from unittest import mock

import hlo_cost  # beside this script
import jax
import jax.numpy as jnp
import optax
from absl import app
from absl import flags
from ml_collections import config_flags

from medssl_jax import augment
from medssl_jax import methods
from medssl_jax.loop import optim
from medssl_jax.loop import pretrain
from medssl_jax.loop import sharding
from medssl_jax.loop import state as state_lib
from medssl_jax.methods import common

# Peak dense bf16 FLOP/s of the accelerators the physical limit is given for.
PEAK_FLOPS = {"H100 SXM (990 TFLOP/s bf16)": 990e12, "TPU v5e (197 TFLOP/s bf16)": 197e12}
# The target: these parts together under 5% of FLOPs and 10% of bytes.
OVERHEAD_PARTS = ("augmentation", "loss", "optimizer")
TARGET_FLOPS, TARGET_BYTES = 0.05, 0.10

_SCOPE = "step_cost."  # prefix of this script's named scopes, to find them in op_names
_ROWS = ("backbone", "heads", "loss", "optimizer", "ema", "augmentation", "other")


@contextlib.contextmanager
def scoped_parts():
  """While the step is traced, wraps augment.augment_batch (one scope per call: view 1, 2,
  ...), methods.common.ema and optax.apply_updates in named scopes."""
  views = itertools.count(1)

  def scoped(fn, name):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
      with jax.named_scope(_SCOPE + (name() if callable(name) else name)):
        return fn(*args, **kwargs)
    return wrapper

  with mock.patch.object(augment, "augment_batch",
                         scoped(augment.augment_batch, lambda: f"view{next(views)}")), \
       mock.patch.object(common, "ema", scoped(common.ema, "ema")), \
       mock.patch.object(optax, "apply_updates", scoped(optax.apply_updates, "optimizer")):
    yield


@contextlib.contextmanager
def no_compilation_cache():
  """A persistent compilation cache would hand back the program of the real step, compiled
  earlier: its key leaves out op_name metadata, and those names are what this script reads."""
  before = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)
  try:
    yield
  finally:
    jax.config.update("jax_enable_compilation_cache", before)


def scoped_step(step_fn, mesh):
  """The real jitted step `step_fn` rebuilt with its prepare, loss_fn and optimizer update
  under named scopes (the same functions, the same jit over `mesh`)."""
  parts = getattr(step_fn, "__wrapped__", None)
  keywords = getattr(parts, "keywords", {})
  if not {"prepare", "loss_fn", "optimizer"} <= set(keywords):
    raise TypeError("the train step is no longer functools.partial(train_step, prepare=, "
                    "loss_fn=, optimizer=) under jax.jit: update benchmarks/step_cost.py")

  def scope(fn, name):
    def wrapper(*args, **kwargs):
      with jax.named_scope(_SCOPE + name):
        return fn(*args, **kwargs)
    return wrapper

  optimizer = keywords["optimizer"]
  optimizer = optax.GradientTransformation(optimizer.init, scope(optimizer.update, "optimizer"))
  return state_lib.jit_train_step(mesh, prepare=scope(keywords["prepare"], "augment"),
                                  loss_fn=scope(keywords["loss_fn"], "loss_fn"),
                                  optimizer=optimizer)


def part_of(op_name: str) -> str:
  """The row of the table an op belongs to, from its op_name (the first, for fused names)."""
  path = op_name.split(";")[0]
  scopes = re.findall(re.escape(_SCOPE) + r"(\w+)", path)
  if "ema" in scopes:
    return "ema"
  views = [s for s in scopes if s.startswith("view")]
  if views:
    return "augmentation " + views[-1]
  if "augment" in scopes:
    return "augmentation"  # the method's views outside augment_batch: key splits, stacking
  if "optimizer" in scopes:
    return "optimizer"
  if "loss_fn" in scopes:
    modules = set(re.split(r"[/()]", path))
    if "backbone" in modules:
      return "backbone"
    if modules & {"projector", "predictor"}:
      return "heads"
    return "loss"
  return "other"


@dataclasses.dataclass
class StepCost:
  """Totals from cost_analysis() and per-part sums from the HLO walk."""
  flops: float
  bytes: float
  walk_flops: float
  walk_bytes: float
  parts: dict  # part -> {"flops", "bytes"} from the walk
  compile_s: float

  def share(self, part: str, key: str) -> float:
    total = self.walk_flops if key == "flops" else self.walk_bytes
    return sum(v[key] for name, v in self.parts.items() if name.split(" ")[0] == part) / total

  def overhead(self, key: str) -> float:
    return sum(self.share(part, key) for part in OVERHEAD_PARTS)


def abstract_inputs(config, mesh, image_shape):
  """(jitted real step, abstract state, abstract batch, key) of `config`: shapes only."""
  method = methods.get_method(config.method)
  method.check_config(config)
  model = method.create_model(config)
  optimizer = optim.create_optimizer(config.optim, config.batch_size, config.num_steps)
  init_fn = functools.partial(pretrain.create_train_state, config, model, method, optimizer,
                              image_shape=image_shape)
  replicated, batched = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  state = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
      jax.eval_shape(init_fn, jax.random.key(0)))
  batch = {"view1": jax.ShapeDtypeStruct((config.batch_size,) + tuple(image_shape), jnp.uint8,
                                         sharding=batched)}
  if config.data.pairing != "same_image":
    batch["view2"] = batch["view1"]
  key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=replicated)
  return pretrain.jit_train_step(config, model, method, optimizer, mesh), state, batch, key


def step_cost(config, image_shape, mesh=None) -> StepCost:
  """Compiles (does not run) the step of `config` on batches of uint8 `image_shape` images."""
  mesh = sharding.create_mesh() if mesh is None else mesh
  sharding.check_batch_size(config.batch_size, mesh)
  step_fn, state, batch, key = abstract_inputs(config, mesh, image_shape)
  with scoped_parts():
    lowered = scoped_step(step_fn, mesh).lower(state, batch, key)
  plain = step_fn.lower(state, batch, key).cost_analysis()
  scoped = lowered.cost_analysis()
  if (plain["flops"], plain["bytes accessed"]) != (scoped["flops"], scoped["bytes accessed"]):
    raise AssertionError(f"named scopes changed the program: {plain['flops']} vs {scoped['flops']}")
  start = time.perf_counter()
  with no_compilation_cache():
    compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  totals = compiled.cost_analysis()
  if isinstance(totals, list):  # older jax: one dict per program
    totals = totals[0]
  parts = {}
  for cost in hlo_cost.instruction_costs(compiled.as_text()):
    part = parts.setdefault(part_of(cost.op_name), {"flops": 0.0, "bytes": 0.0})
    part["flops"] += cost.flops
    part["bytes"] += cost.bytes
  return StepCost(flops=totals["flops"], bytes=totals["bytes accessed"],
                  walk_flops=sum(p["flops"] for p in parts.values()),
                  walk_bytes=sum(p["bytes"] for p in parts.values()), parts=parts,
                  compile_s=compile_s)


def describe(config, image_shape) -> str:
  views = f"{config.augment.policy} / {config.augment.policy_view2 or config.augment.policy}"
  return (f"{config.method} {config.model.name} width {config.model.width} {config.model.dtype}, "
          f"batch {config.batch_size}, {config.augment.size} px views from uint8 "
          f"{'x'.join(map(str, image_shape))}, policies {views}, optimizer {config.optim.name}")


def _sorted_parts(parts):
  order = {name: i for i, name in enumerate(_ROWS)}
  return sorted(parts, key=lambda name: (order.get(name.split(" ")[0], len(_ROWS)), name))


def markdown(cost: StepCost, title: str, batch: int) -> str:
  """The BENCHMARKS table of one step, with its physical limits and the target check."""
  lines = [f"**{title}**", "",
           "| part | GFLOP | share of FLOPs | GB accessed | share of bytes |",
           "|---|---:|---:|---:|---:|"]
  for name in _sorted_parts(cost.parts):
    part = cost.parts[name]
    lines.append(f"| {name} | {part['flops'] / 1e9:.2f} | {part['flops'] / cost.walk_flops:.2%} "
                 f"| {part['bytes'] / 1e9:.3f} | {part['bytes'] / cost.walk_bytes:.2%} |")
  lines.append(f"| **step (cost_analysis)** | **{cost.flops / 1e9:.1f}** | | "
               f"**{cost.bytes / 1e9:.2f}** | |")
  lines += ["", f"HLO walk / cost_analysis: FLOPs {cost.walk_flops / cost.flops:.4f}, bytes "
                f"{cost.walk_bytes / cost.bytes:.4f}; compiled in {cost.compile_s:.0f} s."]
  verdict = ("within" if cost.overhead("flops") < TARGET_FLOPS and cost.overhead("bytes") < TARGET_BYTES
             else "OVER")
  lines.append(f"augmentation + loss + optimizer: {cost.overhead('flops'):.2%} of FLOPs, "
               f"{cost.overhead('bytes'):.2%} of bytes ({verdict} the target of "
               f"{TARGET_FLOPS:.0%} / {TARGET_BYTES:.0%}).")
  for name, peak in PEAK_FLOPS.items():
    seconds = cost.flops / peak
    lines.append(f"Physical limit on one {name}: {1e3 * seconds:.1f} ms/step, "
                 f"{batch / seconds:,.0f} images/s ({2 * batch / seconds:,.0f} views/s at 2 views "
                 f"per image).")
  return "\n".join(lines)


def to_json(cost: StepCost, config, image_shape) -> dict:
  return {"config": describe(config, image_shape), "batch_size": config.batch_size,
          "backend": jax.default_backend(), "devices": jax.device_count(),
          **dataclasses.asdict(cost),
          "overhead_share": {"flops": cost.overhead("flops"), "bytes": cost.overhead("bytes")},
          "physical_limit_views_per_s": {name: 2 * config.batch_size * peak / cost.flops
                                         for name, peak in PEAK_FLOPS.items()}}


def image_shape_of(config, text: str = "") -> tuple[int, ...]:
  """"H,W,C" as a tuple; "" = the shape of the config's training images (opens the data)."""
  if text:
    return tuple(int(v) for v in text.split(","))
  return tuple(pretrain.open_training_source(config).image_shape)


def title_of(config, image_shape) -> str:
  return f"{describe(config, image_shape)}, {jax.device_count()} x {jax.devices()[0].device_kind}"


def main(argv):
  del argv
  config = flags.FLAGS.config
  image_shape = image_shape_of(config, flags.FLAGS.image_shape)
  cost = step_cost(config, image_shape)
  print(markdown(cost, title_of(config, image_shape), config.batch_size))
  if flags.FLAGS.json:
    with open(flags.FLAGS.json, "w") as f:
      json.dump(to_json(cost, config, image_shape), f, indent=1)


def define_flags():
  """Only when run as a script: device_check.py imports this module beside others' flags."""
  config_flags.DEFINE_config_file("config", None, "Pretraining config file.")
  flags.DEFINE_string("image_shape", "", "H,W,C of the stored uint8 images the step receives; "
                      "'' = open the config's training data and use its shape.")
  flags.DEFINE_string("json", "", "Also write the figures to this JSON file.")
  flags.mark_flags_as_required(["config"])


if __name__ == "__main__":
  define_flags()
  app.run(main)

"""What watching a run costs: one config's training step timed three ways in one process,
in alternating blocks of steps, so that the machine's load falls on all three alike.

  bare     the update alone: augment, loss, gradients, optimizer (the step before issue 15,
           which read nothing back between logging steps);
  watched  the loop's step as every run has it now: plus the learning rate, the global norms
           of params, grads and updates, the finite check read back every step, and the
           logging interval's sums;
  probe    watched plus the online probe's step (config.online_probe.batch_images images).

Prints each variant's images/s (median over rounds) and its extra time per step relative to
bare: the median (and quartiles) of each round's ratio, so that load changes between rounds
cancel, in wall time and in this process's CPU time (which other jobs on a shared machine
change far less than wall time). Then the
seconds one online evaluation takes (probe and kNN on online_probe.eval_images images), and
what both cost over a whole run of config.num_steps with evaluations every --eval_every steps.

  MEDSSL_DATA_DIR=../shared/data/medmnist python benchmarks/monitor_overhead.py \
      --config=configs/simclr_pneumoniamnist.py [--blocks=30] [--block_steps=2] [--eval_every=125]
"""
import functools
import statistics
import time

import jax
import optax
from absl import app
from absl import flags
from ml_collections import config_flags

from medssl_jax import methods
from medssl_jax.loop import online_probe
from medssl_jax.loop import optim
from medssl_jax.loop import pretrain
from medssl_jax.loop import sharding


def bare_step(state, batch, base_key, *, prepare, loss_fn, optimizer):
  """The update without any of the loop's monitoring (what state.train_step adds to it)."""
  inputs = prepare(batch, jax.random.fold_in(base_key, state.step))
  (loss, (metrics, batch_stats, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, state.batch_stats, state.extra, inputs, state.step)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       batch_stats=batch_stats, opt_state=opt_state, extra=extra), dict(metrics, loss=loss)


class Variants:
  """The three ways to run a step, each with its own copy of one freshly initialised state."""

  def __init__(self, config, mesh):
    config.online_probe.enabled = True  # every variant carries the probe's state; only one trains it
    method = methods.get_method(config.method)
    model = method.create_model(config)
    optimizer = optim.create_optimizer(config.optim, config.batch_size, config.num_steps)
    self.source = pretrain.open_training_source(config)
    init = jax.jit(functools.partial(pretrain.create_train_state, config, model, method, optimizer,
                                     image_shape=self.source.image_shape,
                                     num_classes=self.source.num_classes),
                   out_shardings=sharding.replicated(mesh))
    self.states = {name: init(jax.random.key(0)) for name in ("bare", "watched", "probe")}
    replicated, batched = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    self.bare = jax.jit(functools.partial(
        bare_step, prepare=functools.partial(method.make_views, config=config),
        loss_fn=functools.partial(pretrain.method_loss, method=method, model=model, config=config),
        optimizer=optimizer), in_shardings=(replicated, batched, replicated),
        out_shardings=(replicated, replicated), donate_argnums=(0,))
    self.loop_step, empty_interval = pretrain.jit_loop_step(config, model, method, optimizer, mesh)
    self.probe = online_probe.OnlineProbe(config, self.source, mesh)
    iterator = sharding.DevicePrefetch(pretrain.make_data_iterator(config, self.source), mesh,
                                       size=2, transform=pretrain.with_labels(self.source))
    self.batches = [next(iterator) for _ in range(4)]
    self.base_key = jax.random.key(1)
    first = self.images(0)
    self.interval = empty_interval(self.states["watched"], first, self.base_key)

  def images(self, i):
    return {k: v for k, v in self.batches[i % len(self.batches)].items() if k != "label"}

  def run(self, name: str, steps: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for `steps` steps of variant `name`."""
    state = self.states[name]
    start, start_cpu = time.perf_counter(), time.process_time()
    previous = None
    for i in range(steps):
      if name == "bare":
        state, _ = self.bare(state, self.images(i), self.base_key)
        continue
      state, self.interval, finite = self.loop_step(state, self.interval, self.images(i), self.base_key)
      if name == "probe":
        state = self.probe.train(state, self.batches[i % len(self.batches)]["view1"],
                                 self.batches[i % len(self.batches)]["label"])
      if previous is not None:
        bool(previous)  # as the loop's divergence check reads the step before
      previous = finite
    jax.block_until_ready(state)
    self.states[name] = state
    return time.perf_counter() - start, time.process_time() - start_cpu

  def evaluation_seconds(self) -> float:
    self.probe.evaluate(self.states["probe"])  # compiles the feature extraction
    start = time.perf_counter()
    self.probe.evaluate(self.states["probe"])
    return time.perf_counter() - start


def _paired(times, bare_times) -> str:
  """The median (and quartiles) over rounds of each round's time against bare's in the same
  round, so that load changes between rounds cancel."""
  ratios = sorted(t / b - 1 for t, b in zip(times, bare_times))
  low, _, high = statistics.quantiles(ratios, n=4)
  return f"{statistics.median(ratios):+.1%} ({low:+.1%} to {high:+.1%})"


def main(argv):
  del argv
  config, args = flags.FLAGS.config, flags.FLAGS
  mesh = sharding.create_mesh()
  variants = Variants(config, mesh)
  names = ("bare", "watched", "probe")
  for name in names:
    variants.run(name, 2)  # compile
  seconds = {name: [] for name in names}
  cpu_seconds = {name: [] for name in names}
  for block in range(args.blocks):
    order = names[block % 3:] + names[:block % 3]  # each variant goes first as often
    for name in order:
      wall, cpu = variants.run(name, args.block_steps)
      seconds[name].append(wall)
      cpu_seconds[name].append(cpu)
  images = config.batch_size * args.block_steps
  rate = {name: images / statistics.median(s) for name, s in seconds.items()}
  print(f"{config.method} {config.model.name} width {config.model.width}, {config.augment.size} px, "
        f"batch {config.batch_size}, {mesh.devices.size} x {mesh.devices.flat[0].device_kind}; "
        f"online_probe.batch_images {config.online_probe.batch_images}; {args.blocks} rounds of "
        f"{args.block_steps} steps per variant")
  for name in names:
    wall, cpu = _paired(seconds[name], seconds["bare"]), _paired(cpu_seconds[name], cpu_seconds["bare"])
    print(f"  {name:8s} {rate[name]:8.1f} images/s (median); extra time vs bare: wall {wall}, CPU {cpu}")
  evaluation = variants.evaluation_seconds()
  evaluations = max(config.num_steps // args.eval_every, 1) if args.eval_every else 1
  run_s = config.num_steps * config.batch_size / rate["probe"] + evaluations * evaluation
  whole = 1 - (config.num_steps * config.batch_size / run_s) / rate["bare"]
  print(f"  one online evaluation: {evaluation:.2f} s; {config.num_steps} steps with {evaluations} "
        f"evaluations: probe on costs {whole:.1%} of the bare run's images/s")


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "Pretraining config file.")
  flags.DEFINE_integer("blocks", 30, "Rounds; each times every variant once.")
  flags.DEFINE_integer("block_steps", 2, "Steps per variant per round.")
  flags.DEFINE_integer("eval_every", 125, "Steps between online evaluations in the whole-run figure.")
  flags.mark_flags_as_required(["config"])
  app.run(main)

"""The pretraining loop: the method's state and step (on loop/state.py's shared step), and
the loop that resumes.

The step is a pure function of (state, batch, base key): per-step randomness comes from
`fold_in(base_key, step)`, so a resumed run repeats exactly what an uninterrupted one does.
"""
from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from medssl_jax import errors
from medssl_jax import methods
from medssl_jax import paths
from medssl_jax.data import catalog
from medssl_jax.data import pairs
from medssl_jax.data import pipeline
from medssl_jax.loop import checkpointing
from medssl_jax.loop import metrics as metrics_lib
from medssl_jax.loop import online_probe
from medssl_jax.loop import optim
from medssl_jax.loop import overview
from medssl_jax.loop import preemption
from medssl_jax.loop import profiling
from medssl_jax.loop import sharding
from medssl_jax.loop import state as state_lib
from medssl_jax.loop import storage
from medssl_jax.loop import validation
from medssl_jax.loop import writers
from medssl_jax.methods import base as method_base
from medssl_jax.weights import init_from

TrainState = state_lib.TrainState
NAN_POLICIES = ("stop", "skip_step")


class DivergedError(errors.UserError):
  """The loss, a gradient or the state became NaN/inf (config.nan_policy=stop)."""


def create_train_state(config, model, method, optimizer, rng, image_shape,
                       num_classes: int = 0) -> TrainState:
  size = config.augment.size
  dummy = jnp.zeros((2, size, size, image_shape[-1]), jnp.float32)
  variables = model.init(rng, dummy, train=True)
  probe = None
  if online_probe.enabled(config):
    probe = online_probe.init(config, variables, num_classes, image_shape[-1])
  return TrainState.create(variables["params"], variables.get("batch_stats", {}), optimizer,
                           extra=method.init_extra_state(variables, config), probe=probe)


def method_loss(params, batch_stats, extra, inputs, step, *, method, model, config):
  view1, view2, key_loss = inputs
  return method.loss_fn(params, batch_stats, extra, view1, view2, key_loss, step, model=model,
                        config=config)


def jit_train_step(config, model, method, optimizer, mesh):
  """The pretraining step (state, batch, base_key) -> (state, metrics), jitted over `mesh`."""
  prepare = functools.partial(method.make_views, config=config)
  loss_fn = functools.partial(method_loss, method=method, model=model, config=config)
  return state_lib.jit_train_step(mesh, prepare=prepare, loss_fn=loss_fn, optimizer=optimizer)


def jit_loop_step(config, model, method, optimizer, mesh):
  """The loop's step (state, interval, batch, base_key) -> (state, interval, finite): the
  shared train step with the learning rate and config.nan_policy, its metrics added on the
  device to the logging interval (loop/metrics.py); `finite` is the step's own flag."""
  prepare = functools.partial(method.make_views, config=config)
  loss_fn = functools.partial(method_loss, method=method, model=model, config=config)
  step_fn = functools.partial(
      state_lib.train_step, prepare=prepare, loss_fn=loss_fn, optimizer=optimizer,
      schedule=optim.lr_schedule(config.optim, config.batch_size, config.num_steps),
      skip_nonfinite=config.nan_policy == "skip_step")

  def loop_step(state, interval, batch, base_key):
    number = state.step + 1
    state, step_metrics = step_fn(state, batch, base_key)
    return state, metrics_lib.accumulate(interval, step_metrics, number), step_metrics["finite"]

  def empty_interval(state, batch, base_key):
    return metrics_lib.zeros(jax.eval_shape(step_fn, state, batch, base_key)[1])

  replicated, batched = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  jitted = jax.jit(loop_step, in_shardings=(replicated, replicated, batched, replicated),
                   out_shardings=(replicated, replicated, replicated), donate_argnums=(0,))
  return jitted, jax.jit(empty_interval, out_shardings=replicated)


def check_nan_policy(config) -> None:
  if config.nan_policy not in NAN_POLICIES:
    raise errors.UserError(f"unknown nan_policy {config.nan_policy!r}; known: {', '.join(NAN_POLICIES)}")


class DivergenceGuard:
  """Raises DivergedError for the first non-finite step (nan_policy=stop), after the saves in
  flight are committed, naming that step and the last good checkpoint."""

  def __init__(self, enabled: bool, saver: checkpointing.Saver, workdir):
    self.enabled, self.saver, self.workdir = enabled, saver, workdir

  def check(self, step: int, finite) -> None:
    if not self.enabled or bool(finite):
      return
    self.saver.finish()  # nothing after the divergence is saved; what was saved before is kept
    last = self.saver.committed
    kept = (f"the last good checkpoint is step {last} in {self.workdir / 'checkpoints'} "
            "(rerunning resumes from it)" if last is not None else "no checkpoint was saved before it")
    raise DivergedError(
        f"training diverged: non-finite loss, gradient or state at step {step}; {kept}; lower "
        "optim.base_lr or set --config.nan_policy=skip_step")


def open_training_source(config):
  return catalog.open_data(config.data, config.data.train_split)


def make_data_iterator(config, source):
  pairing = pairs.create_pairing(config.data.pairing, source)
  dataset = pipeline.pretraining_dataset(
      pairing, len(source), global_batch=config.batch_size, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count())
  return pipeline.make_iterator(dataset, num_workers=config.data.num_workers)


def batch_arrays(batch: dict) -> dict:
  # Only images go to the device; indices stay on the host.
  return {k: v for k, v in batch.items() if k.startswith("view")}


def with_labels(source):
  """batch_arrays plus the anchor images' labels (for the online probe)."""
  def transform(batch: dict) -> dict:
    return dict(batch_arrays(batch), label=np.asarray(source.labels)[batch["index"]].astype(np.int32))
  return transform


def initialize_from(state: TrainState, config, method, optimizer, mesh) -> tuple[TrainState, dict]:
  """`state` with config.init.modules taken from config.init_from, a fresh optimizer, and
  method state (EMA targets) built from those weights; and the record of where they came from."""
  params, batch_stats, record = init_from.initialize_from(state.params, state.batch_stats, config)
  variables = {"params": params, "batch_stats": batch_stats}
  state = state.replace(params=params, batch_stats=batch_stats, opt_state=optimizer.init(params),
                        extra=method.init_extra_state(variables, config))
  return jax.device_put(state, sharding.replicated(mesh)), record


def structural_keys(method) -> tuple[str, ...]:
  """The config keys a workdir's checkpoints depend on: the loop's and the method's own."""
  own = tuple(f"{method.section}.{key}" for key in method.structural_keys)
  return checkpointing.LOOP_STRUCTURAL_KEYS + own


def fresh_state_and_step(config, mesh):
  """(source, freshly initialised replicated state, jitted step) of `config`: what the
  benchmarks time, without the loop's resume, checkpoints and writers."""
  sharding.check_batch_size(config.batch_size, mesh)
  method = methods.get_method(config.method)
  method.check_config(config)
  source = open_training_source(config)
  model = method.create_model(config)
  optimizer = optim.create_optimizer(config.optim, config.batch_size, config.num_steps)
  init_fn = functools.partial(create_train_state, config, model, method, optimizer,
                              image_shape=source.image_shape)
  state = jax.jit(init_fn, out_shardings=sharding.replicated(mesh))(jax.random.key(0))
  return source, state, jit_train_step(config, model, method, optimizer, mesh)


def run(config: ml_collections.ConfigDict, workdir: str, *, mesh=None) -> TrainState:
  """Pretrains for config.num_steps, resuming from the latest checkpoint in `workdir`.

  Everything that can reject the run (data, config, batch size, an incompatible workdir)
  is checked before anything is written to `workdir`.
  """
  validation.check_settings(config)
  paths.check_buckets(workdir, config.data.dir, config.init_from, config.data.manifest.csv)
  validation.check_workdir(workdir)
  workdir = paths.path(workdir)
  mesh = sharding.create_mesh() if mesh is None else mesh
  sharding.check_batch_size(config.batch_size, mesh)
  method = methods.get_method(config.method)
  method.check_config(config)
  check_nan_policy(config)
  profiler = profiling.StepProfiler(config.profile, workdir)
  checkpointing.check_compatible(workdir, config, structural_keys(method))
  source = open_training_source(config)
  validation.check_batch_against_split(config, len(source))
  model = method.create_model(config)
  optimizer = optim.create_optimizer(config.optim, config.batch_size, config.num_steps)
  method_base.view_policies(config)  # fail on an unknown policy name before anything is written

  init_key, base_key = jax.random.split(jax.random.key(config.seed))
  probing = online_probe.enabled(config)
  # Opens the validation split now, so a missing one is reported before anything is written.
  probe = online_probe.OnlineProbe(config, source, mesh) if probing else None
  init_fn = jax.jit(functools.partial(create_train_state, config, model, method, optimizer,
                                      image_shape=source.image_shape,
                                      num_classes=source.num_classes if probing else 0),
                    out_shardings=sharding.replicated(mesh))
  # Batches go to the devices ahead of the step that uses them; checkpointed in place of
  # the host iterator (its state is that of the batches actually consumed).
  data_iterator = sharding.DevicePrefetch(make_data_iterator(config, source), mesh,
                                          size=config.data.prefetch_to_device,
                                          transform=with_labels(source) if probing else batch_arrays)
  resuming = checkpointing.has_checkpoint(workdir)
  init_record = None
  if not resuming:
    state = init_fn(init_key)
    if config.init_from:
      state, init_record = initialize_from(state, config, method, optimizer, mesh)

  checkpointing.write_config(workdir, config)
  if init_record:
    init_from.write_record(workdir, init_record)
  manager = checkpointing.create_manager(workdir, max_to_keep=config.keep_checkpoints)
  if resuming:
    # Shapes and shardings are all a restore needs: skip initialising (and compiling) weights.
    abstract_state = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding.replicated(mesh)),
        jax.eval_shape(init_fn, init_key))
    state = checkpointing.restore_newest_good(manager, abstract_state, data_iterator)
    logging.info("resumed from step %d of %s", int(state.step), workdir)

  loop_step, empty_interval = jit_loop_step(config, model, method, optimizer, mesh)
  saver = checkpointing.Saver(manager, data_iterator)
  guard = DivergenceGuard(config.nan_policy == "stop", saver, workdir)
  writer = writers.MetricWriter(workdir)
  start_step = int(state.step)
  progress = writers.Progress(config.num_steps, config.batch_size, start_step, mesh.devices.size)
  if start_step == 0:
    logging.info("training %s / %s on %d devices (%d processes): %d steps of %d images",
                 config.method, config.model.name, mesh.devices.size, jax.process_count(),
                 config.num_steps, config.batch_size)
  overview.describe_run(config, state.params, mesh, writer)
  timed_saves = preemption.TimedSaves(config.checkpoint_every_minutes)
  interval = zero_interval = None
  waited, previous = 0.0, None  # seconds waiting for data; (step, finite) not yet checked
  with preemption.PreemptionWatch() as watch:
    for step in range(start_step + 1, config.num_steps + 1):
      profiler.before(step)
      started = time.perf_counter()
      batch = next(data_iterator)
      waited += time.perf_counter() - started
      labels = batch.pop("label", None)
      if interval is None:
        interval = zero_interval = empty_interval(state, batch, base_key)
      state, interval, finite = loop_step(state, interval, batch, base_key)
      if probe is not None:
        state = probe.train(state, batch["view1"], labels)
      if previous is not None:
        guard.check(*previous)  # the step before: the device is already busy with this one
      previous = (step, finite)
      profiler.after(step, state)
      logging_step = step % config.log_every == 0 or step == config.num_steps
      evaluating = probe is not None and probe.due(step)
      if logging_step or evaluating:
        guard.check(step, finite)
        scalars = {}
        if logging_step:
          scalars = metrics_lib.means(jax.device_get(interval))
          interval = zero_interval
          scalars.update(probe.interval_scalars() if probe else {})
        if evaluating:
          scalars.update(probe.evaluate(state))
        if logging_step:
          scalars.update(progress.report(step, scalars, data_wait_s=waited))
          waited = 0.0
        with storage.writes_to(workdir, last_committed=saver.committed):
          writer.write_scalars(step, scalars)
      preempted = watch.should_stop(step)
      if (step % config.checkpoint_every == 0 or step == config.num_steps or preempted
          or (logging_step and timed_saves.due())):
        guard.check(step, finite)  # nothing non-finite is ever saved
        saver.save(step, state)
      if preempted:
        logging.warning("preempted: saved step %d and stopping; rerun the same command to continue", step)
        break
  profiler.stop(state)
  saver.finish()
  writer.close()
  return state

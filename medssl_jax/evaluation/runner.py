"""Running an evaluation config on a pretraining workdir: one checkpoint (`evaluate`) or each
new one as it appears (`watch`). The binary is medssl_jax/cli/evaluate.py (`medssl-eval`).

The config lists the evaluations (linear_probe, knn, finetune, label_fractions, transfer,
embedding_2d); each scores the pretrained backbone next to the baselines (the same network
at random init, raw pixels) on the same splits. Results go to OUT/results.json,
OUT/results.md, PNG plots in OUT and a table on stdout. With --config.watch.enabled, every
new checkpoint of a running pretraining workdir is evaluated as it appears (see watch()).
"""
from __future__ import annotations

import json
import time

import jax
import ml_collections
from absl import logging

from medssl_jax import errors
from medssl_jax import paths
from medssl_jax.evaluation import context
from medssl_jax.evaluation import report
from medssl_jax.evaluation import suite
from medssl_jax.loop import checkpointing
from medssl_jax.loop import writers

EVALUATIONS = suite.EVALUATIONS
BASELINES = context.BASELINES
WATCH_LOG = "online_eval.jsonl"  # in the pretraining workdir, beside its training metrics


def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses unknown evaluations and baselines before anything is read or written."""
  unknown = [e for e in config.evaluations if e not in EVALUATIONS]
  if unknown:
    raise errors.UserError(f"unknown evaluations {unknown}; known: {sorted(EVALUATIONS)}")
  unknown = set(config.baselines) - set(BASELINES)
  if unknown:
    raise errors.UserError(f"unknown baselines {sorted(unknown)}; known: {BASELINES}")
  suite.probe_kind(config, 0, 0)


def feature_cache_dir(config, workdir: paths.Path) -> paths.Path | None:
  if not config.feature_cache:
    return None
  return paths.path(config.feature_cache_dir or workdir / "feature_cache")


def evaluate(config: ml_collections.ConfigDict, workdir, step: int | None = None) -> dict:
  """Runs every evaluation in config.evaluations on one checkpoint; writes results.json/.md."""
  check_config(config)
  paths.check_buckets(workdir, config.pretrain_workdir, config.feature_cache_dir)
  workdir = paths.path(workdir)
  if step is None and config.step >= 0:
    step = config.step
  run = context.EvalRun(config, step, cache_dir=feature_cache_dir(config, workdir))
  results = {"pretrain_workdir": str(config.pretrain_workdir), "step": int(run.step),
             "method": run.pretrain_config.method, "model": run.pretrain_config.model.name,
             "data": run.splits["test"].name, "baselines": list(config.baselines)}
  for name in config.evaluations:
    logging.info("evaluation %s", name)
    started = time.perf_counter()
    results[name] = EVALUATIONS[name](run, workdir)
    logging.info("evaluation %s took %s", name, writers.format_duration(time.perf_counter() - started))
  results["feature_cache"] = {"hits": run.cache.hits, "misses": run.cache.misses}
  write_results(results, workdir)
  return results


def write_results(results: dict, workdir) -> None:
  workdir = paths.path(workdir)
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    (workdir / "results.md").write_text(report.markdown(results))
    print(report.table(results), flush=True)


def headline_scalars(results: dict) -> dict:
  """Test AUROC and accuracy of each evaluation and representation, as flat scalar names."""
  scalars = {}
  for name, section in results.items():
    if isinstance(section, dict):
      for rep, r in section.items():
        if isinstance(r, dict) and "auroc" in r:
          scalars[f"eval/{name}/{rep}/auroc"] = r["auroc"]
          scalars[f"eval/{name}/{rep}/accuracy"] = r["accuracy"]
  return scalars


def watch(config: ml_collections.ConfigDict, workdir, *, sleep=time.sleep) -> list[int]:
  """Evaluates each new checkpoint of a (running) pretraining workdir, the way an online probe
  is watched: results of step S go to OUT/step_S/, and the headline figures are appended to
  PRETRAIN_WORKDIR/online_eval.jsonl and its TensorBoard. Steps already there are skipped, so
  a restarted watcher picks up where it stopped. Stops once the run's last step
  (config.num_steps) is evaluated, or after watch.timeout_minutes with no new checkpoint.
  Returns the steps evaluated.
  """
  check_config(config)
  workdir, run_dir = paths.path(workdir), paths.path(config.pretrain_workdir)
  final_step = checkpointing.load_config(run_dir).num_steps
  writer = writers.MetricWriter(run_dir, WATCH_LOG)
  done = set()
  if (run_dir / WATCH_LOG).is_file():
    done = {json.loads(line)["step"] for line in (run_dir / WATCH_LOG).read_text().splitlines() if line}
  evaluated, waited = [], 0.0
  while final_step not in done:
    new = [s for s in checkpointing.checkpoint_steps(run_dir) if s not in done]
    if not new:
      if waited >= config.watch.timeout_minutes * 60:
        logging.warning("no new checkpoint in %s for %.0f minutes; stopping", run_dir, waited / 60)
        break
      sleep(config.watch.poll_seconds)
      waited += config.watch.poll_seconds
      continue
    waited = 0.0
    step = new[0]
    try:
      results = evaluate(config, workdir / f"step_{step}", step=step)
    except FileNotFoundError:  # deleted by the run's max_to_keep between listing and reading
      logging.info("checkpoint %d of %s is gone; skipping it", step, run_dir)
      done.add(step)
      continue
    writer.write_scalars(step, headline_scalars(results))
    done.add(step)
    evaluated.append(step)
  return evaluated

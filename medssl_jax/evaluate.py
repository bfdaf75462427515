"""Evaluation binary: judges the frozen backbone of a pretraining workdir.

  python -m medssl_jax.evaluate --config=configs/eval/linear_probe.py \
      --config.pretrain_workdir=RUN --workdir=OUT

Every representation (the pretrained backbone and each baseline) goes through the same
probe on the same splits; results go to stdout and OUT/results.json.
"""
from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from medssl_jax import checkpointing
from medssl_jax import configuration
from medssl_jax import methods
from medssl_jax.data import download
from medssl_jax import writers
from medssl_jax.data import sources
from medssl_jax.evaluation import embedding2d
from medssl_jax.evaluation import features as features_lib
from medssl_jax.evaluation import plots
from medssl_jax.evaluation import probes
from medssl_jax.models import encoder as encoder_lib

# Errors caused by the user's input: reported as one message, without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, download.DataUnavailableError)

BASELINES = ("random_init", "raw_pixels")


def open_splits(config, pretrain_config) -> dict:
  data = pretrain_config.data
  name = config.data.name or data.name
  data_dir = config.data.dir or data.dir or None
  cache_dir = config.data.cache_dir or data.cache_dir or None
  return {role: sources.open_source(name, getattr(config.data, f"{role}_split"), data_dir, cache_dir)
          for role in ("train", "val", "test")}


def raw_pixel_features(splits) -> dict:
  return {role: source.images.reshape(len(source), -1).astype(np.float32) / 255.0
          for role, source in splits.items()}


def random_init_variables(backbone, image_size: int, channels: int, seed: int):
  dummy = jnp.zeros((2, image_size, image_size, channels), jnp.float32)
  return jax.device_get(backbone.init(jax.random.key(seed), dummy, train=False))


def probe_representation(feats: dict, splits: dict, config) -> dict:
  multi_label = splits["train"].multi_label
  probe = probes.fit_logistic_probe(feats["train"], splits["train"].labels, feats["val"],
                                    splits["val"].labels, Cs=tuple(config.probe.Cs),
                                    multi_label=multi_label, max_iter=config.probe.max_iter)
  result = probes.evaluate_probe(probe, feats["test"], splits["test"].labels, n_boot=config.n_boot)
  result.update(C=probe.C, val_auroc=probe.val_score, feature_dim=int(feats["train"].shape[1]))
  return result


class Run:
  """What every evaluation reads: the restored run, its data splits and its networks."""

  def __init__(self, config):
    if not config.pretrain_workdir:
      raise ValueError("set --config.pretrain_workdir to a pretraining workdir")
    step = None if config.step < 0 else config.step
    self.config = config
    self.pretrain_config, self.variables, self.step = checkpointing.restore_variables(
        config.pretrain_workdir, step)
    self.splits = open_splits(config, self.pretrain_config)
    self.image_size = self.pretrain_config.augment.size
    self.model = methods.get_method(self.pretrain_config.method).create_model(self.pretrain_config)
    self.backbone = encoder_lib.create_backbone(self.pretrain_config.model)
    self.backbone_variables = {"params": self.variables["params"]["backbone"],
                               "batch_stats": self.variables["batch_stats"].get("backbone", {})}

  def outputs(self, apply_fn, variables) -> dict:
    return {role: features_lib.extract_features(apply_fn, variables, source, image_size=self.image_size,
                                                batch_size=self.config.batch_size)
            for role, source in self.splits.items()}


def linear_probe(run: Run, workdir: pathlib.Path) -> dict:
  """The logistic probe on the pretrained backbone and on each baseline representation."""
  del workdir
  config, backbone = run.config, run.backbone
  channels = run.splits["train"].images.shape[-1]
  representations = {"pretrained": lambda: run.outputs(features_lib.backbone_output(backbone),
                                                       run.backbone_variables)}
  if "random_init" in config.baselines:
    representations["random_init"] = lambda: run.outputs(
        features_lib.backbone_output(backbone),
        random_init_variables(backbone, run.image_size, channels, config.seed))
  if "raw_pixels" in config.baselines:
    representations["raw_pixels"] = lambda: raw_pixel_features(run.splits)
  results = {}
  for name, make_features in representations.items():
    logging.info("linear probe on %s features", name)
    results[name] = probe_representation(make_features(), run.splits, config)
  return results


def embedding_2d(run: Run, workdir: pathlib.Path) -> dict:
  """The 2-D map of every image: the network's own 2-D output (t-SimCNE) or t-SNE of frozen
  features. Writes embedding_2d.npz (points, labels, split) and embedding_2d.png."""
  config = run.config.embedding_2d
  labels = {role: np.asarray(source.labels) for role, source in run.splits.items()}
  if run.pretrain_config.model.projector_dim == 2:
    kind, outputs = "learned", run.outputs(features_lib.projection_output(run.model), run.variables)
  else:
    kind = "tsne"
    feats = run.outputs(features_lib.backbone_output(run.backbone), run.backbone_variables)
    # t-SNE is O(n^2): map a seeded subsample of each split, jointly.
    keep = {role: embedding2d.subsample(len(v), config.max_points, run.config.seed) for role, v in feats.items()}
    labels = {role: labels[role][keep[role]] for role in labels}
    points = embedding2d.tsne(np.concatenate([feats[r][keep[r]] for r in feats]), seed=run.config.seed)
    bounds = np.cumsum([0] + [len(keep[r]) for r in feats])
    outputs = {role: points[a:b] for role, a, b in zip(feats, bounds[:-1], bounds[1:])}
  result = {
      "kind": kind,
      "knn_accuracy": embedding2d.knn_accuracy(outputs["train"], labels["train"], outputs["test"],
                                               labels["test"], k=config.knn_k),
      "silhouette": embedding2d.silhouette(outputs["test"], labels["test"], seed=run.config.seed),
      "knn_k": config.knn_k,
  }
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    roles = list(outputs)
    np.savez(workdir / "embedding_2d.npz", points=np.concatenate([outputs[r] for r in roles]),
             labels=np.concatenate([labels[r] for r in roles]),
             split=np.concatenate([np.full(len(outputs[r]), r) for r in roles]))
    plots.scatter_2d(np.concatenate(list(outputs.values())), np.concatenate(list(labels.values())),
                     run.splits["train"].class_names, workdir / "embedding_2d.png",
                     title=f"{run.pretrain_config.method} {kind} 2-D map of {run.splits['test'].name}: "
                           f"kNN acc {result['knn_accuracy']:.3f}, silhouette {result['silhouette']:.3f}")
    result["files"] = ["embedding_2d.npz", "embedding_2d.png"]
  return result


EVALUATIONS = {"linear_probe": linear_probe, "embedding_2d": embedding_2d}


def evaluate(config: ml_collections.ConfigDict, workdir) -> dict:
  """Runs every evaluation in config.evaluations on one pretraining run; writes results.json."""
  unknown = [e for e in config.evaluations if e not in EVALUATIONS]
  if unknown:
    raise ValueError(f"unknown evaluations {unknown}; known: {sorted(EVALUATIONS)}")
  unknown = set(config.baselines) - set(BASELINES)
  if unknown:
    raise ValueError(f"unknown baselines {sorted(unknown)}; known: {BASELINES}")
  run = Run(config)
  workdir = pathlib.Path(workdir)
  results = {"pretrain_workdir": str(config.pretrain_workdir), "step": int(run.step),
             "method": run.pretrain_config.method, "model": run.pretrain_config.model.name,
             "data": run.splits["test"].name}
  for name in config.evaluations:
    logging.info("evaluation %s", name)
    results[name] = EVALUATIONS[name](run, workdir)
  write_results(results, workdir)
  return results


def format_table(results: dict) -> str:
  lines = [f"{results['data']}: {results['method']}, {results['model']}, step {results['step']}"]
  if "linear_probe" in results:
    lines.append(f"linear probe   {'test AUROC (95% CI)':<26} {'test accuracy (95% CI)':<26}")
    for name, r in results["linear_probe"].items():
      auroc = f"{r['auroc']:.4f}" + (f" ({r['auroc_ci'][0]:.3f}-{r['auroc_ci'][1]:.3f})" if r["auroc_ci"] else "")
      acc = f"{r['accuracy']:.4f}" + (f" ({r['accuracy_ci'][0]:.3f}-{r['accuracy_ci'][1]:.3f})" if r["accuracy_ci"] else "")
      lines.append(f"{name:<14} {auroc:<26} {acc:<26}")
  if "embedding_2d" in results:
    r = results["embedding_2d"]
    lines.append(f"2-D map ({r['kind']}): kNN accuracy (k={r['knn_k']}) {r['knn_accuracy']:.4f}, "
                 f"silhouette {r['silhouette']:.4f}")
  return "\n".join(lines)


def write_results(results: dict, workdir) -> None:
  workdir = pathlib.Path(workdir)
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    print(format_table(results), flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  writers.quiet_library_logs()
  evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


def run():
  # Flags are defined here, not at import, so that other binaries (the augmentation study)
  # can call evaluate() with flags of their own.
  config_flags.DEFINE_config_file("config", None, "Evaluation config file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for results.")
  flags.mark_flags_as_required(["config", "workdir"])
  configuration.run_binary(main, USER_ERRORS)


if __name__ == "__main__":
  run()

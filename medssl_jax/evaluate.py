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
from medssl_jax.data import download
from medssl_jax import writers
from medssl_jax.data import sources
from medssl_jax.evaluation import features as features_lib
from medssl_jax.evaluation import probes
from medssl_jax.models import encoder as encoder_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Evaluation config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for results.")
flags.mark_flags_as_required(["config", "workdir"])
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


def backbone_features(backbone, variables, splits, config, image_size) -> dict:
  return {role: features_lib.extract_features(backbone, variables, source, image_size=image_size,
                                              batch_size=config.batch_size)
          for role, source in splits.items()}


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


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the linear probe on the pretrained backbone and each baseline; writes results.json."""
  unknown = set(config.baselines) - set(BASELINES)
  if unknown:
    raise ValueError(f"unknown baselines {sorted(unknown)}; known: {BASELINES}")
  if not config.pretrain_workdir:
    raise ValueError("set --config.pretrain_workdir to a pretraining workdir")
  step = None if config.step < 0 else config.step
  pretrain_config, variables, step = checkpointing.restore_backbone(config.pretrain_workdir, step)
  splits = open_splits(config, pretrain_config)
  backbone = encoder_lib.create_backbone(pretrain_config.model)
  image_size = pretrain_config.augment.size
  channels = splits["train"].images.shape[-1]

  representations = {"pretrained": lambda: backbone_features(backbone, variables, splits, config, image_size)}
  if "random_init" in config.baselines:
    representations["random_init"] = lambda: backbone_features(
        backbone, random_init_variables(backbone, image_size, channels, config.seed), splits, config,
        image_size)
  if "raw_pixels" in config.baselines:
    representations["raw_pixels"] = lambda: raw_pixel_features(splits)

  results = {"pretrain_workdir": str(config.pretrain_workdir), "step": int(step),
             "method": pretrain_config.method, "model": pretrain_config.model.name,
             "data": splits["test"].name, "probe": "logistic_regression", "results": {}}
  for name, make_features in representations.items():
    logging.info("linear probe on %s features", name)
    results["results"][name] = probe_representation(make_features(), splits, config)
  write_results(results, workdir)
  return results


def format_table(results: dict) -> str:
  lines = [f"linear probe on {results['data']} ({results['method']}, {results['model']}, step {results['step']})",
           f"{'representation':<14} {'test AUROC (95% CI)':<26} {'test accuracy (95% CI)':<26}"]
  for name, r in results["results"].items():
    auroc = f"{r['auroc']:.4f}" + (f" ({r['auroc_ci'][0]:.3f}-{r['auroc_ci'][1]:.3f})" if r["auroc_ci"] else "")
    acc = f"{r['accuracy']:.4f}" + (f" ({r['accuracy_ci'][0]:.3f}-{r['accuracy_ci'][1]:.3f})" if r["accuracy_ci"] else "")
    lines.append(f"{name:<14} {auroc:<26} {acc:<26}")
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
  evaluate(_CONFIG.value, _WORKDIR.value)


def run():
  configuration.run_binary(main, USER_ERRORS)


if __name__ == "__main__":
  run()

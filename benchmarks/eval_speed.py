"""Wall time and scores of the default linear-probe fit, per representation (issue 20).

  nice -n 5 .venv/bin/python benchmarks/eval_speed.py [--cases=blood_pixels,...] \
      [--timeout=600] [--override=probe.kind=sklearn ...]

Each case fits the probe exactly as `configs/eval/linear_probe.py` does with its defaults
(`suite.fit_probe`: solver choice, Cs, max_iter, tol, principal components of raw pixels) and
scores it on the test split with
1000 bootstrap resamples (`probes.evaluate_probe`), in a fresh subprocess killed after
--timeout seconds ("did not finish" then). Cases:

  blood_pixels       BloodMNIST raw pixels, 11959 x 2352 (28x28x3), 8 classes (the
                     raw_pixels baseline as the eval computes it: context.raw_pixels).
  blood_random_init  BloodMNIST ResNet-18 features at random init, 11959 x 128, at width 1/4
                     as configs/simsiam_bloodmnist.py (the random_init baseline; its
                     pretrained backbone has the same shape; width 1 took over 5 min to
                     extract on 2 cores).
                     Extracted once and kept in --cache; the extraction time is reported.
  synthetic_pixels   35000 x 784 synthetic 28x28 grey "images", 11 classes, OrganAMNIST's
                     size (34561 train) and OrganAMNIST's raw-pixel width.
  synthetic_features 35000 x 512 synthetic non-negative "pooled features", 11 classes.

Val/test sizes follow the real sets (BloodMNIST 1712/3421, OrganAMNIST 6491/17778).
Prints a markdown table with `uptime`'s load before each case.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

_REPO = pathlib.Path(__file__).resolve().parents[1]
CASES = ("blood_pixels", "blood_random_init", "synthetic_pixels", "synthetic_features")
_SYNTHETIC_SIZES = {"train": 35000, "val": 6491, "test": 17778}
_SYNTHETIC_CLASSES = 11
_SIGNAL = 0.04  # class templates' scale against unit noise: test accuracy well below 1


def _blood_splits(data_dir: str):
  from medssl_jax.data import catalog  # pylint: disable=g-import-not-at-top
  return {role: catalog.open_source("bloodmnist", role, data_dir=data_dir)
          for role in ("train", "val", "test")}


def _blood_pixels(args):
  from medssl_jax.evaluation import context  # pylint: disable=g-import-not-at-top
  return {role: (context.raw_pixels(source, 28), np.asarray(source.labels))
          for role, source in _blood_splits(args.data_dir).items()}, {}


def _blood_random_init(args):
  """ResNet-18 features at random init, cached: extraction is not what is measured here."""
  cache = pathlib.Path(args.cache) / "blood_random_init.npz"
  splits = _blood_splits(args.data_dir)
  extra = {}
  if not cache.is_file():
    from medssl_jax.evaluation import context  # pylint: disable=g-import-not-at-top
    from medssl_jax.evaluation import features  # pylint: disable=g-import-not-at-top
    from medssl_jax.loop import defaults  # pylint: disable=g-import-not-at-top
    from medssl_jax.models import encoder  # pylint: disable=g-import-not-at-top
    model = defaults.pretraining().model
    model.width = 0.25
    backbone = encoder.create_backbone(model)
    variables = context.random_init_variables(backbone, 28, 3, seed=0)
    start = time.perf_counter()
    arrays = {role: features.extract_features(features.backbone_output(backbone), variables,
                                              source, image_size=28, batch_size=256)
              for role, source in splits.items()}
    seconds = time.perf_counter() - start
    extra = {"extract_s": round(seconds, 1),
             "extract_images_per_s": round(sum(len(s) for s in splits.values()) / seconds, 1)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **arrays)
  arrays = np.load(cache)
  return {role: (arrays[role], np.asarray(source.labels)) for role, source in splits.items()}, extra


def _synthetic(kind: str, seed: int = 0):
  """Class-dependent smooth 28x28 patterns plus per-image smooth and pixel noise (pixels, in
  [0, 1] at 1/255 steps), or non-negative correlated 512-d vectors (features)."""
  rng = np.random.default_rng(seed)
  dim = 784 if kind == "pixels" else 512
  coarse = rng.standard_normal((_SYNTHETIC_CLASSES, 7, 7))
  templates = np.kron(coarse, np.ones((4, 4))).reshape(_SYNTHETIC_CLASSES, 784)
  if kind == "features":
    templates = rng.standard_normal((_SYNTHETIC_CLASSES, 64)) @ rng.standard_normal((64, dim)) / 8
  mixing = rng.standard_normal((32, dim)) / 4
  out = {}
  for role, n in _SYNTHETIC_SIZES.items():
    y = rng.integers(0, _SYNTHETIC_CLASSES, size=n)
    x = _SIGNAL * templates[y] + rng.standard_normal((n, 32)) @ mixing + 0.5 * rng.standard_normal((n, dim))
    if kind == "pixels":
      x = np.round(np.clip(0.5 + 0.15 * x, 0.0, 1.0) * 255) / 255
    else:
      x = np.maximum(x, 0.0)
    out[role] = (x.astype(np.float32), y)
  return out, {}


_LOADERS = {"blood_pixels": _blood_pixels, "blood_random_init": _blood_random_init,
            "synthetic_pixels": lambda args: _synthetic("pixels"),
            "synthetic_features": lambda args: _synthetic("features")}


# What each case stands for in the eval: fit_probe treats raw pixels as such (pca.py).
_REPRESENTATION = {"blood_pixels": "raw_pixels", "blood_random_init": "random_init",
                   "synthetic_pixels": "raw_pixels", "synthetic_features": "pretrained"}


def _eval_config(overrides):
  sys.path.insert(0, str(_REPO / "configs" / "eval"))
  import linear_probe  # pylint: disable=g-import-not-at-top
  config = linear_probe.get_config()
  for item in overrides:
    key, value = item.split("=", 1)
    *parents, leaf = key.split(".")
    section = config
    for parent in parents:
      section = section[parent]
    section[leaf] = type(section[leaf])(json.loads(value)) if section[leaf] is not None else value
  return config


def run_case(case: str, args) -> dict:
  """In the child: load the case's arrays, fit as the eval does, score on test."""
  from absl import logging  # pylint: disable=g-import-not-at-top

  from medssl_jax.evaluation import probes  # pylint: disable=g-import-not-at-top
  from medssl_jax.evaluation import suite  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.INFO)
  config = _eval_config(args.override)
  data, extra = _LOADERS[case](args)
  (train_x, train_y), (val_x, val_y), (test_x, test_y) = data["train"], data["val"], data["test"]
  start = time.perf_counter()
  probe, kind = suite.fit_probe(config, train_x, train_y, val_x, val_y, multi_label=False,
                                name=_REPRESENTATION[case])
  fit_s = time.perf_counter() - start
  start = time.perf_counter()
  result = probes.evaluate_probe(probe, test_x, test_y, n_boot=config.n_boot, seed=config.seed)
  score_s = time.perf_counter() - start
  if hasattr(probe, "projection"):
    kind += f" on {probe.projection.components.shape[1]} PCs"
  return {"case": case, "shape": list(train_x.shape), "probe": kind, "fit_s": round(fit_s, 1),
          "score_s": round(score_s, 1), "C": probe.C, "val_auroc": round(float(probe.val_score), 4),
          "test_auroc": round(result["auroc"], 4), "test_accuracy": round(result["accuracy"], 4),
          **extra}


def _load() -> str:
  return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.split(
      "load average:")[-1].strip()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--cases", default=",".join(CASES))
  parser.add_argument("--timeout", type=float, default=600.0, help="seconds per case")
  parser.add_argument("--data_dir", default=str(_REPO.parent / "shared" / "data" / "medmnist"))
  parser.add_argument("--cache", default="/tmp/medssl_eval_speed")
  parser.add_argument("--override", action="append", default=[],
                      help="eval config key=JSON value, e.g. probe.kind='\"sklearn\"'")
  parser.add_argument("--child", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print("RESULT " + json.dumps(run_case(args.child, args)), flush=True)
    return

  rows = []
  for case in args.cases.split(","):
    if case not in CASES:
      raise SystemExit(f"unknown case {case!r}; known: {CASES}")
    load = _load()
    command = [sys.executable, __file__, f"--child={case}", f"--data_dir={args.data_dir}",
               f"--cache={args.cache}"] + [f"--override={o}" for o in args.override]
    start = time.perf_counter()
    try:
      done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout,
                            env={**os.environ, "PYTHONPATH": str(_REPO)}, check=False)
      lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
      row = json.loads(lines[-1][7:]) if lines else {"case": case, "error": done.stderr[-2000:]}
      sys.stderr.write(done.stderr[-4000:])
    except subprocess.TimeoutExpired as timeout:
      sys.stderr.write((timeout.stderr or b"")[-4000:].decode(errors="replace"))
      row = {"case": case, "fit_s": f"did not finish in {args.timeout:.0f} s"}
    row.update(wall_s=round(time.perf_counter() - start, 1), load=load)
    rows.append(row)
    print(json.dumps(row), flush=True)

  print("\n| case | N x D | probe | fit s | score s | case wall s | C | val AUROC | test AUROC "
        "| test acc | load (1, 5, 15 min) |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
  for r in rows:
    shape = " x ".join(map(str, r.get("shape", []))) or "-"
    print(f"| {r['case']} | {shape} | {r.get('probe', '-')} | {r.get('fit_s', '-')} | "
          f"{r.get('score_s', '-')} | {r['wall_s']} | {r.get('C', '-')} | {r.get('val_auroc', '-')} | "
          f"{r.get('test_auroc', '-')} | {r.get('test_accuracy', '-')} | {r['load']} |")


if __name__ == "__main__":
  main()

"""The evaluations an eval config can list, each `fn(run, workdir) -> JSON-able dict`.

Every evaluation scores the pretrained backbone next to the baselines in config.baselines
(random initialisation, raw pixels) on the same splits, so every figure stands next to
what it must beat. Plots are written to the eval workdir by process 0.
"""
from __future__ import annotations

import io

import jax
import numpy as np
from absl import logging

from medssl_jax import errors
from medssl_jax import paths
from medssl_jax.data import catalog
from medssl_jax.evaluation import embedding2d
from medssl_jax.evaluation import finetune as finetune_lib
from medssl_jax.evaluation import fractions as fractions_lib
from medssl_jax.evaluation import jax_probe
from medssl_jax.evaluation import knn as knn_lib
from medssl_jax.evaluation import metrics
from medssl_jax.evaluation import pca
from medssl_jax.evaluation import plots
from medssl_jax.evaluation import probes

PROBE_KINDS = ("auto", "sklearn", "jax")


def probe_kind(config, num_train: int, num_features: int) -> str:
  """scikit-learn for small problems (exact, fast there); the JAX probe beyond
  probe.sklearn_max_entries training entries (examples x features): sklearn's time grows
  with both, so 35k raw 784-pixel images need the JAX probe as much as 500k 1-d ones."""
  kind = config.probe.kind
  if kind not in PROBE_KINDS:
    raise errors.UserError(f"probe.kind must be one of {PROBE_KINDS}, got {kind!r}")
  if kind == "auto":
    return "sklearn" if num_train * num_features <= config.probe.sklearn_max_entries else "jax"
  return kind


def fit_probe(config, train_x, train_y, val_x, val_y, multi_label: bool, name: str = "logistic"):
  """The probe of (train, val) features with the solver probe_kind picks; (probe, kind). Raw
  pixels wider than probe.raw_pixels_components are first projected onto that many principal
  components of the training rows (pca.py); the probe returned takes unprojected features."""
  components = config.probe.raw_pixels_components
  projection = None
  if name == "raw_pixels" and 0 < components < np.shape(train_x)[1]:
    projection = pca.fit(train_x, components)
    logging.info("raw pixels: %d features projected onto their top %d principal components "
                 "(%.1f%% of the training variance)", np.shape(train_x)[1], projection.components.shape[1],
                 100 * projection.variance_kept)
    train_x, val_x = projection(train_x), projection(val_x)
  kind = probe_kind(config, *np.shape(train_x))
  fit = probes.fit_logistic_probe if kind == "sklearn" else jax_probe.fit_jax_probe
  probe = fit(train_x, train_y, val_x, val_y, Cs=tuple(config.probe.Cs), multi_label=multi_label,
              max_iter=config.probe.max_iter, tol=config.probe.tol, seed=config.seed, name=name)
  return (probe if projection is None else pca.ProjectedProbe(probe, projection)), kind


def _probe(run, representation: str):
  """The probe of one representation, fitted once per run and shared (linear probe, transfer)."""
  memo = run.memo.setdefault("probes", {})
  if representation not in memo:
    feats, labels = run.features(representation), run.labels()
    memo[representation] = fit_probe(run.config, feats["train"], labels["train"], feats["val"],
                                     labels["val"], run.splits["train"].multi_label,
                                     name=representation)
  return memo[representation]


def linear_probe(run, workdir: paths.Path) -> dict:
  del workdir
  results = {}
  for name in run.representations:
    logging.info("linear probe on %s features", name)
    probe, kind = _probe(run, name)
    feats = run.features(name)
    result = probes.evaluate_probe(probe, feats["test"], run.labels()["test"], n_boot=run.config.n_boot,
                                   seed=run.config.seed, groups=run.test_groups())
    result.update(C=float(probe.C), val_auroc=float(probe.val_score), probe=kind,
                  feature_dim=int(feats["train"].shape[1]))
    if isinstance(probe, pca.ProjectedProbe):
      result.update(pca_components=int(probe.projection.components.shape[1]),
                    pca_variance_kept=float(probe.projection.variance_kept))
    results[name] = result
  return results


def knn(run, workdir: paths.Path) -> dict:
  """Cosine kNN with a similarity-weighted vote: train split as the bank, test as queries."""
  del workdir
  config, labels = run.config.knn, run.labels()
  results = {}
  for name in run.representations:
    logging.info("kNN on %s features", name)
    feats = run.features(name)
    results[name] = knn_lib.evaluate_knn(
        feats["train"], labels["train"], feats["test"], labels["test"], k=config.k,
        temperature=config.temperature, multi_label=run.splits["train"].multi_label,
        n_boot=run.config.n_boot, seed=run.config.seed, test_groups=run.test_groups())
  return results


def _finetune_one(run, variables, train_indices=None, seed=None) -> dict:
  config = run.config.finetune
  return finetune_lib.finetune(
      run.backbone, variables, run.splits["train"], run.splits["val"], run.splits["test"],
      num_classes=run.splits["train"].num_classes, multi_label=run.splits["train"].multi_label,
      image_size=run.image_size, steps=config.steps, batch_size=config.batch_size,
      learning_rate=config.learning_rate, weight_decay=config.weight_decay, policy=config.policy,
      eval_every=config.eval_every, seed=run.config.seed if seed is None else seed,
      train_indices=train_indices, n_boot=run.config.n_boot, test_groups=run.test_groups())


def finetune(run, workdir: paths.Path) -> dict:
  """End to end with labels, from the pretrained backbone and from random init (supervised)."""
  del workdir
  logging.info("fine-tuning the pretrained backbone")
  results = {"pretrained": _finetune_one(run, run.backbone_variables)}
  if "random_init" in run.config.baselines:
    logging.info("training the same network from random initialisation (supervised baseline)")
    results["random_init"] = _finetune_one(run, None)
  return results


def _held_out_groups(run) -> np.ndarray:
  """Group names of the val and test images: a training draw must never include them."""
  names = []
  for role in ("val", "test"):
    source = run.splits[role]
    if getattr(source, "has_groups", False):
      names.append(np.asarray(source.group_names)[np.asarray(source.groups)])
  return np.concatenate(names) if names else np.array([], str)


def _fraction_score(run, protocol: str, representation: str, indices: np.ndarray, seed: int) -> float:
  metric = run.config.label_fractions.metric
  labels = run.labels()
  if protocol == "finetune":
    variables = run.backbone_variables if representation == "pretrained" else None
    return _finetune_one(run, variables, train_indices=indices, seed=seed)[metric]
  # The probe is deterministic given its training rows, so equal draws (every seed at 100%)
  # are fitted once.
  memo = run.memo.setdefault("fraction_scores", {})
  key = (representation, metric, np.asarray(indices).tobytes())
  if key not in memo:
    feats = run.features(representation)
    probe, _ = fit_probe(run.config, feats["train"][indices], labels["train"][indices], feats["val"],
                         labels["val"], run.splits["train"].multi_label, name=representation)
    memo[key] = probes.evaluate_probe(probe, feats["test"], labels["test"], n_boot=0)[metric]
  return memo[key]


def label_fractions(run, workdir: paths.Path) -> dict:
  """Each protocol on 1%, 10%, 100% (configurable) of the labelled training split, drawn per
  class (and per patient where the data has patients), repeated over seeds: mean and 95% CI."""
  config = run.config.label_fractions
  train = run.splits["train"]
  has_groups = getattr(train, "has_groups", False)
  groups = np.asarray(train.group_names)[np.asarray(train.groups)] if has_groups else None
  held_out = _held_out_groups(run) if has_groups else None
  results = {"metric": config.metric, "fractions": list(config.fractions), "seeds": list(config.seeds),
             "by_patient": bool(has_groups)}
  for protocol in config.protocols:
    representations = (("pretrained", "random_init") if protocol == "finetune" else run.representations)
    representations = [r for r in representations if r == "pretrained" or r in run.config.baselines]
    summaries = {}
    for name in representations:
      rows = []
      for fraction in config.fractions:
        for seed in config.seeds:
          indices = fractions_lib.draw_fraction(np.asarray(train.labels), fraction, seed, groups=groups,
                                                exclude_groups=held_out)
          score = _fraction_score(run, protocol, name, indices, seed)
          logging.info("%s on %s, %g of the labels (%d images), seed %d: %s %.4f", protocol, name,
                       fraction, len(indices), seed, config.metric, score)
          rows.append({"fraction": fraction, "seed": seed, "n_train": int(len(indices)),
                       config.metric: float(score)})
      summaries[name] = fractions_lib.summarise(rows, config.metric)
    results[protocol] = summaries
    if jax.process_index() == 0:
      filename = f"label_fractions_{protocol}.png"
      workdir.mkdir(parents=True, exist_ok=True)
      fractions_lib.plot_fractions(summaries, workdir / filename, config.metric,
                                   title=f"{protocol} on {train.name}: test {config.metric} "
                                         f"(mean and 95% CI over {len(config.seeds)} seeds)")
      results.setdefault("files", []).append(filename)
  return results


def _mapped_labels(target_labels, target_names, probe_names, label_map) -> tuple[np.ndarray, np.ndarray]:
  """Target labels as probe class ids, and which rows have a mapped class."""
  mapping = {target: probe for target, probe in label_map if target}
  unknown = ([t for t in mapping if t not in target_names]
             + [p for p in mapping.values() if p not in probe_names])
  if unknown or not mapping:
    raise errors.UserError(f"transfer.label_map {label_map} must map the target's classes "
                           f"{list(target_names)} to the probe's classes {list(probe_names)}; "
                           f"unknown: {unknown}")
  to_probe = np.array([probe_names.index(mapping[n]) if n in mapping else -1 for n in target_names])
  mapped = to_probe[np.asarray(target_labels)]
  return mapped, mapped >= 0


def transfer(run, workdir: paths.Path) -> dict:
  """Probes fitted on this run's data applied, unchanged, to another data set whose classes
  map onto them (config.transfer.label_map: (target class, probe class) pairs)."""
  del workdir
  config = run.config.transfer
  if not config.data.name:
    raise errors.UserError("the transfer evaluation needs --config.transfer.data.name (and its data.dir)")
  data = catalog.with_defaults(config.data)
  target = catalog.open_data(data, config.split)
  if target.multi_label or run.splits["train"].multi_label:
    raise errors.UserError("transfer maps class labels; multi-label data sets are not supported")
  if target.image_shape[-1] != run.channels:
    raise errors.UserError(f"{target.name} has {target.image_shape[-1]} channels but the run was trained "
                           f"on {run.channels}: set transfer.data.channels={run.channels}")
  labels, keep = _mapped_labels(target.labels, list(target.class_names),
                                list(run.splits["train"].class_names), config.label_map)
  results = {"target": target.name, "split": config.split,
             "label_map": [list(p) for p in config.label_map if p[0]],
             "n_unmapped": int((~keep).sum())}
  groups = np.asarray(target.groups)[keep] if getattr(target, "has_groups", False) else None
  for name in run.representations:
    probe, _ = _probe(run, name)
    feats = run.features_of(name, target, data, config.split)[keep]
    results[name] = metrics.summarize(labels[keep], probe.predict_proba(feats), n_boot=run.config.n_boot,
                                      seed=run.config.seed, groups=groups)
  return results


def _tsne_map(run, representation: str, labels: dict) -> tuple[dict, dict]:
  """(role -> 2-D points, role -> labels): t-SNE of a seeded subsample of each split, jointly
  (t-SNE is O(n^2))."""
  feats = run.features(representation)
  keep = {role: embedding2d.subsample(len(v), run.config.embedding_2d.max_points, run.config.seed)
          for role, v in feats.items()}
  points = embedding2d.tsne(np.concatenate([feats[r][keep[r]] for r in feats]), seed=run.config.seed)
  bounds = np.cumsum([0] + [len(keep[r]) for r in feats])
  return ({role: points[a:b] for role, a, b in zip(feats, bounds[:-1], bounds[1:])},
          {role: labels[role][keep[role]] for role in feats})


def _map_scores(run, outputs: dict, labels: dict) -> dict:
  return embedding2d.map_scores(outputs, labels, k=run.config.embedding_2d.knn_k,
                                n_boot=run.config.n_boot, seed=run.config.seed)


def _plot_map(run, outputs, labels, kind, scores, path, what) -> None:
  plots.scatter_2d(np.concatenate(list(outputs.values())), np.concatenate(list(labels.values())),
                   run.splits["train"].class_names, path,
                   title=f"{what} {kind} 2-D map of {run.splits['test'].name}: "
                         f"kNN acc {scores['knn_accuracy']:.3f}, silhouette {scores['silhouette']:.3f}")


def embedding_2d(run, workdir: paths.Path) -> dict:
  """The 2-D map of every image: the network's own 2-D output (t-SimCNE) or t-SNE of frozen
  features; each baseline (random init, raw pixels) as a t-SNE map beside it, scored the same
  way. Writes embedding_2d.npz (points, labels, split), embedding_2d.png and one PNG per
  baseline."""
  labels = run.labels()
  if run.pretrain_config.model.projector_dim == 2:
    kind, outputs = "learned", run.features("projection")
  else:
    kind, (outputs, labels) = "tsne", _tsne_map(run, "pretrained", labels)
  result = {"kind": kind, **_map_scores(run, outputs, labels), "knn_k": run.config.embedding_2d.knn_k,
            "baselines": {}}
  baseline_maps = {}
  for name in run.config.baselines:
    logging.info("2-D map (t-SNE) of the %s baseline", name)
    baseline_maps[name] = _tsne_map(run, name, run.labels())
    result["baselines"][name] = {"kind": "tsne", **_map_scores(run, *baseline_maps[name])}
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    roles = list(outputs)
    buffer = io.BytesIO()
    np.savez(buffer, points=np.concatenate([outputs[r] for r in roles]),
             labels=np.concatenate([labels[r] for r in roles]),
             split=np.concatenate([np.full(len(outputs[r]), r) for r in roles]))
    paths.write_bytes_atomic(workdir / "embedding_2d.npz", buffer.getvalue())
    _plot_map(run, outputs, labels, kind, result, workdir / "embedding_2d.png", run.pretrain_config.method)
    result["files"] = ["embedding_2d.npz", "embedding_2d.png"]
    for name, (points, point_labels) in baseline_maps.items():
      _plot_map(run, points, point_labels, "tsne", result["baselines"][name],
                workdir / f"embedding_2d_{name}.png", name)
      result["files"].append(f"embedding_2d_{name}.png")
  return result


EVALUATIONS = {"linear_probe": linear_probe, "knn": knn, "finetune": finetune,
               "label_fractions": label_fractions, "transfer": transfer, "embedding_2d": embedding_2d}

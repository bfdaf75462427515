"""results.json as people read it: a Markdown report (results.md) and a short stdout table.

One table per evaluation, one row per representation (pretrained first, then the baselines
it must beat), each figure with its 95% interval; plots are linked under their table.
"""
from __future__ import annotations

_PER_REPRESENTATION = {"linear_probe": "Linear probe", "knn": "kNN", "finetune": "Fine-tuning",
                       "transfer": "Transfer without retraining"}


def with_ci(value, ci) -> str:
  if value is None:
    return "n/a"
  if not ci:
    return f"{value:.4f}"
  to = " to " if min(ci) < 0 else "-"  # "-0.084--0.065" would misread
  return f"{value:.4f} ({ci[0]:.3f}{to}{ci[1]:.3f})"


def _map_row(scores: dict) -> str:
  """A 2-D map's test and validation scores as table cells (results older than the
  validation scores lack them)."""
  return " | ".join(with_ci(scores.get(key), scores.get(f"{key}_ci"))
                    for key in ("knn_accuracy", "silhouette", "val_knn_accuracy", "val_silhouette"))


def _representation_rows(section: dict) -> list[tuple[str, dict]]:
  return [(name, r) for name, r in section.items() if isinstance(r, dict) and "auroc" in r]


def metric_table(section: dict) -> list[str]:
  lines = ["| representation | test AUROC (95% CI) | test accuracy (95% CI) | n |", "|---|---|---|---|"]
  rows = _representation_rows(section)
  for name, r in rows:
    lines.append(f"| {name} | {with_ci(r['auroc'], r.get('auroc_ci'))} | "
                 f"{with_ci(r['accuracy'], r.get('accuracy_ci'))} | {r.get('n', '')} |")
  groups = {r["ci_groups"] for _, r in rows if "ci_groups" in r}
  if groups:
    lines += ["", f"The intervals resample the test split's {', '.join(map(str, sorted(groups)))} "
              "patients (groups), not its images."]
  return lines


def _details(name: str, section: dict) -> list[str]:
  rows = _representation_rows(section)
  if name == "linear_probe":
    return [f"- {n}: {r['probe']} probe, C={r['C']:g} chosen on validation (AUROC {r['val_auroc']:.4f}), "
            f"{r['feature_dim']} features" for n, r in rows]
  if name == "knn":
    return [f"- k={r['k']}, temperature {r['temperature']:g}, cosine similarity" for _, r in rows[:1]]
  if name == "finetune":
    return [f"- {n}: best validation AUROC {r['val_auroc']:.4f} at step {r['best_step']}"
            for n, r in rows if "best_step" in r]
  if name == "transfer":
    pairs = ", ".join(f"{t} -> {p}" for t, p in section["label_map"])
    return [f"- probes fitted on this run's data, applied to {section['target']} ({section['split']}); "
            f"classes mapped {pairs}; {section['n_unmapped']} images of unmapped classes left out"]
  return []


def _fractions_section(section: dict) -> list[str]:
  lines = []
  metric = section["metric"]
  for protocol in ("linear_probe", "finetune"):
    if protocol not in section:
      continue
    lines += [f"**{protocol}**, test {metric}: mean (95% CI) over seeds {section['seeds']}"
              + (", drawn by patient" if section["by_patient"] else ""), ""]
    fractions = section["fractions"]
    lines.append("| representation | " + " | ".join(f"{100 * f:g}% of labels" for f in fractions) + " |")
    lines.append("|---" * (len(fractions) + 1) + "|")
    for name, summary in section[protocol].items():
      cells = [with_ci(summary[str(f)]["mean"], summary[str(f)]["ci"]) for f in fractions]
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
  return lines


def markdown(results: dict) -> str:
  lines = [f"# Evaluation of {results['pretrain_workdir']}", "",
           f"{results['method']} / {results['model']}, checkpoint step {results['step']}, "
           f"data {results['data']}.", ""]
  for name, section in results.items():
    if not isinstance(section, dict):
      continue
    if name in _PER_REPRESENTATION:
      lines += [f"## {_PER_REPRESENTATION[name]}", ""] + metric_table(section) + [""]
      lines += _details(name, section)
    elif name == "label_fractions":
      lines += ["## Label fractions", ""] + _fractions_section(section)
    elif name == "embedding_2d":
      lines += ["## 2-D map", "", f"| map | test kNN accuracy in 2-D (k={section['knn_k']}) "
                "| test silhouette | validation kNN accuracy | validation silhouette |",
                "|---|---|---|---|---|"]
      maps = [(f"pretrained ({section['kind']})", section)]
      maps += [(f"{name} ({r['kind']})", r) for name, r in section.get("baselines", {}).items()]
      lines += [f"| {name} | {_map_row(r)} |" for name, r in maps] + [""]
    lines += [f"![{file}]({file})" for file in section.get("files", []) if file.endswith(".png")]
    lines.append("")
  return "\n".join(lines).rstrip() + "\n"


def table(results: dict) -> str:
  """The short form printed at the end of a run."""
  lines = [f"{results['data']}: {results['method']}, {results['model']}, step {results['step']}"]
  for name, title in _PER_REPRESENTATION.items():
    if name in results:
      lines.append(f"{title:<28} {'test AUROC (95% CI)':<26} {'test accuracy (95% CI)':<26}")
      for rep, r in _representation_rows(results[name]):
        lines.append(f"  {rep:<26} {with_ci(r['auroc'], r['auroc_ci']):<26} "
                     f"{with_ci(r['accuracy'], r['accuracy_ci']):<26}")
  if "label_fractions" in results:
    lines += [line for line in _fractions_section(results["label_fractions"]) if line]
  if "embedding_2d" in results:
    r = results["embedding_2d"]
    lines.append(f"2-D map ({r['kind']}): test kNN accuracy (k={r['knn_k']}) "
                 f"{with_ci(r['knn_accuracy'], r.get('knn_accuracy_ci'))}, "
                 f"silhouette {with_ci(r['silhouette'], r.get('silhouette_ci'))}")
    lines += [f"  {name} ({b['kind']}): test kNN accuracy "
              f"{with_ci(b['knn_accuracy'], b.get('knn_accuracy_ci'))}, "
              f"silhouette {with_ci(b['silhouette'], b.get('silhouette_ci'))}"
              for name, b in r.get("baselines", {}).items()]
  return "\n".join(lines)

"""The README.md model card of a `medssl-export --format=hf` folder, generated from the run:
what the backbone is and how to load it, how its input is made, how it was pretrained
(method and recipe, data set and split policy, steps and batch, where its weights started),
and every evaluation of the exported checkpoint found in the run's evaluation folders
(`results.json` of medssl-eval: linear probe, kNN, fine-tuning, label fractions, transfer,
2-D map, each figure with its 95% interval), with the command that produced them. Without
any, the card says "not evaluated" and gives the command that would evaluate it.

results.json does not record its command line, so the command is rebuilt from what it does
record (evaluations, step, baselines, probe and fraction settings); a results.json that
carries a "command" entry is quoted as it is.
"""
from __future__ import annotations

import json

from medssl_jax import errors
from medssl_jax import paths
from medssl_jax.evaluation import report

RESULTS_FILE = "results.json"
# medssl-eval's evaluations, as results.json names its sections.
EVALUATIONS = ("linear_probe", "knn", "finetune", "label_fractions", "transfer", "embedding_2d")
_FULL = ("linear_probe", "knn", "finetune", "label_fractions", "embedding_2d")  # configs/eval/full.py
_BASELINES = {"random_init": "the same network at random initialisation", "raw_pixels": "raw pixels"}
_TITLES = {"linear_probe": "Linear probe", "knn": "kNN", "finetune": "Fine-tuning",
           "transfer": "Transfer without retraining"}
# configs/eval/linear_probe.py's values of the settings results.json records.
_DEFAULTS = {"baselines": ["random_init", "raw_pixels"], "knn.k": 20, "knn.temperature": 0.07,
             "label_fractions.fractions": [0.01, 0.1, 1.0], "label_fractions.seeds": [0, 1, 2],
             "label_fractions.metric": "auroc"}


def _read_results(path) -> dict:
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise errors.UserError(f"{path} is not valid JSON: {e}") from e


def find_results(workdir, step: int, eval_dirs=()) -> tuple[list[tuple[str, dict]], list[str]]:
  """([(directory, results)] of every evaluation of checkpoint `step`, [notes on results of
  other steps]).

  Looks in each of `eval_dirs`, or by default in every WORKDIR/eval* folder (medssl-eval's
  usual --workdir), for results.json and, for watch mode, step_{step}/results.json. A folder
  named in eval_dirs that holds no results of `step` is an error that says which steps it has;
  a default folder whose results are of another pretraining workdir is skipped with a note
  (named with --eval_dir, it is used: a run may have moved since it was evaluated).
  """
  workdir = paths.path(workdir)
  named = bool(eval_dirs)
  if named:
    folders = [paths.path(d) for d in eval_dirs]
  else:
    folders = sorted(p for p in workdir.iterdir() if p.is_dir() and p.name.startswith("eval"))
  found, notes = [], []
  for folder in folders:
    if not folder.is_dir():
      raise errors.UserFileNotFoundError(f"evaluation folder {folder} not found")
    candidates = [folder / RESULTS_FILE, folder / f"step_{step}" / RESULTS_FILE]
    results = [(c.parent, _read_results(c)) for c in candidates if c.is_file()]
    of_step = [(str(d), r) for d, r in results if r.get("step") == step]
    elsewhere = [r["pretrain_workdir"] for _, r in of_step if str(paths.path(r.get("pretrain_workdir", "")))
                 != str(workdir)]
    if of_step and elsewhere and not named:  # a copy of another run's evaluation folder
      notes.append(f"{folder} evaluates {elsewhere[0]}, not this run (name it with --eval_dir to use it)")
      continue
    if of_step:
      found += of_step[:1]
      continue
    other = sorted({r.get("step") for _, r in results}
                   | {int(p.name[5:]) for p in folder.glob("step_*") if p.name[5:].isdigit()})
    note = (f"{folder} holds evaluations of step(s) {other}, not of step {step}" if other
            else f"{folder} holds no {RESULTS_FILE}")
    if named:
      raise errors.UserError(f"--eval_dir: {note}; export that step with --step, or evaluate step {step} "
                             f"(medssl-eval ... --config.step={step})")
    notes.append(note)
  return found, notes


def _quote(value) -> str:
  if isinstance(value, (list, tuple)):
    inner = ",".join(_quote(v) for v in value)
    return f"({inner}{',' if len(value) == 1 else ''})"
  return repr(value)


def eval_command(results: dict, directory: str) -> str:
  """The medssl-eval command that wrote `results` into `directory` (rebuilt; see module doc)."""
  if results.get("command"):
    return str(results["command"])
  evaluations = [e for e in EVALUATIONS if e in results]
  full = set(_FULL) <= set(evaluations)
  config = "configs/eval/full.py" if full else "configs/eval/linear_probe.py"
  parts = ["medssl-eval", f"--config={config}", f"--config.pretrain_workdir={results['pretrain_workdir']}",
           f"--config.step={results['step']}"]
  if evaluations != (list(_FULL) if full else ["linear_probe"]):
    parts.append(f'--config.evaluations="{_quote(evaluations)}"')
  recorded = {"baselines": results.get("baselines")}
  knn = next(iter(v for v in results.get("knn", {}).values() if isinstance(v, dict)), {})
  recorded["knn.k"], recorded["knn.temperature"] = knn.get("k"), knn.get("temperature")
  fractions = results.get("label_fractions", {})
  for key in ("fractions", "seeds", "metric"):
    recorded[f"label_fractions.{key}"] = fractions.get(key)
  for key, value in recorded.items():
    if value is not None and value != _DEFAULTS[key]:
      quoted = f'"{_quote(value)}"' if isinstance(value, list) else value
      parts.append(f"--config.{key}={quoted}")
  parts.append(f"--workdir={directory}")
  return " ".join(parts)


def _fractions_table(section: dict) -> list[str]:
  lines = []
  for protocol in ("linear_probe", "finetune"):
    if protocol not in section:
      continue
    fractions = section["fractions"]
    lines += [f"Label fractions, {protocol}: test {section['metric']}, mean (95% CI) over seeds "
              f"{section['seeds']}" + (", drawn by patient" if section.get("by_patient") else ""), "",
              "| representation | " + " | ".join(f"{100 * f:g}% of labels" for f in fractions) + " |",
              "|---" * (len(fractions) + 1) + "|"]
    for name, summary in section[protocol].items():
      cells = [report.with_ci(summary[str(f)]["mean"], summary[str(f)]["ci"]) for f in fractions]
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
  return lines


def evaluation_section(results: dict, directory: str) -> list[str]:
  baselines = [f"{b} ({_BASELINES.get(b, b)})" for b in results.get("baselines", [])]
  lines = [f"### {directory}/{RESULTS_FILE}", "",
           f"Checkpoint step {results['step']}, evaluated on {results['data']}; the pretrained backbone "
           f"next to the baselines " + (", ".join(baselines) or "(none)") + ".", ""]
  for name in EVALUATIONS:
    section = results.get(name)
    if not isinstance(section, dict):
      continue
    if name in _TITLES:
      lines += [f"**{_TITLES[name]}**", ""] + report.metric_table(section) + [""]
      if name == "transfer":
        lines += [f"Probes fitted on the run's data, applied to {section['target']} "
                  f"({section['split']}).", ""]
    elif name == "label_fractions":
      lines += _fractions_table(section)
    elif name == "embedding_2d":
      lines += [f"**2-D map** ({section['kind']}): kNN accuracy in 2-D (k={section['knn_k']}) "
                f"{report.with_ci(section['knn_accuracy'], section.get('knn_accuracy_ci'))}, silhouette "
                f"{report.with_ci(section['silhouette'], section.get('silhouette_ci'))}", ""]
  rebuilt = "" if results.get("command") else (
      " (rebuilt from results.json, which records the evaluations and their settings but not the "
      "command line: settings it does not record, such as probe.Cs and n_boot, are not shown)")
  lines += [f"Produced by{rebuilt}:", "", f"    {eval_command(results, directory)}", ""]
  return lines


def _split_policy(data: dict) -> str:
  split = data.get("split", {})
  if split.get("by") == "group":
    policy = (f"drawn by patient/group with seed {split.get('seed')} and image fractions "
              f"{split.get('fractions')} (train, val, test): no patient in two splits")
  else:
    policy = "the splits as the data set ships them"
    if str(data.get("name", "")).startswith("tfds:"):
      policy += f" (tfds splits {data.get('tfds', {}).get('splits')})"
  if split.get("allow_leakage"):
    policy += "; images of one patient in two splits were allowed (data.split.allow_leakage)"
  return policy


def _recipe(config: dict) -> list[str]:
  optim, augment = config.get("optim", {}), config.get("augment", {})
  method_section = config.get(config["method"])
  views = augment.get("policy", "")
  if augment.get("policy_view2"):
    views += f" (view 1) / {augment['policy_view2']} (view 2)"
  lines = [f"- Method: {config['method']}" + (f", settings {json.dumps(method_section)}"
                                              if isinstance(method_section, dict) else ""),
           f"- Augmentation: policy {views}, views of {augment.get('size')} x {augment.get('size')} px",
           f"- Optimiser: {optim.get('name')}, base learning rate {optim.get('base_lr')} "
           f"({optim.get('lr_scaling')} scaling with batch/256), {optim.get('warmup_steps')} warm-up steps, "
           f"weight decay {optim.get('weight_decay')}"]
  model = config.get("model", {})
  lines.append(f"- Projector: {model.get('projector_layers')} layers, hidden "
               f"{model.get('projector_hidden_dim')}, output {model.get('projector_dim')} (not exported); "
               f"compute dtype {model.get('dtype')}")
  return lines


def _usage(info: dict) -> list[str]:
  weights = "model.safetensors" if "model.safetensors" in info["weights"] else info["weights"][0]
  lines = ["```python", "import sys, torch",
           "sys.path.insert(0, \"THIS_FOLDER\")  # the downloaded folder",
           "import medssl_backbone",
           "model = medssl_backbone.load(\"THIS_FOLDER\")  # eval mode, weights loaded strictly",
           "x = medssl_backbone.preprocess(images_uint8, \"THIS_FOLDER\")  # (N, H, W, C) uint8",
           "with torch.no_grad():",
           f"  features = model(x)  # (N, {info['num_features']})", "```", ""]
  stock = info["stock_models"]
  if stock["torchvision"]:
    lines += ["With torchvision's own model (the state_dict holds its keys, less the classifier):", "",
              "```python", "import torch, torchvision", "from safetensors.torch import load_file",
              stock["torchvision"], f"model.load_state_dict(load_file(\"{weights}\")); model.eval()",
              "```", ""]
  else:
    lines += ["torchvision's and timm's own constructors cannot build this network ("
              + "; ".join(stock["not_expressible"])
              + "): `medssl_backbone.py` does, with their key names.", ""]
  if info.get("naming") == "timm" and stock["timm"]:
    lines += ["With timm, once this folder is on the Hugging Face Hub as USER/REPO:", "", "```python",
              "import timm", "model = timm.create_model(\"hf-hub:USER/REPO\", pretrained=True).eval()",
              "```", "",
              "timm's own data transforms resize with antialiasing; for the exact input use "
              "`medssl_backbone.preprocess` (the `preprocessing` entry of config.json).", ""]
  return lines


def _preprocessing_lines(spec: dict) -> list[str]:
  size = spec["resize"]["size"]
  return [f"- {spec['input']}; {spec['channel_handling']}",
          f"- x = uint8 / {spec['scale']:g}; bilinear resize to {size[0]} x {size[1]} "
          f"(align_corners={spec['resize']['align_corners']}, antialias={spec['resize']['antialias']}; "
          f"{spec['resize']['aspect']}); clip to {spec['clip']}; mean {spec['mean']}, std {spec['std']}",
          f"- In PyTorch: `{spec['pytorch']}`"]


def render(info: dict, run_config: dict, evaluations: list[tuple[str, dict]], notes: list[str],
           init_record: dict | None = None) -> str:
  """The card. info: the export's config.json; run_config: the run's config.json."""
  pre = info["pretraining"]
  data = run_config.get("data", {})
  shape = (f"width {info['width']:g}" + (", small-image stem" if info["small_stem"] else "")
           + f", {info['in_channels']} input channel{'s' if info['in_channels'] != 1 else ''}")
  library = "timm" if info.get("naming") == "timm" and info["stock_models"]["timm"] else "pytorch"
  lines = ["---", f"library_name: {library}", "pipeline_tag: image-feature-extraction", "tags:",
           "- medssl-jax", "- self-supervised-learning", f"- {pre['method']}", f"- {info['architecture']}",
           "- medical-imaging", "---", "",
           f"# {pre['method']} {info['architecture']} pretrained on {pre['data']}", "",
           f"A self-supervised {info['architecture']} backbone ({shape}) pretrained with medssl-jax and "
           f"exported to PyTorch: it maps an image to {info['num_features']} pooled features. It has no "
           "classifier; train one on the features, or fine-tune the whole network.", "",
           "## Files", "",
           f"- {', '.join(info['weights'])}: the weights, keyed as torchvision's {info['architecture']} "
           "(and timm's) state_dict without the classifier",
           "- config.json: architecture, input preprocessing, pretraining",
           f"- {info['module_file']}: the network in plain PyTorch (needs only torch)", "",
           "## Use", ""] + _usage(info)
  lines += ["## Input", ""] + _preprocessing_lines(info["preprocessing"]) + [""]
  steps = f"{pre['step']} of {run_config.get('num_steps')} steps"
  start = "random initialisation"
  if init_record:
    start = (f"{init_record.get('kind')} weights from {init_record.get('init_from')}"
             + (f" (step {init_record['step']})" if init_record.get("step") is not None else "")
             + f", modules {init_record.get('modules')}")
  lines += ["## Pretraining", "",
            f"- Data: {data.get('name')}, split \"{data.get('train_split')}\" "
            f"({data.get('channels')} channel(s)); split policy: {_split_policy(data)}; "
            f"positive pairs: {data.get('pairing')}",
            f"- Steps and batch: checkpoint step {steps}, global batch {run_config.get('batch_size')} "
            f"pairs, seed {run_config.get('seed')}",
            f"- Started from: {start}"] + _recipe(run_config)
  lines += [f"- Source: {pre['source_workdir']}, exported {info['exported']}", "", "## Evaluation", ""]
  if evaluations:
    for directory, results in evaluations:
      lines += evaluation_section(results, directory)
  else:
    lines += [f"Not evaluated: no evaluation of step {pre['step']} was found"
              + (f" ({'; '.join(notes)})" if notes else "") + ". To evaluate it:", "",
              f"    medssl-eval --config=configs/eval/linear_probe.py "
              f"--config.pretrain_workdir={pre['source_workdir']} --config.step={pre['step']} "
              f"--workdir={pre['source_workdir']}/eval", ""]
  return "\n".join(lines).rstrip() + "\n"

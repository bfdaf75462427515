"""Backbones out of JAX: our ResNet / DenseNet variables as a PyTorch state_dict with
torchvision's key names, and back (the inverse of torch_weights.py, for any width and stem).

Keys are exactly those of torchvision's resnet18/34/50 and densenet121 state_dicts, less the
classifier (`fc.*`, `classifier.*`): a backbone ends at its pooled features. timm's models of
the same names use the same keys (timm/models/resnet.py and densenet.py keep torchvision's
names "for weight compatibility"), so one table serves `--naming=torchvision` and `timm`.
Convolutions go HWIO -> OIHW; a BatchNorm's scale, bias, mean and var become weight, bias,
running_mean and running_var, plus the int64 `num_batches_tracked` every PyTorch BatchNorm
has (set to the checkpoint step). Every tensor is copied bit for bit, so JAX -> torch -> JAX
gives back the same variables.

What torchvision's constructors cannot build (the small-image stem, a width multiplier, a
one-channel stem) keeps the same keys with other shapes; torch_backbone.py, written next to
the weights, builds those networks (see `stock_models` for what a stock model can load).
"""
from __future__ import annotations

import numpy as np

from medssl_jax import errors
from medssl_jax.models import densenet
from medssl_jax.models import resnet

CONV, NORM = "conv", "norm"


def supported() -> list[str]:
  return sorted(resnet.ARCHITECTURES) + sorted(densenet.ARCHITECTURES)


def check_supported(name: str) -> None:
  if name not in supported():
    raise errors.UserError(f"PyTorch export covers {supported()} (torchvision's layouts); this run's "
                           f"backbone is {name!r}, which has no torchvision/timm counterpart here: "
                           "export it with --format=orbax")


def key_table(name: str) -> list[tuple[tuple[str, ...], str, str]]:
  """(our module path, torchvision module name, CONV or NORM) for every layer of backbone
  `name`, in the order torchvision registers them (that of its state_dict)."""
  check_supported(name)
  if name in resnet.ARCHITECTURES:
    return _resnet_table(name)
  return _densenet_table(name)


def _resnet_table(name):
  kind, stages = resnet.ARCHITECTURES[name]
  block_name, convs = ("BasicBlock", 2) if kind == "basic" else ("BottleneckBlock", 3)
  table = [(("conv_init",), "conv1", CONV), (("bn_init",), "bn1", NORM)]
  index = 0
  for stage, num_blocks in enumerate(stages):
    for block in range(num_blocks):
      ours, theirs = f"{block_name}_{index}", f"layer{stage + 1}.{block}"
      for i in range(convs):
        table += [((ours, f"Conv_{i}"), f"{theirs}.conv{i + 1}", CONV),
                  ((ours, f"BatchNorm_{i}"), f"{theirs}.bn{i + 1}", NORM)]
      if block == 0 and (stage > 0 or kind == "bottleneck"):  # where the shapes change
        table += [((ours, "conv_proj"), f"{theirs}.downsample.0", CONV),
                  ((ours, "norm_proj"), f"{theirs}.downsample.1", NORM)]
      index += 1
  return table


def _densenet_table(name):
  table = [(("conv_init",), "features.conv0", CONV), (("bn_init",), "features.norm0", NORM)]
  blocks = densenet.ARCHITECTURES[name]
  layer = 0
  for b, num_layers in enumerate(blocks):
    for i in range(num_layers):
      ours, theirs = f"DenseLayer_{layer}", f"features.denseblock{b + 1}.denselayer{i + 1}"
      table += [((ours, "BatchNorm_0"), f"{theirs}.norm1", NORM), ((ours, "Conv_0"), f"{theirs}.conv1", CONV),
                ((ours, "BatchNorm_1"), f"{theirs}.norm2", NORM), ((ours, "Conv_1"), f"{theirs}.conv2", CONV)]
      layer += 1
    if b < len(blocks) - 1:
      ours, theirs = f"Transition_{b}", f"features.transition{b + 1}"
      table += [((ours, "BatchNorm_0"), f"{theirs}.norm", NORM), ((ours, "Conv_0"), f"{theirs}.conv", CONV)]
  table.append((("bn_final",), "features.norm5", NORM))
  return table


def _get(tree: dict, path: tuple[str, ...]) -> dict:
  for key in path:
    tree = tree[key]
  return tree


def _modules(tree: dict, prefix=()) -> set[tuple[str, ...]]:
  """Paths of the innermost dicts (the layers) of a variables tree."""
  found = set()
  for key, value in tree.items():
    if isinstance(value, dict) and any(isinstance(v, dict) for v in value.values()):
      found |= _modules(value, prefix + (key,))
    elif isinstance(value, dict):
      found.add(prefix + (key,))
  return found


def _check_covers(table, variables: dict, name: str) -> None:
  """The table names every layer of `variables` and nothing else: a model whose structure
  changed fails here, by name, instead of exporting part of a network."""
  listed = {path for path, _, _ in table}
  held = _modules(variables["params"])
  if listed != held:
    raise errors.UserError(f"the {name} variables do not have the layers of torchvision's {name}: "
                           f"not in the checkpoint {sorted(listed - held)[:5]}, not mapped "
                           f"{sorted(held - listed)[:5]}")


def to_state_dict(variables: dict, name: str, *, step: int = 0) -> dict[str, np.ndarray]:
  """{"params", "batch_stats"} of backbone `name` -> torchvision-keyed NumPy state_dict."""
  table = key_table(name)
  _check_covers(table, variables, name)
  state_dict = {}
  for path, theirs, kind in table:
    params = _get(variables["params"], path)
    if kind == CONV:
      state_dict[f"{theirs}.weight"] = np.ascontiguousarray(np.transpose(np.asarray(params["kernel"]),
                                                                         (3, 2, 0, 1)))
      continue
    stats = _get(variables["batch_stats"], path)
    state_dict[f"{theirs}.weight"] = np.asarray(params["scale"])
    state_dict[f"{theirs}.bias"] = np.asarray(params["bias"])
    state_dict[f"{theirs}.running_mean"] = np.asarray(stats["mean"])
    state_dict[f"{theirs}.running_var"] = np.asarray(stats["var"])
    state_dict[f"{theirs}.num_batches_tracked"] = np.asarray(step, np.int64)
  return state_dict


def from_state_dict(state_dict: dict, name: str) -> dict:
  """torchvision-keyed state_dict (any width, stem, channels) -> {"params", "batch_stats"} of
  our backbone `name`. Missing keys are named; a classifier (fc, classifier) is ignored."""
  table = key_table(name)
  suffixes = {CONV: ("weight",), NORM: ("weight", "bias", "running_mean", "running_var")}
  expected = {f"{theirs}.{suffix}" for _, theirs, kind in table for suffix in suffixes[kind]}
  missing = sorted(expected - set(state_dict))
  if missing:
    raise errors.UserError(f"the weights are not a torchvision-keyed {name}: {len(missing)} keys missing, "
                           f"e.g. {missing[:3]}")
  params, stats = {}, {}
  for path, theirs, kind in table:
    p = params
    for key in path[:-1]:
      p = p.setdefault(key, {})
    if kind == CONV:
      p[path[-1]] = {"kernel": np.transpose(np.asarray(state_dict[f"{theirs}.weight"]), (2, 3, 1, 0))}
      continue
    p[path[-1]] = {"scale": np.asarray(state_dict[f"{theirs}.weight"]),
                   "bias": np.asarray(state_dict[f"{theirs}.bias"])}
    s = stats
    for key in path[:-1]:
      s = s.setdefault(key, {})
    s[path[-1]] = {"mean": np.asarray(state_dict[f"{theirs}.running_mean"]),
                   "var": np.asarray(state_dict[f"{theirs}.running_var"])}
  return {"params": params, "batch_stats": stats}


def stock_models(name: str, width: float, small_stem: bool, in_channels: int) -> dict:
  """What torchvision's and timm's own constructors can hold these weights, and why not.

  Returns {"torchvision": code or None, "timm": code or None, "not_expressible": [reasons]}.
  A one-channel stem is one line in torchvision (replace conv1 / features.conv0) and
  `in_chans=1` in timm; a width multiplier and the small-image stem are neither's.
  """
  reasons = []
  if width != 1:
    reasons.append(f"width {width:g} (torchvision's and timm's {name} have width 1: "
                   + ("64-channel stem, 64-512 channel stages)" if name in resnet.ARCHITECTURES
                      else "growth rate 32, 64-channel stem)"))
  if small_stem:
    reasons.append("the small-image stem (a 3x3 stride-1 convolution without max-pool; theirs is "
                   "7x7 stride 2 followed by a 3x3 stride-2 max-pool)")
  if reasons:
    return {"torchvision": None, "timm": None, "not_expressible": reasons}
  is_resnet = name in resnet.ARCHITECTURES
  head = "model.fc = torch.nn.Identity()" if is_resnet else "model.classifier = torch.nn.Identity()"
  stem = ""
  if in_channels != 3:
    stem = ("; model.conv1 = torch.nn.Conv2d({c}, 64, 7, 2, 3, bias=False)" if is_resnet else
            "; model.features.conv0 = torch.nn.Conv2d({c}, 64, 7, 2, 3, bias=False)").format(c=in_channels)
  return {"torchvision": f"model = torchvision.models.{name}(); {head}{stem}",
          "timm": f"model = timm.create_model({name!r}, num_classes=0, in_chans={in_channels})",
          "not_expressible": []}

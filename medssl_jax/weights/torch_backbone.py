"""A medssl-jax backbone in PyTorch: ResNet-18/34/50 and DenseNet-121 with torchvision's
module names, plus what torchvision's constructors cannot express (the small-image stem,
a width multiplier, any number of input channels). Needs only torch (and `safetensors` to
read model.safetensors). `medssl-export` copies this file, unchanged, next to the weights as
medssl_backbone.py; nothing in it imports medssl_jax.

  import medssl_backbone                                  # with the export folder on sys.path
  model = medssl_backbone.load("EXPORT_DIR")              # eval mode, weights loaded strictly
  features = model(medssl_backbone.preprocess(images_uint8, "EXPORT_DIR"))   # (N, num_features)

The state_dict keys are exactly torchvision's resnet*/densenet121 keys (also timm's) without
the classifier: the network ends at the pooled features (fc / classifier is nn.Identity()).
Small-image stem: conv1 (features.conv0) is a 3x3 stride-1 convolution and the max-pool is
nn.Identity(), so the keys stay those of torchvision. Width w: a ResNet's stages have
round(64 w) * (1, 2, 4, 8) channels; a DenseNet's growth rate is round(32 w), its stem twice that.
"""
from __future__ import annotations

import json
import pathlib

import torch
import torch.nn.functional as F
from torch import nn

CONFIG_FILE = "config.json"
# name -> (block kind, blocks per stage): torchvision.models.resnet's layouts
RESNETS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet34": ("basic", (3, 4, 6, 3)),
           "resnet50": ("bottleneck", (3, 4, 6, 3))}
DENSENETS = {"densenet121": (6, 12, 24, 16)}


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # stride on the 3x3 (v1.5)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
  """torchvision's ResNet trunk; forward returns the pooled features."""

  def __init__(self, name="resnet50", width=1.0, small_stem=False, in_channels=3):
    super().__init__()
    kind, layers = RESNETS[name]
    block = BasicBlock if kind == "basic" else Bottleneck
    base = max(1, int(round(64 * width)))
    if small_stem:
      self.conv1 = nn.Conv2d(in_channels, base, 3, 1, 1, bias=False)
    else:
      self.conv1 = nn.Conv2d(in_channels, base, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(base)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.Identity() if small_stem else nn.MaxPool2d(3, 2, 1)
    self.inplanes = base
    self.layer1 = self._make_layer(block, base, layers[0])
    self.layer2 = self._make_layer(block, base * 2, layers[1], stride=2)
    self.layer3 = self._make_layer(block, base * 4, layers[2], stride=2)
    self.layer4 = self._make_layer(block, base * 8, layers[3], stride=2)
    self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    self.fc = nn.Identity()
    self.num_features = base * 8 * block.expansion

  def _make_layer(self, block, planes, blocks, stride=1):
    downsample = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes * block.expansion))
    layers = [block(self.inplanes, planes, stride, downsample)]
    self.inplanes = planes * block.expansion
    layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return self.fc(torch.flatten(self.avgpool(x), 1))


class _DenseLayer(nn.Module):

  def __init__(self, num_input_features, growth_rate, bn_size):
    super().__init__()
    self.norm1 = nn.BatchNorm2d(num_input_features)
    self.relu1 = nn.ReLU(inplace=True)
    self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, 1, 1, bias=False)
    self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
    self.relu2 = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, 1, 1, bias=False)

  def forward(self, features):
    out = self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))
    return self.conv2(self.relu2(self.norm2(out)))


class _DenseBlock(nn.ModuleDict):

  def __init__(self, num_layers, num_input_features, bn_size, growth_rate):
    super().__init__()
    for i in range(num_layers):
      self.add_module(f"denselayer{i + 1}",
                      _DenseLayer(num_input_features + i * growth_rate, growth_rate, bn_size))

  def forward(self, x):
    features = [x]
    for layer in self.values():
      features.append(layer(features))
    return torch.cat(features, 1)


class _Transition(nn.Sequential):

  def __init__(self, num_input_features, num_output_features):
    super().__init__()
    self.norm = nn.BatchNorm2d(num_input_features)
    self.relu = nn.ReLU(inplace=True)
    self.conv = nn.Conv2d(num_input_features, num_output_features, 1, 1, bias=False)
    self.pool = nn.AvgPool2d(2, 2)


class DenseNet(nn.Module):
  """torchvision's DenseNet-BC; forward returns the pooled features."""

  def __init__(self, name="densenet121", width=1.0, small_stem=False, in_channels=3, bn_size=4):
    super().__init__()
    growth = max(1, int(round(32 * width)))
    num_features = 2 * growth
    if small_stem:
      stem = [("conv0", nn.Conv2d(in_channels, num_features, 3, 1, 1, bias=False)),
              ("norm0", nn.BatchNorm2d(num_features)), ("relu0", nn.ReLU(inplace=True)),
              ("pool0", nn.Identity())]
    else:
      stem = [("conv0", nn.Conv2d(in_channels, num_features, 7, 2, 3, bias=False)),
              ("norm0", nn.BatchNorm2d(num_features)), ("relu0", nn.ReLU(inplace=True)),
              ("pool0", nn.MaxPool2d(3, 2, 1))]
    self.features = nn.Sequential()
    for stem_name, module in stem:
      self.features.add_module(stem_name, module)
    blocks = DENSENETS[name]
    for i, num_layers in enumerate(blocks):
      self.features.add_module(f"denseblock{i + 1}", _DenseBlock(num_layers, num_features, bn_size, growth))
      num_features += num_layers * growth
      if i != len(blocks) - 1:
        self.features.add_module(f"transition{i + 1}", _Transition(num_features, num_features // 2))
        num_features //= 2
    self.features.add_module("norm5", nn.BatchNorm2d(num_features))
    self.classifier = nn.Identity()
    self.num_features = num_features

  def forward(self, x):
    out = F.relu(self.features(x))
    return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1))


def build(config: dict) -> nn.Module:
  """The network config.json describes, with random weights."""
  name = config["architecture"]
  kwargs = dict(width=config["width"], small_stem=config["small_stem"], in_channels=config["in_channels"])
  if name in RESNETS:
    return ResNet(name, **kwargs)
  if name in DENSENETS:
    return DenseNet(name, **kwargs)
  raise ValueError(f"unknown architecture {name!r}; known: {sorted(RESNETS) + sorted(DENSENETS)}")


def read_config(folder) -> dict:
  return json.loads((pathlib.Path(folder) / CONFIG_FILE).read_text())


def load(folder, weights: str | None = None) -> nn.Module:
  """The exported backbone in `folder`, weights loaded strictly, in eval mode (BatchNorm uses
  its running statistics, as medssl-jax's frozen features do). weights: a file name in the
  folder; default model.safetensors if present, else model.pth."""
  folder = pathlib.Path(folder)
  model = build(read_config(folder))
  if weights is None:
    weights = "model.safetensors" if (folder / "model.safetensors").is_file() else "model.pth"
  if weights.endswith(".safetensors"):
    from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
    state_dict = load_file(str(folder / weights))
  else:
    state_dict = torch.load(folder / weights, map_location="cpu", weights_only=True)
  model.load_state_dict(state_dict)
  return model.eval()


def preprocess(images, folder_or_config) -> torch.Tensor:
  """uint8 images (N, H, W, C) or (H, W, C), numpy or torch, with the network's channels ->
  float32 (N, C, size, size), exactly as config.json's "preprocessing" says."""
  config = folder_or_config if isinstance(folder_or_config, dict) else read_config(folder_or_config)
  spec = config["preprocessing"]
  x = images if isinstance(images, torch.Tensor) else torch.tensor(images)  # a copy: read-only arrays too
  if x.ndim == 3:
    x = x[None]
  if x.shape[-1] != spec["channels"]:
    raise ValueError(f"images have {x.shape[-1]} channels; the network takes {spec['channels']} "
                     f"({spec['channel_handling']})")
  x = x.permute(0, 3, 1, 2).to(torch.float32) / spec["scale"]
  resize = spec["resize"]
  x = F.interpolate(x, size=tuple(resize["size"]), mode=resize["mode"],
                    align_corners=resize["align_corners"], antialias=resize["antialias"])
  x = x.clamp(*spec["clip"])
  mean = torch.tensor(spec["mean"], dtype=torch.float32).view(1, -1, 1, 1)
  std = torch.tensor(spec["std"], dtype=torch.float32).view(1, -1, 1, 1)
  return (x - mean) / std

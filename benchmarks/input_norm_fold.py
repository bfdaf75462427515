"""How close a ResNet with the ImageNet normalisation folded into its stem comes to PyTorch.

  python benchmarks/input_norm_fold.py

weights/input_norm.py folds (x - mean) / std into the stem; that is exact except where the
stem reads its zero padding. For random torchvision weights (BatchNorm statistics moved off
their defaults) this prints, per network and image size, the largest pooled-feature error
relative to the largest feature, folded and not folded, against torchvision on normalised
pixels. Needs torch; about a minute on 2 CPU cores.
"""
import numpy as np
import torch

from medssl_jax.models import resnet
from medssl_jax.weights import input_norm
from medssl_jax.weights import torch_weights

import torchvision_resnet


def _random_model(name):
  torch.manual_seed(0)
  model, _ = torchvision_resnet.create(name)
  for module in model.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      module.running_mean.uniform_(-0.5, 0.5)
      module.running_var.uniform_(0.5, 2.0)
  return model.eval()


def _torch_features(model, images):
  with torch.no_grad():
    x = model.maxpool(model.relu(model.bn1(model.conv1(torch.from_numpy(images)))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return torch.flatten(model.avgpool(x), 1).numpy()


def main():
  mean, std = (np.asarray(v, np.float32)[None, :, None, None] for v in input_norm.NORMS["imagenet"])
  for name, size in [("resnet18", 64), ("resnet18", 224), ("resnet50", 224)]:
    model = _random_model(name)
    images = np.random.default_rng(0).random((2, 3, size, size), dtype=np.float32)
    expected = _torch_features(model, (images - mean) / std)
    state_dict = {k: v.numpy() for k, v in model.state_dict().items()}
    for norm in ("imagenet", "none"):
      variables = torch_weights.resnet_variables(input_norm.fold(state_dict, norm), name)
      pixels = images.transpose(0, 2, 3, 1)
      ours = np.asarray(resnet.create_resnet(name).apply(variables, pixels, train=False))
      error = np.abs(ours - expected).max() / np.abs(expected).max()
      print(f"{name} {size} px, input_norm={norm}: max feature error {100 * error:.1f}% "
            "of the largest feature")


if __name__ == "__main__":
  main()

"""torchvision/timm ResNet weights converted into our ResNet compute what PyTorch computes."""
import json
import sys

import jax
import ml_collections
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from medssl_jax import errors
from medssl_jax.loop import pretrain
from medssl_jax.models import resnet
from medssl_jax.weights import init_from
from medssl_jax.weights import input_norm
from medssl_jax.weights import torch_weights

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import torchvision_resnet  # noqa: E402  pylint: disable=g-import-not-at-top


def random_torch_resnet(name, seed=0):
  """torchvision's network (or its module-for-module replica) with random weights and BN
  statistics far from their defaults, so a mix-up of mean/var/scale/bias would show."""
  torch.manual_seed(seed)
  model, _ = torchvision_resnet.create(name)
  for module in model.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      module.running_mean.uniform_(-0.5, 0.5)
      module.running_var.uniform_(0.5, 2.0)
      module.weight.data.uniform_(0.5, 1.5)
      module.bias.data.uniform_(-0.2, 0.2)
  return model.eval()


def save_weights(model, path):
  if path.suffix == ".safetensors":
    save_file({k: v.numpy() for k, v in model.state_dict().items()}, str(path))
  else:
    torch.save(model.state_dict(), path)


def torch_outputs(model, images_nchw):
  """(pooled features, logits) of the PyTorch network."""
  with torch.no_grad():
    x = torch.from_numpy(images_nchw)
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    features = torch.flatten(model.avgpool(x), 1)
    return features.numpy(), model.fc(features).numpy()


@pytest.mark.parametrize("name,suffix", [("resnet50", ".pth"), ("resnet18", ".safetensors")])
def test_converted_resnet_matches_pytorch(name, suffix, tmp_path):
  model = random_torch_resnet(name)
  path = tmp_path / f"{name}{suffix}"
  save_weights(model, path)
  images = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
  expected_features, expected_logits = torch_outputs(model, images)

  state_dict = torch_weights.read_state_dict(path)
  variables = torch_weights.resnet_variables(state_dict, name)
  features = np.asarray(resnet.create_resnet(name).apply(variables, images.transpose(0, 2, 3, 1),
                                                         train=False))
  logits = features @ state_dict["fc.weight"].T + state_dict["fc.bias"]
  # float32 sums in another order: differences scale with the outputs' magnitude.
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())
  close(features, expected_features)
  close(logits, expected_logits)


def test_one_channel_stem_equals_grey_image_as_rgb(tmp_path):
  model = random_torch_resnet("resnet18", seed=1)
  grey = np.random.default_rng(1).random((2, 1, 48, 48), dtype=np.float32)
  expected, _ = torch_outputs(model, np.repeat(grey, 3, axis=1))
  state_dict = {k: v.numpy() for k, v in model.state_dict().items()}
  variables = torch_weights.resnet_variables(state_dict, "resnet18", in_channels=1)
  features = resnet.create_resnet("resnet18").apply(variables, grey.transpose(0, 2, 3, 1), train=False)
  np.testing.assert_allclose(np.asarray(features), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_imagenet_normalisation_folded_into_the_stem(tmp_path):
  """init.input_norm=imagenet: [0, 1] pixels give the features torchvision computes on
  normalised pixels, exactly once the stem pads as the fold does (raw 0, not normalised 0)."""
  model = random_torch_resnet("resnet18", seed=2)
  mean, std = (np.asarray(v, np.float32)[None, :, None, None] for v in input_norm.NORMS["imagenet"])
  images = np.random.default_rng(2).random((2, 3, 96, 96), dtype=np.float32)
  state_dict = {k: v.numpy() for k, v in model.state_dict().items()}
  variables = torch_weights.resnet_variables(input_norm.fold(state_dict, "imagenet"), "resnet18")
  pixels = images.transpose(0, 2, 3, 1)
  ours = np.asarray(resnet.create_resnet("resnet18").apply(variables, pixels, train=False))
  padded = (np.pad(images, ((0, 0), (0, 0), (3, 3), (3, 3))) - mean) / std
  model.conv1.padding = (0, 0)
  expected, _ = torch_outputs(model, padded.astype(np.float32))
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
  # With torchvision's own zero padding only the border differs: close, and far closer than unfolded.
  model.conv1.padding = (3, 3)
  standard, _ = torch_outputs(model, (images - mean) / std)
  unfolded = np.asarray(resnet.create_resnet("resnet18").apply(
      torch_weights.resnet_variables(state_dict, "resnet18"), images.transpose(0, 2, 3, 1), train=False))
  error = lambda f: np.abs(f - standard).max() / np.abs(standard).max()
  assert error(ours) < 0.1 < 0.3 < error(unfolded)


def test_input_norm_needs_rgb_weights_and_a_known_name():
  state_dict = {"conv1.weight": np.ones((4, 1, 3, 3), np.float32), "bn1.running_mean": np.zeros(4)}
  with pytest.raises(errors.UserError, match="takes 1 channel"):
    input_norm.fold(state_dict, "imagenet")
  with pytest.raises(errors.UserError, match="unknown init.input_norm 'imagnet'"):
    input_norm.fold(state_dict, "imagnet")
  assert input_norm.fold(state_dict, "none") is state_dict
  # A run of this project was trained on [0, 1] pixels: nothing to fold.
  config = ml_collections.ConfigDict(dict(init_from="runs/pretrained", init=dict(input_norm="imagenet")))
  with pytest.raises(errors.UserError, match="applies to torchvision/timm/DINO weights files"):
    init_from.load_source(config, {})


def test_wrong_architecture_names_both(tmp_path):
  state_dict = {k: v.numpy() for k, v in random_torch_resnet("resnet18").state_dict().items()}
  assert torch_weights.infer_architecture(state_dict) == "resnet18"
  with pytest.raises(ValueError, match="holds a resnet18, but the model is resnet50"):
    torch_weights.resnet_variables(state_dict, "resnet50")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_corrupt_file_is_reported_as_corrupt(suffix, tmp_path):
  path = tmp_path / f"resnet18{suffix}"
  save_weights(random_torch_resnet("resnet18"), path)
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  with pytest.raises(ValueError, match=f"{path.name} is not a readable .* file .corrupt or truncated"):
    torch_weights.read_state_dict(path)


def test_pretraining_starts_from_converted_weights(tiny_config, tmp_path):
  """--config.init_from=FILE.pth: the first state holds the converted ImageNet-style backbone
  (stem summed for one-channel X-rays), a fresh projector, and init.json says where from."""
  path = tmp_path / "resnet18.pth"
  save_weights(random_torch_resnet("resnet18", seed=2), path)
  tiny_config.model.width = 1.0
  tiny_config.model.small_stem = False
  tiny_config.augment.size = 32
  tiny_config.num_steps = 0
  tiny_config.init_from = str(path)
  state = pretrain.run(tiny_config, tmp_path / "run")

  expected = torch_weights.resnet_variables(torch_weights.read_state_dict(path), "resnet18", in_channels=1)
  jax.tree_util.tree_map(np.testing.assert_array_equal, expected["params"],
                         jax.device_get(state.params["backbone"]))
  jax.tree_util.tree_map(np.testing.assert_array_equal, expected["batch_stats"],
                         jax.device_get(state.batch_stats["backbone"]))
  record = json.loads((tmp_path / "run" / "init.json").read_text())
  assert record["kind"] == "torch" and record["init_from"] == str(path)
  assert not [p for p in record["copied"] if not p.startswith("backbone/")]
  assert json.loads((tmp_path / "run" / "config.json").read_text())["init_from"] == str(path)


def test_torch_weights_need_the_full_width_resnet(tiny_config, tmp_path):
  path = tmp_path / "resnet18.pth"
  save_weights(random_torch_resnet("resnet18"), path)
  tiny_config.init_from = str(path)  # tiny_config has width 1/16 and the small stem
  with pytest.raises(ValueError, match="model.width=1 and model.small_stem=False"):
    pretrain.run(tiny_config, tmp_path / "run")
  assert not (tmp_path / "run").exists()

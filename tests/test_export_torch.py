"""Backbones out of JAX (medssl-export --format=torch/safetensors/hf): torchvision's keys, the
same features in PyTorch on real images preprocessed from config.json alone, JAX -> torch ->
JAX bit for bit, and a model card whose numbers are those of the run's results.json."""
import collections
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file

from medssl_jax.data import catalog
from medssl_jax.data import decode
from medssl_jax.evaluation import runner
from medssl_jax.loop import checkpointing
from medssl_jax.loop import configuration
from medssl_jax.loop import pretrain
from medssl_jax.loop import sharding
from medssl_jax.models import encoder
from medssl_jax.weights import api
from medssl_jax.weights import export
from medssl_jax.weights import init_from
from medssl_jax.weights import torch_export
from medssl_jax.weights import torch_weights

import conftest
import synthetic_data
from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import torchvision_resnet  # noqa: E402  pylint: disable=g-import-not-at-top


def assert_trees_equal(a, b):
  """Bitwise: same structure, same dtypes, same values."""
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_features_close(torch_features, jax_features):
  """Within 1e-4 relative: per element (with a floor at 1e-5 of the largest feature, for
  features near zero) and as a whole."""
  scale = np.abs(jax_features).max()
  np.testing.assert_allclose(torch_features, jax_features, rtol=1e-4, atol=1e-5 * scale)
  assert np.linalg.norm(torch_features - jax_features) <= 1e-4 * np.linalg.norm(jax_features)


# --- torchvision's DenseNet, module for module (torchvision does not import next to the CPU
# torch wheel; see benchmarks/torchvision_resnet.py for the ResNet replica) ---

class _TvDenseLayer(torch.nn.Module):

  def __init__(self, num_input_features, growth_rate, bn_size):
    super().__init__()
    self.norm1 = torch.nn.BatchNorm2d(num_input_features)
    self.relu1 = torch.nn.ReLU(inplace=True)
    self.conv1 = torch.nn.Conv2d(num_input_features, bn_size * growth_rate, 1, 1, bias=False)
    self.norm2 = torch.nn.BatchNorm2d(bn_size * growth_rate)
    self.relu2 = torch.nn.ReLU(inplace=True)
    self.conv2 = torch.nn.Conv2d(bn_size * growth_rate, growth_rate, 3, 1, 1, bias=False)

  def forward(self, features):
    return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(torch.cat(features, 1)))))))


class _TvDenseBlock(torch.nn.ModuleDict):

  def __init__(self, num_layers, num_input_features, bn_size, growth_rate):
    super().__init__()
    for i in range(num_layers):
      self.add_module(f"denselayer{i + 1}", _TvDenseLayer(num_input_features + i * growth_rate, growth_rate,
                                                          bn_size))

  def forward(self, x):
    features = [x]
    for layer in self.values():
      features.append(layer(features))
    return torch.cat(features, 1)


class _TvTransition(torch.nn.Sequential):

  def __init__(self, num_input_features, num_output_features):
    super().__init__()
    self.norm = torch.nn.BatchNorm2d(num_input_features)
    self.relu = torch.nn.ReLU(inplace=True)
    self.conv = torch.nn.Conv2d(num_input_features, num_output_features, 1, 1, bias=False)
    self.pool = torch.nn.AvgPool2d(2, 2)


class TvDenseNet121(torch.nn.Module):
  """torchvision.models.densenet121(): same module names, shapes and forward."""

  def __init__(self, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, bn_size=4,
               num_classes=1000):
    super().__init__()
    self.features = torch.nn.Sequential(collections.OrderedDict([
        ("conv0", torch.nn.Conv2d(3, num_init_features, 7, 2, 3, bias=False)),
        ("norm0", torch.nn.BatchNorm2d(num_init_features)), ("relu0", torch.nn.ReLU(inplace=True)),
        ("pool0", torch.nn.MaxPool2d(3, 2, 1))]))
    num_features = num_init_features
    for i, num_layers in enumerate(block_config):
      self.features.add_module(f"denseblock{i + 1}",
                               _TvDenseBlock(num_layers, num_features, bn_size, growth_rate))
      num_features += num_layers * growth_rate
      if i != len(block_config) - 1:
        self.features.add_module(f"transition{i + 1}", _TvTransition(num_features, num_features // 2))
        num_features //= 2
    self.features.add_module("norm5", torch.nn.BatchNorm2d(num_features))
    self.classifier = torch.nn.Linear(num_features, num_classes)

  def forward(self, x):
    out = F.relu(self.features(x), inplace=True)
    return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1))


def torchvision_densenet121():
  try:
    import torchvision  # pylint: disable=g-import-not-at-top
    return torchvision.models.densenet121()
  except Exception:  # pylint: disable=broad-except  # ImportError, or its C ops failing to load
    return TvDenseNet121()


# --- runs ---

def synthetic_config():
  synthetic_data.register()
  config = conftest.make_tiny_config("")
  config.data.name = synthetic_data.NAME
  return config


def random_variables(module, size, channels, seed):
  """Variables of `module` drawn in NumPy, without compiling its initialiser: He-normal
  kernels, and BatchNorm statistics and affine parameters far from their initial values (the
  zero-initialised residual scales included), so that a mix-up of any two would show."""
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, size, size, channels)),
                                              train=False))
  rng = np.random.default_rng(seed)
  ranges = {"mean": (-0.2, 0.2), "var": (0.5, 1.5), "scale": (0.5, 1.5), "bias": (-0.2, 0.2)}

  def draw(path, leaf):
    if path[-1].key == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape).astype(leaf.dtype)
    return rng.uniform(*ranges[path[-1].key], leaf.shape).astype(leaf.dtype)
  return jax.tree_util.tree_map_with_path(draw, shapes)


def make_run(workdir, name, *, size=64, channels=3, step=7, seed=0):
  """A pretraining workdir whose checkpoint holds a full-size `name` backbone with random
  weights and statistics: what export reads, without training a large network on CPU."""
  config = synthetic_config()
  config.data.channels = channels
  config.model.name, config.model.width, config.model.small_stem = name, 1.0, False
  config.augment.size = size
  variables = random_variables(encoder.create_backbone(config.model), size, channels, seed)
  checkpointing.write_config(workdir, config)
  manager = checkpointing.create_manager(workdir)
  checkpointing.save(manager, step, {"step": np.int32(step), "params": {"backbone": variables["params"]},
                                     "batch_stats": {"backbone": variables["batch_stats"]}})
  manager.wait_until_finished()
  return config, variables


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
  """ResNet-18, small-image stem, width 0.25, one channel, 28 px: trained 2 steps
  (checkpoints 1 and 2), and step 2 evaluated (linear probe, kNN, label fractions) into
  RUN/eval as medssl-eval does."""
  config = synthetic_config()
  config.model.width = 0.25
  config.num_steps, config.checkpoint_every = 2, 1
  workdir = tmp_path_factory.mktemp("small") / "run"
  pretrain.run(config, workdir, mesh=sharding.create_mesh(jax.devices()[:1]))
  eval_config = configuration.load_config_file(str(REPO_ROOT / "configs" / "eval" / "linear_probe.py"))
  eval_config.pretrain_workdir = str(workdir)
  eval_config.evaluations = ("linear_probe", "knn", "label_fractions")
  eval_config.probe.Cs = (0.1, 1.0)
  eval_config.n_boot = 50
  eval_config.baselines = ("random_init",)
  eval_config.label_fractions.fractions = (0.5, 1.0)
  eval_config.label_fractions.seeds = (0, 1)
  runner.evaluate(eval_config, workdir / "eval")
  return workdir


@pytest.fixture(scope="module")
def resnet50_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("r50") / "run"
  return workdir, make_run(workdir, "resnet50")[1]


@pytest.fixture(scope="module")
def densenet_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("d121") / "run"
  return workdir, make_run(workdir, "densenet121", seed=1)[1]


# --- real images ---

@pytest.fixture(scope="module")
def grey_images(shared_data):
  """Real grey images at two sizes: PneumoniaMNIST (28 px, the run's size) and NIH chest
  X-rays (64 px, downsampled to 28)."""
  pneumonia = catalog.open_source("pneumoniamnist", "test", data_dir=str(shared_data / "medmnist")).images[:6]
  files = sorted((shared_data / "nih_cxr1000" / "test").glob("*/*.png"))[:4]
  return [pneumonia, np.stack([decode.decode_image(f, channels=1) for f in files])]


@pytest.fixture(scope="module")
def blood_images(shared_data):
  """Real colour images smaller than the network's 64 px: BloodMNIST (28 px, upsampled)."""
  return catalog.open_source("bloodmnist", "test", data_dir=str(shared_data / "medmnist")).images[:4]


@pytest.fixture(scope="module")
def large_images(shared_data):
  """Real colour images larger than 64 px: an IHC slide and a fundus photograph at 512 px."""
  return np.stack([decode.decode_image(shared_data / "images" / name, 512, channels=3)
                   for name in ("ihc.png", "retina.jpg")])


def preprocess_from_description(images, spec):
  """uint8 (N, H, W, C) -> network input, using nothing but config.json's "preprocessing"."""
  assert images.dtype == np.uint8 and images.shape[-1] == spec["channels"]
  x = torch.tensor(images).permute(0, 3, 1, 2).to(torch.float32) / spec["scale"]
  resize = spec["resize"]
  x = F.interpolate(x, size=tuple(resize["size"]), mode=resize["mode"], align_corners=resize["align_corners"],
                    antialias=resize["antialias"])
  x = x.clamp(*spec["clip"])
  return (x - torch.tensor(spec["mean"]).view(1, -1, 1, 1)) / torch.tensor(spec["std"]).view(1, -1, 1, 1)


def torch_features(model, images, spec):
  with torch.no_grad():
    return model.eval()(preprocess_from_description(images, spec)).numpy()


def import_module_file(folder):
  """The exported medssl_backbone.py, imported from the export folder alone."""
  spec = importlib.util.spec_from_file_location(f"medssl_backbone_{abs(hash(str(folder)))}",
                                                folder / export.MODULE_FILE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def torchvision_keys(model, classifier):
  return sorted(k for k in model.state_dict() if not k.startswith(classifier + "."))


# --- tests ---

def test_small_stem_resnet18_in_pytorch_computes_the_same_features(small_run, grey_images, tmp_path):
  out = tmp_path / "export"
  info = export.export(small_run, out, formats=["torch", "safetensors"])
  export.check_round_trip(small_run, out, info["step"])
  config = json.loads((out / export.CONFIG_FILE).read_text())
  network = (config["architecture"], config["width"], config["small_stem"], config["in_channels"])
  assert network == ("resnet18", 0.25, True, 1)
  assert config["stock_models"]["torchvision"] is None
  assert any("small-image stem" in r for r in config["stock_models"]["not_expressible"])

  # torchvision's resnet18 keys exactly, less fc; other shapes (width, stem, one channel).
  reference, _ = torchvision_resnet.create("resnet18")
  for name in ("model.pth", "model.safetensors"):
    assert sorted(torch_weights.read_state_dict(out / name)) == torchvision_keys(reference, "fc")
  state_dict = load_file(out / "model.safetensors")
  assert state_dict["conv1.weight"].shape == (16, 1, 3, 3)
  assert state_dict["layer4.1.bn2.weight"].shape == (128,)
  assert state_dict["bn1.num_batches_tracked"] == info["step"]

  module_file = import_module_file(out)
  model = module_file.load(out)
  backbone = api.load_backbone(small_run)
  for images in grey_images:
    expected = np.asarray(backbone.features(images))
    got = torch_features(model, images, config["preprocessing"])
    assert got.shape == expected.shape == (len(images), config["num_features"])
    assert_features_close(got, expected)
    # The module file's own preprocess is the description's.
    np.testing.assert_array_equal(module_file.preprocess(images, out).numpy(),
                                  preprocess_from_description(images, config["preprocessing"]).numpy())
  # The .pth holds the same tensors.
  model_pth = module_file.load(out, weights="model.pth")
  np.testing.assert_array_equal(torch_features(model_pth, grey_images[0], config["preprocessing"]),
                                torch_features(model, grey_images[0], config["preprocessing"]))


def test_small_stem_round_trip_is_bitwise(small_run, tmp_path):
  """JAX -> torch -> JAX: through this module's inverse and through torch_weights.py's
  reader (the one --config.init_from uses), from both files."""
  export.export(small_run, tmp_path / "export", formats=["torch", "safetensors"])
  _, expected, _ = checkpointing.restore_backbone(small_run)
  for name in ("model.pth", "model.safetensors"):
    state_dict = torch_weights.read_state_dict(tmp_path / "export" / name)
    assert_trees_equal(expected, torch_export.from_state_dict(state_dict, "resnet18"))
    assert_trees_equal(expected, torch_weights.resnet_variables(state_dict, "resnet18", in_channels=1))
    assert_trees_equal(expected, _through_init_from(small_run, tmp_path / "export" / name, expected))


def _through_init_from(workdir, weights_file, like):
  """The backbone --config.init_from=weights_file gives a run configured as `workdir`."""
  config = checkpointing.load_config(workdir)
  config.init_from = str(weights_file)
  variables, kind, _ = init_from.load_source(config, {"backbone": like["params"]})
  assert kind == "torch"
  return {"params": variables["params"]["backbone"], "batch_stats": variables["batch_stats"]["backbone"]}


def test_resnet50_loads_into_torchvision_and_round_trips_through_init_from(
    resnet50_run, blood_images, tmp_path):
  workdir, variables = resnet50_run
  out = tmp_path / "export"
  export.export(workdir, out, formats=["torch"])
  export.check_round_trip(workdir, out, 7)
  config = json.loads((out / export.CONFIG_FILE).read_text())
  assert config["stock_models"]["torchvision"] == ("model = torchvision.models.resnet50(); "
                                                   "model.fc = torch.nn.Identity()")

  model, _ = torchvision_resnet.create("resnet50")  # torchvision's own, or its replica
  model.fc = torch.nn.Identity()
  model.load_state_dict(torch.load(out / "model.pth", weights_only=True))  # strict: every key
  expected = np.asarray(api.load_backbone(workdir).features(blood_images))
  assert expected.shape == (len(blood_images), 2048)
  assert_features_close(torch_features(model, blood_images, config["preprocessing"]), expected)

  # --config.init_from=model.pth starts a run from exactly these variables.
  run_config = synthetic_config()
  run_config.data.channels = 3
  run_config.model.name, run_config.model.width, run_config.model.small_stem = "resnet50", 1.0, False
  run_config.augment.size, run_config.num_steps = 64, 0
  run_config.init_from = str(out / "model.pth")
  one_device = sharding.create_mesh(jax.devices()[:1])  # initialising ResNet-50 8 times over is slow
  state = pretrain.run(run_config, tmp_path / "from_pth", mesh=one_device)
  assert_trees_equal(variables["params"], jax.device_get(state.params["backbone"]))
  assert_trees_equal(variables["batch_stats"], jax.device_get(state.batch_stats["backbone"]))


def test_densenet121_loads_into_torchvision_and_round_trips(densenet_run, large_images, tmp_path):
  workdir, variables = densenet_run
  out = tmp_path / "export"
  export.export(workdir, out, formats=["safetensors"])
  export.check_round_trip(workdir, out, 7)
  config = json.loads((out / export.CONFIG_FILE).read_text())
  state_dict = load_file(out / "model.safetensors")
  model = torchvision_densenet121()
  assert sorted(state_dict) == torchvision_keys(model, "classifier")
  model.classifier = torch.nn.Identity()
  model.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})
  expected = np.asarray(api.load_backbone(workdir).features(large_images))
  assert expected.shape == (len(large_images), 1024)
  assert_features_close(torch_features(model, large_images, config["preprocessing"]), expected)
  module_file_model = import_module_file(out).load(out)
  assert_features_close(torch_features(module_file_model, large_images, config["preprocessing"]), expected)
  assert_trees_equal(variables, torch_export.from_state_dict(state_dict, "densenet121"))
  assert_trees_equal(variables, _through_init_from(workdir, out / "model.safetensors", variables))


def test_key_table_matches_torchvision_for_every_architecture():
  """The table's keys (plus BatchNorm's buffers) are torchvision's state_dict keys, in order."""
  models = {name: torchvision_resnet.create(name)[0] for name in ("resnet18", "resnet34", "resnet50")}
  models["densenet121"] = torchvision_densenet121()
  for name, model in models.items():
    classifier = "classifier" if name.startswith("densenet") else "fc"
    keys = [k for k in model.state_dict() if not k.startswith(classifier + ".")]
    table_keys = []
    for _, theirs, kind in torch_export.key_table(name):
      suffixes = ["weight"]
      if kind == torch_export.NORM:
        suffixes += ["bias", "running_mean", "running_var", "num_batches_tracked"]
      table_keys += [f"{theirs}.{s}" for s in suffixes]
    assert table_keys == keys, name


def _cells(card, heading, representation):
  """The cells of `representation`'s row in the first table after `heading`."""
  section = card[card.index(heading):]
  row = re.search(rf"^\| {representation} \|(.*)\|$", section, re.M).group(1)
  return [c.strip() for c in row.split("|")]


def _parse(cell):
  """"0.9961 (0.979-1.000)" -> (0.9961, 0.979, 1.0)."""
  value, low, high = re.fullmatch(r"(-?[\d.]+) \((-?[\d.]+)-(-?[\d.]+)\)", cell).groups()
  return float(value), float(low), float(high)


def _close_to_printed(printed, value, decimals):
  assert abs(printed - value) <= 0.5 * 10 ** -decimals + 1e-12, (printed, value)


def test_hf_folder_and_its_model_card_numbers_equal_results_json(small_run, tmp_path):
  out = tmp_path / "hf"
  export.export(small_run, out, formats=["hf"])
  export.check_round_trip(small_run, out, 2)
  assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "medssl_backbone.py",
                                                   "model.safetensors"]
  config = json.loads((out / "config.json").read_text())
  assert config["preprocessing"]["resize"]["size"] == [28, 28] and config["preprocessing"]["channels"] == 1
  assert config["pretraining"]["method"] == "simclr" and config["pretraining"]["data"] == "synthetic"
  assert config["pretraining"]["step"] == 2 and config["pretraining"]["batch_size"] == 16
  card = (out / "README.md").read_text()
  results = json.loads((small_run / "eval" / "results.json").read_text())

  for evaluation, heading in (("linear_probe", "**Linear probe**"), ("knn", "**kNN**")):
    for representation in ("pretrained", "random_init"):
      r = results[evaluation][representation]
      auroc, accuracy, n = _cells(card, heading, representation)
      for cell, value, ci in ((auroc, r["auroc"], r["auroc_ci"]),
                              (accuracy, r["accuracy"], r["accuracy_ci"])):
        printed = _parse(cell)
        _close_to_printed(printed[0], value, 4)
        _close_to_printed(printed[1], ci[0], 3)
        _close_to_printed(printed[2], ci[1], 3)
      assert int(n) == r["n"]
  fractions = results["label_fractions"]
  for representation in ("pretrained", "random_init"):
    cells = _cells(card, "Label fractions, linear_probe", representation)
    assert len(cells) == len(fractions["fractions"])
    for cell, fraction in zip(cells, fractions["fractions"]):
      summary = fractions["linear_probe"][representation][str(fraction)]
      printed = _parse(cell)
      _close_to_printed(printed[0], summary["mean"], 4)
      _close_to_printed(printed[1], summary["ci"][0], 3)
      _close_to_printed(printed[2], summary["ci"][1], 3)
  command = re.search(r"^    (medssl-eval .*)$", card, re.M).group(1)
  assert f"--config.pretrain_workdir={small_run}" in command and "--config.step=2" in command
  assert "--config.evaluations=\"('linear_probe','knn','label_fractions')\"" in command
  assert f"--workdir={small_run / 'eval'}" in command
  for recipe in ("simclr", "split policy: the splits as the data set ships them", "global batch 16",
                 "checkpoint step 2 of 2 steps", "policy cxr, views of 28 x 28 px"):
    assert recipe in card
  assert "Not evaluated" not in card


def test_card_says_not_evaluated_without_results(resnet50_run, tmp_path):
  workdir, _ = resnet50_run
  export.export(workdir, tmp_path / "hf", formats=["hf"])
  card = (tmp_path / "hf" / "README.md").read_text()
  assert "Not evaluated: no evaluation of step 7 was found" in card
  assert "torchvision.models.resnet50()" in card  # a stock model can hold these weights


def test_eval_dir_of_another_step_is_refused_before_writing(small_run, tmp_path):
  with pytest.raises(ValueError, match=r"holds evaluations of step\(s\) \[2\], not of step 1"):
    export.export(small_run, tmp_path / "hf", step=1, formats=["hf"], eval_dirs=[str(small_run / "eval")])
  assert not (tmp_path / "hf").exists()


def test_timm_naming(resnet50_run, small_run, tmp_path):
  workdir, _ = resnet50_run
  export.export(workdir, tmp_path / "timm", formats=["hf"], naming="timm")
  config = json.loads((tmp_path / "timm" / "config.json").read_text())
  assert config["architecture"] == "resnet50" and config["num_classes"] == 0
  assert config["pretrained_cfg"]["input_size"] == [3, 64, 64] and config["model_args"] == {"in_chans": 3}
  assert config["pretrained_cfg"]["mean"] == [0.0] * 3 and config["pretrained_cfg"]["std"] == [1.0] * 3
  card = (tmp_path / "timm" / "README.md").read_text()
  assert "library_name: timm" in card and 'timm.create_model("hf-hub:USER/REPO", pretrained=True)' in card
  # timm's resnet18 has neither the small-image stem nor a width multiplier: refused, by name.
  refusal = r"timm's resnet18 cannot build this network: width 0.25.*small-image stem"
  with pytest.raises(ValueError, match=refusal):
    export.export(small_run, tmp_path / "refused", formats=["torch"], naming="timm")
  assert not (tmp_path / "refused").exists()


def test_export_command_with_several_formats(small_run, tmp_path):
  command = [sys.executable, "-m", "medssl_jax.cli.export", f"--workdir={small_run}",
             f"--out={tmp_path / 'all'}", "--format=orbax,hf,torch"]
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), XLA_FLAGS=conftest.xla_flags(1))
  done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "as orbax, hf, torch: README.md, backbone.json, config.json, medssl_backbone.py, model.pth, " \
         "model.safetensors, variables" in done.stdout
  assert api.load_backbone(tmp_path / "all").info["step"] == 2  # the Orbax export is still one


@pytest.mark.parametrize("kwargs,message", [
    ({"formats": ["onnx"]}, r"unknown --format \['onnx'\]"),
    ({"formats": ["torch"], "include_projector": True}, "--include_projector needs --format=orbax alone"),
    ({"formats": ["torch"], "eval_dirs": ["x"]}, "--eval_dir is read for the model card of --format=hf only"),
    ({"formats": ["hf"], "naming": "keras"}, "unknown --naming 'keras'"),
])
def test_bad_requests_are_refused_before_writing(small_run, tmp_path, kwargs, message):
  with pytest.raises(ValueError, match=message):
    export.export(small_run, tmp_path / "out", **kwargs)
  assert not (tmp_path / "out").exists()


def test_hf_export_into_a_bucket(small_run, gcs_bucket, tmp_path):
  from etils import epath  # pylint: disable=g-import-not-at-top
  out = f"{gcs_bucket}/exports/hf"
  export.export(small_run, out, formats=["hf", "torch"])
  export.check_round_trip(small_run, out, 2)
  names = sorted(p.name for p in epath.Path(out).iterdir())
  assert names == ["README.md", "config.json", "medssl_backbone.py", "model.pth", "model.safetensors"]
  local = tmp_path / "copy"
  local.mkdir()
  for name in names:
    (local / name).write_bytes(epath.Path(out, name).read_bytes())
  _, expected, _ = checkpointing.restore_backbone(small_run)
  state_dict = load_file(local / "model.safetensors")
  assert_trees_equal(expected, torch_export.from_state_dict(state_dict, "resnet18"))
  assert not any(p.name.startswith("gs:") for p in tmp_path.rglob("*"))


def test_readme_pytorch_snippet_runs_and_gives_the_features(small_run, shared_data, tmp_path):
  """README's "Use your backbone in PyTorch" code, pasted as it is into a fresh Python that
  imports no medssl_jax, on this run's hf export."""
  readme = (REPO_ROOT / "README.md").read_text()
  section = readme[readme.index("## Use your backbone in PyTorch"):]
  blocks = re.findall(r"((?:^    .*\n)+)", section, re.M)
  command, code = (textwrap.dedent(b) for b in blocks[:2])
  assert command.startswith("medssl-export --workdir=runs/r1 --out=exports/r1_torch --format=hf")
  assert len(code.strip().splitlines()) + len(blocks[2].strip().splitlines()) + 1 <= 15
  export.export(small_run, tmp_path / "exports" / "r1_torch", formats=["hf"])
  (tmp_path / "pneumoniamnist.npz").symlink_to(shared_data / "medmnist" / "pneumoniamnist.npz")
  script = code + ("np.save('features.npy', features.numpy())\n"
                   "assert not [m for m in sys.modules if m.startswith('medssl_jax')]\n")
  done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                        check=False, env=dict(os.environ, PYTHONPATH=""))
  assert done.returncode == 0, done.stderr[-3000:]
  images = np.load(shared_data / "medmnist" / "pneumoniamnist.npz")["test_images"][:8, ..., None]
  assert_features_close(np.load(tmp_path / "features.npy"),
                        np.asarray(api.load_backbone(small_run).features(images)))

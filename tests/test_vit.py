"""Vision Transformers: parameter counts against timm's layout built in PyTorch, the forward
pass against a PyTorch ViT with timm's parameter names (weights imported through init_from),
position embeddings resized as PIL resizes, stochastic depth, bf16 compute, and every
method pretraining a ViT through the loop (test_dino.py evaluates a ViT run with medssl-eval)."""
import json

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import save_file

from medssl_jax import errors
from medssl_jax.loop import pretrain
from medssl_jax.loop import sharding
from medssl_jax.models import encoder
from medssl_jax.models import vit
from medssl_jax.weights import export
from medssl_jax.weights import init_from
from medssl_jax.weights import input_norm

# timm's vit_{tiny,small,base}_patch16_224: (embed dim, depth, heads), 224 px, ImageNet head.
TIMM_SIZES = {"vit_ti16": (192, 12, 3), "vit_s16": (384, 12, 6), "vit_b16": (768, 12, 12)}
# The parameter counts (millions, one decimal) on timm's model cards of those three models.
TIMM_CARD_MILLIONS = {"vit_ti16": 5.7, "vit_s16": 22.1, "vit_b16": 86.6}


class TorchBlock(torch.nn.Module):
  """timm's pre-norm block, with timm's attribute names."""

  def __init__(self, dim, heads):
    super().__init__()
    self.heads = heads
    self.norm1 = torch.nn.LayerNorm(dim, eps=1e-6)
    self.attn = torch.nn.Module()
    self.attn.qkv = torch.nn.Linear(dim, 3 * dim)
    self.attn.proj = torch.nn.Linear(dim, dim)
    self.norm2 = torch.nn.LayerNorm(dim, eps=1e-6)
    self.mlp = torch.nn.Module()
    self.mlp.fc1 = torch.nn.Linear(dim, 4 * dim)
    self.mlp.fc2 = torch.nn.Linear(4 * dim, dim)

  def forward(self, x):
    b, n, d = x.shape
    qkv = self.attn.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    weights = torch.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5, dim=-1)
    x = x + self.attn.proj((weights @ v).transpose(1, 2).reshape(b, n, d))
    return x + self.mlp.fc2(torch.nn.functional.gelu(self.mlp.fc1(self.norm2(x))))


class TorchViT(torch.nn.Module):
  """timm's VisionTransformer (class token, learned position embeddings, final norm), its
  state_dict keyed as timm's and DINO's checkpoints are; forward returns every token."""

  def __init__(self, dim, depth, heads, patch, size, channels=3, num_classes=0):
    super().__init__()
    self.patch_embed = torch.nn.Module()
    self.patch_embed.proj = torch.nn.Conv2d(channels, dim, patch, stride=patch)
    self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, dim))
    self.pos_embed = torch.nn.Parameter(torch.zeros(1, 1 + (size // patch) ** 2, dim))
    self.blocks = torch.nn.ModuleList([TorchBlock(dim, heads) for _ in range(depth)])
    self.norm = torch.nn.LayerNorm(dim, eps=1e-6)
    if num_classes:
      self.head = torch.nn.Linear(dim, num_classes)

  def forward(self, images):
    x = self.patch_embed.proj(images).flatten(2).transpose(1, 2)
    x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
    for block in self.blocks:
      x = block(x)
    return self.norm(x)


def _param_count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _backbone_shapes(model, size, channels=3):
  images = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)["params"]


@pytest.mark.parametrize("name", sorted(TIMM_SIZES))
def test_parameter_count_equals_timm(name):
  dim, depth, heads = TIMM_SIZES[name]
  with torch.device("meta"):  # shapes only: nothing allocated
    reference = TorchViT(dim, depth, heads, patch=16, size=224, num_classes=1000)
  expected = sum(p.numel() for p in reference.parameters())
  ours = _param_count(_backbone_shapes(vit.create_vit(name, patch_size=16), 224))
  head = dim * 1000 + 1000  # timm's ImageNet classifier; a backbone has none
  assert ours + head == expected
  assert round((ours + head) / 1e6, 1) == TIMM_CARD_MILLIONS[name]


def _tiny_torch_vit(channels=3, seed=0):
  """vit_nano at width 1/16 (8 dims, 4 blocks, 4 heads), patch 4 at 28 px, random weights
  (LayerNorms too, so a wrong mapping of any tensor shows)."""
  torch.manual_seed(seed)
  model = TorchViT(8, 4, 4, patch=4, size=28, channels=channels, num_classes=5).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.ndim == 1 and p.shape[0] == 8 else 0.0))
  return model


def _vit_config(pool="cls"):
  config = ml_collections.ConfigDict(dict(
      init_from="", model=dict(name="vit_nano", width=1 / 16, patch_size=4, pool=pool, drop_path=0.0,
                               dtype="float32", small_stem=True),
      init=dict(modules=("backbone",), step=-1, input_norm="none")))
  return config


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_timm_weights_through_init_from_give_timm_features(pool, tmp_path):
  reference = _tiny_torch_vit()
  path = tmp_path / "timm_vit.pth"
  torch.save(reference.state_dict(), path)
  config = _vit_config(pool)
  config.init_from = str(path)
  backbone = encoder.create_backbone(config.model)
  fresh = {"backbone": _backbone_shapes(backbone, 28)}
  params, _, record = init_from.initialize_from(fresh, {}, config)
  assert record["kind"] == "timm_vit" and not record["kept_fresh"]
  images = np.random.default_rng(0).uniform(size=(3, 28, 28, 3)).astype(np.float32)
  ours = backbone.apply({"params": params["backbone"]}, images, train=False)
  with torch.no_grad():
    tokens = reference(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
  expected = tokens[:, 0] if pool == "cls" else tokens[:, 1:].mean(axis=1)
  np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-4, rtol=0)


def test_timm_rgb_weights_on_grey_images_sum_the_patch_kernel(tmp_path):
  """One-channel runs: the RGB patch kernel summed over colours, exact for grey repeated as RGB."""
  reference = _tiny_torch_vit()
  path = tmp_path / "dino_vit.pth"
  # As DINO's checkpoint["teacher"] holds it: "backbone."-prefixed, with DINO's head beside it.
  teacher = {f"backbone.{k}": v for k, v in reference.state_dict().items() if not k.startswith("head")}
  teacher["head.last_layer.weight_v"] = torch.ones(16, 8)
  torch.save(teacher, path)
  config = _vit_config()
  config.init_from = str(path)
  backbone = encoder.create_backbone(config.model)
  params, _, _ = init_from.initialize_from({"backbone": _backbone_shapes(backbone, 28, channels=1)}, {},
                                           config)
  grey = np.random.default_rng(1).uniform(size=(2, 28, 28, 1)).astype(np.float32)
  ours = backbone.apply({"params": params["backbone"]}, grey, train=False)
  with torch.no_grad():
    expected = reference(torch.from_numpy(np.repeat(grey, 3, axis=-1)).permute(0, 3, 1, 2))[:, 0].numpy()
  np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("norm,channels", [("imagenet", 3), ("half", 3), ("imagenet", 1)])
def test_input_norm_folded_into_the_patch_embedding_gives_timm_features_of_normalised_pixels(
    norm, channels, tmp_path):
  reference = _tiny_torch_vit(seed=3)
  path = tmp_path / "timm_vit.safetensors"
  prefix = "backbone." if channels == 1 else ""  # the grey case reads a DINO teacher's layout
  save_file({prefix + k: v.numpy() for k, v in reference.state_dict().items()}, str(path))
  config = _vit_config()
  config.init_from, config.init.input_norm = str(path), norm
  backbone = encoder.create_backbone(config.model)
  params, _, record = init_from.initialize_from(
      {"backbone": _backbone_shapes(backbone, 28, channels=channels)}, {}, config)
  assert record["input_norm_folded"] == norm
  pixels = np.random.default_rng(3).uniform(size=(2, 28, 28, channels)).astype(np.float32)
  ours = backbone.apply({"params": params["backbone"]}, pixels, train=False)
  mean, std = (np.asarray(v, np.float32) for v in input_norm.NORMS[norm])
  normalised = (np.repeat(pixels, 3 // channels, axis=-1) - mean) / std  # grey is seen as RGB
  with torch.no_grad():
    expected = reference(torch.from_numpy(normalised).permute(0, 3, 1, 2))[:, 0].numpy()
  np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-4, rtol=0)


def test_timm_weights_of_another_vit_are_refused(tmp_path):
  path = tmp_path / "other.pth"
  torch.save(TorchViT(16, 2, 4, patch=4, size=28).state_dict(), path)
  config = _vit_config()
  config.init_from = str(path)
  backbone = encoder.create_backbone(config.model)
  with pytest.raises(errors.UserError, match="2 blocks of width 16.*4 blocks of width 8"):
    init_from.initialize_from({"backbone": _backbone_shapes(backbone, 28)}, {}, config)


def test_position_embeddings_resized_as_pil_bicubic():
  rng = np.random.default_rng(0)
  table = rng.normal(size=(1, 1 + 7 * 7, 3)).astype(np.float32)
  np.testing.assert_array_equal(vit.resize_position_embedding(table, 7), table)
  resized = np.asarray(vit.resize_position_embedding(table, 10))
  assert resized.shape == (1, 101, 3)
  np.testing.assert_array_equal(resized[:, 0], table[:, 0])  # the class token's is kept
  for c in range(3):
    grid = Image.fromarray(table[0, 1:, c].reshape(7, 7), mode="F")
    expected = np.asarray(grid.resize((10, 10), Image.BICUBIC)).reshape(-1)
    np.testing.assert_allclose(resized[0, 1:, c], expected, atol=1e-5)


def _tiny_vit(**kwargs):
  return vit.create_vit("vit_nano", width=1 / 16, patch_size=4, **kwargs)


def test_other_input_size_uses_resized_position_embeddings():
  model = _tiny_vit()
  variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)
  assert variables["params"]["pos_embed"].shape == (1, 50, 8)
  images = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 40, 40, 1)), jnp.float32)
  resized = dict(variables["params"], pos_embed=vit.resize_position_embedding(
      variables["params"]["pos_embed"], 10))
  apply = jax.jit(lambda params, x: model.apply({"params": params}, x, train=False))
  larger_model = apply(variables["params"], images)
  model_at_40 = apply(resized, images)
  np.testing.assert_allclose(larger_model, model_at_40, rtol=1e-6, atol=1e-6)
  with pytest.raises(errors.UserError, match="multiple of 4"):
    model.apply(variables, jnp.zeros((1, 30, 30, 1)), train=False)


def test_stochastic_depth_drops_whole_examples_and_only_in_training():
  drop = vit.DropPath(0.25)
  x = jnp.ones((4000, 3, 2))
  out = np.asarray(drop.apply({}, x, True, rngs={"dropout": jax.random.key(0)}))
  per_example = out.reshape(4000, -1)
  assert set(np.unique(per_example)) == {0.0, np.float32(1 / 0.75)}
  assert np.all(per_example.min(axis=1) == per_example.max(axis=1))  # all of an example or none
  assert abs(np.mean(per_example[:, 0] == 0) - 0.25) < 0.03
  np.testing.assert_array_equal(drop.apply({}, x, False), x)
  with pytest.raises(errors.UserError, match="drop_path"):
    drop.apply({}, x, True)

  model, plain = _tiny_vit(drop_path=0.5), _tiny_vit()
  images = jnp.asarray(np.random.default_rng(0).uniform(size=(6, 28, 28, 1)), jnp.float32)
  variables = plain.init(jax.random.key(0), images, train=False)
  evaluate = jax.jit(lambda module, x: module.apply(variables, x, train=False), static_argnums=0)
  np.testing.assert_array_equal(evaluate(model, images), evaluate(plain, images))
  train = jax.jit(lambda x, key: model.apply(variables, x, train=True, rngs={"dropout": key}))
  trained = [train(images, jax.random.key(k)) for k in (1, 2)]
  assert not np.allclose(trained[0], trained[1])


def test_bfloat16_compute_keeps_float32_params():
  model = _tiny_vit(dtype=jnp.bfloat16)
  images = jnp.ones((2, 28, 28, 1))
  variables = model.init(jax.random.key(0), images, train=False)
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables["params"]))
  out, state = model.apply(variables, images, train=False, capture_intermediates=True)
  assert out.dtype == jnp.float32
  qkv = state["intermediates"]["blocks_0"]["attn"]["qkv"]["__call__"][0]
  assert qkv.dtype == jnp.bfloat16


def test_registry_names_every_backbone():
  config = ml_collections.ConfigDict(dict(name="vit_huge", dtype="float32"))
  with pytest.raises(errors.UserError) as raised:
    encoder.create_backbone(config)
  for name in ("resnet18", "resnet34", "resnet50", "densenet121", "vit_ti16", "vit_s16", "vit_b16"):
    assert name in str(raised.value)
  assert "\n" not in str(raised.value)


# Each method's step compiles for a minute on 2 cores: slow. test_dino runs a ViT through the
# loop, medssl-eval and medssl-export in the fast suite.
@pytest.mark.slow
@pytest.mark.parametrize("method", ["simclr", "simsiam", "byol", "moco", "tsimcne", "micle"])
def test_every_method_pretrains_a_vit_and_exports_it(method, synthetic_config, tmp_path):
  """--config.model.name=vit_nano with each method through the real loop (one device), and an
  export of the backbone. (test_dino evaluates a ViT run with medssl-eval.)"""
  config = synthetic_config
  config.method = method
  config.model.name, config.model.patch_size, config.model.width = "vit_nano", 4, 1 / 16
  config.optim.name, config.optim.base_lr = "adamw", 1e-3
  config.num_steps, config.checkpoint_every = 2, 2
  config.moco.queue_size, config.moco.shuffle_bn_groups = 32, 2
  config.data.pairing = "patient" if method == "micle" else config.data.pairing
  workdir = tmp_path / "run"
  state = pretrain.run(config, workdir, mesh=sharding.create_mesh(jax.devices()[:1]))
  assert state.params["backbone"]["pos_embed"].shape == (1, 50, 8)
  assert "backbone" not in state.batch_stats  # a ViT has no BatchNorm
  losses = [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert losses and np.all(np.isfinite(losses))

  info = export.export(workdir, tmp_path / "export")
  _, tree = export.load(tmp_path / "export")
  assert info["architecture"] == "vit_nano" and info["input"]["channels"] == 1
  flat = flax.traverse_util.flatten_dict(tree["backbone"]["params"], sep="/")
  np.testing.assert_array_equal(flat["pos_embed"], np.asarray(state.params["backbone"]["pos_embed"]))


def test_export_states_a_vit_feature_size_and_init_from_compares_patch_sizes():
  model = ml_collections.ConfigDict({"name": "vit_s16", "width": 1.0, "small_stem": True, "patch_size": 16})
  assert export.feature_dim(model) == 384
  source = dict(model.to_dict(), patch_size=4)
  with pytest.raises(errors.UserError, match="patch_size: run/x has 4, this run has 16"):
    init_from._check_architecture(source, model, "run/x")  # pylint: disable=protected-access
  resnet = ml_collections.ConfigDict({"name": "resnet18", "width": 1.0, "small_stem": True, "patch_size": 16})
  init_from._check_architecture(dict(resnet.to_dict(), patch_size=4), resnet, "run/x")  # pylint: disable=protected-access

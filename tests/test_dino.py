"""DINO: loss, centering and clipping against NumPy; schedules; no gradient into the teacher
and a frozen last layer; a ViT with multi-crop through the real loop: exact resume with the
center and teacher, collapse monitors in the log, and the evaluation binary on the run."""
import json
import pathlib
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from medssl_jax import errors
from medssl_jax import methods
from medssl_jax.evaluation import runner
from medssl_jax.loop import configuration
from medssl_jax.loop import pretrain
from medssl_jax.loop import sharding
from medssl_jax.methods import dino
from medssl_jax.weights import export

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def dino_loss_numpy(student_out, teacher_out, center, student_temp, teacher_temp):
  """DINO's DINOLoss.forward, loop for loop (float64)."""
  def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
  student_log_p = [np.log(softmax(s / student_temp)) for s in student_out]
  teacher_p = [softmax((t - center) / teacher_temp) for t in teacher_out]
  total, terms = 0.0, 0
  for iq, q in enumerate(teacher_p):
    for v, log_p in enumerate(student_log_p):
      if v == iq:
        continue
      total += np.mean(np.sum(-q * log_p, axis=-1))
      terms += 1
  return total / terms


@pytest.mark.parametrize("views,batch,dim", [(2, 5, 7), (6, 4, 16), (4, 1, 3)])
def test_loss_matches_numpy(views, batch, dim):
  rng = np.random.default_rng(views + batch)
  student, teacher = rng.normal(size=(views, batch, dim)), rng.normal(size=(2, batch, dim))
  center = rng.normal(size=dim) * 0.1
  loss = dino.dino_loss(student.astype(np.float32), teacher.astype(np.float32), center.astype(np.float32),
                        0.1, 0.04)
  np.testing.assert_allclose(float(loss), dino_loss_numpy(student, teacher, center, 0.1, 0.04), rtol=1e-4)


def test_center_update_matches_numpy():
  rng = np.random.default_rng(0)
  center, teacher = rng.normal(size=9), rng.normal(size=(2, 6, 9))
  expected = 0.9 * center + 0.1 * np.concatenate(teacher).mean(axis=0)
  np.testing.assert_allclose(dino.update_center(center.astype(np.float32), teacher.astype(np.float32), 0.9),
                             expected, rtol=1e-5, atol=1e-6)


def test_teacher_temperature_warms_up_linearly_then_stays():
  temps = [float(dino.teacher_temperature(k, 0.04, 0.07, 10)) for k in (0, 5, 10, 50)]
  np.testing.assert_allclose(temps, [0.04, 0.055, 0.07, 0.07], rtol=1e-6)
  assert float(dino.teacher_temperature(7, 0.04, 0.07, 0)) == pytest.approx(0.07)


def test_clip_gradients_per_tensor_as_dino():
  rng = np.random.default_rng(0)
  params = {"a": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=5), jnp.float32)}
  scales = {"a": 10.0, "b": 0.01}  # gradient of sum(scale * p^2 / 2) is scale * p
  loss = lambda p: sum(jnp.sum(scales[k] * p[k] ** 2) / 2 for k in p)
  grads = jax.grad(lambda p: loss(dino.clip_gradients(p, 1.0)))(params)
  for k, p in params.items():
    g = scales[k] * np.asarray(p, np.float64)
    expected = g * min(1.0, 1.0 / (np.linalg.norm(g) + 1e-6))
    np.testing.assert_allclose(grads[k], expected, rtol=1e-5)
  assert np.linalg.norm(grads["a"]) == pytest.approx(1.0, rel=1e-5)


def test_head_last_layer_is_weight_normalised():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 12)), jnp.float32)
  head = dino.DINOHead(hidden_dim=16, bottleneck_dim=8, out_dim=10)
  variables = head.init(jax.random.key(0), x)
  out = np.asarray(head.apply(variables, x))
  # Unit bottleneck times unit weight vectors: every logit is a cosine.
  assert out.shape == (5, 10) and np.all(np.abs(out) <= 1 + 1e-5)
  scaled = jax.tree_util.tree_map(lambda v: v, variables)
  scaled["params"]["last_layer"] = variables["params"]["last_layer"] * 7.0
  np.testing.assert_allclose(head.apply(scaled, x), out, rtol=1e-5, atol=1e-6)
  free = dino.DINOHead(hidden_dim=16, bottleneck_dim=8, out_dim=10, norm_last_layer=False)
  assert free.init(jax.random.key(0), x)["params"]["last_layer_scale"].shape == (10,)


class _TinyBackbone(nn.Module):
  """Mean colour then a dense layer: any image size, gradients in milliseconds."""

  @nn.compact
  def __call__(self, images, train: bool = True):
    return nn.Dense(8)(jnp.concatenate([images.mean(axis=(1, 2)), images.std(axis=(1, 2))], axis=-1))


def _tiny_setup(freeze_steps):
  config = ml_collections.ConfigDict(dict(num_steps=10, dino=dino.DINO().defaults().to_dict(),
                                          model=dict(drop_path=0.0)))
  config.dino.update(out_dim=6, freeze_last_layer_steps=freeze_steps, clip_grad=0.0)
  model = dino.DINOModel(backbone=_TinyBackbone(), projector=dino.DINOHead(16, 4, 6))
  rng = np.random.default_rng(0)
  global_views = jnp.asarray(rng.uniform(size=(2, 8, 6, 6, 1)), jnp.float32)
  local_views = jnp.asarray(rng.uniform(size=(3, 8, 4, 4, 1)), jnp.float32)
  variables = model.init(jax.random.key(0), global_views[0])
  method = dino.DINO()
  method.teacher_model = lambda config: model  # the tiny network has no stochastic depth to drop
  extra = method.init_extra_state(variables, config)
  extra["params"] = jax.tree_util.tree_map(lambda x: x + 0.05, extra["params"])  # as after a few steps
  extra["center"] = jnp.asarray(rng.normal(size=6) * 0.1, jnp.float32)
  return method, model, config, variables["params"], extra, global_views, local_views


@pytest.mark.parametrize("step,frozen", [(3, True), (5, False)])
def test_no_gradient_into_the_teacher_and_frozen_last_layer(step, frozen):
  method, model, config, params, extra, global_views, local_views = _tiny_setup(freeze_steps=5)

  def loss(params, extra):
    return method.loss_fn(params, {}, extra, global_views, local_views, None, step, model=model,
                          config=config)

  (value, (metrics, _, new_extra)), (grad_params, grad_extra) = jax.jit(jax.value_and_grad(
      loss, argnums=(0, 1), has_aux=True))(params, extra)
  assert np.isfinite(float(value))
  for leaf in jax.tree_util.tree_leaves(grad_extra):
    np.testing.assert_array_equal(np.asarray(leaf), 0.0)
  assert np.abs(np.asarray(grad_params["backbone"]["Dense_0"]["kernel"])).max() > 0
  assert np.abs(np.asarray(grad_params["projector"]["Dense_0"]["kernel"])).max() > 0
  last = np.abs(np.asarray(grad_params["projector"]["last_layer"])).max()
  assert (last == 0) if frozen else (last > 0)
  # The teacher's outputs make the new center; the teacher is the EMA of this step's student.
  teacher_out = jnp.stack(jnp.split(model.apply({"params": extra["params"]},
                                                global_views.reshape(16, 6, 6, 1))[1], 2))
  np.testing.assert_allclose(new_extra["center"], 0.9 * extra["center"] + 0.1 * np.asarray(
      teacher_out).reshape(16, 6).mean(0), rtol=1e-5, atol=1e-6)
  tau = 1 - (1 - 0.996) * (np.cos(np.pi * step / 10) + 1) / 2
  expected = jax.tree_util.tree_map(lambda t, s: tau * t + (1 - tau) * s, extra["params"], params)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                         new_extra["params"], expected)
  np.testing.assert_allclose(metrics["teacher_momentum"], tau, rtol=1e-6)
  assert 0 <= float(metrics["teacher_entropy"]) <= float(metrics["teacher_entropy_max"]) + 1e-5
  assert float(metrics["kl_teacher_to_center"]) >= -1e-6


def test_head_batchnorm_removes_what_every_image_shares():
  """DINO's use_bn_in_head: in training the head's BatchNorm subtracts the batch mean, so a
  vector added to every image's features changes nothing; without it the output moves."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(16, 12)), jnp.float32)
  shifted = x + jnp.asarray(rng.normal(size=12) * 5.0, jnp.float32)
  outputs = {}
  for use_bn in (False, True):
    head = dino.DINOHead(hidden_dim=32, bottleneck_dim=8, out_dim=10, use_bn=use_bn)
    variables = head.init(jax.random.key(0), x)
    assert ("batch_stats" in variables) == use_bn
    apply = lambda inputs: head.apply(variables, inputs, mutable=["batch_stats"])[0]  # noqa: E731
    outputs[use_bn] = np.abs(np.asarray(apply(x)) - np.asarray(apply(shifted))).max()
  assert outputs[True] < 1e-4 and outputs[False] > 1e-2


def test_head_batchnorm_statistics_of_student_and_teacher():
  """With dino.head_bn the teacher carries its own head statistics, updated (torch momentum
  0.1) from the teacher's global views only; the student's from all views."""
  method, model, config, params, extra, global_views, local_views = _tiny_setup(freeze_steps=0)
  config.dino.head_bn = True
  model = dino.DINOModel(backbone=_TinyBackbone(), projector=dino.DINOHead(16, 4, 6, use_bn=True))
  method.teacher_model = lambda config: model
  variables = model.init(jax.random.key(0), global_views[0])
  extra = dict(method.init_extra_state(variables, config), center=extra["center"])
  assert set(extra["batch_stats"]) == {"projector"}
  _, (_, student_stats, new_extra) = jax.jit(lambda params, stats, extra: method.loss_fn(
      params, stats, extra, global_views, local_views, None, 0, model=model, config=config))(
          variables["params"], variables["batch_stats"], extra)

  def first_hidden_mean(images):
    features = np.asarray(model.apply({"params": variables["params"]}, images,
                                      method=dino.DINOModel.features))
    dense = variables["params"]["projector"]["Dense_0"]
    return (features @ np.asarray(dense["kernel"]) + np.asarray(dense["bias"])).mean(axis=0)

  teacher_mean = first_hidden_mean(global_views.reshape(16, 6, 6, 1))
  np.testing.assert_allclose(new_extra["batch_stats"]["projector"]["BatchNorm_0"]["mean"],
                             0.1 * teacher_mean, rtol=1e-4, atol=1e-6)
  student_mean = (16 * teacher_mean + 24 * first_hidden_mean(local_views.reshape(24, 4, 4, 1))) / 40
  np.testing.assert_allclose(student_stats["projector"]["BatchNorm_0"]["mean"], 0.1 * student_mean,
                             rtol=1e-4, atol=1e-6)


def test_collapse_monitors_at_collapse():
  """Every image the same output: KL to the center 0; uniform after centering: entropy log K."""
  same = jnp.tile(jnp.asarray([[0.3, -1.0, 2.0, 0.5]]), (10, 1))
  collapsed = dino.collapse_monitors(same, same[0], 0.04)
  assert float(collapsed["kl_teacher_to_center"]) == pytest.approx(0.0, abs=1e-6)
  assert float(collapsed["teacher_entropy"]) == pytest.approx(np.log(4), rel=1e-6)


def _saved_state(workdir, step):
  manager = ocp.CheckpointManager((workdir / "checkpoints").absolute(),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]


def _dino_vit_config(config):
  config.method = "dino"
  config.model.name, config.model.patch_size, config.model.width = "vit_nano", 4, 1 / 16
  config.model.drop_path = 0.1
  config.dino.update(out_dim=32, hidden_dim=16, bottleneck_dim=8, local_crops=2, local_size=12,
                     freeze_last_layer_steps=1, warmup_teacher_temp=0.02, warmup_teacher_temp_steps=2)
  config.optim.name, config.optim.base_lr = "adamw", 1e-3
  config.num_steps, config.checkpoint_every, config.log_every = 3, 1, 1
  return config


def test_dino_vit_multicrop_resumes_exactly_evaluates_and_exports(synthetic_config, tmp_path):
  """A tiny ViT with 2 global and 2 local crops through the real loop (one device); a
  preemption after step 1 and a resume end bitwise equal, center and teacher included; then
  medssl-eval's linear probe and kNN on the run's class token, and medssl-export's backbone."""
  config = _dino_vit_config(synthetic_config)
  mesh = sharding.create_mesh(jax.devices()[:1])
  workdir = tmp_path / "run"
  final = pretrain.run(config, workdir, mesh=mesh)
  assert set(final.extra) == {"params", "batch_stats", "center"} and final.extra["center"].shape == (32,)
  assert np.abs(np.asarray(final.extra["center"])).max() > 0
  lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  for line in lines:
    assert np.isfinite(line["loss"]) and np.isfinite(line["kl_teacher_to_center"])
    assert 0 <= line["teacher_entropy"] <= line["teacher_entropy_max"] + 1e-5
  np.testing.assert_allclose([line["teacher_temp"] for line in lines], [0.02, 0.03, 0.04], rtol=1e-6)
  saved = _saved_state(workdir, 3)

  for step in (2, 3):
    shutil.rmtree(workdir / "checkpoints" / str(step))
  pretrain.run(config, workdir, mesh=mesh)
  resumed = dict(jax.tree_util.tree_leaves_with_path(_saved_state(workdir, 3)))
  leaves = jax.tree_util.tree_leaves_with_path(saved)
  assert len(leaves) == len(resumed)
  assert any("center" in jax.tree_util.keystr(path) for path, _ in leaves)
  for path, a in leaves:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(resumed[path]), err_msg=str(path))

  eval_config = configuration.load_config_file(str(REPO_ROOT / "configs" / "eval" / "linear_probe.py"))
  eval_config.pretrain_workdir = str(workdir)
  eval_config.evaluations, eval_config.baselines = ("linear_probe", "knn"), ("random_init",)
  eval_config.probe.Cs, eval_config.n_boot, eval_config.knn.k = (1.0,), 20, 5
  runner.evaluate(eval_config, tmp_path / "eval")
  results = json.loads((tmp_path / "eval" / "results.json").read_text())
  for evaluation in ("linear_probe", "knn"):
    for representation in ("pretrained", "random_init"):
      scores = results[evaluation][representation]
      assert 0.0 <= scores["accuracy"] <= 1.0 and np.isfinite(scores["auroc"])
  assert results["linear_probe"]["pretrained"]["feature_dim"] == 8

  info = export.export(workdir, tmp_path / "export")
  _, tree = export.load(tmp_path / "export")
  assert info["architecture"] == "vit_nano" and info["input"]["channels"] == 1
  np.testing.assert_array_equal(tree["backbone"]["params"]["pos_embed"],
                                np.asarray(final.params["backbone"]["pos_embed"]))


def test_bad_multicrop_settings_are_user_errors(synthetic_config):
  config = _dino_vit_config(synthetic_config)
  method = methods.get_method("dino")
  config.dino.local_size = 10
  with pytest.raises(errors.UserError, match="dino.local_size=10 is not a multiple of model.patch_size=4"):
    method.check_config(config)
  config.dino.local_size, config.dino.local_scale = 12, (0.5, 0.1)
  with pytest.raises(errors.UserError, match="crop scale"):
    method.check_config(config)
  config.dino.local_scale, config.dino.local_policy = (0.05, 0.4), "dino_locall"
  with pytest.raises(errors.UserError, match="dino_local"):
    method.check_config(config)


@pytest.mark.parametrize("name", ["dino_bloodmnist_vit", "dino_vit_s16", "simclr_vit_b16"])
def test_recipes_load(name):
  config = configuration.load_config_file(str(REPO_ROOT / "configs" / f"{name}.py"))
  assert config.model.name.startswith("vit_") and config.optim.name == "adamw"
  assert config.augment.size % config.model.patch_size == 0
  methods.get_method(config.method).check_config(config)
  if config.method == "dino":
    assert config.dino.local_crops > 0 and config.dino.local_size % config.model.patch_size == 0
  if "16" in name:  # the full-scale recipes
    assert config.batch_size == 1024 and config.augment.size == 224 and config.model.dtype == "bfloat16"

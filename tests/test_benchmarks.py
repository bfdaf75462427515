"""The benchmark scripts' logic on CPU: the HLO cost walk, step_cost's attribution,
pipeline_speed's measurement and verdict, and device_check.sh in its CPU dry run (so that a
typo cannot waste accelerator time)."""
import functools
import json
import os
import pathlib
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import psutil
import pytest

from medssl_jax import methods
from medssl_jax.data import array_record
from medssl_jax.data import manifest
from medssl_jax.loop import sharding

from conftest import REPO_ROOT
from conftest import xla_flags

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import device_check  # noqa: E402  pylint: disable=g-import-not-at-top
import hlo_cost  # noqa: E402  pylint: disable=g-import-not-at-top
import pipeline_speed  # noqa: E402  pylint: disable=g-import-not-at-top
import step_cost  # noqa: E402  pylint: disable=g-import-not-at-top


def _compiled(fn, *args):
  return jax.jit(fn).lower(*args).compile()


def _cost(compiled, key):
  costs = compiled.cost_analysis()
  return (costs[0] if isinstance(costs, list) else costs)[key]


# --- hlo_cost -------------------------------------------------------------------------------

CONVOLUTIONS = [  # (strides, padding, lhs dilation, rhs dilation, feature groups)
    ((1, 1), "SAME", (1, 1), (1, 1), 1),
    ((2, 2), ((3, 3), (3, 3)), (1, 1), (1, 1), 1),
    ((1, 2), ((0, 1), (2, 0)), (2, 1), (1, 2), 1),
    ((1, 1), "VALID", (1, 1), (1, 1), 3),
]


@pytest.mark.parametrize("strides,padding,lhs_dilation,rhs_dilation,groups", CONVOLUTIONS)
def test_convolution_flops_count_only_taps_inside_the_input(strides, padding, lhs_dilation,
                                                            rhs_dilation, groups):
  lhs = jax.ShapeDtypeStruct((2, 9, 11, 6), jnp.float32)
  rhs = jax.ShapeDtypeStruct((3, 5, 6 // groups, 12), jnp.float32)
  conv = functools.partial(jax.lax.conv_general_dilated, window_strides=strides, padding=padding,
                           lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                           dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)
  compiled = _compiled(conv, lhs, rhs)
  walked = sum(c.flops for c in hlo_cost.instruction_costs(compiled.as_text()))
  # Independent count: convolving all-ones gives, at each output, its number of valid
  # (tap, input feature) pairs; each is one multiply and one add.
  ones = conv(jnp.ones(lhs.shape), jnp.ones(rhs.shape))
  expected = 2.0 * float(np.sum(np.asarray(ones)))
  assert walked == expected
  assert walked == _cost(compiled, "flops")


def test_walk_matches_cost_analysis_on_dots_reductions_and_elementwise_ops():
  def fn(a, b):
    x = jnp.tanh(a @ b) * 3.0 + 1.0
    return jnp.sum(x, axis=0), jnp.max(jnp.exp(x))
  a = jax.ShapeDtypeStruct((64, 48), jnp.float32)
  b = jax.ShapeDtypeStruct((48, 32), jnp.float32)
  compiled = _compiled(fn, a, b)
  costs = hlo_cost.instruction_costs(compiled.as_text())
  dots = [c for c in costs if c.opcode == "dot"]
  assert [c.flops for c in dots] == [2.0 * 64 * 32 * 48]
  assert sum(c.flops for c in costs) == pytest.approx(_cost(compiled, "flops"), rel=1e-3)
  # Each kernel reads its operands and writes its output once: at least a, b and the sums.
  assert sum(c.bytes for c in costs) >= 4 * (64 * 48 + 48 * 32 + 32 + 1)
  assert sum(c.bytes for c in costs) == pytest.approx(_cost(compiled, "bytes accessed"), rel=0.05)


GPU_HLO = "\n".join([
    "HloModule gpu_calls",
    "",
    "ENTRY %main (p0: f32[2,9,11,6], p1: f32[3,5,6,12], a: f32[64,48], b: f32[48,32]) -> f32[] {",
    "  %p0 = f32[2,9,11,6]{3,2,1,0} parameter(0)",
    "  %p1 = f32[3,5,6,12]{3,2,1,0} parameter(1)",
    "  %a = f32[64,48]{1,0} parameter(2)",
    "  %b = f32[48,32]{1,0} parameter(3)",
    "  %conv = (f32[2,9,11,12]{3,2,1,0}, u8[4096]{0}) custom-call(f32[2,9,11,6]{3,2,1,0} %p0, "
    "f32[3,5,6,12]{3,2,1,0} %p1), window={size=3x5 pad=1_1x2_2}, dim_labels=b01f_01io->b01f, "
    'custom_call_target="__cudnn$convForward", metadata={op_name="jit(f)/conv"}',
    "  %gemm = (f32[64,32]{1,0}, s8[4096]{0}) custom-call(f32[64,48]{1,0} %a, f32[48,32]{1,0} %b), "
    'custom_call_target="__cublas$gemm", metadata={op_name="jit(f)/dot"}, backend_config='
    '{"gemm_backend_config":{"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],'
    '"rhs_contracting_dimensions":["0"],"lhs_batch_dimensions":[],"rhs_batch_dimensions":[]}}}',
    "  ROOT %c = f32[] constant(0)",
    "}",
])


def test_gpu_library_calls_count_as_the_convolution_and_dot_they_run():
  """On GPUs convolutions and matrix products are cuDNN / cuBLAS custom-calls returning
  (result, scratch); the walk counts them as the operation, and the scratch as no traffic."""
  costs = {c.op_name: c for c in hlo_cost.instruction_costs(GPU_HLO)}
  conv = functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1),
                           padding=((1, 1), (2, 2)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
  taps = float(np.sum(np.asarray(conv(jnp.ones((2, 9, 11, 6)), jnp.ones((3, 5, 6, 12))))))
  assert costs["jit(f)/conv"].flops == 2.0 * taps
  assert costs["jit(f)/conv"].bytes == 4 * (2 * 9 * 11 * 6 + 3 * 5 * 6 * 12 + 2 * 9 * 11 * 12)
  assert costs["jit(f)/dot"].flops == 2.0 * 64 * 32 * 48
  assert costs["jit(f)/dot"].bytes == 4 * (64 * 48 + 48 * 32 + 64 * 32)


def test_parse_shape_reads_arrays_and_nested_tuples():
  shape = hlo_cost.parse_shape("(f32[2,3]{1,0}, (bf16[4], s32[]), /*index=3*/u8[5,5,1])")
  assert [p.dtype for p in shape.parts] == ["f32", "tuple", "u8"]
  assert shape.bytes == 2 * 3 * 4 + 4 * 2 + 4 + 25
  assert hlo_cost.parse_shape("pred[7]{0}").bytes == 7


# --- device_check.sh --dry-run: the whole script at CPU size, once --------------------------

@pytest.fixture(scope="module")
def nih_shards(shared_data, tmp_path_factory):
  """ArrayRecord shards of the real nih_cxr1000 train split (64 px chest X-rays)."""
  out = tmp_path_factory.mktemp("nih_shards")
  source = manifest.open_nih_cxr1000("train", shared_data / "nih_cxr1000")
  array_record.convert({"train": source}, out, progress=False)
  return out


@pytest.fixture(scope="module")
def dry_run(nih_shards, tmp_path_factory):
  """device_check.sh --dry-run: PyTorch reference, JAX step on device data and through grain,
  step_cost, report; one simulated CPU device. Returns (its output folder, its JSON)."""
  out = tmp_path_factory.mktemp("device_check")
  env = dict(os.environ, OUT=str(out), DEVICE_CHECK_DATA=str(nih_shards), XLA_FLAGS=xla_flags(1),
             PYTHON=sys.executable)
  done = subprocess.run(["bash", str(REPO_ROOT / "benchmarks" / "device_check.sh"), "--dry-run"],
                        env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  return out, json.loads((out / "device_check.json").read_text())


def _dry_run_without_packages(tmp_path, wheels):
  """device_check.sh --dry-run with a Python that has no packages at all, and a carry folder
  holding (empty files named as) `wheels`."""
  fake_python = tmp_path / "python"
  fake_python.write_text("#!/bin/sh\nexit 1\n")
  fake_python.chmod(0o755)
  (tmp_path / "carry" / "wheels").mkdir(parents=True)
  for name in wheels:
    (tmp_path / "carry" / "wheels" / name).write_bytes(b"")
  env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHON=str(fake_python),
             DEVICE_CHECK_CARRY=str(tmp_path / "carry"))
  return subprocess.run(["bash", str(REPO_ROOT / "benchmarks" / "device_check.sh"), "--dry-run"],
                        env=env, capture_output=True, text=True, timeout=60)


def test_device_check_names_the_wheel_it_lacks(tmp_path):
  done = _dry_run_without_packages(tmp_path, [])
  assert done.returncode == 1
  assert "grain is missing" in done.stderr and "--prepare" in done.stderr


def test_device_check_installs_missing_modules_from_carried_wheels_then_checks_imports(tmp_path):
  wheels = ["grain-0.2.18-cp312-cp312-manylinux_2_28_x86_64.whl", "ml_collections-1.1.0-py3-none-any.whl",
            "array_record-0.8.6-cp312-cp312-manylinux2014_x86_64.whl", "portpicker-1.6.0-py3-none-any.whl"]
  done = _dry_run_without_packages(tmp_path, wheels)
  listed = done.stdout.split("would install: ")[1].splitlines()[0].split()
  assert [pathlib.Path(w).name for w in listed] == wheels
  # Imports are checked before anything runs: the fake Python fails them at once.
  assert done.returncode == 1 and "imports failed" in done.stderr
  assert not (tmp_path / "out" / "torch.log").exists()


@pytest.mark.slow  # 40 s of CPU (two processes, three compiles); the fast tests below cover its parts
def test_dry_run_writes_the_report_of_every_stage(dry_run):
  out, result = dry_run
  torch_run, jax_run = result["torch"], result["jax"]
  assert torch_run["images_per_s"] > 0 and torch_run["batch"] == 2 and not torch_run["compiled"]
  assert jax_run["images_per_s_device_data"] > 0 and jax_run["images_per_s_real_data"] > 0
  assert 0 <= jax_run["host_share"] < 1
  assert jax_run["image_shape"] == [64, 64, 1]  # the real shards were read
  assert result["backend"] == "cpu" and result["peak_memory_bytes"] is None
  assert result["step_cost"]["batch_size"] == 8
  cost = result["step_cost"]
  assert cost["walk_flops"] == pytest.approx(cost["flops"], rel=2e-3)
  table = (out / "device_check.md").read_text()
  expected_rows = ["JAX, data on device", "JAX, real data through grain", "PyTorch reference",
                   "JAX / PyTorch, data on device", "goal 5,000 views/s", "step FLOPs", "| backbone |"]
  assert all(row in table for row in expected_rows), table
  ratio = jax_run["images_per_s_device_data"] / torch_run["images_per_s"]
  assert f"{ratio:.2f}x" in table
  assert {"torch.log", "jax.log"} <= {p.name for p in out.iterdir()}


def _fake_measure(config, steps, warmup):
  # The recipe the GPU run times: SimCLR ResNet-50, 224 px, bf16, 256 per device, the shards.
  assert (config.method, config.model.name, config.model.dtype, config.augment.size,
          config.augment.policy, config.data.name) == (
              "simclr", "resnet50", "bfloat16", 224, "simclr", "array_record")
  assert config.batch_size == 256 * jax.device_count() and (steps, warmup) == (20, 3)
  return {"devices": 1, "device_kind": "fake", "image_shape": [224, 224, 1], "warmup_s": 50.0,
          "images_per_s_device_data": 3000.0, "images_per_s_real_data": 2900.0, "host_share": 0.01}


def test_device_check_report_merges_both_frameworks(tmp_path, monkeypatch):
  """device_check.run's own logic, with the measurements faked: what it passes on, what it
  writes, the ratio and the goal."""
  parts = {"backbone": {"flops": 95.0, "bytes": 90.0}, "loss": {"flops": 5.0, "bytes": 10.0}}
  fake_cost = step_cost.StepCost(100.0, 100.0, 100.0, 100.0, parts, 1.0)
  monkeypatch.setattr(device_check.throughput, "measure", _fake_measure)
  monkeypatch.setattr(device_check.step_cost, "step_cost", lambda config, shape: fake_cost)
  torch_json = tmp_path / "torch.json"
  torch_json.write_text(json.dumps({"images_per_s": 2000.0, "views_per_s": 4000.0, "compiled": True,
                                    "peak_memory_bytes": 2 ** 31}))
  result = device_check.run(tmp_path, "SHARDS", 256, 20, 3, tiny=False, torch_json=str(torch_json))
  assert json.loads((tmp_path / "device_check.json").read_text())["jax"] == result["jax"]
  rows = dict(device_check.report_rows(result))
  assert rows["JAX / PyTorch, data on device"] == "1.50x (goal 1.2x)"
  assert rows["goal 5,000 views/s (data on device)"] == "met"  # 2 x 3000 views/s
  assert rows["PyTorch, peak device memory"] == "2.00 GiB"
  assert rows["augmentation + loss + optimizer: FLOPs, bytes"] == "5.00%, 10.00%"
  table = (tmp_path / "device_check.md").read_text()
  assert "| JAX / PyTorch, data on device | 1.50x (goal 1.2x) |" in table and "| loss |" in table


def test_device_check_skips_step_cost_near_its_deadline(tmp_path, monkeypatch):
  monkeypatch.setattr(device_check.throughput, "measure", _fake_measure)
  monkeypatch.setattr(device_check.step_cost, "step_cost", lambda *args: pytest.fail("compiled"))
  result = device_check.run(tmp_path, "SHARDS", 256, 20, 3, tiny=False, deadline=time.time() + 30)
  assert result["step_cost"] is None and "deadline" in result["step_cost_skipped"]
  assert "PyTorch" not in (tmp_path / "device_check.md").read_text()  # no torch.json given


# --- step_cost ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_cost():
  """step_cost.to_json of device_check's CPU-sized step (as its dry run compiles it), on one
  device and uint8 28 px grey source images."""
  config = device_check.check_config("", 8, tiny=True)
  config.batch_size = 8
  cost = step_cost.step_cost(config, (28, 28, 1), sharding.create_mesh(jax.devices()[:1]))
  return step_cost.to_json(cost, config, (28, 28, 1))


def test_step_cost_parts_add_up_to_xla_totals(tiny_cost):
  cost = tiny_cost
  assert cost["walk_flops"] == pytest.approx(cost["flops"], rel=2e-3)
  assert cost["walk_bytes"] == pytest.approx(cost["bytes"], rel=2e-2)
  parts = cost["parts"]
  assert sum(p["flops"] for p in parts.values()) == pytest.approx(cost["walk_flops"])
  for name in ("backbone", "heads", "loss", "augmentation view1", "augmentation view2", "optimizer"):
    assert parts[name]["flops"] > 0 and parts[name]["bytes"] > 0, name
  overhead = sum(parts[p]["flops"] for p in parts if p.split(" ")[0] in step_cost.OVERHEAD_PARTS)
  assert cost["overhead_share"]["flops"] == pytest.approx(overhead / cost["walk_flops"])


def test_backbone_share_is_the_backbone_compiled_alone(tiny_cost):
  """Independent check of the attribution: forward + backward (to its parameters) of the
  backbone alone on the 2B views of the tiny step, compiled by itself, costs what the walk of
  the whole step gave the backbone."""
  cost = tiny_cost
  config = device_check.check_config("", 8, tiny=True)
  backbone = methods.get_method("simclr").create_model(config).backbone
  views = jax.ShapeDtypeStruct((2 * cost["batch_size"], 32, 32, 1), jnp.float32)
  variables = jax.eval_shape(functools.partial(backbone.init, train=True), jax.random.key(0), views)

  def forward_backward(params, batch_stats, views, cotangent):
    def forward(p):
      return backbone.apply({"params": p, "batch_stats": batch_stats}, views, train=True,
                            mutable=["batch_stats"])
    features, pullback, updates = jax.vjp(forward, params, has_aux=True)
    return features, updates, pullback(cotangent)

  features = jax.eval_shape(
      lambda v, x: backbone.apply(v, x, train=True, mutable=["batch_stats"])[0], variables, views)
  alone = _compiled(forward_backward, variables["params"], variables["batch_stats"], views, features)
  assert cost["parts"]["backbone"]["flops"] == pytest.approx(_cost(alone, "flops"), rel=0.02)


def test_part_of_names_each_part():
  scope = step_cost._SCOPE  # pylint: disable=protected-access
  cases = {
      f"jit(train_step)/jvp({scope}loss_fn)/Encoder/backbone/BasicBlock_0/Conv_0/conv": "backbone",
      f"jit(train_step)/transpose(jvp({scope}loss_fn))/Encoder/projector/Dense_0/dot": "heads",
      f"jit(train_step)/jvp({scope}loss_fn)/EncoderWithPredictor/predictor/Dense_1/add": "heads",
      f"jit(train_step)/jvp({scope}loss_fn)/jit(log_softmax)/exp": "loss",
      f"jit(train_step)/jvp({scope}loss_fn)/{scope}ema/add": "ema",
      f"jit(train_step)/{scope}augment/{scope}view2/vmap()/mul;jit(train_step)/other": "augmentation view2",
      f"jit(train_step)/{scope}augment/jit(_threefry_split)": "augmentation",
      f"jit(train_step)/{scope}optimizer/mul": "optimizer",
      "jit(train_step)/jit(norm)/sqrt": "other",
      "": "other",
  }
  assert {name: step_cost.part_of(name) for name in cases} == cases


def test_step_cost_flags_an_overhead_over_the_target():
  parts = {"backbone": {"flops": 90.0, "bytes": 80.0}, "loss": {"flops": 4.0, "bytes": 5.0},
           "augmentation view1": {"flops": 2.0, "bytes": 6.0}, "other": {"flops": 4.0, "bytes": 9.0}}
  cost = step_cost.StepCost(flops=100.0, bytes=100.0, walk_flops=100.0, walk_bytes=100.0,
                            parts=parts, compile_s=1.0)
  assert cost.overhead("flops") == pytest.approx(0.06) and cost.overhead("bytes") == pytest.approx(0.11)
  table = step_cost.markdown(cost, "toy", batch=10)
  assert "6.00% of FLOPs, 11.00% of bytes (OVER" in table
  # 100 FLOPs at 990 TFLOP/s: 20 views in 1.0e-13 s.
  assert "198,000,000,000,000 views/s" in table


# --- pipeline_speed -------------------------------------------------------------------------

def test_pipeline_speed_reads_real_batches_of_each_source(medmnist_dir, nih_shards):
  sections = pipeline_speed.data_sections(str(medmnist_dir), [str(nih_shards)])
  # 0.3 s of reading at least: CPU time is counted in 10 ms ticks.
  speeds = pipeline_speed.run(sections, [0], batch=32, batches=2, warmup=1, min_seconds=0.3,
                              log=lambda line: None)
  assert [(s.source.split()[0], s.image_shape, s.workers) for s in speeds] == [
      ("pneumoniamnist", (28, 28, 1), 0), ("ArrayRecord", (64, 64, 1), 0)]
  for s in speeds:
    assert s.images >= 2 * 32 and s.images % 32 == 0
    assert s.images_per_s > 0 and s.cpu_s > 0
    assert s.images_per_cpu_s == pytest.approx(s.images / s.cpu_s)


def test_cpu_seconds_count_live_worker_processes():
  """Per-core figures include grain's worker processes: a busy child's CPU time counts."""
  process = psutil.Process()
  before = pipeline_speed.cpu_seconds(process)
  child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\n"
                            "while time.process_time() - t < 0.5: pass\ntime.sleep(30)"])
  try:
    busy = lambda: sum(psutil.Process(child.pid).cpu_times()[:2])
    deadline = time.monotonic() + 20
    while busy() < 0.5 and time.monotonic() < deadline:
      time.sleep(0.05)
    assert pipeline_speed.cpu_seconds(process) - before >= 0.45
  finally:
    child.kill()
    child.wait()


def test_pipeline_verdict_is_cores_times_per_core_against_the_target():
  speed = lambda per_core: pipeline_speed.Speed("s", (8, 8, 1), 0, 1, 1.0, 1.0, per_core, 0.0)
  table = pipeline_speed.markdown([speed(500.0), speed(499.0)], cores=16, target=8000.0)
  rows = [line for line in table.splitlines() if line.startswith("| s |")]
  assert rows[0].endswith("| 8,000 | yes |") and rows[1].endswith("| 7,984 | NO |")

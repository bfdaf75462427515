"""The JAX half of benchmarks/device_check.sh, and its report.

  python benchmarks/device_check.py --out=DIR --data_dir=SHARDS [--torch_json=DIR/torch.json] \
      [--batch=256] [--steps=20] [--warmup=3] [--deadline=EPOCH_SECONDS] [--tiny]

configs/simclr_resnet50.py at 224 px in bfloat16, one process, the batch on this host's
devices (--batch per device), reading ArrayRecord shards from --data_dir through grain:
  1. benchmarks/throughput.measure: images/s with one batch kept on the device, then with
     real data through grain and the device prefetch, and the host's share of those steps;
  2. the device's peak memory (memory_stats()["peak_bytes_in_use"]; none on a CPU);
  3. benchmarks/step_cost on this backend: FLOPs and bytes per part as this device's
     compiler fuses them (skipped when --deadline leaves under a minute);
then merges the PyTorch reference's JSON (--torch_json, from pytorch_reference.py) and
writes DIR/device_check.json and DIR/device_check.md (a table ready for BENCHMARKS.md).
Each stage rewrites the JSON, so a run cut short keeps what it measured.

--tiny: the same stages at CPU size (ResNet-18 width 1/16, 32 px views, policy cxr, batch 8
per device), for device_check.sh --dry-run and tests/test_benchmarks.py.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import sys
import time

import jax
import step_cost  # beside this script
import throughput  # beside this script
from absl import app
from absl import flags

from medssl_jax.loop import configuration

REPO = pathlib.Path(__file__).resolve().parents[1]
# The goal this check serves: views/s on one H100 and the ratio to PyTorch in the same run.
GOAL_VIEWS_PER_S, GOAL_RATIO = 5000.0, 1.2
_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "array-record",
             "ml-collections", "torch")


def check_config(data_dir: str, batch: int, tiny: bool):
  """The SimCLR ResNet-50 recipe at 224 px bf16 on the shards, `batch` per device."""
  config = configuration.load_config_file(str(REPO / "configs" / "simclr_resnet50.py"))
  config.batch_size = batch * jax.device_count()
  config.data.name, config.data.dir = "array_record", data_dir
  config.data.num_workers = 0 if tiny else min(8, os.cpu_count() or 1)
  config.num_steps = 1000
  config.optim.warmup_steps = 10
  if tiny:
    config.model.name, config.model.width, config.model.small_stem = "resnet18", 1 / 16, True
    config.model.projector_hidden_dim, config.model.projector_dim = 32, 16
    # The chest X-ray policy compiles in half the time of SimCLR's on a CPU; the code path
    # (policy from the config, two views) is the same.
    config.augment.size, config.augment.policy = 32, "cxr"
  return config


def versions() -> dict:
  found = {}
  for name in _PACKAGES:
    try:
      found[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      found[name] = None
  return found


def report_rows(result: dict) -> list[tuple[str, str]]:
  """(what, value) rows of the BENCHMARKS table from the merged result."""
  rows = []
  jax_run, torch_run = result.get("jax"), result.get("torch")
  if jax_run:
    rows += [("JAX, data on device: images/s (views/s)",
              f"{jax_run['images_per_s_device_data']:,.1f} ({2 * jax_run['images_per_s_device_data']:,.1f})"),
             ("JAX, real data through grain: images/s (views/s)",
              f"{jax_run['images_per_s_real_data']:,.1f} ({2 * jax_run['images_per_s_real_data']:,.1f})"),
             ("JAX, host share of a real-data step", f"{jax_run['host_share']:.1%}"),
             ("JAX, compile + warm-up steps", f"{jax_run['warmup_s']:.1f} s")]
  if result.get("peak_memory_bytes") is not None:
    rows.append(("JAX, peak device memory", f"{result['peak_memory_bytes'] / 2**30:.2f} GiB"))
  if torch_run:
    rows += [("PyTorch reference: images/s (views/s)",
              f"{torch_run['images_per_s']:,.1f} ({torch_run['views_per_s']:,.1f})"),
             ("PyTorch, torch.compile", str(torch_run["compiled"]))]
    if torch_run.get("peak_memory_bytes") is not None:
      rows.append(("PyTorch, peak device memory", f"{torch_run['peak_memory_bytes'] / 2**30:.2f} GiB"))
  if jax_run and torch_run:
    ratio = jax_run["images_per_s_device_data"] / torch_run["images_per_s"]
    rows.append(("JAX / PyTorch, data on device", f"{ratio:.2f}x (goal {GOAL_RATIO}x)"))
  if jax_run:
    views = 2 * jax_run["images_per_s_device_data"]
    rows.append((f"goal {GOAL_VIEWS_PER_S:,.0f} views/s (data on device)",
                 "met" if views >= GOAL_VIEWS_PER_S else "not met"))
  cost = result.get("step_cost")
  if cost:
    rows += [("step FLOPs (cost_analysis)", f"{cost['flops'] / 1e12:.2f} TFLOP"),
             ("step bytes accessed (this compiler)", f"{cost['bytes'] / 1e9:.1f} GB"),
             ("augmentation + loss + optimizer: FLOPs, bytes",
              f"{cost['overhead_share']['flops']:.2%}, {cost['overhead_share']['bytes']:.2%}")]
  return rows


def markdown(result: dict) -> str:
  lines = [f"{result['title']}", "", "| measurement | value |", "|---|---|"]
  lines += [f"| {what} | {value} |" for what, value in report_rows(result)]
  if result.get("step_cost_table"):
    lines += ["", result["step_cost_table"]]
  return "\n".join(lines) + "\n"


def write(out: pathlib.Path, result: dict) -> None:
  (out / "device_check.json").write_text(json.dumps(result, indent=1))
  (out / "device_check.md").write_text(markdown(result))


def run(out: pathlib.Path, data_dir: str, batch: int, steps: int, warmup: int, tiny: bool,
        torch_json: str = "", deadline: float = 0.0) -> dict:
  config = check_config(data_dir, batch, tiny)
  device = jax.devices()[0]
  result = {"title": f"SimCLR {config.model.name} {config.augment.size} px {config.model.dtype}, "
                     f"batch {batch} per device, {jax.device_count()} x {device.device_kind}",
            "backend": jax.default_backend(), "versions": versions(), "batch_per_device": batch,
            "steps": steps, "python": sys.version.split()[0]}
  if torch_json and pathlib.Path(torch_json).exists():
    result["torch"] = json.loads(pathlib.Path(torch_json).read_text())
  write(out, result)

  result["jax"] = throughput.measure(config, steps, warmup)
  stats = device.memory_stats() or {}
  result["peak_memory_bytes"] = stats.get("peak_bytes_in_use")
  write(out, result)

  if deadline and deadline - time.time() < 60:
    result["step_cost"] = None
    result["step_cost_skipped"] = "under a minute left before the deadline"
  else:
    image_shape = tuple(result["jax"]["image_shape"])
    cost = step_cost.step_cost(config, image_shape)
    result["step_cost"] = step_cost.to_json(cost, config, image_shape)
    result["step_cost_table"] = step_cost.markdown(cost, step_cost.title_of(config, image_shape),
                                                   config.batch_size)
  write(out, result)
  return result


def main(argv):
  del argv
  f = flags.FLAGS
  out = pathlib.Path(f.out)
  out.mkdir(parents=True, exist_ok=True)
  result = run(out, f.data_dir, f.batch, f.steps, f.warmup, f.tiny, f.torch_json, f.deadline)
  print(markdown(result))


def define_flags():
  flags.DEFINE_string("out", None, "Folder for device_check.json and device_check.md.")
  flags.DEFINE_string("data_dir", None, "ArrayRecord shards (medssl-convert) to read.")
  flags.DEFINE_string("torch_json", "", "pytorch_reference.py --json output to merge.")
  flags.DEFINE_integer("batch", 256, "Images per step per device.")
  flags.DEFINE_integer("steps", 20, "Timed steps per measurement.")
  flags.DEFINE_integer("warmup", 3, "Untimed steps first (compilation).")
  flags.DEFINE_float("deadline", 0.0, "time.time() by which to finish; 0 = none.")
  flags.DEFINE_bool("tiny", False, "CPU-sized model and views (dry run).")
  flags.mark_flags_as_required(["out", "data_dir"])


if __name__ == "__main__":
  define_flags()
  app.run(main)

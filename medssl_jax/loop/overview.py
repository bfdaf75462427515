"""What a run is, written once at its start: devices and processes, the parameter overview
(clu.parameter_overview: per-module shapes and counts) and the full config as TensorBoard
hparams and text."""
from __future__ import annotations

import jax
import ml_collections
from absl import logging
from clu import parameter_overview

from medssl_jax.loop import writers


def devices_line(mesh) -> str:
  device = jax.devices()[0]
  return (f"{mesh.devices.size} devices ({jax.local_device_count()} local, "
          f"{device.platform} {device.device_kind}), {jax.process_count()} processes")


def flat_hparams(config: ml_collections.ConfigDict) -> dict:
  """{"optim.base_lr": 0.3, ...}: TensorBoard hparams take bool/int/float/str only."""
  flat = {}

  def walk(node, prefix):
    for key, value in node.items():
      name = f"{prefix}{key}"
      if isinstance(value, ml_collections.ConfigDict):
        walk(value, name + ".")
      elif isinstance(value, (bool, int, float, str)):
        flat[name] = value
      else:
        flat[name] = str(value)
  walk(config, "")
  return flat


def describe_run(config, params, mesh, writer: writers.MetricWriter) -> None:
  devices = devices_line(mesh)
  table = parameter_overview.get_parameter_overview(params, include_stats=False)
  if jax.process_index() == 0:
    logging.info("%s / %s on %s", config.method, config.model.name, devices)
    logging.info("parameters:\n%s", table)
  writer.write_text("run/devices", devices)
  writer.write_text("run/parameters", table)
  writer.write_text("run/config", str(config))
  writer.write_hparams(flat_hparams(config))

"""Pretraining binary.

  python -m medssl_jax.cli.train --config=configs/simclr_pneumoniamnist.py --workdir=runs/simclr \
      [--config.batch_size=512 ...]

A workdir that already holds checkpoints is resumed from the latest one.
"""
import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from medssl_jax.loop import configuration
from medssl_jax.loop import pretrain
from medssl_jax.loop import sharding
from medssl_jax.loop import writers

_CONFIG = config_flags.DEFINE_config_file("config", None, "Pretraining config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and logs.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 for multi-process runs; 'auto' on Cloud "
    "TPU pods (jax reads the TPU metadata). Omit on one process, and under srun: with more than "
    "one SLURM task the processes join from the SLURM environment.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Index of this process.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  writers.quiet_library_logs()
  how = sharding.initialize_multiprocess(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  logging.info("JAX process %d/%d (set up from %s), %d local / %d global devices",
               jax.process_index(), jax.process_count(), how, jax.local_device_count(),
               jax.device_count())
  pretrain.run(_CONFIG.value, _WORKDIR.value)


def run():
  configuration.run_binary(main)


if __name__ == "__main__":
  run()

"""Export binary: a pretraining run's backbone as a standalone Orbax checkpoint + JSON.

  medssl-export --workdir=runs/simclr_pneumonia --out=exports/simclr_pneumonia [--step=250] \
      [--include_projector]

The export is read back and checked bit for bit against the checkpoint before success is
reported (see medssl_jax/weights/export.py for the format).
"""
from absl import app
from absl import flags
from absl import logging

from medssl_jax.loop import configuration
from medssl_jax.weights import export

_WORKDIR = flags.DEFINE_string("workdir", None, "Pretraining workdir to export from.")
_OUT = flags.DEFINE_string("out", None, "New directory for the export.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_INCLUDE_PROJECTOR = flags.DEFINE_bool("include_projector", False, "Also export the projector head.")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  info = export.export(_WORKDIR.value, _OUT.value, step=_STEP.value,
                       include_projector=_INCLUDE_PROJECTOR.value)
  export.check_round_trip(_WORKDIR.value, _OUT.value, info["step"])
  logging.info("read back and checked bit for bit")
  print(f"exported {info['method']} {info['architecture']} (width {info['width']}, modules "
        f"{info['modules']}) from step {info['step']} of {_WORKDIR.value} to {_OUT.value}")


def run():
  configuration.run_binary(main)


if __name__ == "__main__":
  run()

"""Export binary: a pretraining run's backbone, alone, as a standalone Orbax checkpoint + JSON
(the default), as PyTorch weights with torchvision's key names, or as a Hugging Face folder.

  medssl-export --workdir=runs/simclr_pneumonia --out=exports/simclr_pneumonia [--step=250] \
      [--include_projector]
  medssl-export --workdir=RUN --out=DIR --format=torch,safetensors    # model.pth, model.safetensors
  medssl-export --workdir=RUN --out=DIR --format=hf [--naming=timm] [--eval_dir=RUN/eval]

Every export is read back and checked bit for bit against the checkpoint before success is
reported (see medssl_jax/weights/export.py for the formats).
"""
from absl import app
from absl import flags
from absl import logging

from medssl_jax.loop import configuration
from medssl_jax.weights import export

_WORKDIR = flags.DEFINE_string("workdir", None, "Pretraining workdir to export from.")
_OUT = flags.DEFINE_string("out", None, "New directory for the export.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_INCLUDE_PROJECTOR = flags.DEFINE_bool("include_projector", False,
                                       "Also export the projector head (--format=orbax only).")
_FORMAT = flags.DEFINE_list(
    "format", ["orbax"], f"One or more of {list(export.FORMATS)}: orbax (Orbax checkpoint + backbone.json), "
    "torch (model.pth), safetensors (model.safetensors), hf (Hugging Face folder with a model card). "
    "The PyTorch formats also write config.json and medssl_backbone.py.")
_NAMING = flags.DEFINE_enum("naming", "torchvision", list(export.NAMINGS),
                            "Whose model the PyTorch weights are for: the keys are torchvision's, which "
                            "timm shares; timm also makes config.json timm's Hub config.")
_EVAL_DIR = flags.DEFINE_multi_string("eval_dir", [], "medssl-eval output folder(s) whose results.json go "
                                      "into the hf model card (default: every WORKDIR/eval* folder).")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  info = export.export(_WORKDIR.value, _OUT.value, step=_STEP.value,
                       include_projector=_INCLUDE_PROJECTOR.value, formats=_FORMAT.value,
                       naming=_NAMING.value, eval_dirs=_EVAL_DIR.value)
  export.check_round_trip(_WORKDIR.value, _OUT.value, info["step"])
  logging.info("read back and checked bit for bit")
  files = sorted({f for names in info["files"].values() for f in names})
  print(f"exported {info['method']} {info['architecture']} (width {info['width']}, modules "
        f"{info['modules']}) from step {info['step']} of {_WORKDIR.value} to {_OUT.value} "
        f"as {', '.join(info['formats'])}: {', '.join(files)}")


def run():
  configuration.run_binary(main)


if __name__ == "__main__":
  run()

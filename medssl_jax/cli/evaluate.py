"""Evaluation binary: judges the frozen backbone of a pretraining workdir.

  python -m medssl_jax.cli.evaluate --config=configs/eval/linear_probe.py \
      --config.pretrain_workdir=RUN --workdir=OUT

Writes OUT/results.json, OUT/results.md and PNG plots (see medssl_jax/evaluation/runner.py);
with --config.watch.enabled, evaluates every new checkpoint of a running pretraining workdir.
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from medssl_jax.evaluation import runner
from medssl_jax.loop import configuration
from medssl_jax.loop import writers


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  writers.quiet_library_logs()
  config = flags.FLAGS.config
  if config.watch.enabled:
    runner.watch(config, flags.FLAGS.workdir)
  else:
    runner.evaluate(config, flags.FLAGS.workdir)


def run():
  # Flags are defined here, not at import, so that a test or another binary importing this
  # module does not collide with flags of its own.
  config_flags.DEFINE_config_file("config", None, "Evaluation config file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for results.")
  flags.mark_flags_as_required(["config", "workdir"])
  configuration.run_binary(main)


if __name__ == "__main__":
  run()

"""Converter binary: writes any data set a config can open into ArrayRecord shards.

  python -m medssl_jax.cli.convert --config=configs/micle_csv.py --out=/data/cxr_shards \
      --config.data.manifest.csv=/data/cxr/manifest.csv ...

Each split (train, val, test; those the data set has) is decoded once, at the config's
data.image_size, and written with its labels and patient ids; the shards are read back and
checked record by record. Rerun the same command after an interruption: finished shards are
kept. Then train and evaluate from the shards with
  --config.data.name=array_record --config.data.dir=/data/cxr_shards
"""
from __future__ import annotations

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from medssl_jax.data import array_record
from medssl_jax.data import catalog
from medssl_jax.data import splits
from medssl_jax.loop import configuration


def convert(data, out_dir, split_names=splits.SPLITS) -> array_record.ConvertResult:
  """Opens every split of the data section `data` and converts them into `out_dir`."""
  opened = {split: catalog.open_data(data, split) for split in split_names}
  result = array_record.convert(opened, out_dir)
  logging.info("%s: wrote %d shards, kept %d finished ones", out_dir, len(result.written), len(result.kept))
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  convert(flags.FLAGS.config.data, flags.FLAGS.out, tuple(flags.FLAGS.splits))


def run():
  config_flags.DEFINE_config_file("config", None, "Pretraining config whose data to convert.",
                                  lock_config=True)
  flags.DEFINE_string("out", None, "Directory for the shards (new, or an interrupted conversion).")
  flags.DEFINE_list("splits", list(splits.SPLITS), "Splits to convert.")
  flags.mark_flags_as_required(["config", "out"])
  configuration.run_binary(main)


if __name__ == "__main__":
  run()

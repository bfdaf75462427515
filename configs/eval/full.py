"""Every evaluation on one pretraining run: linear probe, kNN, fine-tuning (with the
supervised baseline), label fractions (1/10/100%, 3 seeds), the 2-D map, and the baselines.

Command:
  python -m medssl_jax.cli.evaluate --config=configs/eval/full.py \
      --config.pretrain_workdir=runs/simclr_pneumonia --workdir=runs/simclr_pneumonia/eval_full

Add a transfer test with --config.evaluations=... plus transfer.data.* and transfer.label_map
(see configs/eval/transfer_nih.py). Writes OUT/results.json, OUT/results.md and PNG plots.
"""
import pathlib
import runpy


def get_config():
  config = runpy.run_path(str(pathlib.Path(__file__).with_name("linear_probe.py")))["get_config"]()
  config.evaluations = ("linear_probe", "knn", "finetune", "label_fractions", "embedding_2d")
  return config

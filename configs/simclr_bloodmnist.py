"""SimCLR on BloodMNIST (28 px RGB blood-cell microscopy): the rotation study's small recipe.

The t-SimCNE medical study (Nwabufo et al., 2024) reports a SimCLR linear probe on
BloodMNIST of 94.5% test accuracy with the default augmentations and 96.5% with random
rotations added. This recipe is SimCLR's default policy ("simclr": crop, flip, colour jitter,
grey, blur); `--config.augment.policy=microscopy` is the same policy with a rotation by any
angle added (the only difference; tests/test_findings_checks.py checks it).

Command (one seed, then its linear probe):
  MEDSSL_DATA_DIR=../shared/data/medmnist \
  python -m medssl_jax.cli.train --config=configs/simclr_bloodmnist.py --workdir=runs/simclr_blood \
      [--config.augment.policy=microscopy] [--config.seed=1]
  python -m medssl_jax.cli.evaluate --config=configs/eval/linear_probe.py \
      --config.pretrain_workdir=runs/simclr_blood --workdir=runs/simclr_blood/eval
The whole study (both policies x seeds 0, 1, 2, one at a time, baselines once, then the table):
  MEDSSL_DATA_DIR=../shared/data/medmnist launch/seed_study.sh runs/rotation \
      configs/simclr_bloodmnist.py "0 1 2" default rotation:--config.augment.policy=microscopy

Needs: bloodmnist.npz in $MEDSSL_DATA_DIR or --config.data.dir (downloaded when online).
Budget: 300 steps of 128 (about 3 passes over the 11,959 training images), sized so that one
run and its linear probe take about 8 minutes on 2 idle CPU cores.
Should reach / measured: see BENCHMARKS.md and docs/results.md (issue 19, item 2). 300 steps
is about 3 passes over the data, far shorter than published runs, so the absolute accuracy is
far below 94.5%; the study asks only whether rotation moves it in the paper's direction.
"""
import pathlib
import runpy


def get_config():
  # The README recipe (ResNet-18 width 1/4, small stem, 28 px, batch 128, LARS, temperature 0.1)
  # on BloodMNIST with SimCLR's own policy and a longer run.
  config = runpy.run_path(str(pathlib.Path(__file__).with_name("simclr_pneumoniamnist.py")))["get_config"]()
  config.data.name = "bloodmnist"
  config.augment.policy = "simclr"
  config.num_steps = 300
  return config

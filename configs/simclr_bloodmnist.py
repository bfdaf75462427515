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
Budget: 300 steps of 128 (about 3 passes over the 11,959 training images): 7 min 39 s for seed 0
with its probe on 2 CPU cores at load 2-4, 11-15 min per run at load 5-8.
Measured (2026-12-01, seeds 0-2, docs/results.md): linear-probe test accuracy 74.2% (95%
t-interval 72.2-76.1) with the default policy, 74.1% (70.2-78.0) with rotations: the paper's
+2 points do not show at this budget, and neither arm reaches raw pixels (82.8%; random init
69.5%). 300 steps is far shorter than published runs, so the absolute accuracy is far below 94.5%.
Beating raw pixels (issue 19, item 1; seed 0, 2026-12-02): with
--config.augment.policy=crop+flip+rotate+brightness_contrast (no colour jitter, grey or blur)
validation AUROC rises from 0.956 to 0.981 and test accuracy to 85.3% (84.2-86.5), above raw
pixels' 82.8% with intervals apart (AUROC 0.978, overlapping the pixels' 0.976). The default
stays `simclr` because it is the rotation study's default arm.
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

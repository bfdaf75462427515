"""SimCLR on BloodMNIST (28 px RGB blood-cell microscopy): the rotation study's small recipe.

The t-SimCNE medical study (Nwabufo et al., 2024) reports a SimCLR linear probe on
BloodMNIST of 94.5% test accuracy with the default augmentations and 96.5% with random
rotations added. The recipe's policy is crop, flip, a rotation by any angle and
brightness/contrast (`crop+flip+rotate+brightness_contrast`), chosen on validation over
SimCLR's default (`simclr`: crop, flip, colour jitter, grey, blur; validation AUROC 0.981 vs
0.956, seed 0): at 28 px colour separates the cell types. Each study pair below differs by
the rotation only (tests/test_findings_checks.py checks it).

Command (one seed, then its linear probe):
  MEDSSL_DATA_DIR=../shared/data/medmnist \
  python -m medssl_jax.cli.train --config=configs/simclr_bloodmnist.py --workdir=runs/simclr_blood \
      [--config.seed=1]
  python -m medssl_jax.cli.evaluate --config=configs/eval/linear_probe.py \
      --config.pretrain_workdir=runs/simclr_blood --workdir=runs/simclr_blood/eval
The rotation studies (arms x seeds 0, 1, 2, one run at a time, baselines once, then the table):
  MEDSSL_DATA_DIR=../shared/data/medmnist launch/seed_study.sh runs/rotation_tuned \
      configs/simclr_bloodmnist.py "0 1 2" norot:--config.augment.policy=crop+flip+brightness_contrast rot
  MEDSSL_DATA_DIR=../shared/data/medmnist launch/seed_study.sh runs/rotation_simclr \
      configs/simclr_bloodmnist.py "0 1 2" default:--config.augment.policy=simclr \
      rotation:--config.augment.policy=microscopy

Needs: bloodmnist.npz in $MEDSSL_DATA_DIR or --config.data.dir (downloaded when online).
Budget: 300 steps of 128 (about 3 passes over the 11,959 training images): about 5.5 min per
seed with its probe on 2 idle CPU cores, 11-15 min per run at load 5-8.
Should reach (measured 2026-12-02, seeds 0-2, BENCHMARKS.md and docs/results.md): linear-probe
test accuracy 84.7% (95% t-interval 83.0-86.4), above raw pixels (82.8%, 81.5-84.1) on every
seed and random init (69.5%); test AUROC 0.978 (0.976-0.980), level with raw pixels' 0.976.
Rotation: without it 83.5% (82.2-84.8); rotation ahead on every seed, paired difference +1.2
points (95% t-interval -1.2 to +3.7). With SimCLR's default colour policy both arms stay near
74% (74.2% vs 74.1%, 2026-12-01), below raw pixels. 300 steps is far shorter than published
runs, so the absolute accuracy is far below the paper's 94.5-96.5%.
"""
import pathlib
import runpy


def get_config():
  # The README recipe (ResNet-18 width 1/4, small stem, 28 px, batch 128, LARS, temperature 0.1)
  # on BloodMNIST with the policy chosen on validation and a longer run.
  config = runpy.run_path(str(pathlib.Path(__file__).with_name("simclr_pneumoniamnist.py")))["get_config"]()
  config.data.name = "bloodmnist"
  config.augment.policy = "crop+flip+rotate+brightness_contrast"
  config.num_steps = 300
  return config

"""SimCLR on PneumoniaMNIST (28 px), the small recipe that runs on 2 CPU cores.

Command (about 5 minutes on 2 CPU cores, followed by its linear probe):
  MEDSSL_DATA_DIR=../shared/data/medmnist \
  python -m medssl_jax.cli.train --config=configs/simclr_pneumoniamnist.py --workdir=runs/simclr_pneumonia
  python -m medssl_jax.cli.evaluate --config=configs/eval/linear_probe.py \
      --config.pretrain_workdir=runs/simclr_pneumonia --workdir=runs/simclr_pneumonia/eval

Needs: pneumoniamnist.npz in $MEDSSL_DATA_DIR or --config.data.dir (downloaded when online).
Should reach: a linear-probe test AUROC above both baselines, the same network at random
initialisation and raw pixels (issue 19, docs/results.md). Measured on 2 CPU cores (BENCHMARKS.md):
seed 0, 0.9589 (95% CI 0.943-0.973) against 0.894 (0.867-0.919) at random init and 0.927
(0.901-0.951) for raw pixels; seeds 0-2 (the label-efficiency study's 100% arm), mean 0.9534
(95% t-interval 0.941-0.966) against 0.8843 and 0.9267.
"""
from medssl_jax.loop import defaults


def get_config():
  config = defaults.pretraining()
  config.data.name = "pneumoniamnist"
  config.augment.policy = "cxr"
  config.augment.size = 28
  config.model.name = "resnet18"
  config.model.width = 0.25          # 16 channels in the first stage: CPU-sized
  config.model.projector_hidden_dim = 256
  config.batch_size = 128
  config.num_steps = 250
  config.log_every = 25
  config.checkpoint_every = 100
  config.optim.name = "lars"
  config.optim.base_lr = 1.0
  config.optim.warmup_steps = 30
  config.optim.weight_decay = 1e-6
  return config

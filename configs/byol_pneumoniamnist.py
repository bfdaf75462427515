"""BYOL on PneumoniaMNIST (28 px), a small recipe for 2 CPU cores.

Command (about 5-10 minutes on 2 CPU cores, followed by its linear probe):
  MEDSSL_DATA_DIR=../shared/data/medmnist \
  python -m medssl_jax.cli.train --config=configs/byol_pneumoniamnist.py --workdir=runs/byol_pneumonia
  python -m medssl_jax.cli.evaluate --config=configs/eval/linear_probe.py \
      --config.pretrain_workdir=runs/byol_pneumonia --workdir=runs/byol_pneumonia/eval

Needs: pneumoniamnist.npz in $MEDSSL_DATA_DIR or --config.data.dir (downloaded when online).
Should reach: no collapse (embedding_std in metrics.jsonl stays well above 0, towards
embedding_std_healthy = 1/sqrt(64)) and a linear-probe test AUROC above the same network at
random initialisation. Measured on 2 CPU cores with --config.num_steps=100 only: loss 3.2 -> 1.6,
embedding_std 0.10, test AUROC 0.914 (95% CI 0.890-0.938) against 0.894 at random
initialisation; the 250-step run is not yet measured (see BENCHMARKS.md).

Does NOT beat raw pixels (issue 19, docs/results.md): 0.914 (0.890-0.938) vs 0.927
(0.902-0.951), intervals overlapping; one seed of 100 steps, nothing tuned yet.
"""
import ml_collections

from medssl_jax.loop import defaults


def get_config():
  config = defaults.pretraining()
  config.method = "byol"
  config.data.name = "pneumoniamnist"
  config.augment.policy = "cxr"
  config.augment.size = 28
  config.model.name = "resnet18"
  config.model.width = 0.25          # 16 channels in the first stage: CPU-sized
  config.model.projector_hidden_dim = 256
  config.model.projector_dim = 64
  config.model.projector_layers = 2
  # A run of 250 steps wants a faster target than ImageNet's 0.996 (BYOL's ablation: 0.99
  # still works); tau still rises to 1 by the last step.
  config.byol = ml_collections.ConfigDict(dict(tau_base=0.99, predictor_hidden_dim=256))
  config.batch_size = 128
  config.num_steps = 250
  config.log_every = 25
  config.checkpoint_every = 100
  config.optim.name = "lars"         # skips biases and norm parameters, as BYOL's does
  config.optim.base_lr = 1.0
  config.optim.warmup_steps = 30
  config.optim.weight_decay = 1.5e-6
  return config

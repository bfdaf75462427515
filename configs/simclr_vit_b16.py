"""SimCLR with a ViT-B/16 at 224 px, global batch 1024, AdamW, cosine: the full-scale ViT recipe.

Command (on every host of a TPU pod, or every node of a GPU cluster; see launch/):
  python -m medssl_jax.cli.train --config=configs/simclr_vit_b16.py --workdir=gs://BUCKET/simclr_vit_b16 \
      --config.data.name=array_record --config.data.dir=gs://BUCKET/SHARDS

Needs: a data set stored at 224 px or larger (views are cropped and resized), e.g. ArrayRecord
shards written by medssl-convert; 16 accelerators with at least 16 GiB each for batch 1024
in bf16 (two 224 px views per image). Set num_steps to your epochs x images / 1024 (here 300
epochs of ImageNet-1k's 1.28 M images); the step-based keys below were converted from epochs
on that basis.
Hyper-parameters: the ViT SimCLR baseline of Chen, Xie and He (2021, "An Empirical Study of
Training Self-Supervised Vision Transformers", MoCo v3): AdamW, lr 1.5e-4 x batch / 256 with
40 warm-up epochs and a cosine, weight decay 0.1, a 3-layer projector 4096 -> 4096 -> 256
with BatchNorm, SimCLR's augmentations, class-token features. MoCo v3's frozen random patch
projection is not implemented here; stochastic depth stays 0 (SimCLR passes no dropout key).
Should reach: that study reports 73.9% ImageNet linear top-1 for SimCLR with ViT-B/16 after
300 epochs at batch 4096; at batch 1024 expect somewhat less. On medical data no figure has
been measured with this code; evaluate with configs/eval/full.py.
"""
from medssl_jax.loop import defaults

STEPS_PER_EPOCH = 1_281_167 // 1024  # ImageNet-1k at batch 1024; change with your data set


def get_config():
  config = defaults.pretraining()
  config.method = "simclr"
  config.simclr.temperature = 0.2
  config.augment.policy = "simclr"
  config.augment.size = 224
  config.model.name = "vit_b16"
  config.model.patch_size = 16
  config.model.pool = "cls"
  config.model.drop_path = 0.0
  config.model.dtype = "bfloat16"
  config.model.projector_layers = 3
  config.model.projector_hidden_dim = 4096
  config.model.projector_dim = 256
  config.batch_size = 1024
  config.num_steps = 300 * STEPS_PER_EPOCH
  config.log_every = 100
  config.checkpoint_every = 1000
  config.data.num_workers = 8
  config.optim.name = "adamw"
  config.optim.base_lr = 1.5e-4      # x batch / 256 = 6e-4 at batch 1024
  config.optim.lr_scaling = "linear"
  config.optim.warmup_steps = 40 * STEPS_PER_EPOCH
  config.optim.weight_decay = 0.1
  return config

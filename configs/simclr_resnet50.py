"""SimCLR with a ResNet-50 at 224 px, batch 4096, LARS, bf16: the full-scale recipe (TPU or GPU).

Command (on every host of a TPU pod, or every node of a GPU cluster; see launch/):
  python -m medssl_jax.cli.train --config=configs/simclr_resnet50.py --workdir=gs://BUCKET/simclr_r50 \
      --config.data.name=array_record --config.data.dir=gs://BUCKET/SHARDS

Needs: a data set stored at 224 px (or larger; views are cropped and resized to 224), e.g.
ArrayRecord shards written into the bucket by medssl-convert --out=gs://BUCKET/SHARDS,
at least 8 accelerators with 16 GiB each for batch 4096 in bf16.
Should reach: SimCLR's ImageNet recipe (Chen et al. 2020: 800 epochs, batch 4096, LARS with
lr 0.3 x batch/256, temperature 0.1, weight decay 1e-6) gives a 69.3% top-1 linear probe on
ImageNet; on chest X-rays, MICLe-style continued pretraining reports gains of a few AUROC
points over ImageNet initialisation. Not yet measured with this code: see BENCHMARKS.md.
"""
from medssl_jax.loop import defaults


def get_config():
  config = defaults.pretraining()
  config.augment.policy = "simclr"
  config.augment.size = 224
  config.model.name = "resnet50"
  config.model.width = 1.0
  config.model.small_stem = False
  config.model.dtype = "bfloat16"
  config.model.projector_hidden_dim = 2048
  config.model.projector_dim = 128
  config.batch_size = 4096
  config.num_steps = 100_000
  config.log_every = 100
  config.checkpoint_every = 1000
  config.data.num_workers = 8
  config.optim.name = "lars"
  config.optim.base_lr = 0.3
  config.optim.warmup_steps = 5000
  config.optim.weight_decay = 1e-6
  return config

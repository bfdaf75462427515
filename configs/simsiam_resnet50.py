"""SimSiam with a ResNet-50 at 224 px, batch 512, SGD: the full-scale recipe (TPU or GPU).

Command (on every host of a TPU pod, or every node of a GPU cluster; see launch/):
  python -m medssl_jax.cli.train --config=configs/simsiam_resnet50.py --workdir=gs://BUCKET/simsiam_r50 \
      --config.data.name=array_record --config.data.dir=gs://BUCKET/SHARDS

Needs: a data set stored at 224 px (or larger; views are cropped and resized to 224),
8 accelerators with 16 GiB each for batch 512 in bf16.
Should reach: SimSiam's ImageNet recipe (Chen & He 2021: 100 epochs, batch 512, SGD with lr
0.05 x batch/256, momentum 0.9, weight decay 1e-4, cosine decay, no warmup; 3-layer 2048-d
projector, 512-d predictor bottleneck) gives a 68.1% top-1 linear probe on ImageNet. Two
differences here: the predictor's lr follows the cosine like every other parameter (the
paper's Table 1 reports 67.7% that way; 68.1% keeps the predictor's lr fixed) and weight
decay skips biases and BatchNorm parameters. Not yet measured with this code: see BENCHMARKS.md.
"""
import ml_collections

from medssl_jax.loop import defaults

_IMAGENET_TRAIN_IMAGES = 1_281_167


def get_config():
  config = defaults.pretraining()
  config.method = "simsiam"
  config.augment.policy = "simclr"
  config.augment.size = 224
  config.model.name = "resnet50"
  config.model.width = 1.0
  config.model.small_stem = False
  config.model.dtype = "bfloat16"
  config.model.projector_hidden_dim = 2048
  config.model.projector_dim = 2048
  config.model.projector_layers = 3
  config.simsiam = ml_collections.ConfigDict(dict(predictor_hidden_dim=512))
  config.batch_size = 512
  config.num_steps = 100 * _IMAGENET_TRAIN_IMAGES // config.batch_size   # 100 epochs of ImageNet
  config.log_every = 100
  config.checkpoint_every = 2000
  config.data.num_workers = 8
  config.optim.name = "sgd"
  config.optim.base_lr = 0.05
  config.optim.lr_scaling = "linear"
  config.optim.warmup_steps = 0
  config.optim.weight_decay = 1e-4
  config.optim.momentum = 0.9
  return config

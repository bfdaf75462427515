"""BYOL with a ResNet-50 at 224 px, batch 4096, LARS, bf16: the full-scale recipe (TPU or GPU).

Command (on every host of a TPU pod, or every node of a GPU cluster; see launch/):
  python -m medssl_jax.cli.train --config=configs/byol_resnet50.py --workdir=gs://BUCKET/byol_r50 \
      --config.data.name=array_record --config.data.dir=gs://BUCKET/SHARDS

Needs: a data set stored at 224 px (or larger; views are cropped and resized to 224),
at least 16 accelerators with 16 GiB each for batch 4096 in bf16 (the online and target
networks both run forward on every step).
Should reach: BYOL's ImageNet recipe (Grill et al. 2020: 1000 epochs, batch 4096, LARS with lr
0.2 x batch/256 after 10 warmup epochs, weight decay 1.5e-6, tau_base 0.996, 4096-256
projector and predictor) gives a 74.3% top-1 linear probe on ImageNet (72.5% after 300
epochs). BYOL's asymmetric views: policy "byol_view1" (blur always) for view 1 and
"byol_view2" (blur p 0.1, solarisation p 0.2) for view 2.
Not yet measured with this code: see BENCHMARKS.md.
"""
import ml_collections

from medssl_jax.loop import defaults

_IMAGENET_TRAIN_IMAGES = 1_281_167


def get_config():
  config = defaults.pretraining()
  config.method = "byol"
  config.augment.policy = "byol_view1"
  config.augment.policy_view2 = "byol_view2"
  config.augment.size = 224
  config.model.name = "resnet50"
  config.model.width = 1.0
  config.model.small_stem = False
  config.model.dtype = "bfloat16"
  config.model.projector_hidden_dim = 4096
  config.model.projector_dim = 256
  config.model.projector_layers = 2
  config.byol = ml_collections.ConfigDict(dict(tau_base=0.996, predictor_hidden_dim=4096))
  config.batch_size = 4096
  epoch = _IMAGENET_TRAIN_IMAGES // config.batch_size
  config.num_steps = 1000 * _IMAGENET_TRAIN_IMAGES // config.batch_size   # 1000 epochs
  config.log_every = 100
  config.checkpoint_every = 1000
  config.data.num_workers = 8
  config.optim.name = "lars"         # skips biases and norm parameters, as BYOL's does
  config.optim.base_lr = 0.2
  config.optim.lr_scaling = "linear"
  config.optim.warmup_steps = 10 * epoch
  config.optim.weight_decay = 1.5e-6
  config.optim.momentum = 0.9
  config.optim.trust_coefficient = 0.001
  return config

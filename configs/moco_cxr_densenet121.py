"""MoCo-CXR (Sowrirajan et al., MIDL 2021) with its other backbone: DenseNet-121 at 224 px.

Command (MoCo-CXR's scripts ran on one GPU; on a pod see launch/):
  python -m medssl_jax.main --config=configs/moco_cxr_densenet121.py --workdir=runs/moco_cxr_d121 \
      --config.data.name=NAME --config.data.dir=DIR
  python -m medssl_jax.evaluate --config=configs/eval/linear_probe.py \
      --config.pretrain_workdir=runs/moco_cxr_d121 --workdir=runs/moco_cxr_d121/eval

Needs: CheXpert's training images as a data source; there is no "chexpert" source in
medssl_jax/data/sources.py yet, so as written this config stops at once with the list of
known data sets. DenseNet-121 has 7.0M backbone parameters (torchvision's count).

Same recipe as configs/moco_cxr_resnet18.py (read its docstring for the sources and every
difference from MoCo-CXR's runs: SGD + cosine instead of their default Adam + step decay,
random instead of ImageNet initialisation, 224 instead of 320 px), with DenseNet-121, its
1024-wide MLP head, and batch 24 (their script generator's batch for every backbone).

Published result it aims at: MoCo-CXR reports linear-probe AUC gains on CheXpert pleural
effusion over ImageNet initialisation, largest at small label fractions
(arXiv:2010.05352). Not measured with this code.
"""
import ml_collections

from medssl_jax import defaults

CHEXPERT_TRAIN_IMAGES = 223_414
EPOCHS = 20
BATCH_SIZE = 24


def get_config():
  config = defaults.pretraining()
  config.method = "moco"
  config.data.name = "chexpert"
  config.data.num_workers = 8
  config.augment.policy = "mocov2_cxr"
  config.augment.size = 224
  config.model.name = "densenet121"
  config.model.width = 1.0
  config.model.small_stem = False
  config.model.dtype = "bfloat16"
  config.model.projector_hidden_dim = 1024  # MoCo v2's head: hidden size = feature size
  config.model.projector_dim = 128
  config.batch_size = BATCH_SIZE
  config.num_steps = EPOCHS * CHEXPERT_TRAIN_IMAGES // BATCH_SIZE
  config.log_every = 100
  config.checkpoint_every = 5000
  config.moco = ml_collections.ConfigDict(dict(
      queue_size=24576,
      temperature=0.2,
      momentum=0.999,
      shuffle_bn_groups=1,
  ))
  config.optim.name = "sgd"
  config.optim.base_lr = 1e-4
  config.optim.lr_scaling = "none"
  config.optim.warmup_steps = 0
  config.optim.weight_decay = 1e-4
  config.optim.momentum = 0.9
  return config

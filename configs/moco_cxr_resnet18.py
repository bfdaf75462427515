"""MoCo-CXR (Sowrirajan et al., MIDL 2021): MoCo v2 on chest X-rays, ResNet-18 at 224 px.

Command (MoCo-CXR's scripts ran on one GPU; on a pod see launch/):
  python -m medssl_jax.cli.train --config=configs/moco_cxr_resnet18.py --workdir=runs/moco_cxr_r18 \
      --config.data.dir=CHEXPERT_DIR \
      [--config.init_from=resnet18-f37072fd.pth --config.init.input_norm=imagenet]
  python -m medssl_jax.cli.evaluate --config=configs/eval/linear_probe.py \
      --config.pretrain_workdir=runs/moco_cxr_r18 --workdir=runs/moco_cxr_r18/eval

Needs: CheXpert (CheXpert-v1.0 or -small, about 224k training radiographs) in CHEXPERT_DIR,
read by the "chexpert" layout (data/layouts.py: frontal views, uncertain labels ignored by
default). Views are resized to 224 px (MoCo-CXR used 320 px). ImageNet initialisation, as
in their headline models: a torchvision ResNet-18 weights file you already have, passed as
--config.init_from (nothing is downloaded; see weights/init_from.py), with
--config.init.input_norm=imagenet so that it sees its inputs as torchvision trained it.

Recipe, from MoCo-CXR's released scripts (stanfordmlgroup/MoCo-CXR, moco_pretraining/):
MoCo v2 with the MLP head, queue 24576, temperature 0.2, key momentum 0.999, 128-d output,
rotation up to 10 degrees + horizontal flip (policy "mocov2_cxr"), batch 16, lr 1e-4,
weight decay 1e-4, 20 epochs (r8w1n416.sh: ResNet-18 from ImageNet weights).
Differences here: SGD with momentum 0.9 and a cosine schedule (their scripts leave
main_moco.py's --optimizer at its default, Adam, and drop the lr 10x at epochs 12 and 18);
BatchNorm in the projector's hidden layer; bfloat16 compute. Without --config.init_from the
run starts from random initialisation; for that case their script generator multiplies the
lr by 5 (--config.optim.base_lr=5e-4). On their single GPU MoCo's shuffling BN is a no-op, so
shuffle_bn_groups=1 matches what they ran.

Published result it aims at: on CheXpert pleural effusion, a linear model on MoCo-CXR
representations beats one on the ImageNet-initialised network without MoCo pretraining at
every label fraction, by 0.096 AUC (95% CI 0.061-0.130) with 0.1% of the labels
(arXiv:2010.05352v1 abstract). Not measured with this code: CheXpert is not on this
project's machines. The evaluation it needs exists: configs/eval/full.py's label_fractions
on the run's CheXpert splits (multi-label AUROC per finding, pleural effusion among them).
"""
import ml_collections

from medssl_jax.loop import defaults

CHEXPERT_TRAIN_IMAGES = 223_414
EPOCHS = 20
BATCH_SIZE = 16


def get_config():
  config = defaults.pretraining()
  config.method = "moco"
  config.data.name = "chexpert"
  config.data.num_workers = 8
  config.augment.policy = "mocov2_cxr"
  config.augment.size = 224
  config.model.name = "resnet18"
  config.model.width = 1.0
  config.model.small_stem = False
  config.model.dtype = "bfloat16"
  config.model.projector_hidden_dim = 512   # MoCo v2's head: hidden size = feature size
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

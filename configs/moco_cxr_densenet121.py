"""MoCo-CXR (Sowrirajan et al., MIDL 2021) with its other backbone: DenseNet-121 at 224 px.

Command (MoCo-CXR's scripts ran on one GPU; on a pod see launch/):
  python -m medssl_jax.cli.train --config=configs/moco_cxr_densenet121.py --workdir=runs/moco_cxr_d121 \
      --config.data.dir=CHEXPERT_DIR
  python -m medssl_jax.cli.evaluate --config=configs/eval/linear_probe.py \
      --config.pretrain_workdir=runs/moco_cxr_d121 --workdir=runs/moco_cxr_d121/eval

Needs: CheXpert in CHEXPERT_DIR, read by the "chexpert" layout (see
configs/moco_cxr_resnet18.py). DenseNet-121 has 7.0M backbone parameters (torchvision's
count). It starts from random initialisation: torchvision weights import covers ResNets
only (weights/torch_weights.py), not DenseNet-121.

Same recipe as configs/moco_cxr_resnet18.py (read its docstring for the sources and every
difference from MoCo-CXR's runs: SGD + cosine instead of their default Adam + step decay,
random instead of ImageNet initialisation here, 224 instead of 320 px), with DenseNet-121, its
1024-wide MLP head, and batch 24 (their script generator's batch for every backbone).

Published result it aims at: MoCo-CXR reports linear-probe AUC gains on CheXpert pleural
effusion over ImageNet initialisation, largest at small label fractions
(arXiv:2010.05352). Not measured with this code.
"""
import pathlib
import runpy

RESNET18_RECIPE = runpy.run_path(str(pathlib.Path(__file__).with_name("moco_cxr_resnet18.py")))
BATCH_SIZE = 24


def get_config():
  config = RESNET18_RECIPE["get_config"]()
  config.model.name = "densenet121"
  config.model.projector_hidden_dim = 1024  # MoCo v2's head: hidden size = feature size
  config.batch_size = BATCH_SIZE
  config.num_steps = RESNET18_RECIPE["EPOCHS"] * RESNET18_RECIPE["CHEXPERT_TRAIN_IMAGES"] // BATCH_SIZE
  return config

"""Every pretraining config key with its default; config files in configs/ override a few.

Keeping the full key set here means `--config.key=value` works for any key on any config
file, and a typo is caught with the list of valid keys (see configuration.py).
"""
import ml_collections

from medssl_jax import methods
from medssl_jax.data import config as data_config


def pretraining() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.method = methods.DEFAULT_METHOD
  config.seed = 0
  config.batch_size = 256        # global batch of positive pairs, over all devices and processes
  config.num_steps = 1000
  config.log_every = 50
  config.checkpoint_every = 500        # steps
  config.checkpoint_every_minutes = 0.0  # also save every so many minutes (checked at log steps); 0 = off
  config.keep_checkpoints = 3
  # A NaN/inf loss, gradient or state: "stop" raises naming the step and the last good
  # checkpoint (nothing non-finite is saved); "skip_step" discards that update and counts it.
  config.nan_policy = "stop"

  # A trace of steps start_step .. start_step+num_steps-1 in WORKDIR/profile (TensorBoard's
  # profile plugin; a .perfetto trace too); start_step=0 = no profile.
  config.profile = ml_collections.ConfigDict()
  config.profile.start_step = 0
  config.profile.num_steps = 5

  # A linear probe trained on frozen backbone features of the training batches, and a kNN
  # monitor, scored every eval_every steps on the validation split (loop/online_probe.py).
  config.eval_every = 0              # steps; 0 = at the last step only (with the probe on)
  config.online_probe = ml_collections.ConfigDict()
  config.online_probe.enabled = False  # needs single-label training data
  config.online_probe.lr = 1e-3        # its own Adam; it never changes the backbone
  config.online_probe.batch_images = 32  # the first images of each global batch it trains on
  config.online_probe.eval_split = "val"
  config.online_probe.eval_images = 1024  # validation images scored (and the kNN bank's size)
  config.online_probe.knn_k = 20

  # Start from other weights (continued pretraining, staged recipes, ImageNet): see weights/init_from.py.
  # A pretraining workdir, a medssl-export directory, or a torchvision/timm .pth/.safetensors
  # file; "" = random initialisation. Where the weights came from is kept in WORKDIR/init.json.
  config.init_from = ""
  config.init = ml_collections.ConfigDict()
  config.init.step = -1          # -1 = latest checkpoint of an init_from workdir
  config.init.modules = ("backbone",)
  # The normalisation a torchvision/timm/DINO weights file was trained with, folded into its
  # first layer so that [0, 1] pixels reach it as normalised ones: none, imagenet, half.
  config.init.input_norm = "none"

  config.data = data_config.defaults()  # every data.* key: medssl_jax/data/config.py

  config.augment = ml_collections.ConfigDict()
  config.augment.policy = "simclr"
  config.augment.policy_view2 = ""   # "" -> same policy for both views
  config.augment.size = 28           # side of the augmented views fed to the network

  config.model = ml_collections.ConfigDict()
  config.model.name = "resnet18"
  config.model.width = 1.0
  config.model.small_stem = True
  config.model.dtype = "float32"     # compute dtype; parameters and optimizer state stay float32
  # Vision Transformers only (model.name = vit_*): see models/vit.py.
  config.model.patch_size = 16       # 4 suits 28-32 px images
  config.model.pool = "cls"          # "cls" token or "mean" of the patch tokens as the feature
  config.model.drop_path = 0.0       # stochastic depth rate of the last block (linear in depth)
  config.model.projector_hidden_dim = 512
  config.model.projector_dim = 128
  config.model.projector_layers = 2

  # Each method's own section (config.simclr, config.moco, ...), from the method itself.
  for section, method in methods.sections().items():
    section_defaults = method.defaults()
    if section_defaults:
      config[section] = section_defaults

  config.optim = ml_collections.ConfigDict()
  config.optim.name = "lars"
  config.optim.base_lr = 0.3         # peak lr = base_lr * batch_size / 256 with linear scaling
  config.optim.lr_scaling = "linear"
  config.optim.warmup_steps = 100
  config.optim.weight_decay = 1e-6
  config.optim.weight_decay_end = -1.0  # adamw: cosine from weight_decay to this (DINO); -1 = constant
  config.optim.momentum = 0.9
  config.optim.trust_coefficient = 0.001
  config.optim.trainable = ""        # regex on parameter paths ("projector/Dense_1/.*"); "" = all
  return config

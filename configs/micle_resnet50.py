"""MICLe with a ResNet-50 at 224 px, batch 1024, LARS, bf16: the full-scale recipe (GPU or TPU).

Command (on every host; see launch/ for pods and clusters):
  python -m medssl_jax.cli.train --config=configs/micle_resnet50.py --workdir=gs://BUCKET/micle_r50 \
      --config.data.name=array_record --config.data.dir=gs://BUCKET/SHARDS \
      --config.init_from=gs://BUCKET/simclr_r50   # optional: continue from a SimCLR run,
      #   or from ImageNet weights you have: --config.init_from=/path/resnet50.pth (torchvision)
      #   --config.init.input_norm=imagenet

Needs: a data set with patient (or case) groups, stored at 224 px or more. Today the only
registered grouped set is nih_cxr1000 (the default here), whose 64 px images make this a
smoke test of the pipeline, not a reproduction. Batch 1024 at 224 px in bf16 is sized for
8 accelerators with 16 GiB or more each (not yet measured).

What it aims at (Azizi et al. 2021, "Big Self-Supervised Models Advance Medical Image
Classification", ICCV): SimCLR on ImageNet, then further contrastive pretraining on
unlabelled medical images, then supervised fine-tuning. MICLe, the second stage with
positive pairs drawn from different images of one patient case, was applied to a private
dermatology set of multi-image cases, where the paper reports it adds to plain SimCLR
pairs (its per-model figures are not repeated here: check the paper). The whole approach improved on
supervised ImageNet pretraining by 6.7% top-1 accuracy in dermatology and by 1.1% mean AUC
on CheXpert (multi-label chest X-rays), as stated in the abstract. Those are fine-tuning
results with wider networks and the authors' own schedules; this file uses SimCLR's
published optimiser settings (LARS, lr 0.3 x batch/256, temperature 0.1, weight decay 1e-6)
and a ResNet-50 (1x), and nothing here has been measured against them yet.
"""
from medssl_jax.loop import defaults


def get_config():
  config = defaults.pretraining()
  config.method = "micle"
  config.data.name = "nih_cxr1000"   # override with a 224 px grouped data set
  config.data.pairing = "patient"
  config.data.num_workers = 8
  config.augment.policy = "micle"   # crop, flip, rotation up to 45 degrees, colour jitter 0.5
  config.augment.size = 224
  config.model.name = "resnet50"
  config.model.width = 1.0
  config.model.small_stem = False
  config.model.dtype = "bfloat16"
  config.model.projector_hidden_dim = 2048
  config.model.projector_dim = 128
  config.simclr.temperature = 0.1
  config.batch_size = 1024
  config.num_steps = 50_000          # about 230 epochs of CheXpert's 224k training images
  config.log_every = 100
  config.checkpoint_every = 1000
  config.optim.name = "lars"
  config.optim.base_lr = 0.3         # x 1024/256 = peak lr 1.2
  config.optim.warmup_steps = 2500
  config.optim.weight_decay = 1e-6
  return config

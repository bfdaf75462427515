"""t-SimCNE at full scale: ResNet-18, batch 512, 32-64 px images, the paper's three stages.

Command (stages as in configs/tsimcne_bloodmnist.py; see launch/tsimcne_bloodmnist.sh):
  python -m medssl_jax.cli.train --config=configs/tsimcne_resnet18.py:stage1 --workdir=RUN/stage1 \
      --config.data.name=NAME
  ... stage2 and stage3 with --config.init_from=RUN/stage1 and RUN/stage2

Needs: one accelerator is enough (batch 512 at 32 px).
Aims at: Böhm, Berens & Kobak (ICLR 2023) train stage 1 for 1000 epochs, stage 2 for 50 and
stage 3 for 450 on CIFAR-10 and report 2-D maps with kNN accuracy around 90%; with
BloodMNIST's 11,959 training images and batch 512 an epoch is ~23 steps, giving the step
counts below. Not yet measured with this code at this scale.
"""
from medssl_jax.loop import defaults

STAGES = ("stage1", "stage2", "stage3")
EPOCHS = {"stage1": 1000, "stage2": 50, "stage3": 450}


def get_config(stage: str = "stage1"):
  if stage not in STAGES:
    raise ValueError(f"unknown stage {stage!r}; use one of {STAGES}, as FILE.py:stage2")
  config = defaults.pretraining()
  config.method = "tsimcne"
  config.data.name = "bloodmnist"
  config.augment.policy = "simclr"
  config.augment.size = 32
  config.model.name = "resnet18"
  config.model.projector_hidden_dim = 1024
  config.model.projector_dim = 128 if stage == "stage1" else 2
  config.batch_size = 512
  steps_per_epoch = 11959 // 512
  config.num_steps = EPOCHS[stage] * steps_per_epoch
  config.checkpoint_every = 1000
  config.log_every = 100
  config.data.num_workers = 8
  config.optim.name = "sgd"
  config.optim.weight_decay = 5e-4
  config.optim.warmup_steps = 10 * steps_per_epoch if stage == "stage1" else 0
  config.optim.base_lr = 0.03 if stage != "stage3" else 0.03 / 1000
  if stage != "stage1":
    config.init.modules = ("backbone", "projector")
  if stage == "stage2":
    config.optim.trainable = "projector/Dense_1/.*"
  return config

"""Every pretraining config key with its default; config files in configs/ override a few.

Keeping the full key set here means `--config.key=value` works for any key on any config
file, and a typo is caught with the list of valid keys (see configuration.py).
"""
import ml_collections


def pretraining() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.method = "simclr"
  config.seed = 0
  config.batch_size = 256        # global batch of positive pairs, over all devices and processes
  config.num_steps = 1000
  config.log_every = 50
  config.checkpoint_every = 500        # steps
  config.checkpoint_every_minutes = 0.0  # also save every so many minutes (checked at log steps); 0 = off
  config.keep_checkpoints = 3

  # Start from other weights (continued pretraining, staged recipes, ImageNet): see transfer.py.
  # A pretraining workdir, a medssl-export directory, or a torchvision/timm .pth/.safetensors
  # file; "" = random initialisation. Where the weights came from is kept in WORKDIR/init.json.
  config.init_from = ""
  config.init = ml_collections.ConfigDict()
  config.init.step = -1          # -1 = latest checkpoint of an init_from workdir
  config.init.modules = ("backbone",)

  config.data = ml_collections.ConfigDict()
  config.data.name = "pneumoniamnist"
  config.data.dir = ""           # directory holding the data files; "" -> $MEDSSL_DATA_DIR, then the cache
  config.data.cache_dir = ""     # where downloads go; "" -> ~/.cache/medssl_jax
  config.data.train_split = "train"
  config.data.pairing = "same_image"
  config.data.num_workers = 0    # grain worker processes; 0 reads in threads of the main process
  config.data.prefetch_to_device = 2  # global batches copied to the devices ahead of the step
  # Image files (a CSV manifest, a known layout such as "chexpert"): decoded once, before
  # training, to image_size x image_size (aspect kept, then centre "crop" or black "pad").
  config.data.image_size = 0     # 0 = keep the files' size (all must then share one)
  config.data.resize = "crop"
  config.data.channels = 1
  config.data.bad_files = "stop"  # unreadable files: "stop" lists them all before training; "skip" drops them
  config.data.uncertain = "ignore"  # multi-label "-1" (CheXpert, MIMIC-CXR): ignore | zeros | ones
  config.data.frontal_only = True   # CheXpert: frontal views only
  # data.name = "csv": any CSV with a path column; the other columns are optional.
  config.data.manifest = ml_collections.ConfigDict()
  config.data.manifest.csv = ""         # path of the CSV file
  config.data.manifest.root = ""        # image paths are relative to this; "" = the CSV's folder
  config.data.manifest.path_column = "path"
  config.data.manifest.label_column = ""       # one class-id column, or
  config.data.manifest.label_columns = ("",)   # several 0/1 columns (multi-label; blank = unknown)
  config.data.manifest.label_name_column = ""
  config.data.manifest.group_column = ""       # patient / study / lesion id: MICLe pairs, patient-safe splits
  config.data.manifest.split_column = ""
  config.data.manifest.split_values = ("train", "val", "test")  # its values for our train, val, test
  # Which images form each split: "file" = as the data set ships it (split column, folders);
  # "group" = drawn by group (patient) with the seed and fractions. A split that puts one
  # group in two splits is refused, listing the groups, unless allow_leakage.
  config.data.split = ml_collections.ConfigDict()
  config.data.split.by = "file"
  config.data.split.fractions = (0.7, 0.15, 0.15)
  config.data.split.seed = 0
  config.data.split.allow_leakage = False

  config.augment = ml_collections.ConfigDict()
  config.augment.policy = "simclr"
  config.augment.policy_view2 = ""   # "" -> same policy for both views
  config.augment.size = 28           # side of the augmented views fed to the network

  config.model = ml_collections.ConfigDict()
  config.model.name = "resnet18"
  config.model.width = 1.0
  config.model.small_stem = True
  config.model.dtype = "float32"     # compute dtype; parameters and optimizer state stay float32
  config.model.projector_hidden_dim = 512
  config.model.projector_dim = 128
  config.model.projector_layers = 2

  config.simclr = ml_collections.ConfigDict()
  config.simclr.temperature = 0.1

  config.simsiam = ml_collections.ConfigDict()
  config.simsiam.predictor_hidden_dim = 0   # 0 = model.projector_dim // 4 (the paper's 2048 -> 512)

  config.byol = ml_collections.ConfigDict()
  config.byol.tau_base = 0.996              # target momentum at step 0; rises to 1 on a cosine
  config.byol.predictor_hidden_dim = 0      # 0 = model.projector_hidden_dim (the paper's 4096)

  config.moco = ml_collections.ConfigDict()
  config.moco.queue_size = 65536        # negative keys; must be >= batch_size
  config.moco.temperature = 0.2
  config.moco.momentum = 0.999          # key encoder EMA
  config.moco.shuffle_bn_groups = 8     # BN groups (MoCo: 8 GPUs x 32); must divide batch_size; 1 = global BN

  config.optim = ml_collections.ConfigDict()
  config.optim.name = "lars"
  config.optim.base_lr = 0.3         # peak lr = base_lr * batch_size / 256 with linear scaling
  config.optim.lr_scaling = "linear"
  config.optim.warmup_steps = 100
  config.optim.weight_decay = 1e-6
  config.optim.momentum = 0.9
  config.optim.trust_coefficient = 0.001
  config.optim.trainable = ""        # regex on parameter paths ("projector/Dense_1/.*"); "" = all
  return config

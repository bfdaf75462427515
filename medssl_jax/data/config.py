"""Every key of a config's data section with its default (config.data in pretraining and
evaluation configs); config files override a few. The data package reads only this section."""
import ml_collections


def defaults() -> ml_collections.ConfigDict:
  data = ml_collections.ConfigDict()
  data.name = "pneumoniamnist"
  data.dir = ""           # directory holding the data files; "" -> $MEDSSL_DATA_DIR, then the cache
  data.cache_dir = ""     # where downloads go; "" -> ~/.cache/medssl_jax
  data.train_split = "train"
  data.pairing = "same_image"
  data.num_workers = 0    # grain worker processes; 0 reads in threads of the main process
  data.prefetch_to_device = 2  # global batches copied to the devices ahead of the step
  # Image files (a CSV manifest, a known layout such as "chexpert"): decoded once, before
  # training, to image_size x image_size (aspect kept, then centre "crop" or black "pad").
  data.image_size = 0     # 0 = keep the files' size (all must then share one)
  data.resize = "crop"
  data.channels = 1
  data.bad_files = "stop"  # unreadable files: "stop" lists them all before training; "skip" drops them
  data.uncertain = "ignore"  # multi-label "-1" (CheXpert, MIMIC-CXR): ignore | zeros | ones
  data.frontal_only = True   # CheXpert: frontal views only
  # data.name = "csv": any CSV with a path column; the other columns are optional.
  data.manifest = ml_collections.ConfigDict()
  data.manifest.csv = ""         # path of the CSV file
  data.manifest.root = ""        # image paths are relative to this; "" = the CSV's folder
  data.manifest.path_column = "path"
  data.manifest.label_column = ""       # one class-id column, or
  data.manifest.label_columns = ("",)   # several 0/1 columns (multi-label; blank = unknown)
  data.manifest.label_name_column = ""
  data.manifest.group_column = ""       # patient / study / lesion id: MICLe pairs, patient-safe splits
  data.manifest.split_column = ""
  data.manifest.split_values = ("train", "val", "test")  # its values for our train, val, test
  # Which images form each split: "file" = as the data set ships it (split column, folders);
  # "group" = drawn by group (patient) with the seed and fractions. A split that puts one
  # group in two splits is refused, listing the groups, unless allow_leakage.
  data.split = ml_collections.ConfigDict()
  data.split.by = "file"
  data.split.fractions = (0.7, 0.15, 0.15)
  data.split.seed = 0
  data.split.allow_leakage = False
  # data.name = "tfds:NAME[/CONFIG][:VERSION]": a tensorflow-datasets set prepared in data.dir
  # in array_record format (tfds_source.py); read without TensorFlow.
  data.tfds = ml_collections.ConfigDict()
  data.tfds.image_key = "image"   # an Image feature of uint8
  data.tfds.label_key = "label"   # a ClassLabel feature
  data.tfds.group_key = ""        # patient / study feature (Text or int); "" = each image alone
  data.tfds.splits = ("train", "validation", "test")  # its splits (or slices) for our train, val, test
  return data


def with_defaults(data: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`data` with every key of defaults() that it lacks (configs of older workdirs)."""
  full = defaults()
  full.update(ml_collections.ConfigDict(data.to_dict()))
  return full

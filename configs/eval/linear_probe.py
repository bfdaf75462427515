"""Linear probe of a pretraining run's frozen backbone, next to the same network at random init.

Command:
  python -m medssl_jax.evaluate --config=configs/eval/linear_probe.py \
      --config.pretrain_workdir=runs/simclr_pneumonia --workdir=runs/simclr_pneumonia/eval

Needs: a pretraining workdir (any method) and its data set (same data.dir rules as training).
Writes: test accuracy and AUROC with 95% bootstrap intervals for each representation to
stdout and OUT/results.json. Regularisation is chosen on the validation split.
"""
import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.evaluations = ("linear_probe",)   # any of: linear_probe, embedding_2d
  config.pretrain_workdir = ""
  config.step = -1                  # checkpoint step; -1 = latest
  config.seed = 0                   # seed of the random-init baseline network
  config.batch_size = 256           # feature-extraction batch (memory stays flat in N)
  config.data = ml_collections.ConfigDict()
  config.data.name = ""             # "" = the data set the run was pretrained on
  config.data.dir = ""
  config.data.cache_dir = ""
  config.data.train_split = "train"
  config.data.val_split = "val"
  config.data.test_split = "test"
  config.probe = ml_collections.ConfigDict()
  config.probe.Cs = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
  config.probe.max_iter = 1000
  config.n_boot = 1000              # bootstrap resamples for the 95% intervals
  # Representations to evaluate besides the pretrained backbone, as baselines to beat.
  config.baselines = ("random_init", "raw_pixels")
  config.embedding_2d = ml_collections.ConfigDict()
  config.embedding_2d.knn_k = 15
  config.embedding_2d.max_points = 5000   # per split, for t-SNE of frozen features
  return config

"""Linear probe of a pretraining run's frozen backbone, next to the same network at random
init and raw pixels. Every key of every evaluation is here, so any can be set on the command line.

Command:
  python -m medssl_jax.cli.evaluate --config=configs/eval/linear_probe.py \
      --config.pretrain_workdir=runs/simclr_pneumonia --workdir=runs/simclr_pneumonia/eval

Needs: a pretraining workdir (any method) and its data set (same data.dir rules as training).
Writes: test accuracy and AUROC with 95% bootstrap intervals for each representation to
stdout, OUT/results.json and OUT/results.md. Regularisation is chosen on the validation split.
Add evaluations with --config.evaluations="('linear_probe','knn','finetune')", or use
configs/eval/full.py for all of them.
"""
import ml_collections

from medssl_jax.loop import defaults


def get_config():
  config = ml_collections.ConfigDict()
  # Any of: linear_probe, knn, finetune, label_fractions, transfer, embedding_2d.
  config.evaluations = ("linear_probe",)
  config.pretrain_workdir = ""
  config.step = -1                  # checkpoint step; -1 = latest
  config.seed = 0                   # seed of the random-init baseline network and of the probes
  config.batch_size = 256           # feature-extraction batch (memory stays flat in N)
  config.n_boot = 1000              # bootstrap resamples for the 95% intervals
  # Representations to evaluate besides the pretrained backbone, as baselines to beat.
  config.baselines = ("random_init", "raw_pixels")
  # Features are cached per checkpoint and split; "" = OUT/feature_cache.
  config.feature_cache = True
  config.feature_cache_dir = ""

  # The data evaluated on. name "" = the data set the run was pretrained on, with its settings
  # (dir and cache_dir may still be set here); any other name uses this whole section.
  config.data = defaults.pretraining().data
  config.data.name = ""
  config.data.dir = ""
  config.data.val_split = "val"
  config.data.test_split = "test"

  config.probe = ml_collections.ConfigDict()
  config.probe.kind = "auto"        # sklearn | jax | auto (sklearn up to sklearn_max_entries)
  # Training examples x features up to which auto uses scikit-learn: beyond, its lbfgs can take
  # minutes where the JAX probe takes seconds (BENCHMARKS.md, issue 20).
  config.probe.sklearn_max_entries = 500_000
  config.probe.Cs = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
  config.probe.max_iter = 1000
  # Both solvers stop when every gradient entry of the mean objective is below tol (1e-4 is
  # scikit-learn's default, so the two solvers stop by the same rule).
  config.probe.tol = 1e-4
  # Raw pixels wider than this go to the probe as their top principal components (of the
  # training split): 28x28 RGB = 2352 -> 256 keeps 97% of BloodMNIST's variance and its test
  # AUROC (0.976; 0.974 on all pixels), fitted in under a minute where all 2352 did not finish
  # in 10 (BENCHMARKS.md, issue 20). 0 = all pixels as they are.
  config.probe.raw_pixels_components = 256

  config.knn = ml_collections.ConfigDict()
  config.knn.k = 20
  config.knn.temperature = 0.07     # similarity-weighted vote, weight exp(cos / temperature)

  config.finetune = ml_collections.ConfigDict()
  config.finetune.steps = 300
  config.finetune.batch_size = 64
  config.finetune.learning_rate = 1e-3
  config.finetune.weight_decay = 1e-4
  config.finetune.policy = "crop+flip"
  config.finetune.eval_every = 50   # validation AUROC picks the reported checkpoint

  config.label_fractions = ml_collections.ConfigDict()
  config.label_fractions.fractions = (0.01, 0.1, 1.0)
  config.label_fractions.seeds = (0, 1, 2)
  config.label_fractions.protocols = ("linear_probe",)   # and/or "finetune"
  config.label_fractions.metric = "auroc"

  # A probe fitted on this run's data, applied unchanged to another data set.
  config.transfer = ml_collections.ConfigDict()
  config.transfer.data = defaults.pretraining().data
  config.transfer.data.name = ""
  config.transfer.split = "test"
  # (target class name, probe class name) pairs; target classes not listed are left out.
  config.transfer.label_map = (("", ""),)

  config.embedding_2d = ml_collections.ConfigDict()
  config.embedding_2d.knn_k = 15
  config.embedding_2d.max_points = 5000   # per split, for t-SNE of frozen features

  # Keep evaluating each new checkpoint of a running pretraining workdir (evaluate.watch).
  config.watch = ml_collections.ConfigDict()
  config.watch.enabled = False
  config.watch.poll_seconds = 60.0
  config.watch.timeout_minutes = 60.0
  return config

"""A 2-D map of every image of a pretraining run's data set, as a scatter plot coloured by class.

For t-SimCNE runs (model.projector_dim == 2) the map is the network's own 2-D output; for
any other run it is t-SNE of the frozen backbone features (a seeded subsample per split).
Command:
  python -m medssl_jax.cli.evaluate --config=configs/eval/embedding_2d.py \
      --config.pretrain_workdir=runs/tsimcne_blood/stage3 --workdir=runs/tsimcne_blood/eval
Writes OUT/embedding_2d.npz (points, labels, split), OUT/embedding_2d.png and, in
OUT/results.json, the kNN accuracy (train points -> test points) and the test silhouette with
95% bootstrap intervals, and the same on the validation split (val_*: choose settings on
these, not on the test figures). Each
of config.baselines (random init, raw pixels) gets a t-SNE map scored the same way
(OUT/embedding_2d_NAME.png): the maps a learned one must beat. t-SNE of 10,000 points takes
minutes on 2 CPU cores; --config.baselines="()" skips them.
"""
import pathlib
import runpy


def get_config():
  config = runpy.run_path(str(pathlib.Path(__file__).with_name("linear_probe.py")))["get_config"]()
  config.evaluations = ("embedding_2d",)
  return config

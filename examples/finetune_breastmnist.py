"""Fine-tune an exported medssl-jax backbone on BreastMNIST with plain Flax and optax.

  medssl-export --workdir=runs/simclr_pneumonia --out=exports/simclr_pneumonia
  python examples/finetune_breastmnist.py --backbone=exports/simclr_pneumonia \
      --data_dir=../shared/data/medmnist [--epochs=20]

Everything the backbone needs comes from `api.load_backbone` (a pretraining workdir works too).
"""
import argparse

import flax.linen as nn
import jax
import numpy as np
import optax
from sklearn.metrics import roc_auc_score

from medssl_jax.data import catalog
from medssl_jax.weights import api


class Classifier(nn.Module):
  backbone: nn.Module
  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool):
    return nn.Dense(self.num_classes, name="head")(self.backbone(x, train=train))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--backbone", required=True, help="medssl-export directory or pretraining workdir")
  parser.add_argument("--data_dir", default=None, help="folder holding breastmnist.npz")
  parser.add_argument("--epochs", type=int, default=20)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--lr", type=float, default=1e-3)
  args = parser.parse_args()

  pretrained = api.load_backbone(args.backbone)
  train_set, test_set = (catalog.open_source("breastmnist", split, data_dir=args.data_dir)
                         for split in ("train", "test"))
  model = Classifier(pretrained.module, train_set.num_classes)
  images = pretrained.preprocess(train_set.images[:2])
  variables = model.init(jax.random.key(0), images, train=False)
  # Start the backbone from the pretrained weights; only the head is new.
  params = {**variables["params"], "backbone": pretrained.variables["params"]}
  batch_stats = {"backbone": pretrained.variables["batch_stats"]}
  optimizer = optax.adamw(args.lr, weight_decay=1e-4)
  opt_state = optimizer.init(params)

  @jax.jit
  def train_step(params, batch_stats, opt_state, images, labels):
    def loss_fn(params):
      logits, updates = model.apply({"params": params, "batch_stats": batch_stats},
                                    pretrained.preprocess(images), train=True, mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, updates["batch_stats"]
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  @jax.jit
  def predict(params, batch_stats, images):
    logits = model.apply({"params": params, "batch_stats": batch_stats},
                         pretrained.preprocess(images), train=False)
    return jax.nn.softmax(logits)

  rng = np.random.default_rng(0)
  steps_per_epoch = len(train_set) // args.batch  # drop the remainder: one compiled shape
  for epoch in range(1, args.epochs + 1):
    order = rng.permutation(len(train_set))
    for i in range(steps_per_epoch):
      index = order[i * args.batch:(i + 1) * args.batch]
      params, batch_stats, opt_state, loss = train_step(
          params, batch_stats, opt_state, train_set.images[index], train_set.labels[index].astype(np.int32))
    print(f"epoch {epoch}/{args.epochs}: train loss {float(loss):.4f}")

  probabilities = np.concatenate([np.asarray(predict(params, batch_stats, test_set.images[i:i + 256]))
                                  for i in range(0, len(test_set), 256)])
  accuracy = float(np.mean(probabilities.argmax(1) == test_set.labels))
  auroc = roc_auc_score(test_set.labels, probabilities[:, 1])
  print(f"BreastMNIST test ({len(test_set)} images): accuracy {accuracy:.3f}, AUROC {auroc:.3f}")


if __name__ == "__main__":
  main()

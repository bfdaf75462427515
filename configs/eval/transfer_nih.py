"""Transfer without retraining: probes fitted on PneumoniaMNIST features, applied unchanged to
the NIH chest X-rays of nih_cxr1000 (normal -> normal, abnormal -> pneumonia), next to the
linear probe on PneumoniaMNIST itself.

Command:
  python -m medssl_jax.cli.evaluate --config=configs/eval/transfer_nih.py \
      --config.pretrain_workdir=runs/simclr_pneumonia \
      --config.transfer.data.dir=../shared/data/nih_cxr1000 --workdir=runs/simclr_pneumonia/eval_nih

Needs: a run pretrained on pneumoniamnist (grey 28 px) and nih_cxr1000 (64 px PNGs, decoded
to 28 px here). "abnormal" covers every NIH finding, not only pneumonia, so this measures
how far a pneumonia-vs-normal probe carries to a harder, broader task on another source.
"""
import pathlib
import runpy


def get_config():
  config = runpy.run_path(str(pathlib.Path(__file__).with_name("linear_probe.py")))["get_config"]()
  config.evaluations = ("linear_probe", "transfer")
  config.transfer.data.name = "nih_cxr1000"
  config.transfer.data.image_size = 28
  # Nothing is fitted on the target set, so its shipped (patient-leaky) split does no harm here.
  config.transfer.data.split.allow_leakage = True
  config.transfer.split = "test"
  config.transfer.label_map = (("normal", "normal"), ("abnormal", "pneumonia"))
  return config

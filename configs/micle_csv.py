"""MICLe on your own chest X-rays listed in a CSV: no code, only this config and flags.

The CSV needs a path column (relative to manifest.root, or absolute) and, for MICLe, a
patient column; a label column and a split column are optional (without a split column, set
data.split.by=group to draw a patient-disjoint split). PNG, JPEG and DICOM files of any size
and bit depth are decoded once, before training, to data.image_size.

Command (column names are examples; give yours):
  python -m medssl_jax.cli.train --config=configs/micle_csv.py --workdir=runs/micle_csv \
      --config.data.manifest.csv=/data/cxr/manifest.csv --config.data.manifest.path_column=file \
      --config.data.manifest.group_column=patient --config.data.manifest.label_column=finding \
      --config.data.manifest.split_column=fold \
      --config.data.manifest.split_values="('train','valid','test')"
  python -m medssl_jax.cli.evaluate --config=configs/eval/linear_probe.py \
      --config.pretrain_workdir=runs/micle_csv --workdir=runs/micle_csv/eval

Needs: the CSV and its images. A split that puts one patient in two splits is refused with
the list of patients (set data.split.by=group, or data.split.allow_leakage=True knowingly);
unreadable images are all listed before training starts (data.bad_files=skip drops them).
Should reach: on nih_cxr1000 written as such a CSV, the same as configs/micle_nih_cxr.py.
"""
import pathlib
import runpy


def get_config():
  config = runpy.run_path(str(pathlib.Path(__file__).with_name("micle_nih_cxr.py")))["get_config"]()
  config.data.name = "csv"
  config.data.image_size = 64        # stored size: every image is resized to 64 x 64 once
  config.data.resize = "crop"        # aspect kept, centre crop ("pad" keeps the whole image)
  config.data.channels = 1
  config.data.split.by = "file"      # the CSV's split column; "group" draws one by patient
  return config

"""MICLe pretraining and the evaluation binary on a user's CSV manifest, with no code: only
the command lines a user would type, on real NIH chest X-rays listed under their own column
names."""
import csv
import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def _write_manifest(nih_dir: pathlib.Path, path: pathlib.Path) -> None:
  """nih_cxr1000's index.csv rewritten as a hospital might export it: other column names,
  absolute paths, and the shipped (patient-leaky) folds."""
  with open(nih_dir / "index.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["file", "finding", "finding_name", "patient", "fold"])
    for r in rows:
      writer.writerow([str(nih_dir / r["relpath"]), r["label"], r["label_name"], r["patient_id"], r["split"]])


def _run(args, timeout=600):
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=timeout)


def test_micle_and_evaluation_on_a_csv_manifest_from_the_command_line(shared_data, tmp_path):
  manifest = tmp_path / "export.csv"
  _write_manifest(shared_data / "nih_cxr1000", manifest)
  data_flags = [f"--config.data.manifest.csv={manifest}", "--config.data.manifest.path_column=file",
                "--config.data.manifest.label_column=finding",
                "--config.data.manifest.label_name_column=finding_name",
                "--config.data.manifest.group_column=patient", "--config.data.manifest.split_column=fold",
                "--config.data.manifest.split_values=('train','valid','test')",
                "--config.data.image_size=32"]
  tiny = ["--config.model.width=0.0625", "--config.model.projector_hidden_dim=32",
          "--config.model.projector_dim=16", "--config.batch_size=16", "--config.num_steps=2",
          "--config.log_every=1", "--config.checkpoint_every=2", "--config.augment.size=32"]
  workdir = tmp_path / "run"
  train = (["medssl_jax.cli.train", "--config=configs/micle_csv.py", f"--workdir={workdir}"]
           + data_flags + tiny)
  # The folds as exported share 30 patients (refused: tests/test_splits.py), so split by
  # patient: MICLe trains, pairing two images of one patient.
  trained = _run(train + ["--config.data.split.by=group"])
  assert trained.returncode == 0, trained.stderr[-3000:]
  log = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [line["step"] for line in log] == [1, 2]
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["method"] == "micle" and saved["data"]["pairing"] == "patient"
  assert saved["data"]["manifest"]["group_column"] == "patient"
  # The evaluation binary reads the data section from the run: no data flags needed.
  out = tmp_path / "eval"
  evaluated = _run(["medssl_jax.cli.evaluate", "--config=configs/eval/linear_probe.py",
                    f"--config.pretrain_workdir={workdir}", f"--workdir={out}",
                    "--config.evaluations=('linear_probe','knn')", "--config.baselines=()",
                    "--config.n_boot=50", "--config.probe.Cs=(1.0,)"])
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  results = json.loads((out / "results.json").read_text())
  assert results["method"] == "micle" and results["step"] == 2
  # The recipe's patient-disjoint 60/20/20 split of 1000 images: about 200 test images.
  assert 100 < results["linear_probe"]["pretrained"]["n"] < 300
  assert results["knn"]["pretrained"]["n"] == results["linear_probe"]["pretrained"]["n"]
  # The intervals resample patients, not images (a patient has several test images).
  probe, knn = results["linear_probe"]["pretrained"], results["knn"]["pretrained"]
  assert 5 < probe["ci_groups"] == knn["ci_groups"] < probe["n"]
  report = (out / "results.md").read_text()
  assert "## kNN" in report and f"resample the test split's {probe['ci_groups']} patients" in report

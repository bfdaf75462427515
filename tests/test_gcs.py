"""Runs that live in a bucket, against a local GCS emulator (tests/gcs_emulator.py says what
the emulator does not cover): training killed with SIGKILL and resumed in gs://, a profile,
evaluation, export and init_from through the bucket, ArrayRecord shards and a CSV manifest whose images
are in the bucket; and no local folder named "gs:" anywhere afterwards."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import gcs_emulator
import jax
import numpy as np
import pytest
from etils import epath

from medssl_jax.data import array_record
from medssl_jax.data import catalog
from medssl_jax.evaluation import runner
from medssl_jax.loop import checkpointing
from medssl_jax.loop import configuration
from medssl_jax.loop import pretrain
from medssl_jax.loop import writers

import conftest
import synthetic_data
from conftest import REPO_ROOT

TINY = ["--config.model.width=0.0625", "--config.model.projector_hidden_dim=32",
        "--config.model.projector_dim=16", "--config.batch_size=16", "--config.num_steps=8",
        "--config.log_every=1", "--config.checkpoint_every=2", "--config.optim.warmup_steps=2"]


def _train_command(workdir, data_dir):
  config = REPO_ROOT / "configs" / "simclr_pneumoniamnist.py"
  return [sys.executable, "-m", "medssl_jax.cli.train", f"--config={config}", f"--workdir={workdir}",
          f"--config.data.dir={data_dir}", *TINY]


def _no_local_gs_folder(*roots):
  for root in roots:
    found = [p for p in pathlib.Path(root).rglob("gs:*")]
    assert not found, f"local paths named like a bucket: {found[:5]}"
  assert not pathlib.Path("gs:").exists()


@pytest.fixture
def bucket_with_data(gcs_bucket, medmnist_dir):
  gcs_emulator.upload(medmnist_dir / "pneumoniamnist.npz", f"{gcs_bucket}/medmnist/pneumoniamnist.npz")
  return gcs_bucket


def test_training_in_a_bucket_survives_sigkill_and_matches_local(bucket_with_data, medmnist_dir,
                                                                 tmp_path):
  bucket = bucket_with_data
  env = dict(os.environ, XLA_FLAGS=conftest.xla_flags(1))
  workdir = f"{bucket}/run"
  process = subprocess.Popen(_train_command(workdir, f"{bucket}/medmnist"), cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  metrics = epath.Path(workdir) / "metrics.jsonl"
  deadline = time.monotonic() + 300
  # Killed once a checkpoint is committed and the run has gone on (it may be mid-save).
  while not (checkpointing.checkpoint_steps(workdir) and metrics.exists()
             and metrics.read_text().count("\n") >= 3):
    assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
    time.sleep(0.3)
  process.send_signal(signal.SIGKILL)  # no chance to save: resume from what was committed
  process.wait(timeout=60)

  resumed = subprocess.run(_train_command(workdir, f"{bucket}/medmnist"), cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from step" in resumed.stderr

  local = subprocess.run(_train_command(tmp_path / "local", medmnist_dir), cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
  assert local.returncode == 0, local.stderr[-3000:]
  _, expected, _ = checkpointing.restore_variables(tmp_path / "local", 8)
  _, actual, _ = checkpointing.restore_variables(workdir, 8)
  jax.tree_util.tree_map(np.testing.assert_array_equal, expected, actual)
  for name in ("config.json", "metrics.jsonl"):
    assert (epath.Path(workdir) / name).is_file()
  assert list((epath.Path(workdir) / "tensorboard").iterdir()), "no TensorBoard events in the bucket"
  steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
  assert steps[-1] == 8
  _no_local_gs_folder(tmp_path, REPO_ROOT)


def test_evaluate_export_and_init_from_through_the_bucket(bucket_with_data, tiny_config, tmp_path):
  bucket = bucket_with_data
  config = tiny_config
  config.data.dir = f"{bucket}/medmnist"
  config.num_steps, config.checkpoint_every = 2, 2
  config.profile.start_step, config.profile.num_steps = 2, 1  # jax.profiler writes local files only
  pretrain.run(config, f"{bucket}/run")
  profile = epath.Path(f"{bucket}/run/profile")
  for pattern in ("*.xplane.pb", "perfetto_trace.json.gz"):
    traces = list(profile.glob(f"plugins/profile/*/{pattern}"))  # no ** on buckets
    assert traces and all(t.stat().length > 0 for t in traces), (pattern, list(profile.glob("*/*/*/*")))

  eval_config = configuration.load_config_file(str(REPO_ROOT / "configs" / "eval" / "linear_probe.py"))
  eval_config.pretrain_workdir = f"{bucket}/run"
  eval_config.baselines, eval_config.n_boot, eval_config.probe.Cs = (), 20, (1.0,)
  results = runner.evaluate(eval_config, f"{bucket}/eval")
  out = epath.Path(f"{bucket}/eval")
  assert json.loads((out / "results.json").read_text())["step"] == 2
  assert "Linear probe" in (out / "results.md").read_text()
  assert len(list((out / "feature_cache").glob("*.npy"))) == 3  # train, val, test features
  assert 0.0 <= results["linear_probe"]["pretrained"]["auroc"] <= 1.0

  exported = subprocess.run(
      [sys.executable, "-m", "medssl_jax.cli.export", f"--workdir={bucket}/run",
       f"--out={bucket}/export"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
  assert exported.returncode == 0, exported.stderr[-3000:]

  config.init_from, config.num_steps = f"{bucket}/export", 1
  pretrain.run(config, f"{bucket}/from_export")
  record = json.loads(epath.Path(f"{bucket}/from_export/init.json").read_text())
  assert record["kind"] == "export" and record["copied"]
  _no_local_gs_folder(tmp_path, REPO_ROOT)


def test_array_record_shards_and_a_csv_of_images_in_the_bucket(gcs_bucket, shared_data,
                                                               synthetic_config, tmp_path):
  # Shards converted straight into the bucket, then trained from. The config keeps
  # synthetic_config's shapes and schedule: its compiled step is other tests' own.
  original = synthetic_data.SyntheticSource("train")
  array_record.convert({"train": original}, f"{gcs_bucket}/shards")
  config = synthetic_config
  config.data.name, config.data.dir = "array_record", f"{gcs_bucket}/shards"
  source = catalog.open_data(config.data, "train")
  for i in (0, 5, len(original) - 1):
    np.testing.assert_array_equal(source[i]["image"], original[i]["image"])
  pretrain.run(config, tmp_path / "from_shards")

  # A hospital-style CSV in the bucket listing images in the bucket (relative paths).
  rows = [line.split(",") for line in (shared_data / "nih_cxr1000" / "index.csv").read_text().splitlines()]
  header, rows = rows[0], rows[1:41]
  column = header.index("relpath")
  lines = ["path,label,patient"]
  for row in rows:
    gcs_emulator.upload(shared_data / "nih_cxr1000" / row[column], f"{gcs_bucket}/images/{row[column]}")
    lines.append(f"images/{row[column]},{row[header.index('label')]},{row[header.index('patient_id')]}")
  epath.Path(f"{gcs_bucket}/manifest.csv").write_text("\n".join(lines) + "\n")
  config = synthetic_config
  config.data.name, config.data.dir = "csv", ""
  config.data.manifest.csv = f"{gcs_bucket}/manifest.csv"
  config.data.manifest.label_column, config.data.manifest.group_column = "label", "patient"
  config.data.image_size, config.data.split.by = 28, "group"
  config.init_from = ""
  pretrain.run(config, tmp_path / "from_csv")
  assert checkpointing.checkpoint_steps(tmp_path / "from_csv")[-1] == config.num_steps
  _no_local_gs_folder(tmp_path, REPO_ROOT)


def test_a_missing_bucket_or_object_fails_at_once_in_one_line(gcs_bucket, medmnist_dir, tmp_path):
  missing_bucket = subprocess.run(
      _train_command("gs://no-such-bucket-medssl/run", medmnist_dir), cwd=tmp_path,
      capture_output=True, text=True, timeout=120)
  assert missing_bucket.returncode == 2, missing_bucket.stderr[-2000:]
  last = missing_bucket.stderr.strip().splitlines()[-1]
  assert last.startswith("error: gs://no-such-bucket-medssl/run: bucket gs://no-such-bucket-medssl "
                         "does not exist"), last
  assert "Traceback" not in missing_bucket.stderr

  missing_object = subprocess.run(
      _train_command(f"{gcs_bucket}/run", medmnist_dir)
      + [f"--config.init_from={gcs_bucket}/no_such_run"], cwd=tmp_path,
      capture_output=True, text=True, timeout=300)
  assert missing_object.returncode == 2, missing_object.stderr[-2000:]
  last = missing_object.stderr.strip().splitlines()[-1]
  assert f"{gcs_bucket}/no_such_run/config.json not found" in last, last
  assert "Traceback" not in missing_object.stderr
  assert not checkpointing.checkpoint_steps(f"{gcs_bucket}/run")
  _no_local_gs_folder(tmp_path, REPO_ROOT)


def test_missing_credentials_fail_before_training_in_one_line(medmnist_dir, tmp_path):
  """No emulator here: as on a machine where nobody ran `gcloud auth application-default login`."""
  bare = {k: v for k, v in os.environ.items()
          if k not in gcs_emulator.client_environment("") and k != "GOOGLE_APPLICATION_CREDENTIALS"}
  no_credentials = dict(bare, HOME=str(tmp_path), CLOUDSDK_CONFIG=str(tmp_path / "gcloud"),
                        NO_GCE_CHECK="True")  # not a Google Cloud VM: no metadata server to ask
  a_bad_key_file = dict(bare, GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "missing-key.json"))
  for env in (no_credentials, a_bad_key_file):
    result = subprocess.run(_train_command("gs://some-bucket/run", medmnist_dir), cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: gs://some-bucket/run: no Google Cloud credentials"), last
    assert "GOOGLE_APPLICATION_CREDENTIALS" in last and "Traceback" not in result.stderr
  _no_local_gs_folder(tmp_path)


def test_storage_lost_mid_run_stops_in_one_line_and_the_last_checkpoint_resumes(
    gcs_emulator, gcs_bucket, medmnist_dir, tmp_path):
  """The emulator is stopped after the first checkpoint: the next save cannot reach the
  bucket, and the run must stop with one line, not hang in retries; with the storage back,
  the same command resumes from the committed checkpoint."""
  workdir = f"{gcs_bucket}/run"
  # Two tensorstore retries instead of eight, and a 60 s save deadline instead of 15 minutes,
  # keep the test short; the paths are the same.
  env = dict(os.environ, XLA_FLAGS=conftest.xla_flags(1), MEDSSL_STORAGE_RETRIES="2",
             MEDSSL_STORAGE_TIMEOUT_S="60")
  command = _train_command(workdir, medmnist_dir) + [
      "--config.num_steps=400", "--config.log_every=1000", "--config.checkpoint_every=10"]
  process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 300
  while not checkpointing.checkpoint_steps(workdir):
    assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-3000:]
    time.sleep(0.2)
  gcs_emulator.stop()
  try:
    started = time.monotonic()
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 2, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot write {workdir}/checkpoints"), last
    assert "check the bucket, the network and the credentials" in last, last
    assert "last committed checkpoint (step 10) is intact" in last, last
    print(f"stopped {time.monotonic() - started:.0f} s after the storage went away")
  finally:
    if process.poll() is None:
      process.kill()
    gcs_emulator.start()

  resumed = subprocess.run(command[:-3] + ["--config.num_steps=12", "--config.checkpoint_every=10"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from step 10" in resumed.stderr
  assert checkpointing.checkpoint_steps(workdir)[-1] == 12
  _no_local_gs_folder(tmp_path)


def test_a_tfds_set_prepared_into_the_bucket_trains_and_evaluates_by_name(
    gcs_bucket, medmnist_dir, tiny_config, tmp_path):
  import tfds_fixture  # pylint: disable=g-import-not-at-top
  tfds_fixture.build(tmp_path / "tfds", medmnist_dir)
  gcs_emulator.upload(tmp_path / "tfds", f"{gcs_bucket}/tfds")
  config = tiny_config  # its shapes and schedule: the compiled step is other tests' own
  config.data.name, config.data.dir = f"tfds:{tfds_fixture.NAME}", f"{gcs_bucket}/tfds"
  pretrain.run(config, f"{gcs_bucket}/run")
  eval_config = configuration.load_config_file(str(REPO_ROOT / "configs" / "eval" / "linear_probe.py"))
  eval_config.pretrain_workdir = f"{gcs_bucket}/run"
  eval_config.probe.Cs, eval_config.n_boot, eval_config.baselines = (1.0,), 20, ()
  results = runner.evaluate(eval_config, f"{gcs_bucket}/eval")
  assert results["data"] == f"tfds:{tfds_fixture.NAME}" and results["step"] == config.num_steps
  assert results["linear_probe"]["pretrained"]["n"] == tfds_fixture.SIZES["test"]
  assert "tensorflow" not in sys.modules
  _no_local_gs_folder(tmp_path, REPO_ROOT)



def test_closed_tensorboard_writer_in_a_bucket_does_not_upload_again(gcs_bucket):
  """tensorboardX re-uploads a gs:// event file when it is garbage-collected; after close()
  that would retry for 2 minutes at exit if the bucket is gone."""
  writer = writers.MetricWriter(f"{gcs_bucket}/w")
  writer.write_scalars(1, {"loss": 1.0})
  event_files = writers._bucket_event_files(writer._tensorboard)  # pylint: disable=protected-access
  assert len(event_files) == 1
  writer.close()
  assert list(epath.Path(f"{gcs_bucket}/w/tensorboard").iterdir())  # closing uploaded it

  def no_upload(**_):
    raise AssertionError("uploaded again after close()")
  event_files[0].blob.upload_from_string = no_upload
  event_files[0].__del__()  # what garbage collection at exit calls

"""A save that hangs inside a library stops the process with one line once the storage
deadline passes (tests/test_gcs.py stops a real emulator mid-run)."""
import os
import subprocess
import sys

HANGING_SAVE = """
import time
from medssl_jax.loop import storage
with storage.deadline("gs://bucket/run/checkpoints", last_committed=3):
  time.sleep(60)
print("not reached")
"""


def test_a_hung_save_stops_with_one_line_after_the_deadline():
  env = dict(os.environ, MEDSSL_STORAGE_TIMEOUT_S="1")
  result = subprocess.run([sys.executable, "-c", HANGING_SAVE], env=env, capture_output=True,
                          text=True, timeout=30)
  assert result.returncode == 2
  assert "not reached" not in result.stdout
  assert result.stderr.strip().splitlines()[-1] == (
      "error: cannot write gs://bucket/run/checkpoints: no answer from the storage within 1 s; "
      "check the bucket, the network and the credentials; the last committed checkpoint (step 3) "
      "is intact: rerun the same command to resume from it")


def test_a_save_within_the_deadline_is_left_alone():
  env = dict(os.environ, MEDSSL_STORAGE_TIMEOUT_S="5")
  quick = HANGING_SAVE.replace("time.sleep(60)", "time.sleep(0.1)")
  result = subprocess.run([sys.executable, "-c", quick], env=env, capture_output=True, text=True,
                          timeout=30)
  assert result.returncode == 0 and "not reached" in result.stdout

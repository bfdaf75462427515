"""When the workdir's storage fails mid-run: bounded retries, then one line that says what
happened and that the last committed checkpoint is intact.

A bucket that becomes unreachable, or a disk that fills up, must stop a run within minutes
with a message, never leave it hanging: tensorstore (Orbax's array writer) retries a failed
Cloud Storage request 32 times up to 32 s apart by default, about 15 minutes per request,
while the save's other threads wait on it. Here its retries are bounded (gcsfs, which
writes the small files, gives up after 6 tries, about 30 s).
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import threading

from absl import logging

from medssl_jax import errors
from medssl_jax import paths

# Retries of one Cloud Storage request by tensorstore: 1 + 2 + 4 + 8 + 16 + 32 s ... about
# 2 minutes in all with the default 8, long enough for a transient outage.
RETRIES_ENV = "MEDSSL_STORAGE_RETRIES"
DEFAULT_RETRIES = 8
# Whatever a library does inside a save (some steps retry for minutes, some wait on others),
# a save or a wait for one that has not finished after this long stops the run.
TIMEOUT_ENV = "MEDSSL_STORAGE_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 900


class StorageError(errors.UserError):
  """The workdir's storage failed: full, unreachable, or refusing writes."""


def bound_tensorstore_retries() -> None:
  """Makes every tensorstore context Orbax creates give up on GCS after the bounded retries.

  Orbax builds its contexts from module-level dicts (tensorstore_utils.get_ts_context) and
  offers no option for this, so the resource is added to those dicts.
  """
  from orbax.checkpoint._src.serialization import tensorstore_utils  # pylint: disable=g-import-not-at-top
  retries = {"max_retries": int(os.environ.get(RETRIES_ENV, DEFAULT_RETRIES)),
             "initial_delay": "1s", "max_delay": "32s"}
  for context in (tensorstore_utils._BASE_TS_CONTEXT,  # pylint: disable=protected-access
                  tensorstore_utils._DEFAULT_OCDBT_TS_CONTEXT):  # pylint: disable=protected-access
    context["gcs_request_retries"] = retries


def _is_disk_full(error: BaseException) -> bool:
  while error is not None:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
      return True
    if "No space left on device" in str(error) or "ENOSPC" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


def _megabytes(directory) -> float:
  total = sum(os.path.getsize(os.path.join(root, name))
              for root, _, names in os.walk(directory) for name in names)
  return total / 2**20


def _disk_full_message(target, checkpoint_dir) -> str:
  local = os.fspath(target)
  while not os.path.exists(local):
    local = os.path.dirname(local)
  free = shutil.disk_usage(local).free / 2**20
  needed = _megabytes(checkpoint_dir) if checkpoint_dir and os.path.isdir(checkpoint_dir) else None
  size = f"a checkpoint of this run takes {needed:.1f} MB; " if needed else ""
  return (f"no space left on the device writing {target} ({free:.1f} MB free): {size}free space "
          "there, or use another --workdir")


def exit_now(message: str) -> None:
  """Prints `message` as the last line and exits 2 at once: exit hooks (TensorBoard's final
  flush) would retry the failed storage for minutes, and a failed save's threads print
  their own tracebacks, so they are silenced first."""
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  original_stderr = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 1)
  os.dup2(devnull, 2)
  os.write(original_stderr, (message + "\n").encode())
  os._exit(2)  # pylint: disable=protected-access


def _resume_hint(last_committed: int | None) -> str:
  return (f"the last committed checkpoint (step {last_committed}) is intact: rerun the same "
          "command to resume from it" if last_committed is not None
          else "no checkpoint was committed yet: a rerun starts from the beginning")


@contextlib.contextmanager
def deadline(target, *, last_committed: int | None):
  """Stops the process with one line if the block has not finished within the timeout: a save
  hung inside a library cannot be interrupted from Python."""
  seconds = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
  message = (f"error: cannot write {target}: no answer from the storage within {seconds:.0f} s; "
             f"check the bucket, the network and the credentials; {_resume_hint(last_committed)}")
  timer = threading.Timer(seconds, exit_now, args=(message,))
  timer.daemon = True
  timer.start()
  try:
    yield
  finally:
    timer.cancel()


@contextlib.contextmanager
def writes_to(target, *, last_committed: int | None, checkpoint_dir=None):
  """Turns a failure of a write to `target` into a StorageError naming it, the cause, and
  the checkpoint a rerun resumes from. `checkpoint_dir`: a local checkpoint whose size says
  how much space the next one needs."""
  try:
    yield
  except errors.UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # gcsfs, tensorstore and the OS raise many kinds
    if _is_disk_full(e) and not paths.is_remote(target):
      what = _disk_full_message(target, checkpoint_dir)
    else:
      cause = str(e).strip().splitlines()[0] if str(e).strip() else ""
      cause = cause.split(" [tensorstore_spec=")[0][-400:]  # the end says why: "CURL error ..."
      hint = ("check the bucket, the network and the credentials" if paths.is_remote(target)
              else "check the disk and its permissions")
      what = f"cannot write {target} ({type(e).__name__}: {cause}); {hint}"
    raise StorageError(f"{what}; {_resume_hint(last_committed)}") from e

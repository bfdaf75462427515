"""The one place that turns a user-given path into something to open: a local path or a
bucket path (gs://BUCKET/..., or any other fsspec URL), through etils.epath.

`pathlib.Path("gs://bucket/run")` is the local relative path "gs:/bucket/run"; every
workdir, data directory, CSV, export and output goes through `paths.path` instead, so the
same code reads and writes local disk and Cloud Storage. gs:// needs gcsfs (installed with
this package); credentials are the usual Application Default Credentials.
"""
from __future__ import annotations

import io
import os
from typing import Union

import fsspec
from etils import epath

from medssl_jax import errors

# gcsfs caches directory listings forever by default, so a process would never see
# checkpoints another process (a training run, a watcher) wrote after its first listing.
# Listings are rare here (checkpoint steps, data folders): always ask the bucket.
fsspec.config.conf.setdefault("gs", {}).setdefault("cache_timeout", 0)

Path = epath.Path
PathLike = Union[str, os.PathLike]


def is_remote(path: PathLike) -> bool:
  """True for a URL such as gs://bucket/x; False for a local path."""
  return "://" in os.fspath(path)


def path(value: PathLike) -> epath.Path:
  """`value` as an epath.Path: "~" expanded and made absolute when local, unchanged when remote.

  Local paths are made absolute so that Orbax (which wants absolute directories) and
  subprocesses with another working directory see the same place.
  """
  text = os.fspath(value)
  if is_remote(text):
    return epath.Path(text)
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


def write_bytes_atomic(target: PathLike, data: bytes) -> epath.Path:
  """Writes `data` so that readers see the old file or the whole new one, never a part: a
  local file is written beside and renamed over; a bucket object only appears once its
  upload completes."""
  target = path(target)
  target.parent.mkdir(parents=True, exist_ok=True)
  if is_remote(target):
    target.write_bytes(data)
    return target
  partial = target.with_name(target.name + ".partial")
  partial.write_bytes(data)
  os.replace(partial, target)
  return target


def save_npy(target: PathLike, array) -> epath.Path:
  """np.save to a local or bucket path, atomically."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  np.save(buffer, array, allow_pickle=False)
  return write_bytes_atomic(target, buffer.getvalue())


def load_npy(source: PathLike):
  import numpy as np  # pylint: disable=g-import-not-at-top
  return np.load(io.BytesIO(path(source).read_bytes()), allow_pickle=False)


def join(root: PathLike, relative: str) -> str:
  """`relative` (a CSV's image path) under `root`, as a string; absolute local paths and
  URLs are kept as they are."""
  if is_remote(relative) or os.path.isabs(relative):
    return relative
  return str(path(root) / relative)


def _bucket(value: PathLike) -> str | None:
  text = os.fspath(value)
  for scheme in ("gs://", "gcs://"):
    if text.startswith(scheme):
      return text[len(scheme):].split("/", 1)[0]
  return None


def _check_credentials(value: PathLike) -> None:
  """Without credentials gcsfs silently goes anonymous and a private bucket then looks absent
  (or unreachable, after a minute of retries): say what is missing instead."""
  if os.environ.get("STORAGE_EMULATOR_HOST"):
    return  # a local emulator needs none
  import google.auth  # pylint: disable=g-import-not-at-top
  import google.auth.exceptions  # pylint: disable=g-import-not-at-top
  try:
    google.auth.default()
  except google.auth.exceptions.DefaultCredentialsError as e:
    reason = str(e).strip().splitlines()[0]
    raise errors.UserError(
        f"{value}: no Google Cloud credentials ({reason}); run `gcloud auth application-default "
        "login`, set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or run on a "
        "VM whose service account may use the bucket") from e


def check_buckets(*values: PathLike) -> None:
  """Raises a UserError naming the path if there are no credentials, or if the bucket of any
  gs:// value does not exist or cannot be reached with them: checked before a run writes
  anything, so a typo costs seconds, not a failed job. Local paths and "" are skipped."""
  for value in values:
    bucket = _bucket(value) if value else None
    if bucket is None:
      continue
    _check_credentials(value)
    try:
      found = epath.Path(f"gs://{bucket}").exists()
    except Exception as e:  # pylint: disable=broad-except  # auth, network: gcsfs raises many kinds
      raise errors.UserError(
          f"{value}: cannot reach bucket gs://{bucket} ({type(e).__name__}: {e}); check the "
          "network and credentials (gcloud auth application-default login, or "
          "GOOGLE_APPLICATION_CREDENTIALS)") from e
    if not found:
      raise errors.UserError(
          f"{value}: bucket gs://{bucket} does not exist or these credentials cannot see it; "
          f"create it (gcloud storage buckets create gs://{bucket}) or check the credentials")

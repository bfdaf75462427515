"""A local Google Cloud Storage for tests: gcp-storage-emulator on 127.0.0.1, and the
environment every GCS client in this project reads to talk to it.

What the clients need (checked against gcsfs 2026.10, google-cloud-storage 3, tensorstore
0.1.86 and array_record 0.8):
  - gcsfs and google-cloud-storage (tensorboardX's gs:// writer) follow STORAGE_EMULATOR_HOST;
    gcsfs 2026.3+ also needs GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false, or each call waits on
    a gRPC handshake;
  - tensorstore (Orbax's array writer) needs TENSORSTORE_GCS_HTTP_URL and any
    GOOGLE_AUTH_TOKEN_FOR_TESTING;
  - array_record's own GCS reader needs CLOUD_STORAGE_EMULATOR_ENDPOINT (it hangs without).

Worked around here: the emulator's object downloads carry no x-goog-generation header, which
tensorstore's OCDBT reads back as a malformed generation; the server below adds it.

What the emulator does not cover, so these tests do not either: preconditions
(ifGenerationMatch: every conditional write succeeds, so concurrent writers are not
tested), IAM and real credentials, object versioning and retention, resumable-upload edge cases, listing with
startOffset/endOffset (ignored by the emulator), moveTo (renames fall back to copy+delete),
and network latency or throttling.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

PROJECT = "medssl-test"

# The emulator, with download responses that carry the object's generation headers.
_SERVER = """
import sys
from gcp_storage_emulator.handlers import objects

_download = objects.download


def download(request, response, storage, *args, **kwargs):
  _download(request, response, storage, *args, **kwargs)
  try:
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
  except Exception:  # not found: the original handler set the status
    return
  response["x-goog-generation"] = str(obj["generation"])
  response["x-goog-metageneration"] = str(obj["metageneration"])


objects.download = download
from gcp_storage_emulator import server  # after the patch: its routes take the new handler

server.create_server("127.0.0.1", int(sys.argv[1]), data_dir=sys.argv[2]).start()
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def client_environment(url: str) -> dict[str, str]:
  return {
      "STORAGE_EMULATOR_HOST": url,
      "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
      "TENSORSTORE_GCS_HTTP_URL": url,
      "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
      "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,
      "GOOGLE_CLOUD_PROJECT": PROJECT,
  }


class Emulator:
  """One emulator process keeping its objects in `data_dir`, so that it can be stopped (the
  storage "goes away" mid-run) and started again with its buckets; `new_bucket()` makes a
  fresh bucket."""

  def __init__(self, data_dir, port: int | None = None):
    self.data_dir = str(data_dir)
    self.port = port or _free_port()
    self.url = f"http://127.0.0.1:{self.port}"
    self._process = None

  def start(self, timeout_s: float = 30.0) -> Emulator:
    self._process = subprocess.Popen([sys.executable, "-c", _SERVER, str(self.port), self.data_dir],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while True:
      try:
        urllib.request.urlopen(f"{self.url}/storage/v1/b?project={PROJECT}", timeout=1).read()
        return self
      except OSError:
        if self._process.poll() is not None or time.monotonic() > deadline:
          raise RuntimeError(f"gcp-storage-emulator did not start on {self.url}")
        time.sleep(0.1)

  def stop(self) -> None:
    if self._process is not None and self._process.poll() is None:
      self._process.kill()
      self._process.wait(timeout=10)

  def new_bucket(self) -> str:
    from google.cloud import storage  # pylint: disable=g-import-not-at-top
    name = f"medssl-{uuid.uuid4().hex[:12]}"
    storage.Client(project=PROJECT).create_bucket(name)
    return name


@contextlib.contextmanager
def environment(url: str):
  """Sets the client environment in this process (and so in its subprocesses)."""
  saved = {k: os.environ.get(k) for k in client_environment(url)}
  os.environ.update(client_environment(url))
  try:
    yield
  finally:
    for key, value in saved.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value


def upload(local_path, url: str) -> None:
  """Copies a local file or folder to gs://... (a folder recursively)."""
  import pathlib  # pylint: disable=g-import-not-at-top

  from etils import epath  # pylint: disable=g-import-not-at-top
  local, remote = pathlib.Path(local_path), epath.Path(url)
  files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]
  for path in files:
    target = remote / path.relative_to(local).as_posix() if local.is_dir() else remote
    target.write_bytes(path.read_bytes())

"""Fetches one official data file into a local cache, checked against its md5.

Only the standard library is used (urllib), so a download works wherever the project
installs. A file is written to a temporary name beside its destination and renamed into
place only once complete and verified: an interrupted, failed or corrupted download never
leaves a partial file where a later run would trust it.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import pathlib
import sys
import tempfile
import time
import urllib.error
import urllib.request

from medssl_jax import errors

DATA_DIR_ENV = "MEDSSL_DATA_DIR"
_CHUNK = 1 << 20
_USER_AGENT = "medssl-jax"


class DataUnavailableError(errors.UserError, RuntimeError):
  """A data file could neither be found locally nor downloaded and verified."""


def md5sum(path: str | os.PathLike[str]) -> str:
  digest = hashlib.md5()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(_CHUNK), b""):
      digest.update(chunk)
  return digest.hexdigest()


def local_copy_hint(filename: str) -> str:
  """How to use a copy fetched by other means; part of every download error."""
  return (f"To use a local copy instead, put {filename} in a directory DIR and pass "
          f"--config.data.dir=DIR or set the environment variable {DATA_DIR_ENV}=DIR.")


def fetch(url: str, dest: pathlib.Path, md5: str | None, *, timeout: float = 60,
          progress: bool = True) -> pathlib.Path:
  """Downloads url to dest, verifying md5 (skipped when None); returns dest.

  Raises:
    DataUnavailableError: the server cannot be reached, answers with an HTTP error, the
      transfer breaks off, or the md5 differs. No file is left at dest nor beside it.
  """
  dest = pathlib.Path(dest)
  dest.parent.mkdir(parents=True, exist_ok=True)
  # A unique temporary name lets concurrent processes download side by side safely.
  fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
  tmp = pathlib.Path(tmp_name)
  try:
    with os.fdopen(fd, "wb") as out:
      actual = _download(url, out, dest.name, timeout=timeout, progress=progress)
    if md5 is not None and actual != md5.lower():
      raise DataUnavailableError(
          f"md5 mismatch for {dest.name} downloaded from {url}: expected {md5}, got "
          f"{actual}. The download was discarded; the server may be serving a different "
          f"version of the file. {local_copy_hint(dest.name)}")
    os.replace(tmp, dest)
  finally:
    tmp.unlink(missing_ok=True)
  return dest


def _download(url: str, out, filename: str, *, timeout: float, progress: bool) -> str:
  """Streams url into the open file out; returns the md5 of what was written."""
  digest = hashlib.md5()
  request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
  done = 0
  with _network_errors(filename, url):
    response = urllib.request.urlopen(request, timeout=timeout)
  with response:
    total = _content_length(response)
    meter = _ProgressMeter(filename, total) if progress else None
    while True:
      with _network_errors(filename, url):
        chunk = response.read(_CHUNK)
      if not chunk:
        break
      out.write(chunk)  # Outside the handler: a full disk is not a network problem.
      digest.update(chunk)
      done += len(chunk)
      if meter:
        meter.update(done)
  if total is not None and done != total:
    raise _unavailable(filename, url, f"transfer ended after {done} of {total} bytes")
  if meter:
    meter.finish(done)
  return digest.hexdigest()


@contextlib.contextmanager
def _network_errors(filename: str, url: str):
  """Turns any failure to reach or read from the server into a DataUnavailableError."""
  try:
    yield
  except urllib.error.HTTPError as e:
    raise _unavailable(filename, url, f"HTTP {e.code} {e.reason}") from e
  except (OSError, http.client.HTTPException) as e:
    # URLError (refused, no route, DNS), timeouts and broken transfers all land here.
    reason = getattr(e, "reason", None) or e
    raise _unavailable(filename, url, str(reason) or type(e).__name__) from e


def _content_length(response) -> int | None:
  value = response.headers.get("Content-Length")
  return int(value) if value and value.isdigit() else None


def _unavailable(filename: str, url: str, reason: str) -> DataUnavailableError:
  return DataUnavailableError(
      f"Could not download {filename} from {url} ({reason}). The machine may be offline, "
      f"or the server down or moved. {local_copy_hint(filename)}")


class _ProgressMeter:
  """Prints bytes done / total, MB/s and ETA to stderr, at most once a second."""

  def __init__(self, filename: str, total: int | None, interval: float = 1.0):
    self._filename = filename
    self._total = total
    self._interval = interval
    self._start = time.monotonic()
    self._last = self._start
    # On a terminal one line is rewritten in place; in a log file each report is a line.
    self._end = "\r" if sys.stderr.isatty() else "\n"

  def update(self, done: int) -> None:
    now = time.monotonic()
    if now - self._last >= self._interval:
      self._last = now
      print(format_progress(self._filename, done, self._total, now - self._start),
            end=self._end, file=sys.stderr, flush=True)

  def finish(self, done: int) -> None:
    print(format_progress(self._filename, done, self._total, time.monotonic() - self._start),
          file=sys.stderr, flush=True)


def format_progress(filename: str, done: int, total: int | None, elapsed: float) -> str:
  """One progress line, e.g. 'x.npz: 12.0/35.5 MB (34%), 4.0 MB/s, ETA 6s'."""
  mb = 1e6
  rate = done / max(elapsed, 1e-9)
  if total:
    eta = (total - done) / rate if rate > 0 else float("inf")
    return (f"{filename}: {done / mb:.1f}/{total / mb:.1f} MB ({100 * done / total:.0f}%), "
            f"{rate / mb:.1f} MB/s, ETA {_format_seconds(eta)}")
  return f"{filename}: {done / mb:.1f} MB, {rate / mb:.1f} MB/s"


def _format_seconds(seconds: float) -> str:
  if seconds == float("inf"):
    return "?"
  minutes, secs = divmod(int(round(seconds)), 60)
  return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"

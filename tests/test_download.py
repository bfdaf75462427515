"""Tests for medssl_jax.data.download against a local HTTP server serving shared/data."""
import dataclasses
import functools
import http.server
import socket
import threading

import pytest

from medssl_jax.data import download
from medssl_jax.data import sources

BREAST_MD5 = "750601b1f35ba3300ea97c75c52ff8f6"  # From shared/data/README.md.


class _Handler(http.server.SimpleHTTPRequestHandler):
  """Serves a directory, counts GETs, and can cut a response short."""
  requests = []

  def do_GET(self):
    type(self).requests.append(self.path)
    if self.path.startswith("/short/"):
      self.send_response(200)
      self.send_header("Content-Length", "100000")
      self.end_headers()
      self.wfile.write(b"x" * 1000)  # Then the connection closes: a broken transfer.
      return
    super().do_GET()

  def log_message(self, *args):
    pass  # Keep test output clean.


@pytest.fixture(scope="module")
def server(medmnist_dir):
  handler = functools.partial(_Handler, directory=str(medmnist_dir))
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{httpd.server_address[1]}"
  httpd.shutdown()
  httpd.server_close()
  thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
  monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))
  _Handler.requests.clear()


@pytest.fixture
def served(monkeypatch, server):
  monkeypatch.setenv(sources.MEDMNIST_URL_ENV, server + "/{name}.npz")
  return server


def _dead_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _files(directory):
  return sorted(p.name for p in directory.rglob("*")) if directory.exists() else []


def test_downloads_into_cache_with_matching_md5(served, tmp_path):
  path = sources.resolve_medmnist_file("breastmnist", None, tmp_path)
  assert path == tmp_path / "breastmnist.npz"
  assert download.md5sum(path) == BREAST_MD5
  assert _files(tmp_path) == ["breastmnist.npz"]  # No temporary file left behind.
  assert _Handler.requests == ["/breastmnist.npz"]
  assert len(sources.MedMNISTSource("breastmnist", "train", cache_dir=tmp_path)) == 546


def test_second_call_does_not_download_again(served, tmp_path):
  first = sources.resolve_medmnist_file("breastmnist", None, tmp_path)
  mtime = first.stat().st_mtime_ns
  second = sources.resolve_medmnist_file("breastmnist", None, tmp_path)
  assert second == first and second.stat().st_mtime_ns == mtime
  assert len(_Handler.requests) == 1


def test_default_cache_is_under_xdg_cache_home(served, tmp_path):
  path = sources.resolve_medmnist_file("breastmnist", None, None)
  assert path == tmp_path / "xdg_cache" / "medssl_jax" / "breastmnist.npz"


def test_missing_in_data_dir_downloads_into_cache_not_data_dir(served, tmp_path):
  data_dir, cache = tmp_path / "data", tmp_path / "cache"
  data_dir.mkdir()
  path = sources.resolve_medmnist_file("breastmnist", data_dir, cache)
  assert path == cache / "breastmnist.npz"
  assert _files(data_dir) == []


def test_wrong_md5_raises_and_leaves_nothing(served, tmp_path, monkeypatch):
  wrong = dataclasses.replace(sources.MEDMNIST_INFO["breastmnist"], md5="0" * 32)
  monkeypatch.setitem(sources.MEDMNIST_INFO, "breastmnist", wrong)
  with pytest.raises(download.DataUnavailableError) as info:
    sources.resolve_medmnist_file("breastmnist", None, tmp_path)
  message = str(info.value)
  assert "0" * 32 in message and BREAST_MD5 in message
  assert served + "/breastmnist.npz" in message
  assert _files(tmp_path) == []


def _assert_actionable(message: str, url: str):
  assert "breastmnist.npz" in message
  assert url in message
  assert "MEDSSL_DATA_DIR" in message and "--config.data.dir" in message


def test_dead_server_raises_actionable_error(monkeypatch, tmp_path):
  url = f"http://127.0.0.1:{_dead_port()}/breastmnist.npz"
  monkeypatch.setenv(sources.MEDMNIST_URL_ENV, url.replace("breastmnist", "{name}"))
  with pytest.raises(download.DataUnavailableError) as info:
    sources.resolve_medmnist_file("breastmnist", None, tmp_path)
  _assert_actionable(str(info.value), url)
  assert _files(tmp_path) == []


def test_http_404_raises_actionable_error(monkeypatch, server, tmp_path):
  url = server + "/missing/breastmnist.npz"
  monkeypatch.setenv(sources.MEDMNIST_URL_ENV, server + "/missing/{name}.npz")
  with pytest.raises(download.DataUnavailableError, match="404") as info:
    sources.resolve_medmnist_file("breastmnist", None, tmp_path)
  _assert_actionable(str(info.value), url)
  assert _files(tmp_path) == []


def test_broken_transfer_leaves_no_partial_file(server, tmp_path):
  dest = tmp_path / "breastmnist.npz"
  with pytest.raises(download.DataUnavailableError):
    download.fetch(server + "/short/breastmnist.npz", dest, None, progress=False)
  assert _files(tmp_path) == []


def test_failed_fetch_keeps_an_existing_file(server, tmp_path):
  dest = tmp_path / "breastmnist.npz"
  dest.write_bytes(b"previous")
  with pytest.raises(download.DataUnavailableError):
    download.fetch(server + "/breastmnist.npz", dest, "0" * 32, progress=False)
  assert dest.read_bytes() == b"previous"
  assert _files(tmp_path) == ["breastmnist.npz"]


def test_fetch_reports_progress_on_stderr(server, tmp_path, capsys):
  dest = download.fetch(server + "/breastmnist.npz", tmp_path / "sub" / "b.npz", BREAST_MD5)
  assert dest.is_file()
  err = capsys.readouterr().err
  assert "b.npz: 0.6/0.6 MB (100%)" in err and "MB/s" in err


def test_format_progress():
  assert download.format_progress("x.npz", 12_000_000, 36_000_000, 3.0) == (
      "x.npz: 12.0/36.0 MB (33%), 4.0 MB/s, ETA 6s")
  assert download.format_progress("x.npz", 1_000_000, 241_000_000, 1.0).endswith("ETA 4m00s")
  assert download.format_progress("x.npz", 2_000_000, None, 1.0) == "x.npz: 2.0 MB, 2.0 MB/s"

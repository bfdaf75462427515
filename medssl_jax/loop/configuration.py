"""Config files and command-line overrides, checked before absl parses them.

ml_collections rejects an unknown `--config.key=value` with a traceback; users deserve a
one-line message that lists the keys they could have meant.
"""
from __future__ import annotations

import logging as std_logging
import os
import runpy
import sys

import ml_collections
from absl import app

from medssl_jax import errors
from medssl_jax.loop import storage
from medssl_jax.loop import validation


class ConfigKeyError(errors.UserError):
  pass


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """Runs `get_config()` of a config file (`FILE` or `FILE:arg`, as ml_collections takes)."""
  file, _, arg = path.partition(":")
  get_config = runpy.run_path(file)["get_config"]
  return get_config(arg) if arg else get_config()


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  keys = []
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      keys.extend(flat_keys(value, name + "."))
    else:
      keys.append(name)
  return keys


def override_keys(argv: list[str], flag: str = "config") -> list[str]:
  """The dotted keys of every `--config.key=value` (or `--config.key value`) argument."""
  prefix = f"--{flag}."
  return [arg[len(prefix):].split("=", 1)[0] for arg in argv if arg.startswith(prefix)]


def override_values(argv: list[str], flag: str = "config") -> list[tuple[str, str]]:
  """(dotted key, value text) of every `--config.key=value` (or `--config.key value`)."""
  prefix, pairs = f"--{flag}.", []
  for i, arg in enumerate(argv):
    if not arg.startswith(prefix):
      continue
    key, sep, value = arg[len(prefix):].partition("=")
    if not sep:
      value = argv[i + 1] if i + 1 < len(argv) else ""
    pairs.append((key, value))
  return pairs


_BOOLEANS = ("true", "false", "1", "0", "yes", "no")


def _type_mismatch(default, text: str) -> str | None:
  """What `text` should have been for a key whose default is `default`; None if it fits."""
  if isinstance(default, bool):
    return None if text.lower() in _BOOLEANS else "true or false"
  try:
    if isinstance(default, int):
      int(text)
    elif isinstance(default, float):
      float(text)
  except ValueError:
    return "an integer" if isinstance(default, int) else "a number"
  return None


def config_path(argv: list[str], flag: str = "config") -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{flag}="):
      return arg.split("=", 1)[1]
    if arg == f"--{flag}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def check_overrides(argv: list[str], flag: str = "config") -> None:
  """Raises ConfigKeyError naming each unknown override key and listing the valid ones, or an
  override whose value does not parse as its key's type (absl would print a flag dump)."""
  path = config_path(argv, flag)
  if path is None:
    return
  config = load_config_file(path)
  valid = flat_keys(config)
  unknown = [k for k in override_keys(argv, flag) if k not in valid]
  if unknown:
    raise ConfigKeyError(
        f"unknown config key(s) {', '.join(unknown)} for {path}. Valid keys:\n  " + "\n  ".join(valid))
  for key, text in override_values(argv, flag):
    expected = _type_mismatch(validation.get_dotted(config, key), text)
    if expected:
      raise ConfigKeyError(f"--{flag}.{key}={text}: {key} must be {expected} "
                           f"(its default is {validation.get_dotted(config, key)!r})")


def _no_libtpu_notice(record) -> bool:
  """False for JAX's INFO line saying libtpu.so is not installed: off a TPU VM that is
  expected, and users read it as a fault (on a TPU VM libtpu is installed, so a real TPU
  failure still shows)."""
  return "cannot open shared object file" not in record.getMessage()


def run_binary(main) -> None:
  """absl's app.run for our binaries: a user mistake (errors.UserError: a bad override, missing
  data, an incompatible workdir, an invalid setting) ends with its one-line message and exit
  status 2; anything else is a bug and keeps its traceback. MEDSSL_DEBUG=1 shows the
  traceback of user errors too."""
  std_logging.getLogger("jax._src.xla_bridge").addFilter(_no_libtpu_notice)
  try:
    check_overrides(sys.argv)
    app.run(main)
  except errors.UserError as e:
    if os.environ.get("MEDSSL_DEBUG"):
      raise
    if isinstance(e, storage.StorageError):
      storage.exit_now(f"error: {e}")
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


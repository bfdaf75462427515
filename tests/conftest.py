"""Test set-up: 8 simulated CPU devices and the shared real data directory."""
import os
import pathlib

# Must happen before jax is imported anywhere: every test may build a mesh of 1..8 devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("MEDSSL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  if not SHARED_DATA.is_dir():
    pytest.fail(f"shared data not found at {SHARED_DATA}; set MEDSSL_SHARED_DATA")
  return SHARED_DATA


@pytest.fixture(scope="session")
def medmnist_dir(shared_data) -> pathlib.Path:
  return shared_data / "medmnist"

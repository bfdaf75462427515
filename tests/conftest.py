"""Test set-up: 8 simulated CPU devices, the shared real data directory, and a synthetic
in-memory data set for tests that are not about real files."""
import os
import pathlib

# Must happen before jax is imported anywhere: every test may build a mesh of 1..8 devices.
# Tests compile many tiny programs and run each a few steps: XLA's cheapest CPU code
# generation (optimisation level 0) compiles them about a third faster overall (measured
# 2026-12-01: test_byol + test_simsiam 85 s -> 56 s). Subprocesses get the same flag.
FAST_COMPILE = "--xla_backend_optimization_level=0"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for a test's subprocess: `devices` simulated CPU devices, fast compilation."""
  return f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"
SHARED_DATA = pathlib.Path(
    os.environ.get("MEDSSL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  if not SHARED_DATA.is_dir():
    pytest.fail(f"shared data not found at {SHARED_DATA}; set MEDSSL_SHARED_DATA")
  return SHARED_DATA


@pytest.fixture(scope="session")
def medmnist_dir(shared_data) -> pathlib.Path:
  return shared_data / "medmnist"


@pytest.fixture
def tiny_config(medmnist_dir):
  return make_tiny_config(medmnist_dir)


@pytest.fixture
def synthetic_config():
  """tiny_config on the synthetic in-memory data set (tests/synthetic_data.py): for tests
  whose subject is not the data, so they run without ../shared/data."""
  import synthetic_data  # pylint: disable=g-import-not-at-top
  synthetic_data.register()
  config = make_tiny_config("")
  config.data.name = synthetic_data.NAME
  return config


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
  """A local GCS (tests/gcs_emulator.py) for the whole session, its client environment set
  in this process and inherited by subprocesses."""
  import gcs_emulator as emulator_lib  # pylint: disable=g-import-not-at-top
  emulator = emulator_lib.Emulator(tmp_path_factory.mktemp("gcs")).start()
  with emulator_lib.environment(emulator.url):
    yield emulator
  emulator.stop()


@pytest.fixture
def gcs_bucket(gcs_emulator) -> str:
  """A fresh, empty bucket in the emulator: "gs://NAME"."""
  return f"gs://{gcs_emulator.new_bucket()}"


def make_tiny_config(medmnist_dir):
  """The CPU recipe shrunk to seconds: 4-channel ResNet-18, batch 16, 6 steps, real data."""
  from medssl_jax.loop import configuration  # pylint: disable=g-import-not-at-top
  config = configuration.load_config_file(str(REPO_ROOT / "configs" / "simclr_pneumoniamnist.py"))
  config.data.dir = str(medmnist_dir)
  config.model.width = 1 / 16
  config.model.projector_hidden_dim = 32
  config.model.projector_dim = 16
  config.batch_size = 16
  config.num_steps = 6
  config.log_every = 3
  config.checkpoint_every = 3
  config.keep_checkpoints = 10
  config.optim.warmup_steps = 2
  return config


def pytest_configure(config):
  """One persistent XLA compilation cache for the whole test session (subprocesses included):
  most tests compile the same tiny networks, and compiling dominates their time on CPU."""
  del config
  import tempfile  # pylint: disable=g-import-not-at-top
  cache = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="medssl_jax_cache_"))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
  del cache

"""Test settings (8 simulated CPU devices, set before jax starts) and the fixtures several modules share."""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import pytest  # noqa: E402

import train_fixture  # noqa: E402

XLA_CACHE = "/tmp/cmp_jax_test_xla_cache"  # persistent compilation cache shared by the subprocess runs


def _subprocess_env(devices=2):
  env = dict(os.environ)
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
             TF_CPP_MIN_LOG_LEVEL="2", JAX_COMPILATION_CACHE_DIR=XLA_CACHE, PYTHONPATH=ROOT)
  return env


@pytest.fixture
def subprocess_env():
  """`subprocess_env(devices=2)`: the environment for running a tool of this checkout in a subprocess on
  that many simulated CPU devices, with the shared compilation cache."""
  return _subprocess_env


@pytest.fixture(scope="session")
def train_dataset(tmp_path_factory):
  """A tiny dataset in the original's layout (tests/train_fixture.py) for the training tests: its root."""
  return train_fixture.write_dataset(str(tmp_path_factory.mktemp("cmp_data")))

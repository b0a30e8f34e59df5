"""Shared test set-up: Keras runs on the JAX backend; shared data lives beside the repo."""
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
# Tests compile many small programs: skip LLVM's expensive passes (halves compile time).
# (--xla_backend_optimization_level=0 would be faster still but miscompiles some vmapped
# programs on CPU in jaxlib 0.10.2: it produced inf multipliers where eager mode gave finite ones.)
os.environ.setdefault("XLA_FLAGS", "--xla_llvm_disable_expensive_passes=true")

import jax
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("JAXLIFT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of data sets handed to the project (``../shared/data``)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def x64():
    """Run a test with 64-bit JAX types (``jax_enable_x64``), restored afterwards."""
    with jax.enable_x64(True):
        yield

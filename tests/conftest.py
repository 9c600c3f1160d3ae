"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest

# The tests compare computations to float32 rounding (chunked vs whole, minibatch vs full
# batch). On NVIDIA GPUs JAX multiplies float32 matrices in TF32 by default, which rounds to
# about 1e-3 relative, so ask for full float32 products (a no-op on CPU); through the
# environment, so that the subprocesses some tests start do the same.
os.environ["JAX_DEFAULT_MATMUL_PRECISION"] = "highest"
import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared test data folder: ``$BAYESNN_DATA_DIR`` or ``../shared/data`` beside the repo."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    path = Path(os.environ.get("BAYESNN_DATA_DIR", default))
    if not path.is_dir():
        pytest.skip(f"shared test data not found at {path} (set BAYESNN_DATA_DIR)")
    return path

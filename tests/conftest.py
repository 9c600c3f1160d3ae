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


@pytest.fixture
def ctrl_c_after(monkeypatch):
    """``ctrl_c_after(k)``: the next fit stops as at a Ctrl-C once its ``k``-th chunk is done
    and checkpointed (the driver saves after every chunk by default)."""
    from bayesnn.inference import driver

    save = driver._save

    def arm(chunks: int) -> None:
        def save_then_interrupt(checkpoint, state, outputs, done, *rest):
            save(checkpoint, state, outputs, done, *rest)
            if done == chunks:
                raise KeyboardInterrupt

        monkeypatch.setattr(driver, "_save", save_then_interrupt)

    return arm

"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared test data folder: ``$BAYESNN_DATA_DIR`` or ``../shared/data`` beside the repo."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    path = Path(os.environ.get("BAYESNN_DATA_DIR", default))
    if not path.is_dir():
        pytest.skip(f"shared test data not found at {path} (set BAYESNN_DATA_DIR)")
    return path

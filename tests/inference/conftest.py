"""Fixtures the inference tests share."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def toy():
    """A small smooth regression problem: 64 rows of 2 features."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype(np.float32)
    y = (np.sin(x[:, :1]) + 0.1 * rng.normal(size=(64, 1))).astype(np.float32)
    return x, y

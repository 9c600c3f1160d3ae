import numpy as np
import pytest

from bayesnn.arviz import ess, rhat
from bayesnn.inference.diagnostics import rank_diagnostics


def _ar1(key, chains, draws, dims, rho, offsets=0.0):
    """AR(1) chains of autocorrelation ``rho``, stationary N(0, 1), shifted per chain."""
    rng = np.random.default_rng(key)
    x = np.empty((chains, draws, dims))
    x[:, 0] = rng.standard_normal((chains, dims))
    for t in range(1, draws):
        x[:, t] = rho * x[:, t - 1] + np.sqrt(1 - rho**2) * rng.standard_normal((chains, dims))
    return x + np.reshape(offsets, (-1, 1, 1))


@pytest.mark.parametrize("key", [0, 1, 2])
@pytest.mark.parametrize("draws,offsets", [(1000, 0.0), (1001, [0.0, 0.0, 0.0, 2.0])])
def test_rank_diagnostics_agree_with_arviz(key, draws, offsets):
    """R̂ is ArviZ's rank R̂ to rounding, odd draw counts included; the bulk ESS, of another
    autocorrelation estimator, within 10% of ArviZ's where the chains are long. A chain two
    standard deviations off is caught in every coordinate."""
    x = _ar1(key, 4, draws, 16, 0.5, offsets)
    r, e = rank_diagnostics(x)
    np.testing.assert_allclose(r, rhat(x), rtol=1e-10)
    np.testing.assert_allclose(e, ess(x), rtol=0.1)
    if np.ndim(offsets) == 0:
        assert np.all(r < 1.05)
    else:
        assert np.all(r > 1.2)

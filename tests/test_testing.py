"""The closed-form checks of :mod:`bayesnn.testing` pass exact draws and catch wrong ones."""

import numpy as np
import pytest

from bayesnn.inference.hyper import GammaPrecision
from bayesnn.testing import (
    assert_gaussian_matches,
    assert_hyper_matches,
    hyper_posterior,
    linear_posterior,
)

MEAN = np.array([1.0, -2.0, 0.5])
COV = np.array([[2.0, 0.3, 0.0], [0.3, 1.0, -0.2], [0.0, -0.2, 0.5]])
CHAINS, DRAWS = 4, 1000
N = CHAINS * DRAWS


def _iid(seed=0):
    """Exact i.i.d. draws of N(MEAN, COV), ``(chain, draw, 3)``, and their whitening map."""
    chol = np.linalg.cholesky(COV)
    u = np.random.default_rng(seed).standard_normal((CHAINS, DRAWS, 3))
    return u, lambda v: MEAN + v @ chol.T


def test_exact_draws_pass_with_their_ess():
    u, colour = _iid()
    report = assert_gaussian_matches(colour(u), MEAN, COV, min_ess=0.8 * N)
    assert report["ess"] > 0.8 * N


@pytest.mark.parametrize("kind", ["mean", "var"])
def test_draws_off_by_six_standard_errors_fail(kind):
    u, colour = _iid()
    if kind == "mean":  # shift one whitened coordinate by 6 / √n
        u = u + np.array([0.0, 6 / np.sqrt(N), 0.0])
    else:  # inflate one whitened variance by 6 √(2 / n)
        u = u * np.sqrt(np.array([1.0, 1.0, 1 + 6 * np.sqrt(2 / N)]))
    with pytest.raises(AssertionError, match=f"whitened {kind} error"):
        assert_gaussian_matches(colour(u), MEAN, COV)
    # a declared bias admits them: var_bias widens the variance only
    bias = {"mean": {"bias": 3 / np.sqrt(N)}, "var": {"var_bias": 3 * np.sqrt(2 / N)}}[kind]
    assert_gaussian_matches(colour(u), MEAN, COV, **bias)
    if kind == "mean":
        with pytest.raises(AssertionError, match="whitened mean error"):
            assert_gaussian_matches(colour(u), MEAN, COV, var_bias=1.0)


def test_correlated_draws_fail_the_ess_floor():
    """An AR(1) chain with ρ = 0.99 has ESS ≈ n (1 - ρ) / (1 + ρ) ≈ n / 200."""
    u, colour = _iid()
    rho = 0.99
    for t in range(1, DRAWS):
        u[:, t] = rho * u[:, t - 1] + np.sqrt(1 - rho**2) * u[:, t]
    with pytest.raises(AssertionError, match="ESS [0-9]+ is below 100"):
        assert_gaussian_matches(colour(u), MEAN, COV)


def test_linear_posterior_uses_the_prior_variance():
    """One observation, no bias: posterior precision 1/s² + x²/σ²."""
    mean, cov = linear_posterior([[2.0]], [3.0], prior_scale=0.7, noise=0.5, bias=False)
    precision = 1 / 0.7**2 + 4 / 0.5**2
    np.testing.assert_allclose(cov, [[1 / precision]])
    np.testing.assert_allclose(mean, [2 * 3 / 0.5**2 / precision])


def test_hyper_posterior_matches_draws_of_the_exact_joint():
    """One target y = 0 at x = 0: ``y | τ ~ N(0, 1/τ_n + 1/τ_w)`` (the bias column), so
    prior draws of ``(τ_w, τ_n)`` resampled by that likelihood are exact posterior draws."""
    weights, noise = GammaPrecision(20.0, 1.0), GammaPrecision(20.0, 0.5)
    exact = hyper_posterior(np.zeros((1, 1)), np.zeros((1, 1)), weights, noise)
    # Sampling-importance-resampling of prior draws by the marginal likelihood of y = 0.
    rng = np.random.default_rng(0)
    m = 400_000
    tau_w = rng.gamma(weights.shape, 1 / weights.rate, m)
    tau_n = rng.gamma(noise.shape, 1 / noise.rate, m)
    lik = 1 / np.sqrt(1 / tau_n + 1 / tau_w)
    idx = rng.choice(m, size=4000, p=lik / lik.sum())
    draws = {"layers/0": tau_w[idx][None], "noise": tau_n[idx][None]}
    assert_hyper_matches(draws, exact, min_ess=3000)
    with pytest.raises(AssertionError, match="layers/0: mean"):
        assert_hyper_matches({**draws, "layers/0": 1.2 * draws["layers/0"]}, exact)

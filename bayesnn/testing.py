"""Closed-form posteriors and ESS-scaled checks for testing samplers.

Every sampler is tested against Bayesian linear regression, whose posterior is Gaussian
in closed form (e.g. Bishop 2006, *Pattern Recognition and Machine Learning*, eq. 3.53–3.54).
"""

from __future__ import annotations

import numpy as np

from bayesnn.arviz import ess

__all__ = ["linear_posterior", "whiten", "assert_gaussian_matches"]


def linear_posterior(x, y, prior_scale: float, noise: float, bias: bool = True):
    """Posterior mean and covariance of ``y = x w + b + ε``, ``w, b ~ N(0, prior_scale²)``.

    Returns ``(mean, cov)`` over ``[w_1 … w_d, b]`` (``b`` last when ``bias``), in float64.
    """
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(-1)
    design = np.c_[x, np.ones(len(x))] if bias else x
    precision = np.eye(design.shape[1]) / prior_scale**2 + design.T @ design / noise**2
    cov = np.linalg.inv(precision)
    return cov @ design.T @ y / noise**2, cov


def whiten(samples, mean, cov) -> np.ndarray:
    """Map draws ``(..., p)`` of N(mean, cov) to draws of N(0, I)."""
    chol = np.linalg.cholesky(cov)
    return np.linalg.solve(chol, (np.asarray(samples, np.float64) - mean)[..., None])[..., 0]


def assert_gaussian_matches(samples, mean, cov, *, z: float = 4.0, bias: float = 0.0) -> dict:
    """Check draws ``(chain, draw, p)`` against ``N(mean, cov)`` with ESS-scaled tolerances.

    After whitening, each coordinate should have mean 0 within ``z / sqrt(ESS)`` and
    variance 1 within ``z · sqrt(2 / ESS)``, and each pair correlation 0 within
    ``z / sqrt(ESS)`` (ESS: the smallest bulk ESS over coordinates). ``bias`` widens every
    tolerance by a fixed amount, for samplers with a known discretisation bias.

    Returns the measured errors and tolerances, for messages and benchmarks.
    """
    u = whiten(samples, mean, cov)
    p = u.shape[-1]
    n_eff = float(np.min(ess(u)))
    flat = u.reshape(-1, p)
    mean_err = np.abs(flat.mean(0)).max()
    c = np.cov(flat, rowvar=False).reshape(p, p)
    var_err = np.abs(np.diag(c) - 1).max()
    off_err = np.abs(c - np.diag(np.diag(c))).max() if p > 1 else 0.0
    report = {
        "ess": n_eff,
        "mean_err": mean_err, "mean_tol": z / n_eff**0.5 + bias,
        "var_err": var_err, "var_tol": z * (2 / n_eff) ** 0.5 + bias,
        "cov_err": off_err, "cov_tol": z / n_eff**0.5 + bias,
    }
    for name in ("mean", "var", "cov"):
        assert report[f"{name}_err"] <= report[f"{name}_tol"], (
            f"whitened {name} error {report[f'{name}_err']:.3g} exceeds tolerance "
            f"{report[f'{name}_tol']:.3g} (ESS {n_eff:.0f}, z={z}, bias={bias})"
        )
    return report

"""Closed-form posteriors and ESS-scaled checks for testing samplers.

Every sampler is tested against Bayesian linear regression, whose posterior is Gaussian
in closed form (e.g. Bishop 2006, *Pattern Recognition and Machine Learning*, eq. 3.53–3.54),
and whose hierarchical version has hyperparameter marginals computable on a grid.
"""

from __future__ import annotations

import numpy as np
from flax import nnx
from scipy import stats

from bayesnn import models, priors
from bayesnn.arviz import ess
from bayesnn.bnn import BNN

__all__ = [
    "linear_posterior", "hyper_posterior", "linear_model", "linear_weights", "whiten",
    "assert_gaussian_matches", "assert_hyper_matches",
]


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


def hyper_posterior(x, y, weights, noise, num: int = 400) -> dict:
    """Mean, sd and kurtosis of the marginals of ``p(τ_w, τ_n | y)``, on a grid.

    The model is ``y = [x, 1] w + ε`` with ``w ~ N(0, I/τ_w)``, ``ε ~ N(0, I/τ_n)`` and
    Gamma hyperpriors ``weights`` on ``τ_w`` and ``noise`` on ``τ_n`` (objects with
    ``shape`` and ``rate``, such as :class:`~bayesnn.inference.hyper.GammaPrecision`). The
    weights integrate out: ``y | τ ~ N(0, I/τ_n + [x, 1][x, 1]ᵀ/τ_w)``, diagonal in the
    eigenbasis of ``[x, 1][x, 1]ᵀ``.

    Returns
    -------
    dict
        ``{"layers/0": (mean, sd, kurtosis), "noise": (mean, sd, kurtosis)}``, keyed as a
        one-layer model's groups in ``Posterior.info["hyperparameters"]``.
    """
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    design = np.c_[x, np.ones(len(x))]
    lam, u = np.linalg.eigh(design @ design.T)
    z2 = (u.T @ np.asarray(y, np.float64).reshape(-1)) ** 2
    log_tau = np.linspace(-6.0, 6.0, num)
    lw, ln = log_tau[:, None, None], log_tau[None, :, None]
    var = np.exp(-ln) + np.exp(-lw) * np.clip(lam, 0, None)
    logp = -0.5 * np.sum(np.log(var) + z2 / var, axis=-1)
    for lt, prior in ((lw[..., 0], weights), (ln[..., 0], noise)):  # + log-Jacobian of log τ
        logp = logp + stats.gamma(prior.shape, scale=1 / prior.rate).logpdf(np.exp(lt)) + lt
    p = np.exp(logp - logp.max())
    p /= p.sum()
    out = {}
    for name, axis in (("layers/0", 1), ("noise", 0)):
        m, tau = p.sum(axis=axis), np.exp(log_tau)
        if m[0] > 1e-6 or m[-1] > 1e-6:
            raise ValueError(f"the grid of log τ in [-6, 6] does not hold the {name} marginal")
        mean = np.sum(m * tau)
        sd = np.sqrt(np.sum(m * (tau - mean) ** 2))
        out[name] = mean, sd, np.sum(m * (tau - mean) ** 4) / sd**4
    return out


def linear_model(num_features: int, prior_scale: float, likelihood, network=None):
    """Bayesian linear regression as a :class:`~bayesnn.BNN`: an MLP without hidden
    layers (or ``network``) and a ``Normal(prior_scale)`` prior on every weight."""
    net = network or models.MLP(num_features, (), 1, rngs=nnx.Rngs(0))
    return BNN(net, priors.Normal(prior_scale), likelihood)


def linear_weights(draws, layer: tuple = ("net", "layers", 0)) -> np.ndarray:
    """``[w, b]`` of a linear model per draw: ``(chain, draw, d + 1)``, the order of
    :func:`linear_posterior`. ``layer`` is the path of the dense layer in ``draws``."""
    for key in layer:
        draws = draws[key]
    return np.concatenate([np.asarray(draws["kernel"])[..., 0], np.asarray(draws["bias"])], -1)


def whiten(samples, mean, cov) -> np.ndarray:
    """Map draws ``(..., p)`` of N(mean, cov) to draws of N(0, I)."""
    chol = np.linalg.cholesky(cov)
    return np.linalg.solve(chol, (np.asarray(samples, np.float64) - mean)[..., None])[..., 0]


def assert_gaussian_matches(
    samples, mean, cov, *, z: float = 4.0, min_ess: float = 100.0, bias: float = 0.0,
    var_bias: float = 0.0,
) -> dict:
    """Check draws ``(chain, draw, p)`` against ``N(mean, cov)`` with ESS-scaled tolerances.

    After whitening, each coordinate should have mean 0 within ``z / sqrt(ESS)`` and
    variance 1 within ``z · sqrt(2 / ESS)``, and each pair correlation 0 within
    ``z / sqrt(ESS)`` (ESS: the smallest bulk ESS over coordinates, which must be at least
    ``min_ess``, lest the tolerances grow too wide to mean anything).

    Parameters
    ----------
    samples : array_like
        Draws of shape ``(chain, draw, p)``.
    mean, cov : array_like
        The target's mean ``(p,)`` and covariance ``(p, p)``.
    z : float
        Tolerances in standard errors.
    min_ess : float
        The smallest acceptable ESS.
    bias : float
        Widens every tolerance, for a known bias of the mean and covariance (e.g. an
        optimiser's noise in variational inference).
    var_bias : float
        Widens the variance and correlation tolerances only: for a known relative
        inflation of the covariance, such as an Euler discretisation of Langevin dynamics
        on a Gaussian target, whose linear drift leaves the mean exact.

    Returns
    -------
    dict
        The measured errors and tolerances, for messages and benchmarks.
    """
    u = whiten(samples, mean, cov)
    p = u.shape[-1]
    n_eff = float(np.min(ess(u)))
    assert n_eff >= min_ess, f"ESS {n_eff:.0f} is below {min_ess:.0f}"
    flat = u.reshape(-1, p)
    mean_err = np.abs(flat.mean(0)).max()
    c = np.cov(flat, rowvar=False).reshape(p, p)
    var_err = np.abs(np.diag(c) - 1).max()
    off_err = np.abs(c - np.diag(np.diag(c))).max() if p > 1 else 0.0
    report = {
        "ess": n_eff,
        "mean_err": mean_err, "mean_tol": z / n_eff**0.5 + bias,
        "var_err": var_err, "var_tol": z * (2 / n_eff) ** 0.5 + bias + var_bias,
        "cov_err": off_err, "cov_tol": z / n_eff**0.5 + bias + var_bias,
    }
    for name in ("mean", "var", "cov"):
        assert report[f"{name}_err"] <= report[f"{name}_tol"], (
            f"whitened {name} error {report[f'{name}_err']:.3g} exceeds tolerance "
            f"{report[f'{name}_tol']:.3g} (ESS {n_eff:.0f}, z={z}, bias={bias}, "
            f"var_bias={var_bias})"
        )
    return report


def assert_hyper_matches(draws, exact, *, z: float = 4.0, min_ess: float = 100.0) -> dict:
    """Check precision draws against :func:`hyper_posterior`'s marginals, ESS-scaled.

    For each group, the draws' mean should be within ``z · sd / sqrt(ESS)`` of the
    marginal's and their sd within a relative ``z · sqrt((κ - 1) / (4 ESS))`` of its sd
    ``sd`` (the large-sample sd of a sample sd, κ the kurtosis), with ESS at least
    ``min_ess``.

    Parameters
    ----------
    draws : dict
        ``{group: (chain, draw)}``, as in ``Posterior.info["hyperparameters"]``.
    exact : dict
        ``{group: (mean, sd, kurtosis)}`` of the marginals, as :func:`hyper_posterior`
        returns; every group must have draws.

    Returns
    -------
    dict
        ``{group: ESS}``.
    """
    report = {}
    for name, (mean, sd, kurtosis) in exact.items():
        tau = np.asarray(draws[name], np.float64)
        n_eff = float(ess(tau))
        assert n_eff >= min_ess, f"{name}: ESS {n_eff:.0f} is below {min_ess:.0f}"
        mean_tol = z * sd / n_eff**0.5
        assert abs(tau.mean() - mean) <= mean_tol, (
            f"{name}: mean {tau.mean():.4g}, expected {mean:.4g} ± {mean_tol:.3g}")
        sd_tol = z * ((kurtosis - 1) / (4 * n_eff)) ** 0.5
        assert abs(tau.std() / sd - 1) <= sd_tol, (
            f"{name}: sd {tau.std():.4g}, expected {sd:.4g} within {sd_tol:.1%}")
        report[name] = n_eff
    return report

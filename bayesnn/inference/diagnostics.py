"""Convergence checks that run after a sampler, on its draws: R̂ and ESS of predictions.

Weight-space R̂ of a neural network says little (its posterior is symmetric under
permutations of hidden units, so chains that agree on every prediction disagree on the
weights); the network's outputs on a few training inputs are what the draws are used for,
and they are cheap to evaluate. :func:`prediction_diagnostics` computes rank-normalised
split-R̂ and bulk ESS of each output (Vehtari et al. 2021) and warns, naming the method,
when the worst R̂ exceeds 1.05 or the smallest ESS is under 100, the thresholds that paper
recommends. It runs after every multi-chain SG-MCMC and Gibbs fit, so it is vectorised
over the outputs (:func:`rank_diagnostics`): ArviZ's ``rhat`` and ``ess`` loop over them
in Python, 0.1–0.2 s a fit.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.diagnostics import effective_sample_size, gelman_rubin
from scipy.special import ndtri
from scipy.stats import rankdata

from bayesnn.bnn import BNN
from bayesnn.inference.programs import program_key, run_program

__all__ = ["ESS_MIN", "NUM_ROWS", "RHAT_MAX", "prediction_diagnostics", "rank_diagnostics"]

NUM_ROWS = 64  # training inputs whose predictions are checked
RHAT_MAX = 1.05
ESS_MIN = 100


def _split_chains(a: np.ndarray) -> np.ndarray:
    """Each chain's first and last ``draws // 2`` as two chains (the middle draw of an odd
    count dropped)."""
    half = a.shape[1] // 2
    return np.concatenate([a[:, :half], a[:, a.shape[1] - half:]])


def _z_scale(a: np.ndarray) -> np.ndarray:
    """Normal scores of the ranks over all chains and draws, per coordinate (Blom's
    ``(r − 3/8) / (S + 1/4)``, ties averaged)."""
    flat = a.reshape(-1, *a.shape[2:])
    return ndtri((rankdata(flat, axis=0) - 0.375) / (flat.shape[0] + 0.25)).reshape(a.shape)


def rank_diagnostics(samples) -> tuple[np.ndarray, np.ndarray]:
    """Rank-normalised split-R̂ and bulk ESS of each coordinate of ``samples``.

    Parameters
    ----------
    samples : array
        ``(chain, draw, ...)``, at least 2 draws per chain after splitting.

    Returns
    -------
    rhat, ess : arrays of the trailing shape
        R̂ is the larger of the bulk R̂ (of the ranks' normal scores of the split chains)
        and the tail R̂ (the same of the distances from the median), as ArviZ's
        ``rhat(method="rank")`` computes it, to rounding. The bulk ESS is NumPyro's
        :func:`~numpyro.diagnostics.effective_sample_size` (Geyer's initial monotone
        sequence) of the same normal scores; ArviZ's estimator of the autocorrelations
        differs, and its bulk ESS by a few percent.

    References
    ----------
    Vehtari, A., Gelman, A., Simpson, D., Carpenter, B. & Bürkner, P.-C. (2021).
    Rank-normalization, folding, and localization: an improved R̂ for assessing
    convergence of MCMC. *Bayesian Analysis* 16(2), 667–718.
    """
    a = np.asarray(samples, np.float64)
    bulk = _z_scale(_split_chains(a))
    tail = _z_scale(_split_chains(np.abs(a - np.median(a, axis=(0, 1)))))
    return np.maximum(gelman_rubin(bulk), gelman_rubin(tail)), effective_sample_size(bulk)


def prediction_diagnostics(model: BNN, draws, x, method: str, *, stacklevel: int = 4) -> dict:
    """R̂ and ESS of the network's outputs on the first :data:`NUM_ROWS` rows of ``x``.

    Parameters
    ----------
    model : BNN
    draws : pytree
        Positions with leading ``(chain, draw)`` axes, at least 2 chains of 4 draws.
    x : array
        Training inputs.
    method : str
        Named in the warning.

    Returns
    -------
    dict
        ``rhat`` (the largest R̂ over outputs), ``ess`` (the smallest bulk ESS), both of
        :func:`rank_diagnostics`, and ``num_rows``. A ``UserWarning`` says when
        ``rhat > 1.05`` or ``ess < 100``.
    """
    rows = jnp.asarray(x[:NUM_ROWS])
    chains, num_draws = jax.tree.leaves(draws)[0].shape[:2]
    flat = jax.tree.map(lambda a: jnp.reshape(jnp.asarray(a), (-1, *a.shape[2:])), draws)

    def apply_all(positions, rows):
        return jax.lax.map(lambda q: model.apply(q, rows), positions)

    # kept for later fits of an equal model
    outputs = run_program(apply_all, program_key(model), flat, rows)
    f = np.concatenate([np.asarray(o, np.float64).reshape(chains, num_draws, -1)
                        for o in jax.tree.leaves(outputs)], axis=-1)
    rhat, ess = rank_diagnostics(f)
    worst_rhat, least_ess = float(np.nanmax(rhat)), float(np.nanmin(ess))
    problems = []
    if not worst_rhat <= RHAT_MAX:
        problems.append(f"R-hat up to {worst_rhat:.3g} (> {RHAT_MAX})")
    if not least_ess >= ESS_MIN:
        problems.append(f"ESS down to {least_ess:.3g} (< {ESS_MIN})")
    if problems:
        warnings.warn(
            f"{method}: the {chains} chains have not converged: {' and '.join(problems)} on "
            f"the predictions at {rows.shape[0]} training inputs; run longer (num_warmup, "
            "num_samples, thinning) or check the step size", UserWarning, stacklevel=stacklevel,
        )
    return {"rhat": worst_rhat, "ess": least_ess, "num_rows": int(rows.shape[0])}

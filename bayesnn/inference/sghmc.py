"""Stochastic gradient Hamiltonian Monte Carlo (Chen et al. 2014): the kernel and the method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from bayesnn.inference.diffusions import sghmc_dynamics
from bayesnn.inference.driver import EmptyInfo, SamplingAlgorithm
from bayesnn.inference.sgld import STEP_CURVATURE
from bayesnn.inference.sgmcmc import SGMCMC
from bayesnn.validation import check_range, config

__all__ = ["SGHMC", "SGHMCState", "sghmc"]


class SGHMCState(NamedTuple):
    position: Any
    momentum: Any  # v = η M⁻¹ r in Chen et al.'s parameterisation


def sghmc(alpha: float = 0.1) -> SamplingAlgorithm:
    """Stochastic gradient Hamiltonian Monte Carlo (Chen et al. 2014, eq. 15).

    SGD with momentum ``1 - α`` and learning rate ``η = step_size``, plus noise
    ``N(0, 2 α η T)`` on the momentum, which compensates the friction ``α`` (the gradient
    noise estimate ``β̂`` is 0). The momentum starts at 0 and is never resampled. A fixed
    diagonal ``preconditioner`` G is the inverse mass matrix. See
    :func:`~bayesnn.inference.diffusions.sghmc_dynamics`.

    References
    ----------
    Chen, T., Fox, E. B. & Guestrin, C. (2014). Stochastic gradient Hamiltonian Monte
    Carlo. *ICML*.
    """

    def init(position) -> SGHMCState:
        return SGHMCState(position, jax.tree.map(jnp.zeros_like, position))

    def step(rng_key, state: SGHMCState, grad, step_size, temperature=1.0,
             preconditioner=None) -> tuple[SGHMCState, EmptyInfo]:
        if preconditioner is None:
            preconditioner = jax.tree.map(lambda _: 1.0, state.position)
        return SGHMCState(*sghmc_dynamics(
            rng_key, state.position, state.momentum, grad, preconditioner, step_size, alpha,
            temperature
        )), EmptyInfo()

    return SamplingAlgorithm(init, step)


@config
@dataclass(frozen=True)
class SGHMC(SGMCMC):
    """Stochastic gradient Hamiltonian Monte Carlo (Chen et al. 2014, eq. 15).

    See :func:`sghmc`: SGD with momentum ``1 - alpha`` and learning rate ``step_size``,
    plus noise that leaves the posterior invariant.

    On a Gaussian target of precision λ the step (:func:`~bayesnn.inference.diffusions.
    sghmc_dynamics`) is a linear AR(2) recursion, stable while ``η λ < 2 (2 − α)``, whose
    stationary variance is exactly ``1 / (λ (1 − η λ / (2 (2 − α))))`` (the Lyapunov
    equation of the recursion; with ``α = 1`` it is SGLD's ``1 / (λ (1 − ε λ / 4))`` at
    ``ε = 2 η``).

    Parameters
    ----------
    step_size : float or None
        η, the learning rate of Chen et al. (ε² in Hamiltonian units). None (the default):
        ``η = 0.1 α / λ_max`` per chain (``λ_max`` as for :class:`~bayesnn.SGLD`: of
        ``G^½ H G^½`` after each warm-up window, ``G`` the adapted inverse mass matrix). The
        minibatch gradient's noise, of variance about ``(N/b) λ`` along ``λ``, enters the
        momentum as ``η² V`` against the injected ``2 α η``: a variance excess of up to
        ``(η λ / (2 α)) (N / b)``, ``2 / α`` times SGLD's at equal Euler bias (on a linear
        regression with ``α = 0.1`` and ``η λ_max`` at the stability rule's 0.19 it was
        +118%). The rule sets ``η λ_max / (2 α) = 0.05``, SGLD's ``ε λ_max / 4``, so that
        the gradient noise costs what it costs SGLD; the Euler excess
        ``η λ / (2 (2 − α))`` is then below 5% as well, and the step far inside the
        stability bound. Along flat directions (overdamped) SGHMC then mixes as SGLD
        does; along stiff ones its momentum mixes within ``~1/α`` steps.
    alpha : float
        Friction: the momentum decays by the factor ``1 - alpha`` per step, in (0, 1].
        ``alpha = 1`` is SGLD with ``ε = 2 η``.
    batch_size, num_samples, num_warmup, thinning, num_chains, temperature, schedule, init,
    augment, hyper
        As for :class:`~bayesnn.inference.sgmcmc.SGMCMC`.

    References
    ----------
    Chen, T., Fox, E. B. & Guestrin, C. (2014). Stochastic gradient Hamiltonian Monte
    Carlo. *ICML*.
    """

    alpha: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        check_range("alpha", self.alpha, 0, 1, closed="right")

    def kernel(self, data_size: int) -> SamplingAlgorithm:
        return sghmc(self.alpha)

    def stable_step_size(self, curvature):
        return STEP_CURVATURE * self.alpha / (2 * curvature)

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
    noise estimate ``β̂`` is 0). The momentum starts at 0 and is never resampled. ``step``
    takes an optional constant diagonal preconditioner ``G`` (default 1). See
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
        return SGHMCState(*sghmc_dynamics(
            rng_key, state.position, state.momentum, grad, step_size, alpha, temperature,
            preconditioner,
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
        per chain the smaller of two rules (``λ_max`` and the preconditioner ``G`` as for
        :class:`~bayesnn.SGLD`). The Euler excess ``η λ / (2 (2 − α))`` of the variance
        is held at 5%: ``η = 0.1 (2 − α) / λ_max``, 20 times inside the stability bound.
        The minibatch gradient's noise, of variance ``B`` (the largest preconditioned
        variance, :func:`~bayesnn.inference.sgmcmc.gradient_noise`; about ``(N/b) λ``),
        enters the momentum as ``η² B`` against the injected ``2 α η``: its excess
        ``η B / (2 α)`` is held at 5% too, ``η = 0.1 α / B`` (with ``α = 0.1`` and ``η λ``
        at 0.19 without that bound, a linear regression's variance excess was +118%).
        Along flat directions (overdamped) SGHMC mixes as SGLD does; along stiff ones its
        momentum mixes within ``~1/α`` steps.
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
        return STEP_CURVATURE * (2 - self.alpha) / (2 * curvature)

    def noise_step_size(self, noise):
        return jnp.where(noise > 0, STEP_CURVATURE * self.alpha
                         / (2 * jnp.where(noise > 0, noise, 1.0)), jnp.inf)

"""Stochastic gradient Langevin dynamics (Welling & Teh 2011): the kernel and the method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax

from bayesnn.inference.diffusions import preconditioned_langevin
from bayesnn.inference.driver import EmptyInfo, SamplingAlgorithm
from bayesnn.inference.sgmcmc import SGMCMC
from bayesnn.validation import config

__all__ = ["SGLD", "SGLDState", "STEP_CURVATURE", "sgld"]

STEP_CURVATURE = 0.2  # ε λ_max of the chosen step size: 5% variance excess along λ_max


class SGLDState(NamedTuple):
    position: Any


def sgld() -> SamplingAlgorithm:
    """Stochastic gradient Langevin dynamics (Welling & Teh 2011, eq. 4).

    ``θ ← θ + (ε/2) ĝ + N(0, T ε)``, with ``ε = step_size``: the papers' convention, twice
    the step size ``h`` of BlackJAX's ``sgld`` (``θ + h ĝ + N(0, 2 T h)``). It is
    :func:`~bayesnn.inference.diffusions.preconditioned_langevin` with ``G = 1`` (the
    multiplications by 1 compile away), rather than BlackJAX's Euler step, for the faster
    noise of :func:`~bayesnn.inference.diffusions.gaussian_noise`. A fixed diagonal
    ``preconditioner`` G (a pytree like the position) makes the step
    ``θ + (ε/2) G ĝ + N(0, T ε G)``.

    References
    ----------
    Welling, M. & Teh, Y. W. (2011). Bayesian learning via stochastic gradient Langevin
    dynamics. *ICML*.
    """

    def init(position) -> SGLDState:
        return SGLDState(position)

    def step(rng_key, state: SGLDState, grad, step_size, temperature=1.0,
             preconditioner=None) -> tuple[SGLDState, EmptyInfo]:
        if preconditioner is None:
            preconditioner = jax.tree.map(lambda _: 1.0, state.position)
        return SGLDState(preconditioned_langevin(
            rng_key, state.position, grad, preconditioner, step_size, temperature
        )), EmptyInfo()

    return SamplingAlgorithm(init, step)


@config
@dataclass(frozen=True)
class SGLD(SGMCMC):
    """Stochastic gradient Langevin dynamics (Welling & Teh 2011, eq. 4).

    ``θ ← θ + (ε/2) ĝ + N(0, T ε)``, with ``ĝ`` the minibatch estimate of ∇ log p(θ | D).
    On a Gaussian target the step is stable along a direction of posterior precision λ
    only while ``ε λ < 4``, and its stationary variance there is ``1 / (λ (1 − ε λ / 4))``:
    the discretisation inflates the variance by ``1 / (1 − ε λ / 4)``, most along the
    largest curvature ``λ_max``. The minibatch gradient's noise adds about
    ``(ε λ / 4)(N / b)`` more (Welling & Teh 2011, §4), which no step size that still mixes
    removes.

    Parameters
    ----------
    step_size : float or None
        ε, the paper's step size (twice the step size of BlackJAX's ``sgld``). None (the
        default): ``ε = 0.2 / λ_max`` per chain (:data:`STEP_CURVATURE`), with ``λ_max``
        the largest curvature of the minibatch-scaled ``−log p(θ | D)`` at the chain's
        start, and after each warm-up window that of ``G^½ H G^½`` for the preconditioner
        ``G`` adapted in it (the step then being ``θ + (ε/2) G ĝ + N(0, T ε G)``; see
        :class:`~bayesnn.inference.sgmcmc.SGMCMC`). ``ε λ_max = 0.2`` inflates the variance
        along the stiffest direction by ``1 / (1 − 0.05)``, about 5% (less along every
        other), and leaves a factor 20 below the stability limit for the curvature to grow
        between measurements or to be underestimated by power iteration; a larger constant
        mixes faster but its bias grows as ``ε λ / 4``, a smaller one mixes slower in
        proportion.
    batch_size, num_samples, num_warmup, thinning, num_chains, temperature, schedule, init,
    augment, hyper
        As for :class:`~bayesnn.inference.sgmcmc.SGMCMC`.

    Notes
    -----
    ``info`` as described for :class:`~bayesnn.inference.sgmcmc.SGMCMC`.

    References
    ----------
    Welling, M. & Teh, Y. W. (2011). Bayesian learning via stochastic gradient Langevin
    dynamics. *ICML*.
    Neal, R. M. (1996). *Bayesian Learning for Neural Networks*. Springer, ch. 3.
    Chen, T., Fox, E. B. & Guestrin, C. (2014). Stochastic gradient Hamiltonian Monte
    Carlo. *ICML*.
    Wenzel, F. et al. (2020). How good is the Bayes posterior in deep neural networks
    really? *ICML*.
    Zhang, R. et al. (2020). Cyclical stochastic gradient MCMC for Bayesian deep learning.
    *ICLR*.
    """

    def kernel(self, data_size: int) -> SamplingAlgorithm:
        return sgld()

    def stable_step_size(self, curvature):
        return STEP_CURVATURE / curvature

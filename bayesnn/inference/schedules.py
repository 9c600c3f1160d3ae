"""Step-size schedules for stochastic-gradient MCMC.

A schedule is a pure function of the step count ``t = 0, 1, 2, …`` (a traced integer inside
``lax.scan``, or a NumPy array on the host) returning a factor that multiplies the
method's ``step_size``: the step size at step ``t`` is ``step_size * schedule(t)``. Any
callable of that form works, optax schedules included. :class:`Cyclical` also splits
each cycle into an exploration and a sampling phase (Zhang et al. 2020); the samplers
inject noise and keep draws only in the sampling phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import jax.numpy as jnp
import optax

from bayesnn.validation import check_positive, check_range, config

__all__ = ["Constant", "PolynomialDecay", "Cyclical"]


@config
@dataclass(frozen=True)
class Constant:
    """A constant step size: the factor is 1 at every step."""

    def __call__(self, t):
        return jnp.ones(jnp.shape(t), jnp.float32)


@config
@dataclass(frozen=True)
class PolynomialDecay:
    """Polynomially decaying step size, ``ε_t = a (b + t)^(-γ)`` (Welling & Teh 2011, §3).

    The factor is ``(1 + t / b)^(-γ)``, so ``ε_0 = step_size`` and ``a = step_size · b^γ``.
    For ``γ ∈ (0.5, 1]`` the steps satisfy the Robbins–Monro conditions ``Σ ε_t = ∞``,
    ``Σ ε_t² < ∞``; Teh et al. (2016) find ``γ = 1/3`` optimal for SGLD's averages.

    Parameters
    ----------
    b : float
        Steps over which the step size stays near its initial value (> 0).
    gamma : float
        Decay exponent, in ``(0, 1]``.

    References
    ----------
    Welling, M. & Teh, Y. W. (2011). Bayesian learning via stochastic gradient Langevin
    dynamics. *ICML*.
    Teh, Y. W., Thiéry, A. H. & Vollmer, S. J. (2016). Consistency and fluctuations for
    stochastic gradient Langevin dynamics. *JMLR* 17.
    """

    b: float = 1000.0
    gamma: float = 0.55

    def __post_init__(self):
        check_positive(b=self.b)
        check_range("gamma", self.gamma, 0, 1, closed="right")

    def __call__(self, t):
        return (1.0 + jnp.asarray(t, jnp.float32) / self.b) ** -self.gamma


@config
@dataclass(frozen=True)
class Cyclical:
    """Cyclical cosine step size of cyclical SG-MCMC (Zhang et al. 2020, eq. 1).

    Within each cycle of ``L = cycle_length`` steps the factor falls from 1 to near 0,
    ``α_t / α_0 = [cos(π (t mod L) / L) + 1] / 2``. The first steps of a cycle, those with
    ``(t mod L) / L < exploration`` (the paper's ``β``), explore: the samplers inject no
    noise there (plain stochastic-gradient steps, as in the paper's Algorithm 1) and keep
    no draws. The remaining steps sample.

    Parameters
    ----------
    cycle_length : int
        Steps per cycle (the paper's ``⌈K / M⌉`` for ``K`` steps in ``M`` cycles).
    exploration : float
        Fraction of each cycle spent exploring, in ``[0, 1)``.

    References
    ----------
    Zhang, R., Li, C., Zhang, J., Chen, C. & Wilson, A. G. (2020). Cyclical stochastic
    gradient MCMC for Bayesian deep learning. *ICLR*.
    """

    cycle_length: int
    exploration: float = 0.5

    def __post_init__(self):
        check_positive(cycle_length=self.cycle_length)
        check_range("exploration", self.exploration, 0, 1, closed="left")
        if self.exploration_steps >= self.cycle_length:
            raise ValueError(f"a cycle of {self.cycle_length} steps with "
                             f"exploration={self.exploration} has no sampling step")

    @property
    def exploration_steps(self) -> int:
        """Steps per cycle in the exploration phase: those with ``r / L < exploration``."""
        return math.ceil(Fraction(self.exploration) * self.cycle_length)  # exact arithmetic

    def __call__(self, t):
        L = self.cycle_length
        return optax.cosine_decay_schedule(1.0, L)(jnp.asarray(t) % L)

    def sampling_step(self, t):
        """Index of step ``t`` within its cycle's sampling phase (negative while exploring)."""
        return t % self.cycle_length - self.exploration_steps

    def sampling(self, t):
        """True where step ``t`` is in the sampling phase of its cycle."""
        return self.sampling_step(t) >= 0

"""Preconditioned SGLD (Li et al. 2016): the kernel and the method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from bayesnn.inference.base import check_positive
from bayesnn.inference.diffusions import preconditioned_langevin
from bayesnn.inference.driver import EmptyInfo, SamplingAlgorithm
from bayesnn.inference.sgld import STEP_CURVATURE
from bayesnn.inference.sgmcmc import SGMCMC
from bayesnn.validation import check_range, config

__all__ = ["PSGLD", "PSGLDState", "psgld"]


class PSGLDState(NamedTuple):
    position: Any
    square_avg: Any  # V: running average of the squared per-example gradient


def psgld(data_size: int, alpha: float = 0.99, eps: float = 1e-5) -> SamplingAlgorithm:
    """Preconditioned SGLD with an RMSprop preconditioner (Li et al. 2016, Alg. 1).

    ``V ← α V + (1 - α) ḡ ⊙ ḡ``, ``G = 1 ⊘ (λ + √V)`` and
    ``θ ← θ + (ε/2) G ⊙ ĝ + N(0, T ε G)``, where ``ḡ = ĝ / N`` is the average per-example
    gradient (the paper's ``ḡ``; here the prior's gradient enters it divided by N), so that
    ``step_size`` ε and ``eps`` λ mean what they mean in the paper. The correction term
    ``Γ(θ)`` is omitted, as the paper recommends: it needs derivatives of ``G`` and is
    negligible when ``α`` is close to 1. ``V`` starts at 0.

    References
    ----------
    Li, C., Chen, C., Carlson, D. & Carin, L. (2016). Preconditioned stochastic gradient
    Langevin dynamics for deep neural networks. *AAAI*.
    """

    def init(position) -> PSGLDState:
        return PSGLDState(position, jax.tree.map(jnp.zeros_like, position))

    def step(rng_key, state: PSGLDState, grad, step_size,
             temperature=1.0) -> tuple[PSGLDState, EmptyInfo]:
        square_avg = jax.tree.map(
            lambda v, g: alpha * v + (1 - alpha) * (g / data_size) ** 2, state.square_avg, grad
        )
        precond = jax.tree.map(lambda v: 1 / (eps + jnp.sqrt(v)), square_avg)
        position = preconditioned_langevin(
            rng_key, state.position, grad, precond, step_size, temperature
        )
        return PSGLDState(position, square_avg), EmptyInfo()

    return SamplingAlgorithm(init, step)


@config
@dataclass(frozen=True)
class PSGLD(SGMCMC):
    """Preconditioned SGLD with an RMSprop preconditioner (Li et al. 2016, Alg. 1).

    See :func:`psgld`; the correction term ``Γ`` is omitted, as the paper recommends.
    Without it the preconditioner must change slowly compared with the chain: on a
    Bayesian linear regression that mixes within ~50 steps, ``alpha = 0.99`` inflates the
    posterior variance by 10–30% while ``alpha = 0.999`` is within a few percent.

    ``V`` starts at the variance of ``ḡ = ĝ_k / N`` over the whole minibatches ``k`` of
    the first :func:`~bayesnn.inference.step_size.curvature_rows` rows at the chain's start
    (``ḡ²`` where they make one minibatch): the level the average settles to near a mode,
    where the gradient noise dominates ``E[ḡ²]``. The paper's 0 makes ``G = 1/λ`` at the
    first steps, and a start at ``E[ḡ²]`` far from a mode makes ``G`` tiny for
    ``~1/(1 − α)`` steps.

    Parameters
    ----------
    step_size : float or None
        ε of Li et al.: the drift is ``(ε/2) G ĝ`` and the noise ``N(0, T ε G)``. None
        (the default): ``ε = 0.2 / λ_max(G^½ H G^½)`` per chain, SGLD's rule
        (:class:`~bayesnn.SGLD`) on the preconditioned curvature, which is what the
        preconditioned step sees (:func:`~bayesnn.inference.step_size.
        preconditioned_curvature`), with ``G`` from the starting ``V`` and again from the
        ``V`` at the end of warm-up.
    alpha : float
        Decay of the running average of squared gradients, in (0, 1).
    eps : float
        λ, added to ``√V`` in the preconditioner's denominator.
    batch_size, num_samples, num_warmup, thinning, num_chains, temperature, schedule, init,
    augment, hyper
        As for :class:`~bayesnn.inference.sgmcmc.SGMCMC`.

    References
    ----------
    Li, C., Chen, C., Carlson, D. & Carin, L. (2016). Preconditioned stochastic gradient
    Langevin dynamics for deep neural networks. *AAAI*.
    """

    alpha: float = 0.99
    eps: float = 1e-5
    adapts_preconditioner: ClassVar[bool] = False  # its own G: RMSprop's

    def __post_init__(self):
        super().__post_init__()
        check_positive(eps=self.eps)
        check_range("alpha", self.alpha, 0, 1)

    def kernel(self, data_size: int) -> SamplingAlgorithm:
        return psgld(data_size, self.alpha, self.eps)

    def stable_step_size(self, curvature):
        return STEP_CURVATURE / curvature

    def preconditioner(self, state: PSGLDState):
        return jax.tree.map(lambda v: 1 / (self.eps + jnp.sqrt(v)), state.square_avg)

    def start_state(self, kernel, position, minibatch_grads, data_size):
        def noise(g):  # the variance of ḡ over minibatches; ḡ² with a single one
            g = g / data_size
            return jnp.var(g, axis=0, ddof=1) if g.shape[0] > 1 else g[0] ** 2

        return kernel.init(position)._replace(
            square_avg=jax.tree.map(noise, minibatch_grads()))

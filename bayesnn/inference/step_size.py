"""Step sizes from the problem: the largest curvature of the negative log posterior.

A Langevin or Hamiltonian step is stable along a direction of curvature ``λ`` only while
``ε λ`` stays below a constant of the integrator (4 for SGLD's ``θ + (ε/2) ĝ``, Welling & Teh
2011's convention; about ``2 (2 − α)`` for SGHMC's momentum form), and its discretisation
bias grows with ``ε λ``. The largest curvature ``λ_max`` of ``−log p(θ | D)`` therefore sets
the scale of a step size that works on data nobody tuned for. It is found by power iteration
on Hessian-vector products (Pearlmutter 1994), each one forward-over-reverse
differentiation of the log density: the cost of a few gradient evaluations, never the
Hessian itself.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

__all__ = ["hvp", "largest_curvature"]


def hvp(fn: Callable, position, vector):
    """``∇²fn(position) · vector`` for a scalar ``fn`` of a pytree, by forward-over-reverse
    differentiation (Pearlmutter 1994)."""
    return jax.jvp(jax.grad(fn), (position,), (vector,))[1]


def largest_curvature(rng_key, logdensity_fn: Callable, position, *, num_iters: int = 20):
    """The largest-magnitude eigenvalue of ``−∇² logdensity_fn`` at ``position``.

    Power iteration from a random direction drawn from ``rng_key``: ``v ← H v / ‖H v‖``, the
    estimate being the Rayleigh quotient ``vᵀ H v`` of the last ``v``. The error shrinks as
    ``(λ_2 / λ_1)^(2k)``; when the top eigenvalues are close the estimate is still a value
    between them, which is what a step-size rule needs. Away from a mode the Hessian may
    have negative eigenvalues; the magnitude of the largest is returned, a conservative
    scale for stability.

    Parameters
    ----------
    rng_key : PRNG key
    logdensity_fn : callable
        ``position -> scalar``; e.g. the minibatch-scaled log posterior of
        :meth:`bayesnn.BNN.logdensity_fn` on one batch.
    position : pytree
    num_iters : int
        Hessian-vector products (the first one is from the random start).

    Returns
    -------
    jax.Array
        ``|λ_max|``, a scalar.

    References
    ----------
    Pearlmutter, B. A. (1994). Fast exact multiplication by the Hessian. *Neural
    Computation* 6(1), 147–160.
    """
    flat, unravel = ravel_pytree(position)

    def neg_hvp(v):
        return -ravel_pytree(hvp(logdensity_fn, position, unravel(v)))[0]

    def body(_, v):
        hv = neg_hvp(v)
        return hv / jnp.maximum(jnp.linalg.norm(hv), jnp.finfo(hv.dtype).tiny)

    v0 = jax.random.normal(rng_key, flat.shape, flat.dtype)
    v = jax.lax.fori_loop(0, num_iters - 1, body, v0 / jnp.linalg.norm(v0))
    return jnp.abs(jnp.vdot(v, neg_hvp(v)))

"""Step sizes from the problem: the largest curvature of the negative log posterior.

A Langevin or Hamiltonian step is stable along a direction of curvature ``λ`` only while
``ε λ`` stays below a constant of the integrator (4 for SGLD's ``θ + (ε/2) ĝ``, Welling & Teh
2011's convention; about ``2 (2 − α)`` for SGHMC's momentum form), and its discretisation
bias grows with ``ε λ``. The largest curvature ``λ_max`` of ``−log p(θ | D)`` therefore sets
the scale of a step size that works on data nobody tuned for. It is found by power iteration
on Hessian-vector products (Pearlmutter 1994), each one forward-over-reverse
differentiation of the log density: the cost of a few gradient evaluations, never the
Hessian itself. With a diagonal preconditioner ``G`` (pSGLD) the step sees the curvature of
``G^½ H G^½`` instead (:func:`preconditioned_curvature`).

The SG-MCMC methods measure it on :func:`curvature_rows` rows of the training data, the
log-likelihood scaled to all ``N`` rows as in every minibatch step.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

__all__ = ["curvature_rows", "hvp", "largest_curvature", "preconditioned_curvature"]


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


def preconditioned_curvature(rng_key, logdensity_fn: Callable, position, preconditioner=None, *,
                             num_iters: int = 20):
    """:func:`largest_curvature` of ``u ↦ logdensity_fn(position + G^½ ⊙ u)`` at ``u = 0``:
    the top eigenvalue of ``G^½ (−∇² log p) G^½``, what a step preconditioned by the
    diagonal ``G`` (a pytree like ``position``) sees. ``preconditioner=None`` is ``G = 1``."""
    if preconditioner is None:
        return largest_curvature(rng_key, logdensity_fn, position, num_iters=num_iters)
    root = jax.tree.map(jnp.sqrt, preconditioner)

    def along(u):
        return logdensity_fn(jax.tree.map(lambda p, r, v: p + r * v, position, root, u))

    zero = jax.tree.map(jnp.zeros_like, position)
    return largest_curvature(rng_key, along, zero, num_iters=num_iters)


def curvature_rows(data_size: int, batch_size: int) -> int:
    """Rows the curvature is measured on: ``min(N, 4 b)``, the first rows of the data.

    Four minibatches average out most of one batch's noise in the curvature, at the cost
    of about 4 · 2 · ``num_iters`` gradient evaluations; with the full batch (``b = N``)
    it is the data itself.
    """
    return min(data_size, 4 * batch_size)

"""The diffusion steps of stochastic-gradient MCMC, on pytrees.

Small pure functions that the kernels (:mod:`~bayesnn.inference.sgld`,
:mod:`~bayesnn.inference.psgld`, :mod:`~bayesnn.inference.sghmc`) are wired from: standard
normal noise shaped like a position, a preconditioned Langevin step and SGHMC's
friction-and-momentum step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bayesnn import prng
from bayesnn.inference.base import classic_threefry

__all__ = ["gaussian_noise", "preconditioned_langevin", "sghmc_dynamics"]


def gaussian_noise(rng_key, tree):
    """Standard normal noise shaped like ``tree``: one key split off per leaf.

    BlackJAX's ``generate_gaussian_noise`` ravels the tree into one vector and back, which
    on CPU made an SGLD step on a 665k-weight MLP ~3x slower than drawing leaf by leaf.
    The keys are split and the draws made with the classic Threefry
    (:func:`bayesnn.prng.normal`, fused into one pass), so the noise is the same on every
    backend.
    """
    leaves, treedef = jax.tree.flatten(tree)
    with classic_threefry():
        keys = jax.random.split(rng_key, len(leaves))
    noise = [prng.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(treedef, noise)


def preconditioned_langevin(rng_key, position, grad, preconditioner, step_size, temperature=1.0):
    """Euler step of Langevin dynamics with a diagonal preconditioner ``G``.

    ``θ ← θ + (ε/2) G ⊙ ĝ + N(0, T ε G)`` (Li et al. 2016, Alg. 1, without ``Γ``); with
    ``G = 1`` this is SGLD (Welling & Teh 2011, eq. 4).
    """
    noise = gaussian_noise(rng_key, position)
    scale = jnp.sqrt(temperature * step_size)  # √G apart: loop-invariant for a fixed G
    return jax.tree.map(
        lambda p, g, c, n: p + 0.5 * step_size * c * g + scale * jnp.sqrt(c) * n,
        position, grad, preconditioner, noise,
    )


def sghmc_dynamics(rng_key, position, momentum, grad, preconditioner, step_size, alpha,
                   temperature=1.0):
    """One step of SGHMC with friction (Chen et al. 2014, eq. 15, with ``β̂ = 0``) and a
    diagonal inverse mass matrix ``G``.

    ``v ← (1 - α) v + η G ⊙ ĝ + N(0, 2 α η T G)``, then ``θ ← θ + v``: the momentum is
    updated with the gradient at the current position before the position moves
    (symplectic Euler). With ``M = G⁻¹`` and friction ``C ∝ M`` this is Chen et al.'s
    eq. 15 in ``v = η M⁻¹ r``; with ``G = 1`` their unit-mass form. BlackJAX's
    ``diffusions.sghmc`` moves the position with the old momentum instead (explicit
    Euler), which is stable only for ``η λ_max < α`` (in these units) and is therefore not
    used here.

    Returns
    -------
    position, momentum
    """
    noise = gaussian_noise(rng_key, position)
    scale = jnp.sqrt(2 * alpha * step_size * temperature)  # √G apart: loop-invariant for a fixed G
    momentum = jax.tree.map(
        lambda v, g, c, n: (1 - alpha) * v + step_size * c * g + scale * jnp.sqrt(c) * n,
        momentum, grad, preconditioner, noise,
    )
    return jax.tree.map(jnp.add, position, momentum), momentum

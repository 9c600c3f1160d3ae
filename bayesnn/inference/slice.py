"""Univariate slice sampling with stepping out and shrinkage (Neal 2003).

One update draws a new value of a scalar ``x`` whose (unnormalised) log-density is
``logdensity_fn(x) -> (logp, aux)``: ``aux`` is any pytree the caller wants back for the
accepted point (a cache of the forward pass, say), so the accepted point is never
evaluated twice.

References
----------
Neal, R. M. (2003). Slice sampling. *Annals of Statistics* 31(3), 705–767: Fig. 3
(stepping out with at most ``m`` steps) and Fig. 5 (shrinkage).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["SliceInfo", "slice_sample"]


class SliceInfo(NamedTuple):
    """Cost of one update: log-density evaluations, and whether shrinkage gave up."""

    num_evals: jax.Array
    exhausted: jax.Array


def _step_out(logdensity_fn, edge, budget, level, step):
    """Move ``edge`` by ``step`` while it is inside the slice and the budget lasts (Fig. 3)."""

    def inside(e):
        return logdensity_fn(e)[0] >= level

    def body(carry):
        e, n, _, evals = carry
        e = e + step
        return e, n - 1, inside(e), evals + 1

    edge, _, _, evals = jax.lax.while_loop(
        lambda c: c[2] & (c[1] > 0), body, (edge, budget, inside(edge), jnp.int32(1))
    )
    return edge, evals


def slice_sample(
    key: jax.Array,
    logdensity_fn: Callable[[jax.Array], tuple[jax.Array, Any]],
    x0: jax.Array,
    logp0: jax.Array,
    aux0: Any,
    width: float,
    max_steps_out: int = 10,
    max_shrinks: int = 100,
) -> tuple[jax.Array, jax.Array, Any, SliceInfo]:
    """One slice-sampling update of the scalar ``x0`` (Neal 2003, Figs. 3 and 5).

    Draws the level ``y = logp0 - Exp(1)``, places an interval of size ``width`` at random
    around ``x0``, steps it out by ``width`` at most ``max_steps_out - 1`` times in all (the
    budget split at random between the two ends, which keeps the update reversible), then
    draws uniformly from the interval, shrinking it towards ``x0`` after each rejection.

    Parameters
    ----------
    key
        PRNG key.
    logdensity_fn
        ``logdensity_fn(x) -> (logp, aux)`` for a scalar ``x``.
    x0, logp0, aux0
        Current point, its log-density and its ``aux``.
    width
        Initial interval size ``w``; stepping out corrects a too small one, shrinkage a
        too large one.
    max_steps_out
        Neal's ``m``.
    max_shrinks
        Guard against a non-finite density: after this many rejections the update keeps
        ``x0`` (and reports ``exhausted``). With a finite density shrinkage accepts long
        before, since the interval collapses onto ``x0``, which is always in the slice.

    Returns
    -------
    x, logp, aux, SliceInfo
    """
    k_level, k_place, k_split, k_shrink = jax.random.split(key, 4)
    dtype = jnp.result_type(x0)
    level = logp0 - jax.random.exponential(k_level, (), dtype)
    left = x0 - width * jax.random.uniform(k_place, (), dtype)
    budget_left = jnp.floor(max_steps_out * jax.random.uniform(k_split, (), dtype)).astype(int)
    budget_right = max_steps_out - 1 - budget_left
    right, evals_right = _step_out(logdensity_fn, left + width, budget_right, level, width)
    left, evals_left = _step_out(logdensity_fn, left, budget_left, level, -width)

    def body(carry):
        key, lo, hi, x, logp, aux, _, n = carry
        key, sub = jax.random.split(key)
        x1 = lo + jax.random.uniform(sub, (), dtype) * (hi - lo)
        logp1, aux1 = logdensity_fn(x1)
        accept = logp1 >= level
        lo = jnp.where(x1 < x0, x1, lo)
        hi = jnp.where(x1 < x0, hi, x1)
        pick = lambda a, b: jnp.where(accept, a, b)  # noqa: E731
        aux = jax.tree.map(pick, aux1, aux)
        return key, lo, hi, pick(x1, x), pick(logp1, logp), aux, accept, n + 1

    init = (k_shrink, left, right, x0, logp0, aux0, jnp.bool_(False), jnp.int32(0))
    _, _, _, x, logp, aux, accepted, shrinks = jax.lax.while_loop(
        lambda c: ~c[6] & (c[7] < max_shrinks), body, init
    )
    info = SliceInfo(evals_left + evals_right + shrinks, ~accepted)
    return x, logp, aux, info

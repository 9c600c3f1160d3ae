"""Univariate slice sampling with stepping out and shrinkage (Neal 2003).

One update draws a new value of a scalar ``x`` whose (unnormalised) log-density is
``logdensity_fn(x, *args)``. The ``args`` (a cache of the forward pass, say) travel through
the loop state and come back with the result, so large arrays are read in place: a value
captured by the loop's closure and used again after it would be copied at every update.

References
----------
Neal, R. M. (2003). Slice sampling. *Annals of Statistics* 31(3), 705–767: Fig. 3
(stepping out with at most ``m`` steps) and Fig. 5 (shrinkage).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["SliceInfo", "slice_sample"]


class SliceInfo(NamedTuple):
    """Cost of one update: log-density evaluations, and whether shrinkage gave up."""

    num_evals: jax.Array
    exhausted: jax.Array


class _Carry(NamedTuple):
    key: jax.Array
    phase: jax.Array  # 0: step out left, 1: step out right, 2: shrink
    left: jax.Array
    right: jax.Array
    budget_left: jax.Array
    budget_right: jax.Array
    x: jax.Array
    logp: jax.Array
    args: tuple
    accepted: jax.Array
    evals: jax.Array
    shrinks: jax.Array


def slice_sample(
    key: jax.Array,
    logdensity_fn: Callable[..., jax.Array],
    x0: jax.Array,
    logp0: jax.Array,
    width: float,
    max_steps_out: int = 10,
    max_shrinks: int = 100,
    args: tuple = (),
) -> tuple[jax.Array, jax.Array, tuple, SliceInfo]:
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
        ``logdensity_fn(x, *args) -> logp`` for a scalar ``x``.
    x0, logp0
        Current point and its log-density.
    width
        Initial interval size ``w``; stepping out corrects a too small one, shrinkage a
        too large one.
    max_steps_out
        Neal's ``m``.
    max_shrinks
        Guard against a non-finite density: after this many rejections the update keeps
        ``x0`` (and reports ``exhausted``). With a finite density shrinkage accepts long
        before, since the interval collapses onto ``x0``, which is always in the slice.
    args
        Extra arguments of ``logdensity_fn``, returned unchanged (see the module notes).

    Returns
    -------
    x, logp, args, SliceInfo
    """
    k_level, k_place, k_split, k_shrink = jax.random.split(key, 4)
    dtype = jnp.result_type(x0)
    level = logp0 - jax.random.exponential(k_level, (), dtype)
    left = x0 - width * jax.random.uniform(k_place, (), dtype)
    budget_left = jnp.floor(max_steps_out * jax.random.uniform(k_split, (), dtype)).astype(int)
    budget_right = max_steps_out - 1 - budget_left

    # One loop, one evaluation per iteration, so the density is traced once: phase 0 steps
    # the left end out, phase 1 the right end, phase 2 shrinks.
    def body(c: _Carry) -> _Carry:
        phase = jnp.where((c.phase == 0) & (c.budget_left == 0), 1, c.phase)
        phase = jnp.where((phase == 1) & (c.budget_right == 0), 2, phase)
        key, sub = jax.random.split(c.key)
        proposal = c.left + jax.random.uniform(sub, (), dtype) * (c.right - c.left)
        point = jnp.select([phase == 0, phase == 1], [c.left, c.right], proposal)
        logp = logdensity_fn(point, *c.args)
        inside = logp >= level
        out_left, out_right = inside & (phase == 0), inside & (phase == 1)
        accept = inside & (phase == 2)
        shrink = ~inside & (phase == 2)
        pick = lambda a, b: jnp.where(accept, a, b)  # noqa: E731
        return _Carry(
            key=key,
            phase=jnp.where(~inside & (phase < 2), phase + 1, phase),
            left=jnp.where(out_left, c.left - width,
                           jnp.where(shrink & (point < x0), point, c.left)),
            right=jnp.where(out_right, c.right + width,
                            jnp.where(shrink & (point >= x0), point, c.right)),
            budget_left=c.budget_left - out_left,
            budget_right=c.budget_right - out_right,
            x=pick(point, c.x), logp=pick(logp, c.logp), args=c.args,
            accepted=accept, evals=c.evals + 1, shrinks=c.shrinks + (phase == 2),
        )

    init = _Carry(k_shrink, jnp.int32(0), left, left + width, budget_left, budget_right,
                  x0, logp0, tuple(args), jnp.bool_(False), jnp.int32(0), jnp.int32(0))
    c = jax.lax.while_loop(lambda c: ~c.accepted & (c.shrinks < max_shrinks), body, init)
    return c.x, c.logp, c.args, SliceInfo(c.evals, ~c.accepted)

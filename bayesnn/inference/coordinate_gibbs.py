"""Coordinate-wise Gibbs sampling by univariate slice sampling (Neal 2003).

The classic baseline: every weight in turn drawn from its full conditional
p(w_i | w_-i, data) by :func:`~bayesnn.inference.slice.slice_sample`, with the forward pass
of a dense network cached and updated one unit's row at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from bayesnn.bnn import BNN, Batch, DenseView
from bayesnn.data import Dataset
from bayesnn.inference.base import check_positive
from bayesnn.inference.driver import SamplingAlgorithm, sample_chains, thinned_steps
from bayesnn.inference.gibbs import (
    check_gibbs_args,
    flat_inputs,
    gibbs_posterior,
    set_row,
    start_chains,
)
from bayesnn.inference.map import MAP
from bayesnn.inference.slice import slice_sample
from bayesnn.posterior import Posterior
from bayesnn.tree import flatten_paths, unflatten_paths
from bayesnn.validation import config

__all__ = [
    "CoordinateGibbs", "CoordinateGibbsInfo", "GibbsState", "coordinate_gibbs",
    "num_coordinates",
]


def _loglik(model: BNN, outputs, y, lik_params) -> jax.Array:
    """Tempered full-data log-likelihood from the network outputs."""
    return jnp.sum(model.likelihood.log_prob(outputs, y, lik_params)) / model.likelihood.temperature


class GibbsState(NamedTuple):
    """Position and its full-data log-density."""

    position: Any
    logdensity: jax.Array


class CoordinateGibbsInfo(NamedTuple):
    """Per sweep: log-density evaluations, and coordinates whose shrinkage gave up."""

    num_evals: jax.Array
    num_exhausted: jax.Array


class _Cache(NamedTuple):
    """The forward pass at the current position, reused by every update of a sweep.

    ``preacts``: for an MLP each layer's pre-activations, transposed to ``(width, N)`` so a
    unit's row is contiguous, the last being the outputs; for other networks
    ``(outputs.T,)``. ``loglik``: the tempered full-data log-likelihood.
    """

    position: Any
    preacts: tuple
    loglik: jax.Array


class _Unit(NamedTuple):
    """What the density of one MLP weight needs, all small: the slice loop carries only this."""

    row: jax.Array  # pre-activations of the weight's unit j, (N,)
    slope: jax.Array  # their derivative in the weight: the unit's input i (kernel) or 1 (bias)
    downstream: jax.Array  # the next layer's pre-activations; for an output unit, the outputs
    fan_out: jax.Array | None  # the next layer's weights from unit j; None for an output unit
    later: tuple  # (kernel, bias) of the layers after the next
    unit: jax.Array  # j
    lik: dict  # likelihood parameters


def _set_element(position, path: str, idx, value):
    named = flatten_paths(position)
    leaf = named[path]
    flat = jax.lax.dynamic_update_index_in_dim(leaf.reshape(-1), value.astype(leaf.dtype), idx, 0)
    named[path] = flat.reshape(leaf.shape)
    return unflatten_paths(named, position)


def _mlp_unit(view: DenseView, cache: _Cache, inputs_t, layer: int, kind: str, idx) -> _Unit:
    """The :class:`_Unit` of coordinate ``idx`` of a layer's ``kind`` (kernel or bias)."""
    zs, act, position = cache.preacts, view.activation, cache.position
    width = zs[layer].shape[0]
    i, j = (idx // width, idx % width) if kind == "kernel" else (0, idx)
    row = zs[layer][j]
    if kind == "kernel":
        slope = inputs_t[i] if layer == 0 else act(zs[layer - 1][i])
    else:
        slope = jnp.ones_like(row)
    last = layer + 1 == len(zs)
    return _Unit(
        row, slope, zs[layer] if last else zs[layer + 1],
        None if last else view.kernel(position, layer + 1)[j],
        tuple((view.kernel(position, m), view.bias(position, m))
              for m in range(layer + 2, len(zs))),
        j, position["lik"],
    )


def _mlp_forward_from(act, unit: _Unit, delta) -> tuple:
    """Pre-activations after adding ``delta`` to the weight: the unit's new row (O(N)),
    then, below an output layer, the next layer's moved by a rank-one term
    (O(N · width)) and the later layers in full."""
    new = unit.row + delta * unit.slope
    if unit.fan_out is None:
        return (new,)
    zs = [unit.downstream + jnp.outer(unit.fan_out, act(new) - act(unit.row))]
    for kernel, bias in unit.later:
        zs.append(kernel.T @ act(zs[-1]) + bias[:, None])
    return (new, *zs)


def _element_logprob(d: dist.Distribution, shape, idx, v) -> jax.Array:
    """log-density of element ``idx`` of a factorised distribution over a leaf at ``v``:
    O(1) when the parameters are shared by the leaf (an expanded scalar distribution),
    else by evaluating the whole leaf."""
    if d.batch_shape == ():
        return d.log_prob(v)
    if isinstance(d, dist.ExpandedDistribution) and d.base_dist.batch_shape == ():
        return d.base_dist.log_prob(v)
    return jnp.ravel(d.log_prob(jnp.broadcast_to(v, shape)))[idx]


def _coordinate_priors(model: BNN) -> dict[str, dist.Distribution]:
    """The prior of every Bayesian leaf of the position, by path (``net/...``, ``lik/...``)."""
    net = model.prior.distributions(model.init_position["net"])
    lik = model.likelihood.param_priors()
    return {f"net/{p}": d for p, d in net.items()} | {f"lik/{n}": d for n, d in lik.items()}


def num_coordinates(model: BNN) -> int:
    """Number of coordinates a :class:`CoordinateGibbs` sweep updates."""
    named = flatten_paths(model.init_position)
    return sum(int(named[p].size) for p in _coordinate_priors(model))


def coordinate_gibbs(
    model: BNN, *, scan: str = "systematic", slice_width: float = 1.0, max_steps_out: int = 10
) -> SamplingAlgorithm:
    """Coordinate-wise Gibbs sampling by univariate slice sampling.

    ``step(key, state, batch, order_key)`` updates every Bayesian coordinate of the position
    (weights with a prior, likelihood parameters; point estimates stay) once, each drawn
    from p(w_i | w_-i, data) by :func:`~bayesnn.inference.slice.slice_sample` on the
    full-data log-density of :meth:`BNN.logdensity_fn`; ``batch`` must hold all the data.
    The sweep goes leaf by leaf (``layers/0/bias``, ``layers/0/kernel``, ...): in the
    leaves' order and in index order within each (``scan="systematic"``), or in a random
    order of the leaves drawn from ``order_key`` and a random order within each leaf
    drawn from ``key`` (``scan="random"``). Chains under ``vmap`` share ``order_key``, so
    the choice of leaf stays a branch rather than a select over all leaves.

    Cost. Each update evaluates the density k ≈ 5–10 times (stepping out, shrinkage), and
    every evaluation reuses the forward pass of the sweep's cache. For a network with a
    dense view (:attr:`~bayesnn.BNN.dense_view`: an MLP) the cache holds every layer's
    pre-activations (transposed, so a unit's row is contiguous): a weight of the output
    layer moves one output row (O(N)); a weight of the layer below moves one row of its
    pre-activations and the outputs by a rank-one term (O(N · outputs)); deeper weights
    also recompute the layers above the next. The slice loop carries only these few rows
    (:class:`_Unit`); the cache is updated in place once, at the accepted value. A sweep
    of a one-hidden-layer MLP with P weights thus costs O(k · P · N · outputs);
    likelihood parameters reuse the outputs. Other networks run a full forward pass per
    evaluation: O(k · P² · N) per sweep. The cache is rebuilt at the start of every
    sweep, so rounding errors do not accumulate.
    """
    if scan not in ("systematic", "random"):
        raise ValueError(f'scan must be "systematic" or "random", got {scan!r}')
    view = model.dense_view
    act = None if view is None else view.activation
    # coordinate path -> (layer, "kernel" or "bias") of the dense view
    where = {} if view is None else {
        f"net/{getattr(layer, kind)}": (i, kind)
        for i, layer in enumerate(view.layers) for kind in ("kernel", "bias")
    }
    priors = _coordinate_priors(model)
    shapes = {p: v.shape for p, v in flatten_paths(model.init_position).items() if p in priors}

    def cache_at(position, x, y, preacts=None):
        if preacts is None:
            zs = (model.apply(position, x),) if view is None else view.preactivations(position, x)
            preacts = tuple(z.T for z in zs)
        return _Cache(position, preacts, _loglik(model, preacts[-1].T, y, position["lik"]))

    def context(path, cache, idx, x_t):
        """What the density of one coordinate needs besides its value."""
        if path.startswith("lik/"):
            return cache.preacts[-1], cache.position["lik"]
        if act is None:
            return cache.position
        return _mlp_unit(view, cache, x_t, *where[path], idx)

    def loglik(path, idx, value, ctx, v, x, y):
        """Full-data log-likelihood with the coordinate at ``v`` instead of ``value``."""
        if path.startswith("lik/"):
            outputs_t, lik = ctx
            return _loglik(model, outputs_t.T, y, _set_element({"lik": lik}, path, idx, v)["lik"])
        if act is None:
            position = _set_element(ctx, path, idx, v)
            return _loglik(model, model.apply(position, x), y, position["lik"])
        forward = _mlp_forward_from(act, ctx, v - value)
        outputs = forward[-1] if ctx.fan_out is not None else set_row(ctx.downstream, ctx.unit,
                                                                         forward[0])
        return _loglik(model, outputs.T, y, ctx.lik)

    def commit(path, cache, idx, value, ctx, v, x, y) -> _Cache:
        """The cache with the coordinate at ``v``."""
        position = _set_element(cache.position, path, idx, v)
        if path.startswith("lik/"):
            return cache_at(position, x, y, cache.preacts)
        if act is None:
            return cache_at(position, x, y)
        layer = where[path][0]
        forward = _mlp_forward_from(act, ctx, v - value)
        zs = list(cache.preacts)
        zs[layer] = set_row(zs[layer], ctx.unit, forward[0])
        zs[layer + 1:] = forward[1:]
        return cache_at(position, x, y, tuple(zs))

    def leaf_sweep(path, key, cache, x, x_t, y):
        """Update every coordinate of one leaf; returns the cache and the sweep's counts."""
        size = math.prod(shapes[path])
        k_order, k_updates = jax.random.split(key)
        order = jnp.arange(size) if scan == "systematic" else jax.random.permutation(
            k_order, size)
        prior = partial(_element_logprob, priors[path], shapes[path])

        def body(i, carry):
            cache, evals, exhausted = carry
            idx = order[i]
            value = flatten_paths(cache.position)[path].reshape(-1)[idx]

            def logdensity(v, ctx, y):
                return loglik(path, idx, value, ctx, v, x, y) + prior(idx, v)

            # The slice loop gets the context and data as arguments, not in its closure (a
            # closed-over array used again after the loop would be copied each time), and
            # behind a barrier, which stops XLA from sinking the slicing of the cache into
            # the loop (the whole cache would then enter the loop and be copied).
            args = jax.lax.optimization_barrier((context(path, cache, idx, x_t), y))
            x1, _, (ctx, y_), info = slice_sample(
                jax.random.fold_in(k_updates, i), logdensity, value,
                cache.loglik + prior(idx, value), slice_width, max_steps_out, args=args,
            )
            cache = commit(path, cache, idx, value, ctx, x1, x, y_)
            return cache, evals + info.num_evals, exhausted + info.exhausted

        zero = jnp.int32(0)
        return jax.lax.fori_loop(0, size, body, (cache, zero, zero))

    def init(position, batch) -> GibbsState:
        batch = Batch(*batch)
        return GibbsState(position, model.logdensity_fn(position, batch, batch.x.shape[0]))

    def step(key, state: GibbsState, batch, order_key) -> tuple[GibbsState, CoordinateGibbsInfo]:
        batch = Batch(*batch)
        x = flat_inputs(batch.x) if act is not None else batch.x
        sweeps = [partial(leaf_sweep, p, x=x, x_t=x.T, y=batch.y) for p in shapes]
        leaves = jnp.arange(len(sweeps))
        leaves = leaves if scan == "systematic" else jax.random.permutation(order_key, leaves)

        def body(b, carry):
            cache, evals, exhausted = carry
            cache, e, ex = jax.lax.switch(leaves[b], sweeps, jax.random.fold_in(key, b), cache)
            return cache, evals + e, exhausted + ex

        zero = jnp.int32(0)
        cache, evals, exhausted = jax.lax.fori_loop(
            0, len(sweeps), body, (cache_at(state.position, x, batch.y), zero, zero)
        )
        logdensity = cache.loglik + model.logprior_fn(cache.position)
        return GibbsState(cache.position, logdensity), CoordinateGibbsInfo(evals, exhausted)

    return SamplingAlgorithm(init, step)


@config
@dataclass(frozen=True)
class CoordinateGibbs:
    """Gibbs sampling one weight at a time, by slice sampling its full conditional.

    A sweep draws every Bayesian coordinate w_i from p(w_i | w_-i, data) ∝ p(w) p(data | w)
    by univariate slice sampling with stepping out and shrinkage (Neal 2003), in a fixed
    (``scan="systematic"``) or freshly permuted (``scan="random"``: the parameter leaves in
    random order, shared by the chains, and the coordinates of each leaf in random order)
    order; a draw is the position after ``thinning`` sweeps. Chains run in parallel (vmap).

    Cost: every update needs the likelihood of all N examples, so a sweep costs
    O(P × N) work times the slice evaluations per update (about 5–10) for a
    one-hidden-layer MLP, whose forward pass is cached and updated one unit's row at a
    time; see :func:`coordinate_gibbs` for deeper and other networks (up to O(P² × N)).
    It cannot minibatch: an exact draw from the conditional of a noisy minibatch density
    does not leave the posterior invariant (:mod:`bayesnn.inference.gibbs`). It is the
    slow, exact baseline to compare with; ``benchmarks/gibbs_scaling.py`` measures it.

    Parameters
    ----------
    num_samples : int
        Draws kept per chain (after thinning).
    num_warmup : int
        Sweeps discarded first.
    num_chains : int
        Independent chains.
    thinning : int
        Sweeps per kept draw.
    scan : {"systematic", "random"}
        Coordinate order of each sweep.
    slice_width : float
        Initial slice interval ``w`` (Neal's); a rough posterior std of a weight is ideal.
    max_steps_out : int
        Neal's ``m``: the interval grows by at most ``m - 1`` widths.
    init : {"random", "network", "prior", "map"} or MAP
        Where chains start (:func:`~bayesnn.inference.init.initial_positions`); default a
        fresh ``model.init_params`` draw per chain.

    Notes
    -----
    ``info`` holds ``seconds``, ``interrupted``, ``num_coordinates`` (with a MAP start
    ``map_info``) and ``sample_stats``:
    ``num_evals`` (density evaluations in the sweep of each draw) and ``num_exhausted``
    (updates whose shrinkage gave up, keeping the old value; 0 unless the density is
    non-finite somewhere).

    References
    ----------
    Neal, R. M. (2003). Slice sampling. *Annals of Statistics* 31(3), 705–767, Figs. 3, 5.
    Geman, S. & Geman, D. (1984). Stochastic relaxation, Gibbs distributions, and the
    Bayesian restoration of images. *IEEE TPAMI* 6(6), 721–741.
    """

    num_samples: int = 1000
    num_warmup: int = 100
    num_chains: int = 1
    thinning: int = 1
    scan: str = "systematic"
    slice_width: float = 1.0
    max_steps_out: int = 10
    init: str | MAP = "random"

    def __post_init__(self):
        check_gibbs_args(self)
        check_positive(slice_width=self.slice_width, max_steps_out=self.max_steps_out)
        if self.scan not in ("systematic", "random"):
            raise ValueError(f'scan must be "systematic" or "random", got {self.scan!r}')

    def run(
        self, model: BNN, data: Dataset, key, *, progress=None, checkpoint=None
    ) -> Posterior:
        gibbs = coordinate_gibbs(model, scan=self.scan, slice_width=self.slice_width,
                                 max_steps_out=self.max_steps_out)

        def step(key, states, t, x, y):
            k_order, k_chains = jax.random.split(key)
            keys = jax.random.split(k_chains, self.num_chains)
            return jax.vmap(gibbs.step, in_axes=(0, 0, None, None))(keys, states, (x, y),
                                                                     k_order)

        k_init, k_run = jax.random.split(key)
        states, map_info = start_chains(k_init, model, data, self, gibbs.init,
                                        progress=progress)
        res = sample_chains(
            step, states, k_run, thinned_steps(self.num_warmup, self.num_samples, self.thinning),
            jnp.asarray(data.x), jnp.asarray(data.y), desc="CoordinateGibbs",
            progress=progress, checkpoint=checkpoint, hint="the log-density is not finite",
        )
        return gibbs_posterior(model, self, data.x, res.draws, res, map_info,
                               num_coordinates=num_coordinates(model))

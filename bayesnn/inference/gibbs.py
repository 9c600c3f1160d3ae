"""Gibbs samplers: coordinate-wise slice Gibbs, latent-variable Gibbs, NUTS-within-Gibbs.

* :class:`CoordinateGibbs` — the classic baseline: every weight in turn drawn from its full
  conditional p(w_i | w_-i, data) by slice sampling (Neal 2003).
* :class:`LatentGibbs` — Piccioli, Troiani & Zdeborová (2023): noisy pre- and
  post-activations of a ReLU MLP become latent variables, and then every block has a
  conditional that can be sampled exactly and in parallel.
* :class:`HierarchicalNUTS` — NUTS for the weights, Gibbs for Gamma-distributed prior and
  noise precisions (Neal 1996; see :mod:`bayesnn.inference.hyper`).

All three need the whole data set at every update: a Gibbs update draws from a full
conditional, which the noisy likelihood of a minibatch does not define.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import erfcx, log_ndtr, ndtri
from numpyro.infer import NUTS
from numpyro.infer.gibbs import GIBBS_SITES_KWARG, CustomGibbs, Gibbs

from bayesnn import likelihoods
from bayesnn.bnn import BNN, Batch
from bayesnn.data import Dataset
from bayesnn.inference.base import check_chain_args, check_positive
from bayesnn.inference.driver import buffer_slots, first_rows, run_chunks, store_row
from bayesnn.inference.hyper import NOISE, Hierarchical, gibbs_hyper_update, weight_groups
from bayesnn.inference.sharding import num_chain_devices, shard_chains
from bayesnn.inference.slice import slice_sample
from bayesnn.models import MLP
from bayesnn.posterior import Posterior
from bayesnn.tree import flatten_paths, unflatten_paths

__all__ = [
    "CoordinateGibbs", "LatentGibbs", "HierarchicalNUTS", "GibbsAlgorithm", "GibbsState",
    "LatentGibbsState", "coordinate_gibbs", "latent_gibbs",
    "linear_regression_draw", "relu_preactivation_draw", "relu_preactivation_log_marginal",
    "elliptical_slice", "postactivation_draw", "gaussian_draw",
    "truncated_normal_draw", "initial_positions", "run_sweeps", "num_coordinates",
]

_SQRT2, _SQRT_HALF_PI = math.sqrt(2.0), math.sqrt(math.pi / 2)
_CHUNKS_PER_RUN = 20  # progress updates and finiteness checks per run
_DRAW_BUFFER_BYTES = 64 * 2**20  # device memory for the draws kept within one chunk


# -- shared pieces ---------------------------------------------------------------------


class GibbsAlgorithm(NamedTuple):
    """A sampler as a pair of pure functions (BlackJAX style)."""

    init: Callable
    step: Callable


def _check_full_batch(method: str, batch_size) -> None:
    if batch_size is not None:
        raise ValueError(
            f"{method} cannot use minibatches (got batch_size={batch_size}): each Gibbs update "
            "draws from a full conditional p(block | rest, data), which needs the exact "
            "likelihood of all the data. A minibatch gives only a noisy estimate of it, and "
            "an exact conditional draw (or slice sampling) on a noisy density no longer leaves "
            "the posterior invariant: detailed balance needs the same density at the current "
            "and the new point. Leave batch_size=None, or use SGLD/SGHMC for minibatches."
        )


def initial_positions(model: BNN, key, num_chains: int):
    """Independent starting points: fresh ``model.init_params`` draws for the Bayesian
    weights, the model's own values for point-estimate weights; leading axis ``chain``."""

    def one(k):
        fresh = model.init_params(k)
        return jax.tree.map(
            lambda bayesian, new, old: new if bayesian else old,
            model.bayesian_mask, fresh, model.init_position,
        )

    return jax.vmap(one)(jax.random.split(key, num_chains))


def _init_chains(model: BNN, init: Callable, key, num_chains: int, x, y):
    """Initial states of all chains (one compiled program rather than many small ones)."""

    @jax.jit
    def states(key, x, y):
        positions = initial_positions(model, key, num_chains)
        return jax.vmap(init, in_axes=(0, None))(positions, (x, y))

    return shard_chains(states(key, x, y))


def run_sweeps(
    step_fn: Callable, states, key, data, *, num_warmup: int, num_samples: int,
    thinning: int, position_fn: Callable, desc: str, progress=None, checkpoint=None,
    hint: str = "",
):
    """Warm up, then draw, in one :func:`~bayesnn.inference.driver.run_chunks` run.

    ``step_fn(key, states, x, y) -> (states, info)`` advances all chains by one sweep.
    After ``num_warmup`` sweeps every ``thinning``-th state is a draw; the draws of a chunk
    go to a small buffer (only kept sweeps advance its index), so memory holds draws, not
    sweeps. Returns ``(draws, stats, seconds, interrupted)``, where ``draws`` are
    ``position_fn(states)`` and ``stats`` the sweeps' ``info``, with leading axes
    ``(chain, draw)``.
    """
    x, y = data
    num_steps = num_warmup + num_samples * thinning
    t = np.arange(num_steps)
    keep = (t >= num_warmup) & ((t - num_warmup + 1) % thinning == 0)
    info_like = jax.eval_shape(lambda s, k: step_fn(k, s, x, y)[1], states, key)
    draw_like = jax.eval_shape(position_fn, states)
    draw_bytes = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves((draw_like, info_like)))
    max_draws = max(1, _DRAW_BUFFER_BYTES // max(draw_bytes, 1) - 2)
    steps = max(1, min(math.ceil(num_steps / _CHUNKS_PER_RUN), max_draws * thinning))
    num_chunks = math.ceil(num_steps / steps)
    keep = np.pad(keep, (0, num_chunks * steps - num_steps))
    kept = keep.reshape(num_chunks, steps).sum(1)
    slots = buffer_slots(kept, steps)

    def chunk(states, key, i, x, y, keep):
        # The last chunk runs whole: its sweeps after the last draw change nothing returned
        # (skipping them with lax.cond would slow every sweep down several times on CPU).
        def body(carry, inp):
            states, buffer, count = carry
            t, k = inp
            states, info = step_fn(k, states, x, y)
            buffer = store_row(buffer, (position_fn(states), info), count)
            return (states, buffer, count + keep[t]), None

        buffer = jax.tree.map(
            lambda a: jnp.zeros((slots, *a.shape), a.dtype), (draw_like, info_like)
        )
        ts = i * steps + jnp.arange(steps)
        (states, buffer, _), _ = jax.lax.scan(
            body, (states, buffer, jnp.int32(0)), (ts, jax.random.split(key, steps))
        )
        return states, buffer

    res = run_chunks(chunk, states, key, num_chunks, x, y, jnp.asarray(keep),
                     steps_per_chunk=steps, desc=desc, progress=progress,
                     select=lambda i, out: first_rows(out, kept[i]),
                     checkpoint=checkpoint, hint=hint)
    if not any(kept[: res.num_chunks_done]):
        raise RuntimeError(f"{desc} was interrupted before its first draw")
    draws, stats = jax.tree.map(lambda *c: np.swapaxes(np.concatenate(c), 0, 1), *res.outputs)
    return draws, stats, res.seconds, res.interrupted


def _posterior(model, method, draws, stats, seconds, interrupted, **info) -> Posterior:
    draws = jax.tree.map(jnp.asarray, draws)
    return Posterior(model, draws, method, {
        "sample_stats": dict(stats), "seconds": seconds, "interrupted": interrupted, **info,
    })


def _mlp(model: BNN) -> MLP | None:
    """The model's network if it is a :class:`~bayesnn.models.MLP` with no frozen weights
    (whose layers are then all in the position), else None."""
    if model.frozen:
        return None
    net = model.network()
    return net if isinstance(net, MLP) else None


def _flat_inputs(x):
    return x.reshape(x.shape[0], -1)


def _loglik(model: BNN, outputs, y, lik_params) -> jax.Array:
    """Tempered full-data log-likelihood from the network outputs."""
    return jnp.sum(model.likelihood.log_prob(outputs, y, lik_params)) / model.likelihood.temperature


# -- coordinate-wise slice Gibbs -------------------------------------------------------


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


def _preactivations(model: BNN, act, position, x) -> tuple:
    if act is None:
        return (model.apply(position, x),)
    layers = position["net"]["layers"]
    h, zs = x, []
    for i in range(len(layers)):
        zs.append(h @ layers[i]["kernel"] + layers[i]["bias"])
        h = act(zs[-1])
    return tuple(zs)


def _set_element(position, path: str, idx, value):
    named = flatten_paths(position)
    leaf = named[path]
    flat = jax.lax.dynamic_update_index_in_dim(leaf.reshape(-1), value.astype(leaf.dtype), idx, 0)
    named[path] = flat.reshape(leaf.shape)
    return unflatten_paths(named, position)


def _set_row(a, i, row):
    """``a.at[i].set(row)`` in place: with ``.at`` an out-of-range index would be dropped,
    and the select that implements it makes XLA copy the whole array."""
    return jax.lax.dynamic_update_index_in_dim(a, row, i, 0)


def _mlp_unit(act, cache: _Cache, inputs_t, layer: int, kind: str, idx) -> _Unit:
    """The :class:`_Unit` of coordinate ``idx`` of a layer's ``kind`` (kernel or bias)."""
    zs, layers = cache.preacts, cache.position["net"]["layers"]
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
        None if last else layers[layer + 1]["kernel"][j],
        tuple((layers[m]["kernel"], layers[m]["bias"]) for m in range(layer + 2, len(zs))),
        j, cache.position["lik"],
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
) -> GibbsAlgorithm:
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
    every evaluation reuses the forward pass of the sweep's cache. For an
    :class:`~bayesnn.models.MLP` the cache holds every layer's pre-activations (transposed,
    so a unit's row is contiguous): a weight of the output layer moves one output row
    (O(N)); a weight of the layer below moves one row of its pre-activations and the
    outputs by a rank-one term (O(N · outputs)); deeper weights also recompute the layers
    above the next. The slice loop carries only these few rows (:class:`_Unit`); the
    cache is updated in place once, at the accepted value. A sweep of a one-hidden-layer
    MLP with P weights thus costs O(k · P · N · outputs); likelihood parameters reuse the
    outputs. Other networks run a full forward pass per evaluation: O(k · P² · N) per
    sweep. The cache is rebuilt at the start of every sweep, so rounding errors do not
    accumulate.
    """
    if scan not in ("systematic", "random"):
        raise ValueError(f'scan must be "systematic" or "random", got {scan!r}')
    net = _mlp(model)
    act = None if net is None else net.activation
    priors = _coordinate_priors(model)
    shapes = {p: v.shape for p, v in flatten_paths(model.init_position).items() if p in priors}

    def cache_at(position, x, y, preacts=None):
        if preacts is None:
            preacts = tuple(z.T for z in _preactivations(model, act, position, x))
        return _Cache(position, preacts, _loglik(model, preacts[-1].T, y, position["lik"]))

    def context(path, cache, idx, x_t):
        """What the density of one coordinate needs besides its value."""
        if path.startswith("lik/"):
            return cache.preacts[-1], cache.position["lik"]
        if act is None:
            return cache.position
        _, _, layer, kind = path.split("/")
        return _mlp_unit(act, cache, x_t, int(layer), kind, idx)

    def loglik(path, idx, value, ctx, v, x, y):
        """Full-data log-likelihood with the coordinate at ``v`` instead of ``value``."""
        if path.startswith("lik/"):
            outputs_t, lik = ctx
            return _loglik(model, outputs_t.T, y, _set_element({"lik": lik}, path, idx, v)["lik"])
        if act is None:
            position = _set_element(ctx, path, idx, v)
            return _loglik(model, model.apply(position, x), y, position["lik"])
        forward = _mlp_forward_from(act, ctx, v - value)
        outputs = forward[-1] if ctx.fan_out is not None else _set_row(ctx.downstream, ctx.unit,
                                                                         forward[0])
        return _loglik(model, outputs.T, y, ctx.lik)

    def commit(path, cache, idx, value, ctx, v, x, y) -> _Cache:
        """The cache with the coordinate at ``v``."""
        position = _set_element(cache.position, path, idx, v)
        if path.startswith("lik/"):
            return cache_at(position, x, y, cache.preacts)
        if act is None:
            return cache_at(position, x, y)
        layer = int(path.split("/")[2])
        forward = _mlp_forward_from(act, ctx, v - value)
        zs = list(cache.preacts)
        zs[layer] = _set_row(zs[layer], ctx.unit, forward[0])
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
        x = _flat_inputs(batch.x) if act is not None else batch.x
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

    return GibbsAlgorithm(init, step)


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
    It cannot minibatch (see ``batch_size``). It is the slow, exact baseline to compare
    with; ``benchmarks/gibbs_scaling.py`` measures it.

    Parameters
    ----------
    num_samples : int
        Draws per chain.
    num_warmup : int
        Sweeps discarded first.
    num_chains : int
        Independent chains, each started from a fresh ``model.init_params`` draw.
    thinning : int
        Sweeps per kept draw.
    scan : {"systematic", "random"}
        Coordinate order of each sweep.
    slice_width : float
        Initial slice interval ``w`` (Neal's); a rough posterior std of a weight is ideal.
    max_steps_out : int
        Neal's ``m``: the interval grows by at most ``m - 1`` widths.
    batch_size : None
        Must stay None: Gibbs updates need the full data (a ValueError says why).

    Notes
    -----
    ``info`` holds ``seconds``, ``interrupted``, ``num_coordinates`` and ``sample_stats``:
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
    batch_size: int | None = None

    def __post_init__(self):
        _check_full_batch("CoordinateGibbs", self.batch_size)
        check_chain_args(num_samples=self.num_samples, num_warmup=self.num_warmup,
                         num_chains=self.num_chains, thinning=self.thinning)
        check_positive(slice_width=self.slice_width, max_steps_out=self.max_steps_out)
        if self.scan not in ("systematic", "random"):
            raise ValueError(f'scan must be "systematic" or "random", got {self.scan!r}')

    def run(
        self, model: BNN, data: Dataset, key, *, progress=None, checkpoint=None
    ) -> Posterior:
        x, y = jnp.asarray(data.x), jnp.asarray(data.y)
        k_init, k_run = jax.random.split(key)
        gibbs = coordinate_gibbs(model, scan=self.scan, slice_width=self.slice_width,
                                 max_steps_out=self.max_steps_out)

        def step_fn(key, states, x, y):
            k_order, k_chains = jax.random.split(key)
            keys = jax.random.split(k_chains, self.num_chains)
            return jax.vmap(gibbs.step, in_axes=(0, 0, None, None))(keys, states, (x, y),
                                                                     k_order)

        states = _init_chains(model, gibbs.init, k_init, self.num_chains, x, y)
        draws, stats, seconds, interrupted = run_sweeps(
            step_fn, states, k_run, (x, y), num_warmup=self.num_warmup,
            num_samples=self.num_samples, thinning=self.thinning,
            position_fn=lambda s: s.position, desc="CoordinateGibbs", progress=progress,
            checkpoint=checkpoint,
        )
        return _posterior(model, self, draws, stats._asdict(),
                          seconds, interrupted, num_devices=num_chain_devices(states),
                          num_coordinates=num_coordinates(model))


# -- latent-variable Gibbs (Piccioli, Troiani & Zdeborová 2023) ------------------------


def truncated_normal_draw(key, mean, std, shape=None) -> jax.Array:
    """Draw N(mean, std²) conditioned on being ≥ 0, exactly, far into either tail.

    With ``a = -mean/std`` the standard normal is drawn beyond ``a`` by inverting its tail
    probability: directly, z = -Φ⁻¹(u Φ(-a)), for a < 5; beyond, the excess e = z - a
    solves log Φ(-(a + e)) - log Φ(-a) = log u, written with the scaled complementary
    error function as -(a e + e²/2) + log erfcx((a + e)/√2) - log erfcx(a/√2) so that no
    large terms cancel. Newton's method solves it from Marsaglia's (1964) tail guess
    e = sqrt(a² - 2 log u) - a, which lies above the root, so the iteration (on a concave
    function) converges monotonically; three steps reach float32 precision. The draw is
    then ``std · e`` (``mean + std · a = 0``), accurate even thousands of stds out.
    """
    shape = jnp.broadcast_shapes(jnp.shape(mean), jnp.shape(std)) if shape is None else shape
    a = -mean / std
    u = 1.0 - jax.random.uniform(key, shape, jnp.result_type(mean))  # (0, 1]
    direct = mean + std * -ndtri(u * jnp.exp(log_ndtr(-a)))
    tail = jnp.maximum(a, 5.0)  # the tail branch only serves a ≥ 5
    e = -2 * jnp.log(u) / (jnp.sqrt(tail**2 - 2 * jnp.log(u)) + tail)
    log_erfcx_a = jnp.log(erfcx(tail / _SQRT2))

    for _ in range(3):  # unrolled: one fused elementwise kernel, also inside callers' loops
        scaled = erfcx((tail + e) / _SQRT2)
        g = -(tail * e + e**2 / 2) + jnp.log(scaled) - log_erfcx_a - jnp.log(u)
        e = e + g * _SQRT_HALF_PI * scaled  # Φ(-z)/φ(z) = sqrt(π/2) erfcx(z/√2)
    return jnp.maximum(jnp.where(a < 5.0, direct, std * e), 0.0)


def _lower_inverse(chol):
    """L⁻¹ of a lower-triangular L (batched over leading axes).

    On CPU by forward substitution in XLA, row by row: there XLA calls LAPACK's triangular
    solve, whose OpenBLAS threads stall for milliseconds on a busy machine, a thousand
    times the arithmetic of a small sampler's sweep. Elsewhere the backend's solve.
    """
    size = chol.shape[-1]
    eye = jnp.eye(size, dtype=chol.dtype)

    def forward(chol):
        def row(i, inv):  # rows ≥ i of inv are still 0: chol[i] @ inv sums over j < i
            return inv.at[i].set((eye[i] - chol[i] @ inv) / chol[i, i])

        return jax.lax.fori_loop(0, size, row, jnp.zeros_like(chol))

    def solve(chol):
        return jax.scipy.linalg.solve_triangular(chol, eye, lower=True)

    return jax.lax.platform_dependent(chol, cpu=forward, default=solve)


def gaussian_draw(key, precision, shift) -> jax.Array:
    """Draw the columns of ``shift`` ``(d, m)`` into N(P⁻¹ shift, P⁻¹), one precision P.

    With P = L Lᵀ the draw is L⁻ᵀ (L⁻¹ shift + ε), ε ~ N(0, I): one Cholesky factor and
    one (d × d) triangular inverse serve all m columns, the rest is matrix products.
    """
    inv = _lower_inverse(jnp.linalg.cholesky(precision))
    return inv.T @ (inv @ shift + jax.random.normal(key, shift.shape, shift.dtype))


def linear_regression_draw(key, inputs, targets, noise_var, prior_loc, prior_var):
    """Draw (W, b) from the Gaussian posterior of ``targets = inputs W + b + N(0, noise_var)``.

    Every output column is a Bayesian linear regression on the same design ``[inputs, 1]``
    with prior ``N(prior_loc, diag(prior_var))`` (``prior_loc`` of shape ``(d + 1, h)``,
    ``prior_var`` of shape ``(d + 1,)``, the bias last), so the columns share one posterior
    precision (Bishop 2006, eq. 3.53–3.54) and one :func:`gaussian_draw`.
    """
    design = jnp.concatenate([inputs, jnp.ones((inputs.shape[0], 1), inputs.dtype)], axis=1)
    prior_prec = 1.0 / prior_var
    precision = design.T @ design / noise_var + jnp.diag(prior_prec)
    theta = gaussian_draw(key, precision, design.T @ targets / noise_var
                          + prior_prec[:, None] * prior_loc)
    return theta[:-1], theta[-1]


def _gaussian_piece(mean, pre_var, precision, shift):
    """N(z; mean, Δz) exp(shift · z - precision · z² / 2) = exp(log_mass) N(z; μ, v).

    Returns ``(log_mass, μ, v)``: 1/v = 1/Δz + precision, μ = v (mean/Δz + shift), and
    log_mass = ½ (Δz shift² + 2 shift mean - precision mean²) / (1 + precision Δz)
    - ½ log(1 + precision Δz), which stays finite as precision → 0.
    """
    ratio = 1.0 + precision * pre_var  # v = Δz / ratio
    log_mass = (0.5 * (pre_var * shift**2 + 2 * shift * mean - precision * mean**2) / ratio
                - 0.5 * jnp.log(ratio))
    return log_mass, (mean + pre_var * shift) / ratio, pre_var / ratio


def _relu_pieces(mean, pre_var, precision, shift):
    """Log-masses of the z < 0 and z ≥ 0 pieces of the density of
    :func:`relu_preactivation_draw`, and the mean and variance of the z ≥ 0 piece."""
    log_mass, mu, var = _gaussian_piece(mean, pre_var, precision, shift)
    return (log_ndtr(-mean / jnp.sqrt(pre_var)), log_mass + log_ndtr(mu / jnp.sqrt(var)),
            mu, var)


def relu_preactivation_draw(key, mean, pre_var, precision, shift) -> jax.Array:
    """Draw z ∝ N(z; mean, Δz) exp(shift · relu(z) - precision · relu(z)² / 2), elementwise.

    The second factor is a Gaussian likelihood of relu(z) (``precision`` a, ``shift`` b):
    for a noisy post-activation x, N(x; relu(z), Δx) gives a = 1/Δx, b = x/Δx. For z < 0
    it is 1: N(mean, Δz) truncated to z < 0, of mass Φ(-mean/√Δz). For z ≥ 0 the product
    is N(μ, v) with 1/v = 1/Δz + a, μ = v (mean/Δz + b), truncated to z ≥ 0, of mass
    (1 + a Δz)^(-1/2) exp(½ (Δz b² + 2 b mean - a mean²) / (1 + a Δz)) Φ(μ/√v), which stays
    finite as a → 0. The piece is drawn by its weight (in log space), then the truncated
    normal exactly (:func:`truncated_normal_draw`).
    """
    k_piece, k_draw = jax.random.split(key)
    log_neg, log_pos, mu, var = _relu_pieces(mean, pre_var, precision, shift)
    u = jax.random.uniform(k_piece, mean.shape, mean.dtype)
    positive = u < jax.nn.sigmoid(log_pos - log_neg)
    # z ≥ 0: N(μ, v) truncated to [0, ∞); z < 0: minus N(-mean, Δz) truncated to [0, ∞).
    loc = jnp.where(positive, mu, -mean)
    scale = jnp.sqrt(jnp.where(positive, var, pre_var))
    return jnp.where(positive, 1.0, -1.0) * truncated_normal_draw(k_draw, loc, scale, mean.shape)


def relu_preactivation_log_marginal(mean, pre_var, precision, shift) -> jax.Array:
    """log ∫ N(z; mean, Δz) exp(shift · relu(z) - precision · relu(z)² / 2) dz, elementwise:
    the normaliser of :func:`relu_preactivation_draw`'s density, the sum of its two pieces'
    masses."""
    log_neg, log_pos, _, _ = _relu_pieces(mean, pre_var, precision, shift)
    return jnp.logaddexp(log_neg, log_pos)


def _linear_preactivation_draw(key, mean, pre_var, precision, shift) -> jax.Array:
    """As :func:`relu_preactivation_draw` for the identity activation: a Gaussian."""
    _, mu, var = _gaussian_piece(mean, pre_var, precision, shift)
    return mu + jnp.sqrt(var) * jax.random.normal(key, jnp.shape(mu), jnp.result_type(mu))


def _linear_preactivation_log_marginal(mean, pre_var, precision, shift) -> jax.Array:
    """As :func:`relu_preactivation_log_marginal` for the identity activation."""
    return _gaussian_piece(mean, pre_var, precision, shift)[0]


_SCALE_SLICE_WIDTH = 0.5  # slice width in log c of the scale move of collapsed units

# activation: (draw of the pre-activations, log of their normaliser)
_PREACTIVATION = {
    "relu": (relu_preactivation_draw, relu_preactivation_log_marginal),
    "linear": (_linear_preactivation_draw, _linear_preactivation_log_marginal),
}


class _EllipseCarry(NamedTuple):
    key: jax.Array
    angle: jax.Array
    lower: jax.Array
    upper: jax.Array
    accepted: jax.Array
    evals: jax.Array


def elliptical_slice(key, loglik_fn, theta, prior_loc, prior_std, design, max_evals: int = 100):
    """One elliptical slice sampling update (Murray, Adams & MacKay 2010, Fig. 2).

    Leaves p(θ) ∝ N(θ; prior_loc, diag(prior_std²)) exp(loglik_fn(design @ θ)) invariant.
    A direction ν is drawn from the prior, the level from the current likelihood, and
    points θ(a) = loc + (θ - loc) cos a + ν sin a on the ellipse through θ are proposed,
    the bracket on the angle a shrinking towards a = 0 (the current point) after each
    rejection. The likelihood sees θ only through ``design @ θ``, so after three products
    each evaluation costs O(rows of ``design``). After ``max_evals`` rejections (a
    non-finite likelihood) θ is kept.

    Returns ``(θ', design @ θ', evaluations)``.
    """
    k_nu, k_level, k_angle = jax.random.split(key, 3)
    nu = prior_std * jax.random.normal(k_nu, theta.shape, theta.dtype)
    base, offset, direction = design @ prior_loc, design @ (theta - prior_loc), design @ nu

    def point(angle):
        return base + offset * jnp.cos(angle) + direction * jnp.sin(angle)

    zero = jnp.zeros((), theta.dtype)
    level = loglik_fn(point(zero)) - jax.random.exponential(k_level, (), theta.dtype)
    angle = jax.random.uniform(k_angle, (), theta.dtype, 0.0, 2 * math.pi)

    def body(c: _EllipseCarry) -> _EllipseCarry:
        accepted = loglik_fn(point(c.angle)) > level
        lower = jnp.where(c.angle < 0, c.angle, c.lower)
        upper = jnp.where(c.angle < 0, c.upper, c.angle)
        key, sub = jax.random.split(c.key)
        proposal = jax.random.uniform(sub, (), theta.dtype, lower, upper)
        return _EllipseCarry(key, jnp.where(accepted, c.angle, proposal), lower, upper,
                             accepted, c.evals + 1)

    c = jax.lax.while_loop(
        lambda c: ~c.accepted & (c.evals < max_evals), body,
        _EllipseCarry(key, angle, angle - 2 * math.pi, angle, jnp.bool_(False), jnp.int32(0)))
    angle = jnp.where(c.accepted, c.angle, zero)
    new = prior_loc + (theta - prior_loc) * jnp.cos(angle) + nu * jnp.sin(angle)
    return new, point(angle), c.evals


def postactivation_draw(key, act_pre, next_pre, next_kernel, next_bias, post_var, next_var):
    """Draw post-activations X from N(X; σ(Z), Δx) N(Z'; X W' + b', Δz').

    The rows are independent Gaussians sharing the precision I/Δx + W' W'ᵀ/Δz', so one
    :func:`gaussian_draw` serves all N rows.
    """
    eye = jnp.eye(next_kernel.shape[0], dtype=act_pre.dtype)
    precision = eye / post_var + next_kernel @ next_kernel.T / next_var
    shift = act_pre / post_var + (next_pre - next_bias) @ next_kernel.T / next_var
    return gaussian_draw(key, precision, shift.T).T


def _unitwise_preactivation_draw(key, act, pieces, preacts, inputs, weights, pre_var,
                                 next_kernel, residual, next_var, collapse=None):
    """Draw a hidden layer's pre-activations Z without post-activation noise, unit by unit.

    With X = act(Z) exactly, unit j's pre-activations given everything else have the
    density N(z_j; x̃ θ_j, Δz) N(R_j; act(z_j) w_j, Δ'), where x̃ = [inputs, 1], θ_j the
    unit's incoming weights and bias, w_j row j of the next layer's kernel, Δ' the next
    layer's noise variance and R_j the next layer's targets less the other units'
    contributions: the draw of ``pieces`` (:func:`relu_preactivation_draw` and
    :func:`relu_preactivation_log_marginal` for ReLU) with precision ‖w_j‖²/Δ' and shift
    R_j w_jᵀ/Δ'. Units are drawn in turn, all N rows at once, each given the latest values
    of the others; ``residual``, the next layer's targets less its mean ``act(Z) W' + b'``,
    follows every update.

    With ``collapse = (prior_loc (d + 1, h), prior_std (d + 1,), next_loc (h, k),
    next_std (h,))`` (the Gaussian priors of θ and of the next layer's kernel rows), z_j is
    integrated out of two moves before it is drawn: θ_j from p(θ_j | w_j, rest) ∝
    N(θ_j; prior) Π_n ∫ N(z; x̃_n θ_j, Δz) N(R_nj; act(z) w_j, Δ') dz (the factors are
    :func:`relu_preactivation_log_marginal`) by :func:`elliptical_slice`; then the pair
    (θ_j, w_j) along the orbit (c θ_j, w_j / c), c > 0, of the ReLU's scale symmetry, by
    slice sampling s = log c from π(c θ_j, w_j / c) c^(d + 1 - k) — Liu & Sabatti's (2000)
    generalised Gibbs step for the multiplicative group, whose Haar measure dc/c = ds, with
    Jacobian c^(d + 1 - k). The network's function is invariant along the orbit (up to the
    noise), so the move crosses in one step the ridge along which alternating θ_j | w_j and
    w_j | θ_j draws creep. Together with the draw of z_j this is a partially collapsed
    Gibbs step (van Dyk & Park 2008): every move leaves p(θ_j, w_j, z_j | rest) invariant.
    The sign of w_j is left to the next layer's draw.

    Returns Z, the layer's ``(kernel, bias)``, the next layer's kernel and the number of
    density evaluations of the collapsed moves.
    """
    draw, log_marginal = pieces
    design = jnp.concatenate([inputs, jnp.ones((inputs.shape[0], 1), inputs.dtype)], axis=1)
    theta_t = jnp.concatenate([weights[0], weights[1][None]]).T  # (h, d + 1): rows contiguous

    def unit(j, carry):
        z, theta_t, next_kernel, residual, evals = carry
        k_theta, k_scale, k_z = jax.random.split(jax.random.fold_in(key, j), 3)
        w = next_kernel[j]
        without = residual + act(z[j])[:, None] * w
        shift = without @ w / next_var
        precision = jnp.sum(w**2) / next_var
        if collapse is None:
            mean = design @ theta_t[j]
        else:
            loc, std, next_loc, next_std = collapse

            def loglik(mean, scale=1.0):  # with θ_j scaled by c, w_j by 1/c
                return jnp.sum(log_marginal(mean * scale, pre_var, precision / scale**2,
                                            shift / scale))

            theta, mean, n = elliptical_slice(k_theta, loglik, theta_t[j], loc[:, j], std,
                                              design)

            def log_orbit(s, mean):  # Liu & Sabatti (2000): π(g_c x) |J_c| in s = log c
                c = jnp.exp(s)
                return (loglik(mean, c) + s * (theta.size - w.size)
                        - jnp.sum(((c * theta - loc[:, j]) / std) ** 2) / 2
                        - jnp.sum(((w / c - next_loc[j]) / next_std[j]) ** 2) / 2)

            zero = jnp.zeros((), theta.dtype)
            s, _, _, info = slice_sample(k_scale, log_orbit, zero, log_orbit(zero, mean),
                                         _SCALE_SLICE_WIDTH, args=(mean,))
            c = jnp.exp(s)
            theta, mean, w = c * theta, c * mean, w / c
            shift, precision = shift / c, precision / c**2
            theta_t, next_kernel = _set_row(theta_t, j, theta), _set_row(next_kernel, j, w)
            evals = evals + n + info.num_evals
        new = draw(k_z, mean, pre_var, precision, shift)
        return (_set_row(z, j, new), theta_t, next_kernel, without - act(new)[:, None] * w,
                evals)

    z, theta_t, next_kernel, _, evals = jax.lax.fori_loop(
        0, next_kernel.shape[0], unit,
        (preacts.T, theta_t, next_kernel, residual, jnp.int32(0)))
    return z.T, (theta_t[:, :-1].T, theta_t[:, -1]), next_kernel, evals


class LatentGibbsState(NamedTuple):
    """Weights and the latent pre- (``preacts``) and post-activations of the hidden layers
    (without post-activation noise, ``postacts`` are the activations of ``preacts``)."""

    position: Any
    preacts: tuple
    postacts: tuple


def _gaussian_prior_blocks(model: BNN, num_layers: int):
    """Per layer: prior means ``(d + 1, h)`` and variances ``(d + 1,)`` of ``[kernel; bias]``."""
    net0 = model.init_position["net"]
    dists = model.prior.distributions(net0)
    blocks = []
    for layer in range(num_layers):
        locs, variances = [], []
        for kind in ("kernel", "bias"):
            path = f"layers/{layer}/{kind}"
            d = dists.get(path)
            if not isinstance(getattr(d, "base_dist", d), dist.Normal):
                raise ValueError(
                    f"LatentGibbs needs a Gaussian prior on every weight; {path} has "
                    f"{'none' if d is None else type(getattr(d, 'base_dist', d)).__name__}"
                )
            shape = net0["layers"][layer][kind].shape
            var = np.broadcast_to(np.asarray(d.variance), shape)
            if np.ptp(var) > 0:
                raise ValueError(f"LatentGibbs needs one prior variance per leaf; {path} varies")
            locs.append(np.broadcast_to(np.asarray(d.mean), shape).reshape(-1, shape[-1]))
            variances.append(np.full(locs[-1].shape[0], var.reshape(-1)[0]))
        blocks.append((jnp.asarray(np.concatenate(locs)), jnp.asarray(np.concatenate(variances))))
    return blocks


def _per_layer(value, num_hidden: int, name: str, zero: bool = False) -> tuple[float, ...]:
    """One float per hidden layer, each > 0 (or ≥ 0 with ``zero``)."""
    values = tuple(value) if isinstance(value, Sequence) else (value,) * num_hidden
    if len(values) != num_hidden:
        raise ValueError(f"{name} needs one value per hidden layer ({num_hidden}), got {values}")
    if not all(v >= 0 if zero else v > 0 for v in values):
        raise ValueError(f"{name} must be {'>=' if zero else '>'} 0, got {value!r}")
    return tuple(float(v) for v in values)


def latent_gibbs(
    model: BNN, preactivation_var, postactivation_var, collapse: bool = False
) -> GibbsAlgorithm:
    """Gibbs sampling of a ReLU MLP with noisy activations (Piccioli et al. 2023).

    The noisy network, for hidden layers ``l = 1..L-1`` (``X_0`` the inputs):
    ``Z_l = X_{l-1} W_l + b_l + N(0, Δz_l)``, ``X_l = relu(Z_l) + N(0, Δx_l)``, and the
    output ``y = X_{L-1} W_L + b_L + N(0, σ² T)`` (the Gaussian likelihood, tempered). With a
    :class:`~bayesnn.likelihoods.Probit` likelihood the output is a latent
    ``u = X_{L-1} W_L + b_L + N(0, 1)`` with ``y = 1[u > 0]``, drawn first in each sweep
    from its truncated normal (Albert & Chib 1993), and the sweep goes on with ``u`` in
    place of ``y``. Given the rest, every block's conditional is exact. A sweep draws all
    (W_l, b_l) at once (:func:`linear_regression_draw`; independent given the latents),
    then layer by layer the latents: with Δx_l > 0, all of Z_l elementwise
    (:func:`relu_preactivation_draw`) and all of X_l row by row
    (:func:`postactivation_draw`); with Δx_l = 0 (X_l = relu(Z_l), no
    post-activation latents) Z_l one unit at a time, all rows at once, given the next
    layer (:func:`_unitwise_preactivation_draw`). Cost per sweep: O(N · P) products plus
    a Cholesky factor and a triangular inverse per layer, O(Σ_l width_l³).

    With ``collapse`` (all Δx_l = 0), each hidden unit's incoming weights and bias are
    drawn again, just before its pre-activations, with those pre-activations integrated
    out (:func:`elliptical_slice` on the collapsed conditional), and then rescaled jointly
    with its outgoing weights along the ReLU's scale symmetry (see
    :func:`_unitwise_preactivation_draw`): some 12–14 evaluations of O(N) each per unit.
    ``step``'s info then also holds ``num_evals``, their number in the sweep.
    """
    net = _mlp(model)
    lik = model.likelihood
    if net is None:
        raise ValueError("LatentGibbs needs a bayesnn.models.MLP without frozen weights")
    act_name = getattr(net.activation, "name", None)
    if act_name not in ("relu", "linear"):
        raise ValueError(f"LatentGibbs supports relu (and linear) activations, got {act_name!r}")
    probit = isinstance(lik, likelihoods.Probit)
    if probit and lik.temperature != 1:
        raise ValueError(f"LatentGibbs with a Probit likelihood needs temperature 1, got "
                         f"{lik.temperature}")
    if not (probit or isinstance(lik, likelihoods.Gaussian) and not lik.heteroscedastic
            and not lik.learn_scale):
        raise ValueError(
            "LatentGibbs needs a homoscedastic likelihoods.Gaussian with a fixed scale, or "
            "likelihoods.Probit"
        )
    num_layers = len(model.init_position["net"]["layers"])
    pre_var = _per_layer(preactivation_var, num_layers - 1, "preactivation_var")
    post_var = _per_layer(postactivation_var, num_layers - 1, "postactivation_var", zero=True)
    if collapse and any(post_var):
        raise ValueError(
            "collapse=True needs postactivation_var=0: it integrates out the pre-activations "
            f"of units whose outputs are exactly act(z), got postactivation_var={post_var}"
        )
    noise = (*pre_var, 1.0 if probit else lik.scale**2 * lik.temperature)  # of the targets
    priors = _gaussian_prior_blocks(model, num_layers)
    act = net.activation
    pieces = _PREACTIVATION[act_name]

    def init(position, batch) -> LatentGibbsState:
        x = _flat_inputs(Batch(*batch).x)
        zs = _preactivations(model, act, position, x)[:-1]
        return LatentGibbsState(position, zs, tuple(act(z) for z in zs))

    def output_latents(key, position, inputs, y):
        """Probit: u = f + N(0, 1) given y = 1[u > 0], drawn first in each sweep."""
        last = position["net"]["layers"][num_layers - 1]
        sign = jnp.where(y == 1, 1.0, -1.0)[:, None]
        return sign * truncated_normal_draw(key, sign * (inputs @ last["kernel"] + last["bias"]),
                                            1.0)

    def step(key, state: LatentGibbsState, batch) -> tuple[LatentGibbsState, dict]:
        batch = Batch(*batch)
        inputs = (_flat_inputs(batch.x), *state.postacts)
        y = batch.y
        if probit:
            key, k_u = jax.random.split(key)
            y = output_latents(k_u, state.position, inputs[-1], y)
        k_w, k_z, k_x = (jax.random.split(k, num_layers) for k in jax.random.split(key, 3))
        targets = (*state.preacts, y)
        layers = [
            dict(zip(("kernel", "bias"), linear_regression_draw(
                k_w[l], inputs[l], targets[l], noise[l], *priors[l]), strict=True))
            for l in range(num_layers)  # noqa: E741
        ]
        h, preacts, postacts, evals = inputs[0], [], [], jnp.int32(0)
        for l in range(num_layers - 1):  # noqa: E741
            kernel, bias = layers[l + 1]["kernel"], layers[l + 1]["bias"]
            if post_var[l] == 0:
                residual = targets[l + 1] - state.postacts[l] @ kernel - bias
                prior = (priors[l][0], jnp.sqrt(priors[l][1]), priors[l + 1][0][:-1],
                         jnp.sqrt(priors[l + 1][1][:-1])) if collapse else None
                z, weights, kernel, n = _unitwise_preactivation_draw(
                    k_z[l], act, pieces, state.preacts[l], h,
                    (layers[l]["kernel"], layers[l]["bias"]), pre_var[l], kernel, residual,
                    noise[l + 1], prior)
                layers[l], evals = dict(zip(("kernel", "bias"), weights, strict=True)), evals + n
                layers[l + 1] = {**layers[l + 1], "kernel": kernel}
                h = act(z)
            else:
                mean = h @ layers[l]["kernel"] + layers[l]["bias"]
                z = pieces[0](k_z[l], mean, pre_var[l], 1.0 / post_var[l],
                              state.postacts[l] / post_var[l])
                h = postactivation_draw(k_x[l], act(z), targets[l + 1], kernel, bias,
                                        post_var[l], noise[l + 1])
            preacts.append(z)
            postacts.append(h)
        net_ = {**state.position["net"], "layers": {**state.position["net"]["layers"],
                                                     **dict(enumerate(layers))}}
        position = {**state.position, "net": net_}
        logdensity = model.logdensity_fn(position, batch, batch.x.shape[0])
        info = {"logdensity": logdensity} | ({"num_evals": evals} if collapse else {})
        return LatentGibbsState(position, tuple(preacts), tuple(postacts)), info

    return GibbsAlgorithm(init, step)


@dataclass(frozen=True)
class LatentGibbs:
    """Gibbs sampling of a ReLU MLP with noisy activations as latent variables.

    Piccioli, Troiani & Zdeborová (2023) add Gaussian noise to every hidden pre-activation
    (variance Δz, ``preactivation_var``) and post-activation (variance Δx,
    ``postactivation_var``) of the network. With these as latent variables each block —
    a layer's weights and biases, a layer's pre-activations, a layer's post-activations —
    has a conditional that is sampled exactly: Bayesian linear regression for the weights,
    a two-piece truncated normal for ReLU pre-activations, a Gaussian for the
    post-activations; see :func:`latent_gibbs`. ``postactivation_var=0`` drops the
    post-activation noise (X = relu(Z)); the pre-activations are then drawn one unit at a
    time (all examples at once) given the next layer, still exactly. A sweep costs a few
    matrix products over the data plus a Cholesky factor per layer, O(N · P), against
    O(k · N · P) for a :class:`CoordinateGibbs` sweep, and moves all weights of a layer
    jointly.

    Mixing. Given the latents, a layer's weights are pinned to within √(Δ/N) (Δ the noise
    of the layer's targets), while their posterior spread is set by the output noise and
    by the symmetries of the network, so on large data sets the chain moves slowly, as
    data augmentation samplers do; post-activation latents add a second such coupling
    (X W' ≈ Z' or y). ``collapse=True`` (with Δx = 0) removes the first coupling: each
    hidden unit's weights are drawn with its pre-activations integrated out, and moved
    along the ReLU's scale symmetry (θ_j, w_j) → (c θ_j, w_j / c) jointly with its
    outgoing weights; the sweep then costs some 12–14 O(N) likelihood evaluations per
    hidden unit, more than the matrix products of the plain sweep. On the teacher–student
    regression of ``benchmarks/gibbs_scaling.py`` (2 inputs, 33 weights, 200 examples,
    output noise 0.1) the predictions needed 1,100–3,800 plain sweeps per effective sample
    (Δz = 0.1 to 0.01; the sweeps of both chains counted), so thin (``thinning``) rather
    than store every sweep; collapsed, 47–92 sweeps, fewer than CoordinateGibbs's 107, but
    each cost about 4 of its sweeps (the log Φ of the collapsed likelihood), so the ESS
    per second was 0.3–0.6× CoordinateGibbs's (plain: 0.05–0.15×) and a quarter of NUTS's
    at best; on a larger setting (97 weights, 500 examples) neither Gibbs sampler mixed
    within the benchmark's short run. Without post-activation noise (the default) the
    sampled predictions are closer to those of the ordinary network's posterior.

    The noisy network is a different model from the ordinary one: its weight posterior
    is that of a network whose hidden units are noisy. As Δ → 0 it tends to the ordinary
    network's posterior (at the price of slower mixing); the output noise is the model's
    Gaussian likelihood in both. With no hidden layer there are no latents and the sampler
    draws the exact linear-regression posterior.

    Predictions use the deterministic forward pass of the sampled weights, like every
    other :class:`~bayesnn.Posterior`: the network the user built is the model of
    interest, the activation noise is a device to make Gibbs sampling possible, and for
    small Δ the two predictives differ by O(Δ ‖W‖²) in variance.

    Parameters
    ----------
    num_samples, num_warmup, num_chains, thinning
        As :class:`CoordinateGibbs` (chains start from fresh ``model.init_params`` draws,
        latents at their noise-free values).
    preactivation_var : float or sequence of float
        Δz > 0, one value for all hidden layers or one per hidden layer.
    postactivation_var : float or sequence of float
        Δx ≥ 0, likewise; 0: no post-activation latents.
    collapse : bool
        Also draw each hidden unit's weights with its pre-activations integrated out, and
        move them along the scale symmetry (see Mixing); needs ``postactivation_var=0``.
        ``sample_stats`` then holds ``num_evals``, the likelihood evaluations per sweep.
    batch_size : None
        Must stay None: Gibbs updates need the full data (a ValueError says why).

    Notes
    -----
    Needs a :class:`~bayesnn.models.MLP` with ``relu`` (or ``linear``) activation, a
    Gaussian prior on every weight with one variance per leaf (``priors.Normal``,
    ``priors.FanInNormal``), and either a homoscedastic ``likelihoods.Gaussian`` with fixed
    scale or ``likelihoods.Probit`` (binary labels, untempered): its latent outputs
    ``u ~ N(f, 1)``, ``y = 1[u > 0]``, are one more Gibbs block (Albert & Chib 1993).

    References
    ----------
    Piccioli, G., Troiani, E. & Zdeborová, L. (2023). Gibbs sampling the posterior of
    neural networks. arXiv:2306.02729.
    Albert, J. H. & Chib, S. (1993). Bayesian analysis of binary and polychotomous
    response data. *JASA* 88(422), 669–679.
    Murray, I., Adams, R. P. & MacKay, D. J. C. (2010). Elliptical slice sampling.
    *AISTATS*, 541–548.
    Liu, J. S. & Sabatti, C. (2000). Generalised Gibbs sampler and multigrid Monte Carlo
    for Bayesian computation. *Biometrika* 87(2), 353–369.
    van Dyk, D. A. & Park, T. (2008). Partially collapsed Gibbs samplers. *JASA* 103,
    790–796.
    """

    num_samples: int = 1000
    num_warmup: int = 1000
    num_chains: int = 1
    thinning: int = 1
    preactivation_var: float | Sequence[float] = 1e-1
    postactivation_var: float | Sequence[float] = 0.0
    collapse: bool = False
    batch_size: int | None = None

    def __post_init__(self):
        _check_full_batch("LatentGibbs", self.batch_size)
        check_chain_args(num_samples=self.num_samples, num_warmup=self.num_warmup,
                         num_chains=self.num_chains, thinning=self.thinning)
        for name, zero in (("preactivation_var", False), ("postactivation_var", True)):
            value = getattr(self, name)
            _per_layer(value, len(value) if isinstance(value, Sequence) else 1, name, zero)
        post = self.postactivation_var
        if self.collapse and any(post if isinstance(post, Sequence) else (post,)):
            raise ValueError(f"collapse=True needs postactivation_var=0, got {post!r}")

    def run(
        self, model: BNN, data: Dataset, key, *, progress=None, checkpoint=None
    ) -> Posterior:
        x, y = jnp.asarray(data.x), jnp.asarray(data.y)
        gibbs = latent_gibbs(model, self.preactivation_var, self.postactivation_var,
                             self.collapse)
        k_init, k_run = jax.random.split(key)

        def step_fn(key, states, x, y):
            keys = jax.random.split(key, self.num_chains)
            return jax.vmap(gibbs.step, in_axes=(0, 0, None))(keys, states, (x, y))

        states = _init_chains(model, gibbs.init, k_init, self.num_chains, x, y)
        draws, stats, seconds, interrupted = run_sweeps(
            step_fn, states, k_run, (x, y), num_warmup=self.num_warmup,
            num_samples=self.num_samples, thinning=self.thinning,
            position_fn=lambda s: s.position, desc="LatentGibbs", progress=progress,
            checkpoint=checkpoint,
            hint="try larger preactivation_var / postactivation_var",
        )
        return _posterior(model, self, draws, stats, seconds, interrupted,
                          num_devices=num_chain_devices(states))


# -- NUTS within Gibbs for hierarchical priors -----------------------------------------


class _ConjugateBlock(CustomGibbs):
    """A NumPyro Gibbs block whose update also receives the model's data arguments.

    ``CustomGibbs`` (behind ``HMCGibbs``) hands its function only site values, so data
    would have to be closed over and baked into the compiled program as constants.
    """

    def sample(self, state, model_args, model_kwargs):
        rng_key, key = jax.random.split(state.rng_key)
        sites = (model_kwargs or {}).get(GIBBS_SITES_KWARG, {})
        return state._replace(z=self._gibbs_fn(key, state.z, sites, *model_args), rng_key=rng_key)


@dataclass(frozen=True)
class HierarchicalNUTS:
    """NUTS for the weights, Gibbs for Gamma-distributed prior and noise precisions.

    The model's weight prior is replaced by the hierarchy of ``hierarchical`` (see
    :class:`~bayesnn.inference.hyper.Hierarchical`): each group's precision, and with a
    noise hyperprior the Gaussian noise precision, is drawn from its conjugate Gamma
    conditional (:func:`~bayesnn.inference.hyper.gibbs_hyper_update`) between NUTS
    updates of the weights given the precisions — Neal's (1996) scheme, with NUTS in
    place of hybrid Monte Carlo, run as a NumPyro ``Gibbs`` kernel (the machinery of
    ``HMCGibbs``) through the project's driver, so it can checkpoint. Chains start at fresh
    ``model.init_params`` draws with the precisions at their prior means. NUTS adapts its
    step size and diagonal mass matrix during warmup; the NumPyro state carries its own
    PRNG key, derived from ``key``.

    The precision draws are returned in ``info["hyperparameters"]`` (leading
    ``(chain, draw)``); with a noise hyperprior the position's ``lik/log_scale`` holds
    the sampled noise std, so predictions use it.

    Parameters
    ----------
    hierarchical : Hierarchical
        The hyperpriors.
    num_samples, num_warmup, num_chains, thinning
        As :class:`CoordinateGibbs`, not NumPyro's meaning: each chain runs ``num_warmup +
        num_samples * thinning`` steps (a step: the Gibbs update of the precisions, then
        one NUTS update of the weights), discards the first ``num_warmup`` (NUTS adapts
        during them) and keeps every ``thinning``-th after them, ``num_samples`` draws.
    target_accept_prob, max_tree_depth
        NUTS settings.
    batch_size : None
        Must stay None (NUTS and the Gibbs updates need the full data).

    References
    ----------
    Neal, R. M. (1996). *Bayesian Learning for Neural Networks*. Springer, ch. 3.
    Hoffman, M. D. & Gelman, A. (2014). The No-U-Turn sampler. *JMLR* 15, 1593–1623.
    """

    hierarchical: Hierarchical = Hierarchical()
    num_samples: int = 1000
    num_warmup: int = 1000
    num_chains: int = 1
    thinning: int = 1
    target_accept_prob: float = 0.8
    max_tree_depth: int = 10
    batch_size: int | None = None

    def __post_init__(self):
        _check_full_batch("HierarchicalNUTS", self.batch_size)
        check_chain_args(num_samples=self.num_samples, num_warmup=self.num_warmup,
                         num_chains=self.num_chains, thinning=self.thinning)
        if not 0 < self.target_accept_prob < 1:
            raise ValueError(f"target_accept_prob must be in (0, 1), got {self.target_accept_prob}")

    def run(
        self, model: BNN, data: Dataset, key, *, progress=None, checkpoint=None
    ) -> Posterior:
        hier = self.hierarchical
        hier.check(model)
        x, y = jnp.asarray(data.x), jnp.asarray(data.y)
        hyper_sites = [f"hyper/{g}" for g in weight_groups(model, hier.group)]
        hyper_sites += [f"hyper/{NOISE}"] if hier.noise is not None else []

        def position_of(sites):
            extra = {"lik/log_scale": -0.5 * jnp.log(sites[f"hyper/{NOISE}"])} if hier.noise else {}
            return model.position_from_sites({**sites, **extra})

        def update(key, gibbs_sites, hmc_sites, x, y):
            position = position_of({**gibbs_sites, **hmc_sites})
            tau, _ = gibbs_hyper_update(key, position, hier, model, (x, y))
            return {f"hyper/{g}": v for g, v in tau.items()}

        nuts = NUTS(partial(hier.numpyro_model, model), target_accept_prob=self.target_accept_prob,
                    max_tree_depth=self.max_tree_depth)
        kernel = Gibbs([(_ConjugateBlock(update), hyper_sites), (nuts, None)])
        k_init, k_pos, k_run = jax.random.split(key, 3)
        # Chains start at fresh network initialisations, the precisions at their prior means.
        bayesian = {p for paths in weight_groups(model, hier.group).values() for p in paths}
        positions = initial_positions(model, k_pos, self.num_chains)
        init_params = {f"net/{p}": v for p, v in flatten_paths(positions["net"]).items()
                       if p in bayesian}
        init_params |= {
            f"hyper/{g}": jnp.broadcast_to(tau, (self.num_chains,))
            for g, tau in hier.init_precisions(model).items()
        }
        states = shard_chains(jax.vmap(
            lambda k, p: kernel.init(k, self.num_warmup, p, (x, y), {})
        )(jax.random.split(k_init, self.num_chains), init_params))

        def step_fn(_, states, x, y):
            states = jax.vmap(lambda s: kernel.sample(s, (x, y), {}))(states)
            nuts = states.block_states[1]
            return states, {"diverging": nuts.diverging, "n_steps": nuts.num_steps,
                            "acceptance_rate": nuts.accept_prob}

        draws, stats, seconds, interrupted = run_sweeps(
            step_fn, states, k_run, (x, y), num_warmup=self.num_warmup,
            num_samples=self.num_samples, thinning=self.thinning,
            position_fn=lambda s: (jax.vmap(position_of)(s.z),
                                   {k.removeprefix("hyper/"): s.z[k] for k in hyper_sites}),
            desc="HierarchicalNUTS", progress=progress, checkpoint=checkpoint,
            hint="try a larger target_accept_prob or tighter hyperpriors",
        )
        positions, hyper = draws
        return _posterior(model, self, positions, stats, seconds, interrupted,
                          hyperparameters=hyper, num_devices=num_chain_devices(states))

"""SWAG: a Gaussian over the weights from the moments of an SGD trajectory.

Started from a trained network, SGD with a constant (or cyclical) learning rate keeps moving
around the mode. Every ``collect_every`` steps SWAG adds the iterate to running first and
second moments and keeps its deviation from the running mean in a ring buffer of the last
``K`` deviations. The posterior is ``N(θ_SWA, ½ Σ_diag + D Dᵀ / (2(K - 1)))``: the SWA mean
``θ_SWA`` (Izmailov et al. 2018), the diagonal of the iterates' covariance and the low-rank
covariance of the deviation matrix ``D`` (Maddox et al. 2019, eq. 1-3). For a quadratic loss
and a small learning rate the SGD iterates are approximately Gaussian with a covariance
proportional to the learning rate (Mandt, Hoffman & Blei 2017, eq. 13), which is what the
moments estimate.

The moments are small pure functions (:func:`init_moments`, :func:`collect`,
:func:`sample`) on pytrees, leaf by leaf; no ravelled weight vector is formed. The SGD
phase is a chain of the driver (:func:`~bayesnn.inference.driver.run_chunks`): chunks of
whole epochs, checkpoints, Ctrl-C. Several chains are MultiSWAG (Wilson & Izmailov 2020):
independent SWAG runs, each from its own MAP fit, vmapped as an ensemble's members.

References
----------
Izmailov, P., Podoprikhin, D., Garipov, T., Vetrov, D. & Wilson, A. G. (2018). Averaging
weights leads to wider optima and better generalization. *UAI*.
Maddox, W. J., Izmailov, P., Garipov, T., Vetrov, D. P. & Wilson, A. G. (2019). A simple
baseline for Bayesian uncertainty in deep learning. *NeurIPS* (Algorithm 1).
Mandt, S., Hoffman, M. D. & Blei, D. M. (2017). Stochastic gradient descent as approximate
Bayesian inference. *JMLR* 18.
Polyak, B. T. (1964). Some methods of speeding up the convergence of iteration methods.
*USSR Computational Mathematics and Mathematical Physics* 4(5), 1–17 (heavy-ball
stability: ``0 < ε λ < 2(1 + β)``).
Wilson, A. G. & Izmailov, P. (2020). Bayesian deep learning and a probabilistic perspective
of generalization. *NeurIPS* (MultiSWAG, section 4).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from bayesnn.bnn import BNN, Batch
from bayesnn.data import Dataset, check_batch_size, num_batches
from bayesnn.data.batching import next_batch
from bayesnn.inference.driver import run_chunks
from bayesnn.inference.ensemble import Ensemble
from bayesnn.inference.init import check_init
from bayesnn.inference.map import MAP
from bayesnn.inference.programs import program_key, run_program
from bayesnn.inference.schedules import Constant
from bayesnn.inference.sharding import num_chain_devices, shard_chains, to_host
from bayesnn.inference.step_size import curvature_rows, largest_curvature
from bayesnn.posterior import Posterior
from bayesnn.validation import check_positive, config

__all__ = ["SWAG", "SWAGMoments", "SWAGState", "collect", "covariance", "init_moments",
           "sample"]

_CHUNKS_PER_RUN = 20  # progress updates (and finiteness checks) per run
# learning_rate=None: this fraction of heavy-ball SGD's stability limit 2(1 + β)/λ_max, the
# fraction SGLD's default step takes of its own limit (0.2/λ_max of 4/λ_max).
STABLE_FRACTION = 0.05


class SWAGMoments(NamedTuple):
    """Running moments of the collected iterates."""

    mean: Any  # θ_SWA: mean of the iterates collected so far
    sq_mean: Any  # mean of their squares
    deviations: Any  # leaves (rank, ...): the last deviations θ_i - θ̄_i, a ring buffer
    count: jax.Array  # iterates collected


class SWAGState(NamedTuple):
    """One chain of the SGD phase."""

    position: Any
    opt_state: Any  # SGD's momentum
    moments: SWAGMoments
    epoch: Any  # this epoch's minibatch indices; () for full batch


def init_moments(position, rank: int) -> SWAGMoments:
    """Empty moments for weights shaped like ``position``, keeping ``rank`` deviations."""
    zeros = jax.tree.map(jnp.zeros_like, position)
    deviations = jax.tree.map(lambda p: jnp.zeros((rank, *jnp.shape(p)), p.dtype), position)
    return SWAGMoments(zeros, zeros, deviations, jnp.zeros((), jnp.int32))


def collect(moments: SWAGMoments, position) -> SWAGMoments:
    """``moments`` with the iterate ``position`` added (Maddox et al. 2019, Algorithm 1):
    ``θ̄ ← (n θ̄ + θ) / (n + 1)``, likewise the squares, and ``θ - θ̄`` (with the new
    ``θ̄``) written over the oldest deviation."""
    n = moments.count.astype(jnp.result_type(float))
    frac = 1.0 / (n + 1.0)
    mean = jax.tree.map(lambda m, p: m + (p - m) * frac, moments.mean, position)
    sq_mean = jax.tree.map(lambda s, p: s + (p * p - s) * frac, moments.sq_mean, position)
    slot = moments.count % jax.tree.leaves(moments.deviations)[0].shape[0]
    deviations = jax.tree.map(
        lambda d, p, m: jax.lax.dynamic_update_index_in_dim(d, p - m, slot, 0),
        moments.deviations, position, mean)
    return SWAGMoments(mean, sq_mean, deviations, moments.count + 1)


def _rank_in_use(moments: SWAGMoments):
    """Mask of the filled deviation slots and their number ``K``."""
    rank = jax.tree.leaves(moments.deviations)[0].shape[0]
    k = jnp.minimum(moments.count, rank)
    return jnp.arange(rank) < k, k


def sample(key, moments: SWAGMoments, num_samples: int):
    """``num_samples`` weights (leading axis) from the SWAG Gaussian (Maddox et al. 2019,
    eq. 3): ``θ_SWA + Σ_diag^{1/2} z₁ / √2 + D z₂ / √(2(K - 1))``, ``Σ_diag`` the iterates'
    variance (clipped at 0), ``D`` the ``K`` deviations kept."""
    filled, k = _rank_in_use(moments)
    k_diag, k_low = jax.random.split(key)
    leaves, treedef = jax.tree.flatten(moments.mean)
    keys = jax.random.split(k_diag, len(leaves))
    z2 = jax.random.normal(k_low, (num_samples, filled.shape[0]), leaves[0].dtype) * filled
    low_scale = jax.lax.rsqrt(2.0 * jnp.maximum(k - 1, 1).astype(leaves[0].dtype))

    def draw(key, mean, sq_mean, dev):
        std = jnp.sqrt(jnp.clip(sq_mean - mean**2, 0.0))
        z1 = jax.random.normal(key, (num_samples, *mean.shape), mean.dtype)
        return mean + std * z1 / math.sqrt(2.0) + low_scale * jnp.tensordot(z2, dev, 1)

    return jax.tree.unflatten(treedef, [
        draw(*args) for args in zip(keys, leaves, treedef.flatten_up_to(moments.sq_mean),
                                    treedef.flatten_up_to(moments.deviations), strict=True)])


def covariance(moments: SWAGMoments) -> jax.Array:
    """The SWAG covariance ``½ Σ_diag + D Dᵀ / (2(K - 1))`` as a dense matrix over the
    ravelled weights (for small networks and tests)."""
    filled, k = _rank_in_use(moments)
    ravel = lambda t: ravel_pytree(t)[0]  # noqa: E731
    mean, sq_mean = ravel(moments.mean), ravel(moments.sq_mean)
    dev = jax.vmap(ravel)(moments.deviations) * filled[:, None]
    diag = jnp.clip(sq_mean - mean**2, 0.0)
    return 0.5 * jnp.diag(diag) + dev.T @ dev / (2.0 * jnp.maximum(k - 1, 1))


@config
@dataclass(frozen=True)
class SWAG:
    """SWA-Gaussian: the moments of SGD iterates around a trained network.

    ``num_chains`` independent runs make MultiSWAG: draws ``(num_chains, num_samples)``.

    Parameters
    ----------
    learning_rate : float or None
        SGD's learning rate on the mean loss ``-log p(θ | D) / N`` (MAP's objective), high
        enough that the iterates explore the mode (Maddox et al. use the last rate of a
        typical schedule or a little above). None (the default): from the problem, per
        chain, ``STABLE_FRACTION · 2(1 + β) / λ_max``, with ``λ_max`` the largest curvature
        of the mean loss at the chain's start (power iteration on
        :func:`~bayesnn.inference.step_size.curvature_rows` rows,
        :func:`~bayesnn.inference.step_size.largest_curvature`) and ``2(1 + β) / λ`` the
        largest rate at which SGD with momentum ``β`` is stable along a direction of
        curvature ``λ`` (Polyak 1964); a fixed rate that suits one dataset diverges on
        another whose noise is tighter, since ``λ_max`` grows as ``1 / σ²``.
    momentum : float
        SGD's momentum, in ``[0, 1)``.
    epochs : int
        Passes of SGD after the start.
    batch_size : int or None
        Minibatch size (None: full batch, so SGD has no noise and the iterates converge).
        Each chain draws a fresh shuffle of the data for every epoch.
    collect_every : int or None
        Steps between collected iterates; None: one per epoch, as in the paper. With a
        :class:`~bayesnn.inference.schedules.Cyclical` schedule collect at the end of each
        cycle (``collect_every=cycle_length``), where the rate is lowest.
    rank : int
        Deviations kept, ``K`` (at least 2 iterates must be collected).
    num_samples : int
        Weight draws per chain.
    num_chains : int
        Independent SWAG runs (MultiSWAG with more than one).
    schedule : callable, optional
        Factor of the learning rate at step ``t`` (``bayesnn.inference.schedules``);
        default constant.
    init : {"map", "network"} or MAP
        Where SGD starts: a MAP fit (``"map"``: ``MAP()``; with several chains each chain
        fits its own from its own initialisation, as an :class:`~bayesnn.Ensemble`'s
        members), or the network's weights as they are, for every chain.

    Notes
    -----
    ``info`` holds ``swag`` (the :class:`SWAGMoments` of every chain, leading chain axis),
    ``learning_rate`` (each chain's),
    ``loss`` (each chain's loss per SGD step), ``num_collected``, ``num_steps``,
    ``seconds`` (MAP fit included), ``interrupted`` and, after a MAP fit, ``map_info``.
    Networks with batch statistics are refused: SWAG would need to recompute them for every
    draw.

    References
    ----------
    Maddox et al. (2019), Algorithm 1; Wilson & Izmailov (2020), section 4 (MultiSWAG).
    """

    learning_rate: float | None = None
    momentum: float = 0.9
    epochs: int = 20
    batch_size: int | None = 32
    collect_every: int | None = None
    rank: int = 20
    num_samples: int = 30
    num_chains: int = 1
    schedule: Callable | None = None
    init: str | MAP = "map"

    def __post_init__(self):
        if self.learning_rate is not None:
            check_positive(learning_rate=self.learning_rate)
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        for name in ("epochs", "collect_every", "rank", "num_samples", "num_chains"):
            value = getattr(self, name)
            if name == "collect_every" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.rank < 2:
            raise ValueError(f"rank must be >= 2 (D Dᵀ / (K - 1) needs two deviations), got "
                             f"{self.rank}")
        check_batch_size(self.batch_size, sys.maxsize)
        if self.schedule is not None and not callable(self.schedule):
            raise TypeError(f"schedule must be a function of the step, got {self.schedule!r}")
        check_init(self.init, ("network", "map"))

    def collected_steps(self, steps_per_epoch: int) -> np.ndarray:
        """Boolean mask over the SGD steps: True where the new iterate is collected."""
        t = np.arange(self.epochs * steps_per_epoch)
        every = steps_per_epoch if self.collect_every is None else self.collect_every
        return (t + 1) % every == 0

    def run(self, model: BNN, data: Dataset, key, *, progress=None, checkpoint=None) -> Posterior:
        if model.stats:
            raise ValueError(f"SWAG: the network {model.network_name} has batch statistics "
                             "(nnx.BatchStat, e.g. nnx.BatchNorm), which SWAG would have to "
                             "recompute for every draw; use a network without batch norm")
        x, y = jnp.asarray(data.x), jnp.asarray(data.y)
        n = x.shape[0]
        b = check_batch_size(self.batch_size, n)
        epoch_len = num_batches(n, b)
        keep = self.collected_steps(epoch_len)
        if keep.sum() < 2:
            raise ValueError(f"SWAG collects {keep.sum()} iterate(s) in {self.epochs} epochs "
                             f"of {epoch_len} steps with collect_every={self.collect_every}; "
                             "it needs at least 2: raise epochs or lower collect_every")
        k_map, k_run, k_draw = jax.random.split(key, 3)
        positions, info = self._start(model, data, k_map, progress)
        tx = optax.sgd(1.0, momentum=self.momentum or None)
        schedule = self.schedule or Constant()
        per_chunk = max(1, -(-self.epochs // _CHUNKS_PER_RUN)) * epoch_len
        num_chunks = -(-len(keep) // per_chunk)
        keep = np.pad(keep, (0, num_chunks * per_chunk - len(keep)))  # overshoot: not kept

        def loss(position, batch):
            return -model.logdensity_fn(position, batch, n) / n

        rates = self._learning_rates(model, positions, x, y, b, jax.random.fold_in(key, 3))

        def chain_step(key, state: SWAGState, rate, t, x, y, keep):
            if b == n:
                batch, epoch = Batch(x, y), state.epoch
            else:
                epoch, idx, mask = next_batch(key, state.epoch, t, n, b)
                batch = Batch(x[idx], y[idx], mask if n % b else None)
            value, grad = jax.value_and_grad(loss)(state.position, batch)
            updates, opt_state = tx.update(grad, state.opt_state)
            position = jax.tree.map(lambda p, u: p + rate * schedule(t) * u, state.position,
                                    updates)
            moments = jax.lax.cond(keep[t], collect, lambda m, _: m, state.moments, position)
            return SWAGState(position, opt_state, moments, epoch), value

        def chunk(state, key, i, x, y, keep, rates):
            def body(state, inp):
                t, keys = inp
                return jax.vmap(chain_step, (0, 0, 0, None, None, None, None))(
                    keys, state, rates, t, x, y, keep)

            ts = i * per_chunk + jnp.arange(per_chunk)
            keys = jax.random.split(key, (per_chunk, self.num_chains))
            return jax.lax.scan(body, state, (ts, keys))

        epoch = () if b == n else jnp.zeros((self.num_chains, epoch_len, b), jnp.int32)
        state = jax.vmap(lambda p: SWAGState(p, tx.init(p), init_moments(p, self.rank), ()))(
            positions)._replace(epoch=epoch)
        result = run_chunks(
            chunk, shard_chains(state), k_run, num_chunks, x, y, jnp.asarray(keep), rates,
            steps_per_chunk=per_chunk, desc="SWAG", progress=progress, checkpoint=checkpoint,
            hint="try a smaller learning_rate", cache_key=program_key(self, model),
        )
        moments = to_host(result.state.moments)  # from every process (across hosts)
        collected = int(np.min(moments.count))
        if collected < 2:
            raise RuntimeError(f"SWAG was interrupted after {collected} collected iterate(s); "
                               "it needs 2")
        draws = jax.vmap(sample, (0, 0, None))(
            jax.random.split(k_draw, self.num_chains), moments, self.num_samples)
        steps = min(result.num_chunks_done * per_chunk, self.epochs * epoch_len)
        losses = np.concatenate(result.outputs, 0).T
        info |= {
            "swag": jax.tree.map(np.asarray, moments), "loss": losses[:, :steps],
            "learning_rate": np.asarray(rates),
            "num_collected": collected, "num_steps": steps,
            "seconds": info["seconds"] + result.seconds,
            "interrupted": info["interrupted"] or result.interrupted,
            "num_devices": num_chain_devices(result.state),
        }
        return Posterior(model, jax.tree.map(np.asarray, draws), self, info)

    def _learning_rates(self, model: BNN, positions, x, y, batch_size: int, key) -> jax.Array:
        """Each chain's learning rate: ``learning_rate``, or from the curvature at its
        start (see the class docstring)."""
        chains = jax.tree.leaves(positions)[0].shape[0]
        if self.learning_rate is not None:
            return jnp.full((chains,), self.learning_rate, jnp.result_type(float))
        def rates(keys, positions, x, y):  # N and the rows from the shapes: one program
            n, rows = x.shape[0], curvature_rows(x.shape[0], batch_size)
            batch = Batch(x[:rows], y[:rows])

            def rate(key, position):
                curv = largest_curvature(key, lambda p: model.logdensity_fn(p, batch, n) / n,
                                         position)
                return STABLE_FRACTION * 2.0 * (1.0 + self.momentum) / curv

            return jax.vmap(rate)(keys, positions)

        return run_program(rates, program_key(self, model, batch_size),
                           jax.random.split(key, chains), positions, x, y)

    def _start(self, model: BNN, data: Dataset, key, progress):
        """Each chain's starting weights (leading chain axis) and the info to extend."""
        chains = self.num_chains
        if self.init == "network":
            start = jax.tree.map(lambda a: jnp.broadcast_to(a, (chains, *jnp.shape(a))),
                                 model.init_position)
            return start, {"seconds": 0.0, "interrupted": False}
        config = MAP() if self.init == "map" else self.init
        fitted = (config if chains == 1 else Ensemble(config, size=chains)).run(
            model, data, key, progress=progress)
        info = {"map_info": fitted.info, "seconds": fitted.info["seconds"],
                "interrupted": fitted.info["interrupted"]}
        return jax.tree.map(lambda a: jnp.asarray(a[:, 0]), fitted.draws), info

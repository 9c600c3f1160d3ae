"""Stochastic-gradient MCMC with shuffled minibatches: SGLD, pSGLD and SGHMC.

Each kernel is a BlackJAX-style pair of pure functions, ``init(position) -> State`` and
``step(rng_key, state, grad, step_size, temperature=1.0) -> State``, where ``grad`` is an
unbiased estimate of ∇ log p(θ | D) at ``state.position``: the gradient of
:meth:`~bayesnn.BNN.logdensity_fn` on a minibatch, whose likelihood term is scaled by
N / b. ``temperature`` T scales the variance of the injected noise, so the chain targets
p(θ | D)^(1/T) (T < 1: a cold posterior, Wenzel et al. 2020). The step takes the gradient
rather than a minibatch, so that the driver, which forms it, can add hierarchical
precisions, augmentation or rows split over devices without the kernel knowing; and it
returns the state alone, as these kernels have no per-step statistics (nothing is
accepted or rejected).

The method configurations :class:`SGLD`, :class:`PSGLD` and :class:`SGHMC` run a kernel
with :func:`~bayesnn.inference.driver.run_chunks`: ``num_chains`` chains under ``vmap``,
a fresh shuffle of the data for each chain and epoch drawn inside the jitted scan,
``num_warmup`` burn-in steps, then one draw every ``thinning`` steps, stored only at the
kept steps. With ``hyper``, a hierarchical prior's precisions are part of each chain's
state and are redrawn by Gibbs sampling once per epoch (Neal 1996; Chen et al. 2014, §4).
"""

from __future__ import annotations

import abc
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesnn import prng
from bayesnn.bnn import BNN, Batch
from bayesnn.data import Augment, Dataset, augment_batch, check_batch_size, num_batches
from bayesnn.data.batching import next_batch
from bayesnn.inference.base import check_chain_args, check_positive, classic_threefry
from bayesnn.inference.driver import buffer_slots, first_rows, run_chunks, store_row
from bayesnn.inference.hyper import NOISE, Hierarchical, gibbs_hyper_update
from bayesnn.inference.init import initial_positions
from bayesnn.inference.map import MAP
from bayesnn.inference.schedules import Constant, Cyclical
from bayesnn.inference.sharding import data_mesh, num_chain_devices, shard_chains, shard_rows
from bayesnn.posterior import Posterior
from bayesnn.tree import flatten_paths, tree_size

__all__ = [
    "SGLD", "PSGLD", "SGHMC", "Kernel", "SGLDState", "PSGLDState", "SGHMCState",
    "sgld", "psgld", "sghmc", "gaussian_noise", "preconditioned_langevin", "sghmc_dynamics",
]

_DRAW_BUFFER_BYTES = 64 * 2**20  # device memory for the draws kept within one chunk
_CHUNKS_PER_RUN = 20  # progress updates (and finiteness checks) per run
_INITS = ("random", "network", "map")


class Kernel(NamedTuple):
    """A sampler as a pair of pure functions (BlackJAX's ``SamplingAlgorithm``)."""

    init: Callable
    step: Callable


class SGLDState(NamedTuple):
    position: Any


class PSGLDState(NamedTuple):
    position: Any
    square_avg: Any  # V: running average of the squared per-example gradient


class SGHMCState(NamedTuple):
    position: Any
    momentum: Any  # v = η M⁻¹ r in Chen et al.'s parameterisation


# -- diffusion steps -------------------------------------------------------------------


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
    return jax.tree.map(
        lambda p, g, c, n: p + 0.5 * step_size * c * g + jnp.sqrt(temperature * step_size * c) * n,
        position, grad, preconditioner, noise,
    )


def sghmc_dynamics(rng_key, position, momentum, grad, step_size, alpha, temperature=1.0):
    """One step of SGHMC with friction (Chen et al. 2014, eq. 15, with ``β̂ = 0``).

    ``v ← (1 - α) v + η ĝ + N(0, 2 α η T)``, then ``θ ← θ + v``: the momentum is updated
    with the gradient at the current position before the position moves (symplectic
    Euler). BlackJAX's ``diffusions.sghmc`` moves the position with the old momentum
    instead (explicit Euler), which is stable only for ``η λ_max < α`` (in these units) and
    is therefore not used here.

    Returns
    -------
    position, momentum
    """
    noise = gaussian_noise(rng_key, position)
    scale = jnp.sqrt(2 * alpha * step_size * temperature)
    momentum = jax.tree.map(
        lambda v, g, n: (1 - alpha) * v + step_size * g + scale * n, momentum, grad, noise
    )
    return jax.tree.map(jnp.add, position, momentum), momentum


# -- kernels ---------------------------------------------------------------------------


def sgld() -> Kernel:
    """Stochastic gradient Langevin dynamics (Welling & Teh 2011, eq. 4).

    ``θ ← θ + (ε/2) ĝ + N(0, T ε)``, with ``ε = step_size``: the papers' convention, twice
    the step size ``h`` of BlackJAX's ``sgld`` (``θ + h ĝ + N(0, 2 T h)``). It is
    :func:`preconditioned_langevin` with ``G = 1`` (the multiplications by 1 compile away),
    rather than BlackJAX's Euler step, for the faster noise of :func:`gaussian_noise`.

    References
    ----------
    Welling, M. & Teh, Y. W. (2011). Bayesian learning via stochastic gradient Langevin
    dynamics. *ICML*.
    """

    def init(position) -> SGLDState:
        return SGLDState(position)

    def step(rng_key, state: SGLDState, grad, step_size, temperature=1.0) -> SGLDState:
        identity = jax.tree.map(lambda _: 1.0, state.position)
        return SGLDState(preconditioned_langevin(
            rng_key, state.position, grad, identity, step_size, temperature
        ))

    return Kernel(init, step)


def psgld(data_size: int, alpha: float = 0.99, eps: float = 1e-5) -> Kernel:
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

    def step(rng_key, state: PSGLDState, grad, step_size, temperature=1.0) -> PSGLDState:
        square_avg = jax.tree.map(
            lambda v, g: alpha * v + (1 - alpha) * (g / data_size) ** 2, state.square_avg, grad
        )
        precond = jax.tree.map(lambda v: 1 / (eps + jnp.sqrt(v)), square_avg)
        position = preconditioned_langevin(
            rng_key, state.position, grad, precond, step_size, temperature
        )
        return PSGLDState(position, square_avg)

    return Kernel(init, step)


def sghmc(alpha: float = 0.1) -> Kernel:
    """Stochastic gradient Hamiltonian Monte Carlo (Chen et al. 2014, eq. 15).

    SGD with momentum ``1 - α`` and learning rate ``η = step_size``, plus noise
    ``N(0, 2 α η T)`` on the momentum, which compensates the friction ``α`` (the gradient
    noise estimate ``β̂`` is 0). The momentum starts at 0 and is never resampled. See
    :func:`sghmc_dynamics`.

    References
    ----------
    Chen, T., Fox, E. B. & Guestrin, C. (2014). Stochastic gradient Hamiltonian Monte
    Carlo. *ICML*.
    """

    def init(position) -> SGHMCState:
        return SGHMCState(position, jax.tree.map(jnp.zeros_like, position))

    def step(rng_key, state: SGHMCState, grad, step_size, temperature=1.0) -> SGHMCState:
        return SGHMCState(*sghmc_dynamics(
            rng_key, state.position, state.momentum, grad, step_size, alpha, temperature
        ))

    return Kernel(init, step)


# -- the loop --------------------------------------------------------------------------


class _Chain(NamedTuple):
    kernel: Any  # the kernel's state
    epoch: Any  # this epoch's minibatch indices (num_batches, batch_size); () for full batch
    precisions: Any  # {group: τ} of a hierarchical prior; {} without one


def _hyper_step(key, hier: Hierarchical, model: BNN, old, new, precisions, epoch_end, data):
    """The hyperparameter half of a step of SG-MCMC with a hierarchical prior.

    ``new`` is the kernel's state after its step from ``old``. The noise std
    (``lik/log_scale``), when it has a hyperprior, belongs to the Gibbs update alone, so the
    kernel's move of it is undone. At the end of an epoch (``epoch_end``) every precision is
    redrawn from its conjugate conditional given the new weights, and the noise precision's
    given the residuals on all of ``data`` (:func:`~bayesnn.inference.hyper.
    gibbs_hyper_update`; Chen et al. 2014, §4).
    """
    if hier.noise is not None:
        new = new._replace(position={**new.position, "lik": old.position["lik"]})

    def update():
        tau, position = gibbs_hyper_update(key, new.position, hier, model, data)
        return new._replace(position=position), tau

    return jax.lax.cond(epoch_end, update, lambda: (new, precisions))


def _skip_unkept() -> bool:
    """Whether :func:`_store_if` skips the copy at unkept steps: on CPU only. On a GPU a
    conditional costs more than the copy (38 µs a step on an H200, against 115 µs for the
    whole SGLD step: ``benchmarks/results/gpu/driver_overhead.md``)."""
    return jax.default_backend() == "cpu"


def _store_if(keep, draws, values, slot):
    """:func:`~bayesnn.inference.driver.store_row` at a kept step. Where unkept steps are not
    skipped (:func:`_skip_unkept`), every step stores and the next kept draw overwrites
    what an unkept one wrote (the buffer's last slot is scratch)."""
    if _skip_unkept():
        return jax.lax.cond(keep, store_row, lambda d, *_: d, draws, values, slot)
    return store_row(draws, values, slot)


def _max_abs(position) -> jax.Array:
    """Largest |weight| of each chain (leading axis): finite iff the chain's position is."""
    return jnp.max(jnp.stack([
        jnp.max(jnp.abs(leaf.reshape(leaf.shape[0], -1)), axis=1)
        for leaf in jax.tree.leaves(position)
    ]), axis=0)


@dataclass(frozen=True)
class _SGMCMC(abc.ABC):
    """Fields, validation and the sampling loop shared by the SG-MCMC methods."""

    step_size: float
    batch_size: int | None = 32
    num_samples: int = 200
    num_warmup: int = 1000
    thinning: int = 10
    num_chains: int = 1
    temperature: float = 1.0
    schedule: Callable | None = None
    init: str | MAP = "random"
    augment: Augment | None = None
    hyper: Hierarchical | None = None

    def __post_init__(self):
        check_positive(step_size=self.step_size)
        check_chain_args(num_samples=self.num_samples, num_warmup=self.num_warmup,
                         num_chains=self.num_chains, thinning=self.thinning)
        check_batch_size(self.batch_size, sys.maxsize)
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        if self.schedule is not None and not callable(self.schedule):
            raise TypeError(f"schedule must be a function of the step, got {self.schedule!r}")
        if self.hyper is not None and not isinstance(self.hyper, Hierarchical):
            raise TypeError(f"hyper must be a bayesnn.Hierarchical or None, got {self.hyper!r}")
        if not (isinstance(self.init, MAP) or self.init in _INITS):
            raise ValueError(f"init must be one of {_INITS} or a bayesnn.MAP, got {self.init!r}")
        if isinstance(self.schedule, Cyclical):
            sampling = self.schedule.cycle_length - self.schedule.exploration_steps
            if sampling < self.thinning:
                raise ValueError(
                    f"thinning ({self.thinning}) exceeds the {sampling} sampling steps per "
                    "cycle of the cyclical schedule: no cycle would yield a draw"
                )

    @abc.abstractmethod
    def kernel(self, data_size: int) -> Kernel:
        """The method's kernel for a data set of ``data_size`` examples."""

    def kept_steps(self) -> np.ndarray:
        """Boolean mask over the steps of a run: True where the new position is a draw.

        After ``num_warmup`` steps, every ``thinning``-th step; with a :class:`Cyclical`
        schedule, every ``thinning``-th step of each cycle's sampling phase. The mask
        ends at the last kept step, so its length is the number of steps of the run.
        """
        t = np.arange(self.num_warmup + self.num_samples * self.thinning)
        phase = t - self.num_warmup
        if isinstance(self.schedule, Cyclical):
            per_cycle = (self.schedule.cycle_length - self.schedule.exploration_steps) // (
                self.thinning)
            cycles = -(-self.num_samples // per_cycle) + 1  # + 1: warm-up may end mid-cycle
            t = np.arange(self.num_warmup + cycles * self.schedule.cycle_length)
            phase = np.where(t >= self.num_warmup, self.schedule.sampling_step(t), -1)
        keep = (phase >= 0) & ((phase + 1) % self.thinning == 0)
        return keep[: np.flatnonzero(keep)[self.num_samples - 1] + 1]

    def run(self, model: BNN, data: Dataset, key, *, progress=None, checkpoint=None) -> Posterior:
        name = type(self).__name__
        point = [p for p, bayes in flatten_paths(model.bayesian_mask).items() if not bayes]
        if point:
            raise ValueError(
                f"{name} samples every weight, but the prior leaves {point} as point "
                "estimates; give the PerParameter prior a default"
            )
        hier = self.hyper
        if hier is not None:
            hier.check(model)
        x, y = jnp.asarray(data.x), jnp.asarray(data.y)
        n = x.shape[0]
        b = check_batch_size(self.batch_size, n)
        rows = data_mesh(b, self.num_chains)
        epoch_len = num_batches(n, b)
        chains, kernel = self.num_chains, self.kernel(n)
        schedule = self.schedule or Constant()
        sampling = getattr(schedule, "sampling", lambda t: True)

        keep = self.kept_steps()
        steps = self._steps_per_chunk(len(keep), tree_size(model.init_position))
        num_chunks = -(-len(keep) // steps)
        # The last chunk may run a few steps past the last draw; they change nothing kept.
        keep = np.pad(keep, (0, num_chunks * steps - len(keep)))
        kept_per_chunk = keep.reshape(num_chunks, steps).sum(1)
        slots = buffer_slots(kept_per_chunk, steps)

        def logdensity(position, batch, precisions):
            if hier is None:
                return model.logdensity_fn(position, batch, n)
            return hier.logdensity_fn(model, position, precisions, batch, n)

        def chain_step(keys, chain: _Chain, t, x, y) -> _Chain:
            k_batch, k_step = keys
            if b == n:
                batch, epoch = Batch(x, y), chain.epoch
            else:
                epoch, idx, mask = next_batch(k_batch, chain.epoch, t, n, b)
                batch = Batch(x[idx], y[idx], mask if n % b else None)
            if self.augment is not None:
                k_step, k_aug = jax.random.split(k_step)
                batch = augment_batch(self.augment, k_aug, batch)
            batch = shard_rows(batch, rows)  # one chain on several devices: split its rows
            if hier is not None:
                k_step, k_hyper = jax.random.split(k_step)
            grad = jax.grad(logdensity)(chain.kernel.position, batch, chain.precisions)
            step_size = self.step_size * schedule(t)
            temperature = self.temperature * sampling(t)  # no noise while exploring
            state = kernel.step(k_step, chain.kernel, grad, step_size, temperature)
            precisions = chain.precisions
            if hier is not None:
                state, precisions = _hyper_step(k_hyper, hier, model, chain.kernel, state,
                                                precisions, (t + 1) % epoch_len == 0, (x, y))
            return _Chain(state, epoch, precisions)

        def chunk(state: _Chain, key, i, x, y, keep, trace=False):
            def body(carry, inp):
                state, draws, count = carry
                t, keys = inp
                state = jax.vmap(chain_step, (0, 0, None, None, None))(keys, state, t, x, y)
                draws = _store_if(keep[t], draws, (state.kernel.position, state.precisions),
                                  count)
                return (state, draws, count + keep[t]), (
                    _max_abs(state.kernel.position) if trace else None)

            draws = jax.tree.map(lambda p: jnp.zeros((slots,) + p.shape, p.dtype),
                                 (state.kernel.position, state.precisions))
            ts = i * steps + jnp.arange(steps)
            keys = jax.random.split(key, (steps, chains, 2))
            (state, draws, _), max_abs = jax.lax.scan(
                body, (state, draws, jnp.int32(0)), (ts, keys)
            )
            return state, ((draws, max_abs) if trace else draws)

        k_init, k_run = jax.random.split(key)
        positions, map_info = initial_positions(
            k_init, model, data, self.init, chains, progress=progress
        )
        epoch = () if b == n else jnp.zeros((chains, epoch_len, b), jnp.int32)
        positions, precisions = self._init_precisions(model, positions)
        result = run_chunks(
            chunk, shard_chains(_Chain(jax.vmap(kernel.init)(positions), epoch, precisions)),
            k_run, num_chunks, x, y, jnp.asarray(keep),
            steps_per_chunk=steps, desc=name, progress=progress, checkpoint=checkpoint,
            select=lambda i, out: first_rows(out, kept_per_chunk[i]),
            locate=partial(chunk, trace=True), hint="try a smaller step_size",
        )
        if not any(kept_per_chunk[: result.num_chunks_done]):
            raise RuntimeError(f"{name} was interrupted before its first draw")
        draws, precisions = jax.tree.map(
            lambda *chunks: np.moveaxis(np.concatenate(chunks), 0, 1), *result.outputs
        )
        kept_t = np.flatnonzero(keep)[: jax.tree.leaves(draws)[0].shape[1]]
        step_sizes = self.step_size * np.asarray(schedule(kept_t), np.float64)
        info = {
            "seconds": result.seconds,
            "interrupted": result.interrupted,
            "num_steps": result.num_chunks_done * steps,
            "steps_per_chunk": steps,
            "num_devices": rows.size if rows is not None else num_chain_devices(result.state),
            "sample_stats": {"step_size": np.broadcast_to(step_sizes, (chains, len(kept_t)))},
        }
        if hier is not None:
            info["hyperparameters"] = precisions
        if map_info is not None:
            info["map_info"] = map_info
        return Posterior(model, jax.tree.map(jnp.asarray, draws), self, info)

    def _init_precisions(self, model: BNN, positions):
        """Each chain's precisions at their prior means, the noise std at the noise
        precision's (``positions`` has a leading chain axis); ``{}`` without ``hyper``."""
        if self.hyper is None:
            return positions, {}
        dtype = jnp.result_type(float)
        tau = {g: jnp.full((self.num_chains,), v, dtype)
               for g, v in self.hyper.init_precisions(model).items()}
        if NOISE in tau:
            lik = {**positions["lik"], "log_scale": -0.5 * jnp.log(tau[NOISE])}
            positions = {**positions, "lik": lik}
        return positions, tau

    def _steps_per_chunk(self, num_steps: int, num_params: int) -> int:
        """About 1/20 of the run, with the chunk's draw buffer under 64 MiB.

        Chunks are balanced, so the last one overshoots the run by fewer steps than there
        are chunks.
        """
        max_draws = max(1, _DRAW_BUFFER_BYTES // (4 * num_params * self.num_chains) - 2)
        longest = min(math.ceil(num_steps / _CHUNKS_PER_RUN), max_draws * self.thinning)
        return math.ceil(num_steps / math.ceil(num_steps / max(1, longest)))


@dataclass(frozen=True)
class SGLD(_SGMCMC):
    """Stochastic gradient Langevin dynamics (Welling & Teh 2011, eq. 4).

    ``θ ← θ + (ε/2) ĝ + N(0, T ε)``, with ``ĝ`` the minibatch estimate of ∇ log p(θ | D).
    The discretisation inflates the posterior variance by a factor of about
    ``1 + ε λ / 4`` along a direction of posterior precision λ; keep ``ε λ_max ≪ 1``.

    Parameters
    ----------
    step_size : float
        ε, the paper's step size (twice the step size of BlackJAX's ``sgld``).
    batch_size : int or None
        Minibatch size; None uses all the data at every step. Each chain draws a fresh
        shuffle of the data for every epoch; a partial last batch is masked.
    num_samples : int
        Draws kept per chain.
    num_warmup : int
        Burn-in steps, discarded.
    thinning : int
        Keep one draw every ``thinning`` steps (steps, not epochs).
    num_chains : int
        Independent chains (vectorised with ``vmap``), each with its own noise and
        minibatch order.
    temperature : float
        T, scales the injected noise variance: the chain targets ``p(θ | D)^(1/T)``
        (T < 1: a cold posterior, Wenzel et al. 2020; T = 0: stochastic optimisation).
    schedule : callable, optional
        Step-size factor as a function of the step (:mod:`bayesnn.inference.schedules`);
        default constant. With :class:`~bayesnn.inference.schedules.Cyclical`, the
        exploration phase of each cycle injects no noise and draws are kept only in the
        sampling phase (Zhang et al. 2020).
    init : {"random", "network", "map"} or MAP
        Where chains start: a fresh :meth:`~bayesnn.BNN.init_params` per chain, the
        network's own weights (every chain), or the weights of one MAP fit (``"map"``:
        ``MAP()``; or the given config), a common warm start for SG-MCMC.
    augment : bayesnn.data.Augment, optional
        Random image transformations of every minibatch (each step its own key). The chain
        then samples the posterior of the augmented-data likelihood, as is usual in
        Bayesian deep learning.
    hyper : bayesnn.Hierarchical, optional
        A hierarchical prior: the model's weight prior becomes ``w | τ_g ~ N(0, 1/τ_g)``
        per group with Gamma hyperpriors, and optionally the Gaussian noise precision gets
        one (see :class:`~bayesnn.inference.hyper.Hierarchical`). The precisions live in
        each chain's state, start at their prior means and are redrawn from their
        conjugate Gamma conditionals at the end of every epoch (every step with the full
        batch), the noise precision's from the residuals on all the training data (Neal
        1996; Chen et al. 2014, §4); between updates the gradient uses the current
        precisions and the noise std is held fixed. ``temperature`` scales the weights'
        noise only: the Gamma conditionals are the model's (with its likelihood's own
        temperature).

    Notes
    -----
    :func:`~bayesnn.fit` returns a :class:`~bayesnn.Posterior` with draws of shape
    ``(num_chains, num_samples, ...)``; its ``info`` holds ``seconds``, ``interrupted``,
    ``num_steps``, ``steps_per_chunk``, ``sample_stats`` (``step_size`` of each draw),
    with ``hyper`` the precisions of each draw in ``hyperparameters`` (``{group: (chain,
    draw)}``, as for :class:`~bayesnn.HierarchicalNUTS`) and, with a MAP start,
    ``map_info``.

    References
    ----------
    Welling, M. & Teh, Y. W. (2011). Bayesian learning via stochastic gradient Langevin
    dynamics. *ICML*.
    Neal, R. M. (1996). *Bayesian Learning for Neural Networks*. Springer, ch. 3.
    Chen, T., Fox, E. B. & Guestrin, C. (2014). Stochastic gradient Hamiltonian Monte
    Carlo. *ICML*.
    Wenzel, F. et al. (2020). How good is the Bayes posterior in deep neural networks
    really? *ICML*.
    Zhang, R. et al. (2020). Cyclical stochastic gradient MCMC for Bayesian deep learning.
    *ICLR*.
    """

    def kernel(self, data_size: int) -> Kernel:
        return sgld()


@dataclass(frozen=True)
class PSGLD(_SGMCMC):
    """Preconditioned SGLD with an RMSprop preconditioner (Li et al. 2016, Alg. 1).

    See :func:`psgld`; the correction term ``Γ`` is omitted, as the paper recommends.
    Without it the preconditioner must change slowly compared with the chain: on a
    Bayesian linear regression that mixes within ~50 steps, ``alpha = 0.99`` inflates the
    posterior variance by 10–30% while ``alpha = 0.999`` is within a few percent.

    Parameters
    ----------
    step_size : float
        ε of Li et al.: the drift is ``(ε/2) G ĝ`` and the noise ``N(0, T ε G)``.
    alpha : float
        Decay of the running average of squared gradients, in (0, 1).
    eps : float
        λ, added to ``√V`` in the preconditioner's denominator.
    batch_size, num_samples, num_warmup, thinning, num_chains, temperature, schedule, init,
    augment, hyper
        As for :class:`SGLD`.

    References
    ----------
    Li, C., Chen, C., Carlson, D. & Carin, L. (2016). Preconditioned stochastic gradient
    Langevin dynamics for deep neural networks. *AAAI*.
    """

    alpha: float = 0.99
    eps: float = 1e-5

    def __post_init__(self):
        super().__post_init__()
        check_positive(eps=self.eps)
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")

    def kernel(self, data_size: int) -> Kernel:
        return psgld(data_size, self.alpha, self.eps)


@dataclass(frozen=True)
class SGHMC(_SGMCMC):
    """Stochastic gradient Hamiltonian Monte Carlo (Chen et al. 2014, eq. 15).

    See :func:`sghmc`: SGD with momentum ``1 - alpha`` and learning rate ``step_size``,
    plus noise that leaves the posterior invariant.

    Parameters
    ----------
    step_size : float
        η, the learning rate of Chen et al. (ε² in Hamiltonian units).
    alpha : float
        Friction: the momentum decays by the factor ``1 - alpha`` per step, in (0, 1].
        ``alpha = 1`` is SGLD with ``ε = 2 η``.
    batch_size, num_samples, num_warmup, thinning, num_chains, temperature, schedule, init,
    augment, hyper
        As for :class:`SGLD`.

    References
    ----------
    Chen, T., Fox, E. B. & Guestrin, C. (2014). Stochastic gradient Hamiltonian Monte
    Carlo. *ICML*.
    """

    alpha: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha!r}")

    def kernel(self, data_size: int) -> Kernel:
        return sghmc(self.alpha)

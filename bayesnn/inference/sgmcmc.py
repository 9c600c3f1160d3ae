"""Stochastic-gradient MCMC with shuffled minibatches: what SGLD, pSGLD and SGHMC share.

Each kernel (:func:`~bayesnn.inference.sgld.sgld`, :func:`~bayesnn.inference.psgld.psgld`,
:func:`~bayesnn.inference.sghmc.sghmc`) is a
:class:`~bayesnn.inference.driver.SamplingAlgorithm`, ``init(position) -> State`` and
``step(rng_key, state, grad, step_size, temperature=1.0) -> (State, Info)``, where
``grad`` is an unbiased estimate of ∇ log p(θ | D) at ``state.position``: the gradient of
:meth:`~bayesnn.BNN.logdensity_fn` on a minibatch, whose likelihood term is scaled by
N / b. ``temperature`` T scales the variance of the injected noise, so the chain targets
p(θ | D)^(1/T) (T < 1: a cold posterior, Wenzel et al. 2020). The step takes the gradient
rather than a minibatch, so that the chain step here, which forms it, can add hierarchical
precisions, augmentation or rows split over devices without the kernel knowing; its
``Info`` is empty, as nothing is accepted or rejected.

:class:`SGMCMC` holds the configuration fields the methods share and runs a kernel with
:func:`~bayesnn.inference.driver.sample_chains`: ``num_chains`` chains under ``vmap``, a
fresh shuffle of the data for each chain and epoch drawn inside the jitted scan,
``num_warmup`` burn-in steps, then one draw every ``thinning`` steps (:meth:`SGMCMC.
kept_steps`). With ``hyper``, a hierarchical prior's precisions are part of each chain's
state and are redrawn by Gibbs sampling once per epoch (Neal 1996; Chen et al. 2014, §4).
"""

from __future__ import annotations

import abc
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesnn.bnn import BNN, Batch
from bayesnn.data import Augment, Dataset, augment_batch, check_batch_size, num_batches
from bayesnn.data.batching import next_batch
from bayesnn.inference.base import check_chain_args, check_positive
from bayesnn.inference.driver import SamplingAlgorithm, sample_chains, thinned_steps
from bayesnn.inference.hyper import NOISE, Hierarchical, gibbs_hyper_update
from bayesnn.inference.init import check_init, initial_positions
from bayesnn.inference.map import MAP
from bayesnn.inference.programs import program_key
from bayesnn.inference.schedules import Constant, Cyclical
from bayesnn.inference.sharding import data_mesh, num_chain_devices, shard_rows
from bayesnn.posterior import Posterior
from bayesnn.tree import flatten_paths
from bayesnn.validation import check_range, config

__all__ = ["SGMCMC"]


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


@config
@dataclass(frozen=True)
class SGMCMC(abc.ABC):
    """Fields, validation and the chain step shared by the SG-MCMC methods.

    Parameters
    ----------
    step_size : float
        The kernel's step size (see each method).
    batch_size : int or None
        Minibatch size; None uses all the data at every step. Each chain draws a fresh
        shuffle of the data for every epoch; a partial last batch is masked.
    num_samples : int
        Draws kept per chain (after thinning).
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
    init : {"random", "network", "prior", "map"} or MAP
        Where chains start (:func:`~bayesnn.inference.init.initial_positions`): a fresh
        :meth:`~bayesnn.BNN.init_params` per chain, the network's own weights (every
        chain), a prior draw per chain, or the weights of one MAP fit (``"map"``:
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
    """

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
        check_range("temperature", self.temperature, 0, closed="left")
        check_init(self.init)
        if isinstance(self.schedule, Cyclical):
            sampling = self.schedule.cycle_length - self.schedule.exploration_steps
            if sampling < self.thinning:
                raise ValueError(
                    f"thinning ({self.thinning}) exceeds the {sampling} sampling steps per "
                    "cycle of the cyclical schedule: no cycle would yield a draw"
                )

    @abc.abstractmethod
    def kernel(self, data_size: int) -> SamplingAlgorithm:
        """The method's kernel for a data set of ``data_size`` examples."""

    def kept_steps(self) -> np.ndarray:
        """Boolean mask over the steps of a run: True where the new position is a draw.

        After ``num_warmup`` steps, every ``thinning``-th step; with a :class:`Cyclical`
        schedule, every ``thinning``-th step of each cycle's sampling phase. The mask
        ends at the last kept step, so its length is the number of steps of the run.
        """
        if not isinstance(self.schedule, Cyclical):
            return thinned_steps(self.num_warmup, self.num_samples, self.thinning)
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
            state, info = kernel.step(k_step, chain.kernel, grad, step_size, temperature)
            precisions = chain.precisions
            if hier is not None:
                state, precisions = _hyper_step(k_hyper, hier, model, chain.kernel, state,
                                                precisions, (t + 1) % epoch_len == 0, (x, y))
            return _Chain(state, epoch, precisions), info

        def step(key, chains_, t, x, y):
            keys = jax.random.split(key, (chains, 2))
            return jax.vmap(chain_step, (0, 0, None, None, None))(keys, chains_, t, x, y)

        k_init, k_run = jax.random.split(key)
        positions, map_info = initial_positions(
            k_init, model, data, self.init, chains, progress=progress
        )
        epoch = () if b == n else jnp.zeros((chains, epoch_len, b), jnp.int32)
        positions, precisions = self._init_precisions(model, positions)
        res = sample_chains(
            step, _Chain(jax.vmap(kernel.init)(positions), epoch, precisions), k_run,
            self.kept_steps(), x, y, store=lambda c: (c.kernel.position, c.precisions),
            desc=name, progress=progress, checkpoint=checkpoint, hint="try a smaller step_size",
            cache_key=program_key(self, model, rows),
            metrics=lambda t, _: {"step_size": self.step_size * float(schedule(t))},
        )
        draws, precisions = res.draws
        step_sizes = self.step_size * np.asarray(schedule(res.kept_steps), np.float64)
        info = {
            "seconds": res.seconds,
            "interrupted": res.interrupted,
            "num_steps": res.num_steps,
            "steps_per_chunk": res.steps_per_chunk,
            "num_devices": rows.size if rows is not None else num_chain_devices(res.state),
            "sample_stats": {"step_size": np.broadcast_to(step_sizes,
                                                          (chains, len(res.kept_steps)))},
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

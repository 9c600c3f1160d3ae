"""Microcanonical Langevin ensembles: MCLMC chains started from the members of a deep
ensemble (MILE, Sommer et al. 2025).

Three stages, each chain independent of the others: a deep ensemble of ``num_chains`` MAP
networks trained in parallel (:class:`~bayesnn.Ensemble`); per member, BlackJAX's tuning
of MCLMC's momentum decoherence length ``L`` and step size
(``blackjax.mclmc_find_L_and_step_size``, all chains under one ``vmap``); then per member
an MCLMC chain (``blackjax.mcmc.mclmc``) with full-batch gradients, all chains advanced by
one vmapped step through :func:`~bayesnn.inference.driver.sample_chains`.

MCLMC is unadjusted (there is no Metropolis test): the step size is chosen so that the
energy error per step, ``Var[ΔE] / d``, is ``desired_energy_var``, which bounds the bias of
the draws (Robnik et al. 2023, section III.C).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.mclmc_adaptation import MCLMCAdaptationState
from blackjax.mcmc.integrators import IntegratorState

from bayesnn.bnn import BNN, Batch
from bayesnn.data import Dataset
from bayesnn.inference.base import check_chain_args, check_positive
from bayesnn.inference.driver import sample_chains, thinned_steps
from bayesnn.inference.init import check_init, ensemble_starts, initial_positions
from bayesnn.inference.map import MAP
from bayesnn.inference.programs import program_key, run_program
from bayesnn.inference.progress import Progress
from bayesnn.inference.sharding import num_chain_devices, to_host
from bayesnn.posterior import Posterior
from bayesnn.tree import flatten_paths, tree_size
from bayesnn.validation import config

__all__ = ["MCLMC", "Chains", "tune", "ensemble_step"]

_TUNING_PHASES = (0.8, 0.1, 0.1)  # MILE's split of the tuning steps (Sommer et al. 2025)
_NUM_EFFECTIVE_SAMPLES = 100  # window of the step-size average during tuning (MILE's)

_kernel = blackjax.mcmc.mclmc.build_kernel()  # isokinetic McLachlan integrator, no cutoff


class Chains(NamedTuple):
    """The state of every chain (leading chain axis): BlackJAX's integrator state and its
    tuned parameters, which stay fixed while sampling."""

    state: IntegratorState
    params: MCLMCAdaptationState


class _Run(NamedTuple):
    """What the driver carries: the chains and each chain's count of undone steps."""

    chains: Chains
    reverted: jax.Array


def tune(key, position, logdensity_fn, num_steps: int, step_size: float,
         desired_energy_var: float) -> Chains:
    """One chain's MCLMC state and tuned ``L`` and step size, after ``num_steps`` steps.

    BlackJAX's three-phase tuning (Robnik et al. 2023, Algorithm 1 and section III.C):
    the step size by the energy error (80% of the steps), then ``L`` from the chain's
    variance (10%) and from its autocorrelation (10%), the split MILE uses; no diagonal
    preconditioning (MILE's choice for networks). ``L`` starts at ``sqrt(d)`` and the step
    size at ``step_size``.
    """
    k_init, k_tune = jax.random.split(key)
    state = blackjax.mcmc.mclmc.init(position, logdensity_fn, k_init)
    dim = tree_size(position)
    start = MCLMCAdaptationState(jnp.sqrt(dim), jnp.asarray(step_size, jnp.result_type(float)),
                                 jnp.ones(dim))
    frac1, frac2, frac3 = _TUNING_PHASES
    state, params, _ = blackjax.mclmc_find_L_and_step_size(
        _kernel, num_steps, state, k_tune, logdensity_fn, frac_tune1=frac1, frac_tune2=frac2,
        frac_tune3=frac3, desired_energy_var=desired_energy_var,
        num_effective_samples=_NUM_EFFECTIVE_SAMPLES, diagonal_preconditioning=False,
        params=start,
    )
    return Chains(state, params)


def ensemble_step(logdensity_fn):
    """``step(key, chains) -> (chains, info)``: one MCLMC step of every chain (``vmap``),
    each with its own key and tuned parameters; ``info`` is BlackJAX's ``MCLMCInfo``."""

    def one(key, state, params):
        return _kernel(key, state, logdensity_fn, params.inverse_mass_matrix, params.L,
                       params.step_size)

    def step(key, chains: Chains):
        keys = jax.random.split(key, jax.tree.leaves(chains.state)[0].shape[0])
        state, info = jax.vmap(one)(keys, chains.state, chains.params)
        return chains._replace(state=state), info

    return step


@config
@dataclass(frozen=True)
class MCLMC:
    """Microcanonical Langevin ensemble (MILE): MCLMC chains from deep-ensemble members.

    Each of the ``num_chains`` chains starts at its own MAP network (an
    :class:`~bayesnn.Ensemble` trained in parallel), tunes MCLMC's ``L`` and step size on
    its own for ``num_warmup`` steps, then keeps one draw every ``thinning`` steps. Every
    step uses the gradient on all the data. The recipe is the paper's: an optimised
    ensemble as starting points (the chains then sample around distinct modes rather than
    searching for them), BlackJAX's tuning split 80/10/10 over its three phases from a
    small initial step size (0.005), no diagonal preconditioning, and the energy-error
    target of BlackJAX and of the start of MILE's schedule (``5e-4`` per dimension, held
    fixed: BlackJAX's tuning has no schedule). The ensemble and the chains are smaller
    than the paper's, to keep the default's cost near that of :class:`~bayesnn.NUTS` on
    a small network.

    Parameters
    ----------
    num_samples : int
        Draws kept per chain.
    num_warmup : int
        Tuning steps per chain (discarded); by default as many as the sampling phase runs
        (``num_samples × thinning``). With 0, the chains sample with ``L = sqrt(d)``
        (``d`` sampled values) and ``step_size``.
    thinning : int
        Keep one draw every ``thinning`` steps.
    num_chains : int
        Chains, one per ensemble member.
    init : {"map", "network", "random", "prior"} or MAP
        Where chains start: ``"map"``, an :class:`~bayesnn.Ensemble` of ``num_chains``
        ``MAP()`` fits from fresh initialisations (a :class:`MAP` config: that training);
        otherwise as for :func:`~bayesnn.inference.init.initial_positions`.
    step_size : float
        The step size tuning starts from (the step size itself with ``num_warmup=0``).
    desired_energy_var : float
        Target energy error per dimension and step, ``Var[ΔE] / d``; smaller is less
        biased and slower.

    Notes
    -----
    Draws have shape ``(num_chains, num_samples, ...)``. ``info`` holds ``L`` and
    ``step_size`` (tuned, per chain), ``energy_variance`` (per chain: mean ``ΔE² / d`` of
    the kept steps, to compare with ``desired_energy_var``), ``sample_stats``
    (``energy_change`` and ``lp``, the log density, per draw), ``num_reverted`` (per
    chain: steps that gave a non-finite state and were undone by BlackJAX, with a
    warning), ``seconds`` (ensemble, tuning and sampling), ``tuning_seconds``,
    ``interrupted``, ``num_steps``, ``steps_per_chunk``, ``num_devices`` and, with a MAP
    start, ``map_info`` (the ensemble's info). Checkpoints and Ctrl-C cover the sampling
    stage: a resumed run retrains the ensemble and retunes (same key, same result), then
    continues the saved chains.

    References
    ----------
    Sommer, E., Robnik, J., Nozadze, G., Seljak, U. & Rügamer, D. (2025). Microcanonical
    Langevin ensembles: advancing the sampling of Bayesian neural networks. *ICLR*
    (section 3 and Figure 1: optimisation, tuning, sampling).
    Robnik, J., De Luca, G. B., Silverstein, E. & Seljak, U. (2023). Microcanonical
    Hamiltonian Monte Carlo. *JMLR* 24 (the tuning); Robnik, J. & Seljak, U. (2024).
    Fluctuation without dissipation: microcanonical Langevin Monte Carlo. *AABI* (the
    kernel).
    """

    num_samples: int = 100
    num_warmup: int = 1000
    thinning: int = 10
    num_chains: int = 5
    init: str | MAP = "map"
    step_size: float = 0.005
    desired_energy_var: float = 5e-4

    def __post_init__(self):
        check_chain_args(num_samples=self.num_samples, num_warmup=self.num_warmup,
                         num_chains=self.num_chains, thinning=self.thinning)
        check_init(self.init)
        check_positive(step_size=self.step_size, desired_energy_var=self.desired_energy_var)

    def run(self, model: BNN, data: Dataset, key, *, progress=None, checkpoint=None) -> Posterior:
        point = [p for p, bayes in flatten_paths(model.bayesian_mask).items() if not bayes]
        if point:
            raise ValueError(
                f"MCLMC samples every weight, but the prior leaves {point} as point "
                "estimates; give the PerParameter prior a default"
            )
        t0 = time.perf_counter()
        x, y = jnp.asarray(data.x), jnp.asarray(data.y)
        n, chains = x.shape[0], self.num_chains
        k_init, k_tune, k_run = jax.random.split(key, 3)
        positions, map_info = self._starts(k_init, model, data, progress)

        cache_key = program_key(self, model)

        def logdensity(x, y):
            return lambda position: model.logdensity_fn(position, Batch(x, y), n)

        def tune_all(keys, positions, x, y):
            return jax.vmap(lambda k, p: tune(k, p, logdensity(x, y), self.num_warmup,
                                              self.step_size, self.desired_energy_var))(
                keys, positions)

        with Progress("MCLMC tuning", self.num_warmup, enabled=progress) as report:
            start = run_program(tune_all, cache_key, jax.random.split(k_tune, chains),
                                positions, x, y)
            tuned = to_host(start.params)  # from the devices of every process; fixed hereafter
            report.update(self.num_warmup, {"L": float(np.mean(tuned.L)),
                                            "step_size": float(np.mean(tuned.step_size))})
            report.finish()
        tuning_seconds = report.seconds

        def step_fn(key, run: _Run, t, x, y):
            chains, info = ensemble_step(logdensity(x, y))(key, run.chains)
            return _Run(chains, run.reverted + ~info.nonans), info

        result = sample_chains(
            step_fn, _Run(start, jnp.zeros(chains, jnp.int32)), k_run,
            thinned_steps(0, self.num_samples, self.thinning), x, y,
            store=lambda run: run.chains.state.position, desc="MCLMC", progress=progress,
            checkpoint=checkpoint, hint="try a smaller desired_energy_var or step_size",
            cache_key=cache_key,
        )
        energy_change, lp = result.infos.energy_change, result.infos.logdensity
        reverted = to_host(result.state.reverted)  # from every process (across hosts)
        if reverted.any():
            warnings.warn(
                f"MCLMC: {int(reverted.sum())} steps gave a non-finite state and were undone; "
                "the draws may be biased (try a smaller desired_energy_var)", stacklevel=3)
        info = {
            "L": tuned.L, "step_size": tuned.step_size,
            "energy_variance": np.mean(energy_change**2, axis=1) / tree_size(model.init_position),
            "sample_stats": {"energy_change": energy_change, "lp": lp},
            "num_reverted": reverted,
            "seconds": time.perf_counter() - t0, "tuning_seconds": tuning_seconds,
            "interrupted": result.interrupted, "num_steps": result.num_steps,
            "steps_per_chunk": result.steps_per_chunk,
            "num_devices": num_chain_devices(result.state),
        }
        if map_info is not None:
            info["map_info"] = map_info
        return Posterior(model, jax.tree.map(jnp.asarray, result.draws), self, info)

    def _starts(self, key, model: BNN, data: Dataset, progress):
        """Each chain's starting position (leading chain axis) and the MAP fits' info."""
        if self.init != "map" and not isinstance(self.init, MAP):
            return initial_positions(key, model, data, self.init, self.num_chains,
                                     progress=progress)
        return ensemble_starts(key, model, data, MAP() if self.init == "map" else self.init,
                               self.num_chains, progress=progress, name="MCLMC")

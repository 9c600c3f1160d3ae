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
``Info`` is empty, as nothing is accepted or rejected; the chain step records a
:class:`StepInfo` (the minibatch's log-likelihood and the step size) for the progress line
and ``sample_stats``.

:class:`SGMCMC` holds the configuration fields the methods share and runs a kernel with
:func:`~bayesnn.inference.driver.sample_chains`: ``num_chains`` chains under ``vmap``, a
fresh shuffle of the data for each chain and epoch drawn inside the jitted scan,
``num_warmup`` burn-in steps, then one draw every ``thinning`` steps (:meth:`SGMCMC.
kept_steps`). With ``hyper``, a hierarchical prior's precisions are part of each chain's
state and are redrawn by Gibbs sampling once per epoch (Neal 1996; Chen et al. 2014, §4).
Each chain carries its own step size in its state. Left at None, it is chosen from the
curvature (:mod:`~bayesnn.inference.step_size`; each method's :meth:`SGMCMC.
stable_step_size`), and warm-up and sampling are two driver runs, so that the curvature
can be measured again between them (for SGLD and SGHMC, with a diagonal preconditioner
adapted in warm-up windows, as NUTS adapts its mass matrix); a run fails over to half the
step size while it is warming up, and the draws are checked afterwards
(:mod:`~bayesnn.inference.diagnostics`).
"""

from __future__ import annotations

import abc
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesnn.bnn import BNN, Batch
from bayesnn.data import Augment, Dataset, augment_batch, check_batch_size, num_batches
from bayesnn.data.batching import next_batch
from bayesnn.inference.base import check_chain_args, check_positive
from bayesnn.inference.diagnostics import prediction_diagnostics
from bayesnn.inference.driver import NonFiniteError, SamplingAlgorithm, sample_chains, thinned_steps
from bayesnn.inference.hyper import NOISE, Hierarchical, gibbs_hyper_update
from bayesnn.inference.init import check_init, initial_positions
from bayesnn.inference.map import MAP
from bayesnn.inference.programs import program_key, run_program
from bayesnn.inference.schedules import Constant, Cyclical
from bayesnn.inference.sharding import data_mesh, num_chain_devices, shard_rows, to_host
from bayesnn.inference.step_size import curvature_rows, preconditioned_curvature
from bayesnn.posterior import Posterior
from bayesnn.tree import flatten_paths
from bayesnn.validation import check_range, config

__all__ = [
    "MAX_BACKOFFS", "MIN_THINNING", "MIN_WARMUP", "MIN_WINDOW", "SGMCMC", "SHRINK", "StepInfo",
    "WARMUP_EPOCHS", "WARMUP_WINDOWS", "adapted_preconditioner",
]

MAX_BACKOFFS = 5  # warm-up restarts, each with half the step size, before giving up
WARMUP_EPOCHS, MIN_WARMUP = 10, 5000  # num_warmup=None: 10 epochs, at least 5000 steps
MIN_THINNING = 1000  # thinning=None: one epoch's steps, at least 1000
WARMUP_WINDOWS, MIN_WINDOW = 4, 50  # step_size=None: warm-up windows of at least 50 steps
SHRINK = 1e-3  # G = 1 / (a window's E[ĝ²] + SHRINK × its weight array's mean)


class StepInfo(NamedTuple):
    """What an SG-MCMC step records (kept at the kept steps, shown on the progress line).

    Attributes
    ----------
    log_likelihood
        The minibatch's mean log-likelihood per example (tempered by the likelihood's
        temperature) at the position the step starts from: a running estimate of how well
        the chain fits the data, at no extra cost (the gradient's forward pass).
    step_size
        The step size of this step, after the schedule's factor.
    """

    log_likelihood: jax.Array
    step_size: jax.Array


class _Chain(NamedTuple):
    kernel: Any  # the kernel's state
    epoch: Any  # this epoch's minibatch indices (num_batches, batch_size); () for full batch
    precisions: Any  # {group: τ} of a hierarchical prior; {} without one
    step_size: Any  # this chain's step size, before the schedule's factor
    preconditioner: Any = ()  # the adapted diagonal G, like the position; () for G = 1
    moments: Any = ()  # (count, Σ ĝ²) of a warm-up window's gradients; () otherwise


def _accumulate(moments, grad):
    """``moments`` (count, Σ ĝ²) with one more minibatch gradient."""
    count, total = moments
    return count + 1, jax.tree.map(lambda s, g: s + g * g, total, grad)


def _window_moments(position):
    """Empty moments for a window's gradients (one chain)."""
    return jnp.zeros((), jnp.result_type(float)), jax.tree.map(jnp.zeros_like, position)


def adapted_preconditioner(moments):
    """The diagonal preconditioner ``G`` from a window's minibatch gradients (one chain):
    ``G = 1 / (E[ĝ²] + SHRINK · level)``, ``level`` the mean of ``E[ĝ²]`` over the
    coordinate's weight array (its layer's kernel or bias), so that ``G`` of a weight whose
    gradient nearly vanished in the window (a dead ReLU unit's) stays within
    ``1 / SHRINK`` of its layer's.

    On a Gaussian posterior of precision ``H``, ``E[(∂ᵢ log p)²] = Hᵢᵢ`` under the
    posterior (the Fisher identity), and a minibatch adds noise of about ``(N/b) Hᵢᵢ``;
    ``G`` is then the inverse of ``diag H`` up to a common factor (Jacobi preconditioning,
    the diagonal of the inverse Fisher of Ahn et al. 2012): invariant to rescaling a
    coordinate, as a mass matrix should be. Unlike the variance of the positions (Stan's
    metric), which a chain underestimates along the directions it moves slowly in, so
    that a smaller ``G`` there slows it further, the gradient's second moment is
    underestimated where the chain has not yet spread, which makes ``G`` larger there:
    the adaptation corrects itself rather than collapsing."""
    count, total = moments

    def one(s):
        second = s / jnp.maximum(count, 1)
        level = jnp.mean(second)
        return 1 / (second + SHRINK * jnp.where(level > 0, level, 1.0))

    return jax.tree.map(one, total)


def _preconditioners(moments):
    """:func:`adapted_preconditioner` of every chain (leading chain axis)."""
    return jax.vmap(adapted_preconditioner)(moments)


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


def _running_metrics(t: int, infos: StepInfo) -> dict:
    """The progress line's step size and log-likelihood per example: their means over the
    chains at the steps a chunk kept (nothing when it kept none)."""
    if not len(infos.step_size):
        return {}
    return {"step_size": float(np.mean(infos.step_size[-1])),
            "log_lik": float(np.mean(infos.log_likelihood))}


def _backing_off(name: str, attempt: Callable, step_sizes, in_warmup: Callable, checkpoint,
                 where: str = "warm-up"):
    """``attempt(step_sizes)``; while it fails during warm-up (``in_warmup(error)``), warn
    and try again with half the step sizes, at most :data:`MAX_BACKOFFS` times. A
    checkpoint of the failed attempt is removed, as it holds the old step size. ``where``
    names what is restarted."""
    tries = 0
    while True:
        try:
            return attempt(step_sizes)
        except NonFiniteError as err:
            if not in_warmup(err):
                raise
            if tries == MAX_BACKOFFS:
                raise NonFiniteError(f"{err} (warm-up was restarted {MAX_BACKOFFS} times, "
                                     "the step size halved each time)", err.step) from err
        if checkpoint is not None:
            Path(checkpoint.path).unlink(missing_ok=True)
        old = float(jnp.max(step_sizes))
        warnings.warn(
            f"{name}: the state became NaN or infinite during warm-up; restarting {where} "
            f"from its start with half the step size ({old:.3g} -> {old / 2:.3g})",
            UserWarning, stacklevel=4,
        )
        step_sizes, tries = step_sizes / 2, tries + 1


def _drift_warnings(name: str, model: BNN, start, end, probe: Batch, y, data_size: int) -> None:
    """Warn, naming the chains, where the mean log-likelihood per example on ``probe`` fell
    by more than ``2 + p / (2N)`` nats from ``start`` to ``end`` (the positions of every
    chain; a Gaussian posterior's typical set lies ``p / 2`` nats in all below its mode, for
    ``p`` parameters), or where a learned Gaussian noise std ``lik/log_scale`` exceeds the
    standard deviation of the training targets (the network then explains nothing)."""
    def mean_logliks(positions, x, y):
        return jax.vmap(lambda p: jnp.mean(model.log_prob_per_example(p, x, y)))(positions)

    key = program_key(model)  # kept for later fits of an equal model
    before, after = (np.asarray(run_program(mean_logliks, key, p, probe.x, probe.y))
                     for p in (start, end))
    num_params = sum(np.size(a) for a in jax.tree.leaves(start)) // len(before)
    limit = 2 + num_params / (2 * data_size)
    fell = np.flatnonzero(~(before - after <= limit))
    if fell.size:
        warnings.warn(
            f"{name}: chain(s) {fell.tolist()}: the mean log-likelihood per training example "
            f"fell from {before[fell].round(3).tolist()} at the start to "
            f"{after[fell].round(3).tolist()}, by more than {limit:.3g} nats; the sampler may "
            "be unstable at this step size", UserWarning, stacklevel=4,
        )
    if "log_scale" in end["lik"]:
        scale = np.exp(np.asarray(end["lik"]["log_scale"], np.float64))
        scale = scale.reshape(len(before), -1).max(axis=1)
        target = float(np.max(np.std(np.asarray(y, np.float64), axis=0)))
        away = np.flatnonzero(~(scale <= target))
        if away.size:
            warnings.warn(
                f"{name}: chain(s) {away.tolist()}: the noise scale lik/log_scale ran away to "
                f"{scale[away].round(4).tolist()}, above the standard deviation of the training "
                f"targets ({target:.4g})", UserWarning, stacklevel=4,
            )


@config
@dataclass(frozen=True)
class SGMCMC(abc.ABC):
    """Fields, validation and the chain step shared by the SG-MCMC methods.

    Parameters
    ----------
    step_size : float or None
        The kernel's step size (see each method). None (the default) chooses it per chain
        from the problem: from the largest curvature ``λ_max`` of the minibatch-scaled
        ``−log p(θ | D)`` (:func:`~bayesnn.inference.step_size.preconditioned_curvature`,
        power iteration on Hessian-vector products) on the first
        :func:`~bayesnn.inference.step_size.curvature_rows` rows of the data, at the
        chains' starting points, by each method's stability rule (its
        :meth:`stable_step_size`). SGLD and SGHMC also adapt a diagonal preconditioner
        ``G`` (an inverse mass matrix) during warm-up, as NUTS adapts its mass matrix:
        warm-up runs in :data:`WARMUP_WINDOWS` (4) equal windows, and at the end of each
        ``G`` becomes the inverse of the window's mean squared minibatch gradient
        (:func:`adapted_preconditioner`: the inverse diagonal curvature, up to a common
        factor) and the step size that of ``G``'s curvature ``λ_max(G^½ H G^½)``, measured
        at the chain's position. A network's posterior is ill-conditioned, and with
        ``G = 1`` the step that the stiffest weight allows leaves the others nearly
        still; with ``G`` every weight moves on the scale of its own curvature, and the
        step no longer depends on how the inputs or the weights are scaled. ``G`` is then
        fixed while sampling, so the chain samples the posterior exactly as the
        unpreconditioned one does (a constant preconditioner needs no correction term).
        Without an adapted ``G`` (pSGLD, which has its own) warm-up is one window and the
        sampling phase runs with the smaller of the step sizes at its start and end.
    batch_size : int or None
        Minibatch size; None uses all the data at every step. Each chain draws a fresh
        shuffle of the data for every epoch; a partial last batch is masked.
    num_samples : int
        Draws kept per chain (after thinning).
    num_warmup : int or None
        Burn-in steps, discarded. None: :data:`WARMUP_EPOCHS` (10) epochs of the data, at
        least :data:`MIN_WARMUP` (5000) steps.
    thinning : int or None
        Keep one draw every ``thinning`` steps (steps, not epochs). None: one draw per
        epoch, at least every :data:`MIN_THINNING` (1000) steps. How fast a chain mixes
        is counted in steps, not epochs: at the step-size rule, a direction of the
        preconditioned posterior with curvature λ relaxes in about ``10 λ_max / λ``
        steps whatever ``N`` is, and a network's posterior is ill-conditioned. On a set
        of a few hundred rows an epoch is 10–20 steps, and 200 draws an epoch apart stayed
        near their starts (on five UCI sets, 3 splits, ``SGHMC()``'s test LL rose with
        the floor: 10 → 100 → 1000 steps gave boston −2.41 → −2.38 → −2.33, energy −0.76
        → −0.74 → −0.57, yacht −1.16 → −0.99 → −0.43). With 200 draws the floor makes a
        run at least 200,000 steps; from ``N = 1000 b`` rows on it is one epoch.
    num_chains : int
        Independent chains (vectorised with ``vmap``), each with its own noise and
        minibatch order. With 2 or more, R̂ and ESS of the predictions are checked after
        the run (:func:`~bayesnn.inference.diagnostics.prediction_diagnostics`).
    temperature : float
        T, scales the injected noise variance: the chain targets ``p(θ | D)^(1/T)``
        (T < 1: a cold posterior, Wenzel et al. 2020; T = 0: stochastic optimisation).
    schedule : callable, optional
        Step-size factor as a function of the step (:mod:`bayesnn.inference.schedules`);
        default constant. With :class:`~bayesnn.inference.schedules.Cyclical`, the
        exploration phase of each cycle injects no noise and draws are kept only in the
        sampling phase (Zhang et al. 2020).
    init : {"ensemble", "random", "network", "prior", "map"} or MAP
        Where chains start (:func:`~bayesnn.inference.init.initial_positions`); default
        ``"ensemble"``: each chain at its own MAP fit from its own random initialisation
        (deep-ensemble initialisation, Sommer et al. 2024). ``"random"``: a fresh
        :meth:`~bayesnn.BNN.init_params` per chain; ``"network"``: the network's own
        weights (every chain); ``"prior"``: a prior draw per chain; ``"map"`` (``MAP()``)
        or a MAP config: every chain at the weights of one MAP fit.
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
    **No silent failure.** When a state turns NaN or infinite during warm-up, warm-up (or
    its window) restarts from its start with half the step size, with a warning, at most
    :data:`MAX_BACKOFFS` (5) times, and later windows keep the halving; after warm-up it is a
    :class:`~bayesnn.NonFiniteError` naming the step. After the run a warning names any
    chain whose mean log-likelihood per example (on the curvature rows) fell far below its
    start, or whose learned noise std ``lik/log_scale`` exceeds the targets' standard
    deviation, and, with several chains, a warning reports R̂ > 1.05 or ESS < 100 of the
    predictions at 64 training inputs.

    **Checkpoints.** With a chosen step size (``step_size=None``) warm-up and sampling are
    two runs; the checkpoint is that of the sampling run, and resuming re-runs warm-up (the
    same key gives the same warm-up, so the resumed draws are those of an uninterrupted
    run). A given step size runs warm-up and sampling as one checkpointed run.

    :func:`~bayesnn.fit` returns a :class:`~bayesnn.Posterior` with draws of shape
    ``(num_chains, num_samples, ...)``; its ``info`` holds ``seconds``, ``interrupted``,
    ``num_steps``, ``steps_per_chunk``, ``step_size`` (each chain's sampling step size,
    before the schedule), ``sample_stats`` (``step_size`` of each draw and
    ``minibatch_log_lik``, the mean log-likelihood per example of the minibatch of the
    step that made it; the progress line shows its running mean and the step size, in
    warm-up too), with a chosen step size ``warmup_step_size`` and ``curvature``
    (``start`` and ``warmup_end``, per chain) and, with an adapted preconditioner,
    ``preconditioner`` (each chain's ``G``, shaped like the draws without their draw axis),
    with several chains ``diagnostics`` (``rhat``, ``ess``, ``num_rows``), with ``hyper``
    the precisions of each draw in ``hyperparameters`` (``{group: (chain, draw)}``, as for
    :class:`~bayesnn.HierarchicalNUTS`) and, with a MAP or ensemble start, ``map_info``.

    References
    ----------
    Sommer, E., Wimmer, L., Papamarkou, T., Bothmann, L., Bischl, B. & Rügamer, D. (2024).
    Connecting the dots: is mode-connectedness the key to feasible sample-based inference
    in Bayesian neural networks? *ICML*.
    Vehtari, A., Gelman, A., Simpson, D., Carpenter, B. & Bürkner, P.-C. (2021).
    Rank-normalization, folding, and localization: an improved R̂. *Bayesian Analysis*.
    Ahn, S., Korattikara, A. & Welling, M. (2012). Bayesian posterior sampling via
    stochastic gradient Fisher scoring. *ICML* (the inverse Fisher as preconditioner).
    Stan Development Team. *Stan Reference Manual*, "HMC algorithm parameters" (windowed
    adaptation of a diagonal metric during warm-up).
    Ma, Y.-A., Chen, T. & Fox, E. B. (2015). A complete recipe for stochastic gradient
    MCMC. *NeurIPS* (a constant preconditioner needs no correction term).
    """

    step_size: float | None = None
    batch_size: int | None = 32
    num_samples: int = 200
    num_warmup: int | None = None
    thinning: int | None = None
    num_chains: int = 4
    temperature: float = 1.0
    schedule: Callable | None = None
    init: str | MAP = "ensemble"
    augment: Augment | None = None
    hyper: Hierarchical | None = None
    adapts_preconditioner: ClassVar[bool] = True  # step_size=None: a diagonal G from warm-up

    def __post_init__(self):
        if self.step_size is not None:
            check_positive(step_size=self.step_size)
        check_chain_args(num_samples=self.num_samples, num_chains=self.num_chains,
                         num_warmup=0 if self.num_warmup is None else self.num_warmup,
                         thinning=1 if self.thinning is None else self.thinning)
        check_batch_size(self.batch_size, sys.maxsize)
        check_range("temperature", self.temperature, 0, closed="left")
        check_init(self.init)
        if self.thinning is not None:
            self._check_cycle(self.thinning)

    def _check_cycle(self, thinning: int) -> None:
        if isinstance(self.schedule, Cyclical):
            sampling = self.schedule.cycle_length - self.schedule.exploration_steps
            if sampling < thinning:
                raise ValueError(
                    f"thinning ({thinning}) exceeds the {sampling} sampling steps per "
                    "cycle of the cyclical schedule: no cycle would yield a draw"
                )

    @abc.abstractmethod
    def kernel(self, data_size: int) -> SamplingAlgorithm:
        """The method's kernel for a data set of ``data_size`` examples."""

    @abc.abstractmethod
    def stable_step_size(self, curvature):
        """The step size chosen for a largest curvature ``curvature`` (of the
        preconditioned target, see :meth:`preconditioner`)."""

    def preconditioner(self, state):
        """The diagonal preconditioner ``G`` of a kernel state (a pytree like its
        position), or None for ``G = 1``."""
        return None

    def start_state(self, kernel: SamplingAlgorithm, position, minibatch_grads: Callable,
                    data_size: int):
        """The kernel's state at ``position``; ``minibatch_grads()`` gives the gradients of
        the minibatch-scaled log posterior on the whole minibatches of the curvature rows,
        stacked (for kernels whose state estimates gradient moments)."""
        return kernel.init(position)

    def budget(self, data_size: int | None = None) -> tuple[int, int]:
        """``(num_warmup, thinning)``, those left at None derived from ``data_size``:
        warm-up :data:`WARMUP_EPOCHS` epochs but at least :data:`MIN_WARMUP` steps,
        thinning one epoch's steps but at least :data:`MIN_THINNING`."""
        if self.num_warmup is not None and self.thinning is not None:
            return self.num_warmup, self.thinning
        if data_size is None:
            raise ValueError("num_warmup or thinning is None, so the run's length depends on "
                             "the data: pass data_size")
        epoch = num_batches(data_size, check_batch_size(self.batch_size, data_size))
        warmup = self.num_warmup
        warmup = max(WARMUP_EPOCHS * epoch, MIN_WARMUP) if warmup is None else warmup
        thinning = max(epoch, MIN_THINNING) if self.thinning is None else self.thinning
        return warmup, thinning

    def kept_steps(self, data_size: int | None = None) -> np.ndarray:
        """Boolean mask over the steps of a run: True where the new position is a draw.

        After ``num_warmup`` steps, every ``thinning``-th step; with a :class:`Cyclical`
        schedule, every ``thinning``-th step of each cycle's sampling phase. The mask
        ends at the last kept step, so its length is the number of steps of the run.
        ``data_size`` is needed when ``num_warmup`` or ``thinning`` is None
        (:meth:`budget`).
        """
        num_warmup, thinning = self.budget(data_size)
        self._check_cycle(thinning)
        if not isinstance(self.schedule, Cyclical):
            return thinned_steps(num_warmup, self.num_samples, thinning)
        per_cycle = (self.schedule.cycle_length - self.schedule.exploration_steps) // thinning
        cycles = -(-self.num_samples // per_cycle) + 1  # + 1: warm-up may end mid-cycle
        t = np.arange(num_warmup + cycles * self.schedule.cycle_length)
        phase = np.where(t >= num_warmup, self.schedule.sampling_step(t), -1)
        keep = (phase >= 0) & ((phase + 1) % thinning == 0)
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
        keep = self.kept_steps(n)
        num_warmup, thinning = self.budget(n)
        rows = data_mesh(b, self.num_chains)
        epoch_len = num_batches(n, b)
        chains, kernel = self.num_chains, self.kernel(n)
        schedule = self.schedule or Constant()
        sampling = getattr(schedule, "sampling", lambda t: True)
        cache_key = program_key(self, model, rows)

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
            # the gradient's forward pass again: XLA computes it once (common subexpressions)
            real = batch.x.shape[0] if batch.mask is None else jnp.maximum(batch.mask.sum(), 1)
            log_lik = model.loglikelihood_fn(chain.kernel.position, batch) / real
            step_size = chain.step_size * schedule(t)
            temperature = self.temperature * sampling(t)  # no noise while exploring
            adapted = {} if chain.preconditioner == () else {
                "preconditioner": chain.preconditioner}
            state, _ = kernel.step(k_step, chain.kernel, grad, step_size, temperature, **adapted)
            precisions = chain.precisions
            if hier is not None:
                state, precisions = _hyper_step(k_hyper, hier, model, chain.kernel, state,
                                                precisions, (t + 1) % epoch_len == 0, (x, y))
            moments = chain.moments if chain.moments == () else _accumulate(chain.moments, grad)
            return chain._replace(kernel=state, epoch=epoch, precisions=precisions,
                                  moments=moments), StepInfo(log_lik, step_size)

        def step(key, chains_, t, x, y, t0):
            keys = jax.random.split(key, (chains, 2))
            return jax.vmap(chain_step, (0, 0, None, None, None))(keys, chains_, t + t0, x, y)

        def sample(start: _Chain, keep, t0: int, key, checkpoint, warmup=False):
            # warm-up keeps the infos of every thinning-th step (for the progress line), no draws
            return sample_chains(
                step, start, key, keep, x, y, jnp.int32(t0),
                store=(lambda c: ()) if warmup else lambda c: (c.kernel.position, c.precisions),
                desc=f"{name} warm-up" if warmup else name, kept_label=None if warmup else "draws",
                progress=progress, checkpoint=checkpoint, hint="try a smaller step_size",
                cache_key=cache_key, metrics=_running_metrics,
            )

        m = curvature_rows(n, b)
        whole = m // b  # whole minibatches among the curvature rows

        # Programs of the data as arguments (the curvature rows are its first m), kept for
        # later fits: a refit with the same shapes compiles nothing.
        def start_states(positions, precisions, x, y):
            bx = x[: whole * b].reshape(whole, b, *x.shape[1:])
            by = y[: whole * b].reshape(whole, b, *y.shape[1:])

            def one(position, tau):
                grads = lambda: jax.vmap(  # noqa: E731
                    lambda bx, by: jax.grad(logdensity)(position, Batch(bx, by), tau))(bx, by)
                return self.start_state(kernel, position, grads, n)

            return jax.vmap(one)(positions, precisions)

        def choose(key, states, precisions, preconditioners, x, y):
            """Each chain's step size and curvature, with an adapted ``G`` where given
            (else the kernel's own, :meth:`preconditioner`)."""
            probe = Batch(x[:m], y[:m])

            def one(k, state, tau, g):
                g = self.preconditioner(state) if g == () else g
                lam = preconditioned_curvature(k, lambda p: logdensity(p, probe, tau),
                                               state.position, g)
                return self.stable_step_size(lam), lam

            return jax.vmap(one)(jax.random.split(key, chains), states, precisions,
                                 preconditioners)

        k_init, k_curve, k_warm, k_run = jax.random.split(key, 4)
        positions, map_info = initial_positions(
            k_init, model, data, self.init, chains, progress=progress
        )
        positions, precisions = self._init_precisions(model, positions)
        states = run_program(start_states, cache_key, positions, precisions, x, y)
        epoch = () if b == n else jnp.zeros((chains, epoch_len, b), jnp.int32)
        info = {}
        adapting = self.step_size is None and self.adapts_preconditioner and (
            num_warmup >= MIN_WINDOW)
        # G = 1 to start with, as an array: every window then runs the same program
        g = jax.tree.map(jnp.ones_like, states.position) if adapting else ()
        if self.step_size is None:
            eps, lam = run_program(choose, cache_key, jax.random.fold_in(k_curve, 0), states,
                                   precisions, g, x, y)
            info["curvature"] = {"start": np.asarray(lam)}
        else:
            eps = jnp.full((chains,), self.step_size, jnp.result_type(float))
        start = _Chain(states, epoch, precisions, eps, g)
        if self.step_size is None and num_warmup > 0:
            chain, seconds = self._warm_up(name, start, num_warmup, thinning, k_warm, k_curve,
                                           sample, cache_key, choose, x, y, info)
            res = sample(chain, keep[num_warmup:], num_warmup, k_run, checkpoint)
            offset = num_warmup
        else:
            res = _backing_off(
                name, lambda e: sample(start._replace(step_size=e), keep, 0, k_run, checkpoint),
                eps, lambda err: (err.step or 0) < num_warmup, checkpoint,
            )
            offset, seconds = 0, 0.0
        draws, precisions = res.draws
        eps = np.asarray(to_host(res.state.step_size), np.float64)
        info.update({
            "seconds": seconds + res.seconds,
            "interrupted": res.interrupted,
            "num_steps": offset + res.num_steps,
            "steps_per_chunk": res.steps_per_chunk,
            "num_devices": rows.size if rows is not None else num_chain_devices(res.state),
            "step_size": eps,
            "sample_stats": {"step_size": np.asarray(res.infos.step_size, np.float64),
                             "minibatch_log_lik": np.asarray(res.infos.log_likelihood)},
        })
        if hier is not None:
            info["hyperparameters"] = precisions
        if res.state.preconditioner != ():
            info["preconditioner"] = to_host(res.state.preconditioner)
        if map_info is not None:
            info["map_info"] = map_info
        _drift_warnings(name, model, positions, to_host(res.state.kernel.position),
                        Batch(x[:m], y[:m]), y, n)
        if chains >= 2 and len(res.kept_steps) >= 4:
            info["diagnostics"] = prediction_diagnostics(model, draws, x, name)
        return Posterior(model, jax.tree.map(jnp.asarray, draws), self, info)

    def _warm_up(self, name, start: _Chain, num_warmup: int, thinning: int, key, k_curve,
                 sample: Callable, cache_key, choose: Callable, x, y, info: dict):
        """Warm-up with a chosen step size: ``(chain, seconds)``, the chains ready to sample.

        Warm-up runs in windows (:meth:`warmup_windows`); each is restarted with half the
        step size while it fails (:func:`_backing_off`), and the halving carries over to
        later windows. At the end of each window the curvature is measured again at the
        chains' positions: with an adapted preconditioner (:attr:`adapts_preconditioner`),
        ``G`` comes from the window's squared gradients (:func:`adapted_preconditioner`)
        and the step size is that of ``G``; otherwise the step size becomes the smaller of
        the old and the new one."""
        chain, factor, seconds, t0 = start, 1.0, 0.0, 0
        windows = self.warmup_windows(num_warmup)
        adapting = start.preconditioner != ()
        for i, length in enumerate(windows):
            keep = (t0 + np.arange(length) + 1) % thinning == 0
            keep[-1] = True  # the run ends at the end of the window
            if adapting:
                chain = chain._replace(moments=jax.vmap(_window_moments)(chain.kernel.position))
            where = f"window {i + 1}/{len(windows)} of warm-up" if len(windows) > 1 else "warm-up"
            eps = chain.step_size
            warm = _backing_off(
                name, lambda e, c=chain, k=keep, t=t0, i=i: sample(
                    c._replace(step_size=e), k, t, jax.random.fold_in(key, i), None, warmup=True),
                eps, lambda err: True, None, where)
            factor *= float(jnp.min(warm.state.step_size / eps))  # halvings, if any
            chain = to_host(warm.state)  # gathered from every process (a run across hosts)
            used = chain.step_size
            k = jax.random.fold_in(k_curve, i + 1)
            if adapting:
                g = run_program(_preconditioners, cache_key, chain.moments)
                eps_new, lam = run_program(choose, cache_key, k, chain.kernel,
                                           chain.precisions, g, x, y)
                chain = chain._replace(step_size=eps_new * factor, preconditioner=g, moments=())
            else:
                eps_new, lam = run_program(choose, cache_key, k, chain.kernel,
                                           chain.precisions, (), x, y)
                chain = chain._replace(step_size=jnp.minimum(chain.step_size, eps_new * factor))
            seconds, t0 = seconds + warm.seconds, t0 + length
        info["curvature"]["warmup_end"] = np.asarray(lam)
        info["warmup_step_size"] = np.asarray(used)
        return chain, seconds

    def warmup_windows(self, num_warmup: int) -> list[int]:
        """Lengths of the warm-up windows of a run with a chosen step size: with an adapted
        preconditioner :data:`WARMUP_WINDOWS` (4) equal ones of at least
        :data:`MIN_WINDOW` (50) steps (fewer for a short warm-up; one, without adaptation,
        below 50 steps), otherwise one."""
        count = min(WARMUP_WINDOWS, num_warmup // MIN_WINDOW) if self.adapts_preconditioner else 1
        return np.diff(np.linspace(0, num_warmup, max(count, 1) + 1).astype(int)).tolist()

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

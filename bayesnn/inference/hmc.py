"""Full-batch Hamiltonian Monte Carlo through NumPyro: the gold standard for small models.

:class:`NUTS` and :class:`HMC` run :class:`numpyro.infer.MCMC` on
:meth:`bayesnn.BNN.numpyro_model` with all the data at every step (no minibatches), with
NumPyro's windowed step-size and mass-matrix adaptation during warmup. Chains start at the
network's weights, at fresh initialisations, at prior draws or at a MAP fit
(:mod:`bayesnn.inference.init`), passed to NumPyro as initial values.
"""

from __future__ import annotations

import abc
import sys
import time
import warnings
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.infer
from numpyro import handlers
from numpyro.infer.util import unconstrain_fn

from bayesnn.bnn import BNN
from bayesnn.data import Dataset
from bayesnn.inference.init import check_init, initial_positions
from bayesnn.inference.map import MAP
from bayesnn.inference.sharding import numpyro_chain_method
from bayesnn.posterior import Posterior
from bayesnn.validation import check_chain_args, check_positive, check_range, config

__all__ = ["NUTS", "HMC"]

CHAIN_METHODS = ("vectorized", "sequential", "parallel")

# NumPyro state fields -> ArviZ sample_stats names
_STATS = {
    "adapt_state.step_size": "step_size",
    "accept_prob": "acceptance_rate",
    "diverging": "diverging",
    "num_steps": "n_steps",
    "energy": "energy",
    "potential_energy": "lp",
}


@config
@dataclass(frozen=True, kw_only=True)
class _MCMC(abc.ABC):
    """Fields, checks and the run shared by :class:`NUTS` and :class:`HMC`."""

    num_warmup: int = 500
    num_samples: int = 500
    num_chains: int = 1
    thinning: int = 1
    target_accept_prob: float = 0.8
    dense_mass: bool = False
    init: str | MAP = "network"
    chain_method: str = "vectorized"

    _tree_depth: ClassVar[bool] = False  # report NUTS' tree depth

    def __post_init__(self):
        check_chain_args(num_samples=self.num_samples, num_warmup=self.num_warmup,
                         num_chains=self.num_chains, thinning=self.thinning)
        check_range("target_accept_prob", self.target_accept_prob, 0, 1)
        check_init(self.init)
        if self.chain_method not in CHAIN_METHODS:
            raise ValueError(
                f"chain_method must be one of {CHAIN_METHODS}, got {self.chain_method!r}"
            )

    @abc.abstractmethod
    def _kernel(self, numpyro_model, init_strategy):
        """The NumPyro MCMC kernel of the method."""

    def run(self, model: BNN, data: Dataset, key, *, progress=None, checkpoint=None) -> Posterior:
        if checkpoint is not None:
            raise ValueError(
                f"{type(self).__name__} runs in one NumPyro MCMC call and cannot checkpoint; "
                "use checkpoint=None"
            )
        x, y = jnp.asarray(data.x), jnp.asarray(data.y)
        k_init, k_run = jax.random.split(key)
        t0 = time.perf_counter()
        info, params = {}, {}
        numpyro_model = model.numpyro_model
        positions, map_info = initial_positions(
            k_init, model, data, self.init, self.num_chains, progress=progress
        )
        sites, chain_params = model.sites(positions)
        if map_info is not None:
            # Weights without a prior stay at their MAP values (they are not sampled).
            info["map_info"] = map_info
            params = {k: v[0] for k, v in chain_params.items()}
            numpyro_model = handlers.substitute(numpyro_model, data=params)
        init_strategy = numpyro.infer.init_to_value(values={k: v[0] for k, v in sites.items()})
        # MCMC.run takes unconstrained values, with a chain axis only for several chains.
        init_params = jax.vmap(lambda s: unconstrain_fn(numpyro_model, (x, y), {}, s))(sites)
        if self.num_chains == 1:
            init_params = {k: v[0] for k, v in init_params.items()}
        # NumPyro's num_samples counts steps before thinning; ours counts the draws kept.
        mcmc = numpyro.infer.MCMC(
            self._kernel(numpyro_model, init_strategy), num_warmup=int(self.num_warmup),
            num_samples=int(self.num_samples * self.thinning), num_chains=int(self.num_chains),
            thinning=int(self.thinning),
            chain_method=numpyro_chain_method(self.chain_method, self.num_chains),
            jit_model_args=True,
            progress_bar=sys.stderr.isatty() if progress is None else bool(progress),
        )
        mcmc.run(k_run, x, y, extra_fields=tuple(_STATS), init_params=init_params)
        sites = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
        stats = sample_stats(mcmc.get_extra_fields(group_by_chain=True), self._tree_depth)
        num_divergent = int(stats["diverging"].sum())
        if num_divergent:
            warnings.warn(
                f"{type(self).__name__}: {num_divergent} divergent transitions after warmup; "
                "the draws may be biased (try a higher target_accept_prob)",
                stacklevel=3,
            )
        info |= {
            "sample_stats": stats, "seconds": time.perf_counter() - t0, "interrupted": False,
            "num_divergent": num_divergent,
            "num_devices": self.num_chains if mcmc.chain_method == "parallel" else 1,
        }
        return Posterior(model, model.position_from_sites(sites, params), self, info)


def sample_stats(fields: dict, tree_depth: bool = False) -> dict[str, np.ndarray]:
    """NumPyro's per-draw ``extra_fields`` ``(chain, draw)`` under ArviZ names.

    ``lp`` is minus the potential energy. With ``tree_depth``, NUTS' tree depth is derived
    from the number of leapfrog steps, as ArviZ does: ``floor(log2(n_steps)) + 1``.
    """
    stats = {_STATS[k]: np.asarray(v) for k, v in fields.items() if k in _STATS}
    stats["lp"] = -stats["lp"]
    if tree_depth:
        stats["tree_depth"] = np.log2(stats["n_steps"]).astype(int) + 1
    return stats


@config
@dataclass(frozen=True, kw_only=True)
class NUTS(_MCMC):
    """The No-U-Turn sampler on the full data (NumPyro's iterative NUTS).

    Parameters
    ----------
    num_warmup : int
        Adaptation steps (step size by dual averaging, diagonal or dense mass matrix),
        discarded.
    num_samples : int
        Draws kept per chain, after thinning (``num_samples * thinning`` steps are run).
    num_chains : int
        Independent chains; draws have shape ``(num_chains, num_samples, ...)``.
    thinning : int
        Keep every ``thinning``-th step.
    target_accept_prob : float
        Target mean acceptance probability of step-size adaptation.
    max_tree_depth : int
        Trajectories stop after ``2**max_tree_depth - 1`` leapfrog steps.
    dense_mass : bool
        Adapt a dense (instead of diagonal) inverse mass matrix: ``O(d²)`` memory.
    init : {"network", "random", "prior", "map"} or MAP
        Where chains start: the network's own weights (every chain), a fresh network
        initialisation per chain (:meth:`~bayesnn.BNN.init_params`), a draw from the prior
        per chain, or the weights of one MAP fit (``"map"``: ``MAP()``; or the given config;
        weights without a prior then stay at their MAP values). See
        :func:`bayesnn.inference.init.initial_positions`.
    chain_method : {"vectorized", "sequential", "parallel"}
        How NumPyro runs several chains: vmapped, one after another, or one per device
        (``parallel`` falls back to ``sequential`` without enough devices). With
        ``"vectorized"`` and at least ``num_chains`` devices visible, ``parallel`` is used.

    Notes
    -----
    ``info`` holds ``sample_stats`` (``step_size``, ``acceptance_rate``, ``diverging``,
    ``n_steps``, ``tree_depth``, ``energy``, ``lp``; leading ``(chain, draw)``), ``seconds``
    (MAP fit, compilation and sampling), ``num_divergent`` and, with a MAP start, ``map_info``.
    A warning reports divergent transitions. NumPyro evaluates the model without dropout.

    References
    ----------
    Hoffman & Gelman (2014), *The No-U-Turn sampler: adaptively setting path lengths in
    Hamiltonian Monte Carlo*, JMLR 15 (Algorithms 3 and 6); Betancourt (2017), *A conceptual
    introduction to Hamiltonian Monte Carlo* (multinomial trajectory sampling);
    Neal (1996), *Bayesian learning for neural networks*.
    """

    max_tree_depth: int = 10

    _tree_depth: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        check_positive(max_tree_depth=self.max_tree_depth)

    def _kernel(self, numpyro_model, init_strategy):
        return numpyro.infer.NUTS(
            numpyro_model, target_accept_prob=self.target_accept_prob,
            max_tree_depth=self.max_tree_depth, dense_mass=self.dense_mass,
            init_strategy=init_strategy,
        )


@config
@dataclass(frozen=True)
class HMC(_MCMC):
    """Hamiltonian Monte Carlo with a fixed number of leapfrog steps, on the full data.

    Parameters
    ----------
    step_size : float
        Leapfrog step size (its starting value when ``adapt_step_size``).
    num_steps : int
        Leapfrog steps per proposal.
    adapt_step_size : bool
        Tune the step size during warmup by dual averaging towards ``target_accept_prob``.
    num_warmup, num_samples, num_chains, thinning
        As for :class:`NUTS`.
    target_accept_prob, dense_mass, init, chain_method
        As for :class:`NUTS`. ``sample_stats`` has no ``tree_depth``.

    Notes
    -----
    A fixed trajectory can be nearly periodic along some directions of the posterior and
    then mixes badly there (Neal 2011, section 5.4); :class:`NUTS` avoids choosing it.

    References
    ----------
    Duane, Kennedy, Pendleton & Roweth (1987), *Hybrid Monte Carlo*; Neal (2011), *MCMC
    using Hamiltonian dynamics*, Handbook of MCMC (section 5.3.2); Hoffman & Gelman (2014),
    section 3.2 and Algorithm 5 (dual-averaging step-size adaptation).
    """

    step_size: float = 1.0
    num_steps: int = 10
    adapt_step_size: bool = True

    def __post_init__(self):
        super().__post_init__()
        check_positive(step_size=self.step_size, num_steps=self.num_steps)

    def _kernel(self, numpyro_model, init_strategy):
        return numpyro.infer.HMC(
            numpyro_model, step_size=self.step_size, num_steps=self.num_steps,
            trajectory_length=None, adapt_step_size=self.adapt_step_size,
            target_accept_prob=self.target_accept_prob, dense_mass=self.dense_mass,
            init_strategy=init_strategy,
        )

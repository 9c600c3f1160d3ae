"""NUTS within Gibbs for hierarchical priors (Neal 1996; Hoffman & Gelman 2014).

NUTS updates the weights given the prior and noise precisions, and each precision is
drawn from its conjugate Gamma conditional (:mod:`bayesnn.inference.hyper`), as one
NumPyro ``Gibbs`` kernel stepped by the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from numpyro.infer import NUTS
from numpyro.infer.gibbs import GIBBS_SITES_KWARG, CustomGibbs, Gibbs

from bayesnn.bnn import BNN
from bayesnn.data import Dataset
from bayesnn.inference.driver import sample_chains, thinned_steps
from bayesnn.inference.gibbs import check_gibbs_args, gibbs_posterior
from bayesnn.inference.hyper import NOISE, Hierarchical, gibbs_hyper_update, weight_groups
from bayesnn.inference.init import initial_positions
from bayesnn.inference.map import MAP
from bayesnn.posterior import Posterior
from bayesnn.tree import flatten_paths
from bayesnn.validation import check_positive, check_range, config

__all__ = ["HierarchicalNUTS", "HierarchicalNUTSInfo"]


class HierarchicalNUTSInfo(NamedTuple):
    """Per step: the NUTS update's divergence, leapfrog steps and acceptance rate."""

    diverging: jax.Array
    n_steps: jax.Array
    acceptance_rate: jax.Array


class _ConjugateBlock(CustomGibbs):
    """A NumPyro Gibbs block whose update also receives the model's data arguments.

    ``CustomGibbs`` (behind ``HMCGibbs``) hands its function only site values, so data
    would have to be closed over and baked into the compiled program as constants.
    """

    def sample(self, state, model_args, model_kwargs):
        rng_key, key = jax.random.split(state.rng_key)
        sites = (model_kwargs or {}).get(GIBBS_SITES_KWARG, {})
        return state._replace(z=self._gibbs_fn(key, state.z, sites, *model_args), rng_key=rng_key)


@config
@dataclass(frozen=True)
class HierarchicalNUTS:
    """NUTS for the weights, Gibbs for Gamma-distributed prior and noise precisions.

    The model's weight prior is replaced by the hierarchy of ``hierarchical`` (see
    :class:`~bayesnn.inference.hyper.Hierarchical`): each group's precision, and with a
    noise hyperprior the Gaussian noise precision, is drawn from its conjugate Gamma
    conditional (:func:`~bayesnn.inference.hyper.gibbs_hyper_update`) between NUTS
    updates of the weights given the precisions — Neal's (1996) scheme, with NUTS in
    place of hybrid Monte Carlo, run as a NumPyro ``Gibbs`` kernel (the machinery of
    ``HMCGibbs``) through the project's driver, so it can checkpoint. Chains start where
    ``init`` says, with the precisions at their prior means. NUTS adapts its step size and
    diagonal mass matrix during warmup; the NumPyro state carries its own PRNG key, derived
    from ``key``. NUTS and the Gibbs updates both need all the data at every step (no
    minibatches: :mod:`bayesnn.inference.gibbs`).

    The precision draws are returned in ``info["hyperparameters"]`` (leading
    ``(chain, draw)``); with a noise hyperprior the position's ``lik/log_scale`` holds
    the sampled noise std, so predictions use it.

    Parameters
    ----------
    hierarchical : Hierarchical
        The hyperpriors.
    num_samples, num_warmup, num_chains, thinning, init
        As :class:`~bayesnn.inference.coordinate_gibbs.CoordinateGibbs`: each chain runs
        ``num_warmup + num_samples * thinning`` steps (a step: the Gibbs update of the
        precisions, then one NUTS update of the weights), discards the first
        ``num_warmup`` (NUTS adapts during them) and keeps every ``thinning``-th after
        them, ``num_samples`` draws.
    target_accept_prob, max_tree_depth
        NUTS settings.

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
    init: str | MAP = "random"

    def __post_init__(self):
        check_gibbs_args(self)
        check_range("target_accept_prob", self.target_accept_prob, 0, 1)
        check_positive(max_tree_depth=self.max_tree_depth)

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
        # Chains start at ``init``, the precisions at their prior means.
        bayesian = {p for paths in weight_groups(model, hier.group).values() for p in paths}
        positions, map_info = initial_positions(k_pos, model, data, self.init, self.num_chains,
                                                progress=progress)
        init_params = {f"net/{p}": v for p, v in flatten_paths(positions["net"]).items()
                       if p in bayesian}
        init_params |= {
            f"hyper/{g}": jnp.broadcast_to(tau, (self.num_chains,))
            for g, tau in hier.init_precisions(model).items()
        }
        states = jax.vmap(lambda k, p: kernel.init(k, self.num_warmup, p, (x, y), {}))(
            jax.random.split(k_init, self.num_chains), init_params)

        def step(_, states, t, x, y):
            states = jax.vmap(lambda s: kernel.sample(s, (x, y), {}))(states)
            nuts = states.block_states[1]
            return states, HierarchicalNUTSInfo(nuts.diverging, nuts.num_steps, nuts.accept_prob)

        res = sample_chains(
            step, states, k_run, thinned_steps(self.num_warmup, self.num_samples, self.thinning),
            x, y, desc="HierarchicalNUTS", progress=progress, checkpoint=checkpoint,
            store=lambda s: (jax.vmap(position_of)(s.z),
                             {k.removeprefix("hyper/"): s.z[k] for k in hyper_sites}),
            hint="try a larger target_accept_prob or tighter hyperpriors",
        )
        positions, hyper = res.draws
        return gibbs_posterior(model, self, x, positions, res, map_info,
                               hyperparameters=hyper)

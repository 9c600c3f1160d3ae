"""Where chains start: the one ``init`` vocabulary every sampler shares."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from bayesnn.bnn import BNN
from bayesnn.data import Dataset, num_batches
from bayesnn.inference.ensemble import Ensemble
from bayesnn.inference.map import MAP
from bayesnn.tree import flatten_paths, unflatten_paths

__all__ = ["INITS", "MIN_INIT_STEPS", "VALIDATION_FRACTION", "check_init", "ensemble_init_map",
           "ensemble_starts", "initial_positions"]

INITS = ("network", "random", "prior", "map", "ensemble")
MIN_INIT_STEPS = 10_000  # "ensemble": each member trains for at least this many steps
VALIDATION_FRACTION = 0.1  # "ensemble": rows held out to choose each member's epoch


def check_init(init, allowed: tuple[str, ...] = INITS) -> None:
    """Raise ``ValueError`` unless ``init`` is one of ``allowed`` or a :class:`MAP` config
    (where ``"map"`` is allowed)."""
    if not (init in allowed or isinstance(init, MAP) and "map" in allowed):
        extra = " or a bayesnn.MAP" if "map" in allowed else ""
        raise ValueError(f"init must be one of {allowed}{extra}, got {init!r}")


def initial_positions(key, model: BNN, data: Dataset, init, num_chains: int, *, progress=None):
    """Starting positions of ``num_chains`` chains, with a leading chain axis.

    ``"network"``: the network's own weights for every chain; ``"random"``: a fresh
    :meth:`~bayesnn.BNN.init_params` per chain; ``"prior"``: a draw from the prior per chain
    (likelihood parameters from their priors); ``"map"`` or a :class:`MAP` config: every
    chain at the weights of one MAP fit (``"map"`` uses ``MAP()``); ``"ensemble"``: each
    chain at its own MAP fit (:func:`ensemble_init_map`: ``MAP()`` for at least 10,000
    steps, the epoch chosen on 10% of the rows held out) from its own
    :meth:`~bayesnn.BNN.init_params`, trained in
    parallel as the members of a :class:`~bayesnn.Ensemble` (deep-ensemble initialisation:
    Sommer et al. 2024, 2025), so that the chains start in different modes and R̂ across
    them means something. Weights without a prior
    (a :class:`~bayesnn.priors.PerParameter` prior without a default) keep the network's
    values under ``"random"`` and ``"prior"``: they are not sampled.

    Returns
    -------
    positions, map_info
        ``map_info`` is the MAP fit's ``info``, or None without one; for ``"ensemble"``
        the :class:`~bayesnn.Ensemble`'s (``best_epoch`` and ``epochs_run`` per chain,
        ``history``, ``seconds``, ...).

    References
    ----------
    Sommer, E. et al. (2024). Connecting the dots: is mode-connectedness the key to
    feasible sample-based inference in Bayesian neural networks? *ICML*.
    Sommer, E. et al. (2025). Microcanonical Langevin ensembles: advancing the sampling of
    Bayesian neural networks. *ICLR*.
    """
    check_init(init)
    if init == "ensemble":
        return ensemble_starts(key, model, data, ensemble_init_map(data.x.shape[0]), num_chains,
                               progress=progress)
    if init in ("random", "prior"):
        draw = model.init_params if init == "random" else _prior_draw(model)
        fresh = jax.vmap(draw)(jax.random.split(key, num_chains))
        stacked = _broadcast(model.init_position, num_chains)
        positions = jax.tree.map(lambda bayes, new, old: new if bayes else old,
                                 model.bayesian_mask, fresh, stacked)
        return positions, None
    position, map_info = model.init_position, None
    if init != "network":
        fitted = (MAP() if init == "map" else init).run(model, data, key, progress=progress)
        position, map_info = fitted.point(), fitted.info
    return _broadcast(position, num_chains), map_info


def ensemble_init_map(data_size: int) -> MAP:
    """The MAP training of each member of an ``"ensemble"`` start: ``MAP()`` for at least
    :data:`MIN_INIT_STEPS` (10,000) optimiser steps on the first 90% of the rows, keeping
    the weights of the epoch with the lowest loss on the last 10%
    (``validation_split=0.1``) and stopping after a tenth of the epochs (at least 10)
    without improvement.

    ``MAP()``'s 100 epochs are 800 Adam steps on a set of 250 rows, which leaves a small
    network far from a mode (on UCI yacht its noise scale was 5.8, against about 0.2 after
    10,000 steps); trained to the end, the same network overfits (on one yacht split the
    chains then scored −20.5 nats a test point). An SG-MCMC chain moves little from its
    start within its budget, so the start must generalise: the held-out rows, taken from
    the training data only, choose the epoch. On large sets 100 epochs are already more
    than 10,000 steps. (The rows are held out as Keras does, from the end: shuffle data
    stored in a meaningful order.)"""
    fraction = VALIDATION_FRACTION if data_size >= 2 else 0.0
    train = math.floor(data_size * (1 - fraction))  # Keras' rule, as MAP splits
    default = MAP()
    batch = min(default.batch_size, train)
    epochs = max(default.epochs, -(-MIN_INIT_STEPS // num_batches(train, batch)))
    return MAP(epochs=epochs, batch_size=batch, validation_split=fraction,
               early_stopping_patience=max(10, epochs // 10) if fraction else None)


def ensemble_starts(key, model: BNN, data: Dataset, config: MAP, size: int, *, progress=None,
                    name: str = "the sampler"):
    """The weights of the ``size`` members of an :class:`~bayesnn.Ensemble` trained with
    ``config`` (leading member axis) and its ``info``: the chains' starting points. An
    interrupted training is an error naming ``name``, as the chains cannot start."""
    fitted = Ensemble(config, size=size).run(model, data, key, progress=progress)
    if fitted.info["interrupted"]:
        raise RuntimeError(f"{name} was interrupted while training its ensemble")
    return jax.tree.map(lambda a: a[:, 0], fitted.draws), fitted.info


def _broadcast(position, n: int):
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (n, *jnp.shape(a))), position)


def _prior_draw(model: BNN):
    """``key -> position`` drawn from the prior (point-estimate weights: their values)."""
    net0 = model.init_position["net"]
    dists = model.prior.distributions(net0)
    lik_dists = model.likelihood.param_priors()

    def draw(key):
        k_net, k_lik = jax.random.split(key)
        keys = dict(zip(dists, jax.random.split(k_net, max(len(dists), 1)), strict=False))
        net = {p: dists[p].sample(keys[p]).astype(v.dtype) if p in dists else v
               for p, v in flatten_paths(net0).items()}
        lik = dict(model.init_position["lik"])
        for (name, d), k in zip(lik_dists.items(),
                                jax.random.split(k_lik, max(len(lik_dists), 1)), strict=False):
            lik[name] = d.sample(k).astype(jnp.result_type(lik[name]))
        return {"net": unflatten_paths(net, like=net0), "lik": lik}

    return draw

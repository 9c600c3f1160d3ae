"""Non-Bayesian baselines: deep ensembles and Monte Carlo dropout.

Both train point-estimate networks with :class:`~bayesnn.MAP` and return a
:class:`~bayesnn.Posterior` like every other method, so they are compared with the Bayesian
methods on the same footing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from bayesnn.bnn import BNN, fresh_weights
from bayesnn.data import Dataset
from bayesnn.inference.map import MAP, train_members
from bayesnn.inference.programs import run_program
from bayesnn.inference.sharding import num_chain_devices, to_host
from bayesnn.posterior import DropoutPredictive, Posterior
from bayesnn.tree import save_tree
from bayesnn.validation import check_positive, config

__all__ = ["Ensemble", "MCDropout", "member_keys", "member_starts"]


def member_keys(key, size: int) -> tuple[jax.Array, jax.Array]:
    """Initialisation and training keys of each member: ``split(fold_in(key, m))``."""
    keys = jax.vmap(lambda m: jax.random.split(jax.random.fold_in(key, m)))(jnp.arange(size))
    return keys[:, 0], keys[:, 1]


def member_starts(model: BNN, key, size: int):
    """Each member's start, :meth:`~bayesnn.BNN.init_params` of its initialisation key
    (leading member axis), and its training key (:func:`member_keys`).

    One program, kept for later fits (:func:`~bayesnn.inference.programs.run_program`):
    run op by op, the key splits and each weight shape's initialiser would compile programs
    of their own on a first fit (about 2 s for a one-hidden-layer MLP on a CPU)."""
    def starts(key, like):
        init_keys, train_keys = member_keys(key, size)
        return jax.vmap(fresh_weights, (0, None))(init_keys, like), train_keys

    net, train_keys = run_program(starts, ("member starts", size), key,
                                  model.init_position["net"])
    lik = jax.tree.map(lambda a: jnp.broadcast_to(a, (size, *jnp.shape(a))),
                       model.likelihood.init_params())
    return {"net": net, "lik": lik}, train_keys


@config
@dataclass(frozen=True)
class Ensemble:
    """Deep ensemble: ``size`` MAP networks from independent initialisations.

    The members train in parallel (vmapped) with the settings of ``map_config``. Member
    ``m`` starts at :meth:`~bayesnn.BNN.init_params` with its own initialisation key,
    shuffles the data with its own training key (both from :func:`member_keys`), and keeps
    its own best weights with a validation split. Its run is exactly that of
    ``map_config`` from the same start and key. Draws have shape ``(size, 1, ...)``: each
    member is a chain of one draw.

    Parameters
    ----------
    map_config : MAP
        Training of every member. Its ``checkpoint_path`` receives the best weights of all
        members stacked (leading member axis); early stopping ends the run once every
        member has stopped.
    size : int
        Number of members ``M``.

    Notes
    -----
    ``info["history"]`` maps each metric to an array ``(size, epochs)`` (NaN after a
    member stopped early); ``best_epoch`` and ``epochs_run`` are arrays ``(size,)``.
    The members' adversarial training of the paper is not included.

    References
    ----------
    Lakshminarayanan, Pritzel & Blundell (2017), *Simple and scalable predictive
    uncertainty estimation using deep ensembles*, NeurIPS (Algorithm 1; predictions are
    the uniformly weighted mixture of the members).
    """

    map_config: MAP = field(default_factory=MAP)
    size: int = 5

    def __post_init__(self):
        check_positive(size=self.size)

    def run(self, model: BNN, data: Dataset, key, *, progress=None, checkpoint=None) -> Posterior:
        if model.stats:
            raise ValueError(
                f"Ensemble: the network {model.network_name} has batch statistics "
                "(nnx.BatchStat, e.g. nnx.BatchNorm), but members would share one set of them; "
                "fit it with MAP or MCDropout, or use a network without batch norm (e.g. "
                "nnx.LayerNorm instead)"
            )
        starts, train_keys = member_starts(model, key, self.size)
        path = self.map_config.checkpoint_path
        fitted = train_members(
            self.map_config, model, data, train_keys, starts,
            save=partial(save_tree, path) if path else None, desc="Ensemble",
            progress=progress, checkpoint=checkpoint,
        )
        state, tracker = fitted.carry
        ran = fitted.history.pop("ran")
        history = {k: np.where(ran, h, np.nan)[ran.any(1)].T for k, h in fitted.history.items()}
        # The members may be spread over the devices of several processes: gather them.
        position, best_epoch, epochs_run = to_host((
            tracker.best_position if self.map_config.save_best_only else state.position,
            tracker.best_epoch, tracker.epoch))
        info = {
            "history": history, "best_epoch": best_epoch, "epochs_run": epochs_run,
            "seconds": fitted.seconds, "interrupted": fitted.interrupted,
            "num_devices": num_chain_devices(fitted.carry),
        }
        return Posterior(model, jax.tree.map(lambda a: jnp.asarray(a)[:, None], position),
                         self, info)


@config
@dataclass(frozen=True)
class MCDropout:
    """Monte Carlo dropout: one network trained with dropout, predicting with dropout on.

    The network is trained by ``map_config`` (dropout is on during training, and the
    prior acts as the weight decay of the paper's objective). The posterior holds the
    trained weights as ``num_samples`` draws ``(1, num_samples, ...)`` (views of one copy)
    and a :class:`~bayesnn.posterior.DropoutPredictive` as its ``predictive``, so
    :meth:`~bayesnn.Posterior.predict` averages ``num_samples`` independent dropout masks
    unless given another ``key``.

    Parameters
    ----------
    map_config : MAP
        Training of the network.
    num_samples : int
        Dropout masks averaged by predictions.

    Raises
    ------
    ValueError
        At fit time, when the network has no active dropout.

    References
    ----------
    Gal & Ghahramani (2016), *Dropout as a Bayesian approximation: representing model
    uncertainty in deep learning*, ICML (section 4, "Obtaining model uncertainty").
    """

    map_config: MAP = field(default_factory=MAP)
    num_samples: int = 100

    def __post_init__(self):
        check_positive(num_samples=self.num_samples)

    def run(self, model: BNN, data: Dataset, key, *, progress=None, checkpoint=None) -> Posterior:
        k_check, k_fit, k_dropout = jax.random.split(key, 3)
        x = jnp.asarray(data.x[:8])
        if np.array_equal(model.apply(model.init_position, x),
                          model.apply(model.init_position, x, k_check)):
            raise ValueError(
                "MCDropout needs a network with dropout > 0 (e.g. models.MLP(..., dropout=0.1)); "
                "this network gives the same outputs with and without dropout"
            )
        fitted = self.map_config.run(model, data, k_fit, progress=progress, checkpoint=checkpoint)
        draws = jax.tree.map(
            lambda a: np.broadcast_to(np.asarray(a), (1, self.num_samples, *np.shape(a))),
            fitted.point(),
        )
        return Posterior(fitted.model, draws, self, fitted.info,
                         DropoutPredictive(jax.random.key_data(k_dropout)))

"""``fit``: the one entry point every method shares."""

from __future__ import annotations

import os
from typing import Protocol

import jax

from bayesnn import serialization
from bayesnn.bnn import BNN, prepare_data
from bayesnn.data import Dataset
from bayesnn.inference.driver import Checkpoint
from bayesnn.posterior import Posterior

# classic_threefry and check_chain_args: the methods' old import path, until they import
# from bayesnn.prng and bayesnn.validation.
from bayesnn.prng import as_key, classic_threefry  # noqa: F401
from bayesnn.validation import check_chain_args, check_positive  # noqa: F401

__all__ = ["Method", "fit"]


class Method(Protocol):
    """A method configuration: a frozen dataclass with a ``run`` method."""

    def run(
        self, model: BNN, data: Dataset, key: jax.Array, *, progress, checkpoint
    ) -> Posterior: ...




def fit(
    model: BNN,
    data,
    method: Method,
    *,
    key,
    progress: bool | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
) -> Posterior:
    """Fit a posterior over ``model``'s weights to ``data`` with ``method``.

    Parameters
    ----------
    model : BNN
        Network, prior and likelihood.
    data : Dataset or (x, y)
        Training data; ``x`` of shape ``(N, ...)``, inputs the network takes (checked
        with ``jax.eval_shape`` before anything compiles), ``y`` targets for its outputs.
    method
        A method configuration (:class:`~bayesnn.MAP`, ...).
    key : int or PRNG key
        All randomness of the run derives from it: same key, same result.
    progress : bool, optional
        Show a progress bar on runs longer than 2 s (default: on a terminal).
    checkpoint : path, optional
        Save the run there (its state, key, chunk counter and outputs so far) every
        ``checkpoint_every`` chunks and at its end; if the file exists, resume from it. The
        resumed run's draws are identical to those of an uninterrupted run with the same
        key. A chunk is not an epoch: :class:`~bayesnn.MAP`, :class:`~bayesnn.Ensemble`,
        :class:`~bayesnn.MCDropout` and the VI methods run as many whole epochs per chunk as
        fit in 256 steps (at least one); SG-MCMC, the Gibbs samplers and
        :class:`~bayesnn.HierarchicalNUTS` about 1/20 of their steps (fewer where a chunk's
        draws would pass 64 MiB). :class:`~bayesnn.NUTS` and :class:`~bayesnn.HMC` run as
        one NumPyro call and raise ``ValueError`` with a checkpoint.
    checkpoint_every : int
        A positive int: chunks between saves (default 1, after every chunk). The run's last
        chunk, also one that ends it by early stopping, is always saved.

    Returns
    -------
    Posterior
        Draws with leading ``(chain, draw)`` axes. On Ctrl-C the chunk in progress is
        dropped and the run returns what the finished chunks computed, with
        ``info["interrupted"] = True`` (the checkpoint keeps its last save): MAP its best
        weights so far (the last with ``save_best_only=False``), VI draws from the guide
        fitted so far, SG-MCMC and the Gibbs samplers the draws kept so far. NUTS and HMC
        run as one NumPyro call, which Ctrl-C aborts (``KeyboardInterrupt``).

    Raises
    ------
    RuntimeError
        When SG-MCMC or a Gibbs sampler is interrupted before its first kept draw.
    """
    if not isinstance(model, BNN):
        raise TypeError(f"model must be a bayesnn.BNN, got {type(model).__name__}")
    if not callable(getattr(method, "run", None)):
        raise TypeError(f"method must be a method configuration such as bnn.MAP(), got {method!r}")
    check_positive(checkpoint_every=checkpoint_every)
    data, key = prepare_data(model, data), as_key(key)
    ckpt = None if checkpoint is None else Checkpoint(
        os.fspath(checkpoint), checkpoint_every, _fingerprint(model, data, method)
    )
    return method.run(model, data, key, progress=progress, checkpoint=ckpt)


def _fingerprint(model: BNN, data: Dataset, method) -> str:
    """What a checkpoint must match to be resumed: the method's and the model's
    configuration field by field, and digests of the values of the data and the initial
    weights (equal shapes are not the same run). Callables and optax transformations count
    by qualified name, code and hyperparameters (their closures' values), never by memory
    address, so the same run started again in a new process has the same fingerprint."""
    return serialization.fingerprint(method=method, model=model.to_state(),
                                     data=(data.x, data.y))

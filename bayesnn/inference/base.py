"""``fit``: the one entry point every method shares."""

from __future__ import annotations

import hashlib
import os
from typing import Protocol

import jax
import numpy as np

from bayesnn.bnn import BNN, prepare_data
from bayesnn.data import Dataset
from bayesnn.inference.driver import Checkpoint
from bayesnn.posterior import Posterior

__all__ = [
    "Method", "fit", "as_key", "prepare_data", "check_chain_args", "check_positive",
    "classic_threefry",
]


class Method(Protocol):
    """A method configuration: a frozen dataclass with a ``run`` method."""

    def run(
        self, model: BNN, data: Dataset, key: jax.Array, *, progress, checkpoint
    ) -> Posterior: ...


def as_key(key) -> jax.Array:
    """Accept an int seed, a typed PRNG key or a raw ``uint32[2]`` key."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array) and (
        jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
        or (key.dtype == np.uint32 and key.shape == (2,))
    ):
        return key
    raise TypeError(f"key must be an int seed or a JAX PRNG key, got {type(key).__name__}")


def classic_threefry():
    """Context: trace random numbers with JAX's classic (non-partitionable) Threefry.

    Weight-noise VI draws one normal per weight per step through NumPyro, and on CPU
    generating them dominates its extra cost over SGD; the classic Threefry makes them ~1.5x
    faster there than the partitionable one (JAX's default), whose purpose, sharding, does
    not arise for an unsharded fit. Used on every backend, so that a key gives the same
    numbers on CPU and GPU (as :func:`bayesnn.prng.normal` does). The flag acts where random
    numbers are traced, so enter it inside the jitted function.
    """
    return jax.threefry_partitionable(False)


def check_positive(**values) -> None:
    """Raise ``ValueError`` naming any argument that is not > 0 (None is allowed)."""
    for name, v in values.items():
        if v is not None and not v > 0:
            raise ValueError(f"{name} must be > 0, got {v!r}")


def check_chain_args(*, num_samples, num_warmup, num_chains, thinning) -> None:
    """Draws, chains and thinning are ints >= 1 and warm-up an int >= 0.

    A non-int raises ``TypeError``, an int out of range ``ValueError``.
    """
    values = {"num_samples": num_samples, "num_chains": num_chains, "thinning": thinning,
              "num_warmup": num_warmup}
    for name, v in values.items():
        least = 0 if name == "num_warmup" else 1
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int >= {least}, got {v!r}")
        if v < least:
            raise ValueError(f"{name} must be an int >= {least}, got {v!r}")


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
    """What a checkpoint must match to be resumed: the method, the model, and a digest of
    the data's and the initial weights' values (equal shapes are not the same run)."""
    digest = hashlib.blake2b(digest_size=16)
    for a in (*jax.tree.leaves(model.init_position), data.x, data.y):
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype}{a.shape}".encode())
        digest.update(a.tobytes())
    return f"{method!r}|{model!r}|{digest.hexdigest()}"

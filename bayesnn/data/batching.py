"""Shuffled minibatches of static shape, for use inside ``jax.jit``.

A batch drawn from a uniformly random permutation is a uniform random subset of the
data, so ``(N / b) * sum(loss_i for i in batch)`` is an unbiased estimate of
``sum(loss_i for all i)`` for every batch, the partial last one included (``b`` is its
real size, ``mask.sum()``).
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Batches", "num_batches", "check_batch_size", "epoch_batches", "next_batch", "take"]


class Batches(NamedTuple):
    """One epoch of minibatches.

    Attributes
    ----------
    indices : int32 array of shape ``(num_batches, batch_size)``
        Example indices; always in range, also in the masked-out slots.
    mask : bool array of shape ``(num_batches, batch_size)``
        ``False`` for the padding slots of a partial last batch.
    """

    indices: jax.Array
    mask: jax.Array


def num_batches(num_examples: int, batch_size: int, drop_remainder: bool = False) -> int:
    """Number of batches in one epoch."""
    if drop_remainder:
        return num_examples // batch_size
    return math.ceil(num_examples / batch_size)


def check_batch_size(batch_size: int | None, num_examples: int) -> int:
    """Validate ``batch_size`` against the data; ``None`` means full batch.

    Returns
    -------
    int
        The batch size to use.
    """
    if batch_size is None:
        return num_examples
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise TypeError(
            f"batch_size must be a positive int or None (full batch), "
            f"got {batch_size!r} of type {type(batch_size).__name__}"
        )
    if batch_size <= 0:
        raise ValueError(
            f"batch_size must be a positive int or None (full batch), got {batch_size}"
        )
    if batch_size > num_examples:
        raise ValueError(
            f"batch_size ({batch_size}) is larger than the dataset ({num_examples} examples)"
        )
    return int(batch_size)


def epoch_batches(
    key: jax.Array, num_examples: int, batch_size: int, drop_remainder: bool = False
) -> Batches:
    """Shuffle ``num_examples`` indices with ``key`` and cut them into batches.

    ``num_examples``, ``batch_size`` and ``drop_remainder`` are static. Without
    ``drop_remainder`` every example appears exactly once; the padding slots of a
    partial last batch repeat earlier indices and are masked out. With it, only full
    batches are returned.

    Returns
    -------
    Batches
        ``indices`` and ``mask`` of shape ``(num_batches, batch_size)``.
    """
    batch_size = check_batch_size(batch_size, num_examples)
    k = num_batches(num_examples, batch_size, drop_remainder)
    slots = k * batch_size
    perm = jax.random.permutation(key, num_examples)
    if slots <= num_examples:
        indices = perm[:slots]
    else:
        indices = jnp.concatenate([perm, perm[: slots - num_examples]])
    mask = jnp.arange(slots) < num_examples
    shape = (k, batch_size)
    return Batches(indices.astype(jnp.int32).reshape(shape), mask.reshape(shape))


def next_batch(
    key: jax.Array, epoch: jax.Array, step, num_examples: int, batch_size: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Minibatch number ``step`` of a stream of shuffled epochs, one batch per call.

    For samplers that take one minibatch per step inside ``lax.scan`` and carry the
    current epoch's batches in their state. At the first batch of every epoch
    (``step % num_batches == 0``) the epoch is redrawn from ``key`` with
    :func:`epoch_batches` under ``lax.cond``, so shuffling costs O(N) once per epoch, not
    per step. Keep ``step`` unbatched under ``jax.vmap`` (shared by all chains): a batched
    predicate would turn the ``cond`` into a ``select`` that reshuffles at every step.

    Parameters
    ----------
    key : PRNG key
        Used only when a new epoch starts.
    epoch : int32 array of shape ``(num_batches, batch_size)``
        The epoch returned by the previous call; at step 0 any array of that shape
        (e.g. zeros) will do, since it is redrawn.
    step : int
        Number of batches drawn so far (may be traced).
    num_examples, batch_size : int
        Static sizes.

    Returns
    -------
    epoch : int32 array of shape ``(num_batches, batch_size)``
        The current epoch, to pass to the next call.
    indices : int32 array of shape ``(batch_size,)``
    mask : bool array of shape ``(batch_size,)``
        ``False`` for the padding slots of an epoch's partial last batch.
    """
    j = step % num_batches(num_examples, batch_size)
    epoch = jax.lax.cond(
        j == 0,
        lambda: epoch_batches(key, num_examples, batch_size).indices,
        lambda: epoch.astype(jnp.int32),
    )
    mask = j * batch_size + jnp.arange(batch_size) < num_examples
    return epoch, epoch[j], mask


def take(data, indices):
    """Gather rows ``indices`` from every array of ``data`` (e.g. a ``Dataset``).

    NumPy indices keep NumPy arrays on the host; JAX indices (traced ones included,
    inside ``jax.jit``) give JAX arrays. ``indices`` of shape ``(b,)`` give leading
    axis ``b``.
    """
    if isinstance(indices, jax.Array):
        return jax.tree.map(lambda a: jnp.asarray(a)[indices], data)
    return jax.tree.map(lambda a: a[indices], data)

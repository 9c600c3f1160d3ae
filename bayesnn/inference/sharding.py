"""Chains across devices: the leading chain axis of a method's state, split over devices;
and, for a single chain, its minibatch rows split over devices (data parallelism).

Every multi-chain method keeps its chains (SG-MCMC chains, ensemble members, Gibbs
chains) on one leading axis and advances them with ``vmap``. :func:`shard_chains` places
that axis across the visible devices with a :class:`~jax.sharding.NamedSharding` over a
one-axis mesh ``("chains",)``; :func:`~bayesnn.inference.driver.run_chunks` keeps the
placement from chunk to chunk and jit partitions the vmapped step along it, so each
device advances its own chains, while data and keys are replicated. Each chain's
arithmetic is the same wherever it runs, and JAX's random numbers do not depend on how
arrays are sharded, so a run gives the same draws on one device or several (to float32
rounding: a device compiles its program for its own number of chains).

Across processes (after ``jax.distributed.initialize()``, one process per host) the mesh
spans the devices of every process, and each process holds only its own chains: whatever a
method reads on the host goes through :func:`to_host`, which gathers them from all
processes, so that every process ends with the same numbers.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "CHAIN_AXIS", "DATA_AXIS", "chain_mesh", "data_mesh", "shard_chains", "shard_rows",
    "num_chain_devices", "numpyro_chain_method", "to_host",
]

CHAIN_AXIS = "chains"
DATA_AXIS = "data"


def _mesh(size: int, axis: str, devices) -> Mesh | None:
    """A one-axis mesh over the largest number of ``devices`` that divides ``size``, or None
    when that number is 1."""
    devices = jax.devices() if devices is None else list(devices)
    count = max(d for d in range(1, min(size, len(devices)) + 1) if size % d == 0)
    return Mesh(np.asarray(devices[:count]), (axis,)) if count > 1 else None


def chain_mesh(num_chains: int, devices=None) -> Mesh | None:
    """A one-axis mesh ``("chains",)`` for ``num_chains`` chains, or None for one device.

    Uses the largest number of ``devices`` (default :func:`jax.devices`, all hosts) that
    divides ``num_chains``, so that every device holds as many chains: 6 chains on 4
    devices use 3, 5 chains on 4 devices use 1 (no mesh: the chains stay where they are).
    """
    return _mesh(num_chains, CHAIN_AXIS, devices)


def data_mesh(batch_size: int, num_chains: int, devices=None) -> Mesh | None:
    """A one-axis mesh ``("data",)`` splitting the rows of a single chain's minibatches.

    None unless ``num_chains == 1`` (several chains are split by :func:`shard_chains`);
    uses the largest number of devices that divides ``batch_size``.
    """
    return _mesh(batch_size, DATA_AXIS, devices) if num_chains == 1 else None


def shard_rows(tree, mesh: Mesh | None):
    """Inside ``jit``: split the leading (row) axis of every array of ``tree`` over ``mesh``
    (from :func:`data_mesh`); unchanged when ``mesh`` is None."""
    if mesh is None:
        return tree
    rows = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, rows), tree)


def shard_chains(tree, devices=None):
    """Place the leading (chain) axis of every array in ``tree`` across devices.

    The number of chains is the leading size of the first leaf; leaves without that leading
    axis are replicated. With one device, or a chain count that only 1 divides among the
    device counts, ``tree`` is returned unchanged.

    Parameters
    ----------
    tree : pytree of arrays
        A method's state with a leading chain axis (outside ``jit``).
    devices : sequence of jax.Device, optional
        Default :func:`jax.devices`.
    """
    leaves = jax.tree.leaves(tree)
    if not leaves or np.ndim(leaves[0]) == 0:
        return tree
    num_chains = np.shape(leaves[0])[0]
    mesh = chain_mesh(num_chains, devices)
    if mesh is None:
        return tree
    split, replicated = NamedSharding(mesh, PartitionSpec(CHAIN_AXIS)), NamedSharding(
        mesh, PartitionSpec()
    )
    return jax.tree.map(
        lambda a: jax.device_put(
            a, split if np.ndim(a) and np.shape(a)[0] == num_chains else replicated
        ),
        tree,
    )


def to_host(tree):
    """``tree`` as numpy arrays on this host, in one batched copy.

    Arrays spread over the devices of several processes (a run across hosts) are first
    gathered from all of them (:func:`jax.experimental.multihost_utils.process_allgather`):
    a collective, so every process must call it at the same point of the program.
    """
    tree = jax.tree.map(
        lambda x: multihost_utils.process_allgather(x, tiled=True)
        if isinstance(x, jax.Array) and not x.is_fully_addressable else x, tree)
    return jax.tree.map(np.asarray, jax.device_get(tree))


def num_chain_devices(tree) -> int:
    """Over how many devices the leading axis of ``tree``'s first array is split (1: none)."""
    leaf = next((a for a in jax.tree.leaves(tree) if np.ndim(a)), None)
    if not isinstance(leaf, jax.Array):
        return 1
    return leaf.shape[0] // leaf.sharding.shard_shape(leaf.shape)[0]


def numpyro_chain_method(chain_method: str, num_chains: int) -> str:
    """NumPyro's ``chain_method``: ``"vectorized"`` becomes ``"parallel"`` (one chain per
    device, :func:`jax.pmap`) when there are at least ``num_chains > 1`` local devices."""
    if chain_method == "vectorized" and 1 < num_chains <= jax.local_device_count():
        return "parallel"
    return chain_method

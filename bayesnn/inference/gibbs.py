"""What the Gibbs samplers share: all the data at every update, and where chains start.

:class:`~bayesnn.inference.coordinate_gibbs.CoordinateGibbs`,
:class:`~bayesnn.inference.latent_gibbs.LatentGibbs` and
:class:`~bayesnn.inference.hierarchical_nuts.HierarchicalNUTS` run their sweeps on
:func:`~bayesnn.inference.driver.sample_chains`, with warm-up and thinning as its mask.

Why they take no ``batch_size``: each Gibbs update draws from a full conditional
p(block | rest, data), which needs the exact likelihood of all the data. A minibatch gives
only a noisy estimate of it, and an exact conditional draw (or slice sampling) on a noisy
density no longer leaves the posterior invariant: detailed balance needs the same density
at the current and the new point. SGLD and SGHMC are the samplers for minibatches.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from bayesnn.bnn import BNN
from bayesnn.data import Dataset
from bayesnn.inference.base import check_chain_args
from bayesnn.inference.diagnostics import prediction_diagnostics
from bayesnn.inference.driver import Samples
from bayesnn.inference.init import check_init, initial_positions
from bayesnn.inference.sharding import num_chain_devices
from bayesnn.posterior import Posterior

__all__ = ["check_gibbs_args", "start_chains", "gibbs_posterior", "flat_inputs", "set_row"]


def check_gibbs_args(method) -> None:
    """Validate the fields every Gibbs configuration has (chains, draws, ``init``)."""
    check_chain_args(num_samples=method.num_samples, num_warmup=method.num_warmup,
                     num_chains=method.num_chains, thinning=method.thinning)
    check_init(method.init)


def start_chains(key, model: BNN, data: Dataset, method, kernel_init: Callable, *,
                 progress=None):
    """All chains' initial states: ``kernel_init(position, (x, y))`` at the positions of
    :func:`~bayesnn.inference.init.initial_positions` for ``method.init``, in one compiled
    program; and the MAP start's ``info`` (None without one)."""
    positions, map_info = initial_positions(key, model, data, method.init, method.num_chains,
                                            progress=progress)
    xy = (jnp.asarray(data.x), jnp.asarray(data.y))
    return jax.jit(jax.vmap(kernel_init, in_axes=(0, None)))(positions, xy), map_info


def gibbs_posterior(model: BNN, method, x, draws, res: Samples, map_info,
                    **info) -> Posterior:
    """The :class:`~bayesnn.Posterior` of a Gibbs run: ``draws`` with leading ``(chain,
    draw)`` axes, the sweeps' infos as ``sample_stats`` (fields that are None left out).
    With 2 or more chains of 4 or more draws, ``info["diagnostics"]`` holds R̂ and ESS of
    the predictions at training inputs ``x``, which warn when the chains disagree
    (:func:`~bayesnn.inference.diagnostics.prediction_diagnostics`)."""
    stats = {k: v for k, v in res.infos._asdict().items() if v is not None}
    info = {"sample_stats": stats, "seconds": res.seconds, "interrupted": res.interrupted,
            "num_devices": num_chain_devices(res.state), **info}
    if map_info is not None:
        info["map_info"] = map_info
    if method.num_chains >= 2 and len(res.kept_steps) >= 4:
        info["diagnostics"] = prediction_diagnostics(model, draws, x, type(method).__name__,
                                                     stacklevel=5)
    return Posterior(model, jax.tree.map(jnp.asarray, draws), method, info)


def flat_inputs(x):
    """Inputs as rows ``(N, features)``, as a dense view's first layer reads them."""
    return x.reshape(x.shape[0], -1)


def set_row(a, i, row):
    """``a.at[i].set(row)`` in place: with ``.at`` an out-of-range index would be dropped,
    and the select that implements it makes XLA copy the whole array."""
    return jax.lax.dynamic_update_index_in_dim(a, row, i, 0)

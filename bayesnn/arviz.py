"""ArviZ bridge: the only module that imports arviz.

:func:`to_datatree` exports a :class:`~bayesnn.Posterior` as an ``xarray.DataTree`` in ArviZ
1.x conventions; :func:`diagnostics` summarises R̂ and ESS of the weights and, more usefully
for networks whose weights are symmetric under permutation, of the predictions.

It reads a posterior's fields (``model``, ``draws``, ``predictive``, ``info``, ``method``)
and sits below :mod:`bayesnn.posterior`, whose ``to_arviz`` and ``diagnostics`` call it.
The ``arviz`` and ``xarray`` packages are imported at first use, so ``import bayesnn``
does not load them.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import TYPE_CHECKING

import jax
import numpy as np

from bayesnn.bnn import prepare_inputs, prepare_targets
from bayesnn.chunks import draw_chunks, map_rows
from bayesnn.prng import as_key
from bayesnn.tree import flatten_paths

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["ess", "rhat", "to_datatree", "diagnostics", "variable_name", "SAMPLE_STATS_NAMES"]

# NumPyro / BlackJAX statistic names -> ArviZ's sample_stats names.
SAMPLE_STATS_NAMES = {
    "accept_prob": "acceptance_rate",
    "is_divergent": "diverging",
    "num_steps": "n_steps",
    "num_integration_steps": "n_steps",
}
_SAMPLE_DIMS = ("chain", "draw")


def _libs():
    """The ``arviz`` and ``xarray`` packages, imported at first use (they load slowly)."""
    import arviz
    import xarray

    return arviz, xarray


def ess(samples, method: str = "bulk", prob=None) -> np.ndarray:
    """Effective sample size of each coordinate of ``samples`` ``(chain, draw, ...)``.

    ``method`` is ArviZ's: ``"bulk"``, ``"tail"``, ``"mean"``, ...; ``prob`` is its quantile
    argument, for ``"tail"`` by default 0.95 (the 5% and 95% quantiles)
    (Vehtari et al. 2021, *Rank-normalization, folding, and localization*).
    """
    if method == "tail" and prob is None:
        prob = 0.95
    return np.asarray(_libs()[0].ess(_as_array(samples), method=method, prob=prob))


def rhat(samples, method: str = "rank") -> np.ndarray:
    """Split-R̂ of each coordinate of ``samples`` ``(chain, draw, ...)`` (Vehtari et al. 2021)."""
    return np.asarray(_libs()[0].rhat(_as_array(samples), method=method))


def _as_array(samples) -> np.ndarray:
    a = np.asarray(jax.device_get(samples), dtype=np.float64)
    if a.ndim < 2:
        raise ValueError(f"samples must have leading (chain, draw) axes; got shape {a.shape}")
    return a


# -- per-draw evaluation in chunks ------------------------------------------------------------


def _sample_y(model, position, key, rows, f):
    """One target draw per row; row ``i`` uses ``fold_in(key, i)`` whatever the chunking."""
    one = lambda k, fi: model.likelihood.sample(k, fi[None], position["lik"])[0]  # noqa: E731
    return jax.vmap(one)(jax.vmap(partial(jax.random.fold_in, key))(rows), f)


def _loglik_and_sample(model, position, key, rows, f, y):
    """Untempered log p(y_i | x_i, θ) and a target draw per row, from one forward pass."""
    loglik = model.likelihood.log_prob(f, y, position["lik"])
    return loglik, _sample_y(model, position, key, rows, f)


def _draw_stats(model, position, key, rows, f):
    return model.likelihood.draw_stats(f, position["lik"])


@partial(jax.jit, static_argnums=(0, 1))
def _rows_of_draws(model, fn, predictive, draws, key, index, rows, x, *arrays):
    """``fn`` for each draw on one chunk of rows; output ``(rows, draws, ...)``."""

    def one(position, s):
        f = predictive.outputs(model, position, x, s)
        return fn(model, position, jax.random.fold_in(key, s), rows, f, *arrays)

    return jax.vmap(one, out_axes=1)(draws, index)


def _per_draw(posterior, fn, arrays, *, key, index=None, batch_size=1024, draw_batch_size=64):
    """``fn(model, position, key, row_indices, outputs, *other_row_chunks)`` for each draw.

    ``outputs`` are the draw's network outputs at the first of ``arrays`` (the inputs), from
    the posterior's predictive, as :meth:`~bayesnn.Posterior.predict` computes them. Draws
    (flat indices ``index``, default all) go through in chunks of ``draw_batch_size`` and
    rows in chunks of ``batch_size``, so device memory stays bounded; results are stacked on
    the host as ``(len(index), num_rows, ...)`` NumPy arrays. Draw ``s`` gets the key
    ``fold_in(key, s)``.
    """
    rows = np.arange(arrays[0].shape[0])
    parts = []
    for draws, flat, count in draw_chunks(posterior.draws, draw_batch_size, index):
        out = map_rows(partial(_rows_of_draws, posterior.model, fn, posterior.predictive, draws,
                               key, flat), (rows, *arrays), batch_size)
        parts.append(jax.tree.map(lambda a, k=count: np.swapaxes(np.asarray(a), 0, 1)[:k], out))
    return jax.tree.map(lambda *a: np.concatenate(a), *parts)


def _by_chain(a: np.ndarray, num_chains: int) -> np.ndarray:
    return a.reshape((num_chains, -1) + a.shape[1:])


# -- DataTree export -------------------------------------------------------------------------


def variable_name(path: str) -> str:
    """DataTree name of a weight path: ``net/layers/0/kernel`` → ``net.layers.0.kernel``.

    DataTree reserves ``/`` for groups, so path parts are joined with dots.
    """
    return path.replace("/", ".")


def _param_dims(shapes: dict[str, tuple[int, ...]]) -> dict[str, list[str]]:
    """Named dims per weight: a layer's kernel is ``(..., <layer>.in, <layer>.out)`` and its
    bias ``(<layer>.out,)``, so weights of one layer share dims; anything else, or a clash of
    sizes, gets ArviZ's default ``<name>_dim_<i>``."""
    dims, sizes = {}, {}
    for name, shape in shapes.items():
        generic = [f"{name}_dim_{i}" for i in range(len(shape))]
        parts = name.split(".")
        layer = ".".join(parts[1:-1]) or parts[0]
        want = generic
        if parts[0] == "net" and parts[-1] == "kernel" and len(shape) >= 2:
            want = generic[:-2] + [f"{layer}.in", f"{layer}.out"]
        elif parts[0] == "net" and parts[-1] == "bias" and len(shape) == 1:
            want = [f"{layer}.out"]
        if any(sizes.get(d, n) != n for d, n in zip(want, shape, strict=True)):
            want = generic
        sizes.update(zip(want, shape, strict=True))
        dims[name] = want
    return dims


def _dataset(data: dict, *, dims=None, coords=None, sample_dims=_SAMPLE_DIMS) -> xr.Dataset:
    return _libs()[0].dict_to_dataset(
        data, dims=dims, coords=coords, sample_dims=list(sample_dims),
        inference_library=None, index_origin=0,
    )


def _squeeze_target(model, a: np.ndarray) -> np.ndarray:
    """Drop the trailing target axis of a single-output regression (``(..., N, 1)``)."""
    return a[..., 0] if model.likelihood.task == "regression" and a.shape[-1] == 1 else a


def _thinned_draws(num_draws: int, num_pp_samples: int | None) -> np.ndarray:
    if num_pp_samples is None or num_pp_samples >= num_draws:
        return np.arange(num_draws)
    if num_pp_samples < 1:
        raise ValueError(f"num_pp_samples must be >= 1, got {num_pp_samples}")
    return np.unique(np.linspace(0, num_draws - 1, num_pp_samples).round().astype(int))


def _sample_stats(posterior) -> dict[str, np.ndarray]:
    """``info["sample_stats"]`` under ArviZ names; statistics without ``(chain, draw)`` are
    skipped with a warning."""
    lead = (posterior.num_chains, posterior.num_draws)
    out = {}
    for name, value in (posterior.info.get("sample_stats") or {}).items():
        value = np.asarray(jax.device_get(value))
        if value.shape[:2] != lead:
            warnings.warn(
                f"sample_stats[{name!r}] has shape {value.shape}, not leading {lead}; "
                "left out of the DataTree",
                stacklevel=3,
            )
            continue
        out[SAMPLE_STATS_NAMES.get(name, name)] = value
    return out


def _predictive_groups(posterior, inputs, draws, index) -> tuple[xr.Dataset, ...]:
    """Datasets of target ``draws`` (flat draw ``index``) and of the ``inputs``."""
    draws = _squeeze_target(posterior.model, _by_chain(draws, posterior.num_chains))
    draw_coord = index[: len(index) // posterior.num_chains] % posterior.num_draws
    return (
        _dataset({"y": draws}, dims={"y": ["obs"]}, coords={"draw": draw_coord}),
        _dataset({"x": inputs}, dims={"x": ["obs"]}, sample_dims=()),
    )


def to_datatree(
    posterior,
    x=None,
    y=None,
    *,
    x_new=None,
    key=None,
    num_pp_samples: int | None = None,
    batch_size: int = 1024,
    draw_batch_size: int = 64,
) -> xr.DataTree:
    """Export a posterior as an ArviZ 1.x ``xarray.DataTree``.

    Groups (dims ``chain, draw`` first wherever there are draws):

    - ``posterior``: every weight, named by its path with dots
      (``net.layers.0.kernel``, ``lik.log_scale``); a layer's kernel has dims
      ``(<layer>.in, <layer>.out)`` and its bias ``(<layer>.out,)``.
    - ``sample_stats``: the method's per-draw statistics (``info["sample_stats"]``), renamed
      to ArviZ's names where they differ (:data:`SAMPLE_STATS_NAMES`).
    - with ``x``: ``constant_data`` (``x``), and ``posterior_predictive`` (``y``: one target
      draw from the likelihood per posterior draw at ``x``).
    - with ``x`` and ``y``: ``observed_data`` and ``log_likelihood`` (``y``: untempered
      ``log p(y_i | x_i, θ)`` per draw and observation, as :func:`arviz.loo` needs).
    - with ``x_new``: ``predictions_constant_data`` and ``predictions`` (target draws at
      ``x_new``).

    Observations share the dim ``obs``; a single regression target column is squeezed away.

    Parameters
    ----------
    posterior : Posterior
    x, y : arrays, optional
        Inputs ``(N, ...)`` and targets of the observed (e.g. test) data.
    x_new : array, optional
        Inputs for the ``predictions`` group.
    key : int or PRNG key, optional
        Randomness of the predictive draws (default ``0``). Each (draw, row) pair gets its own
        folded-in key, so the draws do not depend on the chunk sizes.
    num_pp_samples : int, optional
        Keep only this many evenly spaced draws per chain in ``posterior_predictive`` and
        ``predictions`` (their ``draw`` coordinate keeps the original indices); default all.
    batch_size, draw_batch_size : int
        Chunk sizes over rows and draws; they bound memory, not the result.

    Returns
    -------
    xarray.DataTree
        Write it with ``dt.to_netcdf(path)``, read it back with ``arviz.from_netcdf(path)``.
    """
    if x is None and y is not None:
        raise ValueError("y needs the inputs x it was observed at")
    key = as_key(0 if key is None else key)
    model, num_chains = posterior.model, posterior.num_chains
    named = {variable_name(p): np.asarray(v) for p, v in flatten_paths(posterior.draws).items()}
    dims = _param_dims({k: v.shape[2:] for k, v in named.items()})
    groups = {"posterior": _dataset(named, dims=dims)}
    stats = _sample_stats(posterior)
    if stats:
        groups["sample_stats"] = _dataset(stats)

    draw_index = _thinned_draws(posterior.num_draws, num_pp_samples)
    flat_index = (np.arange(num_chains)[:, None] * posterior.num_draws + draw_index).ravel()
    chunks = dict(batch_size=batch_size, draw_batch_size=draw_batch_size)
    if x is not None:
        x, k_pp = prepare_inputs(model, x), jax.random.fold_in(key, 1)
        if y is None:
            samples = _per_draw(posterior, _sample_y, (x,), key=k_pp, index=flat_index, **chunks)
        else:
            y = prepare_targets(model, x, y)
            loglik, samples = _per_draw(posterior, _loglik_and_sample, (x, y), key=k_pp, **chunks)
            samples = samples[flat_index]
            groups["log_likelihood"] = _dataset(
                {"y": _by_chain(loglik, num_chains)}, dims={"y": ["obs"]}
            )
            groups["observed_data"] = _dataset(
                {"y": _squeeze_target(model, y)}, dims={"y": ["obs"]}, sample_dims=()
            )
        groups["posterior_predictive"], groups["constant_data"] = _predictive_groups(
            posterior, x, samples, flat_index
        )
    if x_new is not None:
        x_new = prepare_inputs(model, x_new, name="x_new")
        samples = _per_draw(posterior, _sample_y, (x_new,), key=jax.random.fold_in(key, 2),
                            index=flat_index, **chunks)
        groups["predictions"], groups["predictions_constant_data"] = _predictive_groups(
            posterior, x_new, samples, flat_index
        )

    tree = _libs()[1].DataTree.from_dict(groups)
    tree.attrs.update(
        method=type(posterior.method).__name__ if posterior.method is not None else "unknown",
        method_config=repr(posterior.method),
        seconds=float(posterior.info.get("seconds", np.nan)),
    )
    return tree


# -- diagnostics ------------------------------------------------------------------------------


def _extremes(samples: np.ndarray, block: int = 4096) -> dict[str, float]:
    """Max R̂ and min bulk/tail ESS over the coordinates of ``(chain, draw, P)``, in blocks
    of ``block`` coordinates. NaNs (constant coordinates) are ignored; R̂ may be inf (chains
    constant at different values)."""
    worst = {"max_rhat": [], "min_ess_bulk": [], "min_ess_tail": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks: nothing varies
        for start in range(0, samples.shape[-1], block):
            part = samples[..., start:start + block]
            worst["max_rhat"].append(np.nanmax(rhat(part)))
            worst["min_ess_bulk"].append(np.nanmin(ess(part, "bulk")))
            worst["min_ess_tail"].append(np.nanmin(ess(part, "tail")))
        return {k: float(np.nanmax(v) if k == "max_rhat" else np.nanmin(v))
                for k, v in worst.items()}


def diagnostics(
    posterior, x=None, *, batch_size: int = 1024, draw_batch_size: int = 64
) -> dict[str, float]:
    """Convergence summary of a multi-chain posterior: worst R̂ and ESS.

    ``max_rhat``, ``min_ess_bulk`` and ``min_ess_tail`` range over the scalar weights that
    have a prior (rank-normalised split-R̂, bulk and tail ESS; Vehtari et al. 2021). With
    inputs ``x`` the same three, suffixed ``_pred``, range over the per-draw predictions at
    ``x`` (the mean for regression, class probabilities for classification). Weights of a
    network are only identified up to permutations of hidden units, so chains in different
    modes give a large weight R̂ even when their predictions agree: the predictive R̂ is the
    meaningful one (Izmailov et al. 2021, *What are Bayesian neural network posteriors really
    like?*).

    Parameters
    ----------
    posterior : Posterior
        At least 2 chains of 4 draws.
    x : array, optional
        Inputs at which to check the predictions.
    batch_size, draw_batch_size : int
        Chunk sizes over rows and draws (memory only).

    Returns
    -------
    dict
        ``num_chains``, ``num_draws``, ``max_rhat``, ``min_ess_bulk``, ``min_ess_tail`` and,
        with ``x``, ``max_rhat_pred``, ``min_ess_bulk_pred``, ``min_ess_tail_pred``. NaN
        where nothing varies (e.g. no weight has a prior).

    Raises
    ------
    ValueError
        Fewer than 2 chains or 4 draws per chain.
    """
    num_chains, num_draws = posterior.num_chains, posterior.num_draws
    if num_chains < 2 or num_draws < 4:
        raise ValueError(
            "diagnostics need at least 2 chains of 4 draws; "
            f"got {num_chains} chain(s) of {num_draws} draw(s)"
        )
    draws = flatten_paths(posterior.draws)
    mask = flatten_paths(posterior.model.bayesian_mask)
    columns = [np.asarray(v).reshape(num_chains, num_draws, -1)
               for p, v in draws.items() if mask.get(p, True)]
    out = {"num_chains": num_chains, "num_draws": num_draws}
    if columns:
        out.update(_extremes(np.concatenate(columns, axis=-1)))
    if x is not None:
        x = prepare_inputs(posterior.model, x)
        stats = _per_draw(posterior, _draw_stats, (x,), key=jax.random.key(0),
                          batch_size=batch_size, draw_batch_size=draw_batch_size)
        name = "probs" if posterior.model.likelihood.task == "classification" else "mean"
        pred = stats[name].reshape(num_chains, num_draws, -1)
        out.update({f"{k}_pred": v for k, v in _extremes(pred).items()})
    return out

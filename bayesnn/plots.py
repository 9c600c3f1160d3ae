"""Figures of predictive uncertainty and of sampler behaviour.

Every function returns a :class:`matplotlib.figure.Figure`; those taking ``ax`` draw into it
(and return its figure), so panels of several methods can sit side by side. Figures are
built without pyplot's global state (safe under the Agg backend and in threads); trace and
rank plots come from arviz-plots on a DataTree made by :func:`bayesnn.arviz.to_datatree`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from bayesnn import metrics

__all__ = [
    "plot_regression_bands",
    "plot_reliability",
    "plot_entropy_histograms",
    "plot_trace",
    "plot_rank",
    "plot_comparison",
]


def _axes(ax, figsize=(5.0, 3.5)):
    """``ax`` and its figure, or a fresh single-axes figure."""
    if ax is None:
        fig = Figure(figsize=figsize, layout="constrained")
        return fig, fig.add_subplot()
    return ax.figure, ax


def plot_regression_bands(
    pred,
    x,
    *,
    data=None,
    levels: Sequence[float] = (0.5, 0.9),
    output: int = 0,
    ax=None,
    title: str | None = None,
) -> Figure:
    """Predictive mean with central intervals over a one-dimensional input.

    Parameters
    ----------
    pred : RegressionPrediction
        Prediction at ``x`` (e.g. ``posterior.predict(x)``); intervals are Gaussian with the
        predictive ``std``.
    x : array, shape (N,) or (N, 1)
        Inputs, in any order (they are sorted).
    data : (x, y) pair, optional
        Observations drawn as points.
    levels : sequence of float
        Interval levels, widest drawn lightest.
    output : int
        Target column to draw.
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if x.shape[1] != 1:
        raise ValueError(f"regression bands need one input feature, got x of shape {x.shape}")
    order = np.argsort(x[:, 0])
    grid = x[order, 0]
    mean = np.asarray(pred.mean).reshape(len(x), -1)[order, output]
    std = np.asarray(pred.std).reshape(len(x), -1)[order, output]
    fig, ax = _axes(ax)
    for level in sorted(levels, reverse=True):
        lower, upper = metrics.gaussian_interval(mean, std, level)
        ax.fill_between(grid, lower, upper, color="C0", alpha=0.15 + 0.25 * (1 - level),
                        linewidth=0, label=f"{level:.0%} interval")
    ax.plot(grid, mean, color="C0", label="predictive mean")
    if data is not None:
        dx, dy = (np.asarray(a, dtype=np.float64) for a in data)
        ax.scatter(dx.reshape(len(dx), -1)[:, 0], dy.reshape(len(dy), -1)[:, output],
                   s=8, color="k", alpha=0.6, label="data", zorder=3)
    ax.set(xlabel="x", ylabel="y", title=title)
    ax.legend(loc="best", fontsize="small")
    return fig


def plot_reliability(
    probs,
    y,
    *,
    num_bins: int = 15,
    strategy: str = "uniform",
    ax=None,
    title: str | None = None,
) -> Figure:
    """Reliability diagram: accuracy against top-class confidence per bin, with the ECE.

    Bars span each bin, labelled at their foot with the bin's row count; dots mark its
    mean confidence and accuracy (empty bins are left out); a calibrated model's dots lie
    on the diagonal. The legend sits below the axes, off the data. ``probs`` may be a
    ``ClassificationPrediction``.
    """
    probs = getattr(probs, "probs", probs)
    curve = metrics.reliability_curve(probs, y, num_bins=num_bins, strategy=strategy)
    error = metrics.ece(probs, y, num_bins=num_bins, strategy=strategy)
    full = curve.count > 0
    fig, ax = _axes(ax, figsize=(4.0, 4.6))
    left, width = curve.edges[:-1][full], np.diff(curve.edges)[full]
    ax.bar(left, curve.accuracy[full], width=width, align="edge", color="C0", alpha=0.35,
           edgecolor="C0", label="accuracy per bin")
    for x, count in zip(left + width / 2, curve.count[full], strict=True):
        ax.annotate(str(int(count)), (x, 0.0), xytext=(0, 2), textcoords="offset points",
                    ha="center", va="bottom", fontsize="xx-small", rotation=90)
    ax.plot(curve.confidence[full], curve.accuracy[full], "o-", color="C0", markersize=3,
            label="(mean confidence, accuracy)")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="calibrated")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
           title=f"{title + ': ' if title else ''}ECE {error:.3f}")
    # below the axes, off the data; the numbers at the bars' feet are the rows per bin
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize="x-small",
              frameon=False, title="numbers: rows per bin", title_fontsize="x-small")
    return fig


def plot_entropy_histograms(
    score_in,
    score_out,
    *,
    bins: int = 30,
    xlabel: str = "predictive entropy (nats)",
    ax=None,
    title: str | None = None,
) -> Figure:
    """Histograms of an uncertainty score in- and out-of-distribution, with the OOD AUROC.

    Pass predictive entropies (``pred.entropy``) or mutual informations (``pred.epistemic``,
    with ``xlabel`` to match).
    """
    score_in, score_out = np.ravel(score_in), np.ravel(score_out)
    edges = np.histogram_bin_edges(np.concatenate([score_in, score_out]), bins=bins)
    fig, ax = _axes(ax)
    ax.hist(score_in, bins=edges, density=True, alpha=0.6, color="C0", label="in-distribution")
    ax.hist(score_out, bins=edges, density=True, alpha=0.6, color="C3",
            label="out-of-distribution")
    auc = metrics.ood_auroc(score_in, score_out)
    ax.set(xlabel=xlabel, ylabel="density",
           title=f"{title + ': ' if title else ''}AUROC {auc:.3f}")
    ax.legend(loc="best", fontsize="small")
    return fig


def _first_coords(dt, group: str, var_names, max_coords: int) -> dict:
    """The first ``max_coords`` values of every non-sample dim of ``var_names`` in ``group``."""
    ds = dt[group].to_dataset()
    names = list(ds.data_vars) if var_names is None else list(var_names)
    dims = {d for name in names for d in ds[name].dims} - {"chain", "draw"}
    return {d: ds[d].values[:max_coords] for d in sorted(dims)}


def _arviz_figure(plot, dt, var_names, group, max_coords, kwargs) -> Figure:
    import matplotlib.pyplot as plt

    coords = _first_coords(dt, group, var_names, max_coords)
    collection = plot(dt, var_names=var_names, group=group, coords=coords,
                      backend="matplotlib", **kwargs)
    fig = collection.viz["figure"].item()
    plt.close(fig)  # arviz-plots opens it through pyplot; the figure lives on
    return fig


def plot_trace(dt, var_names=None, *, group: str = "posterior", max_coords: int = 2,
               **kwargs) -> Figure:
    """Trace and marginal density per chain (``arviz_plots.plot_trace_dist``).

    A network has too many weights to draw: each dim is cut to its first ``max_coords``
    entries. ``group="predictions"`` traces predictive draws instead. Extra keyword
    arguments go to arviz-plots.
    """
    import arviz_plots

    return _arviz_figure(arviz_plots.plot_trace_dist, dt, var_names, group, max_coords, kwargs)


def plot_rank(dt, var_names=None, *, group: str = "posterior", max_coords: int = 2,
              **kwargs) -> Figure:
    """Rank plots of chains (fractional rank ECDFs, ``arviz_plots.plot_rank``).

    Chains sampling the same distribution stay inside the envelope (Vehtari et al. 2021,
    §4.2). Dims are cut to their first ``max_coords`` entries as in :func:`plot_trace`.
    """
    import arviz_plots

    return _arviz_figure(arviz_plots.plot_rank, dt, var_names, group, max_coords, kwargs)


def plot_comparison(
    table: Mapping[str, Mapping[str, float]],
    metric: str,
    *,
    reference: float | None = None,
    ax=None,
    title: str | None = None,
) -> Figure:
    """Bar chart of one ``metric`` per method from ``{method: {metric: value}}``.

    The axis spans the values (and ``reference``), not 0: bars rise from its lower limit,
    so that close values look apart, and their labels carry as many significant digits
    as it takes to tell distinct values apart (at least 3). ``reference`` draws a dashed
    line at a nominal value (0.9 for a 90% interval's coverage). Methods without a finite
    value are shown empty, labelled "n/a".
    """
    methods = list(table)
    values = np.array([float(table[m].get(metric, np.nan)) for m in methods])
    fig, ax = _axes(ax, figsize=(max(3.0, 0.9 * len(methods) + 1.5), 3.0))
    positions = np.arange(len(methods))
    finite = np.isfinite(values)
    shown = np.append(values[finite], [] if reference is None else [reference])
    lo, hi = _span(shown)
    ax.bar(positions, np.where(finite, values - lo, 0.0), bottom=lo,
           color=[f"C{i % 10}" for i in positions])
    digits = _digits(values[finite])
    for pos, value, ok in zip(positions, values, finite, strict=True):
        ax.annotate(f"{value:.{digits}g}" if ok else "n/a", (pos, value if ok else lo),
                    xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                    fontsize="small")
    if reference is not None:
        ax.axhline(reference, color="k", linestyle="--", linewidth=1)
        ax.annotate(f"nominal {reference:g}", (1.0, reference), xycoords=("axes fraction", "data"),
                    xytext=(-2, 2), textcoords="offset points", ha="right", va="bottom",
                    fontsize="x-small")
    ax.set_ylim(lo, hi)
    ax.set_xticks(positions, methods, rotation=30 if len(methods) > 4 else 0)
    ax.set(ylabel=metric, title=title or metric)
    return fig


def _span(values: np.ndarray) -> tuple[float, float]:
    """Axis limits around ``values``: their range with a margin below and room above for
    the labels (a tenth of the values' size where they are all equal)."""
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    width = hi - lo or (abs(hi) / 10 or 1.0)
    return lo - 0.25 * width, hi + 0.35 * width


def _digits(values: np.ndarray, least: int = 3, most: int = 8) -> int:
    """Significant digits that print distinct ``values`` distinctly."""
    distinct = np.unique(values)
    for digits in range(least, most):
        if len({f"{v:.{digits}g}" for v in distinct}) == len(distinct):
            return digits
    return most

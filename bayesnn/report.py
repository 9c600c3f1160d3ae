"""Side-by-side reports: several posteriors (and point estimates) on the same test data.

``compare({"MAP": p0, "SGLD": p1}, test, ood)`` evaluates each method's posterior predictive
and returns a :class:`Report`: one row per method, point estimates first, with fit, calibration,
out-of-distribution detection, fit time and convergence columns, as Markdown, JSON and figures.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from bayesnn import metrics, plots
from bayesnn.arviz import diagnostics
from bayesnn.data import Dataset
from bayesnn.inference.base import prepare_data
from bayesnn.posterior import Posterior

__all__ = ["Report", "compare", "COLUMNS"]

COLUMNS = {
    "nll": "negative log posterior-predictive density per test example (lower is better)",
    "accuracy": "fraction of test labels that are the most probable class",
    "brier": "multi-class Brier score (lower is better)",
    "ece": "expected calibration error, equal-width bins (lower is better)",
    "rmse": "root mean squared error of the predictive mean",
    "coverage": "coverage_<p>: fraction of test targets in the central p% predictive interval "
                "(Gaussian with the predictive mean and std; ideal p/100)",
    "auroc_entropy": "OOD detection AUROC from predictive entropy (regression: of the "
                     "moment-matched Gaussian)",
    "auroc_mi": "OOD detection AUROC from mutual information, the epistemic part",
    "seconds": "fit time in seconds, every fit the method needs (a MAP warm start too)",
    "min_ess": "smallest bulk ESS over the weights",
    "max_rhat": "largest R-hat over the weights (large for networks whose chains sit in "
                "permuted modes)",
    "min_ess_pred": "smallest bulk ESS over test predictions",
    "max_rhat_pred": "largest R-hat over test predictions (want < 1.01)",
}


def _column_key(column: str) -> str:
    return "coverage" if column.startswith("coverage_") else column


def _uncertainty_scores(task: str, pred) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (predictive entropy, mutual information) of a prediction."""
    if task == "classification":
        return np.asarray(pred.entropy), np.asarray(pred.epistemic)
    return (metrics.gaussian_entropy(pred.std),
            metrics.gaussian_mutual_information(pred.std, pred.aleatoric_std))


def _format(column: str, value: float) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if column == "seconds":
        return f"{value:.1f}"
    if column.startswith("min_ess"):
        return f"{value:.0f}"
    return f"{value:.4g}"


@dataclass(repr=False)
class Report:
    """The result of :func:`compare`.

    Attributes
    ----------
    task : {"regression", "classification"}
    table : dict
        ``{method: {column: value}}`` in row order (point estimates first); see
        :data:`COLUMNS` for what each column means.
    test : Dataset
        The checked test data.
    predictions, ood_predictions : dict
        Each method's predictive summary on the test and OOD inputs.
    levels : tuple of float
        Interval levels of the regression coverage columns and bands.
    num_bins : int
        Bins of the ECE and reliability diagrams.
    num_ood : int
        Number of out-of-distribution inputs (0: none given).
    """

    task: str
    table: dict[str, dict[str, float]]
    test: Dataset
    predictions: dict[str, Any]
    ood_predictions: dict[str, Any] = field(default_factory=dict)
    levels: tuple[float, ...] = (0.5, 0.9)
    num_bins: int = 15
    num_ood: int = 0

    def __repr__(self) -> str:
        return f"Report(task={self.task!r}, methods={self.methods}, columns={self.columns})"

    @property
    def methods(self) -> list[str]:
        return list(self.table)

    @property
    def columns(self) -> list[str]:
        """Columns present in any row, in :data:`COLUMNS` order."""
        present = list(dict.fromkeys(c for row in self.table.values() for c in row))
        return sorted(present, key=lambda c: list(COLUMNS).index(_column_key(c)))

    def to_markdown(self) -> str:
        """The table as Markdown, with a line per column explaining it."""
        cols = self.columns
        lines = [
            "# Uncertainty report",
            "",
            f"{self.task.capitalize()} on {len(self.test.x)} test examples"
            + (f", {self.num_ood} out-of-distribution inputs" if self.num_ood else "")
            + ". Point estimates (a single draw) come first.",
            "",
            "| method | " + " | ".join(cols) + " |",
            "|:--|" + "--:|" * len(cols),
        ]
        for method, row in self.table.items():
            cells = [_format(c, row.get(c, float("nan"))) for c in cols]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        keys = dict.fromkeys(_column_key(c) for c in cols)
        lines += ["", *(f"- **{k}**: {COLUMNS[k]}" for k in keys)]
        return "\n".join(lines) + "\n"

    _repr_markdown_ = to_markdown

    def to_dict(self) -> dict:
        """JSON-ready summary: task, sizes, column descriptions and rows (NaN as None)."""
        rows = [
            {"method": m, **{c: (float(v) if math.isfinite(v) else None) for c, v in r.items()}}
            for m, r in self.table.items()
        ]
        return {"task": self.task, "num_test": len(self.test.x), "num_ood": self.num_ood,
                "columns": {c: COLUMNS[_column_key(c)] for c in self.columns}, "rows": rows}

    def figures(self) -> dict[str, Figure]:
        """Figures by file stem: the comparison bar charts, reliability diagrams
        (classification) or predictive bands (regression on one input feature), and
        uncertainty histograms in- vs out-of-distribution when OOD inputs were given.
        Methods sit side by side, point estimates first."""
        figs = {"comparison": self._comparison_figure()}
        if self.task == "classification":
            figs["reliability"] = self._panels(
                lambda m, ax: plots.plot_reliability(
                    self.predictions[m], self.test.y, num_bins=self.num_bins, ax=ax, title=m))
        elif np.prod(self.test.x.shape[1:]) == 1:
            figs["bands"] = self._panels(
                lambda m, ax: plots.plot_regression_bands(
                    self.predictions[m], self.test.x, data=self.test, levels=self.levels,
                    ax=ax, title=m))
        if self.ood_predictions:
            figs["ood"] = self._ood_figure()
        return figs

    def save(self, directory) -> Path:
        """Write ``report.md``, ``report.json`` and one PNG per figure into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        names = []
        for stem, fig in self.figures().items():
            fig.savefig(directory / f"{stem}.png", dpi=110, bbox_inches="tight")
            names.append(f"{stem}.png")
        md = self.to_markdown() + "\n## Figures\n\n" + "\n\n".join(
            f"![{n[:-4]}]({n})" for n in names) + "\n"
        (directory / "report.md").write_text(md)
        (directory / "report.json").write_text(
            json.dumps({**self.to_dict(), "figures": names}, indent=2, allow_nan=False))
        return directory

    # -- figures ---------------------------------------------------------------------------

    def _grid(self, rows: int, cols: int, size=(3.6, 3.2)):
        fig = Figure(figsize=(size[0] * cols, size[1] * rows), layout="constrained")
        return fig, fig.subplots(rows, cols, squeeze=False)

    def _panels(self, draw) -> Figure:
        fig, axes = self._grid(1, len(self.methods))
        for method, ax in zip(self.methods, axes[0], strict=True):
            draw(method, ax)
        return fig

    def _comparison_figure(self) -> Figure:
        wanted = ["nll", "accuracy" if self.task == "classification" else "rmse",
                  "ece" if self.task == "classification" else "coverage_90", "auroc_mi"]
        shown = [c for c in wanted if c in self.columns]
        fig, axes = self._grid(1, len(shown), size=(max(3.0, 0.8 * len(self.methods) + 1.5), 3))
        for column, ax in zip(shown, axes[0], strict=True):
            plots.plot_comparison(self.table, column, ax=ax, reference=(
                int(column[9:]) / 100 if column.startswith("coverage_") else None))
        return fig

    def _ood_figure(self) -> Figure:
        fig, axes = self._grid(2, len(self.methods))
        labels = ("predictive entropy (nats)", "mutual information (nats)")
        for j, method in enumerate(self.methods):
            scores_in = _uncertainty_scores(self.task, self.predictions[method])
            scores_out = _uncertainty_scores(self.task, self.ood_predictions[method])
            for i, label in enumerate(labels):
                plots.plot_entropy_histograms(scores_in[i], scores_out[i], xlabel=label,
                                              ax=axes[i, j], title=method)
        return fig


def fit_seconds(info: Mapping) -> float:
    """Wall seconds of every fit a posterior needed: its own ``info["seconds"]`` and that
    of the MAP warm start in ``info["map_info"]`` (nested to any depth); NaN without any."""
    own = float(info.get("seconds", float("nan")))
    warm = info.get("map_info")
    if isinstance(warm, Mapping):
        before = fit_seconds(warm)
        own = before if np.isnan(own) else own + np.nan_to_num(before)
    return own


def compare(
    posteriors: Mapping[str, Posterior],
    test,
    ood=None,
    *,
    levels: Sequence[float] = (0.5, 0.9),
    num_bins: int = 15,
    diagnostic_rows: int = 256,
    batch_size: int = 1024,
    draw_batch_size: int = 64,
) -> Report:
    """Evaluate several posteriors side by side on the same test data.

    Parameters
    ----------
    posteriors : mapping of str to Posterior
        ``{"MAP": map_posterior, "SGLD": sgld_posterior, ...}``, all regression or all
        classification. Point estimates (a single draw) are listed first, the others keep
        their order.
    test : Dataset or (x, y)
        Test data.
    ood : array or Dataset, optional
        Out-of-distribution inputs: adds the OOD-detection AUROC columns (OOD inputs are the
        positives, scored by predictive entropy and by mutual information).
    levels : sequence of float
        Levels of the regression interval-coverage columns (Gaussian central intervals from
        the predictive mean and std), e.g. ``coverage_90``.
    num_bins : int
        Equal-width bins of the ECE.
    diagnostic_rows : int
        Test rows used for the predictive R̂ and ESS of posteriors with several chains.
    batch_size, draw_batch_size : int
        Chunk sizes over rows and draws (memory only).

    Returns
    -------
    Report
    """
    if not isinstance(posteriors, Mapping) or not posteriors:
        raise TypeError("posteriors must be a non-empty mapping {name: Posterior}")
    for name, post in posteriors.items():
        if not isinstance(post, Posterior):
            raise TypeError(f"posteriors[{name!r}] is a {type(post).__name__}, not a Posterior")
    tasks = {post.model.likelihood.task for post in posteriors.values()}
    if len(tasks) != 1:
        raise ValueError(f"cannot compare regression with classification posteriors: {tasks}")
    task = tasks.pop()
    for level in levels:
        if not 0 < level < 1:
            raise ValueError(f"levels must lie in (0, 1), got {level}")
    ood_x = None if ood is None else np.asarray(ood.x if isinstance(ood, Dataset) else ood)
    chunks = dict(batch_size=batch_size, draw_batch_size=draw_batch_size)

    order = sorted(posteriors, key=lambda m: posteriors[m].num_samples > 1)
    table, preds, ood_preds, data = {}, {}, {}, None
    for method in order:
        post = posteriors[method]
        data = prepare_data(post.model, test, name="test")
        pred = preds[method] = post.predict(data.x, **chunks)
        row = {"nll": -float(np.mean(post.log_predictive_density(data.x, data.y, **chunks)))}
        if task == "classification":
            row.update(accuracy=metrics.accuracy(pred.probs, data.y),
                       brier=metrics.brier(pred.probs, data.y),
                       ece=metrics.ece(pred.probs, data.y, num_bins=num_bins))
        else:
            row["rmse"] = metrics.rmse(pred.mean, data.y)
            for level in levels:
                interval = metrics.gaussian_interval(pred.mean, pred.std, level)
                row[f"coverage_{round(100 * level)}"] = metrics.interval_coverage(
                    interval, data.y)
        if ood_x is not None:
            ood_preds[method] = post.predict(ood_x, **chunks)
            scores_in = _uncertainty_scores(task, pred)
            scores_out = _uncertainty_scores(task, ood_preds[method])
            row["auroc_entropy"] = metrics.ood_auroc(scores_in[0], scores_out[0])
            row["auroc_mi"] = metrics.ood_auroc(scores_in[1], scores_out[1])
        row["seconds"] = fit_seconds(post.info)
        if post.num_chains >= 2 and post.num_draws >= 4:
            diag = diagnostics(post, data.x[:diagnostic_rows], **chunks)
            row.update(min_ess=diag.get("min_ess_bulk", float("nan")),
                       max_rhat=diag.get("max_rhat", float("nan")),
                       min_ess_pred=diag["min_ess_bulk_pred"],
                       max_rhat_pred=diag["max_rhat_pred"])
        table[method] = row
    return Report(task, table, data, preds, ood_preds, tuple(levels), num_bins,
                  0 if ood_x is None else len(ood_x))

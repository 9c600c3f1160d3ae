import jax
import numpy as np
import pytest
from flax import nnx
from matplotlib.figure import Figure

import bayesnn as bnn
from bayesnn import plots
from bayesnn.likelihoods import ClassificationPrediction, RegressionPrediction

RNG = np.random.default_rng(0)


def _png(fig, path) -> int:
    assert isinstance(fig, Figure)
    fig.savefig(path, dpi=60)
    return path.stat().st_size


@pytest.fixture(scope="module")
def tree():
    """A DataTree with only a posterior group: no network evaluation needed."""
    model = bnn.BNN(bnn.models.MLP(1, (3,), 1, rngs=nnx.Rngs(0)))
    draws = jax.tree.map(
        lambda a: RNG.normal(size=(2, 20) + a.shape).astype(np.float32), model.init_position
    )
    return bnn.Posterior(model, draws).to_arviz()


def test_regression_bands(tmp_path):
    x = RNG.uniform(-3, 3, (40, 1))
    pred = RegressionPrediction(np.sin(x), 0.2 + 0.1 * np.abs(x), 0.2 + 0 * x, 0.1 * np.abs(x))
    fig = plots.plot_regression_bands(pred, x, data=(x[:10], np.sin(x[:10])), title="toy")
    assert _png(fig, tmp_path / "bands.png") > 1000
    ax = fig.axes[0]
    assert len(ax.collections) == 3  # two interval bands and the data
    with pytest.raises(ValueError, match="one input feature"):
        plots.plot_regression_bands(pred, np.zeros((40, 2)))


def test_reliability_diagram_draws_into_a_given_axes(tmp_path):
    probs = RNG.dirichlet(np.ones(3), 300)
    y = RNG.integers(0, 3, 300)
    fig = Figure()
    left, right = fig.subplots(1, 2)
    pred = ClassificationPrediction(probs, None, None, None)
    assert plots.plot_reliability(pred, y, ax=left, title="MAP") is fig
    plots.plot_reliability(probs, y, ax=right, strategy="quantile", num_bins=5)
    assert left.get_title().startswith("MAP: ECE")
    assert _png(fig, tmp_path / "reliability.png") > 1000


def test_entropy_histograms(tmp_path):
    fig = plots.plot_entropy_histograms(RNG.uniform(0, 0.5, 100), RNG.uniform(0.3, 1.0, 50))
    assert "AUROC" in fig.axes[0].get_title()
    assert _png(fig, tmp_path / "entropy.png") > 1000


def test_comparison_chart(tmp_path):
    table = {"MAP": {"nll": 0.9}, "SGLD": {"nll": 0.5}, "VI": {"nll": float("nan")}, "X": {}}
    fig = plots.plot_comparison(table, "nll")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == list(table)
    assert _png(fig, tmp_path / "comparison.png") > 1000


@pytest.mark.parametrize("plot", [plots.plot_trace, plots.plot_rank])
def test_trace_and_rank_plots(plot, tree, tmp_path):
    fig = plot(tree, ["net.layers.0.kernel", "net.layers.1.bias"], max_coords=2)
    assert len(fig.axes) >= 3  # kernel cut to (1, 2) entries plus the bias
    assert _png(fig, tmp_path / "arviz.png") > 1000


def test_comparison_axis_shows_close_values_apart_with_their_digits():
    table = {"MAP": {"nll": 1.195}, "SGLD": {"nll": 1.196}}
    ax = plots.plot_comparison(table, "nll").axes[0]
    lo, hi = ax.get_ylim()
    assert 1.19 < lo < 1.195 and 1.196 < hi < 1.2  # not from 0
    assert {t.get_text() for t in ax.texts} == {"1.195", "1.196"}


def test_comparison_reference_line_is_within_the_axis():
    table = {"MAP": {"coverage_90": 0.62}, "SGLD": {"coverage_90": 0.71}}
    ax = plots.plot_comparison(table, "coverage_90", reference=0.9).axes[0]
    assert [line.get_ydata()[0] for line in ax.get_lines()] == [0.9]
    assert ax.get_ylim()[0] < 0.62 and ax.get_ylim()[1] > 0.9
    assert "nominal 0.9" in {t.get_text() for t in ax.texts}


def test_reliability_diagram_shows_bin_counts_and_its_legend_below_the_axes():
    probs = RNG.dirichlet(np.ones(3), 300)
    y = RNG.integers(0, 3, 300)
    ax = plots.plot_reliability(probs, y, num_bins=5, strategy="quantile").axes[0]
    assert sorted(int(t.get_text()) for t in ax.texts) == [60] * 5
    anchor = ax.get_legend().get_bbox_to_anchor().transformed(ax.transAxes.inverted())
    assert anchor.y1 < 0  # below the axes

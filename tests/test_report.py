import json

import jax
import numpy as np
import pytest
from flax import nnx

import bayesnn as bnn
from bayesnn import report

RNG = np.random.default_rng(0)
N = 30


def _model(likelihood, in_features, out):
    net = bnn.models.MLP(in_features, (4,), out, rngs=nnx.Rngs(0))
    return bnn.BNN(net, bnn.priors.Normal(1.0), likelihood)


def _posterior(model, num_chains, num_draws, seconds):
    keys = jax.random.split(jax.random.key(0), num_chains * num_draws)
    draws = jax.jit(jax.vmap(model.init_params))(keys)
    draws = jax.tree.map(
        lambda a: np.asarray(a).reshape((num_chains, num_draws) + a.shape[1:]), draws
    )
    return bnn.Posterior(model, draws, None, {"seconds": seconds})


def _point(posterior, seconds=1.0):
    """A point estimate: the first draw."""
    first = jax.tree.map(lambda a: a[:1, :1], posterior.draws)
    return bnn.Posterior(posterior.model, first, None, {"seconds": seconds})


@pytest.fixture(scope="module")
def regression():
    model = _model(bnn.likelihoods.Gaussian(scale=0.3), 1, 1)
    sgld = _posterior(model, 2, 10, 3.0)
    posteriors = {"SGLD": sgld, "MAP": _point(sgld)}
    x = RNG.uniform(-2, 2, (N, 1)).astype(np.float32)
    return report.compare(posteriors, (x, np.sin(x)), ood=4 * x)


@pytest.fixture(scope="module")
def classification():
    model = _model(bnn.likelihoods.Categorical(), 2, 3)
    vi = _posterior(model, 1, 8, 2.0)
    posteriors = {"MAP": _point(vi), "VI": vi}
    x = RNG.normal(size=(N, 2)).astype(np.float32)
    return report.compare(posteriors, bnn.data.Dataset(x, np.arange(N) % 3))


def test_regression_table(regression):
    assert regression.task == "regression"
    assert regression.methods == ["MAP", "SGLD"]  # the point estimate first
    assert regression.columns == [
        "nll", "rmse", "coverage_50", "coverage_90", "auroc_entropy", "auroc_mi", "seconds",
        "min_ess", "max_rhat", "min_ess_pred", "max_rhat_pred",
    ]
    map_row, sgld_row = regression.table["MAP"], regression.table["SGLD"]
    assert "min_ess" not in map_row and sgld_row["min_ess"] > 0  # only with several chains
    assert map_row["auroc_mi"] == 0.5  # a single draw has no epistemic uncertainty
    assert sgld_row["seconds"] == 3.0
    for row in (map_row, sgld_row):
        assert 0 <= row["coverage_50"] <= row["coverage_90"] <= 1
        assert np.isfinite(row["nll"]) and row["rmse"] > 0


def test_classification_table_and_markdown(classification):
    assert classification.methods == ["MAP", "VI"]
    assert classification.columns == ["nll", "accuracy", "brier", "ece", "seconds"]
    for row in classification.table.values():
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["ece"] <= 1 and 0 <= row["brier"] <= 2
    md = classification.to_markdown()
    lines = md.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| method"))
    assert lines[header] == "| method | nll | accuracy | brier | ece | seconds |"
    assert lines[header + 2].startswith("| MAP |") and lines[header + 3].startswith("| VI |")
    assert "**ece**" in md


@pytest.mark.parametrize("which, figures", [
    ("regression", {"comparison.png", "bands.png", "ood.png"}),
    ("classification", {"comparison.png", "reliability.png"}),
])
def test_save_writes_markdown_json_and_figures(which, figures, request, tmp_path):
    rep = request.getfixturevalue(which)
    rep.save(tmp_path)
    written = {p.name for p in tmp_path.iterdir()}
    assert written == figures | {"report.md", "report.json"}
    assert all((tmp_path / f).stat().st_size > 1000 for f in figures)
    data = json.loads((tmp_path / "report.json").read_text())
    assert [row["method"] for row in data["rows"]] == rep.methods
    assert set(data["figures"]) == figures
    md = (tmp_path / "report.md").read_text()
    assert all(f"]({f})" in md for f in figures)


def test_bad_inputs():
    models = [_model(bnn.likelihoods.Categorical(), 2, 3), _model(bnn.likelihoods.Gaussian(), 2, 1)]
    post, reg = (bnn.Posterior(m, jax.tree.map(lambda a: np.asarray(a)[None, None],
                                               m.init_position)) for m in models)
    data = (np.zeros((4, 2), np.float32), np.zeros(4, int))
    with pytest.raises(ValueError, match="regression with classification"):
        report.compare({"a": post, "b": reg}, data)
    with pytest.raises(TypeError, match="not a Posterior"):
        report.compare({"a": post, "b": object()}, data)
    with pytest.raises(TypeError, match="non-empty"):
        report.compare({}, data)


def test_seconds_count_every_fit_a_method_needs():
    assert report.fit_seconds({"seconds": 2.5, "map_info": {"seconds": 2.25}}) == 4.75
    assert report.fit_seconds({"seconds": 1.0, "map_info": {"seconds": 0.5,
                                                           "map_info": {"seconds": 0.25}}}) == 1.75
    assert report.fit_seconds({"seconds": 1.0}) == 1.0
    assert np.isnan(report.fit_seconds({}))


def test_comparison_figure_marks_nominal_coverage(regression):
    fig = regression.figures()["comparison"]
    coverage = next(ax for ax in fig.axes if ax.get_title() == "coverage_90")
    assert [line.get_ydata()[0] for line in coverage.get_lines()] == [0.9]

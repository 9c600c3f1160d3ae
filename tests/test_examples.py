"""Every example runs end to end with tiny sizes and writes what it promises.

Only the main demo and the MNIST example run by default; the others are marked slow
(`make test-all`): their cost is compilation, one program per method.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_regression_uncertainty(tmp_path):
    ex = _load("regression_uncertainty")
    summary = ex.main(ex.parse_args([
        "--out", str(tmp_path), "--n", "40", "--width", "10", "--epochs", "200",
        "--samples", "40", "--sgld-warmup", "500", "--thinning", "5", "--nuts-warmup", "50",
        "--no-progress",
    ]))
    assert set(summary) == {"MAP", "MeanFieldVI", "SGLD", "NUTS"}
    assert (tmp_path / "bands.png").stat().st_size > 0
    assert (tmp_path / "report" / "report.md").exists()
    # A point estimate has no epistemic uncertainty: its std is the noise everywhere.
    np.testing.assert_allclose(summary["MAP"]["std_in_gap"], 0.1, rtol=1e-5)


@pytest.mark.slow
def test_classification_uncertainty(tmp_path):
    ex = _load("classification_uncertainty")
    summary = ex.main(ex.parse_args([
        "--out", str(tmp_path), "--n", "100", "--width", "8", "--epochs", "20",
        "--members", "2", "--samples", "20", "--sgld-warmup", "100", "--thinning", "2",
        "--grid", "20", "--no-progress",
    ]))
    assert (tmp_path / "maps.png").stat().st_size > 0
    assert summary["MAP"]["mutual_information_far"] == pytest.approx(0.0, abs=1e-6)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_mnist_uncertainty_on_digits(tmp_path):
    ex = _load("mnist_uncertainty")
    ex.main(ex.parse_args([
        "--out", str(tmp_path), "--train-size", "300", "--test-size", "100", "--width", "16",
        "--epochs", "2", "--samples", "5", "--sgld-warmup", "20", "--thinning", "2",
        "--no-progress",
    ]))
    table = (tmp_path / "report.md").read_text()
    assert "auroc_mi" in table and "SGLD" in table


@pytest.mark.slow
def test_compare_samplers(tmp_path):
    ex = _load("compare_samplers")
    rep = ex.main(ex.parse_args([
        "--out", str(tmp_path), "--n", "20", "--width", "4", "--epochs", "50", "--members", "2",
        "--samples", "10", "--chains", "2", "--sgmcmc-warmup", "100", "--thinning", "2",
        "--nuts-warmup", "20", "--mclmc-warmup", "20", "--gibbs-warmup", "5", "--no-progress",
    ]))
    assert len(rep.methods) == 12
    assert (tmp_path / "comparison.png").stat().st_size > 0


@pytest.mark.slow
def test_transfer_learning_on_digits(tmp_path):
    ex = _load("transfer_learning")
    rep = ex.main(ex.parse_args([
        "--out", str(tmp_path), "--few", "40", "--base-epochs", "1", "--epochs", "2",
        "--samples", "4", "--sgld-warmup", "10", "--thinning", "2", "--no-progress",
    ]))
    assert len(rep.methods) == 8
    assert (tmp_path / "report.md").exists()


@pytest.mark.slow
def test_own_network(tmp_path):
    ex = _load("own_network")
    summary = ex.main(ex.parse_args([
        "--out", str(tmp_path), "--n", "40", "--width", "8", "--epochs", "50", "--samples", "8",
        "--sgld-warmup", "50", "--thinning", "2", "--no-progress",
    ]))
    assert set(summary) == {"MAP", "MCDropout", "SGLD"}
    # MAP without dropout at prediction is a point estimate: its std is the noise.
    np.testing.assert_allclose(summary["MAP"]["std_in_gap"], 0.1, rtol=1e-5)
    assert summary["MCDropout"]["std_in_gap"] > 0.1
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


@pytest.mark.slow
def test_posthoc_uncertainty(tmp_path):
    ex = _load("posthoc_uncertainty")
    summary = ex.main(ex.parse_args([
        "--out", str(tmp_path), "--n", "60", "--n-test", "40", "--width", "8",
        "--epochs", "20", "--samples", "10", "--swag-epochs", "3", "--rank", "3",
        "--members", "2", "--grid", "15", "--no-progress",
    ]))
    assert list(summary) == ["MAP", "Laplace", "SWAG", "Ensemble"]
    assert all(np.isfinite(row["nll"]) and 0 <= row["ece"] <= 1 for row in summary.values())
    assert (tmp_path / "maps.png").stat().st_size > 0
    assert "Laplace" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "summary.json").read_text()) == summary

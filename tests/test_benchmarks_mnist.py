"""Smoke test of benchmarks/mnist.py on a tiny synthetic MNIST-format ``.npz``."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from bayesnn.models import MLP

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import mnist  # noqa: E402 (benchmarks/mnist.py)


@pytest.fixture
def npz(tmp_path) -> Path:
    """Keras-layout MNIST stand-in: class k is a bright bar on row 2k + 4, over noise."""
    rng = np.random.default_rng(0)

    def images(n):
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 30, size=(n, 28, 28))
        x[np.arange(n), 2 * y + 4, 4:24] = 255
        return x.astype(np.uint8), y.astype(np.uint8)

    (x_train, y_train), (x_test, y_test) = images(400), images(100)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def test_mnist_benchmark_writes_scores_and_keeps_other_networks(npz, tmp_path, monkeypatch):
    tiny = ("MLP 784-16-10", lambda seed: MLP(784, (16,), 10, rngs=nnx.Rngs(seed)))
    monkeypatch.setitem(mnist.NETWORKS, "mlp", tiny)
    out = tmp_path / "results"
    out.mkdir()
    kept = {"network": "earlier run", "rows": [], "num_train": 1, "num_validation": 1,
            "num_val_eval": 1, "num_test": 1, "prior": "p", "started": "then"}
    (out / "mnist.json").write_text(json.dumps({"networks": {"cnn": kept}}))
    args = mnist.parse_args([
        "--data", str(npz), "--networks", "mlp", "--methods", "MAP-Adam", "SGLD",
        "--num-train", "400", "--validation", "100", "--num-val-eval", "50",
        "--prior-scale", "30", "--mlp-batch-size", "50", "--mlp-map-epochs", "5",
        "--mlp-adam-lr", "1e-2", "--mlp-sgmcmc-epochs", "1",
        "--mlp-warmup-epochs", "0.5", "--mlp-num-samples", "3", "--out", str(out),
    ])
    mnist.main(args)

    result = json.loads((out / "mnist.json").read_text())
    assert result["networks"]["cnn"] == kept
    net = result["networks"]["mlp"]
    assert (net["num_train"], net["num_validation"], net["num_test"]) == (300, 100, 100)
    rows = {r["method"]: r for r in net["rows"]}
    assert list(rows) == ["MAP-Adam", "SGLD"]
    assert rows["MAP-Adam"]["num_draws"] == 1 and rows["SGLD"]["num_draws"] == 3
    # SGLD's total time includes the MAP fit it starts from.
    assert rows["SGLD"]["total_seconds"] > rows["SGLD"]["fit_seconds"]
    for r in rows.values():
        assert r["test"]["error"] < 20.0  # the bars are easy to tell apart
        assert 0 < r["test"]["nll"] < np.log(10) and 0 <= r["test"]["ece"] <= 1
    assert set(net["goals"]) == {"sgld_error_le_map", "sgld_nll_below_map",
                                 "sgld_ece_below_map", "sgld_error_le_1.5"}
    table = (out / "mnist.md").read_text()
    assert "| SGLD | 3 |" in table and "Li et al. 2016" in table and "earlier run" in table


def test_samplers_need_the_map_network(npz, tmp_path):
    args = mnist.parse_args(["--data", str(npz), "--networks", "mlp", "--methods", "SGLD",
                             "--num-train", "200", "--validation", "50",
                             "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="MAP-Adam"):
        mnist.main(args)


def test_validation_must_leave_training_examples():
    with pytest.raises(SystemExit):
        mnist.parse_args(["--num-train", "100", "--validation", "100"])

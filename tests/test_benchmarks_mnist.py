"""Smoke test of benchmarks/mnist.py on a tiny synthetic MNIST-format ``.npz``."""

import json
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from bayesnn.models import MLP
from benchmarks import mnist, mnist_pool


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


@pytest.mark.slow
def test_mnist_benchmark_writes_scores_and_keeps_other_networks(npz, tmp_path, monkeypatch):
    """Also: two SGLD step sizes are piloted on validation, and a rerun with the same cache
    loads every fit instead of repeating it."""
    tiny = ("MLP 784-16-10", lambda seed: MLP(784, (16,), 10, rngs=nnx.Rngs(seed)))
    monkeypatch.setitem(mnist.NETWORKS, "mlp", tiny)
    out = tmp_path / "results"
    out.mkdir()
    kept = {"network": "earlier run", "rows": [], "num_train": 1, "num_validation": 1,
            "num_val_eval": 1, "num_test": 1, "prior": "p", "started": "then"}
    (out / "mnist.json").write_text(json.dumps({"networks": {"cnn": kept}}))
    args = mnist.parse_args([
        "--data", str(npz), "--networks", "mlp", "--methods", "MAP-Adam", "SGLD", "Ensemble",
        "--num-train", "400", "--validation", "100", "--num-val-eval", "50",
        "--prior-scale", "30", "--mlp-batch-size", "50", "--mlp-map-epochs", "5",
        "--mlp-adam-lr", "1e-2", "--mlp-sgmcmc-epochs", "1",
        "--mlp-warmup-epochs", "0.5", "--mlp-num-samples", "3", "--out", str(out),
        "--mlp-sgld-step", "1e-6", "1e-5", "--mlp-tune-warmup-epochs", "0.5",
        "--mlp-tune-epochs", "0.5", "--mlp-tune-num-samples", "3", "--bootstrap", "50",
        "--cache", str(tmp_path / "cache"), "--shift-angles", "90", "--save-probs",
        "--mlp-ensemble-size", "2",
    ])
    mnist.main(args)

    result = json.loads((out / "mnist.json").read_text())
    assert result["networks"]["cnn"] == kept
    net = result["networks"]["mlp"]
    assert (net["num_train"], net["num_validation"], net["num_test"]) == (300, 100, 100)
    rows = {r["method"]: r for r in net["rows"]}
    assert list(rows) == ["MAP-Adam", "SGLD", "Ensemble"]
    assert rows["MAP-Adam"]["num_draws"] == 1 and rows["SGLD"]["num_draws"] == 3
    # The ensemble trains from scratch, two members, each with its own early stopping.
    ensemble = rows["Ensemble"]
    assert ensemble["num_draws"] == 2 and len(ensemble["best_epoch"]) == 2
    assert ensemble["total_seconds"] == ensemble["fit_seconds"]
    assert set(ensemble["vs_map"]) == {"error", "nll", "ece", "ece_eq"}
    # SGLD's total time includes the MAP fit it starts from.
    assert rows["SGLD"]["total_seconds"] > rows["SGLD"]["fit_seconds"]
    for r in rows.values():
        assert r["test"]["error"] < 20.0  # the bars are easy to tell apart
        assert 0 < r["test"]["nll"] < np.log(10) and 0 <= r["test"]["ece"] <= 1
        assert set(r["test"]["se"]) == {"error", "nll", "ece", "ece_eq"}
        assert r["test_calibration"]["accuracy"] == pytest.approx(1 - r["test"]["error"] / 100)
    assert set(net["goals"]) == {"sgld_error_le_map", "sgld_nll_below_map",
                                 "sgld_ece_below_map", "sgld_error_le_1.5"}
    assert set(net["goals"].values()) <= {"yes", "no", "tie"}
    assert set(rows["SGLD"]["vs_map"]) == {"error", "nll", "ece", "ece_eq"}
    # Rotated by 90 degrees the bars stand upright: a covariate shift that costs accuracy.
    for r in rows.values():
        assert set(r["shifted"]) == {"rot90"} and r["shifted"]["rot90"]["error"] > 50
    assert "vs_map" in rows["SGLD"]["shifted"]["rot90"]
    assert "vs_map" not in rows["MAP-Adam"]["shifted"]["rot90"]
    with np.load(out / "mnist_probs.npz") as saved:
        assert sorted(saved.files) == ["mlp/Ensemble/rot90", "mlp/Ensemble/test",
                                       "mlp/MAP-Adam/rot90", "mlp/MAP-Adam/test",
                                       "mlp/SGLD/rot90", "mlp/SGLD/test", "y"]
        assert saved["mlp/SGLD/test"].shape == (100, 10) and saved["y"].shape == (100,)
        error = 100 * np.mean(saved["mlp/SGLD/rot90"].argmax(-1) != saved["y"])
        assert error == pytest.approx(rows["SGLD"]["shifted"]["rot90"]["error"], abs=1e-3)
    # Pilots are scored on validation only; the full chain continues the one of lowest
    # validation NLL, so its total time counts the MAP fit, that pilot and its own fit.
    pilots = net["tuning"]
    assert [p["step_size"] for p in pilots] == [1e-6, 1e-5]
    assert all("test" not in p and p["num_draws"] == 3 for p in pilots)
    best = min(pilots, key=lambda p: p["validation"]["nll"])
    sgld = rows["SGLD"]
    assert sgld["step_size"] == best["step_size"] and "step_size=1e-0" in sgld["config"]
    assert sgld["total_seconds"] == pytest.approx(
        rows["MAP-Adam"]["fit_seconds"] + best["fit_seconds"] + sgld["fit_seconds"], abs=0.3)
    table = (out / "mnist.md").read_text()
    assert "| SGLD | 3 |" in table and "Li et al. 2016" in table and "earlier run" in table
    assert "SGLD − MAP-Adam" in table and "Step-size pilots" in table
    assert "| rot90 | SGLD |" in table

    mnist.main(args)  # everything is in the cache: the same rows, no fit repeated
    again = json.loads((out / "mnist.json").read_text())["networks"]["mlp"]
    assert again["rows"] == net["rows"] and again["tuning"] == net["tuning"]


def test_bootstrap_standard_errors_are_binomial_and_paired():
    rng = np.random.default_rng(1)
    n, accuracy = 2000, 0.9
    y = rng.integers(0, 10, n)
    right = rng.uniform(size=n) < accuracy
    guess = np.where(right, y, (y + 1) % 10)
    probs = np.full((n, 10), 0.02 / 9)
    probs[np.arange(n), guess] = 0.98
    reps = mnist.bootstrap(probs, y, num_resamples=400)
    se = mnist.standard_errors(reps)
    binomial = 100 * np.sqrt(accuracy * (1 - accuracy) / n)
    assert se["error"] == pytest.approx(binomial, rel=0.15)
    assert se["nll"] > 0 and se["ece"] > 0
    # Another predictive of the same rows is scored on the same resamples: their difference
    # has a much smaller standard error than either alone.
    other = 0.99 * probs + 0.001
    paired = mnist.standard_errors(mnist.bootstrap(other, y, num_resamples=400), minus=reps)
    assert paired["error"] == 0 and paired["nll"] < se["nll"] / 3
    assert mnist.standard_errors(reps, minus=reps) == {"error": 0, "nll": 0, "ece": 0, "ece_eq": 0}


def _ninety_percent_right(n: int, seed: int):
    """Labels ``y``, guesses right 90% of the time, and ``probs(top)``: predictives that
    give each guess probability ``top`` and share the rest among the other nine classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    guess = np.where(rng.uniform(size=n) < 0.9, y, (y + 1) % 10)

    def probs(top):
        p = np.full((n, 10), (1 - top) / 9)
        p[np.arange(n), guess] = top
        return p

    return y, guess, probs


def test_calibration_tells_over_from_under_confidence():
    n = 1000
    y, guess, probs = _ninety_percent_right(n, seed=2)
    acc = float(np.mean(guess == y))
    over, under = mnist.calibration(probs(0.99), y), mnist.calibration(probs(0.7), y)
    assert over["overconfidence"] == pytest.approx(0.99 - acc, abs=1e-5)
    assert under["overconfidence"] == pytest.approx(0.7 - acc, abs=1e-5)
    assert over["top"] == {"share": 1.0, "confidence": 0.99, "accuracy": round(acc, 5)}
    assert over["rest"]["share"] == 0 and under["top"]["share"] == 0
    # The signed gap is the count-weighted mean of the per-bin gaps (ECE without |.|).
    bins = under["bins"]
    gaps = [c * (f - a) for c, f, a in zip(bins["count"], bins["confidence"], bins["accuracy"],
                                             strict=True) if c]
    assert sum(gaps) / n == pytest.approx(under["overconfidence"], abs=1e-4)
    assert sum(bins["count"]) == n


def test_fit_cache_tells_datasets_of_one_shape_apart(tmp_path):
    """Two datasets of the same shape, or one under another key, are separate fits; the
    same data, model, configuration and key load the saved posterior."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    a = mnist.bnn.data.Dataset(x, (x.sum(1) > 0).astype(np.int32))
    b = mnist.bnn.data.Dataset(x, 1 - a.y)  # the same shape and inputs, other labels
    model = mnist.bnn.BNN(MLP(3, (4,), 2, rngs=nnx.Rngs(0)), mnist.bnn.priors.Normal(1.0),
                          mnist.bnn.likelihoods.Categorical())
    method = mnist.bnn.MAP("adam", 0.05, epochs=20, batch_size=16)
    cache = tmp_path / "cache"
    cache.mkdir()

    def fit(data, key=0):
        return mnist.fit_cached(cache, "tiny|MAP", model, data, method, key, False)

    post_a, run_a = fit(a)
    post_b, run_b = fit(b)
    _, run_key = fit(a, key=1)
    assert len({run_a, run_b, run_key}) == 3
    assert len(list(cache.glob("*.posterior"))) == 3
    # Fitted on opposite labels, the two networks predict opposite classes.
    pred_a = np.asarray(post_a.predict(x).probs).argmax(-1)
    pred_b = np.asarray(post_b.predict(x).probs).argmax(-1)
    assert np.mean(pred_a == a.y) > 0.75 and np.mean(pred_b == b.y) > 0.75
    again, run_again = fit(a)  # loaded, not refitted: the saved fit's own time
    assert run_again == run_a
    assert again.info["benchmark_seconds"] == post_a.info["benchmark_seconds"]
    np.testing.assert_array_equal(np.asarray(again.predict(x).probs),
                                  np.asarray(post_a.predict(x).probs))
    other_model = mnist.bnn.BNN(MLP(3, (4,), 2, rngs=nnx.Rngs(1)), model.prior, model.likelihood)
    assert mnist.fit_cached(cache, "tiny|MAP", other_model, a, method, 0, False)[1] != run_a


def test_samplers_need_the_map_network(npz, tmp_path):
    args = mnist.parse_args(["--data", str(npz), "--networks", "mlp", "--methods", "SGLD",
                             "--num-train", "200", "--validation", "50",
                             "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="MAP-Adam"):
        mnist.main(args)


def test_validation_must_leave_training_examples():
    with pytest.raises(SystemExit):
        mnist.parse_args(["--num-train", "100", "--validation", "100"])


def test_rotated_turns_rows_into_columns():
    x = np.zeros((1, 5, 5, 1), np.float32)
    x[0, 1, :, 0] = 1.0  # a bar on row 1
    turned = mnist.rotated(x, 90.0)  # counter-clockwise: row 1 becomes column 1
    np.testing.assert_allclose(turned[0, :, :, 0], x[0, :, :, 0].T, atol=1e-5)
    np.testing.assert_array_equal(mnist.rotated(x, 0.0), x)


def test_lower_needs_two_standard_errors():
    assert mnist.lower(-0.3, 0.1) == "yes" and mnist.lower(0.3, 0.1) == "no"
    assert mnist.lower(-0.19, 0.1) == "tie" and mnist.lower(0.0, 0.0) == "tie"


def test_pool_averages_runs_and_calls_a_clear_gain_lower(tmp_path):
    y, _, probs = _ninety_percent_right(3000, seed=3)
    folders = []
    sharpness = (0.99, 0.989, 0.991)  # MAP over-confident; "SGLD" near calibrated
    for i, sharp in enumerate(sharpness):
        folder = tmp_path / f"seed{i}"
        folder.mkdir()
        np.savez(folder / "mnist_probs.npz", y=y, **{
            "cnn/MAP-Adam/test": probs(sharp), "cnn/SGLD/test": probs(0.9 + 0.002 * i),
            "cnn/MAP-Adam/rot30": probs(0.5), "cnn/SGLD/rot30": probs(0.5)})
        folders.append(folder)
    result = mnist_pool.main(mnist_pool.parse_args(
        [str(f) for f in folders] + ["--bootstrap", "50", "--out", str(tmp_path / "out")]))
    rows = {(r["test_set"], r["metric"]): r for r in result["rows"]}
    assert {r["method"] for r in result["rows"]} == {"SGLD"}
    ece = rows["test", "ece"]
    direct = [mnist.metrics.ece(probs(0.9 + 0.002 * i), y) - mnist.metrics.ece(probs(s), y)
              for i, s in enumerate(sharpness)]
    np.testing.assert_allclose(ece["per_run"], direct, atol=1e-5)
    assert ece["mean"] == pytest.approx(np.mean(direct), abs=1e-5)
    assert ece["se"] == pytest.approx(np.hypot(ece["se_test"], ece["se_seeds"]), abs=1e-5)
    assert ece["verdict"] == "lower" and rows["test", "nll"]["verdict"] == "lower"
    # The same predictive for both: no difference, no spread, a tie.
    same = rows["rot30", "ece"]
    assert same["mean"] == 0 and same["se"] == 0 and same["verdict"] == "tie"
    assert "| cnn | SGLD | test | ece |" in (tmp_path / "out" / "mnist_pooled.md").read_text()

    np.savez(folders[1] / "mnist_probs.npz", y=(y + 1) % 10, **{"cnn/SGLD/test": probs(0.9)})
    with pytest.raises(ValueError, match="labels differ"):
        mnist_pool.load_runs(folders)


def test_pool_critical_value_follows_student_t():
    assert mnist_pool.critical_value(0.0, 1.0, 2) == pytest.approx(12.706, abs=1e-3)
    assert mnist_pool.critical_value(0.0, 1.0, 5) == pytest.approx(2.776, abs=1e-3)
    assert mnist_pool.critical_value(1.0, 0.0, 5) == pytest.approx(1.960, abs=1e-3)
    # Equal parts, five runs: Welch–Satterthwaite gives (1 + 1)² / (1 / 4) = 16 dof.
    assert mnist_pool.critical_value(1.0, 1.0, 5) == pytest.approx(2.120, abs=1e-3)
    assert mnist_pool.verdict(-3.0, 1.0, 2.776) == "lower"
    assert mnist_pool.verdict(-2.5, 1.0, 2.776) == "tie"
    assert mnist_pool.verdict(3.0, 1.0, 2.776) == "higher"
    assert mnist_pool.verdict(-3.0, 1.0, float("nan")).startswith("undecided")


@pytest.mark.slow  # compiles MAP, Laplace and SWAG: about 2 min on a loaded 2-core CPU
def test_posthoc_methods_start_from_the_map_network(npz, tmp_path, monkeypatch):
    tiny = ("MLP 784-16-10", lambda seed: MLP(784, (16,), 10, rngs=nnx.Rngs(seed)))
    monkeypatch.setitem(mnist.NETWORKS, "mlp", tiny)
    args = mnist.parse_args([
        "--data", str(npz), "--networks", "mlp", "--methods", "MAP-Adam", "Laplace", "SWAG",
        "--num-train", "400", "--validation", "100", "--num-val-eval", "50",
        "--prior-scale", "30", "--mlp-batch-size", "50", "--mlp-map-epochs", "3",
        "--mlp-adam-lr", "1e-2", "--mlp-num-samples", "3", "--mlp-swag-epochs", "2",
        "--bootstrap", "20", "--out", str(tmp_path)])
    net = mnist.main(args)["networks"]["mlp"]
    rows = {r["method"]: r for r in net["rows"]}
    assert rows["Laplace"]["num_draws"] == rows["SWAG"]["num_draws"] == 3
    assert 0 < rows["Laplace"]["laplace_seconds"] <= rows["Laplace"]["fit_seconds"]
    assert rows["Laplace"]["prior_precision"] > 0
    for m in ("Laplace", "SWAG"):
        assert rows[m]["total_seconds"] > rows[m]["fit_seconds"]  # the MAP fit included
        assert rows[m]["test"]["error"] < 20.0 and set(rows[m]["vs_map"]) >= {"nll", "ece"}
    goals = net["goals"]
    assert {goals[f"{m}_{k}_below_map"] for m in ("laplace", "swag") for k in ("nll", "ece")} \
        <= {"yes", "no", "tie"}
    ratio = rows["Laplace"]["fit_seconds"] / rows["MAP-Adam"]["fit_seconds"]
    assert goals["laplace_cost_le_20pct"].endswith(f"({ratio:.3f})")
    assert "Laplace − MAP-Adam" in (tmp_path / "mnist.md").read_text()

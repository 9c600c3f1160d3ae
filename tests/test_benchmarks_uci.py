"""Smoke test of benchmarks/uci.py on a synthetic dataset in the UCI layout."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from benchmarks import uci

TINY = {
    "prior": {"FanInNormal": 1.0},
    "noise": {"init_scale": 0.5},
    "MAP": {"optimizer": "adam", "learning_rate": 1e-2, "epochs": 5, "batch_size": 16},
    "SGLD": {"lr": 0.1, "batch_size": 16, "num_warmup": 20, "num_samples": 5,
             "thinning": 2, "init": "map"},
}


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A dataset ``toy`` (3 features, 8 hidden units, 2 splits) whose target is in 1000s."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    y = 1000.0 + 300.0 * (x[:, :1] ** 2 + x[:, 1:2]) + 30.0 * rng.normal(size=(50, 1))
    folder = tmp_path / "uci" / "toy"
    folder.mkdir(parents=True)
    np.savetxt(folder / "data.txt", np.hstack([x, y]))
    np.savetxt(folder / "index_features.txt", [0, 1, 2], fmt="%d")
    np.savetxt(folder / "index_target.txt", [3], fmt="%d")
    (folder / "n_hidden.txt").write_text("8\n")
    for split in range(2):
        perm = np.random.default_rng(split).permutation(50)
        np.savetxt(folder / f"index_train_{split}.txt", perm[:45], fmt="%d")
        np.savetxt(folder / f"index_test_{split}.txt", perm[45:], fmt="%d")
    return tmp_path / "uci"


def test_test_ll_is_on_the_original_scale(data_dir, monkeypatch):
    monkeypatch.setattr(uci, "SETTINGS", TINY)
    assert uci.num_hidden(data_dir, "toy") == 8
    train, test = uci.load_uci(data_dir, "toy", 0)
    train_s, test_s, sy = uci.standardize(train, test)
    model = uci.make_model(3, 8)
    post = uci.bnn.fit(model, train_s, uci.map_config(), key=0, progress=False)
    result = uci.evaluate(post, test_s, sy)
    f = np.asarray(post.predict(test_s.x).mean)
    sigma = float(np.exp(post.point()["lik"]["log_scale"]))
    loc, scale = sy.inverse_transform(f), sigma * sy.std
    expected = stats.norm(loc, scale).logpdf(test.y).mean()
    np.testing.assert_allclose(result["test_ll"], expected, rtol=1e-4)
    np.testing.assert_allclose(result["rmse"], np.sqrt(np.mean((loc - test.y) ** 2)), rtol=1e-4)


def test_main_writes_results_and_resumes(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(uci, "SETTINGS", TINY)
    argv = ["--data-dir", str(data_dir), "--methods", "MAP", "SGLD", "--splits", "1",
            "--cache-dir", "", "--out", str(tmp_path / "out")]
    results = uci.main(uci.parse_args(argv))
    rows = {(r["dataset"], r["method"], r["split"]): r for r in results["runs"]}
    assert set(rows) == {("toy", "MAP", 0), ("toy", "SGLD", 0)}
    assert all(np.isfinite([r["rmse"], r["test_ll"]]).all() for r in rows.values())
    assert rows[("toy", "MAP", 0)]["rmse"] < 1000  # original units, not standardised
    saved = json.loads((tmp_path / "out" / "uci.json").read_text())
    assert saved["settings"] == TINY and saved["commit"]
    table = (tmp_path / "out" / "uci.md").read_text()
    assert "| toy |" in table and "SGLD" in table
    capsys.readouterr()
    # A second run with one more split only fits split 1.
    results = uci.main(uci.parse_args([a if a != "1" else "2" for a in argv]))
    assert len(results["runs"]) == 4
    assert [json.loads(line)["split"] for line in capsys.readouterr().out.splitlines()] == [1, 1]


def test_summary_and_published_columns():
    rows = [{"dataset": "bostonHousing", "method": "NUTS", "split": s, "rmse": 3.0 + s,
             "test_ll": -2.0 - s, "seconds": 1.0} for s in range(3)]
    summary = uci.summarize(rows)["bostonHousing"]["NUTS"]
    assert summary["splits"] == 3
    np.testing.assert_allclose(summary["test_ll"], (-3.0, 1 / np.sqrt(3)))
    md = uci.markdown({"runs": rows, "commit": "abc", "machine": {}, "settings": {}})
    assert "| boston | -3.00 ± 0.58 (3) | -2.90 | -2.57 | -2.46 | -2.41 |" in md
    assert "NUTS beats MC dropout: boston no" in md


def test_calibration_error_of_uniform_and_degenerate_pit():
    uniform = (np.arange(1000) + 0.5) / 1000
    assert uci.calibration_error(uniform) < 1e-3
    # Every target at the predictive median: the share below level p jumps from 0 to 1.
    levels = np.arange(1, 100) / 100
    expected = np.mean(np.abs((levels >= 0.5) - levels))
    np.testing.assert_allclose(uci.calibration_error(np.full(50, 0.5)), expected)
    assert uci.calibration_error(np.full(50, 0.5)) > 0.2


def test_predictive_pit_is_the_mixture_over_draws(data_dir, monkeypatch):
    monkeypatch.setattr(uci, "SETTINGS", TINY)
    train, test = uci.load_uci(data_dir, "toy", 0)
    train, test, _ = uci.standardize(train, test)
    post = uci.bnn.fit(uci.make_model(3, 8), train, uci.map_config(), key=0, progress=False)
    draws = uci.jax.tree.map(lambda a: np.concatenate([a, a + 0.1], 1), post.draws)
    mix = uci.bnn.Posterior(post.model, draws)
    sigma = np.exp(np.asarray(draws["lik"]["log_scale"]))[0]
    f = [np.asarray(mix.model.apply(mix.point(0, s), test.x)) for s in range(2)]
    expected = np.mean([stats.norm(f[s], sigma[s]).cdf(test.y) for s in range(2)], 0)
    np.testing.assert_allclose(uci.predictive_pit(mix, test), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # compiles MAP, Laplace and SWAG: about 2 min on a loaded 2-core CPU
def test_posthoc_methods_start_from_the_map_fit(data_dir, monkeypatch):
    tiny = TINY | {"Laplace": {"subset": "last_layer", "hessian": "kron",
                               "prior_precision": "marglik", "noise": "map",
                               "num_samples": 10},
                   "SWAG": {"epochs": 3, "batch_size": 16, "rank": 3, "num_samples": 5}}
    monkeypatch.setattr(uci, "SETTINGS", tiny)
    rows = {r["method"]: r for r in uci.run_split(data_dir, "toy", 0, ["MAP", "Laplace", "SWAG"])}
    assert rows["Laplace"]["map_seconds"] == rows["SWAG"]["map_seconds"] == rows["MAP"]["seconds"]
    assert 0 < rows["Laplace"]["laplace_seconds"] <= rows["Laplace"]["seconds"]
    assert rows["Laplace"]["prior_precision"] > 0
    assert all(0 <= r["ece"] <= 0.5 and np.isfinite(r["test_ll"]) for r in rows.values())
    # Laplace with noise='map' keeps MAP's noise scale.
    np.testing.assert_allclose(rows["Laplace"]["noise_scale"], rows["MAP"]["noise_scale"],
                               rtol=1e-5)
    md = uci.markdown({"runs": [r | {"split": s} for s in (0, 1) for r in rows.values()],
                       "commit": "abc", "machine": {}, "settings": {}})
    assert "Laplace − MAP: test LL" in md and "Regression calibration error" in md


def test_paired_differences_are_per_split():
    rows = [{"dataset": "d", "method": m, "split": s, "ece": v}
            for m, vals in (("MAP", (0.1, 0.3, 0.2)), ("SWAG", (0.05, 0.2, 0.2)))
            for s, v in enumerate(vals)]
    mean, se = uci.paired(rows, "SWAG", "ece")["d"]
    np.testing.assert_allclose(mean, -0.05)
    np.testing.assert_allclose(se, np.std([-0.05, -0.1, 0.0], ddof=1) / np.sqrt(3))

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

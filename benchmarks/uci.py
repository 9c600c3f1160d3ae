"""UCI regression benchmark: the protocol of Hernández-Lobato & Adams (2015).

For every dataset folder under ``--data-dir`` (layout of :mod:`bayesnn.data.uci`) and
each of its given 90/10 train/test splits: inputs and target are standardised with the
training statistics; a one-hidden-layer ReLU MLP (``n_hidden.txt`` units when the folder
has it, else 50) with a ``FanInNormal`` prior and a learned homoscedastic Gaussian noise
scale is fitted by each method on the training part; we report the test RMSE on the
original scale and the test log-likelihood of the posterior predictive,

    (1/N) Σ_i log (1/S) Σ_s N(y_i; μ_s(x_i) s_y + m_y, (σ_s s_y)²),

the standardised predictive density shifted by the Jacobian ``-log s_y``. Mean ± standard
error over splits, beside the published numbers of Gal & Ghahramani (2016, Table 1) and
Lakshminarayanan et al. (2017).

Hyperparameters are fixed defaults (``SETTINGS``, written to the results), chosen on a
validation part of the first split's training data, never on a test part. LatentGibbs
needs a fixed noise scale: it uses the noise scale learned by the MAP fit of the same
training split.

Results are appended to ``<out>/<name>.json`` (``--name``, default ``uci``), and
``<out>/<name>.md`` rewritten from it, after
every (dataset, method, split); runs already there are skipped, so an interrupted run
resumes (``--table-only`` rewrites just the table).

    python -m benchmarks.uci --data-dir ../shared/data/uci --methods MAP SGLD --splits 5 \
        --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import math
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import bayesnn as bnn
from bayesnn import metrics
from bayesnn.data import Dataset, Standardizer
from bayesnn.data.uci import list_uci, load_uci, uci_num_splits
from benchmarks.common import commit, flags, machine, save_results

# Published test log-likelihoods: VI (Graves 2011) and PBP as reported by Gal & Ghahramani
# (2016, Table 1), MC dropout (ibid.), deep ensembles (Lakshminarayanan et al. 2017).
# Tuned MC dropout: Gal's grid search over dropout rate, prior length-scale and noise
# precision per dataset on a validation split (the results in the repository of the splits).
PUBLISHED_COLUMNS = ("VI", "PBP", "MC dropout", "Deep ens.", "Tuned MC dropout")
PUBLISHED = {
    "boston": (-2.90, -2.57, -2.46, -2.41, -2.40),
    "concrete": (-3.39, -3.16, -3.04, -3.06, -2.93),
    "energy": (-2.39, -2.04, -1.99, -1.38, -1.21),
    "wine-red": (-0.98, -0.97, -0.93, -0.94, -0.93),
    "yacht": (-3.43, -1.63, -1.55, -1.18, -1.25),
}
TUNED_MC_DROPOUT = {d: v[-1] for d, v in PUBLISHED.items()}
ALIASES = {"bostonHousing": "boston", "wine-quality-red": "wine-red"}
METHODS = ("MAP", "MeanFieldVI", "SGLD", "SGHMC", "NUTS", "LatentGibbs", "Ensemble", "MCLMC",
           "Laplace", "SWAG")
POSTHOC = ("Laplace", "SWAG")  # post hoc: from the split's MAP fit, compared with it
FRESH = ("Ensemble", "MCLMC", "SGLD", "SGHMC")  # train their own ensemble, not from MAP

# Fixed hyperparameters of every method (data standardised). SGLD and SGHMC run with their
# defaults (step size and run length from the data; ensemble start).
SETTINGS = {
    "prior": {"FanInNormal": 1.0},
    "noise": {"init_scale": 0.5, "prior": "HalfNormal(1.0) on sigma"},
    "MAP": {"optimizer": "adam", "learning_rate": 1e-3, "epochs": 200, "batch_size": 32},
    "MeanFieldVI": {"learning_rate": 1e-3, "epochs": 300, "batch_size": 32,
                    "num_samples": 200, "init": "map"},
    "SGLD": {"defaults": True},
    "SGHMC": {"defaults": True},
    "NUTS": {"num_warmup": 300, "num_samples": 300, "max_tree_depth": 7, "init": "map"},
    "LatentGibbs": {"num_warmup": 500, "num_samples": 250, "thinning": 2,
                    "preactivation_var": 1e-2, "postactivation_var": 1e-2,
                    "noise": "MAP's learned scale"},
    "Ensemble": {"size": 5},
    "Laplace": {"subset": "last_layer", "hessian": "kron", "prior_precision": "marglik",
                "noise": "marglik", "num_samples": 100, "init": "network (the MAP fit)"},
    "SWAG": {"epochs": 20, "batch_size": 32, "rank": 20, "num_samples": 30,
             "init": "network (the MAP fit)"},
    "MCLMC": "bnn.MCLMC() defaults",
}


def short_name(dataset: str) -> str:
    """The name the published tables use for ``dataset``."""
    return ALIASES.get(dataset, dataset)


def num_hidden(root, dataset: str) -> int:
    """Hidden units: ``n_hidden.txt`` of the dataset folder when present, else 50."""
    for folder in (Path(root) / dataset, Path(root) / dataset / "data"):
        if (folder / "n_hidden.txt").is_file():
            return int(np.loadtxt(folder / "n_hidden.txt"))
    return 50


def standardize(train: Dataset, test: Dataset):
    """Standardised train and test sets and the target's :class:`Standardizer`."""
    sx, sy = Standardizer.fit(train.x), Standardizer.fit(train.y)
    return (Dataset(sx.transform(train.x), sy.transform(train.y)),
            Dataset(sx.transform(test.x), sy.transform(test.y)), sy)


def make_model(in_features: int, hidden: int, settings=None, *,
               start: bnn.Posterior | None = None, fixed_noise: bool = False) -> bnn.BNN:
    """The benchmark's BNN: ReLU MLP, FanInNormal prior, Gaussian noise of learned scale.

    ``start``, a MAP posterior, sets the network's weights and the initial noise scale
    (the methods' ``init="network"`` then starts there); ``fixed_noise`` fixes the noise
    at the MAP's scale instead of learning it.
    """
    settings = settings or SETTINGS
    if start is None:
        net = bnn.models.MLP(in_features, (hidden,), 1, rngs=nnx.Rngs(0))
        scale = settings["noise"]["init_scale"]
    else:
        point = start.point()
        net, scale = start.model.network(point), float(np.exp(point["lik"]["log_scale"]))
    lik = bnn.likelihoods.Gaussian(scale=scale, learn_scale=not fixed_noise)
    return bnn.BNN(net, bnn.priors.FanInNormal(settings["prior"]["FanInNormal"]), lik)


def map_config(settings=None) -> bnn.MAP:
    s = (settings or SETTINGS)["MAP"]
    return bnn.MAP(s["optimizer"], s["learning_rate"], epochs=s["epochs"],
                   batch_size=s["batch_size"])


def make_method(name: str, n_train: int, settings=None):
    """The method config ``name`` with ``settings`` (default ``SETTINGS``); SGLD and SGHMC
    with their defaults."""
    settings = settings or SETTINGS
    s = settings.get(name, {})
    if name == "MAP":
        return map_config(settings)
    if name == "Ensemble":
        return bnn.Ensemble(map_config(settings), size=s["size"])
    if name == "MeanFieldVI":
        return bnn.MeanFieldVI(learning_rate=s["learning_rate"], epochs=s["epochs"],
                               batch_size=s["batch_size"], num_samples=s["num_samples"])
    if name in ("SGLD", "SGHMC"):
        return getattr(bnn, name)()
    if name == "NUTS":
        return bnn.NUTS(num_warmup=s["num_warmup"], num_samples=s["num_samples"],
                        max_tree_depth=s["max_tree_depth"])
    if name == "Laplace":
        return bnn.Laplace(init="network", subset=s["subset"], hessian=s["hessian"],
                           prior_precision=s["prior_precision"], noise=s["noise"],
                           num_samples=s["num_samples"])
    if name == "SWAG":
        return bnn.SWAG(epochs=s["epochs"], batch_size=s["batch_size"], rank=s["rank"],
                        num_samples=s["num_samples"], init="network")
    if name == "MCLMC":
        return bnn.MCLMC()
    if name == "LatentGibbs":
        return bnn.LatentGibbs(num_warmup=s["num_warmup"], num_samples=s["num_samples"],
                               thinning=s["thinning"], preactivation_var=s["preactivation_var"],
                               postactivation_var=s["postactivation_var"])
    raise ValueError(f"unknown method {name!r}; use one of {METHODS}")


@partial(jax.jit, static_argnums=0)
def _draw_loc_scale(model: bnn.BNN, predictive, draws, x):
    """Each draw's predictive mean and noise std at ``x``: ``(S, N, 1)`` each."""

    def one(position, s):
        f = predictive.outputs(model, position, x, s)
        loc, scale = model.likelihood.loc_scale(f, position["lik"])
        return loc, jnp.broadcast_to(scale, loc.shape)

    return jax.vmap(one)(draws, jnp.arange(jax.tree.leaves(draws)[0].shape[0]))


def predictive_pit(post: bnn.Posterior, test: Dataset) -> np.ndarray:
    """PIT of each test target under the posterior predictive, the mixture over draws:
    ``(1/S) Σ_s Φ((y - μ_s) / σ_s)``, each term :func:`bayesnn.metrics.gaussian_pit`."""
    loc, scale = _draw_loc_scale(post.model, post.predictive, post.flat_draws(),
                                 jnp.asarray(test.x))
    pits = [metrics.gaussian_pit(m, s, test.y)
            for m, s in zip(np.asarray(loc), np.asarray(scale), strict=True)]
    return np.mean(pits, 0)


def calibration_error(pit, num_levels: int = 99) -> float:
    """Regression ECE: ``mean_j |p_j - #{PIT ≤ p_j} / N|`` over ``p_j = j / (num_levels + 1)``,
    the gap between each quantile level and the share of targets below that predictive
    quantile (Kuleshov, Fenner & Ermon 2018, *Accurate uncertainties for deep learning using
    calibrated regression*, eq. 9, with absolute instead of squared gaps and equal weights;
    the mean absolute calibration error of Chung et al. 2021, *Uncertainty Toolbox*). 0 for
    a calibrated predictive (uniform PIT); at most 0.5."""
    levels = np.arange(1, num_levels + 1) / (num_levels + 1)
    observed = np.mean(np.asarray(pit).reshape(-1)[:, None] <= levels, axis=0)
    return float(np.mean(np.abs(observed - levels)))


def evaluate(post: bnn.Posterior, test: Dataset, sy: Standardizer) -> dict[str, float]:
    """RMSE and mean predictive log-density on the original scale, and the regression
    :func:`calibration_error` of the predictive (``test`` standardised)."""
    mean = np.asarray(post.predict(test.x).mean)
    err = sy.inverse_transform(mean) - sy.inverse_transform(test.y)
    lpd = np.asarray(post.log_predictive_density(test.x, test.y)) - np.log(sy.std).sum()
    return {"rmse": float(np.sqrt(np.mean(err**2))), "test_ll": float(np.mean(lpd)),
            "ece": calibration_error(predictive_pit(post, test))}


def run_split(root, dataset: str, split: int, methods, seed: int = 0, settings=None):
    """Fit and evaluate ``methods`` on ``split`` of ``dataset``; yields one row per method.

    MAP is fitted once; every method but those in ``FRESH`` (which train their own
    ensemble: Ensemble, MCLMC, and SGLD and SGHMC from their default ensemble start)
    starts from its weights and noise scale (LatentGibbs, whose chains start afresh, keeps
    its noise scale fixed).
    """
    train, test = load_uci(root, dataset, split)
    train, test, sy = standardize(train, test)
    n, d = train.x.shape
    hidden = num_hidden(root, dataset)
    key = jax.random.fold_in(jax.random.key(seed), split)
    start, map_seconds = None, None
    for name in methods:
        if start is None and name not in FRESH:
            t0 = time.perf_counter()
            start = bnn.fit(make_model(d, hidden, settings), train, map_config(settings),
                            key=jax.random.fold_in(key, len(METHODS)), progress=False)
            jax.block_until_ready(start.draws)  # its own work in its own time
            map_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        if name == "MAP":
            post, seconds = start, map_seconds
        else:
            model = (make_model(d, hidden, settings) if name in FRESH else
                     make_model(d, hidden, settings, start=start,
                                fixed_noise=name == "LatentGibbs"))
            post = bnn.fit(model, train, make_method(name, n, settings),
                           key=jax.random.fold_in(key, METHODS.index(name)), progress=False)
            jax.block_until_ready(post.draws)
            seconds = time.perf_counter() - t0
        row = {"dataset": dataset, "method": name, "split": split, **evaluate(post, test, sy),
               "seconds": round(seconds, 4)}
        if name not in ("MAP", *FRESH):
            row["map_seconds"] = round(map_seconds, 4)
        if name == "Laplace":  # the curvature, δ and draws, without compiling predict
            row["laplace_seconds"] = round(post.info["laplace_seconds"], 4)
            row["prior_precision"] = post.info["prior_precision"]
        lik = post.draws["lik"]
        sigma = np.exp(np.asarray(lik["log_scale"])) if "log_scale" in lik else (
            post.model.likelihood.scale)
        row["noise_scale"] = float(np.mean(sigma) * sy.std.item())
        if "num_divergent" in post.info:
            row["num_divergent"] = post.info["num_divergent"]
        yield row


def mean_se(values) -> tuple[float, float]:
    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan


def summarize(rows: list[dict]) -> dict:
    """``{dataset: {method: {"rmse": (m, se), "test_ll": (m, se), "splits": k}}}``."""
    table: dict = {}
    for r in rows:
        table.setdefault(r["dataset"], {}).setdefault(r["method"], []).append(r)
    return {
        d: {m: {"rmse": mean_se([r["rmse"] for r in rs]),
                "test_ll": mean_se([r["test_ll"] for r in rs]), "splits": len(rs),
                "seconds": float(np.mean([r["seconds"] for r in rs])),
                **({"ece": mean_se([r["ece"] for r in rs])} if all("ece" in r for r in rs)
                   else {})}
            for m, rs in methods.items()}
        for d, methods in table.items()
    }


def paired(rows: list[dict], method: str, metric: str, baseline: str = "MAP") -> dict:
    """``{dataset: (mean, se)}`` of ``method``'s ``metric`` minus ``baseline``'s over the
    splits where both ran (each split's post-hoc fit starts from that split's MAP fit)."""
    by = {(r["dataset"], r["method"], r["split"]): r[metric] for r in rows if metric in r}
    diffs: dict = {}
    for (d, m, split), value in by.items():
        if m == method and (d, baseline, split) in by:
            diffs.setdefault(d, []).append(value - by[(d, baseline, split)])
    return {d: mean_se(v) for d, v in diffs.items()}


def _significant(value: float) -> int:
    """Decimals that show ``value`` to three significant digits (at least two)."""
    return max(2, 2 - math.floor(math.log10(abs(value)))) if value else 2


def _fmt(m_se, digits=2) -> str:
    m, se = m_se
    return f"{m:.{digits}f} ± {se:.{digits}f}" if math.isfinite(se) else f"{m:.{digits}f}"


def markdown(results: dict) -> str:
    """The results tables: test log-likelihood beside the published columns, then RMSE."""
    summary = summarize(results["runs"])
    methods = [m for m in METHODS if any(m in s for s in summary.values())]
    datasets = sorted(summary)
    lines = ["# UCI regression (Hernández-Lobato & Adams 2015 protocol)", "",
             "Runs measured on commit(s) "
             + ", ".join(f"`{c}`" for c in sorted({r.get("commit", "?") for r in results["runs"]}))
             + f"; table written on `{results['commit']}`; machine: "
             f"{json.dumps(results['machine'])}.", "",
             *([results["note"], ""] if results.get("note") else []),
             "Test log-likelihood of the posterior predictive (nats per test point, original "
             "scale; higher is better), mean ± standard error over splits (number of splits "
             "in brackets). Published columns: VI, PBP, MC dropout from Gal & Ghahramani "
             "(2016, Table 1), deep ensembles from Lakshminarayanan et al. (2017).", "",
             "| dataset | " + " | ".join(methods) + " | " + " | ".join(PUBLISHED_COLUMNS) + " |",
             "| --- " * (1 + len(methods) + len(PUBLISHED_COLUMNS)) + "|"]
    for d in datasets:
        cells = [f"{_fmt(summary[d][m]['test_ll'])} ({summary[d][m]['splits']})"
                 if m in summary[d] else "" for m in methods]
        pub = PUBLISHED.get(short_name(d))
        pub_cells = [f"{v:.2f}" for v in pub] if pub else [""] * len(PUBLISHED_COLUMNS)
        lines.append(f"| {short_name(d)} | " + " | ".join(cells + pub_cells) + " |")
    lines += ["", "Test RMSE (original units), mean ± standard error over splits.", "",
              "| dataset | " + " | ".join(methods) + " |", "| --- " * (1 + len(methods)) + "|"]
    for d in datasets:
        cells = [_fmt(summary[d][m]["rmse"], _significant(summary[d][m]["rmse"][0]))
                 if m in summary[d] else "" for m in methods]
        lines.append(f"| {short_name(d)} | " + " | ".join(cells) + " |")
    lines += ["", "Mean wall time per fit (seconds, one split, compilation included).", "",
              "| dataset | " + " | ".join(methods) + " |", "| --- " * (1 + len(methods)) + "|"]
    for d in datasets:
        cells = [f"{summary[d][m]['seconds']:.3g}" if m in summary[d] else "" for m in methods]
        lines.append(f"| {short_name(d)} | " + " | ".join(cells) + " |")
    calibrated = [m for m in methods if all("ece" in summary[d].get(m, {"ece": 0})
                                            for d in datasets)]
    if calibrated:
        lines += ["", "Regression calibration error of the predictive (lower is better; "
                  "`calibration_error`: mean over the quantile levels p = 0.01, ..., 0.99 of "
                  "|p − share of test targets below the predictive p-quantile|, from each "
                  "target's PIT under the mixture over draws), mean ± standard error over "
                  "splits.", "",
                  "| dataset | " + " | ".join(calibrated) + " |",
                  "| --- " * (1 + len(calibrated)) + "|"]
        for d in datasets:
            cells = [_fmt(summary[d][m]["ece"], 3) if m in summary[d] else ""
                     for m in calibrated]
            lines.append(f"| {short_name(d)} | " + " | ".join(cells) + " |")
    posthoc = [m for m in POSTHOC if m in methods and "MAP" in methods]
    if posthoc:
        lines += ["", "Goal: Laplace and SWAG beat MAP's test log-likelihood and calibration "
                  "error. Paired differences from MAP over the splits (each post-hoc fit starts "
                  "from its split's MAP fit), mean ± standard error; *yes* when better by more "
                  "than two standard errors, *tie* within two, *no* when worse by more than "
                  "two. *Laplace ÷ MAP*: Laplace's fit over its split's MAP fit, wall seconds "
                  "(compilation included), median over splits, and in brackets on the first "
                  "split a process ran (both compiling).", "",
                  "| dataset | " + " | ".join(f"{m} − MAP: {k}" for m in posthoc
                                              for k in ("test LL", "ECE"))
                  + (" | Laplace ÷ MAP |" if "Laplace" in posthoc else " |"),
                  "| --- " * (1 + 2 * len(posthoc) + ("Laplace" in posthoc)) + "|"]
        diffs = {(m, k): paired(results["runs"], m, k) for m in posthoc for k in ("test_ll", "ece")}
        cost = {}
        for r in results["runs"]:
            if r["method"] == "Laplace":
                cost.setdefault(r["dataset"], []).append(r["seconds"] / r["map_seconds"])
        for d in datasets:
            cells = []
            for m in posthoc:
                for k, sign in (("test_ll", 1), ("ece", -1)):
                    if d not in diffs[(m, k)]:
                        cells.append("")
                        continue
                    diff, se = diffs[(m, k)][d]
                    better = sign * diff > 2 * se
                    verdict = "yes" if better else ("no" if -sign * diff > 2 * se else "tie")
                    digits = 3 if k == "test_ll" else 4
                    cells.append(f"{diff:+.{digits}f} ± {se:.{digits}f} {verdict}")
            if "Laplace" in posthoc:
                cells.append(f"{np.median(cost[d]):.2f} ({cost[d][0]:.2f})" if d in cost else "")
            lines.append(f"| {short_name(d)} | " + " | ".join(cells) + " |")
    mc = PUBLISHED_COLUMNS.index("MC dropout")
    if {"NUTS", "SGLD"} & set(methods):
        lines += ["", "Goal: NUTS and SGLD beat MC dropout's test log-likelihood on every "
                  "dataset.", ""]
    for m in ("NUTS", "SGLD"):
        verdicts = [f"{short_name(d)} {'yes' if summary[d][m]['test_ll'][0] > pub[mc] else 'no'}"
                    for d in datasets
                    if m in summary[d] and (pub := PUBLISHED.get(short_name(d)))]
        if verdicts:
            lines.append(f"- {m} beats MC dropout: " + ", ".join(verdicts))
    lines += ["", "Settings (fixed for every dataset and split; data standardised; a "
              "one-hidden-layer ReLU MLP of `n_hidden.txt` units, else 50; SGLD and SGHMC "
              "with their defaults (runs of earlier commits: SG-MCMC step size "
              "= lr · σ_MAP² / n_train, σ_MAP² the standardised noise variance of the split's "
              "MAP fit rounded to a power of 2); every method but those that train their own "
              "ensemble (Ensemble, MCLMC, SGLD, SGHMC) starts from that MAP fit):", "",
              "```json", json.dumps(results["settings"], indent=1), "```"]
    return "\n".join(lines)


def load_results(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {"runs": []}


def main(args) -> dict:
    results = load_results(args.out / f"{args.name}.json")
    keys = {(r["dataset"], r["method"], r["split"]) for r in results["runs"]}
    for other in args.merge:  # e.g. the JSON of a run in parallel, into another --out
        runs = [r for r in load_results(Path(other))["runs"]
                if (r["dataset"], r["method"], r["split"]) not in keys]
        results["runs"] += runs
        keys |= {(r["dataset"], r["method"], r["split"]) for r in runs}
    results |= {"settings": SETTINGS, "commit": commit(), "machine": machine("numpyro")}
    if args.note:
        results["note"] = args.note
    if not args.table_only:
        if args.cache_dir:  # fits of equal shapes across splits then compile once
            jax.config.update("jax_compilation_cache_dir", args.cache_dir)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        unknown = set(args.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}; use {METHODS}")
        datasets = args.datasets or list_uci(args.data_dir)
        for split in range(args.first_split, args.splits):
            for dataset in datasets:
                if split >= uci_num_splits(args.data_dir, dataset):
                    continue
                todo = [m for m in args.methods if (dataset, m, split) not in keys]
                for row in run_split(args.data_dir, dataset, split, todo, args.seed):
                    row["commit"] = results["commit"]
                    print(json.dumps(row), flush=True)
                    results["runs"].append(row)
                    save_results(args.out, args.name, results, [markdown(results)])
    save_results(args.out, args.name, results, [markdown(results)])
    return results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[flags(seed=True)])
    p.add_argument("--data-dir", default="../shared/data/uci")
    p.add_argument("--datasets", nargs="+", default=None, help="default: every dataset found")
    p.add_argument("--methods", nargs="+", default=list(METHODS), help=f"from {METHODS}")
    p.add_argument("--splits", type=int, default=20, help="run splits [first-split, splits)")
    p.add_argument("--first-split", type=int, default=0)
    p.add_argument("--cache-dir", default="/tmp/bayesnn_uci_jax_cache",
                   help="JAX persistent compilation cache ('' to disable)")
    p.add_argument("--merge", nargs="*", default=[],
                   help="add the runs of these uci.json files (parallel runs) first")
    p.add_argument("--note", default="", help="a remark printed under the table's title")
    p.add_argument("--name", default="uci", help="results file stem (e.g. uci_posthoc)")
    p.add_argument("--table-only", action="store_true", help="rewrite <name>.md from its .json")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

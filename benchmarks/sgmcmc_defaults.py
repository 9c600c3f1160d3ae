"""SG-MCMC with its defaults on UCI regression, by exactly the user code of issue 18.

For each dataset and split: standardise inputs and targets with the training statistics;
``model = bnn.BNN(bnn.models.MLP(d, (50,), 1, rngs=nnx.Rngs(split)),
likelihood=bnn.likelihoods.Gaussian(learn_scale=True))``; ``post = bnn.fit(model, (x, y),
bnn.SGHMC(), key=split)`` (and ``bnn.SGLD()``); score the mean test log predictive
density on the original scale (the standardised density shifted by ``-log s_y``, as in
:mod:`benchmarks.uci`). No setting depends on the dataset.

Compared, on the same splits, with this library's NUTS (``benchmarks/results/uci.json``
and any ``--nuts`` JSON of the same format), published deep ensembles (Lakshminarayanan
et al. 2017) and tuned MC dropout (Gal & Ghahramani 2016's grid-search results).

    python -m benchmarks.sgmcmc_defaults --datasets yacht energy --splits 2
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from flax import nnx

import bayesnn as bnn
from bayesnn.data.uci import list_uci, load_uci
from bayesnn.inference.driver import NonFiniteError
from benchmarks.common import commit, flags, machine, save_results
from benchmarks.uci import PUBLISHED, PUBLISHED_COLUMNS, TUNED_MC_DROPOUT, short_name, standardize

METHODS = ("SGHMC", "SGLD")


def run_one(root, dataset: str, split: int, method: str) -> dict:
    """Fit ``bnn.<method>()`` on ``split`` of ``dataset`` by the issue's user code."""
    train, test = load_uci(root, dataset, split)
    train, test, sy = standardize(train, test)
    d = train.x.shape[1]
    model = bnn.BNN(bnn.models.MLP(d, (50,), 1, rngs=nnx.Rngs(split)),
                    likelihood=bnn.likelihoods.Gaussian(learn_scale=True))
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            post = bnn.fit(model, (train.x, train.y), getattr(bnn, method)(), key=split,
                           progress=False)
        except NonFiniteError as err:  # a default run that fails is a result too
            return {"dataset": dataset, "method": method, "split": split,
                    "failed": str(err), "seconds": round(time.perf_counter() - t0, 2),
                    "commit": commit()}
    seconds = time.perf_counter() - t0
    lpd = np.asarray(post.log_predictive_density(test.x, test.y)) - np.log(sy.std).sum()
    mean = sy.inverse_transform(np.asarray(post.predict(test.x).mean))
    rmse = float(np.sqrt(np.mean((mean - sy.inverse_transform(test.y)) ** 2)))
    info = post.info
    sigma = np.exp(np.asarray(post.draws["lik"]["log_scale"])) * float(sy.std.item())
    return {
        "dataset": dataset, "method": method, "split": split,
        "test_ll": float(np.mean(lpd)), "rmse": rmse, "seconds": round(seconds, 2),
        "noise_scale": float(np.mean(sigma)),
        "step_size": np.asarray(info["step_size"]).tolist(),
        "rhat": float(np.max(info.get("diagnostics", {}).get("rhat", np.nan))),
        "warnings": [str(w.message)[:200] for w in caught],
        "commit": commit(),
    }


def nuts_rows(paths) -> dict:
    """``{(dataset, split): test_ll}`` of NUTS in the ``uci.json``-format files ``paths``."""
    out = {}
    for path in paths:
        if Path(path).is_file():
            for r in json.loads(Path(path).read_text())["runs"]:
                if r["method"] == "NUTS":
                    out[(short_name(r["dataset"]), r["split"])] = r["test_ll"]
    return out


def markdown(results: dict, nuts: dict) -> list[str]:
    rows = results["runs"]
    lines = ["# SG-MCMC defaults on UCI (issue 18's user code)", "",
             f"Machine: {json.dumps(results['machine'])}; commits "
             + ", ".join(f"`{c}`" for c in sorted({r['commit'] for r in rows})) + ".", "",
             "Test log-likelihood (nats per test point, original scale), mean over the splits "
             "run; NUTS on the same splits (where recorded; on `benchmarks/uci.py`'s model: "
             "FanInNormal prior, from the split's MAP fit); the better of published deep "
             "ensembles and tuned MC dropout.", "",
             "| dataset | method | splits | test LL | NUTS (same splits) | gap to NUTS "
             "| best published | RMSE | R-hat (max) | warnings | failed (NonFiniteError) |",
             "| --- " * 11 + "|"]
    keyset = sorted({(short_name(r["dataset"]), r["method"]) for r in rows})
    deep = PUBLISHED_COLUMNS.index("Deep ens.")
    for d, m in keyset:
        rs = [r for r in rows if short_name(r["dataset"]) == d and r["method"] == m]
        failed = sorted(r["split"] for r in rs if "failed" in r)
        rs = [r for r in rs if "failed" not in r]
        splits = sorted(r["split"] for r in rs)
        ll = np.mean([r["test_ll"] for r in rs])
        paired = [(r["test_ll"], nuts[(d, r["split"])]) for r in rs if (d, r["split"]) in nuts]
        nuts_ll = f"{np.mean([n for _, n in paired]):.3f} ({len(paired)})" if paired else ""
        gap = f"{np.mean([s - n for s, n in paired]):+.3f}" if paired else ""
        best = max(PUBLISHED[d][deep], TUNED_MC_DROPOUT[d]) if d in PUBLISHED else float("nan")
        lines.append(
            f"| {d} | {m} | {','.join(map(str, splits))} | {ll:.3f} | {nuts_ll} | {gap} "
            f"| {best:.2f} | {np.mean([r['rmse'] for r in rs]):.3f} "
            f"| {max(r['rhat'] for r in rs):.2f} | {sum(len(r['warnings']) for r in rs)} "
            f"| {', '.join(f'split {s}' for s in failed) or 0} |")
    return lines


def main(args) -> dict:
    path = args.out / f"{args.name}.json"
    results = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    done = {(r["dataset"], r["method"], r["split"]) for r in results["runs"]}
    results["machine"] = machine()
    nuts = nuts_rows([Path("benchmarks/results/uci.json"), *args.nuts])
    for split in range(args.first_split, args.splits):
        for dataset in args.datasets or list_uci(args.data_dir):
            for method in args.methods:
                if (dataset, method, split) in done:
                    continue
                row = run_one(args.data_dir, dataset, split, method)
                print(json.dumps(row), flush=True)
                results["runs"].append(row)
                save_results(args.out, args.name, results, markdown(results, nuts))
    save_results(args.out, args.name, results, markdown(results, nuts))
    return results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[flags()])
    p.add_argument("--data-dir", default="../shared/data/uci")
    p.add_argument("--datasets", nargs="+", default=None, help="default: every dataset found")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--splits", type=int, default=3, help="run splits [first-split, splits)")
    p.add_argument("--first-split", type=int, default=0)
    p.add_argument("--nuts", nargs="*",
                   default=sorted(map(str, Path("benchmarks/results/uci_mclmc_quiet").glob(
                       "uci_*.json"))),
                   help="more uci.json-format files with NUTS runs (default: the 20-split "
                        "MCLMC/NUTS run, benchmarks/results/uci_mclmc_quiet)")
    p.add_argument("--name", default="sgmcmc_defaults", help="result file name")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

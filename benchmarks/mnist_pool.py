"""MNIST runs pooled over seeds: each method's mean test-set difference from MAP-Adam.

Reads the ``mnist_probs.npz`` that ``mnist.py --save-probs`` writes in each run folder (one
seed each, same test set) and, per network, method and test set (the clean test set and
any rotated ones), reports the difference from MAP-Adam of every run and their mean with
two standard errors:

- *test*: the test set's sampling. Every run and method is scored on the same bootstrap
  resamples of the rows, so a replicate of the mean difference is the mean of the runs'
  replicate differences (a paired bootstrap).
- *seeds*: the training's randomness, the spread of the runs' differences over √k.

*total* is their quadrature sum, an approximate standard error of the mean difference
under a new test set and new seeds. A difference is called lower (or higher) only beyond
the two-sided 95% point of Student's t, with the Welch–Satterthwaite degrees of freedom of
the two parts (the seeds' SE has k − 1, the bootstrap's is taken as exact): with five
seeds whose spread dominates, about 2.8 total SE rather than 2. One run decides nothing.

    python -m benchmarks.mnist_pool RUN_DIR [RUN_DIR ...] --out benchmarks/results
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import stats

from benchmarks.common import flags, save_results
from benchmarks.mnist import METRICS, bootstrap, lower

REFERENCE = "MAP-Adam"


def load_runs(folders) -> tuple[list[dict], np.ndarray]:
    """Each folder's predictives as ``{(network, method, test set): probs}``, and the labels
    (which must be the same in every run)."""
    runs, labels = [], None
    for folder in folders:
        with np.load(Path(folder) / "mnist_probs.npz") as f:
            y = f["y"]
            if labels is not None and not np.array_equal(labels, y):
                raise ValueError(f"{folder}: its test labels differ from the first run's")
            labels = y
            runs.append({tuple(k.split("/")): f[k] for k in f.files if k != "y"})
    return runs, labels


def critical_value(se_test: float, se_seeds: float, num_runs: int) -> float:
    """Two-sided 95% point of Student's t for a mean difference over its total SE, with the
    Welch–Satterthwaite degrees of freedom (Welch 1947) of the seeds' part (k − 1) and the
    test set's (taken as exact); NaN for a single run."""
    if num_runs < 2:
        return float("nan")
    if se_seeds == 0:
        return float(stats.norm.ppf(0.975))
    df = (se_test**2 + se_seeds**2) ** 2 / (se_seeds**4 / (num_runs - 1))
    return float(stats.t.ppf(0.975, df))


def verdict(mean: float, se: float, critical: float) -> str:
    """``lower`` or ``higher`` beyond ``critical`` standard errors, else ``tie``."""
    if np.isnan(critical):
        return "undecided (one run)"
    return {"yes": "lower", "no": "higher", "tie": "tie"}[lower(mean, se, critical)]


def pool(runs: list[dict], y: np.ndarray, num_resamples: int) -> list[dict]:
    """One row per (network, method, test set, metric) present in every run."""
    common = set.intersection(*(set(r) for r in runs))
    ref_reps = {}  # the reference's bootstrap replicates, per (run, network, test set)
    rows = []
    for net, method, set_name in sorted(common, key=lambda k: (k[:2], k[2] != "test", k[2])):
        if method == REFERENCE or (net, REFERENCE, set_name) not in common:
            continue
        for i, r in enumerate(runs):
            if (i, net, set_name) not in ref_reps:
                ref_reps[i, net, set_name] = bootstrap(r[net, REFERENCE, set_name], y,
                                                       num_resamples)
        reps = [(bootstrap(r[net, method, set_name], y, num_resamples),
                 ref_reps[i, net, set_name]) for i, r in enumerate(runs)]
        for metric, (fn, digits) in METRICS.items():
            values = np.array([(fn(r[net, method, set_name], y), fn(r[net, REFERENCE, set_name], y))
                               for r in runs])
            diffs = values[:, 0] - values[:, 1]
            mean_reps = np.mean([m[metric] - ref[metric] for m, ref in reps], axis=0)
            se_test = float(np.std(mean_reps, ddof=1))
            se_seeds = float(np.std(diffs, ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else 0.0
            se = float(np.hypot(se_test, se_seeds))
            critical = critical_value(se_test, se_seeds, len(runs))
            rows.append({"network": net, "method": method, "test_set": set_name,
                         "metric": metric, "method_mean": round(float(values[:, 0].mean()), digits),
                         "reference_mean": round(float(values[:, 1].mean()), digits),
                         "per_run": np.round(diffs, digits + 1).tolist(),
                         "mean": round(float(diffs.mean()), digits + 1),
                         "se_test": round(se_test, digits + 1),
                         "se_seeds": round(se_seeds, digits + 1), "se": round(se, digits + 1),
                         "critical": round(critical, 2),
                         "verdict": verdict(float(diffs.mean()), se, critical)})
    return rows


def main(args) -> dict:
    runs, y = load_runs(args.runs)
    rows = pool(runs, y, args.bootstrap)
    result = {"runs": [str(r) for r in args.runs], "num_test": int(len(y)),
              "bootstrap": args.bootstrap, "rows": rows}
    lines = [
        f"# MNIST: differences from {REFERENCE}, pooled over {len(runs)} runs", "",
        f"Runs: {', '.join(f'`{r}`' for r in args.runs)}; {len(y)} test examples, "
        f"{args.bootstrap} bootstrap resamples. Each row: the metric's mean over the runs for "
        f"the method and for {REFERENCE}; the method's minus {REFERENCE}'s, per run and on "
        "average, ± standard errors from the test set's "
        "sampling (paired bootstrap), from the seeds (spread / √k) and both in quadrature; "
        "*t*: the 95% point of Student's t that the mean must pass in total SE (Welch–"
        "Satterthwaite degrees of freedom); *verdict*: lower or higher beyond it, else tie.",
        "",
        f"| network | method | test set | metric | method | {REFERENCE} | difference per run | "
        "mean difference | SE test | SE seeds | SE total | t | verdict |",
        "|---|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += [f"| {r['network']} | {r['method']} | {r['test_set']} | {r['metric']} | "
              f"{r['method_mean']:g} | {r['reference_mean']:g} | "
              f"{', '.join(f'{d:+g}' for d in r['per_run'])} | {r['mean']:+g} | "
              f"{r['se_test']:g} | {r['se_seeds']:g} | {r['se']:g} | {r['critical']:g} | "
              f"{r['verdict']} |"
              for r in rows]
    save_results(args.out, args.name, result, lines)
    print("\n".join(lines))
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[flags()])
    p.add_argument("runs", nargs="+", help="folders holding mnist_probs.npz, one per seed")
    p.add_argument("--bootstrap", type=int, default=200, help="resamples of the test set")
    p.add_argument("--name", default="mnist_pooled", help="file name of the results")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

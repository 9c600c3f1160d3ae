"""MNIST: MAP (SGD, Adam), SGLD, pSGLD and mean-field VI on the 400-400 MLP and the MNIST CNN.

The protocol of Li et al. (2016, Table 2) on the two networks: MLP(784, (400, 400), 10)
with ReLU and ``mnist_cnn()``, a ``FanInNormal(--prior-scale)`` prior and a categorical
likelihood. The last ``--validation`` training examples are held out (the split of
``MAP(validation_split=...)``): MAP keeps the weights of its best validation epoch, the
other methods never see them, and the validation scores reported are what any choice of
setting is to be made on, never the test scores. SGLD, pSGLD and VI start from the Adam MAP
network (the MAP fit's time is reported with it). Test error, NLL and ECE (15 bins) of each
posterior predictive, wall time of each fit. Published test errors for the 400-400 MLP sit
beside ours.

Results are written incrementally to ``mnist.json`` and ``mnist.md`` in ``--out``; networks
already there and not run now are kept. ``--quick`` is a short smoke run (``make bench``).

    python benchmarks/mnist.py --data ../shared/data/mnist/mnist.npz --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import optax
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine  # noqa: E402

import bayesnn as bnn  # noqa: E402
from bayesnn import metrics  # noqa: E402

# Test error (%) of the 400-400 ReLU MLP on MNIST.
PUBLISHED = [
    {"method": "SGLD", "error": 1.64, "source": "Li et al. 2016 (pSGLD, AAAI)"},
    {"method": "pSGLD", "error": 1.40, "source": "Li et al. 2016 (pSGLD, AAAI)"},
    {"method": "Bayes by Backprop", "error": 1.36, "source": "Blundell et al. 2015 (ICML)"},
]
GOALS = {
    "sgld_error_le_map": "SGLD test error ≤ MAP-Adam's",
    "sgld_nll_below_map": "SGLD test NLL < MAP-Adam's",
    "sgld_ece_below_map": "SGLD test ECE < MAP-Adam's",
    "sgld_error_le_1.5": "SGLD test error ≤ 1.5%",
}
METHODS = ("MAP-Adam", "SGLD", "pSGLD", "MeanFieldVI", "MAP-SGD")
NETWORKS = {
    "mlp": ("MLP 784-400-400-10, ReLU", lambda seed: bnn.models.MLP(
        784, (400, 400), 10, "relu", rngs=nnx.Rngs(seed))),
    "cnn": ("mnist_cnn()", lambda seed: bnn.models.mnist_cnn(seed=seed)),
}


def network_args(args, name: str) -> dict:
    """The per-network settings, ``--mlp-*`` / ``--cnn-*`` flags."""
    return {k[len(name) + 1:]: v for k, v in vars(args).items() if k.startswith(name + "_")}


def configs(s: dict, train_size: int) -> dict:
    """Method configurations from the per-network settings ``s``."""
    steps = bnn.data.num_batches(train_size, s["batch_size"])
    sampling = round(s["sgmcmc_epochs"] * steps)
    thinning = max(1, sampling // s["num_samples"])
    chain = dict(batch_size=s["batch_size"], num_warmup=round(s["warmup_epochs"] * steps),
                 num_samples=max(1, sampling // thinning), thinning=thinning, init="network")
    return {
        "MAP-Adam": bnn.MAP("adam", s["adam_lr"], epochs=s["map_epochs"],
                            batch_size=s["batch_size"], validation_split=s["val_fraction"]),
        "MAP-SGD": bnn.MAP(optax.sgd(s["sgd_lr"], momentum=0.9), epochs=s["map_epochs"],
                           batch_size=s["batch_size"], validation_split=s["val_fraction"]),
        "SGLD": bnn.SGLD(s["sgld_step"], **chain),
        "pSGLD": bnn.PSGLD(s["psgld_step"], **chain),
        "MeanFieldVI": bnn.MeanFieldVI(
            learning_rate=s["vi_lr"], epochs=s["vi_epochs"], batch_size=s["batch_size"],
            num_samples=s["num_samples"], init_scale=s["vi_init_scale"]),
    }


def describe(method, s: dict) -> str:
    """``repr(method)``, with the optax SGD optimiser written as the call that made it."""
    text = repr(method)
    if not isinstance(getattr(method, "optimizer", ""), str):
        text = text.replace(repr(method.optimizer), f"optax.sgd({s['sgd_lr']}, momentum=0.9)")
    return text


def scores(posterior, x, y, num_draws_cap: int = 64) -> dict:
    """Error (%), NLL and ECE of the posterior predictive on ``(x, y)``."""
    probs = np.asarray(posterior.predict(x, batch_size=1000, draw_batch_size=num_draws_cap).probs)
    return {
        "error": round(100 * (1 - metrics.accuracy(probs, y)), 3),
        "nll": round(metrics.categorical_nll(probs, y), 4),
        "ece": round(metrics.ece(probs, y), 4),
    }


def run_network(name: str, args, train, test, record) -> None:
    """Fit every method of ``--methods`` on one network; ``record(row)`` after each."""
    s = network_args(args, name)
    s["val_fraction"] = args.validation / train.num_examples
    fit_train, val = bnn.data.validation_split(train, s["val_fraction"])
    val_eval = (val.x[: args.num_val_eval], val.y[: args.num_val_eval])
    prior, likelihood = bnn.priors.FanInNormal(args.prior_scale), bnn.likelihoods.Categorical()
    model = bnn.BNN(NETWORKS[name][1](args.seed), prior, likelihood)
    methods = configs(s, fit_train.num_examples)
    start, start_seconds = None, 0.0
    for i, method_name in enumerate(m for m in METHODS if m in args.methods):
        method = methods[method_name]
        is_map = method_name.startswith("MAP")
        if not is_map and start is None:
            raise ValueError(f"{method_name} starts from the MAP-Adam network: run MAP-Adam too")
        t0 = time.perf_counter()
        posterior = bnn.fit(
            model if is_map else start, train if is_map else fit_train, method,
            key=args.seed + i, progress=args.progress,
        )
        seconds = time.perf_counter() - t0
        if method_name == "MAP-Adam":
            start = bnn.BNN(model.network(posterior.point()), prior, likelihood)
            start_seconds = seconds
        row = {
            "method": method_name, "config": describe(method, s),
            "num_draws": int(posterior.num_samples),
            "fit_seconds": round(seconds, 1),
            "total_seconds": round(seconds + (0.0 if is_map else start_seconds), 1),
            "test": scores(posterior, test.x, test.y),
            "validation": scores(posterior, *val_eval),
        }
        if is_map:
            row["best_epoch"] = posterior.info["best_epoch"]
        print(name, json.dumps(row), flush=True)
        record(name, s, row)


def goals(rows: list[dict]) -> dict:
    """Issue goals: SGLD at least as accurate as MAP-Adam, with lower NLL and ECE."""
    by = {r["method"]: r["test"] for r in rows}
    if "SGLD" not in by or "MAP-Adam" not in by:
        return {}
    sgld, ref = by["SGLD"], by["MAP-Adam"]
    return {"sgld_error_le_map": sgld["error"] <= ref["error"],
            "sgld_nll_below_map": sgld["nll"] < ref["nll"],
            "sgld_ece_below_map": sgld["ece"] < ref["ece"],
            "sgld_error_le_1.5": sgld["error"] <= 1.5}


def main(args) -> dict:
    if args.data:
        train, test = bnn.data.load_mnist(args.data)
        source = str(args.data)
    else:  # random images: a smoke run of the script, not a benchmark
        rng = np.random.default_rng(0)
        n = args.num_train + args.num_test
        x, y = rng.uniform(size=(n, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, n)
        train = bnn.data.Dataset(x[: args.num_train], y[: args.num_train].astype(np.int32))
        test = bnn.data.Dataset(x[args.num_train:], y[args.num_train:].astype(np.int32))
        source = "random MNIST-shaped arrays"
    train = bnn.data.Dataset(train.x[: args.num_train], train.y[: args.num_train])
    test = bnn.data.Dataset(test.x[: args.num_test], test.y[: args.num_test])
    out = Path(args.out)
    path = out / "mnist.json"
    result = json.loads(path.read_text()) if path.exists() else {"networks": {}}
    result.update(machine=machine("numpyro", "blackjax"), data=source, published=PUBLISHED)
    for name in args.networks:
        result["networks"][name] = {
            "network": NETWORKS[name][0], "num_train": train.num_examples - args.validation,
            "num_validation": args.validation, "num_val_eval": args.num_val_eval,
            "num_test": test.num_examples, "prior": f"FanInNormal({args.prior_scale})",
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": [],
            "note": args.note,
        }

    def record(name, settings, row):
        net = result["networks"][name]
        net["settings"] = {k: v for k, v in settings.items() if k != "val_fraction"}
        net["rows"].append(row)
        net["goals"] = goals(net["rows"])
        result["machine"]["load_average_1min"] = round(os.getloadavg()[0], 2)
        write(out, result)

    for name in args.networks:
        run_network(name, args, train, test, record)
    return result


def write(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "mnist.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = [
        "# MNIST: MAP vs SGLD vs pSGLD vs mean-field VI",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['device']}, load average {m['load_average_1min']} "
        f"(shared machine); jax {m['jax']}, numpyro {m['numpyro']}, blackjax {m['blackjax']}; "
        f"commit {m['commit']}. Data: {result['data']}.",
        "",
        "Test error (%), NLL (nats) and ECE (15 bins) of the posterior predictive; validation "
        "columns on held-out training examples (for choosing settings, never test). SGLD, pSGLD "
        "and VI start from the MAP-Adam network; *total s* includes that MAP fit.",
    ]
    for net in result["networks"].values():
        lines += [
            "", f"## {net['network']}", "",
            f"{net['num_train']} training examples ({net['num_validation']} more held out, the "
            f"first {net['num_val_eval']} of them scored), {net['num_test']} test examples; "
            f"prior {net['prior']}; run started {net['started']}. {net.get('note') or ''}", "",
            "| method | draws | test error % | test NLL | test ECE | val error % | val NLL | "
            "val ECE | fit s | total s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in net["rows"]:
            t, v = r["test"], r["validation"]
            lines.append(
                f"| {r['method']} | {r['num_draws']} | {t['error']:.2f} | {t['nll']:.4f} | "
                f"{t['ece']:.4f} | {v['error']:.2f} | {v['nll']:.4f} | {v['ece']:.4f} | "
                f"{r['fit_seconds']:.0f} | {r['total_seconds']:.0f} |"
            )
        if net.get("goals"):
            lines += ["", "Goals: " + "; ".join(
                f"{GOALS[k]}: {'yes' if v else 'no'}" for k, v in net["goals"].items())]
        if net.get("settings"):
            lines += ["", "Settings: " + ", ".join(f"{k}={v}" for k, v in net["settings"].items())]
        lines += ["", "Configurations:", ""] + [f"- `{r['config']}`" for r in net["rows"]]
    lines += ["", "## Published (400-400 MLP, full 60k training set)", "",
              "| method | test error % | source |", "|---|---:|---|"]
    lines += [f"| {p['method']} | {p['error']:.2f} | {p['source']} |" for p in result["published"]]
    (out / "mnist.md").write_text("\n".join(lines) + "\n")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="MNIST .npz or IDX folder (default: random)")
    p.add_argument("--networks", nargs="+", choices=tuple(NETWORKS), default=list(NETWORKS))
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--num-train", type=int, default=60000, help="first N training examples")
    p.add_argument("--num-test", type=int, default=10000)
    p.add_argument("--validation", type=int, default=10000, help="held out from the training set")
    p.add_argument("--num-val-eval", type=int, default=2000, help="validation examples scored")
    p.add_argument("--prior-scale", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true", help="progress bars")
    p.add_argument("--note", default="", help="a remark printed with the results (budget, ...)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, for make bench")
    p.add_argument("--out", default="benchmarks/results")
    for net, d in {
        "mlp": dict(batch_size=100, map_epochs=30, adam_lr=1e-3, sgd_lr=0.01, sgld_step=1e-6,
                    psgld_step=4e-9, warmup_epochs=1.0, sgmcmc_epochs=20.0, num_samples=40,
                    vi_epochs=20, vi_lr=1e-3, vi_init_scale=1e-3),
        "cnn": dict(batch_size=128, map_epochs=3, adam_lr=1e-3, sgd_lr=0.01, sgld_step=1e-6,
                    psgld_step=4e-9, warmup_epochs=0.25, sgmcmc_epochs=2.0, num_samples=10,
                    vi_epochs=2, vi_lr=1e-3, vi_init_scale=1e-3),
    }.items():
        for k, v in d.items():
            p.add_argument(f"--{net}-{k.replace('_', '-')}", type=type(v), default=v)
    args = p.parse_args(argv)
    if args.quick:
        args.num_train, args.num_test, args.validation = min(args.num_train, 1200), min(
            args.num_test, 500), min(args.validation, 200)
        args.num_val_eval = min(args.num_val_eval, 200)
        for net in NETWORKS:
            for k, v in dict(map_epochs=1, sgmcmc_epochs=1.0, warmup_epochs=0.5, num_samples=4,
                             vi_epochs=1).items():
                setattr(args, f"{net}_{k}", v)
    if args.validation >= args.num_train:
        p.error("--validation must be smaller than --num-train")
    return args


if __name__ == "__main__":
    main(parse_args())

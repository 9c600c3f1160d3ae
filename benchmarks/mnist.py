"""MNIST: MAP (SGD, Adam), SGLD, pSGLD and mean-field VI on the 400-400 MLP and the MNIST CNN.

The protocol of Li et al. (2016, Table 2) on the two networks: MLP(784, (400, 400), 10)
with ReLU and ``mnist_cnn()``, a ``FanInNormal(--prior-scale)`` prior and a categorical
likelihood. The last ``--validation`` training examples are held out (the split of
``MAP(validation_split=...)``): MAP keeps the weights of its best validation epoch, the
other methods never see them, and the validation scores reported are what any choice of
setting is to be made on, never the test scores. SGLD, pSGLD and VI start from the Adam MAP
network (the MAP fit's time is reported with it); a deep ensemble of ``--*-ensemble-size``
MAP-Adam networks (Lakshminarayanan et al. 2017), the non-Bayesian baseline for
uncertainty, trains from scratch like MAP. Test error, NLL and ECE (15 bins) of each
posterior predictive with bootstrap standard errors, and paired bootstrap differences from
MAP-Adam (the same resamples of the test set for every method); mean confidence against
accuracy, to tell over- from under-confidence; wall time of each fit. Given several
``--*-sgld-step`` (or ``--*-psgld-step``) values, each is tried in a pilot chain from the
MAP network, scored on the validation examples only; the full chain continues the pilot of
lowest validation NLL from its last position, with that step size. Published test errors
for the 400-400 MLP sit beside ours.

A goal "lower" is met only by more than two paired standard errors: a smaller point
estimate within that is reported as a tie. ``--shift-angles`` also scores every method on
the test images rotated by those angles (degrees), a covariate shift under which
calibration is known to part ways (Ovadia et al. 2019, *Can you trust your model's
uncertainty?*). ``--save-probs`` writes every predictive on the test sets to
``mnist_probs.npz``, which ``mnist_pool.py`` pools over seeds.

Results are written incrementally to ``mnist.json`` and ``mnist.md`` in ``--out``; networks
already there and not run now are kept. With ``--cache DIR`` every fit checkpoints there
and its posterior and predictions are kept, so a rerun of the same command resumes where it
stopped and refits nothing already done. ``--quick`` is a short smoke run (``make bench``).

    python -m benchmarks.mnist --data ../shared/data/mnist/mnist.npz --out benchmarks/results

The CNN sections of ``benchmarks/results/mnist.md`` are one such run per prior scale (2, 4
and 8; the one whose SGLD chain had the lowest validation NLL comes first), each with

    python -m benchmarks.mnist --data ../shared/data/mnist/mnist.npz --networks cnn \
        --methods MAP-Adam SGLD --prior-scale 8 --num-val-eval 5000 --draw-batch-size 10 \
        --cache .checkpoints/mnist --cnn-map-epochs 15 --cnn-patience 2 \
        --cnn-sgld-step 5e-7 1e-6 2e-6 --cnn-tune-warmup-epochs 0.5 --cnn-tune-epochs 1.5 \
        --cnn-tune-num-samples 10 --cnn-warmup-epochs 0.5 --cnn-sgmcmc-epochs 6 \
        --cnn-num-samples 20
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx

import bayesnn as bnn
from bayesnn import metrics
from benchmarks.common import flags, machine, machine_line, save_results

# Test error (%) of the 400-400 ReLU MLP on MNIST.
PUBLISHED = [
    {"method": "SGLD", "error": 1.64, "source": "Li et al. 2016 (pSGLD, AAAI)"},
    {"method": "pSGLD", "error": 1.40, "source": "Li et al. 2016 (pSGLD, AAAI)"},
    {"method": "Bayes by Backprop", "error": 1.36, "source": "Blundell et al. 2015 (ICML)"},
]
GOALS = {
    "sgld_error_le_map": "SGLD test error ≤ MAP-Adam's",
    "sgld_nll_below_map": "SGLD test NLL < MAP-Adam's by > 2 paired SE",
    "sgld_ece_below_map": "SGLD test ECE < MAP-Adam's by > 2 paired SE",
    "sgld_error_le_1.5": "SGLD test error ≤ 1.5%",
    **{f"{m.lower()}_{k}_below_map": f"{m} test {k.upper()} < MAP-Adam's by > 2 paired SE"
       for m in ("Laplace", "SWAG") for k in ("nll", "ece")},
    "laplace_cost_le_20pct": "Laplace's fit ≤ 20% of MAP-Adam's fit (wall seconds)",
}
METHODS = ("MAP-Adam", "SGLD", "pSGLD", "MeanFieldVI", "Ensemble", "MAP-SGD", "Laplace", "SWAG")
FROM_SCRATCH = ("MAP-Adam", "MAP-SGD", "Ensemble")  # the others start from MAP-Adam's network
NETWORKS = {
    "mlp": ("MLP 784-400-400-10, ReLU", lambda seed: bnn.models.MLP(
        784, (400, 400), 10, "relu", rngs=nnx.Rngs(seed))),
    "cnn": ("mnist_cnn()", lambda seed: bnn.models.mnist_cnn(seed=seed)),
    # Keras's MNIST MLP; its dropout (0.2) is on in MAP's training steps only.
    "mlp512": ("mnist_mlp(): MLP 784-512-512-10, ReLU, dropout 0.2",
               lambda seed: bnn.models.mnist_mlp(seed=seed)),
}


def network_args(args, name: str) -> dict:
    """The per-network settings, ``--mlp-*`` / ``--cnn-*`` flags."""
    return {k[len(name) + 1:]: v for k, v in vars(args).items() if k.startswith(name + "_")}


def configs(s: dict, train_size: int) -> dict:
    """Method configurations from the per-network settings ``s`` (one step size each)."""
    steps = bnn.data.num_batches(train_size, s["batch_size"])
    sampling = round(s["sgmcmc_epochs"] * steps)
    thinning = max(1, sampling // s["num_samples"])
    chain = dict(batch_size=s["batch_size"], num_warmup=round(s["warmup_epochs"] * steps),
                 num_samples=max(1, sampling // thinning), thinning=thinning, init="network",
                 num_chains=1)
    fixed = dict(epochs=s["map_epochs"], batch_size=s["batch_size"],
                 validation_split=s["val_fraction"], early_stopping_patience=s["patience"] or None)
    return {
        "MAP-Adam": bnn.MAP("adam", s["adam_lr"], **fixed),
        "MAP-SGD": bnn.MAP(optax.sgd(s["sgd_lr"], momentum=0.9), **fixed),
        "SGLD": bnn.SGLD(s["sgld_step"], **chain),
        "pSGLD": bnn.PSGLD(s["psgld_step"], **chain),
        "MeanFieldVI": bnn.MeanFieldVI(
            learning_rate=s["vi_lr"], epochs=s["vi_epochs"], batch_size=s["batch_size"],
            num_samples=s["num_samples"], init_scale=s["vi_init_scale"]),
        "Ensemble": bnn.Ensemble(bnn.MAP("adam", s["adam_lr"], **fixed), s["ensemble_size"]),
        # Post hoc, from the MAP-Adam network: Laplace Redux's default recipe (last-layer
        # KFAC GGN, marginal-likelihood prior precision, linearised predictive) and SWAG
        # along SGD at MAP-SGD's rate and momentum, one collected iterate per epoch.
        "Laplace": bnn.Laplace(init="network", subset="last_layer", hessian="kron",
                               prior_precision="marglik", num_samples=s["num_samples"]),
        "SWAG": bnn.SWAG(learning_rate=s["sgd_lr"], momentum=0.9, epochs=s["swag_epochs"],
                         batch_size=s["batch_size"], num_samples=s["num_samples"],
                         init="network"),
    }


def describe(method, s: dict) -> str:
    """``repr(method)``, with the optax SGD optimiser written as the call that made it."""
    text = repr(method)
    if not isinstance(getattr(method, "optimizer", ""), str):
        text = text.replace(repr(method.optimizer), f"optax.sgd({s['sgd_lr']}, momentum=0.9)")
    return text


STEP = {"SGLD": "sgld_step", "pSGLD": "psgld_step"}  # methods whose step size is tuned
METRICS = {  # name -> (function of (probs, y), decimals kept)
    "error": (lambda probs, y: 100 * (1 - metrics.accuracy(probs, y)), 3),
    "nll": (metrics.categorical_nll, 4),
    "ece": (metrics.ece, 4),
    # 15 equal-mass bins (Nixon et al. 2019, Measuring calibration in deep learning): on
    # MNIST ~95% of predictions share the top equal-width bin, which these bins split.
    "ece_eq": (lambda probs, y: metrics.ece(probs, y, strategy="quantile"), 4),
}


def scores(probs, y) -> dict:
    """Error (%), NLL, ECE (15 equal-width bins) and equal-mass ECE of predictive
    probabilities ``probs`` on labels ``y``."""
    return {k: round(fn(probs, y), digits) for k, (fn, digits) in METRICS.items()}


def bootstrap(probs, y, num_resamples: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    """Each metric of :func:`scores` on ``num_resamples`` bootstrap resamples of the rows.

    The resamples depend only on ``len(y)`` and ``seed``, so two predictives of the same
    rows are scored on the same resamples: the spread of the difference of their replicates
    is the standard error of their difference (a paired bootstrap; Efron & Tibshirani 1993,
    *An Introduction to the Bootstrap*, ch. 6).
    """
    idx = np.random.default_rng(seed).integers(0, len(y), (num_resamples, len(y)))
    return {k: np.array([fn(probs[i], y[i]) for i in idx]) for k, (fn, _) in METRICS.items()}


def standard_errors(replicates: dict, minus: dict | None = None) -> dict:
    """Bootstrap standard error of each metric, or of its difference from ``minus``'s."""
    return {k: round(float(np.std(v - (0 if minus is None else minus[k]), ddof=1)),
                     METRICS[k][1] + 1) for k, v in replicates.items()}


def rotated(x: np.ndarray, degrees: float) -> np.ndarray:
    """Images ``x`` (NHWC) turned ``degrees`` counter-clockwise about their centre (bilinear,
    zeros outside)."""
    matrix = bnn.data.affine_matrix(x.shape[1], x.shape[2], rotation=degrees)
    return np.asarray(bnn.data.warp(x, matrix))


def test_sets(test, angles) -> dict[str, np.ndarray]:
    """The test images by name: ``test`` and ``rot<angle>`` for each of ``angles``."""
    return {"test": test.x, **{f"rot{a:g}": rotated(test.x, a) for a in angles}}


def calibration(probs, y, num_bins: int = 15) -> dict:
    """Mean top-class confidence against accuracy, overall and per equal-width bin.

    ``overconfidence`` (mean confidence - accuracy) is the signed counterpart of the ECE:
    ``Σ_b (n_b / N)(conf_b - acc_b)``; positive is over-, negative under-confidence. ``top``
    and ``rest`` pool the rows of the highest bin and of all the others.
    """
    probs = np.asarray(probs, np.float64)
    curve = metrics.reliability_curve(probs, y, num_bins=num_bins)
    conf, correct = probs.max(-1), probs.argmax(-1) == y
    top = conf >= curve.edges[-2]

    def pooled(rows):
        if not rows.any():
            return {"share": 0.0, "confidence": None, "accuracy": None}
        return {"share": round(float(rows.mean()), 4),
                "confidence": round(float(conf[rows].mean()), 5),
                "accuracy": round(float(correct[rows].mean()), 5)}

    def listed(a):
        return [None if np.isnan(v) else round(float(v), 5) for v in a]

    return {
        "mean_confidence": round(float(conf.mean()), 5),
        "accuracy": round(float(correct.mean()), 5),
        "overconfidence": round(float(conf.mean() - correct.mean()), 5),
        "top": pooled(top), "rest": pooled(~top),
        "bins": {"count": curve.count.tolist(), "confidence": listed(curve.confidence),
                 "accuracy": listed(curve.accuracy)},
    }


def fingerprint(*parts) -> str:
    """A short digest of strings and arrays (their values, shapes and dtypes)."""
    h = hashlib.sha1()
    for part in parts:
        if isinstance(part, str):
            h.update(part.encode())
        else:
            a = np.ascontiguousarray(part)
            h.update(f"{a.shape}{a.dtype}".encode())
            h.update(a.tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


def fit_cached(cache: Path | None, tag: str, model, data, method, key: int, progress):
    """``bnn.fit``, resumable: with a ``cache`` folder the run checkpoints there, and a
    finished posterior is saved and loaded instead of fitting again.

    The run is named by a :func:`fingerprint` of ``tag`` (the network's name and the method
    configuration as :func:`describe` writes it, for instance), the model (prior,
    likelihood, shapes and starting weights), the data's values and the key, so that a
    posterior is only loaded for the same model, data, configuration and key.

    Returns the posterior, with the fit's wall seconds and the 1-minute load average at its
    end in ``info["benchmark_seconds"]`` and ``info["benchmark_load"]``, and the run's digest
    (its name in the cache).
    """
    weights = model.init_position
    run = fingerprint(tag, repr(model), str(jax.tree.structure(weights)),
                      *jax.tree.leaves(weights), data.x, data.y, str(key))
    path = None if cache is None else cache / f"{run}.posterior"
    if path is not None and path.exists():
        return bnn.Posterior.load(path), run
    t0 = time.perf_counter()
    posterior = bnn.fit(model, data, method, key=key, progress=progress,
                        checkpoint=None if cache is None else cache / f"{run}.checkpoint")
    posterior.info["benchmark_seconds"] = time.perf_counter() - t0
    posterior.info["benchmark_load"] = round(os.getloadavg()[0], 2)
    if path is not None:
        posterior.save(path)
        (cache / f"{run}.checkpoint").unlink(missing_ok=True)
    return posterior, run


def predict_cached(cache: Path | None, run: str, posterior, x, draw_batch_size: int):
    """Predictive probabilities of ``posterior`` (the fit named ``run``) at ``x``, kept in
    ``cache`` if given."""
    path = None if cache is None else cache / f"{run}-{fingerprint(x)}.npy"
    if path is not None and path.exists():
        return np.load(path)
    probs = np.asarray(posterior.predict(
        x, batch_size=500, draw_batch_size=draw_batch_size).probs, np.float32)
    if path is not None:
        np.save(path, probs)
    return probs


def run_network(name: str, args, train, test, record, keep_probs) -> None:
    """Fit every method of ``--methods`` on one network; ``record(row, table)`` after each,
    and ``keep_probs(method, set_name, probs)`` for each test set of a full fit."""
    s = network_args(args, name)
    s["val_fraction"] = args.validation / train.num_examples
    fit_train, val = bnn.data.validation_split(train, s["val_fraction"])
    val_x, val_y = val.x[: args.num_val_eval], val.y[: args.num_val_eval]
    prior, likelihood = bnn.priors.FanInNormal(args.prior_scale), bnn.likelihoods.Categorical()
    model = bnn.BNN(NETWORKS[name][1](args.seed), prior, likelihood)
    cache = Path(args.cache) if args.cache else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    n = fit_train.num_examples
    sets = test_sets(test, args.shift_angles)
    start = None  # (network, seconds, digest) the samplers start from: MAP-Adam's
    map_replicates = {}  # MAP-Adam's bootstrap replicates, per test set

    def run(method_name, settings, key, origin, *, pilot=False):
        """Fit one method from ``origin`` = (model, its seconds, its digest); its row, scored
        on validation (pilots) or on test and validation, and its posterior."""
        nonlocal start, map_replicates
        method = configs(settings, n)[method_name]
        scratch = method_name in FROM_SCRATCH  # trains with MAP's validation split
        base, base_seconds, base_digest = origin
        tag = f"{name}|{args.seed}|{args.prior_scale}|{base_digest}|{describe(method, s)}"
        posterior, digest = fit_cached(
            cache, tag, base, train if scratch else fit_train, method, key, args.progress)
        seconds = posterior.info["benchmark_seconds"]
        row = {"method": method_name, "config": describe(method, s),
               "num_draws": int(posterior.num_samples),
               "fit_seconds": round(seconds, 1), "total_seconds": round(seconds + base_seconds, 1)}
        if method_name in STEP:
            row["step_size"] = settings[STEP[method_name]]
        if method_name == "Laplace":  # curvature, δ and draws; the fit's compilation aside
            row["laplace_seconds"] = round(float(posterior.info["laplace_seconds"]), 2)
            row["prior_precision"] = float(posterior.info["prior_precision"])
        if scratch:  # arrays of the members for an ensemble
            row["best_epoch"] = np.asarray(posterior.info["best_epoch"]).tolist()
            row["epochs_run"] = np.asarray(posterior.info["epochs_run"]).tolist()
        if not pilot:
            for set_name, x in sets.items():
                probs = predict_cached(cache, digest, posterior, x, args.draw_batch_size)
                keep_probs(method_name, set_name, probs)
                replicates = bootstrap(probs, test.y, args.bootstrap)
                scored = {**scores(probs, test.y), "se": standard_errors(replicates)}
                if method_name == "MAP-Adam":
                    map_replicates[set_name] = replicates
                elif set_name in map_replicates:  # paired bootstrap SE of the difference
                    scored["vs_map"] = standard_errors(replicates, minus=map_replicates[set_name])
                if set_name != "test":
                    row.setdefault("shifted", {})[set_name] = scored
                    continue
                if "vs_map" in scored:
                    row["vs_map"] = scored.pop("vs_map")
                row["test"] = scored
                row["test_calibration"] = calibration(probs, test.y)
            if method_name == "MAP-Adam":
                start = (network(posterior, 0), seconds, digest)
        probs = predict_cached(cache, digest, posterior, val_x, args.draw_batch_size)
        row["validation"] = scores(probs, val_y)
        row["load_average_1min"] = posterior.info["benchmark_load"]
        return row, posterior, digest

    def network(posterior, draw):
        """The model with the weights of one draw."""
        return bnn.BNN(model.network(posterior.point(0, draw)), prior, likelihood)

    for i, method_name in enumerate(m for m in METHODS if m in args.methods):
        scratch = method_name in FROM_SCRATCH
        if not scratch and start is None:
            raise ValueError(f"{method_name} starts from the MAP-Adam network: run MAP-Adam too")
        settings = {k: v[0] if isinstance(v, list) else v for k, v in s.items()}
        origin, key = ((model, 0.0, "") if scratch else start), args.seed + i
        if method_name in STEP and len(s[STEP[method_name]]) > 1:
            # Pilot chains from the MAP network, one per step size, scored on validation;
            # the full chain continues the best one from its last position.
            pilots = []
            for step in s[STEP[method_name]]:
                pilot = {**settings, STEP[method_name]: step, "sgmcmc_epochs": s["tune_epochs"],
                         "warmup_epochs": s["tune_warmup_epochs"],
                         "num_samples": s["tune_num_samples"]}
                pilots.append(run(method_name, pilot, key, start, pilot=True))
                print(name, "pilot", json.dumps(pilots[-1][0]), flush=True)
                record(name, s, pilots[-1][0], "tuning")
            best, posterior, digest = min(pilots, key=lambda p: p[0]["validation"]["nll"])
            settings[STEP[method_name]] = best["step_size"]
            origin = (network(posterior, -1), best["total_seconds"], digest)
            key += 1000  # noise of its own, not a replay of the pilot's
        row = run(method_name, settings, key, origin)[0]
        print(name, json.dumps(row), flush=True)
        record(name, s, row, "rows")


def lower(difference: float, se: float, critical: float = 2.0) -> str:
    """``"yes"`` if ``difference`` < -``critical`` ``se``, ``"no"`` if > ``critical`` ``se``,
    else ``"tie"``."""
    if difference < -critical * se:
        return "yes"
    return "no" if difference > critical * se else "tie"


def goals(rows: list[dict]) -> dict:
    """Issue goals: SGLD at least as accurate as MAP-Adam, with lower NLL and ECE (by more
    than two paired bootstrap standard errors); Laplace and SWAG with lower NLL and ECE,
    Laplace's fit costing at most 20% of MAP-Adam's."""
    by = {r["method"]: r for r in rows}
    if "MAP-Adam" not in by:
        return {}
    ref = by["MAP-Adam"]

    def below(method, k):
        se = by[method].get("vs_map")
        return ("not decided (no paired SE)" if se is None
                else lower(by[method]["test"][k] - ref["test"][k], se[k]))

    result = {}
    if "SGLD" in by:
        error = by["SGLD"]["test"]["error"]
        result |= {"sgld_error_le_map": "yes" if error <= ref["test"]["error"] else "no",
                   "sgld_nll_below_map": below("SGLD", "nll"),
                   "sgld_ece_below_map": below("SGLD", "ece"),
                   "sgld_error_le_1.5": "yes" if error <= 1.5 else "no"}
    for m in ("Laplace", "SWAG"):
        if m in by:
            result |= {f"{m.lower()}_{k}_below_map": below(m, k) for k in ("nll", "ece")}
    if "Laplace" in by:
        ratio = by["Laplace"]["fit_seconds"] / ref["fit_seconds"]
        result["laplace_cost_le_20pct"] = f"{'yes' if ratio <= 0.2 else 'no'} ({ratio:.3f})"
    return result


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
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    path = out / "mnist.json"
    result = json.loads(path.read_text()) if path.exists() else {"networks": {}}
    result.update(machine=machine("numpyro", "blackjax"), data=source, published=PUBLISHED)
    for name in args.networks:
        result["networks"][name] = {
            "network": NETWORKS[name][0], "num_train": train.num_examples - args.validation,
            "num_validation": args.validation, "num_val_eval": args.num_val_eval,
            "num_test": test.num_examples, "prior": f"FanInNormal({args.prior_scale})",
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": [],
            "tuning": [], "note": args.note,
        }

    stored = {}  # predictive probabilities on the test sets, for --save-probs
    if args.save_probs and (out / "mnist_probs.npz").exists():
        with np.load(out / "mnist_probs.npz") as f:  # other networks' are kept
            if np.array_equal(f["y"], test.y):
                stored.update({k: f[k] for k in f.files})

    def keep_probs(name, method, set_name, probs):
        if args.save_probs:
            stored[f"{name}/{method}/{set_name}"] = probs
            stored["y"] = test.y
            np.savez_compressed(out / "mnist_probs.npz", **stored)

    def record(name, settings, row, table):
        net = result["networks"][name]
        net["settings"] = {k: v for k, v in settings.items() if k != "val_fraction"}
        net[table].append(row)
        result["machine"]["load_average_1min"] = row["load_average_1min"]
        write(out, result)

    for name in args.networks:
        run_network(name, args, train, test, record,
                    lambda *a, name=name: keep_probs(name, *a))
    return result


def _pm(scored: dict, key: str, digits: int) -> str:
    """``value ± se`` (just the value for rows recorded without standard errors)."""
    se = scored.get("se", {}).get(key)
    return f"{scored[key]:.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")


def _pooled(part: dict) -> str:
    if part["confidence"] is None:
        return "0 | | "
    return f"{part['share']:.3f} | {part['confidence']:.4f} | {part['accuracy']:.4f}"


def write(out: Path, result: dict) -> None:
    m = result["machine"]
    lines = [
        "# MNIST: MAP vs SGLD vs pSGLD vs mean-field VI",
        "",
        f"{machine_line(m, 'numpyro', 'blackjax')} (a shared machine). Data: {result['data']}.",
        "",
        "Test error (%), NLL (nats) and ECE (15 bins) of the posterior predictive, ± a bootstrap "
        "standard error where recorded; *conf − acc*: mean top-class confidence minus accuracy "
        "(> 0 over-, < 0 under-confident); validation columns on held-out training examples "
        "(for choosing settings, never test). SGLD, pSGLD and VI start from the MAP-Adam "
        "network; *total s* includes that MAP fit; *load*: 1-minute load average after the row.",
    ]
    for net in result["networks"].values():
        if goals(net["rows"]):  # by the current definition, also for older records
            net["goals"] = goals(net["rows"])
        lines += [
            "", f"## {net['network']}", "",
            f"{net['num_train']} training examples ({net['num_validation']} more held out, the "
            f"first {net['num_val_eval']} of them scored), {net['num_test']} test examples; "
            f"prior {net['prior']}; run started {net['started']}. {net.get('note') or ''}", "",
            "| method | draws | test error % | test NLL | test ECE | conf − acc | val error % | "
            "val NLL | val ECE | fit s | total s | load |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in net["rows"]:
            t, v, c = r["test"], r["validation"], r.get("test_calibration")
            lines.append(
                f"| {r['method']} | {r['num_draws']} | {_pm(t, 'error', 2)} | {_pm(t, 'nll', 4)} "
                f"| {_pm(t, 'ece', 4)} | {'' if c is None else format(c['overconfidence'], '+.4f')}"
                f" | {v['error']:.2f} | {v['nll']:.4f} | {v['ece']:.4f} | "
                f"{r['fit_seconds']:.0f} | {r['total_seconds']:.0f} | "
                f"{r.get('load_average_1min', '')} |"
            )
        paired = [r for r in net["rows"] if "vs_map" in r]
        ref = next((r["test"] for r in net["rows"] if r["method"] == "MAP-Adam"), None)
        if paired and ref is not None:
            lines += ["", "Test-set differences from MAP-Adam ± paired bootstrap standard error "
                      "(the same resamples for every method):", ""]
            for r in paired:
                lines.append(f"- {r['method']} − MAP-Adam: " + ", ".join(
                    f"{k} {r['test'][k] - ref[k]:+.{d}f} ± {r['vs_map'][k]:.{d}f}"
                    for k, d in (("error", 2), ("nll", 4), ("ece", 4), ("ece_eq", 4))
                    if k in r["vs_map"]))
        calibrated = [r for r in net["rows"] if "test_calibration" in r]
        if calibrated:
            lines += ["", "Test reliability: mean confidence against accuracy, overall, in the "
                      "top confidence bin (≥ 14/15) and in the other 14 bins pooled:", "",
                      "| method | mean conf | accuracy | conf − acc | top share | top conf | "
                      "top acc | rest share | rest conf | rest acc |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for r in calibrated:
                c = r["test_calibration"]
                lines.append(f"| {r['method']} | {c['mean_confidence']:.4f} | "
                             f"{c['accuracy']:.4f} | {c['overconfidence']:+.4f} | "
                             f"{_pooled(c['top'])} | {_pooled(c['rest'])} |")
        shifted = [r for r in net["rows"] if "shifted" in r]
        if shifted:
            lines += ["", "Rotated test images (covariate shift), ± bootstrap SE; *vs MAP*: "
                      "difference from MAP-Adam ± paired SE:", "",
                      "| test set | method | error % | NLL | ECE | ECE vs MAP |",
                      "|---|---|---:|---:|---:|---:|"]
            ref = next((r["shifted"] for r in shifted if r["method"] == "MAP-Adam"), None)
            for set_name in shifted[0]["shifted"]:
                for r in shifted:
                    t = r["shifted"][set_name]
                    vs = "" if "vs_map" not in t else (
                        f"{t['ece'] - ref[set_name]['ece']:+.4f} ± {t['vs_map']['ece']:.4f}")
                    lines.append(f"| {set_name} | {r['method']} | {_pm(t, 'error', 2)} | "
                                 f"{_pm(t, 'nll', 4)} | {_pm(t, 'ece', 4)} | {vs} |")
        if net.get("tuning"):
            lines += ["", "Step-size pilots (validation only; the full chain uses the step of "
                      "lowest validation NLL):", "",
                      "| method | step size | draws | val error % | val NLL | val ECE | fit s |",
                      "|---|---:|---:|---:|---:|---:|---:|"]
            lines += [f"| {r['method']} | {r['step_size']:g} | {r['num_draws']} | "
                      f"{r['validation']['error']:.2f} | {r['validation']['nll']:.4f} | "
                      f"{r['validation']['ece']:.4f} | {r['fit_seconds']:.0f} |"
                      for r in net["tuning"]]
        if net.get("goals"):
            lines += ["", "Goals: " + "; ".join(
                f"{GOALS[k]}: {v}" for k, v in net["goals"].items())]
        if net.get("settings"):
            lines += ["", "Settings: " + ", ".join(f"{k}={v}" for k, v in net["settings"].items())]
        lines += ["", "Configurations:", ""] + [f"- `{r['config']}`" for r in net["rows"]]
    lines += ["", "## Published (400-400 MLP, full 60k training set)", "",
              "| method | test error % | source |", "|---|---:|---|"]
    lines += [f"| {p['method']} | {p['error']:.2f} | {p['source']} |" for p in result["published"]]
    save_results(out, "mnist", result, lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[
        flags(quick="tiny sizes, for make bench", seed=True)])
    p.add_argument("--data", default=None, help="MNIST .npz or IDX folder (default: random)")
    p.add_argument("--networks", nargs="+", choices=tuple(NETWORKS), default=["mlp", "cnn"])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--num-train", type=int, default=60000, help="first N training examples")
    p.add_argument("--num-test", type=int, default=10000)
    p.add_argument("--validation", type=int, default=10000, help="held out from the training set")
    p.add_argument("--num-val-eval", type=int, default=2000, help="validation examples scored")
    p.add_argument("--prior-scale", type=float, default=2.0)
    p.add_argument("--progress", action="store_true", help="progress bars")
    p.add_argument("--note", default="", help="a remark printed with the results (budget, ...)")
    p.add_argument("--cache", default="", help="folder for checkpoints, posteriors and "
                   "predictions: a rerun resumes from it (default: none)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of the test set")
    p.add_argument("--draw-batch-size", type=int, default=8,
                   help="draws evaluated at once (times 500 inputs)")
    p.add_argument("--shift-angles", type=float, nargs="*", default=[],
                   help="also score on the test images rotated by these degrees")
    p.add_argument("--save-probs", action="store_true",
                   help="write the test-set predictives to mnist_probs.npz (mnist_pool.py)")
    # Step sizes are lists: with several, pilot chains choose one on validation NLL.
    # patience: MAP stops after that many epochs without a better validation loss (0: never).
    mlp = dict(batch_size=100, map_epochs=30, patience=0, adam_lr=1e-3, sgd_lr=0.01,
               sgld_step=[1e-6], psgld_step=[4e-9], warmup_epochs=1.0, sgmcmc_epochs=20.0,
               num_samples=40, tune_warmup_epochs=1.0, tune_epochs=2.0, tune_num_samples=10,
               vi_epochs=20, vi_lr=1e-3, vi_init_scale=1e-3, ensemble_size=5, swag_epochs=10)
    for net, d in {
        "mlp": mlp, "mlp512": mlp,
        "cnn": dict(batch_size=128, map_epochs=3, patience=0, adam_lr=1e-3, sgd_lr=0.01,
                    sgld_step=[1e-6], psgld_step=[4e-9], warmup_epochs=0.25, sgmcmc_epochs=2.0,
                    num_samples=10, tune_warmup_epochs=1.0, tune_epochs=2.0, tune_num_samples=10,
                    vi_epochs=2, vi_lr=1e-3, vi_init_scale=1e-3, ensemble_size=5,
                    swag_epochs=2),
    }.items():
        for k, v in d.items():
            many = dict(type=float, nargs="+") if isinstance(v, list) else dict(type=type(v))
            p.add_argument(f"--{net}-{k.replace('_', '-')}", default=v, **many)
    args = p.parse_args(argv)
    if args.quick:
        args.num_train, args.num_test, args.validation = min(args.num_train, 1200), min(
            args.num_test, 500), min(args.validation, 200)
        args.num_val_eval = min(args.num_val_eval, 200)
        for net in NETWORKS:
            for k, v in dict(map_epochs=1, sgmcmc_epochs=1.0, warmup_epochs=0.5, num_samples=4,
                             vi_epochs=1, tune_epochs=0.5, tune_warmup_epochs=0.5,
                             tune_num_samples=2, ensemble_size=2, swag_epochs=2).items():
                setattr(args, f"{net}_{k}", v)
    if args.validation >= args.num_train:
        p.error("--validation must be smaller than --num-train")
    return args


if __name__ == "__main__":
    main(parse_args())

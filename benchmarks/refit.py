"""A second fit of the same architecture and method: its wall time over the first's.

On a small regression problem (diabetes-sized: 442 examples, 10 features, an MLP of one
hidden layer of 50), MAP (200 epochs, batch 32, a validation split), SGLD (2000 warm-up
steps, 200 draws), SGLD and MCLMC with their defaults (ensemble starts, chosen step sizes,
diagnostics), SWAG (20 epochs, its default learning rate from the curvature) and a
last-layer KFAC Laplace (marginal-likelihood prior precision) from the network's weights.
Each round forgets the kept chunk programs
(:func:`bayesnn.inference.programs.clear_programs`) and every other compiled program
(``jax.clear_caches``), fits once (compiling), then fits again
with other initial weights, other data of the same shape and another key (reusing the
program). The goal: second ÷ first ≤ 0.35 for each. Writes ``refit.json`` and ``refit.md``
to ``--out``.

    python -m benchmarks.refit --out benchmarks/results
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from flax import nnx

import bayesnn as bnn
from bayesnn.inference.programs import clear_programs
from benchmarks.common import flags, machine, machine_line, save_results

GOAL = 0.35
METHODS = {
    "MAP": bnn.MAP(epochs=200, batch_size=32, validation_split=0.2),
    "SGLD": bnn.SGLD(step_size=1e-5, batch_size=32, num_samples=200, num_warmup=2000,
                     num_chains=1, init="random"),
    "SGLD()": bnn.SGLD(),
    "MCLMC()": bnn.MCLMC(),
    "SWAG": bnn.SWAG(epochs=20, num_samples=20, init="network"),
    "Laplace": bnn.Laplace(init="network", prior_precision="marglik"),
}


def problem(seed: int, n: int = 442, d: int = 10):
    """A model with initial weights from ``seed`` and data of ``seed`` (same shapes)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (np.tanh(x @ rng.normal(size=(d, 1))) + 0.3 * rng.normal(size=(n, 1))).astype(np.float32)
    net = bnn.models.MLP(d, (50,), 1, rngs=nnx.Rngs(seed))
    return bnn.BNN(net, likelihood=bnn.likelihoods.Gaussian(0.3)), (x, y)


def fit_seconds(method, seed: int) -> float:
    model, data = problem(seed)
    t = time.perf_counter()
    post = bnn.fit(model, data, method, key=seed, progress=False)
    post.point()  # the draws are on the host already; this waits for nothing else
    return time.perf_counter() - t


def main(args) -> dict:
    rows = {}
    for name, method in METHODS.items():
        first, second = [], []
        for r in range(args.repeats):
            clear_programs()
            jax.clear_caches()
            first.append(fit_seconds(method, 2 * r))
            second.append(fit_seconds(method, 2 * r + 1))
        ratio = float(np.median(second) / np.median(first))
        rows[name] = {"first_s": [round(s, 3) for s in first],
                      "second_s": [round(s, 3) for s in second],
                      "ratio_median": round(ratio, 3), "goal": GOAL, "met": ratio <= GOAL}
        print(name, rows[name], flush=True)
    result = {"machine": machine("flax", "optax"), "repeats": args.repeats, "methods": rows}
    write(args.out, result)
    return result


def write(out, result: dict) -> None:
    lines = ["# Second fit ÷ first fit (same architecture and method)", "",
             f"{machine_line(result['machine'], 'flax', 'optax')}; {result['repeats']} rounds.",
             "", "Each round forgets the kept chunk programs, fits once, then fits again with "
             "other initial weights, other same-shaped data and another key.", "",
             "| method | first fit (s, median) | second fit (s, median) | second ÷ first | "
             f"goal ≤ {GOAL} |", "|---|---:|---:|---:|---|"]
    lines += [f"| {name} | {np.median(r['first_s']):.2f} | {np.median(r['second_s']):.3f} | "
              f"{r['ratio_median']:.3f} | {'met' if r['met'] else 'not met'} |"
              for name, r in result["methods"].items()]
    save_results(out, "refit", result, lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                parents=[flags(repeats=3)])
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

"""What the automatic step size and the diagnostics add to a long SG-MCMC run.

In one process, interleaved (:func:`benchmarks.common.interleaved`): ``SGHMC()``'s chosen
step size and adapted preconditioner (curvature at the start and after each of the four
warm-up windows, the gradients' second moments accumulated in warm-up, ``G`` applied at
every step; five driver runs instead of one) against the same run with a given step size
(one driver run, no curvature, ``G = 1``: the step size ``SGHMC()`` starts from, stable
without ``G``); both
from the network's own weights (``init="network"``, so no MAP fits are timed) and both
with the after-run diagnostics (prediction R-hat and ESS, drift checks), which are then
timed alone on the draws. The overhead is
``(auto − given + diagnostics) / (given − diagnostics)``. Writes ``speed_sgmcmc_auto.json``
and ``.md`` to ``--out``.

    python -m benchmarks.speed_sgmcmc_auto --out benchmarks/results

On a small shared CPU, pin it to one core and one XLA thread (``taskset -c 1`` with
``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"``): on
two threads single runs of this small network spread by ±15%, which hides 5%.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from flax import nnx

import bayesnn as bnn
from bayesnn.inference.diagnostics import prediction_diagnostics
from benchmarks.common import flags, interleaved, machine, machine_line, save_results


def problem(args):
    """Synthetic regression data and a one-hidden-layer MLP with a learned noise scale."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.num_examples, args.features)).astype(np.float32)
    y = (np.sin(x @ rng.standard_normal((args.features, 1)))
         + 0.1 * rng.standard_normal((args.num_examples, 1))).astype(np.float32)
    net = bnn.models.MLP(args.features, (args.hidden,), 1, rngs=nnx.Rngs(0))
    return bnn.BNN(net, likelihood=bnn.likelihoods.Gaussian(learn_scale=True)), (x, y)


def main(args) -> dict:
    model, data = problem(args)
    common = dict(num_samples=args.num_samples, thinning=args.thinning,
                  num_warmup=args.num_warmup, init="network")
    auto = bnn.SGHMC(**common)
    chosen = bnn.fit(model, data, auto, key=0, progress=False)
    start = auto.stable_step_size(chosen.info["curvature"]["start"])  # for G = 1
    given = bnn.SGHMC(step_size=float(np.median(start)), **common)

    def fit(config):
        return lambda key: jax.tree.leaves(bnn.fit(model, data, config, key=key,
                                                   progress=False).draws)

    times = interleaved({"auto": fit(auto), "given": fit(given)}, args.repeats)
    post = bnn.fit(model, data, given, key=1, progress=False)
    diag = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        prediction_diagnostics(model, post.draws, data[0], "SGHMC")
        diag.append(time.perf_counter() - t0)
    auto_s, given_s, diag_s = (float(np.median(v)) for v in
                               (times["auto"]["wall"], times["given"]["wall"], diag))
    overhead = (auto_s - given_s + diag_s) / (given_s - diag_s)
    steps = given.kept_steps(args.num_examples).size
    result = {"machine": machine(), "args": vars(args) | {"out": str(args.out)},
              "steps": steps, "seconds": times, "diagnostics_seconds": diag,
              "auto_median_s": auto_s, "given_median_s": given_s, "diagnostics_median_s": diag_s,
              "overhead": overhead, "goal": "overhead <= 0.05"}
    lines = ["# Automatic step size and diagnostics: cost in a long SGHMC run", "",
             machine_line(result["machine"]), "",
             f"{steps} steps per run ({args.num_warmup} warm-up), 4 chains, "
             f"{args.num_examples} examples, batch 32, MLP({args.features}, {args.hidden}, 1); "
             f"median wall seconds of {args.repeats} interleaved runs.", "",
             "| SGHMC() auto | SGHMC(step_size) | diagnostics alone | overhead | goal |",
             "| --- | --- | --- | --- | --- |",
             f"| {auto_s:.2f} | {given_s:.2f} | {diag_s:.3f} | {overhead:+.1%} | ≤ 5%: "
             f"{'met' if overhead <= 0.05 else 'missed'} |"]
    save_results(args.out, "speed_sgmcmc_auto", result, lines)
    print("\n".join(lines))
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[flags(repeats=3)])
    p.add_argument("--num-examples", type=int, default=2000)
    p.add_argument("--features", type=int, default=10)
    p.add_argument("--hidden", type=int, default=50)
    p.add_argument("--num-warmup", type=int, default=5000)
    p.add_argument("--num-samples", type=int, default=200)
    p.add_argument("--thinning", type=int, default=100)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

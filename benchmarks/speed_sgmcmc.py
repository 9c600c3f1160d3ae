"""Time per SGLD step: bayesnn vs a hand-written BlackJAX loop vs a plain optax SGD step.

All three take one minibatch gradient of the same network per step, in the same
process. The BlackJAX and optax loops are jitted ``lax.scan``s drawing a minibatch per
step (uniform indices with replacement, the cheapest way). bayesnn is timed on a
``fit``'s chunks after the first (which compiles), driver overhead between chunks
included; the two loops on as many scans of the same number of steps, after compiling.
The figures are the fastest chunk of each (medians in the JSON), as the machine may be
shared. Writes ``speed_sgmcmc.json`` and ``speed_sgmcmc.md`` to ``--out``.

    python benchmarks/speed_sgmcmc.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from machine import machine  # noqa: I001 (benchmarks/machine.py)

import bayesnn as bnn
from bayesnn.bnn import Batch
from bayesnn.inference import sgmcmc
from bayesnn.inference.sgmcmc import SGLD


def problem(args):
    """Synthetic regression data and an MLP BNN sized by the flags."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.num_examples, args.features)).astype(np.float32)
    y = (x @ rng.standard_normal((args.features, 1)) / np.sqrt(args.features)
         + 0.1 * rng.standard_normal((args.num_examples, 1))).astype(np.float32)
    net = bnn.models.MLP(args.features, tuple(args.hidden), 1, rngs=nnx.Rngs(0))
    model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=1.0))
    return model, (x, y)


def fit_chunk_seconds(model, data, method) -> tuple[np.ndarray, int]:
    """Durations of a ``fit``'s chunks after the first (which compiles), and their steps."""
    stamps, run_chunks = [], sgmcmc.run_chunks

    def timed(*args, **kwargs):  # run_chunks with a callback that notes when chunks end
        return run_chunks(*args, **kwargs, callback=lambda *_: stamps.append(time.perf_counter()))

    sgmcmc.run_chunks = timed
    try:
        post = bnn.fit(model, data, method, key=0, progress=False)
    finally:
        sgmcmc.run_chunks = run_chunks
    return np.diff(stamps), post.info["steps_per_chunk"]


def loop_chunk_seconds(step, init, steps: int, repeats: int, n: int, b: int, x, y) -> np.ndarray:
    """Durations of ``repeats`` jitted scans of ``steps`` calls of ``step(state, key, batch)``
    on random minibatches, after compilation."""

    @jax.jit
    def run(state, key):
        def body(state, k):
            k_idx, k_step = jax.random.split(k)
            idx = jax.random.randint(k_idx, (b,), 0, n)  # cheapest sampling: with replacement
            return step(state, k_step, Batch(x[idx], y[idx])), None

        return jax.lax.scan(body, state, jax.random.split(key, steps))[0]

    state = jax.block_until_ready(run(init, jax.random.key(0)))  # compile
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        state = jax.block_until_ready(run(state, jax.random.key(i + 1)))
        times.append(time.perf_counter() - t0)
    return np.array(times)


def main(args) -> dict:
    model, (x, y) = problem(args)
    n, b, eps = args.num_examples, args.batch_size, args.step_size
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    position = model.init_position
    grad_fn = jax.grad(model.logdensity_fn)

    method = SGLD(eps, batch_size=b, num_samples=10, num_warmup=args.steps, thinning=1)
    seconds = {}
    seconds["bayesnn"], steps = fit_chunk_seconds(model, (x, y), method)
    chunks = len(seconds["bayesnn"])

    # BlackJAX: its step size h is half the papers' ε used by bayesnn.
    sgld = blackjax.sgld(lambda p, batch: grad_fn(p, batch, n))
    seconds["blackjax"] = loop_chunk_seconds(
        lambda p, k, batch: sgld.step(k, p, batch, eps / 2), position, steps, chunks, n, b,
        xj, yj,
    )
    tx = optax.sgd(eps / 2)

    def sgd_step(state, k, batch):
        p, opt_state = state
        grads = jax.tree.map(jnp.negative, grad_fn(p, batch, n))
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state

    seconds["optax_sgd"] = loop_chunk_seconds(
        sgd_step, (position, tx.init(position)), steps, chunks, n, b, xj, yj
    )
    us = {k: 1e6 * float(np.min(v)) / steps for k, v in seconds.items()}
    result = {
        "machine": machine("blackjax", "optax"),
        "sizes": {
            "num_examples": n, "features": args.features, "hidden": list(args.hidden),
            "batch_size": b, "steps": args.steps, "steps_per_chunk": steps,
            "chunks_timed": chunks, "num_params": bnn.tree.tree_size(position),
        },
        "us_per_step": {k: round(v, 2) for k, v in us.items()},
        "us_per_step_median": {
            k: round(1e6 * float(np.median(v)) / steps, 2) for k, v in seconds.items()
        },
        "ratio_bayesnn_to_blackjax": round(us["bayesnn"] / us["blackjax"], 3),
        "ratio_bayesnn_to_optax_sgd": round(us["bayesnn"] / us["optax_sgd"], 3),
    }
    write(Path(args.out), result)
    print(json.dumps(result, indent=2))
    return result


def write(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed_sgmcmc.json").write_text(json.dumps(result, indent=2) + "\n")
    m, s, us = result["machine"], result["sizes"], result["us_per_step"]
    lines = [
        "# SGLD step time",
        "",
        f"{m['cpu']}, {m['cores']} cores (load average {m['load_average_1min']}), "
        f"{m['device']}; jax {m['jax']}, blackjax {m['blackjax']}, optax {m['optax']}.",
        f"MLP {s['features']}-{'-'.join(map(str, s['hidden']))}-1 ({s['num_params']} weights), "
        f"{s['num_examples']} examples, batch {s['batch_size']}; fastest of "
        f"{s['chunks_timed']} chunks of {s['steps_per_chunk']} steps.",
        "",
        "| loop | µs / step | bayesnn ÷ loop |",
        "|---|---:|---:|",
    ]
    for name in ("bayesnn", "blackjax", "optax_sgd"):
        lines.append(f"| {name} | {us[name]:.1f} | {us['bayesnn'] / us[name]:.2f} |")
    (out / "speed_sgmcmc.md").write_text("\n".join(lines) + "\n")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-examples", type=int, default=1000)
    p.add_argument("--features", type=int, default=10)
    p.add_argument("--hidden", type=int, nargs="*", default=[50])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--step-size", type=float, default=1e-6)
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--out", default="benchmarks/results")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

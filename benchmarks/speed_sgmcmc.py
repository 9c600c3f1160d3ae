"""Time per SGLD step: bayesnn vs a hand-written BlackJAX loop vs a plain optax SGD step.

All take one minibatch gradient of the same network per step, in the same process. The
BlackJAX and optax loops are jitted ``lax.scan``s drawing a minibatch per step (uniform
indices with replacement, the cheapest way). A fourth loop runs bayesnn's SGLD kernel
(:func:`bayesnn.inference.sgld.sgld`) in the same minimal loop: bayesnn ÷ that loop is
what the sampler's driver costs (minibatch shuffling, chains under ``vmap``, the draw
buffer, finiteness checks), that loop ÷ SGD what the kernel, i.e. its Gaussian noise,
costs.

bayesnn is timed on a ``fit``'s chunks after the first (which compiles), driver overhead
between chunks included. After each chunk, the callback runs one scan of the same number
of steps of every loop, so all four are timed interleaved, under the same load of a shared
machine. Reported: the fastest chunk of each (wall clock), and the median process CPU time
per chunk, which other processes disturb less (it counts both threads of XLA's matmuls, so
its ratios differ from those of an idle machine's wall clock). With ``--repeats R`` the
whole measurement runs R times; each figure is then the median over the repeats, and the
ratios of every repeat are listed (on a shared 2-core machine SGLD ÷ SGD moves by ±0.1
from run to run). Writes ``speed_sgmcmc.json`` and ``speed_sgmcmc.md`` to ``--out``.

    python -m benchmarks.speed_sgmcmc --out benchmarks/results
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

import bayesnn as bnn
from bayesnn.bnn import Batch
from bayesnn.inference import driver
from bayesnn.inference.sgld import SGLD
from bayesnn.inference.sgld import sgld as sgld_kernel
from benchmarks.common import flags, machine, machine_line, save_results


def problem(args):
    """Synthetic regression data and an MLP BNN sized by the flags."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.num_examples, args.features)).astype(np.float32)
    y = (x @ rng.standard_normal((args.features, 1)) / np.sqrt(args.features)
         + 0.1 * rng.standard_normal((args.num_examples, 1))).astype(np.float32)
    net = bnn.models.MLP(args.features, tuple(args.hidden), 1, rngs=nnx.Rngs(0))
    model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=1.0))
    return model, (x, y)


def loop(step, init, steps: int, n: int, b: int, x, y):
    """Compile a jitted scan of ``steps`` calls of ``step(state, key, batch)`` on random
    minibatches; each call ``chunk(i)`` of the result runs it once more, carrying the
    state, and returns its wall and CPU seconds."""

    @jax.jit
    def run(state, key):
        def body(state, k):
            k_idx, k_step = jax.random.split(k)
            idx = jax.random.randint(k_idx, (b,), 0, n)  # cheapest sampling: with replacement
            return step(state, k_step, Batch(x[idx], y[idx])), None

        return jax.lax.scan(body, state, jax.random.split(key, steps))[0]

    state = [jax.block_until_ready(run(init, jax.random.key(0)))]  # compile

    def chunk(i):
        t0, c0 = time.perf_counter(), time.process_time()
        state[0] = jax.block_until_ready(run(state[0], jax.random.key(i + 1)))
        return time.perf_counter() - t0, time.process_time() - c0

    return chunk


def interleaved_seconds(model, data, method, loops: dict) -> tuple[dict, int]:
    """(wall, CPU) seconds of a ``fit``'s chunks after the first and, after each chunk, of
    one chunk of every loop ``loops[name](steps)`` (see :func:`loop`); and the steps per
    chunk."""
    times = {name: [] for name in ("bayesnn", *loops)}
    chunks, last, steps, run_chunks = {}, [], [], driver.run_chunks

    def callback(i, state, out):
        now = time.perf_counter(), time.process_time()
        if last:
            times["bayesnn"].append((now[0] - last[0][0], now[1] - last[0][1]))
        else:  # after the first chunk: compile the loops for its length
            chunks.update({name: make(steps[0]) for name, make in loops.items()})
        for name, chunk in chunks.items():
            times[name].append(chunk(i))
        last[:] = [(time.perf_counter(), time.process_time())]

    def run_timed(*args, **kwargs):
        steps.append(kwargs["steps_per_chunk"])
        return run_chunks(*args, **kwargs, callback=callback)

    driver.run_chunks = run_timed
    try:
        post = bnn.fit(model, data, method, key=0, progress=False)
    finally:
        driver.run_chunks = run_chunks
    return {k: np.array(v) for k, v in times.items()}, post.info["steps_per_chunk"]


def main(args) -> dict:
    model, (x, y) = problem(args)
    n, b, eps = args.num_examples, args.batch_size, args.step_size
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    position = model.init_position
    grad_fn = jax.grad(model.logdensity_fn)
    # BlackJAX: its step size h is half the papers' ε used by bayesnn.
    sgld = blackjax.sgld(lambda p, batch: grad_fn(p, batch, n))
    tx = optax.sgd(eps / 2)

    def sgd_step(state, k, batch):
        p, opt_state = state
        grads = jax.tree.map(jnp.negative, grad_fn(p, batch, n))
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state

    kernel = sgld_kernel()

    def kernel_step(p, k, batch):
        return kernel.step(k, kernel.init(p), grad_fn(p, batch, n), eps)[0].position

    sgd_init = (position, tx.init(position))
    loops = {
        "blackjax": lambda steps: loop(lambda p, k, batch: sgld.step(k, p, batch, eps / 2),
                                       position, steps, n, b, xj, yj),
        "optax_sgd": lambda steps: loop(sgd_step, sgd_init, steps, n, b, xj, yj),
        "sgld_kernel": lambda steps: loop(kernel_step, position, steps, n, b, xj, yj),
    }
    method = SGLD(eps, batch_size=b, num_samples=10, num_warmup=args.steps, thinning=1,
                  num_chains=1, init="random")
    repeats = [per_step(*interleaved_seconds(model, (x, y), method, loops))
               for _ in range(args.repeats)]
    us, median, cpu = ({k: float(np.median([r[i][k] for r in repeats])) for k in repeats[0][i]}
                       for i in range(3))

    def ratio(stat: int, baseline: str) -> tuple[float, list[float]]:
        """Median over the repeats of bayesnn ÷ ``baseline`` (statistic ``stat`` of
        :func:`per_step`), and each repeat's."""
        each = [round(r[stat]["bayesnn"] / r[stat][baseline], 3) for r in repeats]
        return round(float(np.median(each)), 3), each

    steps, chunks = repeats[0][3], repeats[0][4]
    result = {
        "machine": machine("blackjax", "optax"),
        "sizes": {
            "num_examples": n, "features": args.features, "hidden": list(args.hidden),
            "batch_size": b, "steps": args.steps, "steps_per_chunk": steps,
            "chunks_timed": chunks, "num_params": bnn.tree.tree_size(position),
            "repeats": args.repeats,
        },
        "us_per_step": {k: round(v, 2) for k, v in us.items()},
        "us_per_step_median": {k: round(v, 2) for k, v in median.items()},
        "cpu_us_per_step_median": {k: round(v, 2) for k, v in cpu.items()},
    }
    for name, stat, baseline in (("ratio_bayesnn_to_blackjax", 0, "blackjax"),
                                 ("ratio_bayesnn_to_optax_sgd", 0, "optax_sgd"),
                                 ("ratio_bayesnn_to_sgld_kernel", 0, "sgld_kernel"),
                                 ("cpu_ratio_bayesnn_to_optax_sgd", 2, "optax_sgd")):
        result[name], result[f"{name}_repeats"] = ratio(stat, baseline)
    write(args.out, result)
    print(json.dumps(result, indent=2))
    return result


def per_step(times: dict, steps: int) -> tuple[dict, dict, dict, int, int]:
    """µs per step of each loop from :func:`interleaved_seconds`: the fastest chunk's and
    the median chunk's wall clock and the median chunk's CPU time; the steps per chunk and
    the chunks timed."""
    fastest = {k: 1e6 * float(np.min(v[:, 0])) / steps for k, v in times.items()}
    median = {k: 1e6 * float(np.median(v[:, 0])) / steps for k, v in times.items()}
    cpu = {k: 1e6 * float(np.median(v[:, 1])) / steps for k, v in times.items()}
    return fastest, median, cpu, steps, len(times["bayesnn"])


def write(out: Path, result: dict) -> None:
    m, s, us = result["machine"], result["sizes"], result["us_per_step"]
    cpu = result["cpu_us_per_step_median"]
    lines = [
        "# SGLD step time",
        "",
        f"{machine_line(m, 'blackjax', 'optax')}.",
        f"MLP {s['features']}-{'-'.join(map(str, s['hidden']))}-1 ({s['num_params']} weights), "
        f"{s['num_examples']} examples, batch {s['batch_size']}; fastest of "
        f"{s['chunks_timed']} chunks of {s['steps_per_chunk']} steps each, interleaved"
        + (f"; median of {s['repeats']} repeats." if s.get("repeats", 1) > 1 else "."),
        "",
        "| loop | µs / step (fastest) | bayesnn ÷ loop | CPU µs / step (median) | bayesnn ÷ loop |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in ("bayesnn", "blackjax", "optax_sgd", "sgld_kernel"):
        lines.append(f"| {name} | {us[name]:.1f} | {us['bayesnn'] / us[name]:.2f} "
                     f"| {cpu[name]:.1f} | {cpu['bayesnn'] / cpu[name]:.2f} |")
    if s.get("repeats", 1) > 1:
        lines += ["", f"Per repeat, SGLD ÷ SGD: wall "
                  f"{', '.join(map(str, result['ratio_bayesnn_to_optax_sgd_repeats']))} "
                  f"(median {result['ratio_bayesnn_to_optax_sgd']}); CPU time "
                  f"{', '.join(map(str, result['cpu_ratio_bayesnn_to_optax_sgd_repeats']))} "
                  f"(median {result['cpu_ratio_bayesnn_to_optax_sgd']}). The table's columns "
                  "are medians of each loop's times over the repeats."]
    lines += [
        "",
        "`sgld_kernel`: bayesnn's SGLD kernel in the minimal loop of the other two;",
        "`bayesnn ÷ sgld_kernel` is the cost of the sampler's driver, `sgld_kernel ÷ optax_sgd`",
        "the cost of the kernel's Gaussian noise.",
    ]
    save_results(out, "speed_sgmcmc", result, lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[flags(repeats=1)])
    p.add_argument("--num-examples", type=int, default=1000)
    p.add_argument("--features", type=int, default=10)
    p.add_argument("--hidden", type=int, nargs="*", default=[50])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--step-size", type=float, default=1e-6)
    p.add_argument("--steps", type=int, default=20000)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

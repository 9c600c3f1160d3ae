"""Peak memory and time of ``Posterior.predict`` on 1,000 draws × 10,000 inputs of mnist_mlp().

The posterior holds random draws of the ``mnist_mlp()`` weights (784-512-512-10, Categorical
likelihood; what the draws are does not change the memory or the time) with leading
``(chain, draw)`` axes, and predicts 10,000 random MNIST-shaped inputs with the default
chunks (``batch_size=1024`` inputs × ``draw_batch_size=64`` draws). Each configuration runs
in a fresh subprocess, which reports:

* ``rss_before_mb``: resident memory with the draws, the inputs and the compiled code
  (predict ran once before, on two chunks of the draws) in memory;
* ``peak_rss_mb``: the peak resident memory during ``predict`` (``VmHWM`` after resetting
  it through ``/proc/self/clear_refs``; Linux), and ``predict_mb`` = peak - before, the
  memory predict itself needs;
* ``seconds``: the wall time of ``predict`` after compilation;
* on an accelerator, the device's ``peak_bytes_in_use`` too.

``bound_mb`` is what the chunking allows predict to hold beyond the draws and inputs: one
chunk of draws, the activations of ``draw_batch_size × batch_size`` network evaluations,
the padded input chunk, and the per-draw statistics and running moments. ``naive_mb`` is
the activations of evaluating all draws on all inputs at once (``vmap`` over every draw).
Running the same inputs with 10 times fewer draws shows that predict's memory does not
grow with the number of draws.

Writes ``predict_memory.json`` and ``predict_memory.md`` to ``--out``.

    python -m benchmarks.predict_memory --out benchmarks/results
"""

from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import bayesnn as bnn
from benchmarks.common import ROOT, flags, machine, machine_line, save_results

MB = 2**20
_NUM_CHAINS = 4
_DEFAULTS = inspect.signature(bnn.Posterior.predict).parameters  # predict's own chunk sizes


def _model() -> bnn.BNN:
    return bnn.BNN(bnn.models.mnist_mlp(), bnn.priors.Normal(1.0), bnn.likelihoods.Categorical())


def _widths(model: bnn.BNN) -> list[int]:
    """Output width of each dense layer (hidden layers and logits)."""
    weights = bnn.tree.flatten_paths(model.init_position["net"])
    return [int(a.shape[-1]) for path, a in weights.items() if path.endswith("kernel")]


def _vm(field: str) -> float:
    """``VmRSS`` or ``VmHWM`` of this process, MiB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _reset_peak() -> None:
    """Make ``VmHWM`` restart from the current resident memory (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _device_peak() -> float | None:
    stats = jax.devices()[0].memory_stats()
    return None if not stats or "peak_bytes_in_use" not in stats else stats[
        "peak_bytes_in_use"] / MB


def measure(args) -> dict:
    """One configuration, in this (fresh) process."""
    model = _model()
    leaves, treedef = jax.tree.flatten(model.init_position)
    keys = jax.random.split(jax.random.key(0), len(leaves) + 1)
    shape = (_NUM_CHAINS, args.num_draws // _NUM_CHAINS)
    draws = jax.tree.unflatten(treedef, [
        0.05 * jax.random.normal(k, shape + a.shape, a.dtype)
        for k, a in zip(keys[:-1], leaves, strict=True)
    ])
    x = np.asarray(jax.random.normal(keys[-1], (args.num_inputs, 784)), np.float32)
    post = bnn.Posterior(model, jax.block_until_ready(draws))
    chunks = {"batch_size": args.batch_size, "draw_batch_size": args.draw_batch_size}
    # Compile everything predict runs (chunk, merge of two draw chunks, concatenation)
    # on two chunks of draws, so that the measured call compiles nothing.
    per_chain = -(-min(2 * args.draw_batch_size, post.num_samples) // _NUM_CHAINS)
    warm = bnn.Posterior(model, jax.tree.map(lambda a: a[:, :per_chain], draws))
    jax.block_until_ready(warm.predict(x, **chunks))
    del warm

    before = _vm("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    pred = jax.block_until_ready(post.predict(x, **chunks))
    seconds = time.perf_counter() - t0
    peak = _vm("VmHWM")
    assert pred.probs.shape == (args.num_inputs, 10) and bool(jnp.isfinite(pred.probs).all())
    return {
        "num_draws": post.num_samples, "num_inputs": args.num_inputs,
        "seconds": round(seconds, 2), "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(peak, 1), "predict_mb": round(peak - before, 1),
        "device_peak_mb": _device_peak(),
    }


def sizes(args, num_draws: int) -> dict:
    """Draws, inputs, the chunking bound and the naive all-at-once activations, MiB."""
    model = _model()
    num_params = bnn.tree.tree_size(model.init_position)
    widths = _widths(model)
    s, b, n = min(args.draw_batch_size, num_draws), min(args.batch_size, args.num_inputs), 10
    floats = (
        s * num_params  # the gathered chunk of draws
        + s * b * sum(widths)  # every layer's activations for the chunk
        + b * 784  # the padded input chunk
        + s * b * (n + 1)  # per-draw statistics: probabilities and entropy
        + 4 * args.num_inputs * (n + 1)  # running mean and m2, before and after a merge
    )
    return {
        "num_params": num_params, "widths": widths,
        "draws_mb": round(4 * num_draws * num_params / MB, 1),
        "inputs_mb": round(4 * args.num_inputs * 784 / MB, 1),
        "bound_mb": round(4 * floats / MB, 1),
        "naive_mb": round(4 * num_draws * args.num_inputs * sum(widths) / MB, 1),
    }


def main(args) -> dict:
    runs = []
    for num_draws in args.num_draws:
        cmd = [sys.executable, "-m", "benchmarks.predict_memory", "--worker",
               "--num-draws", str(num_draws), "--num-inputs", str(args.num_inputs),
               "--batch-size", str(args.batch_size), "--draw-batch-size", str(args.draw_batch_size)]
        run = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
        runs.append(json.loads(run.stdout.strip().splitlines()[-1]) | sizes(args, num_draws))
    result = {
        "machine": machine("flax"),
        "chunks": {"batch_size": args.batch_size, "draw_batch_size": args.draw_batch_size},
        "runs": runs,
        "note": args.note,
    }
    write(args.out, result)
    print(json.dumps(result, indent=2))
    return result


def write(out: Path, result: dict) -> None:
    m, c, first = result["machine"], result["chunks"], result["runs"][0]
    lines = [
        "# Memory of Posterior.predict",
        "",
        f"{machine_line(m, 'flax')}.",
        f"`mnist_mlp()` ({first['num_params']:,} weights, layers "
        f"{'-'.join(map(str, [784, *first['widths']]))}), Categorical likelihood; random "
        f"draws and inputs; chunks of {c['batch_size']} inputs × {c['draw_batch_size']} draws "
        "(the defaults). Memory in MiB; each row a fresh process.",
        "",
        "| draws × inputs | draws held | RSS before | peak RSS | predict's own | "
        "bound (estimate) | naive (all at once) | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['num_draws']:,} × {r['num_inputs']:,} | {r['draws_mb']:,.0f} | "
            f"{r['rss_before_mb']:,.0f} | {r['peak_rss_mb']:,.0f} | {r['predict_mb']:,.0f} | "
            f"{r['bound_mb']:,.0f} | {r['naive_mb']:,.0f} | {r['seconds']:.1f} |"
        )
    lines += [
        "",
        "*predict's own* is the peak resident memory during `predict` minus the resident "
        "memory before it (draws, inputs, compiled code). *bound* is what the chunking lets "
        "predict hold beyond the draws and inputs: one chunk of draws "
        "(`draw_batch_size × weights`), the activations of `draw_batch_size × batch_size` "
        "evaluations (`× Σ layer widths`), the input chunk, the per-draw statistics and the "
        "running moments `(N, K)`; it does not depend on the number of draws. *naive* is "
        "the activations of evaluating every draw on every input at once.",
    ]
    lines += ["", result["note"]] if result.get("note") else []
    save_results(out, "predict_memory", result, lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[flags()])
    p.add_argument("--num-draws", type=int, nargs="+", default=[1000, 100],
                   help="draws per configuration (multiples of 4: 4 chains)")
    p.add_argument("--num-inputs", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=_DEFAULTS["batch_size"].default)
    p.add_argument("--draw-batch-size", type=int,
                   default=_DEFAULTS["draw_batch_size"].default)
    p.add_argument("--note", default="", help="a remark written under the table")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.worker:
        arguments.num_draws = arguments.num_draws[0]
        print(json.dumps(measure(arguments)))
    else:
        main(arguments)

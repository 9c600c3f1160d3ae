"""Memory of a last-layer Laplace on mnist_mlp()'s 10-class head: KFAC against the full block.

``Laplace(init="network", subset="last_layer", prior_precision="marglik")`` on the
``mnist_mlp()`` network (784-512-512-10, Categorical likelihood, ``FanInNormal(8)`` prior)
and the first ``N`` MNIST training images. What the weights are does not change the memory,
so the network is used as initialised. Each configuration runs in a fresh subprocess, which
first runs the same Laplace on two chunks of rows (compiling everything), then reports:

* ``rss_before_mb``: resident memory with the data, the network and the compiled code;
* ``peak_rss_mb``: the peak resident memory during the measured fit (``VmHWM`` after
  resetting it through ``/proc/self/clear_refs``; Linux), and ``laplace_mb`` = peak -
  before, what the fit itself needs;
* ``stored_mb``: the bytes of the curvature the posterior keeps (``info["laplace"]``: KFAC's
  eigendecomposed factors, or the dense GGN block), and ``draws_mb``, its weight draws;
* ``seconds``: the wall time of the fit after compilation; ``prior_precision``.

Beside them, sizes computed from the shapes: the dense covariance of the last layer,
``((in + 1) · classes)²`` floats, and of every weight, ``P²`` (a full Laplace). The curvature
pass goes over the rows in chunks of ``batch_size``: its memory should not grow with ``N``.
The laplace-torch issue tracker has reports of 10-20 GB on such heads; this measures ours.

Writes ``laplace_memory.json`` and ``laplace_memory.md`` to ``--out``.

    python -m benchmarks.laplace_memory --data ../shared/data/mnist/mnist.npz \
        --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

import bayesnn as bnn
from benchmarks.common import ROOT, flags, machine, machine_line, save_results
from benchmarks.predict_memory import _device_peak, _reset_peak, _vm

MB = 2**20


def _model() -> bnn.BNN:
    return bnn.BNN(bnn.models.mnist_mlp(), bnn.priors.FanInNormal(8.0),
                   bnn.likelihoods.Categorical())


def _laplace(hessian: str, batch_size: int) -> bnn.Laplace:
    return bnn.Laplace(init="network", subset="last_layer", hessian=hessian,
                       prior_precision="marglik", num_samples=40, batch_size=batch_size)


def _nbytes(tree) -> int:
    return sum(int(np.asarray(a).nbytes) for a in jax.tree.leaves(tree))


def measure(args) -> dict:
    """One configuration, in this (fresh) process."""
    train, _ = bnn.data.load_mnist(args.data)
    data = bnn.data.Dataset(train.x[: args.num_rows], train.y[: args.num_rows])
    model, method = _model(), _laplace(args.hessian, args.batch_size)
    warm = bnn.data.Dataset(data.x[: 2 * args.batch_size], data.y[: 2 * args.batch_size])
    jax.block_until_ready(bnn.fit(model, warm, method, key=0, progress=False).draws)

    before = _vm("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    post = bnn.fit(model, data, method, key=1, progress=False)
    jax.block_until_ready(post.draws)
    seconds = time.perf_counter() - t0
    peak = _vm("VmHWM")
    cov = post.info["laplace"]
    return {
        "hessian": args.hessian, "num_rows": data.num_examples, "batch_size": args.batch_size,
        "seconds": round(seconds, 2), "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(peak, 1), "laplace_mb": round(peak - before, 1),
        "stored_mb": round(_nbytes(cov.curvature) / MB, 3),
        "draws_mb": round(_nbytes(post.draws) / MB, 2),
        "subset_size": int(cov.subset.size), "prior_precision": post.info["prior_precision"],
        "device_peak_mb": _device_peak(),
    }


def sizes() -> dict:
    """Dense covariances from the shapes, MiB (float32)."""
    model = _model()
    num_params = bnn.tree.tree_size(model.init_position["net"])
    kernels = [a for path, a in bnn.tree.flatten_paths(model.init_position["net"]).items()
               if path.endswith("kernel")]
    fan_in, classes = kernels[-1].shape
    last = (fan_in + 1) * classes
    return {"num_params": num_params, "last_layer": [fan_in + 1, classes],
            "last_layer_size": last, "full_last_layer_mb": round(4 * last**2 / MB, 1),
            "kron_factors_mb": round(4 * ((fan_in + 1) ** 2 + classes**2) / MB, 3),
            "full_all_weights_mb": round(4 * num_params**2 / MB, 1)}


def main(args) -> dict:
    runs = []
    for spec in args.runs:
        hessian, num_rows = spec.split(":")
        cmd = [sys.executable, "-m", "benchmarks.laplace_memory", "--worker", "--data",
               str(args.data), "--hessian", hessian, "--num-rows", num_rows,
               "--batch-size", str(args.batch_size)]
        run = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
        runs.append(json.loads(run.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]), flush=True)
    result = {"machine": machine("flax"), "sizes": sizes(), "runs": runs, "note": args.note}
    write(args.out, result)
    return result


def write(out: Path, result: dict) -> None:
    m, s = result["machine"], result["sizes"]
    lines = [
        "# Memory of a last-layer Laplace on a 10-class head",
        "",
        f"{machine_line(m, 'flax')}.",
        f"`mnist_mlp()` ({s['num_params']:,} weights), Categorical likelihood; "
        "`Laplace(init=\"network\", subset=\"last_layer\", prior_precision=\"marglik\", "
        "num_samples=40)` over the first N MNIST training images, curvature in chunks of "
        f"{result['runs'][0]['batch_size'] if result['runs'] else '?'} rows. Last layer: "
        f"{s['last_layer'][0]} × {s['last_layer'][1]} = {s['last_layer_size']:,} weights "
        "(kernel and bias). Memory in MiB; each row a fresh process, compiled before it "
        "is measured.",
        "",
        "| hessian | N | RSS before | peak RSS | fit's own (peak − before) | curvature stored "
        "| draws | δ (marglik) | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['hessian']} | {r['num_rows']:,} | {r['rss_before_mb']:,.0f} | "
            f"{r['peak_rss_mb']:,.0f} | {r['laplace_mb']:,.1f} | {r['stored_mb']:,.3f} | "
            f"{r['draws_mb']:,.2f} | {r['prior_precision']:.4g} | {r['seconds']:.1f} |")
    lines += [
        "",
        f"From the shapes (float32): the dense covariance of the last layer is "
        f"{s['full_last_layer_mb']:,.1f} MiB ({s['last_layer_size']:,}² floats), its two "
        f"Kronecker factors {s['kron_factors_mb']:,.3f} MiB; a dense covariance over every "
        f"weight (a full Laplace) would be {s['full_all_weights_mb']:,.0f} MiB.",
    ]
    lines += ["", result["note"]] if result.get("note") else []
    save_results(out, "laplace_memory", result, lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[flags()])
    p.add_argument("--data", default="../shared/data/mnist/mnist.npz", help="MNIST .npz")
    p.add_argument("--runs", nargs="+", default=["kron:5120", "kron:50000", "full:5120"],
                   help="HESSIAN:N, each measured in a fresh process")
    p.add_argument("--batch-size", type=int, default=256, help="rows per curvature chunk")
    p.add_argument("--note", default="", help="a remark written under the table")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--hessian", default="kron", help=argparse.SUPPRESS)
    p.add_argument("--num-rows", type=int, default=5120, help=argparse.SUPPRESS)
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.worker:
        print(json.dumps(measure(arguments)))
    else:
        main(arguments)

"""Time of one VI epoch relative to one MAP epoch, on the Keras MNIST MLP.

Both epochs are the jitted functions ``fit`` runs — :func:`bayesnn.inference.vi.vi_epoch`
over the SVI problem of :meth:`MeanFieldVI.build_svi` and
:func:`bayesnn.inference.map.map_epoch` — on the same ``mnist_mlp()`` network, data and
batch size, in the same process. Each is compiled and run once to warm up, then timed
``--repeats`` times; the figure is the median. MNIST comes from ``--data`` (an ``.npz`` or
IDX folder, see :func:`bayesnn.data.load_mnist`) or, without it, random MNIST-shaped
arrays. Writes ``vi_epoch.json`` and ``vi_epoch.md`` to ``--out``.

    python benchmarks/vi_epoch.py --data ../shared/data/mnist/mnist.npz --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro

import bayesnn as bnn
from bayesnn.inference.map import MAPState, make_optimizer, map_epoch
from bayesnn.inference.vi import vi_epoch


def machine() -> dict:
    """CPU model, cores, jax version and device of this run."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = jax.devices()[0]
    return {
        "cpu": cpu, "cores": os.cpu_count(), "jax": jax.__version__,
        "numpyro": numpyro.__version__, "device": f"{device.platform}: {device.device_kind}",
    }


def mnist(args) -> tuple[np.ndarray, np.ndarray, str]:
    """``num_examples`` MNIST training images ``(n, 28, 28, 1)`` and labels."""
    if args.data:
        train, _ = bnn.data.load_mnist(args.data)
        return train.x[: args.num_examples], train.y[: args.num_examples], "MNIST"
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.num_examples, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, args.num_examples).astype(np.int32)
    return x, y, "random MNIST-shaped arrays"


def median_seconds(epoch, state, repeats: int) -> tuple[float, list[float]]:
    """Median wall time of ``epoch(state, key)`` after one warm-up (compiling) call."""
    jax.block_until_ready(epoch(state, jax.random.key(0)))
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(epoch(state, jax.random.key(i + 1)))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def main(args) -> dict:
    x, y, source = mnist(args)
    model = bnn.BNN(bnn.models.mnist_mlp(), bnn.priors.Normal(1.0), bnn.likelihoods.Categorical())
    x, y = jnp.asarray(x), jnp.asarray(model.likelihood.validate_targets(y, 10))
    n, b = x.shape[0], args.batch_size
    steps = bnn.data.num_batches(n, b)

    tx = make_optimizer("adam")
    map_state = MAPState(model.init_position, tx.init(model.init_position))
    run_map = jax.jit(partial(map_epoch, model, tx, b))
    t_map, map_times = median_seconds(lambda s, k: run_map(s, k, x, y), map_state, args.repeats)

    method = bnn.MeanFieldVI(batch_size=b, num_particles=args.num_particles)
    svi, _ = method.build_svi(model, n)
    vi_state = jax.jit(svi.init)(jax.random.key(0), x, y)
    run_vi = jax.jit(partial(vi_epoch, svi, steps, None))
    t_vi, vi_times = median_seconds(lambda s, k: run_vi(s, k, 0, x, y), vi_state, args.repeats)

    result = {
        "machine": machine(),
        "sizes": {
            "data": source, "num_examples": n, "batch_size": b, "steps_per_epoch": steps,
            "num_particles": args.num_particles, "repeats": args.repeats,
            "num_weights": bnn.tree.tree_size(model.init_position),
        },
        "seconds_per_epoch": {"map": round(t_map, 4), "vi": round(t_vi, 4)},
        "all_seconds": {"map": [round(t, 4) for t in map_times],
                        "vi": [round(t, 4) for t in vi_times]},
        "ms_per_step": {"map": round(1e3 * t_map / steps, 3), "vi": round(1e3 * t_vi / steps, 3)},
        "ratio_vi_to_map": round(t_vi / t_map, 3),
        "target": 2.0,
    }
    write(Path(args.out), result)
    print(json.dumps(result, indent=2))
    return result


def write(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "vi_epoch.json").write_text(json.dumps(result, indent=2) + "\n")
    m, s, t = result["machine"], result["sizes"], result["seconds_per_epoch"]
    ms = result["ms_per_step"]
    lines = [
        "# One VI epoch vs one MAP epoch (mnist_mlp)",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['device']}; jax {m['jax']}, "
        f"numpyro {m['numpyro']}.",
        f"`mnist_mlp()` (784-512-512-10, {s['num_weights']} weights) on {s['num_examples']} "
        f"{s['data']}, batch {s['batch_size']} ({s['steps_per_epoch']} steps per epoch); "
        f"MeanFieldVI with {s['num_particles']} particle(s) vs MAP (adam, dropout on); "
        f"median of {s['repeats']} epochs after a warm-up epoch.",
        "",
        "| method | s / epoch | ms / step |",
        "|---|---:|---:|",
        f"| MAP | {t['map']:.3f} | {ms['map']:.2f} |",
        f"| MeanFieldVI | {t['vi']:.3f} | {ms['vi']:.2f} |",
        "",
        f"**VI ÷ MAP = {result['ratio_vi_to_map']:.2f}** (target ≤ {result['target']}).",
    ]
    (out / "vi_epoch.md").write_text("\n".join(lines) + "\n")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="MNIST .npz or IDX folder (default: random)")
    p.add_argument("--num-examples", type=int, default=12800)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--num-particles", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

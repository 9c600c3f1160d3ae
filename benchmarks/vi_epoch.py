"""Time of one VI epoch relative to one MAP epoch, on the Keras MNIST MLP.

The epochs are the epoch functions ``fit`` runs: :func:`bayesnn.inference.vi.vi_epoch`
with the step of :class:`MeanFieldVI` (NumPyro's weight-noise ELBO, and the local
reparameterisation trick, ``local_reparam=True``), and
:func:`bayesnn.inference.map.map_epoch`, jitted, on the same ``mnist_mlp()`` network, data
and batch size, in the same process. Each is compiled and run once to warm up, then timed
``--repeats`` times, the methods interleaved; the figure is the median wall-clock time
(the CPU-time ratio is reported too, as the machine may be shared; so is the load average
before and after). MNIST comes from
``--data`` (an ``.npz`` or IDX folder, see :func:`bayesnn.data.load_mnist`) or, without it,
random MNIST-shaped arrays. Writes ``vi_epoch.json`` and ``vi_epoch.md`` to ``--out``.

    python -m benchmarks.vi_epoch --data ../shared/data/mnist/mnist.npz --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import bayesnn as bnn
from bayesnn.bnn import Batch
from bayesnn.inference.map import MAPState, make_optimizer, map_epoch
from bayesnn.inference.vi import vi_epoch
from benchmarks.common import flags, interleaved, machine, machine_line, save_results

VARIANTS = {"vi": False, "vi_local_reparam": True}  # row name -> MeanFieldVI(local_reparam=)


def mnist(args) -> tuple[np.ndarray, np.ndarray, str]:
    """``num_examples`` MNIST training images ``(n, 28, 28, 1)`` and labels."""
    if args.data:
        train, _ = bnn.data.load_mnist(args.data)
        return train.x[: args.num_examples], train.y[: args.num_examples], "MNIST"
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.num_examples, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, args.num_examples).astype(np.int32)
    return x, y, "random MNIST-shaped arrays"


def vi_run(model, x, y, batch_size: int, local_reparam: bool, args):
    """``key -> (state, losses)``: one jitted MeanFieldVI epoch as ``fit`` runs it."""
    method = bnn.MeanFieldVI(batch_size=batch_size, num_particles=args.num_particles,
                             local_reparam=local_reparam)
    svi, _ = method.build_svi(model)
    state = jax.jit(svi.init)(jax.random.key(0), Batch(x[:batch_size], y[:batch_size]))
    run = jax.jit(partial(vi_epoch, method.update_fn(model, svi), batch_size, None, None))
    return lambda k: run(state, k, 0, x, y)


def compare(model, x, y, batch_size: int, args) -> dict:
    """MAP and MeanFieldVI epoch times at one batch size."""
    steps = bnn.data.num_batches(x.shape[0], batch_size)
    tx = make_optimizer("adam")
    map_state = MAPState(model.init_position, tx.init(model.init_position))
    map_run = jax.jit(partial(map_epoch, model, tx, batch_size))
    epochs = {"map": lambda k: map_run(map_state, k, x, y)} | {
        name: vi_run(model, x, y, batch_size, local, args) for name, local in VARIANTS.items()
    }
    times = interleaved(epochs, args.repeats)
    median = {name: {clock: statistics.median(t) for clock, t in ts.items()}
              for name, ts in times.items()}
    return {
        "batch_size": batch_size, "steps_per_epoch": steps,
        "seconds_per_epoch": {name: round(m["wall"], 4) for name, m in median.items()},
        "ms_per_step": {name: round(1e3 * m["wall"] / steps, 3) for name, m in median.items()},
        "ratio_to_map": {name: round(median[name]["wall"] / median["map"]["wall"], 3)
                         for name in VARIANTS},
        "cpu_ratio_to_map": {name: round(median[name]["cpu"] / median["map"]["cpu"], 3)
                             for name in VARIANTS},
        "all_wall_seconds": {name: [round(t, 4) for t in ts["wall"]]
                             for name, ts in times.items()},
    }


def main(args) -> dict:
    x, y, source = mnist(args)
    model = bnn.BNN(bnn.models.mnist_mlp(), bnn.priors.Normal(1.0), bnn.likelihoods.Categorical())
    x, y = jnp.asarray(x), jnp.asarray(model.likelihood.validate_targets(y, 10))
    result = {
        "machine": machine("numpyro"),
        "sizes": {
            "data": source, "num_examples": int(x.shape[0]), "num_particles": args.num_particles,
            "repeats": args.repeats, "num_weights": bnn.tree.tree_size(model.init_position),
        },
        "rows": [compare(model, x, y, b, args) for b in args.batch_size],
        "target": 2.0,
    }
    result["machine"]["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    write(args.out, result)
    print(json.dumps(result, indent=2))
    return result


def write(out: Path, result: dict) -> None:
    m, s = result["machine"], result["sizes"]
    lines = [
        "# One VI epoch vs one MAP epoch (mnist_mlp)",
        "",
        f"{machine_line(m, 'numpyro')}; 1-min load average {m['load_average_1min_after']} "
        "after the run.",
        f"`mnist_mlp()` (784-512-512-10, {s['num_weights']} weights) on {s['num_examples']} "
        f"{s['data']}; MeanFieldVI ({s['num_particles']} particle; NumPyro's weight-noise "
        "ELBO, and `local_reparam=True`) vs MAP (adam, dropout on), the epoch functions "
        f"`fit` runs; median of {s['repeats']} interleaved epochs after a warm-up epoch. "
        "Target: VI ÷ MAP ≤ 2.0.",
        "",
        "| batch | steps / epoch | method | s / epoch | ms / step | ÷ MAP (wall) | "
        "÷ MAP (CPU time) |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        t, ms = r["seconds_per_epoch"], r["ms_per_step"]
        for name in t:
            ratio = (f"**{r['ratio_to_map'][name]:.2f}** | {r['cpu_ratio_to_map'][name]:.2f}"
                     if name in r["ratio_to_map"] else "1 | 1")
            lines.append(
                f"| {r['batch_size']} | {r['steps_per_epoch']} | {name} | {t[name]:.3f} | "
                f"{ms[name]:.2f} | {ratio} |"
            )
    save_results(out, "vi_epoch", result, lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[flags(repeats=5)])
    p.add_argument("--data", default=None, help="MNIST .npz or IDX folder (default: random)")
    p.add_argument("--num-examples", type=int, default=12800)
    p.add_argument("--batch-size", type=int, nargs="+", default=[128, 512])
    p.add_argument("--num-particles", type=int, default=1)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

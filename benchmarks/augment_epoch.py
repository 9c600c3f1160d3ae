"""Cost of data augmentation: epoch time with and without ``augment=`` on the MNIST CNN.

For each :class:`bayesnn.data.Augment` setting (shifts, flip, rotation, zoom, all four),
one epoch of MAP (:func:`bayesnn.inference.map.map_epoch`, Adam) and one epoch of SGLD
(the :func:`~bayesnn.inference.sgld.sgld` kernel stepped over shuffled minibatches, the
augmentation drawn per minibatch with its own key as :class:`~bayesnn.SGLD` does) on
``mnist_cnn()``, all jitted and timed in the same process. Each epoch function is compiled
and run once, then timed ``--repeats`` times with all settings interleaved, so that every
setting sees the same machine load; the figure is the median wall-clock time, reported as a
ratio to the epoch without augmentation (CPU-time ratios too, as the machine may be shared).
The data are random MNIST-shaped arrays (timing does not depend on the pixel values).
Writes ``augment_epoch.json`` and ``augment_epoch.md`` to ``--out``.

    python -m benchmarks.augment_epoch --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import statistics
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import bayesnn as bnn
from bayesnn.bnn import Batch
from bayesnn.data import Augment, augment_batch, epoch_batches
from bayesnn.inference.driver import scan_minibatches
from bayesnn.inference.map import MAPState, make_optimizer, map_epoch
from bayesnn.inference.sgld import sgld
from benchmarks.common import flags, interleaved, machine, machine_line, save_results

SETTINGS = {
    "none": None,
    "shifts 0.1": Augment(width_shift=0.1, height_shift=0.1),
    "flip": Augment(horizontal_flip=True),
    "rotation 10°": Augment(rotation=10.0),
    "zoom 0.1": Augment(zoom=0.1),
    "all four": Augment(width_shift=0.1, height_shift=0.1, horizontal_flip=True, rotation=10.0,
                        zoom=0.1),
}


def sgld_epoch(model, batch_size: int, step_size: float, augment, state, key, x, y):
    """One epoch of SGLD steps over shuffled minibatches, as :class:`bayesnn.SGLD` runs them."""
    kernel, n = sgld(), x.shape[0]
    k_batches, k_steps = jax.random.split(key)

    def step(state, k, batch: Batch):
        if augment is not None:
            k, k_aug = jax.random.split(k)
            batch = augment_batch(augment, k_aug, batch)
        grad = jax.grad(model.logdensity_fn)(state.position, batch, n)
        return kernel.step(k, state, grad, step_size)[0], None

    return scan_minibatches(step, state, k_steps, epoch_batches(k_batches, n, batch_size), (x, y))


def epoch_functions(model, batch_size: int, x, y) -> dict:
    """``{(method, setting): run(key)}`` for every method and augmentation setting."""
    tx = make_optimizer("adam")
    map_state = MAPState(model.init_position, tx.init(model.init_position))
    sgld_state = sgld().init(model.init_position)
    runs = {}
    for name, augment in SETTINGS.items():
        m = jax.jit(partial(map_epoch, model, tx, batch_size, augment=augment))
        s = jax.jit(partial(sgld_epoch, model, batch_size, 1e-6, augment))
        runs["MAP", name] = partial(lambda f, k: f(map_state, k, x, y), m)
        runs["SGLD", name] = partial(lambda f, k: f(sgld_state, k, x, y), s)
    return runs


def main(args) -> dict:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(args.num_examples, 28, 28, 1)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 10, args.num_examples).astype(np.int32))
    model = bnn.BNN(bnn.models.mnist_cnn(), bnn.priors.Normal(1.0), bnn.likelihoods.Categorical())
    times = interleaved(epoch_functions(model, args.batch_size, x, y), args.repeats)
    median = {k: {c: statistics.median(v) for c, v in t.items()} for k, t in times.items()}
    rows = []
    for method, name in times:
        m, base = median[method, name], median[method, "none"]
        rows.append({
            "method": method, "augment": name,
            "config": None if SETTINGS[name] is None else repr(SETTINGS[name]),
            "seconds_per_epoch": round(m["wall"], 4),
            "ratio": round(m["wall"] / base["wall"], 3),
            "cpu_ratio": round(m["cpu"] / base["cpu"], 3),
            "all_wall_seconds": [round(t, 4) for t in times[method, name]["wall"]],
        })
    result = {
        "machine": machine(),
        "sizes": {"network": "mnist_cnn()", "num_examples": args.num_examples,
                  "batch_size": args.batch_size, "repeats": args.repeats,
                  "num_weights": bnn.tree.tree_size(model.init_position),
                  "data": "random MNIST-shaped arrays (28, 28, 1)"},
        "rows": rows,
    }
    write(args.out, result)
    print(json.dumps(result, indent=2))
    return result


def write(out: Path, result: dict) -> None:
    m, s = result["machine"], result["sizes"]
    lines = [
        "# Epoch time with and without data augmentation (mnist_cnn)",
        "",
        f"{machine_line(m)} (a shared machine).",
        f"`mnist_cnn()` ({s['num_weights']} weights), {s['num_examples']} {s['data']}, batch "
        f"{s['batch_size']}; one epoch of MAP (Adam) and of SGLD, jitted, median of "
        f"{s['repeats']} interleaved epochs after a warm-up epoch. Ratio: epoch time with the "
        "augmentation ÷ epoch time without it, same method, same process.",
        "",
        "| method | augment | s / epoch | ratio (wall) | ratio (CPU time) |",
        "|---|---|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['method']} | {r['augment']} | {r['seconds_per_epoch']:.3f} | "
                     f"**{r['ratio']:.2f}** | {r['cpu_ratio']:.2f} |")
    save_results(out, "augment_epoch", result, lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[flags(repeats=3)])
    p.add_argument("--num-examples", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=128)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

"""Where the SG-MCMC driver's time goes: SGLD's time per step with parts of the driver swapped.

A diagnosis, not a ratio with a target: on the ``mnist_mlp()``-sized network of
``speed_sgmcmc.py`` (batch 128), one ``bnn.fit`` per variant, timed per chunk after the
first (which compiles). Variants replace, for the length of one fit, a part of the driver
that the hand-written loops of ``speed_sgmcmc.py`` do not have:

- ``randint_batches``: uniform indices with replacement instead of shuffled epochs (whose
  reshuffle is a ``lax.cond`` at each epoch's first step);
- ``other_store``: the draw buffer's store of the other backend (a ``lax.cond`` that skips
  unkept steps on a GPU, a store at every step on CPU; ``driver._skip_unkept``);
- ``4_chains``: the unchanged driver with four chains under ``vmap``.

Run it on a GPU, where launches and host round trips cost more than on a CPU. (Until
commit ``e935a6d`` the driver also took every step's largest |weight|, to name the step of
a NaN; a variant without it showed its cost on an H200, 34 µs a step, and the driver now
replays a failed chunk to find the step instead.)
Writes ``driver_overhead.json`` and ``driver_overhead.md`` to ``--out``.

    python -m benchmarks.driver_overhead --out benchmarks/results
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from bayesnn.inference import driver, sgmcmc
from bayesnn.inference.sgld import SGLD
from benchmarks import speed_sgmcmc
from benchmarks.common import flags, machine, machine_line, save_results


def timed_fit(model, data, steps: int, chains: int) -> dict:
    """µs per step of one SGLD fit of ``steps`` warm-up steps, over its chunks after the
    first (timed by :func:`speed_sgmcmc.interleaved_seconds`, with no loop beside it)."""
    method = SGLD(1e-6, batch_size=128, num_samples=10, num_warmup=steps,
                         thinning=1, num_chains=chains, init="random")
    times, steps_per_chunk = speed_sgmcmc.interleaved_seconds(model, data, method, {})
    per_step = 1e6 * times["bayesnn"][:, 0] / steps_per_chunk
    return {"steps_per_chunk": steps_per_chunk,
            "us_per_step_median": round(float(np.median(per_step)), 1),
            "us_per_step_min": round(float(np.min(per_step)), 1)}


def _randint_batch(key, epoch, step, n, b):
    return epoch, jax.random.randint(key, (b,), 0, n), jnp.ones(b, bool)


VARIANTS = {
    "as_is": {},
    "randint_batches": {(sgmcmc, "next_batch"): _randint_batch},
    "other_store": {(driver, "_skip_unkept"): lambda: jax.default_backend() != "cpu"},
}


def main(args) -> dict:
    model, data = speed_sgmcmc.problem(speed_sgmcmc.parse_args(
        ["--num-examples", "12800", "--features", "784", "--hidden", "512", "512"]))
    rows = {}
    for name, patches in VARIANTS.items():
        saved = {target: getattr(*target) for target in patches}
        for (module, attr), value in patches.items():
            setattr(module, attr, value)
        try:
            rows[name] = timed_fit(model, data, args.steps, 1)
        finally:
            for (module, attr), value in saved.items():
                setattr(module, attr, value)
        print(name, rows[name], flush=True)
    rows["4_chains"] = timed_fit(model, data, args.steps, 4)
    print("4_chains", rows["4_chains"], flush=True)
    result = {"machine": machine(), "steps": args.steps, "variants": rows}
    write(args.out, result)
    return result


def write(out, result: dict) -> None:
    lines = ["# SGLD's driver, part by part (mnist_mlp-sized network, batch 128)", "",
             f"{machine_line(result['machine'])}; {result['steps']} warm-up steps per fit.", "",
             "| variant | steps / chunk | µs / step (median) | µs / step (min) |",
             "|---|---:|---:|---:|"]
    lines += [f"| {name} | {r['steps_per_chunk']} | {r['us_per_step_median']} | "
              f"{r['us_per_step_min']} |" for name, r in result["variants"].items()]
    save_results(out, "driver_overhead", result, lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[flags()])
    p.add_argument("--steps", type=int, default=1000)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

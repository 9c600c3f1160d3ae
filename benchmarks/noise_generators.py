"""The cost of SG-MCMC's per-step noise: 670k standard normals inside a ``lax.scan``.

A diagnosis, not a ratio with a target. The number of normals is the parameter count of
``mnist_mlp()``, one per weight per SGLD step. Each row is a loop of ``--steps`` steps
that adds ``1e-3 ×`` the draws to a vector, timed after compilation (median of
``--repeats``, the loops interleaved), against a loop that adds a constant (``add only``):

- ``threefry fused``: :func:`bayesnn.prng.normal`, the library's generator;
- ``rng_bit_generator PHILOX`` / ``THREE_FRY``: XLA's own generator, the bits turned into
  normals by the same :func:`bayesnn.prng.bits_to_normal` (JAX's ``rbg`` keys use it);
- ``... bits``: the 32-bit words alone, without the transform to normals.

Writes ``noise_generators.json`` and ``noise_generators.md`` to ``--out``.

    python -m benchmarks.noise_generators --out benchmarks/results
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bayesnn import prng
from benchmarks.common import flags, interleaved, machine, machine_line, save_results

SIZE = 669_706  # mnist_mlp()'s weights


def _threefry(transform):
    def draw(key):
        key, sub = jax.random.split(key)
        if transform:
            return key, prng.normal(sub, (SIZE,))
        words = jax.random.key_data(sub)
        return key, prng._bits32(words[0], words[1], SIZE).astype(jnp.float32)
    return jax.random.key(0, impl="threefry2x32"), draw


def _xla(algorithm, transform):
    def draw(state):
        state, bits = lax.rng_bit_generator(state, (SIZE,), dtype=jnp.uint32,
                                            algorithm=algorithm)
        return state, prng.bits_to_normal(bits) if transform else bits.astype(jnp.float32)
    return jnp.array([1, 2, 3, 4], jnp.uint32), draw


GENERATORS = {
    "add only": (jnp.zeros(()), lambda state: (state, jnp.float32(1.0))),
    "threefry fused": _threefry(True),
    "rng_bit_generator PHILOX": _xla(lax.RandomAlgorithm.RNG_PHILOX, True),
    "rng_bit_generator THREE_FRY": _xla(lax.RandomAlgorithm.RNG_THREE_FRY, True),
    "threefry fused bits": _threefry(False),
    "rng_bit_generator PHILOX bits": _xla(lax.RandomAlgorithm.RNG_PHILOX, False),
}


def scan_loop(state, draw, steps: int):
    """``key -> carry``: a compiled scan of ``steps`` draws added to a vector (the key is
    unused: every call repeats the same draws)."""
    def step(carry, _):
        state, x = carry
        state, noise = draw(state)
        return (state, x + 1e-3 * noise), None

    loop = jax.jit(lambda c: lax.scan(step, c, None, length=steps)[0])
    carry = (state, jnp.zeros(SIZE, jnp.float32))
    return lambda key: loop(carry)


def main(args) -> dict:
    times = interleaved({name: scan_loop(state, draw, args.steps)
                         for name, (state, draw) in GENERATORS.items()}, args.repeats)
    rows = {name: round(1e3 * float(np.median(t["wall"])) / args.steps, 3)
            for name, t in times.items()}
    for name, ms in rows.items():
        print(f"{name:32s} {ms:7.3f} ms/step", flush=True)
    result = {"machine": machine(), "size": SIZE, "steps": args.steps, "repeats": args.repeats,
              "ms_per_step": rows}
    write(args.out, result)
    return result


def write(out, result: dict) -> None:
    lines = [f"# {result['size']:,} normals per step inside a scan", "",
             f"{machine_line(result['machine'])}; {result['steps']} steps, median of "
             f"{result['repeats']} runs.", "",
             "| generator | ms / step |", "|---|---:|"]
    lines += [f"| {name} | {ms} |" for name, ms in result["ms_per_step"].items()]
    save_results(out, "noise_generators", result, lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     parents=[flags(repeats=5)])
    parser.add_argument("--steps", type=int, default=200)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

"""Keys and random numbers: :func:`as_key` for every ``key`` argument, and standard normal
draws for the samplers' per-step noise in fused loops.

SGLD, pSGLD and SGHMC draw one normal per weight per step, and so does the weight-noise
guide of mean-field VI (local-reparameterisation VI one per pre-activation). On CPU JAX
lowers its Threefry-2x32 hash as a rolled loop of five iterations (to keep compilation
short), each a separate pass over memory; for the 670k weights of
:func:`~bayesnn.models.presets.mnist_mlp` that made the noise cost almost as much as the
SGD step it accompanies. :func:`normal` evaluates the same hash unrolled and materialises
its words once, so XLA fuses the twenty rounds into one loop, and the conversion to
uniforms and the inverse error function into another (measured by
``benchmarks/noise_generators.py``, recorded in ``benchmarks/results/``). The draws are bit
for bit those of ``jax.random.normal`` with the classic (non-partitionable) Threefry, on
every backend.

References
----------
Salmon, J. K., Moraes, M. A., Dror, R. O. & Shaw, D. E. (2011). Parallel random numbers:
as easy as 1, 2, 3. *SC '11*. (Threefry-2x32 with 20 rounds.)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["as_key", "normal"]

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def as_key(key) -> jax.Array:
    """Accept an int seed, a typed PRNG key or a raw ``uint32[2]`` key."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array) and (
        jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
        or (key.dtype == np.uint32 and key.shape == (2,))
    ):
        return key
    raise TypeError(f"key must be an int seed or a JAX PRNG key, got {type(key).__name__}")


def classic_threefry():
    """Context: trace random numbers with JAX's classic (non-partitionable) Threefry.

    Weight-noise VI draws one normal per weight per step through NumPyro, and on CPU
    generating them dominates its extra cost over SGD; the classic Threefry makes them
    faster there than the partitionable one (JAX's default), whose purpose, sharding, does
    not arise for an unsharded fit. Used on every backend, so that a key gives the same
    numbers on CPU and GPU (as :func:`normal` does). The flag acts where random numbers are
    traced, so enter it inside the jitted function.
    """
    return jax.threefry_partitionable(False)


def _rotl(x, r: int):
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32 with 20 rounds (Salmon et al. 2011), written out so that it fuses.

    ``k0, k1`` are the two uint32 key words, ``x0, x1`` uint32 counter arrays of one
    shape; returns the two hashed words. Rounds in groups of four, the key schedule
    injected after each group.
    """
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for group in range(5):
        for r in _ROTATIONS[group % 2]:
            x0 = x0 + x1
            x1 = _rotl(x1, r) ^ x0
        x0 = x0 + ks[(group + 1) % 3]
        x1 = x1 + ks[(group + 2) % 3] + np.uint32(group + 1)
    return x0, x1


def _threefry_key_words(key):
    """The two uint32 words of a Threefry key, or None for another PRNG implementation."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if "threefry" not in str(jax.random.key_impl(key)):
            return None
        key = jax.random.key_data(key)
    elif jax.config.jax_default_prng_impl != "threefry2x32":
        return None
    return key[0], key[1]


def _bits32(k0, k1, size: int):
    """``size`` uint32 words: the hash of counters ``0..size-1`` split into two halves."""
    half = (size + 1) // 2
    x0 = lax.iota(jnp.uint32, half)
    # the second half counts on from ``half``; an odd size pads it with one counter 0
    x1 = jnp.where(x0 + np.uint32(half) < size, x0 + np.uint32(half), np.uint32(0))
    # materialised before use: fused into a consumer, each output word would hash its pair
    y0, y1 = lax.optimization_barrier(threefry2x32(k0, k1, x0, x1))
    return jnp.concatenate([y0, y1])[:size]


def normal(key, shape=(), dtype=jnp.float32) -> jax.Array:
    """Standard normal draws, equal to ``jax.random.normal`` under the classic Threefry.

    The hashed words become normals by :func:`bits_to_normal`, exactly as JAX computes
    them, but in one fused pass. For float dtypes other than float32, or keys
    of another PRNG implementation, it calls ``jax.random.normal`` with the classic
    Threefry.

    Parameters
    ----------
    key : jax.Array
        A single PRNG key (typed or raw uint32).
    shape : tuple of int
    dtype : float dtype

    Returns
    -------
    jax.Array
        Of ``shape`` and ``dtype``.
    """
    shape = tuple(shape)
    words = _threefry_key_words(key) if jnp.dtype(dtype) == jnp.float32 else None
    if words is None:
        with jax.threefry_partitionable(False):
            return jax.random.normal(key, shape, dtype)
    size = math.prod(shape)
    if size == 0:
        return jnp.zeros(shape, dtype)
    return bits_to_normal(_bits32(*words, size)).reshape(shape)


def bits_to_normal(bits) -> jax.Array:
    """float32 standard normals from uint32 words, as ``jax.random.normal`` makes them.

    The 23 high bits of each word are the mantissa of a float in ``[1, 2)``, mapped to a
    uniform ``u`` on ``(-1, 1)``; the normal is ``√2 · erf⁻¹(u)``.
    """
    one = np.array(1.0, np.float32)
    lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
    floats = lax.bitcast_convert_type((bits >> np.uint32(9)) | one.view(np.uint32), jnp.float32)
    u = jnp.maximum(lo, (floats - one) * (one - lo) + lo)
    return np.float32(np.sqrt(2)) * lax.erf_inv(u)

"""Small synthetic datasets for regression and classification.

Every generator takes ``key``: a JAX PRNG key or an int ``i`` meaning ``jax.random.key(i)``.
The key's bits seed a NumPy generator, so nothing here compiles. Examples come in random
order, so ``validation_split`` and minibatches see every region of the data.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from bayesnn.data.dataset import Dataset

__all__ = [
    "gap_function",
    "gap_regression",
    "gap_regression_grid",
    "two_moons",
    "spirals",
    "linear_regression",
]


def _rng(key: int | jax.Array) -> np.random.Generator:
    if isinstance(key, numbers.Integral):
        key = jax.random.key(int(key))
    return np.random.default_rng(np.asarray(jax.random.key_data(key)))


def _shuffled(rng: np.random.Generator, x, y) -> Dataset:
    perm = rng.permutation(len(x))
    return Dataset(np.asarray(x, np.float32)[perm], np.asarray(y)[perm])


def gap_function(x):
    """The noiseless target of :func:`gap_regression`, ``sin(3x) + 0.1 x^3``.

    NumPy in, NumPy out; JAX arrays (traced ones too) give JAX arrays.
    """
    xp = jnp if isinstance(x, jax.Array) else np
    return xp.sin(3.0 * x) + 0.1 * x**3


def gap_regression(n: int = 100, noise: float = 0.1, key: int | jax.Array = 0) -> Dataset:
    """1-D regression with a gap in the inputs, for "in-between" uncertainty.

    ``x`` is uniform on ``[-1.5, -0.5] ∪ [0.5, 1.5]`` (half the points in each cluster)
    and ``y = gap_function(x) + noise * eps`` with standard normal ``eps``.

    Returns
    -------
    Dataset
        ``x`` float32 of shape ``(n, 1)``, ``y`` float32 of shape ``(n, 1)``.
    """
    rng = _rng(key)
    u = rng.uniform(0.5, 1.5, size=(n, 1)).astype(np.float32)
    x = np.where(np.arange(n)[:, None] < n // 2, -u, u)
    y = gap_function(x) + noise * rng.standard_normal((n, 1))
    return _shuffled(rng, x, np.asarray(y, np.float32))


def gap_regression_grid(num: int = 200) -> Dataset:
    """Evenly spaced inputs on ``[-3, 3]`` with noiseless targets, for plotting.

    Returns
    -------
    Dataset
        ``x`` and ``y = gap_function(x)``, both float32 of shape ``(num, 1)``.
    """
    x = np.linspace(-3.0, 3.0, num, dtype=np.float32)[:, None]
    return Dataset(x, np.asarray(gap_function(x), np.float32))


def _per_class(n: int, num_classes: int) -> np.ndarray:
    """int32 labels ``0..num_classes-1`` in near-equal counts."""
    counts = np.diff(np.linspace(0, n, num_classes + 1).astype(int))
    return np.repeat(np.arange(num_classes, dtype=np.int32), counts)


def two_moons(n: int = 200, noise: float = 0.1, key: int | jax.Array = 0) -> Dataset:
    """Two interleaving half circles in 2-D.

    Returns
    -------
    Dataset
        ``x`` float32 of shape ``(n, 2)``, ``y`` int32 in ``{0, 1}``.
    """
    rng = _rng(key)
    y = _per_class(n, 2)
    t = rng.uniform(0.0, np.pi, size=n)
    upper = np.stack([np.cos(t), np.sin(t)], axis=1)
    lower = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1)
    x = np.where(y[:, None] == 0, upper, lower) + noise * rng.standard_normal((n, 2))
    return _shuffled(rng, x, y)


def spirals(
    n: int = 200, num_classes: int = 2, noise: float = 0.1, key: int | jax.Array = 0
) -> Dataset:
    """Interleaved spiral arms in 2-D, one per class, each making one turn.

    Returns
    -------
    Dataset
        ``x`` float32 of shape ``(n, 2)``, ``y`` int32 in ``{0, ..., num_classes - 1}``.
    """
    rng = _rng(key)
    y = _per_class(n, num_classes)
    r = rng.uniform(0.05, 1.0, size=n)
    angle = 2 * np.pi * (y / num_classes + r)
    x = r[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return _shuffled(rng, x + noise * rng.standard_normal((n, 2)), y)


def linear_regression(
    n: int = 50,
    num_features: int = 3,
    noise: float = 0.5,
    key: int | jax.Array = 0,
    orthogonal: bool = False,
) -> tuple[Dataset, np.ndarray]:
    """Linear data ``y = x w + noise * eps`` with known weights ``w ~ N(0, I)``.

    With ``orthogonal=True`` the columns of ``x`` are orthogonal with equal norm,
    ``x^T x = n I``, so the Gaussian posterior of ``w`` factorises over features.

    Returns
    -------
    data : Dataset
        ``x`` float32 of shape ``(n, num_features)``, ``y`` float32 of shape ``(n, 1)``.
    w : np.ndarray
        The true weights, float32 of shape ``(num_features, 1)``.
    """
    if orthogonal and n < num_features:
        raise ValueError(
            f"orthogonal=True needs n >= num_features, got n={n}, num_features={num_features}"
        )
    rng = _rng(key)
    x = rng.standard_normal((n, num_features))
    if orthogonal:
        x = np.sqrt(n) * np.linalg.qr(x)[0]
    w = rng.standard_normal((num_features, 1))
    y = x @ w + noise * rng.standard_normal((n, 1))
    return Dataset(x.astype(np.float32), y.astype(np.float32)), w.astype(np.float32)

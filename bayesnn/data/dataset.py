"""Host-side datasets: validation, splits and standardisation."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import numpy as np

from bayesnn.data.batching import take

__all__ = [
    "Dataset",
    "as_dataset",
    "check_finite",
    "train_test_split",
    "validation_split",
    "Standardizer",
]


class Dataset(NamedTuple):
    """Inputs ``x`` of shape ``(n, features...)`` and targets ``y`` of shape ``(n, ...)``."""

    x: Any
    y: Any

    @property
    def num_examples(self) -> int:
        """Number of examples (the length of the leading axis)."""
        return self.x.shape[0]


def _float_dtype(a: np.ndarray) -> np.dtype:
    """float64 for float64 input when JAX runs in x64 mode, float32 otherwise."""
    if a.dtype == np.float64 and jax.dtypes.canonicalize_dtype(np.float64) == np.float64:
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def check_finite(a: np.ndarray, what: str) -> None:
    """Raise ``ValueError`` naming the rows of ``a`` (by its leading axis) with NaN or inf."""
    bad = ~np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{what} has {int(bad.sum())} row(s) with NaN or inf "
            f"(first at row {int(np.argmax(bad))})"
        )


def as_dataset(data, *, name: str = "data") -> Dataset:
    """Validate ``data`` and return it as a ``Dataset`` of NumPy arrays.

    Parameters
    ----------
    data : Dataset, (x, y) tuple or list, or dict with keys ``"x"`` and ``"y"``
        ``x`` has shape ``(num_examples, features...)``, ``y`` shape ``(num_examples, ...)``.
    name : str
        Used in error messages.

    Returns
    -------
    Dataset
        ``x`` as float32 (float64 kept when JAX x64 is enabled); float ``y`` likewise,
        integer and boolean ``y`` unchanged.
    """
    if isinstance(data, dict) and {"x", "y"} <= data.keys():
        x, y = data["x"], data["y"]
    elif isinstance(data, tuple | list) and len(data) == 2:
        x, y = data
    else:
        got = type(data).__name__
        if isinstance(data, dict):
            got += f" with keys {sorted(map(str, data))}"
        elif isinstance(data, tuple | list):
            got += f" of length {len(data)}"
        raise TypeError(
            f"{name} must be a Dataset, an (x, y) pair or a dict with keys 'x' and 'y'; got {got}"
        )
    x, y = np.asarray(x), np.asarray(y)
    for part, a in (("x", x), ("y", y)):
        if a.dtype.kind not in "biuf":
            raise TypeError(
                f"{name}.{part} must be numeric (bool, int or float), got dtype {a.dtype}"
            )
    if x.ndim < 2:
        raise ValueError(
            f"{name}.x must have shape (num_examples, features...) — got {x.shape}; "
            "use x[:, None] for one feature"
        )
    if y.ndim < 1:
        raise ValueError(f"{name}.y must have shape (num_examples, ...) — got a scalar")
    if len(x) != len(y):
        raise ValueError(
            f"{name}.x and {name}.y differ in length: {len(x)} inputs and {len(y)} targets"
        )
    if len(x) == 0:
        raise ValueError(f"{name} has no examples (x has shape {x.shape})")
    check_finite(x, f"{name}.x")
    x = x.astype(_float_dtype(x), copy=False)
    if y.dtype.kind == "f":
        check_finite(y, f"{name}.y")
        y = y.astype(_float_dtype(y), copy=False)
    return Dataset(x, y)


def _split(data: Dataset, order: np.ndarray, fraction: float, what: str):
    n = data.num_examples
    if not 0 < fraction < 1:
        raise ValueError(f"{what} must be in (0, 1), got {fraction}")
    n_first = math.floor(n * (1 - fraction))  # Keras' rule
    if n_first in (0, n):
        raise ValueError(
            f"{what}={fraction} leaves an empty part: {n} examples split "
            f"into {n_first} and {n - n_first}"
        )
    return take(data, order[:n_first]), take(data, order[n_first:])


def train_test_split(data, test_fraction: float = 0.2, *, key: int | jax.Array):
    """Shuffle with ``key`` (a PRNG key or an int seed) and hold out ``test_fraction``.

    Returns
    -------
    (Dataset, Dataset)
        ``(train, test)``; the test part has ``n - floor(n * (1 - test_fraction))``
        examples.
    """
    data = as_dataset(data)
    key = jax.random.key(key) if isinstance(key, int) else key
    order = np.asarray(jax.random.permutation(key, data.num_examples))
    return _split(data, order, test_fraction, "test_fraction")


def validation_split(data, fraction: float):
    """Keras' ``validation_split``: the last ``fraction`` of the examples, unshuffled.

    Returns
    -------
    (Dataset, Dataset)
        ``(train, validation)``.
    """
    data = as_dataset(data)
    return _split(data, np.arange(data.num_examples), fraction, "validation fraction")


class Standardizer(NamedTuple):
    """Per-feature affine scaling ``(x - mean) / std``, fitted on training data."""

    mean: Any
    std: Any

    @classmethod
    def fit(cls, x) -> Standardizer:
        """Mean and standard deviation over axis 0; constant features get std 1."""
        x = np.asarray(x)
        dtype = _float_dtype(x)
        std = np.where(np.all(x == x[:1], axis=0), 1.0, x.std(axis=0, dtype=np.float64))
        return cls(x.mean(axis=0, dtype=np.float64).astype(dtype), std.astype(dtype))

    def transform(self, x):
        """Standardise ``x``."""
        return (x - self.mean) / self.std

    def inverse_transform(self, z):
        """Map standardised values back to the original scale."""
        return z * self.std + self.mean

    def inverse_scale(self, std):
        """Map a standard deviation (or any scale) back to the original units."""
        return std * self.std

"""Priors over network-parameter pytrees.

A prior assigns each parameter leaf, addressed by its path (``"layers/0/kernel"``, see
:mod:`bayesnn.tree`), either a NumPyro distribution or nothing: leaves without a distribution
are point estimates, which makes a network partially Bayesian. Every prior implements one
method, :meth:`Prior.leaf_distribution`; ``log_prob``, ``distributions``, ``mask`` and
``sample`` are derived from it.
"""

from __future__ import annotations

import abc
import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from bayesnn.tree import flatten_paths, unflatten_paths
from bayesnn.validation import check_positive, config

__all__ = ["Prior", "Normal", "FanInNormal", "Laplace", "StudentT", "PerParameter"]


class Prior(abc.ABC):
    """Base class: a distribution (or none) for each leaf of a parameter pytree."""

    @abc.abstractmethod
    def leaf_distribution(self, path: str, value) -> dist.Distribution | None:
        """Distribution of the leaf at ``path``, with ``batch_shape == value.shape``.

        ``None`` marks the leaf as a point estimate.
        """

    def _resolve(self, params) -> dict[str, tuple[Any, dist.Distribution | None]]:
        """Map each leaf's path to ``(leaf, distribution or None)``."""
        named = flatten_paths(params)
        return {path: (leaf, self.leaf_distribution(path, leaf)) for path, leaf in named.items()}

    def distributions(self, params) -> dict[str, dist.Distribution]:
        """Map each Bayesian leaf's path to its distribution (``event_shape == ()``)."""
        return {path: d for path, (_, d) in self._resolve(params).items() if d is not None}

    def log_prob(self, params) -> jax.Array:
        """Sum of the log-densities of the Bayesian leaves of ``params``."""
        resolved = self._resolve(params).values()
        terms = [d.log_prob(leaf).sum() for leaf, d in resolved if d is not None]
        return sum(terms, start=jnp.zeros(()))

    def mask(self, params):
        """Pytree of Python bools shaped like ``params``: True where the leaf is Bayesian."""
        named = {path: d is not None for path, (_, d) in self._resolve(params).items()}
        return unflatten_paths(named, params)

    def sample(self, key: jax.Array, params):
        """Draw the Bayesian leaves from the prior; point-estimate leaves are kept as given."""
        resolved = self._resolve(params)
        keys = iter(jax.random.split(key, len(resolved)))
        named = {
            path: leaf if d is None else d.sample(next(keys)).astype(jnp.result_type(leaf))
            for path, (leaf, d) in resolved.items()
        }
        return unflatten_paths(named, params)


@config
@dataclass(frozen=True)
class Normal(Prior):
    """Isotropic Gaussian prior :math:`\\mathcal{N}(\\text{loc}, \\text{scale}^2)` on every leaf.

    Parameters
    ----------
    scale
        Standard deviation.
    loc
        Mean: a scalar, or a pytree shaped like the network parameters to centre the prior
        at given weights (e.g. pretrained ones, for transfer learning).
    """

    scale: float = 1.0
    loc: Any = 0.0

    def __post_init__(self):
        check_positive(scale=self.scale)

    def leaf_distribution(self, path, value):
        locs = flatten_paths(self.loc)
        loc = locs[""] if list(locs) == [""] else locs.get(path)
        if loc is None:
            raise ValueError(f"Normal prior loc has no value for parameter {path!r}")
        return dist.Normal(loc, self.scale).expand(jnp.shape(value))


@config
@dataclass(frozen=True)
class FanInNormal(Prior):
    """Zero-mean Gaussian with std ``scale / sqrt(fan_in)`` (He/LeCun-style scaling).

    ``fan_in = prod(shape[:-1])`` for leaves with two or more dimensions (Dense kernels
    ``(in, out)``, Conv kernels ``(kh, kw, cin, cout)``); other leaves (biases) get std
    ``scale``. Keeps the prior predictive variance independent of layer width
    (Neal 1996, *Bayesian Learning for Neural Networks*).
    """

    scale: float = 1.0

    def __post_init__(self):
        check_positive(scale=self.scale)

    def leaf_distribution(self, path, value):
        shape = jnp.shape(value)
        fan_in = math.prod(shape[:-1]) if len(shape) >= 2 else 1
        return dist.Normal(0.0, self.scale / math.sqrt(fan_in)).expand(shape)


@config
@dataclass(frozen=True)
class Laplace(Prior):
    """Zero-mean Laplace prior with the given ``scale`` on every leaf."""

    scale: float = 1.0

    def __post_init__(self):
        check_positive(scale=self.scale)

    def leaf_distribution(self, path, value):
        return dist.Laplace(0.0, self.scale).expand(jnp.shape(value))


@config
@dataclass(frozen=True)
class StudentT(Prior):
    """Zero-mean Student-t prior (heavy-tailed) with ``df`` degrees of freedom on every leaf."""

    df: float = 3.0
    scale: float = 1.0

    def __post_init__(self):
        check_positive(df=self.df, scale=self.scale)

    def leaf_distribution(self, path, value):
        return dist.StudentT(self.df, 0.0, self.scale).expand(jnp.shape(value))


@config
@dataclass(frozen=True)
class PerParameter(Prior):
    """Different priors for different parameters, selected by glob patterns on paths.

    Parameters
    ----------
    rules
        ``{pattern: prior}`` with :mod:`fnmatch` patterns such as ``"layers/0/*"`` or
        ``"*/bias"``; the first matching rule wins. Stored as a tuple of pairs.
    default
        Prior for leaves no rule matches; ``None`` makes them point estimates
        (a partially Bayesian network).

    Raises
    ------
    ValueError
        When a pattern matches no parameter path.
    """

    rules: Mapping[str, Prior] | tuple[tuple[str, Prior], ...]
    default: Prior | None = None

    def __post_init__(self):
        rules = self.rules.items() if isinstance(self.rules, Mapping) else self.rules
        object.__setattr__(self, "rules", tuple(rules))

    def _resolve(self, params):
        paths = list(flatten_paths(params))
        for pattern, _ in self.rules:
            if not any(fnmatch.fnmatchcase(path, pattern) for path in paths):
                raise ValueError(
                    f"prior pattern {pattern!r} matches no parameter; available paths: {paths}"
                )
        return super()._resolve(params)

    def leaf_distribution(self, path, value):
        for pattern, prior in self.rules:
            if fnmatch.fnmatchcase(path, pattern):
                return prior.leaf_distribution(path, value)
        return None if self.default is None else self.default.leaf_distribution(path, value)

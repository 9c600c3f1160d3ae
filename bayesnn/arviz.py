"""ArviZ bridge: the only module that imports arviz."""

from __future__ import annotations

import arviz as az
import jax
import numpy as np

__all__ = ["ess", "rhat"]


def ess(samples, method: str = "bulk") -> np.ndarray:
    """Effective sample size of each coordinate of ``samples`` ``(chain, draw, ...)``.

    ``method`` is ArviZ's: ``"bulk"``, ``"tail"``, ``"mean"``, ...
    (Vehtari et al. 2021, *Rank-normalization, folding, and localization*).
    """
    return np.asarray(az.ess(_as_array(samples), method=method))


def rhat(samples, method: str = "rank") -> np.ndarray:
    """Split-R̂ of each coordinate of ``samples`` ``(chain, draw, ...)`` (Vehtari et al. 2021)."""
    return np.asarray(az.rhat(_as_array(samples), method=method))


def _as_array(samples) -> np.ndarray:
    a = np.asarray(jax.device_get(samples), dtype=np.float64)
    if a.ndim < 2:
        raise ValueError(f"samples must have leading (chain, draw) axes; got shape {a.shape}")
    return a

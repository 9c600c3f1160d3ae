"""bayesnn: Bayesian neural networks on JAX.

The submodules ``metrics``, ``report``, ``plots``, ``arviz``, ``transfer`` and ``testing``
are attributes of the package too, imported on first use (PEP 562), so that
``import bayesnn`` does not import ArviZ or Matplotlib.
"""

import importlib

from bayesnn import data, likelihoods, models, priors
from bayesnn.bnn import BNN
from bayesnn.inference import (
    HMC,
    MAP,
    MCLMC,
    NUTS,
    PSGLD,
    SGHMC,
    SGLD,
    SWAG,
    CoordinateGibbs,
    Ensemble,
    Hierarchical,
    HierarchicalNUTS,
    Laplace,
    LatentGibbs,
    LowRankVI,
    MCDropout,
    MeanFieldVI,
    NonFiniteError,
    fit,
)
from bayesnn.posterior import Posterior

__version__ = "0.1.0"

_LAZY = ("arviz", "metrics", "plots", "report", "testing", "transfer")

__all__ = [
    "BNN", "MAP", "NonFiniteError", "Posterior", "data", "fit", "likelihoods", "models", "priors",
    "Ensemble", "HMC", "MCDropout", "NUTS", "LowRankVI", "MeanFieldVI", "CoordinateGibbs",
    "LatentGibbs", "Hierarchical", "HierarchicalNUTS", "SGLD", "PSGLD", "SGHMC", "Laplace",
    "MCLMC", "SWAG", *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f"bayesnn.{name}")
    raise AttributeError(f"module 'bayesnn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

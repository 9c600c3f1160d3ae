"""bayesnn: Bayesian neural networks on JAX."""

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
    CoordinateGibbs,
    Ensemble,
    Hierarchical,
    HierarchicalNUTS,
    LatentGibbs,
    LowRankVI,
    MCDropout,
    MeanFieldVI,
    NonFiniteError,
    fit,
)
from bayesnn.posterior import Posterior

__version__ = "0.1.0"

__all__ = [
    "BNN", "MAP", "NonFiniteError", "Posterior", "data", "fit", "likelihoods", "models", "priors",
    "Ensemble", "HMC", "MCDropout", "NUTS", "LowRankVI", "MeanFieldVI", "CoordinateGibbs",
    "LatentGibbs", "Hierarchical", "HierarchicalNUTS", "SGLD", "PSGLD", "SGHMC",
    "MCLMC",
]

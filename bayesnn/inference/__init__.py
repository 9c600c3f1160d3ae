"""Inference methods; each returns a :class:`~bayesnn.Posterior` through :func:`fit`."""

from bayesnn.inference.base import fit
from bayesnn.inference.driver import NonFiniteError
from bayesnn.inference.ensemble import Ensemble, MCDropout
from bayesnn.inference.gibbs import CoordinateGibbs, HierarchicalNUTS, LatentGibbs
from bayesnn.inference.hmc import HMC, NUTS
from bayesnn.inference.hyper import GammaPrecision, Hierarchical
from bayesnn.inference.laplace import Laplace
from bayesnn.inference.lowrank_vi import LowRankVI
from bayesnn.inference.map import MAP
from bayesnn.inference.meanfield_vi import MeanFieldVI
from bayesnn.inference.sgmcmc import PSGLD, SGHMC, SGLD
from bayesnn.inference.swag import SWAG

__all__ = [
    "fit", "MAP", "NonFiniteError", "SGLD", "PSGLD", "SGHMC",
    "Ensemble", "HMC", "MCDropout", "NUTS", "LowRankVI",
    "MeanFieldVI", "CoordinateGibbs", "LatentGibbs", "HierarchicalNUTS", "Hierarchical",
    "GammaPrecision", "Laplace", "SWAG",
]

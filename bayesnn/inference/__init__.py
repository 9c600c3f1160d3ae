"""Inference methods; each returns a :class:`~bayesnn.Posterior` through :func:`fit`."""

from bayesnn.inference.base import fit
from bayesnn.inference.coordinate_gibbs import CoordinateGibbs
from bayesnn.inference.driver import NonFiniteError
from bayesnn.inference.ensemble import Ensemble, MCDropout
from bayesnn.inference.hierarchical_nuts import HierarchicalNUTS
from bayesnn.inference.hmc import HMC, NUTS
from bayesnn.inference.hyper import GammaPrecision, Hierarchical
from bayesnn.inference.laplace import Laplace
from bayesnn.inference.latent_gibbs import LatentGibbs
from bayesnn.inference.lowrank_vi import LowRankVI
from bayesnn.inference.map import MAP
from bayesnn.inference.mclmc import MCLMC
from bayesnn.inference.meanfield_vi import MeanFieldVI
from bayesnn.inference.psgld import PSGLD
from bayesnn.inference.sghmc import SGHMC
from bayesnn.inference.sgld import SGLD
from bayesnn.inference.swag import SWAG

__all__ = [
    "fit", "MAP", "NonFiniteError", "SGLD", "PSGLD", "SGHMC",
    "Ensemble", "HMC", "MCDropout", "NUTS", "LowRankVI",
    "MeanFieldVI", "CoordinateGibbs", "LatentGibbs", "HierarchicalNUTS", "Hierarchical",
    "GammaPrecision", "Laplace", "MCLMC", "SWAG",
]

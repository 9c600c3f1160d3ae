"""bayesnn: Bayesian neural networks on JAX."""

from bayesnn import data, likelihoods, models, priors
from bayesnn.bnn import BNN
from bayesnn.inference import MAP, NonFiniteError, fit
from bayesnn.posterior import Posterior

__version__ = "0.1.0"

__all__ = [
    "BNN", "MAP", "NonFiniteError", "Posterior", "data", "fit", "likelihoods", "models", "priors",
]

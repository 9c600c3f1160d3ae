"""Inference methods; each returns a :class:`~bayesnn.Posterior` through :func:`fit`."""

from bayesnn.inference.base import fit
from bayesnn.inference.driver import NonFiniteError
from bayesnn.inference.map import MAP

__all__ = ["fit", "MAP", "NonFiniteError"]

"""Gaussian VI with a low-rank-plus-diagonal covariance, on the SVI loop of
:mod:`bayesnn.inference.vi`."""

from __future__ import annotations

from dataclasses import dataclass

from numpyro.infer.autoguide import AutoLowRankMultivariateNormal

from bayesnn.inference.base import check_positive
from bayesnn.inference.vi import PARAMETERS_DOC, RETURNS_DOC, ExpScale, GaussianVI
from bayesnn.validation import config

__all__ = ["LowRankVI"]


class _AutoLowRank(ExpScale, AutoLowRankMultivariateNormal):
    pass


@config
@dataclass(frozen=True)
class LowRankVI(GaussianVI):
    __doc__ = (
        """Gaussian VI with low-rank-plus-diagonal covariance ``Σ = D(W Wᵀ + I)D``.

    NumPyro's ``AutoLowRankMultivariateNormal`` (with ``D = diag(exp(ρ))``): a factor
    covariance (Ong, Nott & Smith 2018, eq. 2) over all latent coordinates, which captures
    ``rank`` directions of correlation that mean-field VI ignores. ``W`` starts at 0, i.e.
    at the mean-field guide. NumPyro has no closed-form KL for this guide, so both ``elbo``
    choices give the same Monte Carlo estimate.
    """
        + PARAMETERS_DOC
        + """    rank : int
        Number of factors (columns of ``W``); memory is ``rank × num_weights``.
"""
        + RETURNS_DOC
        + """
    References
    ----------
    Ong, Nott & Smith (2018). Gaussian variational approximation with a factor covariance
    structure. *J. Comput. Graph. Stat.* 27(3).
    Kingma & Welling (2014). Auto-encoding variational Bayes.
    """
    )

    rank: int = 10

    def __post_init__(self):
        super().__post_init__()
        check_positive(rank=self.rank)

    def _guide(self, model_fn, init_loc_fn):
        return _AutoLowRank(
            model_fn, init_loc_fn=init_loc_fn, init_scale=self.init_scale, rank=self.rank
        )

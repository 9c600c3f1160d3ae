"""Hierarchical priors: Gamma hyperpriors on precisions, updated by Gibbs sampling (Neal 1996).

Each group of weights (by default, each layer: its kernel and bias) gets a zero-mean
Gaussian prior whose precision τ is itself unknown, and so may the Gaussian noise:

    τ ~ Gamma(shape = α/2, rate = α ω² / 2),        w_i | τ ~ N(0, 1/τ),  i = 1..n.

``ω`` is the prior's typical width (E[τ] = ω⁻², as in the ``width:alpha`` specs of Neal's
*fbm* software; Neal's book writes the same prior with mean precision ω_book = ω⁻²) and
``α`` its shape: α → ∞ fixes τ = ω⁻², small α is vague. The prior is conjugate, so

    τ | w ~ Gamma((α + n)/2, (α ω² + Σ_i w_i²)/2),

and for the noise precision of a Gaussian likelihood tempered by ``T`` (``N`` examples,
``D`` targets, residuals ``r = y - f(x)``): τ | w, data ~ Gamma(α/2 + ND/(2T),
α ω²/2 + Σ r²/(2T)).

This module holds the pure pieces: the conditionals (:func:`gamma_conditional`,
:func:`sample_precision`), the log-density of the weights given the precisions, the
full-conditional update an outer sampler calls between its own steps
(:func:`gibbs_hyper_update`) and the hierarchical model as a NumPyro program.

References
----------
Neal, R. M. (1996). *Bayesian Learning for Neural Networks*. Lecture Notes in Statistics
118, Springer: ch. 3, Gibbs sampling for the hyperparameters between hybrid Monte Carlo
updates of the weights.
Chen, T., Fox, E. B. & Guestrin, C. (2014). Stochastic gradient Hamiltonian Monte Carlo.
*ICML*: §4, the same Gibbs updates once per epoch between SGHMC steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from bayesnn import likelihoods
from bayesnn.bnn import BNN
from bayesnn.inference.base import check_positive
from bayesnn.tree import flatten_paths, unflatten_paths
from bayesnn.validation import config

__all__ = [
    "GammaPrecision", "Hierarchical", "gamma_conditional", "sample_precision",
    "weight_groups", "gibbs_hyper_update",
]

NOISE = "noise"  # name of the noise precision among the precisions


@config
@dataclass(frozen=True)
class GammaPrecision:
    """Gamma prior on a precision τ in Neal's parametrisation: shape α/2, rate α ω²/2.

    Parameters
    ----------
    alpha : float
        Shape parameter α (Neal's; the Gamma shape is α/2).
    scale : float
        Width ω: E[τ] = ω⁻², so the weights' typical scale is ω.
    """

    alpha: float = 1.0
    scale: float = 1.0

    def __post_init__(self):
        check_positive(alpha=self.alpha, scale=self.scale)

    @property
    def shape(self) -> float:
        return self.alpha / 2

    @property
    def rate(self) -> float:
        return self.alpha * self.scale**2 / 2

    def distribution(self) -> dist.Gamma:
        return dist.Gamma(self.shape, self.rate)


def gamma_conditional(prior: GammaPrecision, sum_sq, count, temperature: float = 1.0):
    """Shape and rate of τ | w: Gamma((α + n/T)/2, (α ω² + Σ w²/T)/2).

    ``count`` values with sum of squares ``sum_sq`` enter a Gaussian of precision τ;
    ``temperature`` tempers that Gaussian (use it for the likelihood, not the prior).
    """
    return prior.shape + count / (2 * temperature), prior.rate + sum_sq / (2 * temperature)


def sample_precision(key, prior: GammaPrecision, sum_sq, count, temperature: float = 1.0):
    """Draw τ from its conditional :func:`gamma_conditional`."""
    shape, rate = gamma_conditional(prior, sum_sq, count, temperature)
    dtype = jnp.result_type(sum_sq, float)
    return jax.random.gamma(key, jnp.asarray(shape, dtype)) / rate


def weight_groups(model: BNN, by: str = "layer") -> dict[str, tuple[str, ...]]:
    """Group the Bayesian weight paths that share one precision.

    ``by="layer"``: the leaves under one module (``layers/0/kernel`` and ``layers/0/bias``
    form ``layers/0``); ``by="leaf"``: one precision per leaf.
    """
    if by not in ("layer", "leaf"):
        raise ValueError(f'group must be "layer" or "leaf", got {by!r}')
    mask = flatten_paths(model.bayesian_mask["net"])
    groups: dict[str, list[str]] = {}
    for path, bayesian in mask.items():
        if bayesian:
            name = path if by == "leaf" else path.rpartition("/")[0] or path
            groups.setdefault(name, []).append(path)
    return {name: tuple(paths) for name, paths in groups.items()}


@config
@dataclass(frozen=True)
class Hierarchical:
    """Gamma hyperpriors on each group's prior precision and on the noise precision.

    Replaces the model's weight prior by ``w | τ_g ~ N(0, 1/τ_g)`` with ``τ_g ~ weights``
    for each group ``g`` (see :func:`weight_groups`). With ``noise`` set, the noise std of a
    ``likelihoods.Gaussian(learn_scale=True)`` becomes ``τ_noise^(-1/2)`` with
    ``τ_noise ~ noise`` (this Gamma prior replaces the likelihood's half-normal one) and is
    stored in the position as ``lik/log_scale``, so predictions use the sampled noise.

    Parameters
    ----------
    weights : GammaPrecision
        Hyperprior of every group's precision.
    noise : GammaPrecision, optional
        Hyperprior of the noise precision; None keeps the likelihood as it is.
    group : {"layer", "leaf"}
        One precision per layer or per parameter leaf.
    """

    weights: GammaPrecision = GammaPrecision()
    noise: GammaPrecision | None = None
    group: str = "layer"

    def __post_init__(self):
        if self.group not in ("layer", "leaf"):
            raise ValueError(f'group must be "layer" or "leaf", got {self.group!r}')

    def check(self, model: BNN) -> None:
        """Raise ``ValueError`` if ``model`` cannot take this hierarchy."""
        if self.noise is not None:
            lik = model.likelihood
            if not (isinstance(lik, likelihoods.Gaussian) and lik.learn_scale):
                raise ValueError(
                    "a noise hyperprior needs likelihoods.Gaussian(learn_scale=True): the "
                    "sampled noise std is stored as its `log_scale`"
                )

    def init_precisions(self, model: BNN) -> dict[str, jax.Array]:
        """The prior means ω⁻² of every precision."""
        tau = {g: jnp.asarray(self.weights.scale**-2.0) for g in weight_groups(model, self.group)}
        if self.noise is not None:
            tau[NOISE] = jnp.asarray(self.noise.scale**-2.0)
        return tau

    def logprior_fn(self, model: BNN, position, precisions) -> jax.Array:
        """log p(w | τ): Gaussian weights given the group precisions (point estimates excluded)."""
        named = flatten_paths(position["net"])
        total = jnp.zeros(())
        for g, paths in weight_groups(model, self.group).items():
            for path in paths:
                total += dist.Normal(0.0, precisions[g] ** -0.5).log_prob(named[path]).sum()
        return total

    def logdensity_fn(self, model: BNN, position, precisions, batch, data_size: int):
        """:meth:`BNN.logdensity_fn` (prior plus ``N/b``-scaled minibatch log-likelihood)
        with the weight prior replaced by ``w | τ ~ N(0, 1/τ)``: what SG-MCMC follows between
        hyperparameter updates."""
        return (model.logdensity_fn(position, batch, data_size)
                - model.prior.log_prob(position["net"])
                + self.logprior_fn(model, position, precisions))

    def numpyro_model(self, model: BNN, x, y=None) -> None:
        """The hierarchical model as a NumPyro program.

        Sites: ``hyper/<group>`` and ``hyper/noise`` (precisions), ``net/<path>`` (weights,
        ``numpyro.param`` for point estimates) and ``y``.
        """
        net0 = model.init_position["net"]
        groups = weight_groups(model, self.group)
        of = {path: g for g, paths in groups.items() for path in paths}
        tau = {g: numpyro.sample(f"hyper/{g}", self.weights.distribution()) for g in groups}
        net = {
            path: numpyro.sample(
                f"net/{path}", dist.Normal(0.0, tau[of[path]] ** -0.5).expand(value.shape)
            )
            if path in of
            else numpyro.param(f"net/{path}", value)
            for path, value in flatten_paths(net0).items()
        }
        lik = {}
        if self.noise is not None:
            tau_noise = numpyro.sample(f"hyper/{NOISE}", self.noise.distribution())
            lik = {"log_scale": -0.5 * jnp.log(tau_noise)}
        position = {"net": unflatten_paths(net, like=net0), "lik": lik}
        with numpyro.plate("data", x.shape[0]):
            f = model.apply(position, x)
            with numpyro.handlers.scale(scale=1.0 / model.likelihood.temperature):
                numpyro.sample("y", model.likelihood.distribution(f, lik), obs=y)


def gibbs_hyper_update(key, position, hierarchical: Hierarchical, model: BNN, data=None):
    """Draw every precision from its full conditional given the weights (Neal 1996).

    The update an outer sampler makes between its own steps: NUTS through NumPyro's Gibbs
    blocks (:class:`~bayesnn.inference.hierarchical_nuts.HierarchicalNUTS`), or SGLD, pSGLD
    and SGHMC once per epoch (their ``hyper`` option), as Chen, Fox & Guestrin (2014, §4)
    did in their Bayesian neural network experiment. The weights' log-density given the new
    precisions is :meth:`Hierarchical.logdensity_fn` at the returned position; SG-MCMC
    follows its gradient until the next update. Pure and jittable.

    Parameters
    ----------
    key
        PRNG key.
    position
        Current position ``{"net", "lik"}``.
    hierarchical
        The hyperpriors.
    model
        The BNN.
    data : (x, y), optional
        Full training data; needed for the noise precision (its conditional depends on the
        residual sum of squares over all examples, so a minibatch would not do).

    Returns
    -------
    precisions : dict
        ``{group: τ_g}`` and, with a noise hyperprior, ``{"noise": τ_noise}``.
    position
        ``position`` with ``lik/log_scale = -log(τ_noise)/2`` when the noise is sampled.
    """
    if hierarchical.noise is not None and data is None:
        raise ValueError("the noise precision update needs the training data (x, y)")
    groups = weight_groups(model, hierarchical.group)
    keys = jax.random.split(key, len(groups) + 1)
    named = flatten_paths(position["net"])
    precisions = {}
    for k, (g, paths) in zip(keys, groups.items(), strict=False):
        sum_sq = sum(jnp.sum(named[p] ** 2) for p in paths)
        count = sum(named[p].size for p in paths)
        precisions[g] = sample_precision(k, hierarchical.weights, sum_sq, count)
    if hierarchical.noise is not None:
        x, y = data
        residual = y - model.apply(position, x)
        tau = sample_precision(
            keys[-1], hierarchical.noise, jnp.sum(residual**2), residual.size,
            model.likelihood.temperature,
        )
        precisions[NOISE] = tau
        position = {**position, "lik": {**position["lik"], "log_scale": -0.5 * jnp.log(tau)}}
    return precisions, position

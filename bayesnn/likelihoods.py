"""Likelihoods p(y | f) on network outputs f, with predictive summaries.

A likelihood maps the network outputs ``f`` (shape ``(B, num_outputs)``) to a NumPyro
distribution over targets, owns its own parameters (e.g. a learned noise scale, kept
unconstrained) and their priors, checks targets on the host, and defines the per-draw
statistics a posterior averages to build a :class:`RegressionPrediction` or
:class:`ClassificationPrediction`.

Targets follow one shape convention. A likelihood with one target per example (every
classification likelihood, a Gaussian on one output) takes ``y`` of shape ``(N,)`` or
``(N, 1)``; a Gaussian over ``D`` targets takes ``(N, D)``. Class labels are integer
indices (not one-hot rows) and come back from :meth:`Likelihood.validate_targets` as
``(N,)`` ``int32``; regression targets as ``(N, D)`` floats. A heteroscedastic Gaussian
needs two network outputs per target (mean and scale).

``temperature`` tempers the posterior: the total log-likelihood is divided by it, so
``temperature < 1`` gives a "cold" posterior (Wenzel et al. 2020, *How good is the Bayes
posterior in deep neural networks really?*).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field, replace
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import log_ndtr, ndtr, xlogy
from numpyro.distributions.transforms import ExpTransform

from bayesnn.validation import check_positive, check_range, config

__all__ = [
    "Likelihood",
    "Gaussian",
    "Categorical",
    "Bernoulli",
    "Probit",
    "RegressionPrediction",
    "ClassificationPrediction",
]


class RegressionPrediction(NamedTuple):
    """Posterior predictive summary for regression, each ``(N, D)``.

    ``std**2 = aleatoric_std**2 + epistemic_std**2`` (law of total variance): aleatoric is the
    expected noise variance, epistemic the variance of the mean across posterior draws
    (Kendall & Gal 2017, *What uncertainties do we need in Bayesian deep learning?*).
    """

    mean: jax.Array
    std: jax.Array
    aleatoric_std: jax.Array
    epistemic_std: jax.Array


class ClassificationPrediction(NamedTuple):
    """Posterior predictive summary for classification (natural log, nats).

    ``probs`` ``(N, K)`` is the mean class probability; ``entropy`` ``(N,)`` its entropy, split
    into ``aleatoric`` (expected entropy of each draw) plus ``epistemic`` (mutual information
    between the label and the parameters; Depeweg et al. 2018, Kendall & Gal 2017).
    """

    probs: jax.Array
    entropy: jax.Array
    aleatoric: jax.Array
    epistemic: jax.Array


def _entropy(probs: jax.Array) -> jax.Array:
    """Entropy in nats over the last axis, with ``0 log 0 = 0``."""
    return -jnp.sum(xlogy(probs, probs), axis=-1)


@config
@dataclass(frozen=True)
class Likelihood(abc.ABC):
    """Base class for likelihoods.

    Parameters
    ----------
    temperature
        Posterior temperature ``T > 0``: the log-likelihood is scaled by ``1 / T``
        (Wenzel et al. 2020). ``T = 1`` is the Bayes posterior.
    """

    task: ClassVar[str]
    temperature: float = field(default=1.0, kw_only=True)

    def __post_init__(self):
        check_positive(temperature=self.temperature)

    @abc.abstractmethod
    def num_outputs(self, target_dim: int) -> int:
        """Number of network outputs needed for ``target_dim`` targets (or classes)."""

    def init_params(self) -> dict[str, jax.Array]:
        """Initial unconstrained likelihood parameters (none by default)."""
        return {}

    def traced(self) -> Likelihood:
        """This likelihood as a compiled program sees it: fields that only set
        :meth:`init_params` (learned parameters live in the position) take a fixed value.
        :func:`~bayesnn.inference.programs.program_key` keys on it, so a refit that starts
        the same model from another initial value reuses the compiled programs."""
        return self

    def param_priors(self) -> dict[str, dist.Distribution]:
        """Priors over the unconstrained likelihood parameters, Jacobian included."""
        return {}

    def log_prior(self, lik_params: dict[str, jax.Array]) -> jax.Array:
        """Sum of :meth:`param_priors` log-densities at ``lik_params``."""
        terms = [d.log_prob(lik_params[k]).sum() for k, d in self.param_priors().items()]
        return sum(terms, start=jnp.zeros(()))

    @abc.abstractmethod
    def distribution(self, f: jax.Array, lik_params: dict[str, jax.Array]) -> dist.Distribution:
        """Distribution of ``y`` given outputs ``f`` ``(B, num_outputs)``; batch shape ``(B,)``."""

    def log_prob(self, f, y, lik_params) -> jax.Array:
        """Per-example untempered ``log p(y | f)``, shape ``(B,)``."""
        return self.distribution(f, lik_params).log_prob(y)

    def sample(self, key, f, lik_params) -> jax.Array:
        """Draw targets ``y ~ p(y | f)``."""
        return self.distribution(f, lik_params).sample(key)

    @abc.abstractmethod
    def validate_targets(self, y, num_outputs: int) -> np.ndarray:
        """Check targets on the host for a network with ``num_outputs`` outputs.

        Returns ``y`` with the dtype and shape :meth:`log_prob` expects.
        """

    @abc.abstractmethod
    def draw_stats(self, f, lik_params) -> dict[str, jax.Array]:
        """Per-draw statistics whose mean and variance over draws :meth:`summarize` needs."""

    @abc.abstractmethod
    def summarize(self, mean_stats: dict[str, jax.Array], var_stats: dict[str, jax.Array]):
        """Predictive summary from the mean and variance over draws of :meth:`draw_stats`."""


@config
@dataclass(frozen=True)
class Gaussian(Likelihood):
    """Gaussian likelihood ``y ~ N(mu(x), sigma^2)`` over ``D`` independent targets.

    Parameters
    ----------
    scale
        Noise std when fixed, or its initial value when ``learn_scale``.
    learn_scale
        Learn one homoscedastic ``sigma``, stored as ``log_scale`` with prior
        ``sigma ~ HalfNormal(noise_prior_scale)``.
    heteroscedastic
        The network outputs ``[mean (D), raw (D)]`` and
        ``sigma = softplus(raw) + min_scale`` (Nix & Weigend 1994; Kendall & Gal 2017).
    noise_prior_scale
        Scale of the half-normal prior on a learned ``sigma``.
    min_scale
        Floor on a heteroscedastic ``sigma``.
    """

    task: ClassVar[str] = "regression"
    scale: float = 1.0
    learn_scale: bool = False
    heteroscedastic: bool = False
    noise_prior_scale: float = 1.0
    min_scale: float = 1e-6

    def __post_init__(self):
        super().__post_init__()
        if self.learn_scale and self.heteroscedastic:
            raise ValueError("learn_scale and heteroscedastic are mutually exclusive")
        check_positive(scale=self.scale, noise_prior_scale=self.noise_prior_scale)
        check_range("min_scale", self.min_scale, 0, closed="left")

    def num_outputs(self, target_dim):
        return 2 * target_dim if self.heteroscedastic else target_dim

    def init_params(self):
        return {"log_scale": jnp.log(jnp.asarray(self.scale))} if self.learn_scale else {}

    def traced(self):
        return replace(self, scale=1.0) if self.learn_scale else self

    def param_priors(self):
        if not self.learn_scale:
            return {}
        # log sigma with sigma ~ HalfNormal: the transform adds the Jacobian log sigma.
        return {
            "log_scale": dist.TransformedDistribution(
                dist.HalfNormal(self.noise_prior_scale), ExpTransform().inv
            )
        }

    def loc_scale(self, f, lik_params) -> tuple[jax.Array, jax.Array]:
        """Mean ``(B, D)`` and noise std (broadcastable to it) from outputs ``f``."""
        if self.heteroscedastic:
            loc, raw = jnp.split(f, 2, axis=-1)
            return loc, jax.nn.softplus(raw) + self.min_scale
        if self.learn_scale:
            return f, jnp.exp(lik_params["log_scale"])
        return f, jnp.asarray(self.scale, f.dtype)

    def distribution(self, f, lik_params):
        loc, scale = self.loc_scale(f, lik_params)
        return dist.Normal(loc, scale).expand(loc.shape).to_event(1)

    def validate_targets(self, y, num_outputs):
        y = np.asarray(y)
        if not (np.issubdtype(y.dtype, np.floating) or np.issubdtype(y.dtype, np.integer)):
            raise TypeError(f"regression targets must be real numbers, got dtype {y.dtype}")
        y = y.astype(jax.dtypes.canonicalize_dtype(np.float64))  # float32 unless x64
        if not np.all(np.isfinite(y)):
            raise ValueError("regression targets contain NaN or inf")
        if self.heteroscedastic and (num_outputs < 2 or num_outputs % 2):
            raise ValueError(
                "a heteroscedastic Gaussian needs a network with 2 outputs per target (mean "
                f"and scale): 2 for one target, 2 D for D targets; this one has {num_outputs}"
            )
        d = num_outputs // 2 if self.heteroscedastic else num_outputs
        if y.ndim == 1 and d == 1:
            y = y[:, None]
        if y.ndim != 2 or y.shape[1] != d:
            scalar = " (or (N,))" if d == 1 else ""
            raise ValueError(
                f"regression targets must have shape (N, {d}){scalar} for {num_outputs} "
                f"network outputs, got {y.shape}"
            )
        return y

    def draw_stats(self, f, lik_params):
        loc, scale = self.loc_scale(f, lik_params)
        return {"mean": loc, "noise_var": jnp.broadcast_to(scale**2, loc.shape)}

    def summarize(self, mean_stats, var_stats) -> RegressionPrediction:
        epistemic_var = var_stats["mean"]
        aleatoric_var = mean_stats["noise_var"]
        return RegressionPrediction(
            mean=mean_stats["mean"],
            std=jnp.sqrt(epistemic_var + aleatoric_var),
            aleatoric_std=jnp.sqrt(aleatoric_var),
            epistemic_std=jnp.sqrt(epistemic_var),
        )


def _class_labels(y, num_classes: int) -> np.ndarray:
    """Check integer class indices in ``[0, num_classes)``, of shape ``(N,)`` or ``(N, 1)``,
    and return them as int32 ``(N,)``."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        onehot = y.ndim == 2 and y.shape[1] == num_classes
        raise ValueError(
            "class labels must be integer class indices of shape (N,) or (N, 1), got shape "
            f"{y.shape}" + (" (one-hot rows? pass y.argmax(-1))" if onehot else "")
        )
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y) & (y == np.round(y))):
            raise ValueError(f"class labels of dtype {y.dtype} must be whole numbers")
    elif not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        raise TypeError(f"class labels must be integers, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"class labels must lie in [0, {num_classes}); found min {y.min()}, max {y.max()}"
        )
    return y.astype(np.int32)


@config
@dataclass(frozen=True)
class _Classification(Likelihood):
    """Shared predictive summaries for likelihoods over class labels."""

    task: ClassVar[str] = "classification"

    @abc.abstractmethod
    def probs(self, f: jax.Array) -> jax.Array:
        """Class probabilities ``(B, K)`` from outputs ``f``."""

    def draw_stats(self, f, lik_params):
        p = self.probs(f)
        return {"probs": p, "entropy": _entropy(p)}

    def summarize(self, mean_stats, var_stats) -> ClassificationPrediction:
        probs = mean_stats["probs"]
        entropy = _entropy(probs)
        aleatoric = mean_stats["entropy"]
        return ClassificationPrediction(
            probs=probs,
            entropy=entropy,
            aleatoric=aleatoric,
            epistemic=jnp.clip(entropy - aleatoric, 0.0),
        )


@config
@dataclass(frozen=True)
class Categorical(_Classification):
    """Categorical likelihood on ``K`` logits; targets are integer labels in ``[0, K)``."""

    def num_outputs(self, target_dim):
        return target_dim

    def probs(self, f):
        return jax.nn.softmax(f, axis=-1)

    def distribution(self, f, lik_params):
        return dist.Categorical(logits=f)

    def validate_targets(self, y, num_outputs):
        if num_outputs < 2:
            raise ValueError(f"Categorical needs a network with one output per class (2 or "
                             f"more), got {num_outputs}; for two classes on one output use "
                             "Bernoulli")
        return _class_labels(y, num_outputs)


@config
@dataclass(frozen=True)
class Bernoulli(_Classification):
    """Bernoulli likelihood on a single logit column; targets are labels in {0, 1}, of shape
    ``(N,)`` or ``(N, 1)``."""

    def num_outputs(self, target_dim):
        return 1

    def probs(self, f):
        p = jax.nn.sigmoid(f[..., 0])
        return jnp.stack([1.0 - p, p], axis=-1)

    def distribution(self, f, lik_params):
        return dist.Bernoulli(logits=f[..., 0])

    def validate_targets(self, y, num_outputs):
        if num_outputs != 1:
            raise ValueError(f"{type(self).__name__} needs 1 network output (the score of "
                             f"class 1), got {num_outputs}")
        return _class_labels(y, 2)


@config
@dataclass(frozen=True)
class Probit(Bernoulli):
    """Binary labels through a probit link: ``p(y = 1 | f) = Φ(f)`` on one output column.

    Equivalently ``y = 1[f + ε > 0]`` with ``ε ~ N(0, 1)``: the latent-variable form that
    makes the output layer conditionally Gaussian, which :class:`~bayesnn.LatentGibbs`
    samples (Albert & Chib 1993). Every other method uses its log-likelihood
    ``log Φ((2y − 1) f)``. Tails are close to the logistic's with ``f`` scaled by about
    1.7, but lighter: a confidently wrong label costs ``f²/2`` rather than ``|f|``.

    References
    ----------
    Albert, J. H. & Chib, S. (1993). Bayesian analysis of binary and polychotomous
    response data. *JASA* 88(422), 669–679.
    """

    def probs(self, f):
        p = ndtr(f[..., 0])
        return jnp.stack([1.0 - p, p], axis=-1)

    def distribution(self, f, lik_params):
        # the logit of Φ(f), exact in both tails
        return dist.Bernoulli(logits=log_ndtr(f[..., 0]) - log_ndtr(-f[..., 0]))

    def log_prob(self, f, y, lik_params):
        return log_ndtr(jnp.where(y == 1, 1.0, -1.0) * f[..., 0])

"""The Laplace approximation: a Gaussian posterior around a trained network's weights.

``p(θ | D) ≈ N(θ*, (H + δI)⁻¹)`` over a subset of the weights (all of them, the last Dense
layer, or any chosen by path), with ``θ*`` a MAP estimate, ``H`` the curvature of the
log-likelihood at ``θ*`` (:mod:`bayesnn.inference.curvature`) and ``δ`` the prior precision,
fixed or chosen by the Laplace evidence. The other weights stay at ``θ*``.

The posterior holds weight-space draws like any method's. By default it predicts with them
through the network linearised at ``θ*`` (a :class:`~bayesnn.posterior.LinearisedPredictive`:
the Monte Carlo form of the linearised, "GLM", predictive, which is what the approximation is
the posterior of; Immer, Korzepa & Bauer 2021); :func:`glm_predictive` gives the same
predictive in closed form (probit for classification).

References
----------
MacKay, D. J. C. (1992). The evidence framework applied to classification networks.
*Neural Computation* 4(5), 720–736 (the probit approximation, eq. 25).
Ritter, H., Botev, A. & Barber, D. (2018). A scalable Laplace approximation for neural
networks. *ICLR*.
Immer, A., Korzepa, M. & Bauer, M. (2021). Improving predictions of Bayesian neural nets
via local linearization. *AISTATS*.
Daxberger, E., Kristiadi, A., Immer, A., Eschenhagen, R., Bauer, M. & Hennig, P. (2021).
Laplace Redux – effortless Bayesian deep learning. *NeurIPS*.
"""

from __future__ import annotations

import fnmatch
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

from bayesnn import priors
from bayesnn.bnn import BNN, prepare_inputs
from bayesnn.data import Dataset
from bayesnn.inference.base import check_positive
from bayesnn.inference.curvature import (
    CURVATURES,
    HESSIANS,
    Diag,
    Full,
    Kron,
    LowRank,
    Subset,
    curvature,
    jacobians,
    layer_log_evidence,
    log_evidence,
    log_likelihood,
    optimal_layer_prior_precisions,
    optimal_noise_and_prior,
    optimal_prior_precision,
    scaled,
)
from bayesnn.inference.init import check_init
from bayesnn.inference.map import MAP
from bayesnn.inference.programs import StaticModel
from bayesnn.likelihoods import ClassificationPrediction, Gaussian, Probit
from bayesnn.posterior import DrawPredictive, LinearisedPredictive, Posterior, map_rows
from bayesnn.tree import flatten_paths, unflatten_paths
from bayesnn.validation import check_types, config

__all__ = [
    "Laplace", "LaplaceCovariance", "glm_predictive", "select_subset",
    "weight_draws",
]

PREDICTIVES = ("glm", "nn")  # the draws' outputs: linearised at θ*, or the network's
GLM_METHODS = ("probit", "mc")
MARGLIKS = ("marglik", "marglik_layerwise")
NOISES = ("map", "marglik")
LAYERWISE_HESSIANS = ("kron", "diag")  # block-diagonal over layers


class LaplaceCovariance(NamedTuple):
    """The covariance ``(H + D)⁻¹`` of a Laplace posterior over ``subset``'s weights, with
    ``D = δI`` (``prior_precision`` a float) or, per layer, the diagonal of
    ``prior_precision`` ``(P,)``."""

    subset: Subset
    curvature: Full | Diag | Kron | LowRank
    prior_precision: float | jax.Array

    def dense(self) -> jax.Array:
        """The covariance as a ``(P, P)`` matrix (for small subsets)."""
        h = self.curvature.dense(self.subset)
        delta = jnp.broadcast_to(jnp.asarray(self.prior_precision, h.dtype), h.shape[:1])
        return jnp.linalg.inv(h + jnp.diag(delta))


@config
@dataclass(frozen=True)
class Laplace:
    """Laplace approximation around a MAP fit or the network's own weights.

    Parameters
    ----------
    init : {"map", "network"} or MAP
        ``θ*``: the weights of a MAP fit (``"map"``: ``MAP()``; a :class:`~bayesnn.MAP`:
        that fit), or the network's weights as they are (``"network"``: a network trained
        elsewhere).
    subset : "all", "last_layer" or sequence of str
        The weights the posterior covers: every weight, the last Dense layer the forward
        pass calls (:meth:`~bayesnn.BNN.dense_layers`), or the parameters matching any of
        these glob patterns (``"layers/2/*"``). The others stay at their point estimates.
    hessian : {"kron", "full", "diag", "lowrank"}
        The curvature's structure: Kronecker-factored per Dense layer (KFAC) and per
        convolution (KFC, Grosse & Martens 2016; the subset must be whole Dense or Conv
        layers), dense, diagonal, or its top ``rank`` eigenpairs.
    curvature : {"ggn", "ef"}
        Generalised Gauss–Newton or empirical Fisher.
    prior_precision : float, "marglik", "marglik_layerwise" or None
        ``δ`` of the isotropic Gaussian prior ``N(μ₀, I/δ)`` over the subset. None: from the
        model's :class:`~bayesnn.priors.Normal` prior (``1 / scale²``). ``"marglik"``: the δ
        maximising the Laplace log evidence at ``θ*`` (post hoc: ``θ*`` is not refitted).
        ``"marglik_layerwise"``: one ``δ_l`` per layer (module path: ``"layers/0"``),
        jointly maximising the evidence of ``N(μ₀, diag(δ_l)⁻¹)``; needs a curvature
        block-diagonal over the layers, ``hessian="kron"`` or ``"diag"``.
    num_samples : int
        Weight-space draws kept, as ``(1, num_samples)``.
    predictive : {"glm", "nn"}
        How the draws predict: ``"glm"``, through the network linearised at ``θ*``,
        ``f(x, θ*) + J(x)(θ_s - θ*)`` (the posterior's predictive is a
        :class:`~bayesnn.posterior.LinearisedPredictive`; Daxberger et al. 2021 recommend
        it), or ``"nn"``, through the network itself.
    rank : int
        Eigenpairs of ``hessian="lowrank"``.
    batch_size : int
        Rows per chunk of the curvature's pass over the data (memory is bounded by it).
    noise : {"map", "marglik"}
        The noise std of a ``Gaussian(learn_scale=True)`` likelihood: its MAP value, or
        (``"marglik"``) the σ maximising the Laplace evidence at ``θ*``, jointly with δ when
        ``prior_precision="marglik"`` (MacKay 1992, eq. 29: ``σ² = RSS / (N − γ)``;
        :func:`~bayesnn.inference.curvature.optimal_noise_and_prior`). A MAP fit learns σ
        from the residuals as if every weight were known; the evidence counts the ``γ``
        weights the data determine, and a σ that training left behind its optimum is
        re-estimated. Needs ``curvature="ggn"`` (whose ``H`` scales as ``1/σ²``) and a
        scalar prior precision.

    Notes
    -----
    The likelihood's other parameters stay at their MAP values.
    ``info`` holds the MAP fit's entries and ``prior_precision`` (a float, or
    ``{module path: δ_l}`` for ``"marglik_layerwise"``), ``log_evidence``, ``laplace`` (the
    :class:`LaplaceCovariance`, read by the closed-form :func:`glm_predictive`) and
    ``laplace_seconds`` (the cost on top of the MAP fit). Prediction reads none of them.
    ``θ*`` is the ``center`` of the posterior's
    :class:`~bayesnn.posterior.LinearisedPredictive` (``predictive="glm"``).

    References
    ----------
    Ritter, Botev & Barber (2018), section 3 (KFAC Laplace); Immer, Bauer, Fortuin, Rätsch
    & Khan (2021), *Scalable marginal likelihood estimation for model selection in deep
    learning*, ICML (per-layer prior precisions by the Laplace evidence); Daxberger et al.
    (2021), *Laplace Redux*, section 3 (last-layer KFAC with the marginal-likelihood prior
    precision as the default recipe).
    """

    init: str | MAP = "map"
    subset: Any = "last_layer"
    hessian: str = "kron"
    curvature: str = "ggn"
    prior_precision: Any = None
    num_samples: int = 100
    predictive: str = "glm"
    rank: int = 20
    batch_size: int = 256
    noise: str = "map"

    def __post_init__(self):
        check_types(self, subset=str | Sequence[str], prior_precision=float | str | None)
        check_init(self.init, ("network", "map"))
        if self.predictive not in PREDICTIVES:
            raise ValueError(f"predictive must be one of {PREDICTIVES}, got {self.predictive!r}")
        if self.subset not in ("all", "last_layer"):
            if isinstance(self.subset, str) or not self.subset:
                raise ValueError("subset must be 'all', 'last_layer' or a non-empty sequence of "
                                 f"parameter-path glob patterns, got {self.subset!r}")
            object.__setattr__(self, "subset", tuple(self.subset))
        if self.hessian not in HESSIANS:
            raise ValueError(f"hessian must be one of {HESSIANS}, got {self.hessian!r}")
        if self.curvature not in CURVATURES:
            raise ValueError(f"curvature must be one of {CURVATURES}, got {self.curvature!r}")
        if isinstance(self.prior_precision, str) or self.prior_precision is None:
            if self.prior_precision not in (None, *MARGLIKS):
                raise ValueError("prior_precision must be a float > 0, 'marglik', "
                                 f"'marglik_layerwise' or None, got {self.prior_precision!r}")
            if (self.prior_precision == "marglik_layerwise"
                    and self.hessian not in LAYERWISE_HESSIANS):
                raise ValueError("prior_precision='marglik_layerwise' needs a curvature "
                                 "block-diagonal over the layers, hessian='kron' or 'diag'; "
                                 f"got hessian={self.hessian!r}")
        else:
            check_positive(prior_precision=self.prior_precision)
        check_positive(num_samples=self.num_samples, rank=self.rank, batch_size=self.batch_size)
        if self.noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}, got {self.noise!r}")
        if self.noise == "marglik" and (self.curvature != "ggn"
                                        or self.prior_precision == "marglik_layerwise"):
            raise ValueError("noise='marglik' needs curvature='ggn' and a scalar "
                             "prior_precision (a float, 'marglik' or None)")

    def run(self, model: BNN, data: Dataset, key, *, progress=None, checkpoint=None) -> Posterior:
        _check_model(model, self.prior_precision, self.noise)
        subset = select_subset(model, model.init_position, self.subset, self.hessian, data.x)
        k_map, k_curv, k_draw = jax.random.split(key, 3)
        if self.init == "network":
            position, info = model.init_position, {"seconds": 0.0, "interrupted": False}
        else:
            fitted = (MAP() if self.init == "map" else self.init).run(
                model, data, k_map, progress=progress, checkpoint=checkpoint)
            position, info = fitted.point(), dict(fitted.info)
        start = time.perf_counter()
        data = Dataset(jnp.asarray(data.x), jnp.asarray(data.y))  # on the device once
        curv = curvature(model, position, subset, data, hessian=self.hessian,
                         kind=self.curvature, batch_size=self.batch_size, key=k_curv,
                         rank=self.rank)
        loglik = log_likelihood(model, position, data, self.batch_size)
        sq_dev = (subset.ravel(position["net"]) - _prior_mean(model, subset)) ** 2
        if self.noise == "marglik":
            fixed = (None if self.prior_precision == "marglik" else
                     1.0 / model.prior.scale**2 if self.prior_precision is None else
                     float(self.prior_precision))
            log_scale = position["lik"]["log_scale"]
            scale = float(jnp.exp(log_scale))
            sigma, _ = optimal_noise_and_prior(
                loglik, np.size(data.y), curv.eigvals, float(jnp.sum(sq_dev)), scale=scale,
                temperature=model.likelihood.temperature, prior_precision=fixed)
            position = {**position, "lik": {
                **position["lik"], "log_scale": jnp.log(jnp.asarray(sigma, log_scale.dtype))}}
            curv = scaled(curv, (scale / sigma) ** 2)
            loglik = log_likelihood(model, position, data, self.batch_size)
            info["noise_scale"] = sigma
        if self.prior_precision == "marglik_layerwise":
            recorded = optimal_layer_prior_precisions(sq_dev, subset, curv)
            evidence = layer_log_evidence(loglik, sq_dev, subset, curv, recorded)
            delta = subset.per_weight(recorded)
        else:
            sq_dist = float(jnp.sum(sq_dev))
            if self.prior_precision == "marglik":
                delta = optimal_prior_precision(sq_dist, curv.eigvals)
            elif self.prior_precision is None:
                delta = 1.0 / model.prior.scale**2
            else:
                delta = float(self.prior_precision)
            recorded = delta
            evidence = log_evidence(loglik, sq_dist, subset.size, curv.eigvals, delta)
        cov = LaplaceCovariance(subset, curv, delta)
        draws = weight_draws(model, position, cov, k_draw, self.num_samples)
        seconds = time.perf_counter() - start
        info |= {
            "prior_precision": recorded, "log_evidence": float(evidence),
            "laplace": cov, "laplace_seconds": seconds, "seconds": info["seconds"] + seconds,
        }
        predictive = LinearisedPredictive(position) if self.predictive == "glm" \
            else DrawPredictive()
        return Posterior(model, draws, self, info, predictive)


def _check_model(model: BNN, prior_precision, noise: str) -> None:
    lik = model.likelihood
    if noise == "marglik" and not (isinstance(lik, Gaussian) and lik.learn_scale):
        raise ValueError("noise='marglik' needs a Gaussian(learn_scale=True) likelihood; got "
                         f"{lik!r}")
    if isinstance(lik, Gaussian) and lik.heteroscedastic:
        raise ValueError("Laplace needs a Gaussian likelihood with a fixed or learned scale; "
                         "with heteroscedastic=True its Gauss–Newton matrix is not positive "
                         "semi-definite")
    if prior_precision is None and not isinstance(model.prior, priors.Normal):
        raise ValueError(f"prior_precision: the model's prior {model.prior!r} is not a "
                         "bayesnn.priors.Normal, so pass prior_precision=a float or 'marglik'")


def _prior_mean(model: BNN, subset: Subset):
    """``μ₀`` over the subset: the loc of a Normal prior, else 0."""
    if not isinstance(model.prior, priors.Normal):
        return 0.0
    locs = flatten_paths(model.prior.loc)
    if list(locs) == [""]:
        return jnp.asarray(locs[""])
    return jnp.concatenate([jnp.ravel(jnp.broadcast_to(locs[p], s))
                            for p, s in zip(subset.paths, subset.shapes, strict=True)])


def select_subset(model: BNN, position, subset, hessian: str, x) -> Subset:
    """The :class:`~bayesnn.inference.curvature.Subset` that ``subset`` names (see
    :class:`Laplace`), with its Dense and Conv layers, in leaf order, when
    ``hessian="kron"``."""
    named = flatten_paths(position["net"])
    if subset == "all":
        chosen = set(named)
    elif subset == "last_layer":
        order = model.dense_call_order(x)
        if not order:
            raise ValueError("subset='last_layer' needs a network with an nnx.Linear layer")
        m = order[-1]
        chosen = {f"{m}/kernel", f"{m}/bias"}
        if not chosen <= set(named):
            raise ValueError(f"subset='last_layer': the last Dense layer {m!r} needs a kernel "
                             "and a bias that are not frozen")
    else:
        chosen = set()
        for pattern in subset:
            hits = fnmatch.filter(named, pattern)
            if not hits:
                raise ValueError(f"subset pattern {pattern!r} matches no parameter; "
                                 f"paths: {list(named)}")
            chosen |= set(hits)
    paths = tuple(p for p in named if p in chosen)
    layers = ()
    if hessian == "kron":
        kernels = model.dense_layers(position) | model.conv_layers(position)
        layers = tuple(sorted((m for m, layer in kernels.items() if layer.kernel in chosen),
                              key=lambda m: paths.index(kernels[m].kernel)))
        covered = {p for m in layers for p in kernels[m]}
        if covered != chosen:
            raise ValueError("hessian='kron' needs the subset to be whole Dense or Conv layers "
                             f"(kernel and bias); these parameters are not: "
                             f"{sorted(chosen ^ covered)}")
    return Subset(paths, tuple(tuple(named[p].shape) for p in paths), layers)


@partial(jax.jit, static_argnums=(1, 5))
def _drawn(curv, subset, delta, net, key, num_samples):
    """The subset's weights of ``num_samples`` draws from ``N(θ*, (H + D)⁻¹)``, by path."""
    theta = subset.ravel(net)
    z = jax.random.normal(key, (num_samples, subset.size), theta.dtype)
    return subset.unravel(theta + curv.sample(subset, delta, z))


def weight_draws(model: BNN, position, cov: LaplaceCovariance, key, num_samples: int):
    """``num_samples`` positions ``(1, num_samples, ...)`` from ``N(θ*, cov)``; the weights
    outside the subset are read-only broadcast views of ``θ*``."""
    drawn = _drawn(cov.curvature, cov.subset, cov.prior_precision, position["net"], key,
                   num_samples)

    def stack(a):
        return np.broadcast_to(np.asarray(a), (1, num_samples, *np.shape(a)))

    net = {p: np.asarray(drawn[p])[None] if p in drawn else stack(v)
           for p, v in flatten_paths(position["net"]).items()}
    return {"net": unflatten_paths(net, like=position["net"]),
            "lik": jax.tree.map(stack, position["lik"])}


def glm_predictive(posterior: Posterior, x, *, method: str = "probit", key=None,
                   num_samples: int = 100, batch_size: int = 256):
    """The linearised ("GLM") predictive of a Laplace posterior at inputs ``x``, in closed
    form.

    The network is linearised at ``θ*``: ``f(x, θ) ≈ f(x, θ*) + J(x)(θ - θ*)``, so the
    outputs are Gaussian, ``N(f(x, θ*), J Σ Jᵀ)`` (Immer et al. 2021; Daxberger et al.
    2021, eq. 6). Computed in chunks of ``batch_size`` inputs.

    Parameters
    ----------
    posterior : Posterior
        A :class:`Laplace` posterior with ``predictive="glm"``: ``θ*`` is its predictive's
        ``center``, ``Σ`` its ``info["laplace"]``.
    x : array ``(N, ...)``
    method : {"probit", "mc"}
        Classification only (regression is exact: a Gaussian with variance
        ``J Σ Jᵀ + σ²``). ``"probit"``: ``softmax(f / sqrt(1 + π/8 · diag(J Σ Jᵀ)))``, and
        ``Φ(f / sqrt(1 + var))`` for a :class:`~bayesnn.likelihoods.Probit` likelihood,
        exact there (MacKay 1992); it gives the probabilities and their entropy, not the
        entropy's split, so ``aleatoric`` and ``epistemic`` are NaN. ``"mc"``: the mean
        over ``num_samples`` draws of the outputs per input, with the split.
    key : PRNG key
        Needed by ``"mc"``; each input gets its own draws.

    Returns
    -------
    RegressionPrediction or ClassificationPrediction
    """
    if method not in GLM_METHODS:
        raise ValueError(f"method must be one of {GLM_METHODS}, got {method!r}")
    check_positive(num_samples=num_samples, batch_size=batch_size)
    cov = posterior.info.get("laplace")
    if not isinstance(posterior.predictive, LinearisedPredictive) or cov is None:
        raise ValueError("posterior: glm_predictive needs a Laplace posterior with "
                         "predictive='glm' (its LinearisedPredictive holds θ*), got "
                         f"{type(posterior.method).__name__} with "
                         f"{type(posterior.predictive).__name__}")
    model, position = posterior.model, posterior.predictive.center
    x = prepare_inputs(model, x)
    mc = method == "mc" and model.likelihood.task == "classification"
    if mc and key is None:
        raise ValueError("method='mc' needs a key")
    keys = jax.random.split(key, x.shape[0]) if mc else jnp.zeros((x.shape[0], 2), jnp.uint32)
    if jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key):
        keys = jax.random.key_data(keys)
    # an equal model (a refit) reuses the compiled chunk
    fn = partial(_glm_chunk, StaticModel(model), position, cov.subset, cov.curvature,
                 cov.prior_precision, mc, num_samples)
    return map_rows(fn, (x, np.asarray(keys)), batch_size)


@partial(jax.jit, static_argnums=(0, 2, 5, 6))
def _glm_chunk(static, position, subset, curv, delta, mc, num_samples, x, keys):
    model = static.model
    lik, lik_params = model.likelihood, position["lik"]
    f = model.apply(position, x)
    fcov = curv.jsj(subset, delta, jacobians(model, position, subset, x))
    var = jnp.diagonal(fcov, axis1=1, axis2=2)
    if lik.task == "regression":
        stats = lik.draw_stats(f, lik_params)
        return lik.summarize(stats, {"mean": var})
    if not mc:
        c = 1.0 if isinstance(lik, Probit) else math.pi / 8
        probs = lik.probs(f * jax.lax.rsqrt(1.0 + c * var))
        entropy = -jnp.sum(xlogy(probs, probs), axis=-1)
        nan = jnp.full_like(entropy, jnp.nan)
        return ClassificationPrediction(probs, entropy, nan, nan)
    w, v = jnp.linalg.eigh(fcov)
    root = v * jnp.sqrt(jnp.clip(w, 0.0))[:, None, :]
    z = jax.vmap(lambda k: jax.random.normal(jax.random.wrap_key_data(k),
                                             (num_samples, f.shape[1]), f.dtype))(keys)
    fs = f[:, None] + jnp.einsum("bkl,bsl->bsk", root, z)  # (B, S, K)
    stats = jax.vmap(lambda fi: lik.draw_stats(fi, lik_params), 1)(fs)  # leaves (S, B, ...)
    return lik.summarize(jax.tree.map(lambda s: s.mean(0), stats),
                         jax.tree.map(lambda s: s.var(0), stats))

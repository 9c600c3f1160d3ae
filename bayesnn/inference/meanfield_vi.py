"""Mean-field Gaussian VI, with the ELBO by weight noise or by local reparameterisation.

The weight-noise ELBO is NumPyro's, on the SVI loop of :mod:`bayesnn.inference.vi`. The
local-reparameterisation ELBO (Kingma, Salimans & Welling 2015) draws the pre-activations
of Dense layers instead of their weights (:func:`local_reparam_loss`); it sees the network
only through the model's Dense-layer view (:meth:`~bayesnn.BNN.dense_layers`,
:meth:`~bayesnn.BNN.apply_dense`). The guide, its parameters and the draws are those of
the NumPyro path.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from numpyro.distributions.kl import kl_divergence
from numpyro.infer import SVI
from numpyro.infer.autoguide import AutoNormal

from bayesnn import prng
from bayesnn.bnn import BNN, Batch
from bayesnn.data import Dataset
from bayesnn.inference.vi import PARAMETERS_DOC, RETURNS_DOC, ExpScale, GaussianVI, svi_update
from bayesnn.posterior import Posterior
from bayesnn.validation import config

__all__ = ["MeanFieldVI", "local_reparam_loss", "noisy_matmul", "normal_kl"]


def normal_kl(loc, log_scale, prior: dist.Distribution) -> jax.Array:
    """``KL(N(loc, exp(log_scale)²) ‖ prior)`` summed over the elements.

    For a Normal prior ``N(m, s²)`` it is ``Σ log s − log σ + (σ² + (μ − m)²) / (2 s²) − ½``,
    written in ``log σ`` so that no logarithm over the weights is taken; other priors use
    NumPyro's registered KL.
    """
    base = getattr(prior, "base_dist", prior)
    if type(base) is dist.Normal:
        m, s = base.loc, base.scale
        return jnp.sum(jnp.log(s) - log_scale - 0.5
                       + (jnp.exp(2 * log_scale) + (loc - m) ** 2) / (2 * s**2))
    return jnp.sum(kl_divergence(dist.Normal(loc, jnp.exp(log_scale)), prior))


def noisy_matmul(key, path: str, kernel_var=None, bias_var=None):
    """A Dense layer's ``x @ W`` drawn from its pre-activations' distribution under the guide.

    ``matmul(x, W)`` returns ``x W + sqrt(x² σ² + σ_b²) · ε``, ``ε ~ N(0, I)`` from ``key``
    (``W`` holds the guide means, ``σ², σ_b²`` are the kernel's and bias' variances, None for
    a point estimate; the layer adds the bias mean itself). It may be called once: a second
    call would reuse the noise, and the layer's weight noise would be shared.
    """
    calls = []

    def matmul(x, kernel):
        if calls:
            raise ValueError(
                f"local_reparam: Dense layer {path!r} is applied more than once per forward "
                "pass; use local_reparam=False"
            )
        calls.append(path)
        mean = x @ kernel
        var = jnp.zeros_like(mean)
        if kernel_var is not None:
            var += (x * x) @ kernel_var.astype(x.dtype)
        if bias_var is not None:
            var += bias_var.astype(x.dtype)
        # `tiny` keeps the gradient of the square root finite where the variance is 0.
        sd = jnp.sqrt(var + jnp.finfo(var.dtype).tiny)
        return mean + sd * prng.normal(key, mean.shape, mean.dtype)

    return matmul


def local_reparam_loss(model: BNN, key, loc, log_scale, point, batch: Batch, beta=1.0, scale=1.0,
                       num_particles: int = 1) -> jax.Array:
    """Negative ELBO of a mean-field Gaussian guide by local reparameterisation.

    Under ``q(W) = Π N(μ_ij, σ_ij²)`` the pre-activations ``a = x W + b`` of a Dense layer
    with input ``x`` are independent Gaussians, ``a_j ~ N(Σ_i x_i μ_ij + μ_j,
    Σ_i x_i² σ_ij² + σ_j²)`` (Kingma, Salimans & Welling 2015, eq. 6), so they are drawn
    directly, independently per example (:func:`noisy_matmul`): batch × units normals per
    layer instead of inputs × units weights, and gradients of lower variance since examples
    no longer share weight noise. Per example, the outputs have the same distribution as
    under weight noise, so the expected ELBO is unchanged. The KL term is exact (the prior
    must have a closed-form KL from a Normal, e.g. be Normal itself; see :func:`normal_kl`).
    The estimate is

        −[scale · Σ_i mask_i log p(y_i | x_i, θ) / T − β · KL(q ‖ p)],

    the Monte Carlo term averaged over ``num_particles`` draws.

    Parameters
    ----------
    model : BNN
        Every Bayesian weight must be the kernel or bias of a Dense layer of
        :meth:`~bayesnn.BNN.dense_layers` applied once per forward pass, and the likelihood
        must have no parameters with a prior (see :meth:`MeanFieldVI.check_local_reparam`).
    key : PRNG key
    loc, log_scale : dict
        The guide's means ``μ`` and log standard deviations ``log σ`` by site
        (``"net/<path>"``); the guide's parameters are ``<site>_auto_loc`` and, unconstrained,
        ``<site>_auto_scale`` (:class:`MeanFieldVI`'s guide has ``σ = exp`` of it).
    point : dict
        The point-estimate weights by site.
    batch : Batch
    beta, scale : float
        KL weight and likelihood scale (``N / b``).
    num_particles : int
        Monte Carlo draws of the pre-activations.
    """
    position = model.position_from_sites(loc, point)
    priors = model.prior.distributions(model.init_position["net"])
    kl = sum(normal_kl(loc[site], log_scale[site], priors[site.removeprefix("net/")])
             for site in loc)
    var = {site.removeprefix("net/"): jnp.exp(2 * v) for site, v in log_scale.items()}
    layers = model.dense_layers()

    def loglik(k):
        matmuls = {
            path: noisy_matmul(k_layer, path, var.get(layer.kernel), var.get(layer.bias))
            for (path, layer), k_layer in zip(layers.items(), jax.random.split(k, len(layers)),
                                              strict=True)
            if layer.kernel in var or layer.bias in var
        }
        f = model.apply_dense(position, batch.x, matmuls)
        ll = model.likelihood.log_prob(f, batch.y, position["lik"])
        mask = jnp.ones_like(ll, bool) if batch.mask is None else batch.mask
        return jnp.sum(jnp.where(mask, ll, 0.0))

    ll = jnp.mean(jax.vmap(loglik)(jax.random.split(key, num_particles)))
    return -(scale * ll / model.likelihood.temperature - beta * kl)


def _local_reparam_update(svi: SVI, model: BNN, num_particles: int):
    """:func:`~bayesnn.inference.vi.vi_epoch`'s ``update`` by :func:`local_reparam_loss`,
    with the SVI problem's parameters, constraints and optimiser: the state stays an
    ``SVIState``."""

    latent, point = model.sites(model.init_position)

    def update(state, key, batch, beta, scale):
        def loss(params):
            constrained = svi.constrain_fn(params)
            loc = {site: constrained[f"{site}_auto_loc"] for site in latent}
            log_scale = {site: params[f"{site}_auto_scale"] for site in latent}  # σ = exp(ρ)
            return local_reparam_loss(model, key, loc, log_scale,
                                      {site: constrained[site] for site in point}, batch, beta,
                                      scale, num_particles), None

        (value, _), optim_state = svi.optim.eval_and_update(loss, state.optim_state)
        return state._replace(optim_state=optim_state), value

    return update


class _AutoNormal(ExpScale, AutoNormal):
    pass


@config
@dataclass(frozen=True)
class MeanFieldVI(GaussianVI):
    __doc__ = (
        """Mean-field Gaussian VI, ``q(θ) = Π_j N(θ_j | μ_j, σ_j²)``.

    The guide is NumPyro's ``AutoNormal`` with ``σ_j = exp(ρ_j)``; its weight noise is
    drawn by :func:`bayesnn.prng.normal` (the numbers NumPyro would draw, in one fused loop).

    "Bayes by Backprop" (Blundell et al. 2015, eq. 1–2 and §3.2 for minibatches) with the
    analytic KL of a Gaussian prior (Kingma & Welling 2014, appendix B).
    """
        + PARAMETERS_DOC
        + """    local_reparam : bool
        Estimate the ELBO by the local reparameterisation trick (Kingma, Salimans & Welling
        2015, §2.3), :func:`local_reparam_loss`, instead of NumPyro's weight-noise
        estimator: the pre-activations of each Dense layer are drawn per example, which
        gives lower-variance gradients with batch × units instead of weights-many normals
        per step. The guide, its parameters, the optimiser and the draws are the same.
        It is not faster on CPU: the normals it saves cost less than the second matrix
        product per layer it adds (``benchmarks/results/vi_epoch.md``). Needs every
        Bayesian weight to be the kernel or bias of a Dense layer of
        :meth:`~bayesnn.BNN.dense_layers` (an ``nnx.Linear``, as in MLPs), a prior with a
        closed-form KL from a Normal (``Normal``, ``FanInNormal``), ``elbo="meanfield"``
        and a likelihood without parameters to infer (:meth:`check_local_reparam`).
"""
        + RETURNS_DOC
        + """
    References
    ----------
    Blundell, Cornebise, Kavukcuoglu & Wierstra (2015). Weight uncertainty in neural networks.
    Kingma & Welling (2014). Auto-encoding variational Bayes.
    Hoffman, Blei, Wang & Paisley (2013). Stochastic variational inference.
    Bowman et al. (2016). Generating sentences from a continuous space.
    Sønderby et al. (2016). Ladder variational autoencoders.
    Kingma, Salimans & Welling (2015). Variational dropout and the local reparameterization
    trick. NeurIPS.
    """
    )

    local_reparam: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.local_reparam and self.elbo != "meanfield":
            raise ValueError(
                "local_reparam computes the KL in closed form; use elbo='meanfield'"
            )

    def _guide(self, model_fn, init_loc_fn):
        return _AutoNormal(model_fn, init_loc_fn=init_loc_fn, init_scale=self.init_scale)

    def update_fn(self, model: BNN, svi: SVI):
        if not self.local_reparam:
            return svi_update(svi)
        return _local_reparam_update(svi, model, self.num_particles)

    def run(self, model: BNN, data: Dataset, key, *, progress=None, checkpoint=None
            ) -> Posterior:
        if self.local_reparam:  # before a MAP init or anything compiles
            self.check_local_reparam(model)
        return super().run(model, data, key, progress=progress, checkpoint=checkpoint)

    @staticmethod
    def check_local_reparam(model: BNN) -> None:
        """Raise ``ValueError`` unless ``local_reparam=True`` applies to ``model``."""
        if model.likelihood.param_priors():
            raise ValueError(
                "local_reparam needs a likelihood without parameters to infer, got "
                f"{model.likelihood!r}"
            )
        layers = model.dense_layers()
        dense = {p for layer in layers.values() for p in layer}
        priors = model.prior.distributions(model.init_position["net"])
        for path, prior in priors.items():
            if path not in dense:
                raise ValueError(
                    f"local_reparam applies to Dense (nnx.Linear) layers only, but the prior "
                    f"covers {path!r}"
                    + ("" if layers else " and the network has no Dense layers")
                    + "; use local_reparam=False"
                )
            base = type(getattr(prior, "base_dist", prior))
            if kl_divergence.dispatch(dist.Normal, base) is None:
                raise ValueError(
                    f"local_reparam needs a prior with a closed-form KL from a Normal, but "
                    f"{path!r} has {base.__name__}; use local_reparam=False"
                )

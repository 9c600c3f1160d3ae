"""Variational inference with NumPyro: mean-field and low-rank Gaussian posteriors.

The guide ``q(θ)`` is a NumPyro autoguide over the sites of :meth:`BNN.numpyro_model` and is
fitted by :class:`numpyro.infer.SVI` with any optax optimiser, maximising the evidence
lower bound

    ELBO(q) = E_q[Σ_i log p(y_i | x_i, θ) / T] − β · KL(q(θ) ‖ p(θ))

with reparameterised gradients (Kingma & Welling 2014). With ``batch_size`` every step
takes the next minibatch of a shuffled epoch (as :class:`~bayesnn.MAP` does) and the
model's log-likelihood of its ``b`` rows is scaled by ``N / b``: an unbiased estimate of
the full-data ELBO (Hoffman et al. 2013). ``β`` is 1 except during an optional KL warm-up.
The minibatch is formed outside the model, inside the jitted step, so it can be augmented
there (``augment``).

:class:`MeanFieldVI` can also estimate the ELBO with the local reparameterisation trick
(Kingma, Salimans & Welling 2015), drawing the pre-activations of Dense layers instead of
their weights (:func:`local_reparam_loss`); the guide, its parameters and the draws are
those of the NumPyro path.

Every step draws its randomness (batches, augmentation and guide noise) from its own key,
split from the driver's per-chunk key, so the result depends only on the key passed to
``fit``.
"""

from __future__ import annotations

import abc
import sys
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from flax import nnx
from numpyro.distributions import constraints
from numpyro.distributions.kl import kl_divergence
from numpyro.infer import SVI, Predictive, Trace_ELBO, TraceMeanField_ELBO
from numpyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoNormal
from numpyro.infer.initialization import init_to_value
from numpyro.optim import optax_to_numpyro
from numpyro.primitives import Messenger

from bayesnn import prng
from bayesnn.bnn import BNN, Batch
from bayesnn.data import (
    Augment,
    Dataset,
    augment_batch,
    check_batch_size,
    epoch_batches,
    num_batches,
)
from bayesnn.inference.base import check_positive, classic_threefry
from bayesnn.inference.driver import run_chunks, scan_minibatches
from bayesnn.inference.map import MAP, make_optimizer
from bayesnn.posterior import Posterior

__all__ = [
    "MeanFieldVI", "LowRankVI", "ELBOS", "kl_weight", "local_reparam_loss", "normal_kl", "vi_epoch",
    "weight_sites",
]

_STEPS_PER_CHUNK = 256  # epochs are grouped into chunks of about this many steps

# name -> NumPyro ELBO: analytic KL where NumPyro knows it, or a Monte Carlo estimate.
ELBOS = {"meanfield": TraceMeanField_ELBO, "trace": Trace_ELBO}


class weight_sites(Messenger):
    """Weight the log-densities of a model's (or guide's) sites for a minibatch ELBO.

    The density of every latent (unobserved) sample site is multiplied by ``latent`` and
    that of every observed site by ``observed``, whose rows are masked out where ``mask`` is
    False. Applied with the same weights to the model and the guide, ``latent = β`` gives
    ``E_q[log p(y | θ)] − β · KL(q ‖ p)`` for :class:`~numpyro.infer.Trace_ELBO` (both
    ``log p(θ)`` and ``log q(θ)`` scaled) and :class:`~numpyro.infer.TraceMeanField_ELBO`
    (which scales its analytic KL by the guide site's scale), and ``observed = N / b`` makes
    the log-likelihood of ``b`` real rows an unbiased estimate of that of all ``N``.
    """

    def __init__(self, fn=None, latent=1.0, observed=1.0, mask=None):
        self.latent, self.observed, self.mask = latent, observed, mask
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] != "sample":
            return
        weight = self.observed if msg["is_observed"] else self.latent
        msg["scale"] = weight if msg["scale"] is None else weight * msg["scale"]
        if msg["is_observed"] and self.mask is not None:
            msg["fn"] = msg["fn"].mask(self.mask)


def _on_batch(fn):
    """``fn(x, y)`` as a function of a :class:`~bayesnn.bnn.Batch` and the weights ``beta``
    (of the latent sites) and ``scale`` (of the observed ones) of :class:`weight_sites`."""

    def weighted(batch: Batch, *, beta=1.0, scale=1.0):
        with weight_sites(latent=beta, observed=scale, mask=batch.mask):
            return fn(batch.x, batch.y)

    return weighted


def kl_weight(step, warmup: int | None) -> jax.Array:
    """KL warm-up weight ``β = min(1, step / warmup)``, rising linearly from 0 (1 without)."""
    if warmup is None:
        return jnp.ones(())
    return jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / warmup)


def vi_epoch(
    update, batch_size: int, kl_warmup: int | None, augment: Augment | None, state, key, epoch,
    x, y,
):
    """One epoch of shuffled minibatch steps; returns the state and per-step losses.

    ``update(state, key, batch, beta, scale) -> (state, loss)`` is one step on a
    :class:`~bayesnn.bnn.Batch` with KL weight ``beta`` and likelihood scale
    ``scale = N / b`` (``b`` the batch's real rows). Step ``t`` of epoch ``e`` augments its
    batch (``augment``, optional) with its own key and has the KL weight of global step
    ``e · K + t`` (``K`` steps per epoch). It is traced with the classic Threefry
    PRNG (see :func:`bayesnn.inference.base.classic_threefry`).
    """
    n = x.shape[0]
    k_batches, k_steps = jax.random.split(key)

    def step(carry, k, batch):
        state, t = carry
        k_aug, k_step = jax.random.split(k)
        batch = augment_batch(augment, k_aug, batch)
        scale = n / jnp.sum(batch.mask)
        state, loss = update(state, k_step, batch, kl_weight(t, kl_warmup), scale)
        return (state, t + 1), loss

    with classic_threefry():
        batches = epoch_batches(k_batches, n, batch_size)
        first = epoch * batches.indices.shape[0]
        (state, _), loss = scan_minibatches(step, (state, first), k_steps, batches, (x, y))
    return state, loss


def _svi_update(svi: SVI):
    """:func:`vi_epoch`'s ``update``: one :meth:`SVI.update <numpyro.infer.SVI.update>`."""

    def update(state, key, batch, beta, scale):
        return svi.update(state._replace(rng_key=key), batch, beta=beta, scale=scale)

    return update


def local_reparam_loss(model: BNN, key, loc, log_scale, point, batch: Batch, beta=1.0, scale=1.0,
                       num_particles: int = 1) -> jax.Array:
    """Negative ELBO of a mean-field Gaussian guide by local reparameterisation.

    Under ``q(W) = Π N(μ_ij, σ_ij²)`` the pre-activations ``a = x W + b`` of a Dense layer
    with input ``x`` are independent Gaussians, ``a_j ~ N(Σ_i x_i μ_ij + μ_j,
    Σ_i x_i² σ_ij² + σ_j²)`` (Kingma, Salimans & Welling 2015, eq. 6), so they are drawn
    directly, independently per example: batch × units normals per layer instead of
    inputs × units weights, and gradients of lower variance since examples no longer share
    weight noise. Per example, the outputs have the same distribution as under weight
    noise, so the expected ELBO is unchanged. The KL term is exact (the prior must have a
    closed-form KL from a Normal, e.g. be Normal itself; see :func:`normal_kl`). The
    estimate is

        −[scale · Σ_i mask_i log p(y_i | x_i, θ) / T − β · KL(q ‖ p)],

    the Monte Carlo term averaged over ``num_particles`` draws.

    Parameters
    ----------
    model : BNN
        Every Bayesian weight must be the kernel or bias of an :class:`flax.nnx.Linear`
        layer applied once per forward pass, and the likelihood must have no parameters
        with a prior (see :meth:`MeanFieldVI.check_local_reparam`).
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

    def loglik(k):
        f = _local_reparam_apply(model.network(position), var, k, batch.x)
        ll = model.likelihood.log_prob(f, batch.y, position["lik"])
        mask = jnp.ones_like(ll, bool) if batch.mask is None else batch.mask
        return jnp.sum(jnp.where(mask, ll, 0.0))

    ll = jnp.mean(jax.vmap(loglik)(jax.random.split(key, num_particles)))
    return -(scale * ll / model.likelihood.temperature - beta * kl)


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


def _linear_layers(network: nnx.Module) -> dict[str, nnx.Linear]:
    """The network's Dense layers by path (``"layers/0"``)."""
    return {
        "/".join(map(str, path)): module
        for path, module in nnx.iter_graph(network)
        if isinstance(module, nnx.Linear)
    }


def _local_reparam_apply(network: nnx.Module, var: dict, key, x) -> jax.Array:
    """Outputs of ``network`` (holding the guide means) with the pre-activations of its Dense
    layers drawn from the guide (``var``: variances by parameter path)."""
    layers = _linear_layers(network)
    for (path, layer), k in zip(layers.items(), jax.random.split(key, len(layers)), strict=True):
        kernel_var, bias_var = var.get(f"{path}/kernel"), var.get(f"{path}/bias")
        if kernel_var is not None or bias_var is not None:
            layer.dot_general = _noisy_dot_general(k, path, kernel_var, bias_var)
    return network(x)


def _noisy_dot_general(key, path: str, kernel_var, bias_var):
    """A Dense layer's ``dot_general`` returning ``x·μ + sqrt(x²·σ² + σ_b²) · ε``, ``ε ~ N(0, I)``
    (the layer adds the bias mean ``μ_b`` itself; ``σ², σ_b²`` are the variances)."""
    calls = []

    def dot_general(x, kernel, dims, **kwargs):
        if calls:  # a second call would reuse the noise; weight noise would be shared
            raise ValueError(
                f"local_reparam: Dense layer {path!r} is applied more than once per forward "
                "pass; use local_reparam=False"
            )
        calls.append(path)
        mean = jax.lax.dot_general(x, kernel, dims, **kwargs)
        var = jnp.zeros_like(mean)
        if kernel_var is not None:
            var += jax.lax.dot_general(x * x, kernel_var.astype(x.dtype), dims, **kwargs)
        if bias_var is not None:
            var += bias_var.astype(x.dtype)
        # `tiny` keeps the gradient of the square root finite where the variance is 0.
        sd = jnp.sqrt(var + jnp.finfo(var.dtype).tiny)
        return mean + sd * prng.normal(key, mean.shape, mean.dtype)

    return dot_general


def _local_reparam_update(svi: SVI, model: BNN, num_particles: int):
    """:func:`vi_epoch`'s ``update`` by :func:`local_reparam_loss`, with the SVI problem's
    parameters, constraints and optimiser: the state stays an ``SVIState``."""

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


class _PrngNormal(dist.Normal):
    """``dist.Normal`` whose draws come from :func:`bayesnn.prng.normal`: from the same key,
    the numbers of NumPyro's ``jax.random.normal`` under the classic Threefry (the fits'
    setting), in one fused loop."""

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape + self.event_shape
        return self.loc + prng.normal(key, shape, jnp.result_type(self.loc)) * self.scale


class _FusedNoise(Messenger):
    """Guide handler: its Normal sample sites draw with :class:`_PrngNormal`.

    The draws, and hence the fit, are unchanged; on CPU a step of ``mnist_mlp()`` (670k
    normals) took 9.4–10.0 instead of 13.5 ms (``benchmarks/results/vi_epoch_profile.md``).
    """

    def process_message(self, msg):
        fn = msg["fn"] if msg["type"] == "sample" and msg["value"] is None else None
        base = getattr(fn, "base_dist", fn)
        if type(base) is dist.Normal:
            normal = _PrngNormal(base.loc, base.scale)
            msg["fn"] = normal if fn is base else normal.to_event(fn.reinterpreted_batch_ndims)


class _ExpScale:
    """Autoguide mixin: scales ``σ = exp(ρ)`` instead of NumPyro's ``softplus(ρ)``.

    For the small scales of network weights the two coincide (``softplus(ρ) ≈ exp(ρ)`` for
    ``ρ ≪ 0``), and ``exp`` with its gradient costs a quarter as much: on CPU ~2.4 ms less
    per step for the 670k weights of ``mnist_mlp()``.
    """

    scale_constraint = constraints.positive


class _AutoNormal(_ExpScale, AutoNormal):
    pass


class _AutoLowRank(_ExpScale, AutoLowRankMultivariateNormal):
    pass


@dataclass(frozen=True)
class _GaussianVI(abc.ABC):
    """Fields and fitting loop shared by :class:`MeanFieldVI` and :class:`LowRankVI`."""

    optimizer: Any = "adam"
    learning_rate: Any = None
    epochs: int = 100
    batch_size: int | None = 32
    num_samples: int = 100
    num_particles: int = 1
    elbo: str = "meanfield"
    init: str = "network"
    init_scale: float = 1e-2
    kl_warmup: int | None = None
    map_config: MAP = field(default_factory=MAP)
    augment: Augment | None = None

    def __post_init__(self):
        make_optimizer(self.optimizer, self.learning_rate)
        for name in ("epochs", "num_samples", "num_particles", "kl_warmup"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise TypeError(f"{name} must be an int, got {value!r}")
        check_positive(
            epochs=self.epochs, num_samples=self.num_samples, num_particles=self.num_particles,
            init_scale=self.init_scale, kl_warmup=self.kl_warmup,
        )
        if isinstance(self.learning_rate, (int, float)):
            check_positive(learning_rate=self.learning_rate)
        check_batch_size(self.batch_size, sys.maxsize)
        if self.elbo not in ELBOS:
            raise ValueError(f"unknown elbo {self.elbo!r}; use one of {sorted(ELBOS)}")
        if self.init not in ("network", "map"):
            raise ValueError(f"init must be 'network' or 'map', got {self.init!r}")
        if not isinstance(self.map_config, MAP):
            raise TypeError(f"map_config must be a bayesnn.MAP, got {self.map_config!r}")
        if self.augment is not None and not isinstance(self.augment, Augment):
            raise TypeError(f"augment must be a bayesnn.data.Augment, got {self.augment!r}")

    @abc.abstractmethod
    def _guide(self, model_fn, init_loc_fn):
        """The NumPyro autoguide of the method."""

    def build_svi(self, model: BNN, position=None) -> tuple[SVI, Any]:
        """The :class:`~numpyro.infer.SVI` problem that :meth:`run` solves, and its guide.

        Guide means start at ``position`` (default: the network's initial weights). Model
        and guide take a :class:`~bayesnn.bnn.Batch` and the keywords ``beta`` (KL weight)
        and ``scale`` (``N / b``) of :class:`weight_sites`.
        """
        latent = model.sites(model.init_position if position is None else position)[0]
        guide = self._guide(model.numpyro_model, init_to_value(values=latent))
        tx = make_optimizer(self.optimizer, self.learning_rate)
        svi = SVI(
            _on_batch(model.numpyro_model), _on_batch(_FusedNoise(guide)), optax_to_numpyro(tx),
            ELBOS[self.elbo](num_particles=self.num_particles),
        )
        return svi, guide

    def update_fn(self, model: BNN, svi: SVI):
        """The step of :func:`vi_epoch` that :meth:`run` takes on the problem ``svi``."""
        return _svi_update(svi)

    def run(
        self, model: BNN, data: Dataset, key, *, progress=None, checkpoint=None
    ) -> Posterior:
        x, y = jnp.asarray(data.x), jnp.asarray(data.y)
        n = x.shape[0]
        batch_size = check_batch_size(self.batch_size, n)
        steps = num_batches(n, batch_size)
        k_map, k_init, k_fit, k_draws = jax.random.split(key, 4)
        info = {}
        position = model.init_position
        if self.init == "map":
            fitted = self.map_config.run(model, data, k_map, progress=progress)
            position, info["map_info"] = fitted.point(), fitted.info
        svi, guide = self.build_svi(model, position)
        # Epochs are grouped into chunks of about _STEPS_PER_CHUNK steps (as MAP does), so
        # small data sets do not pay the driver's per-chunk overhead every few steps.
        per_chunk = max(1, min(self.epochs, _STEPS_PER_CHUNK // steps))
        # Jitted, the first run of model and guide compiles once instead of op by op (~10x
        # faster). The autoguide caches its prototype trace during that run; later only its
        # site names, shapes and supports are read, parameter values come from the state.
        point_params = model.sites(position)[1]
        first = Batch(x[:batch_size], y[:batch_size])
        state = jax.jit(svi.init)(k_init, first, init_params=point_params or None)
        epoch = partial(
            vi_epoch, self.update_fn(model, svi), batch_size, self.kl_warmup, self.augment
        )
        result = run_chunks(
            _chunk_fn(epoch, steps, per_chunk, self.epochs), state, k_fit,
            -(-self.epochs // per_chunk), x, y, steps_per_chunk=per_chunk * steps,
            desc=type(self).__name__, progress=progress, checkpoint=checkpoint,
            hint="try a smaller learning_rate",
        )
        params = svi.get_params(result.state)
        draws = _draw(model, guide, self.num_samples, k_draws, params)
        epochs_run = min(result.num_chunks_done * per_chunk, self.epochs)
        losses = np.concatenate(result.outputs or [np.zeros(0, np.float32)])
        elbo = -losses[: epochs_run * steps].reshape(-1, steps).mean(1)
        history = {"elbo": [float(v) for v in elbo]}
        if self.kl_warmup is not None:
            history["beta"] = [
                float(kl_weight((e + 1) * steps - 1, self.kl_warmup)) for e in range(epochs_run)
            ]
        info |= {
            "history": history, "guide_params": jax.device_get(params),
            "init_position": jax.device_get(position),
            "seconds": result.seconds, "interrupted": result.interrupted,
            "epochs_run": epochs_run, "steps_per_epoch": steps,
        }
        return Posterior(model, draws, self, info)


def _chunk_fn(epoch_fn, steps: int, per_chunk: int, epochs: int):
    """``run_chunks``' chunk: ``per_chunk`` epochs ``epoch_fn(state, key, epoch, x, y)``
    (:func:`vi_epoch`), none past ``epochs``."""

    def run_epoch(state, key, epoch, x, y):
        state, loss = epoch_fn(state, key, epoch, x, y)
        return state, loss.astype(jnp.float32)

    def skip_epoch(state, key, epoch, x, y):
        return state, jnp.zeros(steps, jnp.float32)

    def chunk(state, key, chunk_index, x, y):
        def one(state, inp):
            k, e = inp
            return jax.lax.cond(e < epochs, run_epoch, skip_epoch, state, k, e, x, y)

        first = chunk_index * per_chunk
        keys = jax.random.split(key, per_chunk)
        state, loss = jax.lax.scan(one, state, (keys, first + jnp.arange(per_chunk)))
        return state, loss.reshape(-1)

    return chunk


@partial(jax.jit, static_argnums=(0, 1, 2))
def _draw(model: BNN, guide, num_samples: int, key, params):
    """``num_samples`` guide draws as positions with axes ``(1, num_samples)``."""
    with classic_threefry():
        sites = Predictive(guide, params=params, num_samples=num_samples)(key)
    return jax.tree.map(lambda a: a[None], model.position_from_sites(sites, params))


_PARAMETERS = """
    Parameters
    ----------
    optimizer : str or optax.GradientTransformation
        A name understood by :func:`bayesnn.inference.map.make_optimizer` (``"adam"``, ...)
        or any optax transformation; wrapped with :func:`numpyro.optim.optax_to_numpyro`.
    learning_rate : float or optax schedule, optional
        Default: Keras' default for the named optimiser.
    epochs : int
        Passes over the data; an epoch is ``ceil(N / batch_size)`` SVI steps.
    batch_size : int or None
        Examples per step: each epoch shuffles the data and cuts it into minibatches (the
        last one partial), as :class:`~bayesnn.MAP` does; the likelihood of a batch of
        ``b`` examples is scaled by ``N / b``. None: full batch.
    num_samples : int
        Draws from the fitted guide in the returned posterior, shape ``(1, num_samples)``.
    num_particles : int
        Monte Carlo samples of ``θ`` per ELBO (gradient) estimate.
    elbo : {"meanfield", "trace"}
        :class:`~numpyro.infer.TraceMeanField_ELBO` (analytic KL where NumPyro has it, as for
        Gaussian priors) or :class:`~numpyro.infer.Trace_ELBO` (Monte Carlo KL).
    init : {"network", "map"}
        Guide means start at the network's own initial weights, or at a MAP fit run first
        with ``map_config`` (which also gives the starting point-estimate weights of a
        partially Bayesian network).
    init_scale : float
        Initial standard deviation of every guide coordinate. Small values (≲1e-2) start VI
        near a point estimate; large ones drown the signal in weight noise.
    kl_warmup : int, optional
        Steps over which the KL weight ``β`` rises linearly from 0 to 1 (Bowman et al.
        2016, §3.1; Sønderby et al. 2016, §2.3). It is applied by :class:`weight_sites`,
        a handler that scales the densities of the latent sites of both model and guide by
        ``β`` and leaves the observed likelihood alone. That keeps NumPyro's own ELBO
        estimators (and their analytic KL) instead of a hand-written loss. During warm-up
        the recorded ELBO is the β-weighted one.
    map_config : MAP
        Configuration of the MAP fit used by ``init="map"``.
    augment : bayesnn.data.Augment, optional
        Random image transformations applied to every training minibatch, inside the
        jitted loop, each step with its own key. VI then fits the posterior of the
        augmented-data likelihood.
"""

_RETURNS = """
    Notes
    -----
    ``fit`` returns a :class:`~bayesnn.Posterior` with ``num_samples`` guide draws, axes
    ``(1, num_samples)``; weights without a prior take their fitted values. Its ``info``
    holds ``history["elbo"]`` (mean ELBO estimate per epoch; ``history["beta"]`` with
    warm-up), ``guide_params`` (fitted guide and point-estimate parameters, constrained),
    ``init_position`` (where the guide means started), ``seconds``, ``interrupted``,
    ``epochs_run``, ``steps_per_epoch`` and, for ``init="map"``, ``map_info`` (the MAP fit's
    ``info``). The model is evaluated without dropout.
"""


@dataclass(frozen=True)
class MeanFieldVI(_GaussianVI):
    __doc__ = (
        """Mean-field Gaussian VI, ``q(θ) = Π_j N(θ_j | μ_j, σ_j²)``.

    The guide is NumPyro's ``AutoNormal`` with ``σ_j = exp(ρ_j)``; its weight noise is
    drawn by :func:`bayesnn.prng.normal` (the numbers NumPyro would draw, in one fused loop:
    on CPU a ``mnist_mlp()`` step takes ~25% less time).

    "Bayes by Backprop" (Blundell et al. 2015, eq. 1–2 and §3.2 for minibatches) with the
    analytic KL of a Gaussian prior (Kingma & Welling 2014, appendix B).
    """
        + _PARAMETERS
        + """    local_reparam : bool
        Estimate the ELBO by the local reparameterisation trick (Kingma, Salimans & Welling
        2015, §2.3), :func:`local_reparam_loss`, instead of NumPyro's weight-noise
        estimator: the pre-activations of each Dense layer are drawn per example, which
        gives lower-variance gradients with batch × units instead of weights-many normals
        per step. The guide, its parameters, the optimiser and the draws are the same.
        It is not faster on CPU: the normals it saves cost less than the second matrix
        product per layer it adds (``benchmarks/results/vi_epoch.md``). Needs every
        Bayesian weight to be the kernel or bias of an ``nnx.Linear`` layer (MLPs), a
        prior with a closed-form KL from a Normal (``Normal``, ``FanInNormal``),
        ``elbo="meanfield"`` and a likelihood without parameters to infer
        (:meth:`check_local_reparam`).
"""
        + _RETURNS
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
        if not isinstance(self.local_reparam, bool):
            raise TypeError(f"local_reparam must be a bool, got {self.local_reparam!r}")
        if self.local_reparam and self.elbo != "meanfield":
            raise ValueError(
                "local_reparam computes the KL in closed form; use elbo='meanfield'"
            )

    def _guide(self, model_fn, init_loc_fn):
        return _AutoNormal(model_fn, init_loc_fn=init_loc_fn, init_scale=self.init_scale)

    def update_fn(self, model: BNN, svi: SVI):
        if not self.local_reparam:
            return _svi_update(svi)
        self.check_local_reparam(model)
        return _local_reparam_update(svi, model, self.num_particles)

    @staticmethod
    def check_local_reparam(model: BNN) -> None:
        """Raise ``ValueError`` unless ``local_reparam=True`` applies to ``model``."""
        if model.likelihood.param_priors():
            raise ValueError(
                "local_reparam needs a likelihood without parameters to infer, got "
                f"{model.likelihood!r}"
            )
        layers = _linear_layers(model.network())
        priors = model.prior.distributions(model.init_position["net"])
        for path, prior in priors.items():
            layer, _, name = path.rpartition("/")
            if layer not in layers or name not in ("kernel", "bias"):
                raise ValueError(
                    f"local_reparam applies to Dense (nnx.Linear) layers only, but the prior "
                    f"covers {path!r}; use local_reparam=False"
                )
            base = type(getattr(prior, "base_dist", prior))
            if kl_divergence.dispatch(dist.Normal, base) is None:
                raise ValueError(
                    f"local_reparam needs a prior with a closed-form KL from a Normal, but "
                    f"{path!r} has {base.__name__}; use local_reparam=False"
                )


@dataclass(frozen=True)
class LowRankVI(_GaussianVI):
    __doc__ = (
        """Gaussian VI with low-rank-plus-diagonal covariance ``Σ = D(W Wᵀ + I)D``.

    NumPyro's ``AutoLowRankMultivariateNormal`` (with ``D = diag(exp(ρ))``): a factor
    covariance (Ong, Nott & Smith 2018, eq. 2) over all latent coordinates, which captures
    ``rank`` directions of correlation that mean-field VI ignores. ``W`` starts at 0, i.e.
    at the mean-field guide. NumPyro has no closed-form KL for this guide, so both ``elbo``
    choices give the same Monte Carlo estimate.
    """
        + _PARAMETERS
        + """    rank : int
        Number of factors (columns of ``W``); memory is ``rank × num_weights``.
"""
        + _RETURNS
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
        if isinstance(self.rank, bool) or not isinstance(self.rank, int):
            raise TypeError(f"rank must be an int, got {self.rank!r}")
        check_positive(rank=self.rank)

    def _guide(self, model_fn, init_loc_fn):
        return _AutoLowRank(
            model_fn, init_loc_fn=init_loc_fn, init_scale=self.init_scale, rank=self.rank
        )


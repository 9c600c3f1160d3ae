"""Variational inference with NumPyro: the SVI loop that every Gaussian guide shares.

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

Every step draws its randomness (batches, augmentation and guide noise) from its own key,
split from the driver's per-chunk key, so the result depends only on the key passed to
``fit``. The guides are those of :class:`~bayesnn.MeanFieldVI`
(:mod:`bayesnn.inference.meanfield_vi`) and :class:`~bayesnn.LowRankVI`
(:mod:`bayesnn.inference.lowrank_vi`), subclasses of :class:`GaussianVI`.
"""

from __future__ import annotations

import abc
import sys
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.infer import SVI, Predictive, Trace_ELBO, TraceMeanField_ELBO
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
from bayesnn.inference.driver import STEPS_PER_EPOCH_CHUNK, run_chunks, scan_minibatches
from bayesnn.inference.init import check_init, initial_positions
from bayesnn.inference.map import MAP, make_optimizer
from bayesnn.inference.programs import program_key
from bayesnn.posterior import Posterior
from bayesnn.validation import LearningRate, Optimizer, check_types, config

__all__ = ["ELBOS", "GaussianVI", "kl_weight", "svi_update", "vi_epoch", "weight_sites"]


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


def svi_update(svi: SVI):
    """:func:`vi_epoch`'s ``update``: one :meth:`SVI.update <numpyro.infer.SVI.update>`."""

    def update(state, key, batch, beta, scale):
        return svi.update(state._replace(rng_key=key), batch, beta=beta, scale=scale)

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

    The draws, and hence the fit, are unchanged, and a step is faster on CPU
    (``benchmarks/results/vi_epoch_profile.md``).
    """

    def process_message(self, msg):
        fn = msg["fn"] if msg["type"] == "sample" and msg["value"] is None else None
        base = getattr(fn, "base_dist", fn)
        if type(base) is dist.Normal:
            normal = _PrngNormal(base.loc, base.scale)
            msg["fn"] = normal if fn is base else normal.to_event(fn.reinterpreted_batch_ndims)


class ExpScale:
    """Autoguide mixin: scales ``σ = exp(ρ)`` instead of NumPyro's ``softplus(ρ)``.

    For the small scales of network weights the two coincide (``softplus(ρ) ≈ exp(ρ)`` for
    ``ρ ≪ 0``), and ``exp`` with its gradient costs less
    (``benchmarks/results/vi_epoch_profile.md``).
    """

    scale_constraint = constraints.positive


@config
@dataclass(frozen=True)
class GaussianVI(abc.ABC):
    """Fields and fitting loop shared by :class:`~bayesnn.MeanFieldVI` and
    :class:`~bayesnn.LowRankVI`: a subclass gives its autoguide (``_guide``) and may replace
    the step (:meth:`update_fn`)."""

    optimizer: Any = "adam"
    learning_rate: Any = None
    epochs: int = 100
    batch_size: int | None = 32
    num_samples: int = 100
    num_particles: int = 1
    elbo: str = "meanfield"
    init: str | MAP = "network"
    init_scale: float = 1e-2
    kl_warmup: int | None = None
    augment: Augment | None = None

    def __post_init__(self):
        check_types(self, optimizer=Optimizer, learning_rate=LearningRate)
        make_optimizer(self.optimizer, self.learning_rate)
        check_positive(
            epochs=self.epochs, num_samples=self.num_samples, num_particles=self.num_particles,
            init_scale=self.init_scale, kl_warmup=self.kl_warmup,
        )
        if not callable(self.learning_rate):
            check_positive(learning_rate=self.learning_rate)
        check_batch_size(self.batch_size, sys.maxsize)
        if self.elbo not in ELBOS:
            raise ValueError(f"unknown elbo {self.elbo!r}; use one of {sorted(ELBOS)}")
        check_init(self.init, ("network", "map"))

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
        return svi_update(svi)

    def run(
        self, model: BNN, data: Dataset, key, *, progress=None, checkpoint=None
    ) -> Posterior:
        x, y = jnp.asarray(data.x), jnp.asarray(data.y)
        n = x.shape[0]
        batch_size = check_batch_size(self.batch_size, n)
        steps = num_batches(n, batch_size)
        k_map, k_init, k_fit, k_draws = jax.random.split(key, 4)
        positions, map_info = initial_positions(k_map, model, data, self.init, 1,
                                                progress=progress)
        position = jax.tree.map(lambda a: a[0], positions)
        info = {} if map_info is None else {"map_info": map_info}
        svi, guide = self.build_svi(model, position)
        # Epochs are grouped into chunks of about STEPS_PER_EPOCH_CHUNK steps (as MAP does), so
        # small data sets do not pay the driver's per-chunk overhead every few steps.
        per_chunk = max(1, min(self.epochs, STEPS_PER_EPOCH_CHUNK // steps))
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
            hint="try a smaller learning_rate", cache_key=program_key(self, model),
            metrics=lambda i, out: {  # the chunk's last epoch run: its mean loss
                "epoch": (e := min((i + 1) * per_chunk, self.epochs)),
                "loss": float(np.mean(out[(e - 1 - i * per_chunk) * steps:][:steps]))},
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


PARAMETERS_DOC = """
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
        Draws kept per chain: the posterior holds ``num_samples`` independent draws from
        the fitted guide, in one chain (axes ``(1, num_samples)``).
    num_particles : int
        Monte Carlo samples of ``θ`` per ELBO (gradient) estimate.
    elbo : {"meanfield", "trace"}
        :class:`~numpyro.infer.TraceMeanField_ELBO` (analytic KL where NumPyro has it, as for
        Gaussian priors) or :class:`~numpyro.infer.Trace_ELBO` (Monte Carlo KL).
    init : {"network", "map"} or MAP
        Where the guide means start (see :func:`bayesnn.inference.init.initial_positions`):
        the network's own initial weights, or the weights of a MAP fit run first,
        ``MAP()`` for ``"map"`` or the given :class:`~bayesnn.MAP` config (the fit also
        gives the starting point-estimate weights of a partially Bayesian network).
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
    augment : bayesnn.data.Augment, optional
        Random image transformations applied to every training minibatch, inside the
        jitted loop, each step with its own key. VI then fits the posterior of the
        augmented-data likelihood.
"""

RETURNS_DOC = """
    Notes
    -----
    ``fit`` returns a :class:`~bayesnn.Posterior` with ``num_samples`` guide draws, axes
    ``(1, num_samples)``; weights without a prior take their fitted values. Its ``info``
    holds ``history["elbo"]`` (mean ELBO estimate per epoch; ``history["beta"]`` with
    warm-up), ``guide_params`` (fitted guide and point-estimate parameters, constrained),
    ``init_position`` (where the guide means started), ``seconds``, ``interrupted``,
    ``epochs_run``, ``steps_per_epoch`` and, for a MAP ``init``, ``map_info`` (the MAP fit's
    ``info``). The model is evaluated without dropout.
"""

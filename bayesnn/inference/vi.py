"""Variational inference with NumPyro: mean-field and low-rank Gaussian posteriors.

The guide ``q(θ)`` is a NumPyro autoguide over the sites of :meth:`BNN.numpyro_model` and is
fitted by :class:`numpyro.infer.SVI` with any optax optimiser, maximising the evidence
lower bound

    ELBO(q) = E_q[Σ_i log p(y_i | x_i, θ) / T] − β · KL(q(θ) ‖ p(θ))

with reparameterised gradients (Kingma & Welling 2014). With ``batch_size`` the model's
data plate subsamples ``B`` of the ``N`` examples at each step and NumPyro scales their
log-likelihood by ``N / B``: an unbiased estimate of the full-data ELBO (Hoffman et al.
2013). ``β`` is 1 except during an optional KL warm-up.

Every step draws its randomness (guide noise and subsample indices) from its own key, split
from the driver's per-chunk key, so the result depends only on the key passed to ``fit``.
"""

from __future__ import annotations

import abc
import contextlib
import sys
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import constraints
from numpyro.infer import SVI, Predictive, Trace_ELBO, TraceMeanField_ELBO
from numpyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoNormal
from numpyro.infer.initialization import init_to_value
from numpyro.optim import optax_to_numpyro
from numpyro.primitives import Messenger

from bayesnn.bnn import BNN
from bayesnn.data import Dataset, check_batch_size, num_batches
from bayesnn.inference.base import check_positive
from bayesnn.inference.driver import run_chunks
from bayesnn.inference.map import MAP, make_optimizer
from bayesnn.posterior import Posterior

__all__ = ["MeanFieldVI", "LowRankVI", "ELBOS", "kl_weight", "scale_latent", "vi_epoch"]

_STEPS_PER_CHUNK = 256  # epochs are grouped into chunks of about this many steps

# name -> NumPyro ELBO: analytic KL where NumPyro knows it, or a Monte Carlo estimate.
ELBOS = {"meanfield": TraceMeanField_ELBO, "trace": Trace_ELBO}


class scale_latent(Messenger):
    """Multiply the log-density of every latent (unobserved) sample site by ``scale``.

    Applied with the same ``scale`` to the model and the guide, it turns the ELBO into
    ``E_q[log p(y | θ)] − scale · KL(q ‖ p)`` for :class:`~numpyro.infer.Trace_ELBO` (both
    ``log p(θ)`` and ``log q(θ)`` scaled) and :class:`~numpyro.infer.TraceMeanField_ELBO`
    (which scales its analytic KL by the guide site's scale). Observed sites are untouched,
    unlike :class:`numpyro.handlers.scale`.
    """

    def __init__(self, fn=None, scale=1.0):
        self.scale = scale
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.scale if msg["scale"] is None else self.scale * msg["scale"]


def _with_kl_weight(fn):
    """``fn`` taking an extra keyword ``beta``, the weight of its latent sites' densities."""

    def weighted(*args, beta=1.0, **kwargs):
        with scale_latent(scale=beta):
            return fn(*args, **kwargs)

    return weighted


def kl_weight(step, warmup: int | None) -> jax.Array:
    """KL warm-up weight ``β = min(1, step / warmup)``, rising linearly from 0 (1 without)."""
    if warmup is None:
        return jnp.ones(())
    return jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / warmup)


def vi_epoch(svi: SVI, num_steps: int, kl_warmup: int | None, state, key, epoch, x, y):
    """``num_steps`` SVI steps in one ``lax.scan``; returns the state and per-step losses.

    Step ``t`` of epoch ``e`` uses the ``t``-th key split from ``key`` (replacing the SVI
    state's own key) and the KL weight of global step ``e · num_steps + t``. On CPU it is
    traced with the classic threefry PRNG (see :func:`_fast_threefry`).
    """

    def step(state, inp):
        k, t = inp
        return svi.update(state._replace(rng_key=k), x, y, beta=kl_weight(t, kl_warmup))

    with _fast_threefry():
        keys = jax.random.split(key, num_steps)
        return jax.lax.scan(step, state, (keys, epoch * num_steps + jnp.arange(num_steps)))


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

    @abc.abstractmethod
    def _guide(self, model_fn, init_loc_fn):
        """The NumPyro autoguide of the method."""

    def build_svi(self, model: BNN, num_examples: int, position=None) -> tuple[SVI, Any]:
        """The :class:`~numpyro.infer.SVI` problem that :meth:`run` solves, and its guide.

        Guide means start at ``position`` (default: the network's initial weights). Model
        and guide take the KL weight as a keyword ``beta`` (see :func:`vi_epoch`).
        """
        batch_size = check_batch_size(self.batch_size, num_examples)
        latent = model.sites(model.init_position if position is None else position)[0]
        guide = self._guide(model.numpyro_model, init_to_value(values=latent))
        tx = make_optimizer(self.optimizer, self.learning_rate)
        svi = SVI(
            _with_kl_weight(model.numpyro_model), _with_kl_weight(guide), optax_to_numpyro(tx),
            ELBOS[self.elbo](num_particles=self.num_particles),
            batch_size=None if batch_size == num_examples else batch_size,
        )
        return svi, guide

    def run(
        self, model: BNN, data: Dataset, key, *, progress=None, checkpoint=None
    ) -> Posterior:
        x, y = jnp.asarray(data.x), jnp.asarray(data.y)
        n = x.shape[0]
        steps = num_batches(n, check_batch_size(self.batch_size, n))
        k_map, k_init, k_fit, k_draws = jax.random.split(key, 4)
        info = {}
        position = model.init_position
        if self.init == "map":
            fitted = self.map_config.run(model, data, k_map, progress=progress)
            position, info["map_info"] = fitted.point(), fitted.info
        svi, guide = self.build_svi(model, n, position)
        # Epochs are grouped into chunks of about _STEPS_PER_CHUNK steps (as MAP does), so
        # small data sets do not pay the driver's per-chunk overhead every few steps.
        per_chunk = max(1, min(self.epochs, _STEPS_PER_CHUNK // steps))
        # Jitted, the first run of model and guide compiles once instead of op by op (~10x
        # faster). The autoguide caches its prototype trace during that run; later only its
        # site names, shapes and supports are read, parameter values come from the state.
        point_params = model.sites(position)[1]
        state = jax.jit(svi.init)(k_init, x, y, init_params=point_params or None)
        result = run_chunks(
            _chunk_fn(svi, steps, per_chunk, self.epochs, self.kl_warmup), state, k_fit,
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


def _chunk_fn(svi: SVI, steps: int, per_chunk: int, epochs: int, kl_warmup: int | None):
    """``run_chunks``' chunk: ``per_chunk`` epochs of :func:`vi_epoch`, none past ``epochs``."""

    def run_epoch(state, key, epoch, x, y):
        state, loss = vi_epoch(svi, steps, kl_warmup, state, key, epoch, x, y)
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
    with _fast_threefry():
        sites = Predictive(guide, params=params, num_samples=num_samples)(key)
    return jax.tree.map(lambda a: a[None], model.position_from_sites(sites, params))


def _fast_threefry():
    """Context: trace with the classic threefry PRNG on CPU.

    VI draws one normal per weight per step, and on CPU generating them dominates the
    step's extra cost over MAP; the classic threefry makes them ~1.5x faster than the
    partitionable one (JAX's default), whose purpose, sharding, does not arise on a CPU.
    """
    cpu = jax.default_backend() == "cpu"
    return jax.threefry_partitionable(False) if cpu else contextlib.nullcontext()


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
        Examples per step, subsampled by the model's data plate (uniformly, without
        replacement within a step, independently across steps); the likelihood is scaled
        by ``N / batch_size``. None: full batch.
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
        2016, §3.1; Sønderby et al. 2016, §2.3). It is applied by :class:`scale_latent`,
        a handler that scales the densities of the latent sites of both model and guide by
        ``β`` and leaves the observed likelihood alone. That keeps NumPyro's own ELBO
        estimators (and their analytic KL) instead of a hand-written loss. During warm-up
        the recorded ELBO is the β-weighted one.
    map_config : MAP
        Configuration of the MAP fit used by ``init="map"``.
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

    The guide is NumPyro's ``AutoNormal`` with ``σ_j = exp(ρ_j)``.

    "Bayes by Backprop" (Blundell et al. 2015, eq. 1–2 and §3.2 for minibatches) with the
    analytic KL of a Gaussian prior (Kingma & Welling 2014, appendix B).
    """
        + _PARAMETERS
        + _RETURNS
        + """
    References
    ----------
    Blundell, Cornebise, Kavukcuoglu & Wierstra (2015). Weight uncertainty in neural networks.
    Kingma & Welling (2014). Auto-encoding variational Bayes.
    Hoffman, Blei, Wang & Paisley (2013). Stochastic variational inference.
    Bowman et al. (2016). Generating sentences from a continuous space.
    Sønderby et al. (2016). Ladder variational autoencoders.
    """
    )

    def _guide(self, model_fn, init_loc_fn):
        return _AutoNormal(model_fn, init_loc_fn=init_loc_fn, init_scale=self.init_scale)


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


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
from the driver's per-epoch key, so the result depends only on the key passed to ``fit``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
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
from bayesnn.tree import flatten_paths

__all__ = ["MeanFieldVI", "LowRankVI", "ELBOS", "kl_weight", "scale_latent", "vi_epoch"]

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
    state's own key) and the KL weight of global step ``e · num_steps + t``.
    """
    keys = jax.random.split(key, num_steps)
    steps = epoch * num_steps + jnp.arange(num_steps)

    def step(state, inp):
        k, t = inp
        return svi.update(state._replace(rng_key=k), x, y, beta=kl_weight(t, kl_warmup))

    return jax.lax.scan(step, state, (keys, steps))


def _split_sites(model: BNN, position) -> tuple[dict, dict]:
    """NumPyro site values of a position: ``(latent sample sites, point-estimate params)``."""
    weights = flatten_paths(position["net"])
    bayesian = flatten_paths(model.bayesian_mask["net"])
    latent = {f"net/{p}": v for p, v in weights.items() if bayesian[p]}
    latent |= {f"lik/{k}": v for k, v in position["lik"].items()}
    params = {f"net/{p}": v for p, v in weights.items() if not bayesian[p]}
    return latent, params


@dataclass(frozen=True)
class _GaussianVI:
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

    def _guide(self, model_fn, init_loc_fn):
        raise NotImplementedError

    def run(self, model: BNN, data: Dataset, key, *, progress=None) -> Posterior:
        x, y = jnp.asarray(data.x), jnp.asarray(data.y)
        n = x.shape[0]
        batch_size = check_batch_size(self.batch_size, n)
        k_map, k_init, k_fit, k_draws = jax.random.split(key, 4)
        info = {}
        position = model.init_position
        if self.init == "map":
            fitted = self.map_config.run(model, data, k_map, progress=progress)
            position = fitted.point()
            info["map_info"] = fitted.info
        latent, point_params = _split_sites(model, position)

        model_fn = model.numpyro_model
        guide = self._guide(model_fn, init_to_value(values=latent))
        tx = make_optimizer(self.optimizer, self.learning_rate)
        svi = SVI(
            _with_kl_weight(model_fn), _with_kl_weight(guide), optax_to_numpyro(tx),
            ELBOS[self.elbo](num_particles=self.num_particles),
            batch_size=None if batch_size == n else batch_size,
        )
        state = svi.init(k_init, x, y, init_params=point_params or None)
        steps = num_batches(n, batch_size)

        def chunk(state, key, epoch, x, y):
            return vi_epoch(svi, steps, self.kl_warmup, state, key, epoch, x, y)

        result = run_chunks(
            chunk, state, k_fit, self.epochs, x, y, steps_per_chunk=steps,
            desc=type(self).__name__, progress=progress, hint="try a smaller learning_rate",
        )
        history = {"elbo": [-float(np.mean(loss)) for loss in result.outputs]}
        if self.kl_warmup is not None:
            history["beta"] = [
                float(kl_weight((e + 1) * steps - 1, self.kl_warmup))
                for e in range(result.num_chunks_done)
            ]
        params = svi.get_params(result.state)
        sites = guide.sample_posterior(k_draws, params, sample_shape=(self.num_samples,))
        draws = jax.tree.map(lambda a: a[None], model.position_from_sites(sites, params))
        info |= {
            "history": history, "guide_params": jax.device_get(params),
            "seconds": result.seconds, "interrupted": result.interrupted,
            "epochs_run": result.num_chunks_done, "steps_per_epoch": steps,
        }
        return Posterior(model, draws, self, info)


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
    ``seconds``, ``interrupted``, ``epochs_run``, ``steps_per_epoch`` and, for
    ``init="map"``, ``map_info``. The model is evaluated without dropout.
"""


@dataclass(frozen=True)
class MeanFieldVI(_GaussianVI):
    __doc__ = (
        """Mean-field Gaussian VI, ``q(θ) = Π_j N(θ_j | μ_j, σ_j²)`` (NumPyro ``AutoNormal``).

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
        return AutoNormal(model_fn, init_loc_fn=init_loc_fn, init_scale=self.init_scale)


@dataclass(frozen=True)
class LowRankVI(_GaussianVI):
    __doc__ = (
        """Gaussian VI with low-rank-plus-diagonal covariance ``Σ = D(W Wᵀ + I)D``.

    NumPyro ``AutoLowRankMultivariateNormal``: a factor covariance (Ong, Nott & Smith 2018,
    eq. 2) over all latent coordinates, which captures ``rank`` directions of correlation
    that mean-field VI ignores. ``W`` starts at 0, i.e. at the mean-field guide.
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
        return AutoLowRankMultivariateNormal(
            model_fn, init_loc_fn=init_loc_fn, init_scale=self.init_scale, rank=self.rank
        )


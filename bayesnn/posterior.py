"""The result of every inference method: draws with leading ``(chain, draw)`` axes."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from bayesnn import serialization
from bayesnn.arviz import diagnostics as _diagnostics
from bayesnn.arviz import to_datatree
from bayesnn.bnn import BNN, prepare_inputs, prepare_targets
from bayesnn.chunks import draw_chunks, map_rows
from bayesnn.prng import as_key

__all__ = ["Posterior", "Predictive", "DrawPredictive", "DropoutPredictive",
           "LinearisedPredictive"]


class Predictive(Protocol):
    """How a posterior draw predicts: what :class:`Posterior` needs beyond the draws.

    Every prediction (:meth:`Posterior.predict`, :meth:`Posterior.log_predictive_density`,
    the ArviZ export) asks the posterior's predictive for the network outputs (the
    likelihood's inputs) of each draw, so nothing downstream asks which method made the
    posterior. A predictive is a pytree (a ``NamedTuple`` of arrays), passed into the
    jitted evaluation: new values of its arrays do not recompile. Another kind of
    prediction (a network linearised at its mode, for a Laplace posterior) is another
    class with this method.
    """

    def outputs(self, model: BNN, position, x: jax.Array, index: jax.Array) -> jax.Array:
        """Outputs at inputs ``x`` of the draw ``position`` with flat index ``index``
        (``chain * num_draws + draw``)."""
        ...


class DrawPredictive(NamedTuple):
    """Each draw's network as it is, without dropout: every method's default."""

    def outputs(self, model: BNN, position, x, index):
        return model.apply(position, x)


class DropoutPredictive(NamedTuple):
    """Each draw's network with dropout on, draw ``s`` with the mask of ``fold_in(key, s)``
    (:class:`~bayesnn.MCDropout`; Gal & Ghahramani 2016)."""

    key: jax.Array

    def outputs(self, model: BNN, position, x, index):
        return model.apply(position, x, jax.random.fold_in(self.key, index))


class LinearisedPredictive(NamedTuple):
    """Each draw's outputs from the network linearised at ``center`` (``θ*``):
    ``f(x, θ*) + J(x)(θ_s - θ*)``, one ``jax.jvp`` per draw, without forming ``J``.

    With Gaussian draws ``θ_s`` this is the Monte Carlo linearised ("GLM") predictive of a
    Laplace posterior (:class:`~bayesnn.Laplace`; Immer, Korzepa & Bauer 2021, eq. 5).
    """

    center: Any

    def outputs(self, model: BNN, position, x, index):
        tangent = jax.tree.map(jnp.subtract, position, self.center)
        f, df = jax.jvp(lambda p: model.apply(p, x), (self.center,), (tangent,))
        return f + df


@dataclass
class Posterior:
    """Posterior draws of a :class:`~bayesnn.BNN`'s position.

    Attributes
    ----------
    model : BNN
        The model the draws belong to.
    draws : pytree
        Positions with leading axes ``(chain, draw)``: MAP ``(1, 1)``, VI ``(1, S)``,
        an ensemble ``(M, 1)``, MCMC ``(C, D)``.
    method : object
        The method configuration that produced the draws.
    info : dict
        What the method recorded: ``history`` (per-epoch losses), ``sample_stats``
        (per-draw sampler statistics, leading ``(chain, draw)``), ``seconds``,
        ``interrupted`` and method-specific entries. Prediction never reads it.
    predictive : Predictive
        How each draw predicts: :class:`DrawPredictive` (the default), for MC dropout
        :class:`DropoutPredictive`, for a Laplace posterior :class:`LinearisedPredictive`.
    """

    model: BNN
    draws: Any
    method: Any = None
    info: dict = field(default_factory=dict)
    predictive: Predictive = field(default_factory=DrawPredictive)

    def __post_init__(self):
        shapes = {leaf.shape[:2] for leaf in jax.tree.leaves(self.draws)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"draws must share leading (chain, draw) axes; got {shapes}")
        if not callable(getattr(self.predictive, "outputs", None)):
            raise TypeError(
                "predictive must have an outputs(model, position, x, index) method, such as "
                f"bayesnn.posterior.DrawPredictive(); got {self.predictive!r}"
            )

    @property
    def num_chains(self) -> int:
        return jax.tree.leaves(self.draws)[0].shape[0]

    @property
    def num_draws(self) -> int:
        return jax.tree.leaves(self.draws)[0].shape[1]

    @property
    def num_samples(self) -> int:
        """Total draws over all chains."""
        return self.num_chains * self.num_draws

    def flat_draws(self):
        """Draws with ``(chain, draw)`` merged into one leading axis."""
        return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), self.draws)

    def point(self, chain: int = 0, draw: int = 0):
        """One position (by default the first draw: the weights of a MAP fit)."""
        return jax.tree.map(lambda a: a[chain, draw], self.draws)

    # -- prediction --------------------------------------------------------------------

    def predict(
        self, x, *, batch_size: int = 1024, draw_batch_size: int = 64, key=None
    ):
        """Posterior-predictive summary at inputs ``x``.

        Averages each draw's predictive statistics over all draws, in chunks of
        ``batch_size`` inputs and ``draw_batch_size`` draws, so memory stays bounded by
        ``batch_size × draw_batch_size`` network evaluations whatever the number of draws.

        Parameters
        ----------
        x : array, shape (N, ...)
        batch_size, draw_batch_size : int
            Chunk sizes over inputs and draws.
        key : int or PRNG key, optional
            Keep dropout on, draw ``s`` with the mask of ``fold_in(key, s)`` (MC dropout).
            Default: the posterior's :attr:`predictive` (with dropout for
            :class:`~bayesnn.MCDropout`).

        Returns
        -------
        RegressionPrediction or ClassificationPrediction
            ``mean, std, aleatoric_std, epistemic_std`` or
            ``probs, entropy, aleatoric, epistemic`` (see :mod:`bayesnn.likelihoods`).
        """
        x = prepare_inputs(self.model, x)
        predictive, total = self._predictive(key), None
        for draws, index, count in draw_chunks(self.draws, draw_batch_size):
            weights = jnp.asarray(np.arange(len(index)) < count, jnp.float32)
            mean, m2 = map_rows(
                partial(_chunk_moments, self.model, predictive, draws, weights, index), x,
                batch_size,
            )
            part = _Moments(float(count), mean, m2)
            total = part if total is None else _merge_moments(total, part)
        count, mean, m2 = total
        var = jax.tree.map(lambda m: m / count, m2)
        return self.model.likelihood.summarize(mean, var)

    def log_predictive_density(
        self, x, y, *, batch_size: int = 1024, draw_batch_size: int = 64, key=None
    ) -> jax.Array:
        """log p(y_i | x_i, D) = log (1/S) Σ_s p(y_i | x_i, θ_s) for each row (untempered).

        Its negative mean is the test NLL of the posterior predictive. Arguments as for
        :meth:`predict`.
        """
        x = prepare_inputs(self.model, x)
        y = prepare_targets(self.model, x, y)
        predictive, total = self._predictive(key), None
        for draws, index, count in draw_chunks(self.draws, draw_batch_size):
            log_w = jnp.where(np.arange(len(index)) < count, 0.0, -jnp.inf)
            part = map_rows(
                partial(_logsumexp_loglik, self.model, predictive, draws, log_w, index), (x, y),
                batch_size,
            )
            total = part if total is None else jnp.logaddexp(total, part)
        return total - math.log(self.num_samples)

    # -- persistence -------------------------------------------------------------------

    def save(self, path) -> None:
        """Write the posterior (model, draws, method, info) to one file, without pickle.

        The file (see :mod:`bayesnn.serialization`) is a zip of a JSON header (format,
        library versions, the network's spec, prior, likelihood and method configuration
        field by field, info) and ``.npy`` arrays (weights, draws). Values that are not
        data -- an optax transformation, a schedule function, a user's network class --
        are recorded by qualified name (and a function's closure values), not as code.
        In a run of several processes (``jax.distributed``) every process holds the same
        posterior and may call ``save``; only process 0 writes.
        """
        arrays: dict = {}
        content = {"model": serialization.encode(self.model.to_state(), arrays, "model")}
        for f in dataclasses.fields(self):
            if f.name != "model":
                content[f.name] = serialization.encode(getattr(self, f.name), arrays, f.name)
        serialization.write(path, _FORMAT, content, arrays)

    @classmethod
    def load(cls, path, *, like=None) -> Posterior:
        """Read a posterior written by :meth:`save`; a file can fail to load, but reading it
        never runs code from it (a pickle, e.g. a file of bayesnn 0.1, is refused unread).

        Parameters
        ----------
        path : path
        like : nnx.Module or BNN, optional
            The network (its structure; the file gives the weights), needed when it is not
            a :mod:`bayesnn.models` network. A ``BNN`` also gives the prior and likelihood,
            needed when they are not bayesnn's own classes.

        Returns
        -------
        Posterior
            ``method`` is the configuration rebuilt when every field is data (numbers,
            strings, optimiser names, bayesnn configurations); when one is not (an optax
            transformation, a callable schedule) it is an
            :class:`~bayesnn.serialization.Unbuilt` description (a ``str``). ``info``
            entries that are not data are such descriptions too.
        """
        header, arrays = serialization.read(path, _FORMAT, "posterior")
        try:
            model = BNN.from_state(
                serialization.decode(header["model"], arrays, strict=False), like=like)
            values = {
                f.name: serialization.decode(header[f.name], arrays, strict=f.name == "draws")
                for f in dataclasses.fields(cls) if f.name != "model" and f.name in header
            }
        except (KeyError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None
        if jax.tree.structure(values.get("draws")) != jax.tree.structure(model.init_position):
            raise ValueError(f"{path}: the draws do not have the structure of the model's "
                             "parameters")
        return cls(model, **values)

    # -- ArviZ -------------------------------------------------------------------------

    def to_arviz(self, x=None, y=None, **kwargs):
        """ArviZ ``xarray.DataTree`` of the draws; see :func:`bayesnn.arviz.to_datatree`."""
        return to_datatree(self, x, y, **kwargs)

    def diagnostics(self, x=None, **kwargs) -> dict[str, float]:
        """Worst R̂ and ESS of weights and predictions; see :func:`bayesnn.arviz.diagnostics`."""
        return _diagnostics(self, x, **kwargs)

    # -- helpers -----------------------------------------------------------------------

    def _predictive(self, key) -> Predictive:
        return self.predictive if key is None else DropoutPredictive(as_key(key))


_FORMAT = "bayesnn.posterior/2"  # 2: a zip of JSON and .npy arrays; 1: a pickle


class _Moments(NamedTuple):
    """Weighted count, mean and sum of squared deviations of each statistic over draws."""

    count: float
    mean: dict
    m2: dict


@partial(jax.jit, static_argnums=0)
def _chunk_moments(model: BNN, predictive, draws, weights, index, x):
    """Mean and summed squared deviations of ``draw_stats`` over one chunk of draws."""

    def one(pos, s):
        return model.likelihood.draw_stats(predictive.outputs(model, pos, x, s), pos["lik"])

    stats = jax.vmap(one)(draws, index)
    count = jnp.sum(weights)

    def moments(s):
        w = weights.reshape((-1,) + (1,) * (s.ndim - 1))
        mean = jnp.sum(w * s, 0) / count
        return mean, jnp.sum(w * (s - mean) ** 2, 0)

    pairs = jax.tree.map(moments, stats)
    is_pair = lambda t: isinstance(t, tuple)  # noqa: E731
    mean = jax.tree.map(lambda t: t[0], pairs, is_leaf=is_pair)
    m2 = jax.tree.map(lambda t: t[1], pairs, is_leaf=is_pair)
    return mean, m2


def _merge_moments(a: _Moments, b: _Moments) -> _Moments:
    """Combine the moments of two sets of draws (Chan, Golub & LeVeque 1983)."""
    n = a.count + b.count
    frac, cross = b.count / n, a.count * b.count / n
    mean = jax.tree.map(lambda ma, mb: ma + (mb - ma) * frac, a.mean, b.mean)
    m2 = jax.tree.map(
        lambda sa, sb, ma, mb: sa + sb + (mb - ma) ** 2 * cross, a.m2, b.m2, a.mean, b.mean
    )
    return _Moments(n, mean, m2)


@partial(jax.jit, static_argnums=0)
def _logsumexp_loglik(model: BNN, predictive, draws, log_w, index, x, y):
    """log Σ_s w_s p(y | x, θ_s) over one chunk of draws."""

    def one(pos, s):
        return model.likelihood.log_prob(predictive.outputs(model, pos, x, s), y, pos["lik"])

    ll = jax.vmap(one)(draws, index)
    return jax.nn.logsumexp(ll + log_w[:, None], axis=0)

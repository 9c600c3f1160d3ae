"""The result of every inference method: draws with leading ``(chain, draw)`` axes."""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesnn.bnn import BNN, prepare_inputs, prepare_targets

__all__ = ["Posterior"]


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
        ``interrupted`` and method-specific entries.
    """

    model: BNN
    draws: Any
    method: Any = None
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        shapes = {leaf.shape[:2] for leaf in jax.tree.leaves(self.draws)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"draws must share leading (chain, draw) axes; got {shapes}")

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
        key : PRNG key, optional
            Keep dropout on, with an independent mask per draw (MC dropout). Default:
            ``info["dropout_key"]`` when the method set one (:class:`~bayesnn.MCDropout`).

        Returns
        -------
        RegressionPrediction or ClassificationPrediction
            ``mean, std, aleatoric_std, epistemic_std`` or
            ``probs, entropy, aleatoric, epistemic`` (see :mod:`bayesnn.likelihoods`).
        """
        x = prepare_inputs(self.model, x)
        total = None
        for draws, weights, keys in self._draw_chunks(draw_batch_size, key):
            mean, m2 = map_rows(
                partial(_chunk_moments, self.model, draws, weights, keys), x, batch_size
            )
            part = _Moments(float(weights.sum()), mean, m2)
            total = part if total is None else _merge_moments(total, part)
        count, mean, m2 = total
        var = jax.tree.map(lambda m: m / count, m2)
        return self.model.likelihood.summarize(mean, var)

    def log_predictive_density(
        self, x, y, *, batch_size: int = 1024, draw_batch_size: int = 64, key=None
    ) -> jax.Array:
        """log p(y_i | x_i, D) = log (1/S) Σ_s p(y_i | x_i, θ_s) for each row (untempered).

        Its negative mean is the test NLL of the posterior predictive.
        """
        x = prepare_inputs(self.model, x)
        y = prepare_targets(self.model, x, y)
        total = None
        for draws, weights, keys in self._draw_chunks(draw_batch_size, key):
            log_w = jnp.where(weights > 0, 0.0, -jnp.inf)
            part = map_rows(
                partial(_logsumexp_loglik, self.model, draws, log_w, keys), (x, y), batch_size
            )
            total = part if total is None else jnp.logaddexp(total, part)
        return total - math.log(self.num_samples)

    # -- persistence -------------------------------------------------------------------

    def save(self, path) -> None:
        """Write the posterior (draws, model, method, info) to one file.

        The network is stored as its NNX graph definition, so :meth:`load` needs no code
        to rebuild it. The file is a pickle: load only files you trust.
        """
        payload = {
            "format": _FORMAT,
            "model": self.model.to_state(),
            "draws": jax.device_get(self.draws),
            "method": _picklable(self.method),
            "info": {k: _picklable(v) for k, v in self.info.items()},
        }
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> Posterior:
        """Read a posterior written by :meth:`save`."""
        with open(path, "rb") as f:
            payload = pickle.load(f)
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a bayesnn posterior file ({_FORMAT})")
        draws = jax.tree.map(jnp.asarray, payload["draws"])
        return cls(BNN.from_state(payload["model"]), draws, payload["method"], payload["info"])

    # -- ArviZ -------------------------------------------------------------------------

    def to_arviz(self, x=None, y=None, **kwargs):
        """ArviZ ``xarray.DataTree`` of the draws; see :func:`bayesnn.arviz.to_datatree`."""
        from bayesnn.arviz import to_datatree

        return to_datatree(self, x, y, **kwargs)

    def diagnostics(self, x=None, **kwargs) -> dict[str, float]:
        """Worst R̂ and ESS of weights and predictions; see :func:`bayesnn.arviz.diagnostics`."""
        from bayesnn.arviz import diagnostics

        return diagnostics(self, x, **kwargs)

    # -- helpers -----------------------------------------------------------------------

    def _draw_chunks(self, size: int, key):
        """Yield ``(draws, weights, keys)`` chunks of one size, at most ``size``; padding has
        weight 0. The chunks are balanced (10 draws at ``size=8``: two of 5, not 8 + 8 with
        6 padded), so fewer than one draw per chunk is padding."""
        key = self.info.get("dropout_key") if key is None else key
        n = self.num_samples
        size = -(-n // -(-n // min(size, n)))
        for start in range(0, n, size):
            idx = np.minimum(np.arange(start, start + size), n - 1)
            weights = (np.arange(start, start + size) < n).astype(np.float32)
            keys = None if key is None else jax.vmap(partial(jax.random.fold_in, key))(idx)
            # Gather by (chain, draw): flat_draws() would copy every draw at once.
            chain, draw = np.divmod(idx, self.num_draws)
            yield (jax.tree.map(lambda a, c=chain, d=draw: a[c, d], self.draws),
                   jnp.asarray(weights), keys)


_FORMAT = "bayesnn.Posterior/1"


def _picklable(obj):
    """``obj`` itself when it pickles, else its ``repr`` (e.g. an optax closure)."""
    try:
        pickle.dumps(obj)
    except (pickle.PicklingError, TypeError, AttributeError):
        return repr(obj)
    return obj


def map_rows(fn, arrays, batch_size: int):
    """Apply ``fn`` to fixed-size row chunks of ``arrays`` and concatenate the results.

    The last chunk is padded to the same size (one compilation); padding rows are dropped.
    """
    single = not isinstance(arrays, tuple)
    arrays = (arrays,) if single else arrays
    n = arrays[0].shape[0]
    size = min(batch_size, n)
    outs = []
    for start in range(0, n, size):
        stop = min(start + size, n)
        pad = size - (stop - start)
        chunk = tuple(np.pad(a[start:stop], [(0, pad)] + [(0, 0)] * (a.ndim - 1), mode="edge")
                      for a in arrays)
        outs.append(jax.tree.map(lambda o, m=stop - start: o[:m], fn(*chunk)))
    return jax.tree.map(lambda *o: jnp.concatenate(o), *outs)


def _apply_draws(model: BNN, draws, keys, fn):
    if keys is None:
        return jax.vmap(lambda pos: fn(pos, None))(draws)
    return jax.vmap(fn)(draws, keys)


class _Moments(NamedTuple):
    """Weighted count, mean and sum of squared deviations of each statistic over draws."""

    count: float
    mean: dict
    m2: dict


@partial(jax.jit, static_argnums=0)
def _chunk_moments(model: BNN, draws, weights, keys, x):
    """Mean and summed squared deviations of ``draw_stats`` over one chunk of draws."""

    def one(pos, k):
        return model.likelihood.draw_stats(model.apply(pos, x, k), pos["lik"])

    stats = _apply_draws(model, draws, keys, one)
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
def _logsumexp_loglik(model: BNN, draws, log_w, keys, x, y):
    """log Σ_s w_s p(y | x, θ_s) over one chunk of draws."""

    def one(pos, k):
        return model.log_prob_per_example(pos, x, y, k)

    ll = _apply_draws(model, draws, keys, one)
    return jax.nn.logsumexp(ll + log_w[:, None], axis=0)

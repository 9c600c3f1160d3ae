"""Transfer learning: cut a trained network at a named layer, freeze, attach a new head.

The four classic cases (by size of the new data set and its similarity to the old one):

=====================  ===================================================================
``"freeze_all"``       small, similar: keep every layer below the old head, freeze them,
                       new head; only the head is Bayesian (a Bayesian last layer).
``"freeze_early"``     small, different: keep only the early layers up to ``at``, freeze
                       them, new head on top.
``"finetune"``         large, similar: new head, body initialised from the trained weights
                       and trained too, with a prior centred at those weights.
``"scratch"``          large, different: the same architecture from fresh weights.
=====================  ===================================================================

Frozen weights are constants to every inference method (see ``BNN(frozen=...)``): the
posterior covers only what is not frozen.

Networks: the :class:`~bayesnn.models.CNN` and :class:`~bayesnn.models.MLP` of
:mod:`bayesnn.models`, cut by Keras-style layer name, and a user's ``nnx.Sequential``, cut by
the name of its entries (``linear``, ``relu``, ``linear_1``; the head is NNX modules). Any
other module cannot be cut: freeze its body with ``BNN(network, frozen=[...])``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from flax import nnx

from bayesnn import priors
from bayesnn.bnn import BNN
from bayesnn.models import CNN, MLP, Dense, Dropout, Flatten
from bayesnn.models.layers import Layer
from bayesnn.tree import flatten_paths

__all__ = ["CASES", "layer_names", "with_new_head", "transfer"]

CASES = ("freeze_all", "freeze_early", "finetune", "scratch")


def _specs(network) -> tuple[tuple[int, ...], tuple[Layer, ...]]:
    """Input shape and layer specs of a :class:`CNN`, or of an :class:`MLP` as Dense specs."""
    if isinstance(network, CNN):
        return network.input_shape, network.specs
    if isinstance(network, MLP):
        specs = []
        for layer in network.layers[:-1]:
            specs.append(Dense(layer.out_features, activation=network.activation))
            if network.dropout.rate > 0:
                specs.append(Dropout(network.dropout.rate))
        return network.input_shape, (*specs, Dense(network.out_features))
    raise TypeError(
        f"transfer needs a bayesnn CNN or MLP or an nnx.Sequential, got {type(network).__name__}"
        "; freeze the body of another network with BNN(network, frozen=[...])"
    )


def layer_names(network) -> list[str]:
    """Keras-style names of the layers (``conv2d``, ``max_pooling2d``, ``dense_1``, ...); for
    an ``nnx.Sequential``, its entries' snake-case type or function names (``linear``,
    ``relu``, ``linear_1``)."""
    if isinstance(network, nnx.Sequential):
        names, counts = [], {}
        for layer in network.layers:
            base = (re.sub(r"(?<!^)(?=[A-Z])", "_", type(layer).__name__).lower()
                    if isinstance(layer, nnx.Module) else getattr(layer, "__name__", "fn"))
            n = counts[base] = counts.get(base, -1) + 1
            names.append(base if n == 0 else f"{base}_{n}")
        return names
    input_shape, specs = _specs(network)
    return [name for name, _ in CNN(input_shape, specs, rngs=nnx.Rngs(0)).summary()]


def _cut_index(network, at: str | int | None) -> int:
    """Number of specs kept: up to and including layer ``at`` (default: all but the head)."""
    names = layer_names(network)
    if at is None:
        return len(names) - 1
    if isinstance(at, int):
        if not -len(names) <= at < len(names):
            raise ValueError(f"layer index {at} out of range for {len(names)} layers")
        return at % len(names) + 1
    if at not in names:
        raise ValueError(f"no layer named {at!r}; layers: {names}")
    return names.index(at) + 1


def with_new_head(
    network, head: Sequence, *, at: str | int | None = None, rngs: nnx.Rngs
) -> tuple[nnx.Module, int]:
    """The layers of ``network`` up to ``at`` with their trained weights, then ``head``
    (layer specs; for an ``nnx.Sequential``, NNX modules and functions).

    Returns the new network and the number ``n`` of layers kept from ``network``: those of
    them with weights have paths ``layers/i`` with ``i < n``.
    """
    if isinstance(network, nnx.Sequential):
        cut = _cut_index(network, at)
        return nnx.Sequential(*nnx.clone(network).layers[:cut], *head), cut
    input_shape, specs = _specs(network)
    kept = specs[: _cut_index(network, at)]
    new = CNN(input_shape, (*kept, *head), rngs=rngs)
    copied = sum(spec.has_params for spec in kept)
    old = nnx.state(network, nnx.Param)
    state = nnx.state(new, nnx.Param)
    for i in range(copied):
        state["layers"][i] = old["layers"][i]
    nnx.update(new, state)
    return new, copied


def _default_head(network, at, out_features: int, rngs: nnx.Rngs) -> tuple:
    """``Dense(out_features)``, after a ``Flatten`` when the kept layers output images; for
    an ``nnx.Sequential``, an ``nnx.Linear`` on the last kept ``nnx.Linear``'s outputs."""
    if isinstance(network, nnx.Sequential):
        linears = [m for m in network.layers[: _cut_index(network, at)]
                   if isinstance(m, nnx.Linear)]
        if not linears:
            raise ValueError("no nnx.Linear is kept below the cut to size the new head: "
                             "pass head=")
        return (nnx.Linear(linears[-1].out_features, out_features, rngs=rngs),)
    input_shape, specs = _specs(network)
    shape = tuple(input_shape)
    for spec in specs[: _cut_index(network, at)]:
        shape = spec.output_shape(shape)
    return (Dense(out_features),) if len(shape) == 1 else (Flatten(), Dense(out_features))


def transfer(
    network,
    case: str,
    out_features: int,
    likelihood,
    *,
    at: str | int | None = None,
    head: Sequence[Layer] | None = None,
    prior_scale: float = 1.0,
    body_scale: float = 0.1,
    seed: int = 0,
) -> BNN:
    """A model for new data that reuses a trained ``network`` in one of the four ways.

    Parameters
    ----------
    network : CNN, MLP or nnx.Sequential
        The trained network.
    case : {"freeze_all", "freeze_early", "finetune", "scratch"}
        See the module docstring.
    out_features : int
        Outputs of the new head (e.g. the number of new classes).
    likelihood
        Likelihood of the new task.
    at : str or int, optional
        Last layer kept (by Keras-style name or index). Default: all but the old head
        (``freeze_early`` needs it).
    head : sequence of layer specs, optional
        The new head; default ``Dense(out_features)`` (after a ``Flatten`` if needed). For
        an ``nnx.Sequential``: NNX modules and functions, default an ``nnx.Linear``.
    prior_scale : float
        Std of the Normal prior on new (and, for ``scratch``, all) weights.
    body_scale : float
        ``finetune``: std of the prior on the body, centred at the trained weights.
    seed : int
        Initialisation of the new layers.
    """
    if case not in CASES:
        raise ValueError(f"unknown transfer case {case!r}; use one of {CASES}")
    if case == "freeze_early" and at is None:
        raise ValueError("case 'freeze_early' needs `at`, the last early layer to keep")
    rngs = nnx.Rngs(seed)
    head = _default_head(network, at, out_features, rngs) if head is None else tuple(head)
    if case == "scratch":
        if isinstance(network, nnx.Sequential):
            new = BNN(with_new_head(network, head, at=at, rngs=rngs)[0])
            return BNN(new.network(new.init_params(rngs.params())), priors.Normal(prior_scale),
                       likelihood)
        input_shape, specs = _specs(network)
        new = CNN(input_shape, (*specs[: _cut_index(network, at)], *head), rngs=rngs)
        return BNN(new, priors.Normal(prior_scale), likelihood)
    new, copied = with_new_head(network, head, at=at, rngs=rngs)
    params = flatten_paths(nnx.to_pure_dict(nnx.state(new, nnx.Param)))
    body = sorted({f"layers/{p.split('/')[1]}/*" for p in params
                   if int(p.split("/")[1]) < copied})
    if case in ("freeze_all", "freeze_early"):
        return BNN(new, priors.Normal(prior_scale), likelihood, frozen=body)
    trained = {"layers": {i: v for i, v in nnx.to_pure_dict(nnx.state(new, nnx.Param))[
        "layers"].items() if i < copied}}
    prior = priors.PerParameter(
        {pattern: priors.Normal(body_scale, loc=trained) for pattern in body},
        default=priors.Normal(prior_scale),
    )
    return BNN(new, prior, likelihood)

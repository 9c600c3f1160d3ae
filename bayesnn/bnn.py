"""A Bayesian neural network: a Flax NNX network, a prior over its weights and a likelihood.

Inference code never sees the module. It sees the *position*, a plain pytree
``{"net": network weights, "lik": likelihood parameters}``, and the pure functions of
this class: :meth:`BNN.logprior_fn`, :meth:`BNN.loglikelihood_fn`,
:meth:`BNN.logdensity_fn` (with the N/B minibatch scaling) and :meth:`BNN.numpyro_model`.
"""

from __future__ import annotations

import copy
import fnmatch
import inspect
import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from flax import nnx

from bayesnn import likelihoods as lik_
from bayesnn import priors as priors_
from bayesnn.data import Dataset, as_dataset, check_finite
from bayesnn.models import MLP
from bayesnn.models.registry import build_network, network_spec
from bayesnn.tree import flatten_paths, merge_trees, split_tree, unflatten_paths

__all__ = ["BNN", "Batch", "DenseLayer", "DenseView", "fresh_weights", "prepare_data",
           "prepare_inputs", "prepare_targets"]

Position = dict[str, Any]


# What a trace or a walk of the module graph finds once for all models of one graph, kept
# for later models (a refit's): outputs per row by (graph, weight shapes, input shape,
# dtype); layer paths by (graph, layer type); Dense layers in call order by (graph, input
# shape).
_OUTPUT_SHAPES: dict = {}
_LAYERS: dict = {}
_CALL_ORDERS: dict = {}
_KEPT = 256  # entries per table; the oldest go


def _kept(table: dict, key, compute: Callable):
    if key not in table:
        if len(table) >= _KEPT:
            table.pop(next(iter(table)))
        table[key] = compute()
    return table[key]


def _abstract(tree) -> tuple:
    """``tree``'s structure and its leaves' shapes and dtypes, hashable."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((np.shape(a), getattr(a, "dtype", type(a))) for a in leaves)


class Batch(NamedTuple):
    """A minibatch: inputs, targets and an optional mask of real (not padding) rows."""

    x: jax.Array
    y: jax.Array
    mask: jax.Array | None = None


class DenseLayer(NamedTuple):
    """A Dense layer, ``x @ kernel + bias``, by its parameter paths in ``position["net"]``."""

    kernel: str
    bias: str


class DenseView(NamedTuple):
    """A network that is a chain of Dense layers: ``f(x) = L_k(σ(… σ(L_1(flatten(x)))))``.

    What the methods that need the network's structure (the Gibbs samplers) see of it,
    instead of its modules: the layers' parameter paths in order and the hidden activation
    ``σ`` (the activations of :mod:`bayesnn.models` carry a ``name``).
    """

    layers: tuple[DenseLayer, ...]
    activation: Callable

    def kernel(self, position, i: int) -> jax.Array:
        """Layer ``i``'s kernel ``(fan_in, fan_out)`` in ``position``."""
        return _at(position["net"], self.layers[i].kernel)

    def bias(self, position, i: int) -> jax.Array:
        """Layer ``i``'s bias ``(fan_out,)`` in ``position``."""
        return _at(position["net"], self.layers[i].bias)

    def preactivations(self, position, x) -> tuple[jax.Array, ...]:
        """Every layer's pre-activations for inputs ``x``; the last are the outputs."""
        h, zs = x.reshape(x.shape[0], -1), []
        for i in range(len(self.layers)):
            zs.append(h @ self.kernel(position, i) + self.bias(position, i))
            h = self.activation(zs[-1])
        return tuple(zs)


def fresh_weights(key: jax.Array, like):
    """Weights shaped as ``like``: LeCun-normal kernels (leaves of 2 or more axes) and zero
    biases, NNX's defaults."""
    leaves, treedef = jax.tree.flatten(like)
    keys = jax.random.split(key, len(leaves))
    init = jax.nn.initializers.lecun_normal()
    return jax.tree.unflatten(treedef, [
        init(k, w.shape, w.dtype) if w.ndim >= 2 else jnp.zeros_like(w)
        for k, w in zip(keys, leaves, strict=True)
    ])


class BNN:
    """Network + prior + likelihood.

    Parameters
    ----------
    network : nnx.Module
        Any Flax NNX module whose call maps a batch of inputs ``(N, ...)`` to the
        likelihood's inputs ``(N, K)`` (logits, or means and scales): ``nnx.Linear``,
        ``nnx.Sequential``, a module of your own, a :mod:`bayesnn.models` network. Its
        input and output shapes come from the data (see :meth:`output_shape`). A call with
        a keyword ``key`` (``__call__(x, *, key=None)``, the convention of
        :mod:`bayesnn.models`) receives the dropout key; randomness through ``nnx.Rngs``
        (``nnx.Dropout``) is reseeded from the same key. Its current weights are the
        initial position and its ``nnx.BatchStat`` variables (batch-norm statistics) the
        initial :attr:`stats`.
    prior : bayesnn.priors.Prior, optional
        Prior over the network weights; default ``priors.Normal(1.0)``. A
        :class:`~bayesnn.priors.PerParameter` prior without a default leaves some weights
        as point estimates (flat prior).
    likelihood : bayesnn.likelihoods.Likelihood, optional
        Default ``likelihoods.Gaussian()``.
    frozen : sequence of str, optional
        Glob patterns of parameter paths (``"layers/0/*"``) held fixed at the network's
        current values: constants to every inference method, absent from the position
        (transfer learning: a frozen body).

    Attributes
    ----------
    init_position : dict
        ``{"net": trainable weights, "lik": likelihood parameters}``.
    stats : dict
        The network's non-parameter state (``nnx.BatchStat``, e.g. ``nnx.BatchNorm``'s
        running mean and variance), ``{}`` for most networks. :class:`~bayesnn.MAP`
        updates it (batch norm in training mode) and returns a posterior whose model holds
        the trained statistics (:meth:`with_stats`); every other use, sampling and
        prediction included, holds it fixed (batch norm in evaluation mode).

    Notes
    -----
    With a key, ``nnx.Dropout`` is on (``deterministic=False``); without one, off, so
    prediction without a key is deterministic. Modes are set with ``nnx.view`` on the
    ``deterministic`` and ``use_running_average`` attributes that NNX's own layers have.
    """

    def __init__(self, network: nnx.Module, prior=None, likelihood=None, *, frozen=()):
        if not isinstance(network, nnx.Module):
            raise TypeError(f"network must be a flax.nnx.Module, got {type(network).__name__}")
        self.prior = priors_.Normal(1.0) if prior is None else prior
        self.likelihood = lik_.Gaussian() if likelihood is None else likelihood
        self.graphdef, params, stats, rest = nnx.split(network, nnx.Param, nnx.BatchStat, ...)
        # Plain arrays, not the network's Variables: every call builds fresh ones, so a
        # call inside a trace can update them.
        self._rest = nnx.to_pure_dict(rest)
        self._takes_key = "key" in inspect.signature(network.__call__).parameters
        self._rng_tags = tuple(sorted({
            stream.key.tag for _, stream in nnx.iter_graph(network)
            if isinstance(stream, nnx.RngStream)
        }))
        self.network_name = type(network).__name__
        declared = getattr(network, "input_shape", None)  # optional: bayesnn.models have it
        self._declared_shape = tuple(declared) if isinstance(declared, tuple | list) else None
        self.frozen = tuple([frozen] if isinstance(frozen, str) else frozen)
        # Weights and statistics take JAX's default float precision (float64 under x64).
        weights, self.stats = (_as_float(nnx.to_pure_dict(s)) for s in (params, stats))
        net, self._frozen = _split_frozen(weights, self.frozen)
        self.init_position: Position = {"net": net, "lik": self.likelihood.init_params()}
        # Validates per-parameter prior rules against the network once, up front.
        self.bayesian_mask = {
            "net": self.prior.mask(self.init_position["net"]),
            "lik": {k: True for k in self.init_position["lik"]},
        }

    # -- the network -------------------------------------------------------------------

    def apply(self, position: Position, x: jax.Array, key: jax.Array | None = None, *,
              stats=None) -> jax.Array:
        """Network outputs for inputs ``x``; ``key`` turns dropout on.

        Batch norm runs in evaluation mode with ``stats`` (default :attr:`stats`).
        """
        stats = self.stats if stats is None else stats
        return self._call(position, stats, x, key, train=False)[0]

    def apply_train(self, position: Position, stats, x: jax.Array,
                    key: jax.Array | None = None) -> tuple[jax.Array, Any]:
        """Outputs and updated statistics, batch norm in training mode (normalising by the
        batch's statistics and updating the running ones), as point-estimate training
        needs; ``key`` turns dropout on."""
        return self._call(position, stats, x, key, train=True)

    def _call(self, position, stats, x, key, *, train: bool):
        network = self._module(position, stats, key, train=train)
        f = self._invoke(network, x, key)
        if not train:
            return f, stats
        new = nnx.to_pure_dict(nnx.state(network, nnx.BatchStat))
        return f, jax.tree.map(lambda a, b: a.astype(b.dtype), new, stats)

    def _module(self, position, stats, key, *, train: bool) -> nnx.Module:
        """The network in the mode of a call: dropout on with a key, its RNG streams
        reseeded from it; batch norm in training mode only if ``train``."""
        network = nnx.view(self.network(position, stats), deterministic=key is None,
                           use_running_average=not train, raise_if_not_found=False)
        if key is not None and self._rng_tags:
            key = _typed_key(key)
            nnx.reseed(network, **{tag: jax.random.fold_in(key, i)
                                   for i, tag in enumerate(self._rng_tags)})
        return network

    def _invoke(self, network, x, key):
        return network(x, key=key) if self._takes_key else network(x)

    def network(self, position: Position | None = None, stats=None) -> nnx.Module:
        """The NNX network holding the weights of ``position`` and the batch statistics
        ``stats`` (default: the initial weights and :attr:`stats`)."""
        net = (self.init_position if position is None else position)["net"]
        stats = self.stats if stats is None else stats
        return nnx.merge(self.graphdef, merge_trees(net, self._frozen), stats, self._rest)

    def with_stats(self, stats) -> BNN:
        """This model with other batch statistics (those a training run updated)."""
        if jax.tree.structure(stats) != jax.tree.structure(self.stats):
            raise ValueError("stats must have the structure of the model's stats")
        new = copy.copy(self)
        new.stats = stats
        return new

    def output_shape(self, x, *, name: str = "x") -> tuple[int, ...]:
        """Shape ``(N, K)`` of the network's outputs for inputs shaped like ``x``.

        Found by ``jax.eval_shape``, which runs nothing, once for all models of one graph
        and weight shapes (a refit's new model finds it kept). Raises ``ValueError`` naming
        ``name`` when the network cannot take such inputs (or, for a network with an
        ``input_shape`` attribute such as those of :mod:`bayesnn.models`, when their
        per-example shape or size differs from it) or does not return one ``(N, K)`` array.
        """
        shape = tuple(np.shape(x))
        dtype = jax.dtypes.canonicalize_dtype(np.result_type(x))
        want = self._declared_shape
        if want is not None and shape[1:] != want and math.prod(shape[1:]) != math.prod(want):
            raise ValueError(
                f"{name} has per-example shape {shape[1:]}, but the network expects {want} "
                f"(full shape (num_examples, {', '.join(map(str, want))}))"
            )
        key = (self.graphdef, _abstract((self.init_position, self.stats, self._frozen,
                                         self._rest)), shape[1:], dtype)

        def trace() -> int:
            probe = jax.ShapeDtypeStruct((2, *shape[1:]), dtype)
            try:
                out = jax.eval_shape(partial(self.apply, self.init_position), probe)
            except Exception as err:  # the network's own message, with the parameter named
                raise ValueError(
                    f"{name} has per-example shape {shape[1:]}, but the network "
                    f"{self.network_name} expects other inputs ({type(err).__name__}: "
                    f"{str(err).splitlines()[0] if str(err) else ''})"
                ) from err
            if not (isinstance(out, jax.ShapeDtypeStruct) and len(out.shape) == 2
                    and out.shape[0] == 2):
                got = jax.tree.map(lambda a: (shape[0], *a.shape[1:]), out)
                raise ValueError(
                    f"the network maps {name} of shape {shape} to outputs {got}; the "
                    f"likelihood {type(self.likelihood).__name__} needs one array of shape "
                    f"({shape[0]}, num_outputs)"
                )
            return out.shape[1]

        return shape[0], _kept(_OUTPUT_SHAPES, key, trace)

    @property
    def dense_view(self) -> DenseView | None:
        """The network as a chain of Dense layers, when it is one with every weight in the
        position, else None: a :class:`~bayesnn.models.MLP`, an ``nnx.Linear`` or an
        ``nnx.Sequential`` alternating ``nnx.Linear`` layers and one activation function
        (``Linear, relu, Linear, relu, Linear``), none of them frozen."""
        net = self.network()
        if self.frozen:
            return None
        if isinstance(net, MLP):
            return DenseView(tuple(DenseLayer(f"layers/{i}/kernel", f"layers/{i}/bias")
                                   for i in range(len(net.layers))), net.activation)
        if isinstance(net, nnx.Linear) and net.bias is not None:
            return DenseView((DenseLayer("kernel", "bias"),), _identity)
        if isinstance(net, nnx.Sequential):
            return _sequential_view(list(net.layers))
        return None

    def require_dense_view(self, method: str) -> DenseView:
        """:attr:`dense_view`, or a ``ValueError`` saying that ``method`` needs one."""
        view = self.dense_view
        if view is None:
            raise ValueError(
                f"{method} needs a network that is a chain of Dense layers with no frozen "
                "weights (a bayesnn.models.MLP, an nnx.Linear, or an nnx.Sequential of "
                "nnx.Linear layers and one activation function); got "
                f"{self.network_name}"
                + (f" with frozen weights {self.frozen}" if self.frozen else "")
            )
        return view

    def dense_layers(self, position: Position | None = None) -> dict[str, DenseLayer]:
        """Every ``nnx.Linear`` of the network, by module path (``"layers/0"``), wherever it
        sits in the module graph."""
        return self._layers(position, nnx.Linear)

    def conv_layers(self, position: Position | None = None) -> dict[str, DenseLayer]:
        """Every ``nnx.Conv`` of the network, by module path, wherever it sits in the module
        graph. Its kernel has shape ``(*window, in, out)``: :meth:`apply_dense` sees the
        convolution as a Dense layer on its patches, with the kernel flattened to
        ``(prod(window) · in, out)``."""
        return self._layers(position, nnx.Conv)

    def _layers(self, position, kind: type) -> dict[str, DenseLayer]:
        def walk():
            return {
                "/".join(map(str, path)): DenseLayer(
                    "/".join(map(str, (*path, "kernel"))), "/".join(map(str, (*path, "bias"))))
                for path, module in nnx.iter_graph(self.network(position))
                if isinstance(module, kind)
            }

        return dict(_kept(_LAYERS, (self.graphdef, kind), walk))

    def dense_call_order(self, x) -> tuple[str, ...]:
        """Module paths of the :meth:`dense_layers` in the order a forward pass on inputs
        shaped like ``x`` calls them; found by a trace, once per graph and input shape."""
        layers = self.dense_layers()

        def trace() -> tuple[str, ...]:
            order = []

            def tap(m):
                def matmul(h, w):
                    order.append(m)
                    return h @ w
                return matmul

            probe = jax.ShapeDtypeStruct((1, *np.shape(x)[1:]), jnp.result_type(float))
            jax.eval_shape(lambda x: self.apply_dense(self.init_position, x,
                                                      {m: tap(m) for m in layers}), probe)
            return tuple(order)

        return _kept(_CALL_ORDERS, (self.graphdef, tuple(np.shape(x)[1:])), trace)

    def apply_dense(self, position: Position, x: jax.Array,
                    matmul: Mapping[str, Callable]) -> jax.Array:
        """Network outputs with the kernel product of the layer at each module path of
        ``matmul`` computed by ``matmul[path](h, W)`` (the layer adds its bias): local
        reparameterisation draws pre-activations this way, KFAC taps the layers' inputs.

        For an ``nnx.Linear`` (:meth:`dense_layers`), ``h`` is its input and ``W`` its
        kernel. For an ``nnx.Conv`` (:meth:`conv_layers`), ``h`` holds the input patches
        (im2col) ``(batch, *out_spatial, prod(window) · in)``, ordered as the kernel's
        ``(*window, in)`` axes, and ``W`` is the kernel reshaped to
        ``(prod(window) · in, out)``, so that ``h @ W`` is the convolution. Dropout is off
        and batch norm in evaluation mode."""
        network = self._module(position, self.stats, None, train=False)
        layers = {"/".join(map(str, p)): m for p, m in nnx.iter_graph(network)
                  if isinstance(m, nnx.Linear | nnx.Conv)}
        for path, fn in matmul.items():
            if isinstance(layers[path], nnx.Conv):
                layers[path].conv_general_dilated = _as_conv_general_dilated(fn)
            else:
                layers[path].dot_general = _as_dot_general(fn)
        return self._invoke(network, x, None)

    def init_params(self, key: jax.Array) -> Position:
        """A fresh position: LeCun-normal kernels and zero biases (NNX's defaults)."""
        return {"net": fresh_weights(key, self.init_position["net"]),
                "lik": self.likelihood.init_params()}

    # -- densities ---------------------------------------------------------------------

    def logprior_fn(self, position: Position) -> jax.Array:
        """log p(θ): the weight prior plus the likelihood's own parameter priors."""
        return self.prior.log_prob(position["net"]) + self.likelihood.log_prior(position["lik"])

    def log_prob_per_example(self, position: Position, x, y, key=None) -> jax.Array:
        """Untempered log p(y_i | x_i, θ) for each row, shape ``(B,)``."""
        return self.likelihood.log_prob(self.apply(position, x, key), y, position["lik"])

    def loglikelihood_fn(self, position: Position, batch, key=None) -> jax.Array:
        """Tempered log-likelihood of the real rows of ``batch``: Σ_i log p(y_i|x_i,θ) / T."""
        batch = Batch(*batch)
        ll = self.log_prob_per_example(position, batch.x, batch.y, key)
        if batch.mask is not None:
            ll = jnp.where(batch.mask, ll, 0.0)
        return jnp.sum(ll) / self.likelihood.temperature

    def logdensity_fn(self, position: Position, batch, data_size: int, key=None) -> jax.Array:
        """Unbiased minibatch estimate of log p(θ) + Σ_{i≤N} log p(y_i | x_i, θ) / T.

        The batch's log-likelihood is scaled by ``data_size / b`` with ``b`` the number of
        real rows, as in Robbins–Monro / Welling & Teh (2011), eq. 3.
        """
        batch = Batch(*batch)
        b = batch.x.shape[0] if batch.mask is None else jnp.maximum(jnp.sum(batch.mask), 1)
        scale = data_size / b
        return self.logprior_fn(position) + scale * self.loglikelihood_fn(position, batch, key)

    # -- NumPyro -----------------------------------------------------------------------

    def numpyro_model(self, x, y=None, *, batch_size: int | None = None) -> None:
        """The same model as a NumPyro program.

        Sites are named by parameter path (``"net/layers/0/kernel"``, ``"lik/log_scale"``);
        weights without a prior are ``numpyro.param`` sites (point estimates). With
        ``batch_size`` the data plate subsamples and NumPyro scales the likelihood by N/B.
        """
        net0 = self.init_position["net"]
        dists = self.prior.distributions(net0)
        net = {
            path: numpyro.sample(f"net/{path}", dists[path])
            if path in dists
            else numpyro.param(f"net/{path}", value)
            for path, value in flatten_paths(net0).items()
        }
        lik = {
            name: numpyro.sample(f"lik/{name}", d)
            for name, d in self.likelihood.param_priors().items()
        }
        position = {"net": unflatten_paths(net, like=net0), "lik": lik}
        with numpyro.plate("data", x.shape[0], subsample_size=batch_size) as idx:
            xb = x[idx] if batch_size is not None else x
            yb = None if y is None else (y[idx] if batch_size is not None else y)
            f = self.apply(position, xb)
            with numpyro.handlers.scale(scale=1.0 / self.likelihood.temperature):
                numpyro.sample("y", self.likelihood.distribution(f, lik), obs=yb)

    def sites(self, position: Position) -> tuple[dict[str, Any], dict[str, Any]]:
        """NumPyro site values of a position: ``(sample sites, point-estimate params)``.

        The inverse of :meth:`position_from_sites`.
        """
        bayesian = flatten_paths(self.bayesian_mask["net"])
        weights = flatten_paths(position["net"])
        latent = {f"net/{p}": v for p, v in weights.items() if bayesian[p]}
        latent |= {f"lik/{k}": v for k, v in position["lik"].items()}
        params = {f"net/{p}": v for p, v in weights.items() if not bayesian[p]}
        return latent, params

    def position_from_sites(self, sites: dict[str, Any], params: dict[str, Any] | None = None):
        """Rebuild positions from NumPyro site values (leading axes allowed).

        Point-estimate weights come from ``params`` (SVI's fitted ``numpyro.param`` values)
        or, without it, from the initial position, broadcast to the sample axes.
        """
        params = params or {}
        net0 = self.init_position["net"]
        lead = _leading_shape(sites, self.init_position)
        named = {}
        for path, value in flatten_paths(net0).items():
            v = sites.get(f"net/{path}", params.get(f"net/{path}", value))
            named[path] = jnp.broadcast_to(v, lead + value.shape) if v.ndim == value.ndim else v
        lik = {name: sites[f"lik/{name}"] for name in self.init_position["lik"]}
        return {"net": unflatten_paths(named, like=net0), "lik": lik}

    # -- persistence -------------------------------------------------------------------

    def to_state(self) -> dict:
        """Everything needed to rebuild this model, as data: the network's spec
        (:func:`~bayesnn.models.registry.network_spec`: a :mod:`bayesnn.models` network's
        constructor arguments, any other's class name), its weights ``net`` (frozen ones
        included) and other state ``rest`` as arrays, the prior, the likelihood and the
        frozen patterns. :class:`~bayesnn.Posterior` saves it without pickle."""
        network = self.network()
        _, params, rest = nnx.split(network, nnx.Param, ...)
        return {
            "network": network_spec(network),
            "net": jax.device_get(nnx.to_pure_dict(params)),
            "rest": jax.device_get(nnx.to_pure_dict(rest)),
            "prior": self.prior, "likelihood": self.likelihood, "frozen": list(self.frozen),
        }

    @classmethod
    def from_state(cls, state: dict, like=None) -> BNN:
        """Inverse of :meth:`to_state`.

        Parameters
        ----------
        state : dict
            From :meth:`to_state`, or read back from a file (where a prior, likelihood or
            network configuration that the file could not rebuild is an
            :class:`~bayesnn.serialization.Unbuilt` description).
        like : nnx.Module or BNN, optional
            The network whose structure receives the saved weights, for a network that is
            not from :mod:`bayesnn.models` (default: the network rebuilt from its spec).
            A ``BNN`` also gives the prior and likelihood, used instead of the saved ones.

        Raises
        ------
        ValueError
            When the network cannot be rebuilt without ``like``, when the saved weights do
            not fit its structure, or when the prior or likelihood cannot be rebuilt and
            ``like`` is not a ``BNN``.
        """
        if isinstance(like, BNN):
            network, prior, likelihood = like.network(), like.prior, like.likelihood
        elif isinstance(like, nnx.Module) or like is None:
            prior, likelihood = state["prior"], state["likelihood"]
            for name, value, base in (("prior", prior, priors_.Prior),
                                      ("likelihood", likelihood, lik_.Likelihood)):
                if not isinstance(value, base):
                    raise ValueError(
                        f"the saved {name} cannot be rebuilt ({value}); pass "
                        "like=bayesnn.BNN(network, prior, likelihood) to give it")
            if like is None:
                try:
                    network = build_network(state["network"])
                except ValueError as e:
                    raise ValueError(f"{e}; pass like=<the network> (an nnx.Module of the "
                                     "same architecture, or a BNN) to load it") from None
            else:
                network = like
        else:
            raise TypeError(f"like must be an nnx.Module or a bayesnn.BNN, got "
                            f"{type(like).__name__}")
        graphdef, params, rest = nnx.split(network, nnx.Param, ...)
        for name, part in (("net", params), ("rest", rest)):
            saved = flatten_paths(state[name])
            expected = flatten_paths(nnx.to_pure_dict(part))
            if set(saved) != set(expected) or any(
                    np.shape(saved[p]) != np.shape(v) for p, v in expected.items()):
                bad = sorted(set(saved) ^ set(expected)) or [
                    f"{p} {np.shape(saved[p])} != {np.shape(v)}" for p, v in expected.items()
                    if np.shape(saved[p]) != np.shape(v)]
                raise ValueError(f"the saved weights do not fit the network "
                                 f"{type(network).__name__}: {bad[:5]}")
            values = {p: jnp.asarray(v) for p, v in saved.items()}
            nnx.replace_by_pure_dict(part, unflatten_paths(values, nnx.to_pure_dict(part)))
        network = nnx.merge(graphdef, params, rest)
        return cls(network, prior, likelihood, frozen=tuple(state["frozen"]))

    def __repr__(self) -> str:
        return (
            f"BNN({self.network_name}, prior={self.prior!r}, likelihood={self.likelihood!r}, "
            f"frozen={self.frozen})"
        )


def _split_frozen(net: dict, patterns: tuple[str, ...]) -> tuple[dict, dict]:
    """(trainable, frozen) weights; every pattern must match a parameter."""
    paths = list(flatten_paths(net))
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(p, pattern) for p in paths):
            raise ValueError(f"frozen pattern {pattern!r} matches no parameter; paths: {paths}")
    trainable, frozen = split_tree(
        net, lambda p: any(fnmatch.fnmatchcase(p, pat) for pat in patterns)
    )
    if not trainable:
        raise ValueError("every parameter is frozen: nothing is left to infer")
    return trainable, frozen


def _at(tree: dict, path: str):
    """The leaf of a nested dict at ``"a/b/c"``."""
    for part in path.split("/"):
        tree = tree[part] if part in tree else tree[int(part)]
    return tree


def _as_dot_general(matmul: Callable) -> Callable:
    """An ``nnx.Linear.dot_general`` computing ``matmul(x, kernel)``."""

    def dot_general(x, kernel, dims, **kwargs):
        return matmul(x, kernel)

    return dot_general


def _as_conv_general_dilated(matmul: Callable) -> Callable:
    """An ``nnx.Conv.conv_general_dilated`` computing ``matmul(patches, kernel)`` on the
    input patches ``(N, *out_spatial, prod(window) · in)`` and the kernel flattened to
    ``(prod(window) · in, out)``."""

    def conv(lhs, rhs, window_strides, padding, *, lhs_dilation=None, rhs_dilation=None,
             dimension_numbers=None, feature_group_count=1, **kwargs):
        if feature_group_count != 1:
            raise ValueError("apply_dense: a grouped convolution (feature_group_count="
                             f"{feature_group_count}) is not a Dense layer on its patches")
        *window, cin, cout = rhs.shape
        patches = jax.lax.conv_general_dilated_patches(
            lhs, window, window_strides, padding, lhs_dilation, rhs_dilation,
            dimension_numbers, precision=jax.lax.Precision.HIGHEST)
        # JAX orders a patch as (in, *window); the kernel's rows are (*window, in)
        lead, size = patches.shape[:-1], math.prod(window)
        patches = jnp.swapaxes(patches.reshape(*lead, cin, size), -1, -2)
        return matmul(patches.reshape(*lead, size * cin), rhs.reshape(size * cin, cout))

    return conv


def _leading_shape(sites, position) -> tuple[int, ...]:
    """Sample axes of NumPyro site values: their shape minus the parameter's own shape."""
    named = flatten_paths(position["net"])
    for site, v in sites.items():
        path = site.removeprefix("net/")
        if path in named:
            return tuple(v.shape[: v.ndim - named[path].ndim])
    return ()


def _as_float(tree):
    """Floating leaves in JAX's default float precision; others unchanged."""
    return jax.tree.map(
        lambda a: jnp.asarray(a, jnp.result_type(float))
        if jnp.issubdtype(jnp.result_type(a), jnp.floating) else jnp.asarray(a), tree)


def _typed_key(key) -> jax.Array:
    """A typed PRNG key from a typed or a raw ``uint32[2]`` key."""
    return key if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else (
        jax.random.wrap_key_data(key))


def _identity(x):
    return x


def _sequential_view(layers: list) -> DenseView | None:
    """The :class:`DenseView` of ``nnx.Sequential(Linear, σ, Linear, σ, …, Linear)``."""
    linears, acts = layers[::2], layers[1::2]
    dense = all(isinstance(m, nnx.Linear) and m.bias is not None for m in linears)
    if not (dense and len(linears) == len(acts) + 1 and len({id(a) for a in acts}) <= 1
            and not any(isinstance(a, nnx.Module) for a in acts)):
        return None
    return DenseView(
        tuple(DenseLayer(f"layers/{2 * i}/kernel", f"layers/{2 * i}/bias")
              for i in range(len(linears))),
        acts[0] if acts else _identity,
    )


# -- data checks ---------------------------------------------------------------------


def prepare_inputs(model: BNN, x, *, name: str = "x") -> np.ndarray:
    """Check inputs ``x`` for ``model`` and return them as a float array.

    ``x`` must be a numeric ``(N, ...)`` array without NaN or inf that the network can take
    (:meth:`BNN.output_shape`); integer inputs become JAX's default float.
    """
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"{name} must have shape (num_examples, ...); got {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")
    check_finite(x, name)
    x = x.astype(jnp.result_type(float)) if not np.issubdtype(x.dtype, np.floating) else x
    model.output_shape(x, name=name)
    return x


def prepare_targets(model: BNN, x, y, *, name: str = "y", x_name: str = "x") -> np.ndarray:
    """Check targets ``y`` against the network's outputs for inputs ``x`` (checked) and
    the likelihood; return them with the dtype and shape the likelihood expects."""
    out = model.output_shape(x, name=x_name)
    try:
        y = model.likelihood.validate_targets(np.asarray(y), out[1])
        target_dim = y.shape[1] if y.ndim == 2 else out[1]
        need = model.likelihood.num_outputs(target_dim)
        if need != out[1]:
            raise ValueError(f"{type(model.likelihood).__name__} needs {need} network "
                             f"output(s) for targets of shape {y.shape}")
    except ValueError as err:
        raise ValueError(
            f"{name}: {err}; the network maps {x_name} of shape {np.shape(x)} to outputs "
            f"of shape {out}"
        ) from err
    if y.shape[0] != out[0]:
        raise ValueError(f"{x_name} has {out[0]} rows but {name} has {y.shape[0]}")
    return y


def prepare_data(model: BNN, data, *, name: str = "data") -> Dataset:
    """Validate ``data`` against the model: finite numeric arrays, inputs the network takes,
    targets that fit its outputs and the likelihood."""
    data = as_dataset(data, name=name)
    y = prepare_targets(model, data.x, data.y, name=f"{name}.y", x_name=f"{name}.x")
    return Dataset(data.x, y)

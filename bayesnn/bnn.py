"""A Bayesian neural network: a Flax NNX network, a prior over its weights and a likelihood.

Inference code never sees the module. It sees the *position*, a plain pytree
``{"net": network weights, "lik": likelihood parameters}``, and the pure functions of
this class: :meth:`BNN.logprior_fn`, :meth:`BNN.loglikelihood_fn`,
:meth:`BNN.logdensity_fn` (with the N/B minibatch scaling) and :meth:`BNN.numpyro_model`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from flax import nnx

from bayesnn import likelihoods as lik_
from bayesnn import priors as priors_
from bayesnn.models import MLP
from bayesnn.models.registry import build_network, network_spec
from bayesnn.tree import flatten_paths, merge_trees, split_tree, unflatten_paths

__all__ = ["BNN", "Batch", "DenseLayer", "DenseView"]

Position = dict[str, Any]


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


class BNN:
    """Network + prior + likelihood.

    Parameters
    ----------
    network : nnx.Module
        A network whose ``__call__(x, *, key=None)`` returns the likelihood's inputs
        (logits, or means and scales). It must expose ``input_shape`` and ``out_features``
        (all :mod:`bayesnn.models` networks do). Its current weights are the initial position.
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
    """

    def __init__(self, network: nnx.Module, prior=None, likelihood=None, *, frozen=()):
        if not isinstance(network, nnx.Module):
            raise TypeError(f"network must be a flax.nnx.Module, got {type(network).__name__}")
        for attr in ("input_shape", "out_features"):
            if not hasattr(network, attr):
                raise TypeError(
                    f"network must expose `{attr}` (the networks of bayesnn.models do); "
                    f"{type(network).__name__} does not"
                )
        self.prior = priors_.Normal(1.0) if prior is None else prior
        self.likelihood = lik_.Gaussian() if likelihood is None else likelihood
        self.input_shape = tuple(network.input_shape)
        self.out_features = int(network.out_features)
        self.graphdef, params, self._rest = nnx.split(network, nnx.Param, ...)
        self.frozen = tuple([frozen] if isinstance(frozen, str) else frozen)
        # Weights take JAX's default float precision (float64 under jax_enable_x64).
        weights = jax.tree.map(lambda w: jnp.asarray(w, jnp.result_type(float)),
                               nnx.to_pure_dict(params))
        net, self._frozen = _split_frozen(weights, self.frozen)
        self.init_position: Position = {"net": net, "lik": self.likelihood.init_params()}
        # Validates per-parameter prior rules against the network once, up front.
        self.bayesian_mask = {
            "net": self.prior.mask(self.init_position["net"]),
            "lik": {k: True for k in self.init_position["lik"]},
        }

    # -- the network -------------------------------------------------------------------

    def apply(self, position: Position, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """Network outputs for inputs ``x``; ``key`` turns dropout on (training mode)."""
        return self.network(position)(x, key=key)

    def network(self, position: Position | None = None) -> nnx.Module:
        """The NNX network holding the weights of ``position`` (default: the initial ones)."""
        net = (self.init_position if position is None else position)["net"]
        return nnx.merge(self.graphdef, merge_trees(net, self._frozen), self._rest)

    @property
    def dense_view(self) -> DenseView | None:
        """The network as a chain of Dense layers, when it is one with every weight in the
        position (a :class:`~bayesnn.models.MLP` without frozen weights); else None."""
        net = self.network()
        if self.frozen or not isinstance(net, MLP):
            return None
        layers = tuple(DenseLayer(f"layers/{i}/kernel", f"layers/{i}/bias")
                       for i in range(len(net.layers)))
        return DenseView(layers, net.activation)

    def require_dense_view(self, method: str) -> DenseView:
        """:attr:`dense_view`, or a ``ValueError`` saying that ``method`` needs one."""
        view = self.dense_view
        if view is None:
            raise ValueError(
                f"{method} needs a network that is a chain of Dense layers with no frozen "
                f"weights (a bayesnn.models.MLP); got {type(self.network()).__name__}"
                + (f" with frozen weights {self.frozen}" if self.frozen else "")
            )
        return view

    def dense_layers(self, position: Position | None = None) -> dict[str, DenseLayer]:
        """Every ``nnx.Linear`` of the network, by module path (``"layers/0"``), wherever it
        sits in the module graph."""
        return {
            "/".join(map(str, path)): DenseLayer(
                "/".join(map(str, (*path, "kernel"))), "/".join(map(str, (*path, "bias"))))
            for path, module in nnx.iter_graph(self.network(position))
            if isinstance(module, nnx.Linear)
        }

    def apply_dense(self, position: Position, x: jax.Array,
                    matmul: Mapping[str, Callable]) -> jax.Array:
        """Network outputs with the kernel product ``x @ W`` of the Dense layer at each
        module path of ``matmul`` computed by ``matmul[path](x, W)`` (the layer adds its
        bias): local reparameterisation draws pre-activations this way."""
        network = self.network(position)
        layers = {"/".join(map(str, p)): m for p, m in nnx.iter_graph(network)
                  if isinstance(m, nnx.Linear)}
        for path, fn in matmul.items():
            layers[path].dot_general = _as_dot_general(fn)
        return network(x)

    def init_params(self, key: jax.Array) -> Position:
        """A fresh position: LeCun-normal kernels and zero biases (NNX's defaults)."""
        leaves, treedef = jax.tree.flatten(self.init_position["net"])
        keys = jax.random.split(key, len(leaves))
        init = jax.nn.initializers.lecun_normal()
        net = [
            init(k, w.shape, w.dtype) if w.ndim >= 2 else jnp.zeros_like(w)
            for k, w in zip(keys, leaves, strict=True)
        ]
        return {"net": jax.tree.unflatten(treedef, net), "lik": self.likelihood.init_params()}

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

    # -- checks ------------------------------------------------------------------------

    def check_inputs(self, x, *, name: str = "x") -> None:
        """Raise ``ValueError`` if ``x`` does not fit the network's input shape."""
        shape = tuple(np.shape(x))[1:]
        want = self.input_shape
        if shape != want and int(np.prod(shape)) != int(np.prod(want)):
            raise ValueError(
                f"{name} has per-example shape {shape}, but the network expects {want} "
                f"(full shape (num_examples, {', '.join(map(str, want))}))"
            )

    def __repr__(self) -> str:
        return (
            f"BNN(input_shape={self.input_shape}, out_features={self.out_features}, "
            f"prior={self.prior!r}, likelihood={self.likelihood!r}, frozen={self.frozen})"
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


def _leading_shape(sites, position) -> tuple[int, ...]:
    """Sample axes of NumPyro site values: their shape minus the parameter's own shape."""
    named = flatten_paths(position["net"])
    for site, v in sites.items():
        path = site.removeprefix("net/")
        if path in named:
            return tuple(v.shape[: v.ndim - named[path].ndim])
    return ()

"""Keras-style layer specifications and the activation lookup.

A spec is a small frozen dataclass holding a layer's configuration. It knows the
shape it maps an input to (``output_shape``, Keras arithmetic, no batch axis) and
builds the callable ``layer(x, *, key=None)`` that runs it (``build``): an
``nnx.Module`` for layers with parameters, the spec itself for the others. Images
are NHWC. ``key=None`` means deterministic; a PRNG key turns dropout on.
"""

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

Shape = tuple[int, ...]


def _identity(x):
    return x


_ACTIVATIONS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "elu": jax.nn.elu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # exact, as in Keras
    "softplus": jax.nn.softplus,
    "swish": jax.nn.silu,
    "silu": jax.nn.silu,
    "linear": _identity,
}


@dataclasses.dataclass(frozen=True)
class Named:
    """An activation referred to by name, so that a saved network records it as data."""

    name: str

    def __call__(self, x):
        return _ACTIVATIONS[self.name](x)


def activation(name: str | Callable | None) -> Callable:
    """Return the activation function called ``name``.

    Parameters
    ----------
    name
        One of ``relu, tanh, sigmoid, elu, gelu, softplus, swish, silu, linear``
        (case-insensitive), ``None`` (identity) or a callable, returned as is.

    Raises
    ------
    ValueError
        If ``name`` is an unknown string.
    """
    if name is None:
        return Named("linear")
    if callable(name):
        return name
    if isinstance(name, str) and name.lower() in _ACTIVATIONS:
        return Named(name.lower())
    raise ValueError(
        f"unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)}, None or a callable"
    )


def _pair(value, what: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"{what} must be a positive int or a pair of them, got {value!r}")
    return pair


def _padding(value: str) -> str:
    padding = str(value).lower()
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {value!r}")
    return padding


def _check_image(layer, input_shape: Shape) -> None:
    if len(input_shape) != 3:
        raise ValueError(
            f"{type(layer).__name__} expects an (H, W, C) input, got shape {tuple(input_shape)}"
        )


def _window_output(layer, input_shape: Shape, window: tuple[int, int], channels=None) -> Shape:
    """Keras output shape of a sliding ``window`` over (H, W, C); ``channels`` replaces C."""
    _check_image(layer, input_shape)
    out = []
    for n, k, s in zip(input_shape[:2], window, layer.strides, strict=True):
        m = -(-n // s) if layer.padding == "same" else (n - k) // s + 1
        if m < 1:
            raise ValueError(
                f"{type(layer).__name__} window {window} does not fit input {tuple(input_shape)}"
            )
        out.append(m)
    return (*out, input_shape[-1] if channels is None else channels)


def _check_features(layer, input_shape: Shape) -> int:
    if len(input_shape) < 1:
        raise ValueError(f"{type(layer).__name__} needs at least one feature axis, got shape ()")
    return input_shape[-1]


class _Activated(nnx.Module):
    """Mixin running the parent layer, then ``self.activation``; ``key`` is unused."""

    def __init__(self, *args, activation: Callable, **kwargs):
        super().__init__(*args, **kwargs)
        self.activation = activation

    def __call__(self, x, *, key=None):
        return self.activation(super().__call__(x))


_NHWC = jax.lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def _conv_as_matmul(lhs, rhs, window_strides, padding, *, lhs_dilation=None,
                    rhs_dilation=None, dimension_numbers=None, feature_group_count=1, **kwargs):
    """``lax.conv_general_dilated`` for plain 2-D NHWC convolutions on CPU: shifted slices
    of the padded input, concatenated, times the flattened kernel (one matmul).

    XLA:CPU runs the gradient of a convolution inside a loop (``lax.scan``, as in every
    training loop here) more than ten times slower than outside one; as slices and a dot
    it runs at full speed. Other convolutions and backends use ``lax.conv_general_dilated``.
    """
    plain = (
        jax.default_backend() == "cpu" and lhs.ndim == 4 and dimension_numbers == _NHWC
        and feature_group_count == 1 and isinstance(padding, str)
        and all(d in (None, 1, (1, 1)) for d in (lhs_dilation, rhs_dilation))
    )
    if not plain:
        return jax.lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count, **kwargs,
        )
    kh, kw, cin, cout = rhs.shape
    (sh, sw), (h, w) = window_strides, lhs.shape[1:3]
    pads = jax.lax.padtype_to_pads((h, w), (kh, kw), (sh, sw), padding)
    x = jnp.pad(lhs, ((0, 0), *pads, (0, 0)))
    oh, ow = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    patches = jnp.concatenate([
        x[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw, :]
        for i in range(kh) for j in range(kw)
    ], axis=-1)  # (N, oh, ow, kh * kw * cin), ordered as the kernel's (kh, kw, cin) axes
    precision = kwargs.get("precision")
    return jnp.matmul(patches, rhs.reshape(kh * kw * cin, cout), precision=precision)


class _Conv(_Activated, nnx.Conv):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, conv_general_dilated=_conv_as_matmul, **kwargs)


class _Linear(_Activated, nnx.Linear):
    pass


class Layer:
    """Base of the layer specs: a stateless layer is its own callable."""

    name: ClassVar[str]
    has_params: ClassVar[bool] = False

    def output_shape(self, input_shape: Shape) -> Shape:
        """Shape of the output for an input of ``input_shape`` (no batch axis)."""
        return tuple(input_shape)

    def build(self, input_shape: Shape, rngs: nnx.Rngs) -> Callable:
        """Return the callable ``layer(x, *, key=None)`` for inputs of ``input_shape``."""
        self.output_shape(input_shape)  # validates the input shape
        return self


@dataclasses.dataclass(frozen=True)
class Conv2D(Layer):
    """2-D convolution (``nnx.Conv``) followed by ``activation``."""

    filters: int
    kernel_size: int | tuple[int, int]
    strides: int | tuple[int, int] = 1
    padding: str = "valid"
    activation: str | Callable | None = None

    name: ClassVar[str] = "conv2d"
    has_params: ClassVar[bool] = True

    def __post_init__(self):
        if not isinstance(self.filters, int) or self.filters < 1:
            raise ValueError(f"filters must be a positive int, got {self.filters!r}")
        object.__setattr__(self, "kernel_size", _pair(self.kernel_size, "kernel_size"))
        object.__setattr__(self, "strides", _pair(self.strides, "strides"))
        object.__setattr__(self, "padding", _padding(self.padding))
        object.__setattr__(self, "activation", activation(self.activation))

    def output_shape(self, input_shape):
        return _window_output(self, input_shape, self.kernel_size, self.filters)

    def build(self, input_shape, rngs):
        self.output_shape(input_shape)
        return _Conv(
            input_shape[-1],
            self.filters,
            self.kernel_size,
            self.strides,
            padding=self.padding.upper(),
            activation=self.activation,
            rngs=rngs,
        )


@dataclasses.dataclass(frozen=True)
class MaxPooling2D(Layer):
    """2-D max pooling; ``strides`` defaults to ``pool_size``; 'same' pads with -inf."""

    pool_size: int | tuple[int, int] = 2
    strides: int | tuple[int, int] | None = None
    padding: str = "valid"

    name: ClassVar[str] = "max_pooling2d"

    def __post_init__(self):
        object.__setattr__(self, "pool_size", _pair(self.pool_size, "pool_size"))
        strides = self.pool_size if self.strides is None else self.strides
        object.__setattr__(self, "strides", _pair(strides, "strides"))
        object.__setattr__(self, "padding", _padding(self.padding))

    def output_shape(self, input_shape):
        return _window_output(self, input_shape, self.pool_size)

    def __call__(self, x, *, key=None):
        (ph, pw), (h, w) = self.pool_size, x.shape[-3:-1]
        if self.padding == "valid" and self.strides == self.pool_size:
            # Non-overlapping windows as a reshape: on CPU its gradient is several times
            # cheaper than reduce_window's select-and-scatter.
            x = x[..., : h - h % ph, : w - w % pw, :]
            x = x.reshape(*x.shape[:-3], h // ph, ph, w // pw, pw, x.shape[-1])
            return x.max(axis=(-4, -2))
        return nnx.max_pool(x, self.pool_size, self.strides, self.padding.upper())


@dataclasses.dataclass(frozen=True)
class GlobalAveragePooling2D(Layer):
    """Mean over the spatial axes: (H, W, C) -> (C,)."""

    name: ClassVar[str] = "global_average_pooling2d"

    def output_shape(self, input_shape):
        _check_image(self, input_shape)
        return (input_shape[-1],)

    def __call__(self, x, *, key=None):
        return x.mean(axis=(1, 2))


@dataclasses.dataclass(frozen=True)
class Flatten(Layer):
    """Flatten all non-batch axes."""

    name: ClassVar[str] = "flatten"

    def output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def __call__(self, x, *, key=None):
        return x.reshape(x.shape[0], -1)


@dataclasses.dataclass(frozen=True)
class Dense(Layer):
    """Fully connected layer (``nnx.Linear``) on the last axis, then ``activation``."""

    units: int
    activation: str | Callable | None = None

    name: ClassVar[str] = "dense"
    has_params: ClassVar[bool] = True

    def __post_init__(self):
        if not isinstance(self.units, int) or self.units < 1:
            raise ValueError(f"units must be a positive int, got {self.units!r}")
        object.__setattr__(self, "activation", activation(self.activation))

    def output_shape(self, input_shape):
        _check_features(self, input_shape)
        return (*input_shape[:-1], self.units)

    def build(self, input_shape, rngs):
        features = _check_features(self, input_shape)
        return _Linear(features, self.units, activation=self.activation, rngs=rngs)


@dataclasses.dataclass(frozen=True)
class Dropout(Layer):
    """Inverted dropout: active only when called with a PRNG ``key``."""

    rate: float

    name: ClassVar[str] = "dropout"

    def __post_init__(self):
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"dropout rate must satisfy 0 <= rate < 1, got {self.rate!r}")

    def __call__(self, x, *, key=None):
        if key is None or self.rate == 0.0:
            return x
        keep = jax.random.bernoulli(key, 1.0 - self.rate, x.shape)
        return jnp.where(keep, x / (1.0 - self.rate), 0.0)


def split_key(key: jax.Array | None, num: int) -> list:
    """``num`` independent keys from ``key``, or ``num`` Nones when ``key`` is None."""
    return [None] * num if key is None else list(jax.random.split(key, num))


def check_input(x, input_shape: Shape) -> None:
    """Raise ValueError unless ``x`` has shape ``(batch, *input_shape)``."""
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"expected input of shape (batch, {', '.join(map(str, input_shape))}), "
            f"got {tuple(x.shape)}"
        )

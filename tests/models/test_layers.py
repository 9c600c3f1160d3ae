import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bayesnn.models import (
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    MaxPooling2D,
    activation,
)


def run(spec, input_shape, x=None):
    """Build ``spec`` for ``input_shape`` and apply it to ``x`` (default: a batch of two)."""
    if x is None:
        x = np.random.default_rng(1).standard_normal((2, *input_shape), np.float32)
    return spec.build(input_shape, nnx.Rngs(0))(x)


def forward_shape(spec, input_shape):
    """Output shape of the built layer on a batch of two, traced without computing."""
    x = jax.ShapeDtypeStruct((2, *input_shape), jnp.float32)
    return jax.eval_shape(lambda x: spec.build(input_shape, nnx.Rngs(0))(x), x).shape


# Expected shapes computed by hand with Keras' rules:
# valid: floor((n - k) / s) + 1, same: ceil(n / s).
SHAPES = [
    (Conv2D(4, 3), (7, 7, 2), (5, 5, 4)),
    (Conv2D(4, 3, strides=2), (7, 7, 2), (3, 3, 4)),
    (Conv2D(4, 3, strides=2, padding="same"), (7, 7, 2), (4, 4, 4)),
    (Conv2D(4, 2, strides=2), (9, 9, 1), (4, 4, 4)),
    (Conv2D(4, 2, padding="same"), (9, 9, 1), (9, 9, 4)),
    (Conv2D(3, (3, 2), strides=(2, 1), padding="SAME"), (9, 7, 1), (5, 7, 3)),
    (Conv2D(3, (3, 2), strides=(2, 3)), (9, 7, 1), (4, 2, 3)),
    (MaxPooling2D(2), (7, 7, 3), (3, 3, 3)),
    (MaxPooling2D(2, padding="same"), (7, 7, 3), (4, 4, 3)),
    (MaxPooling2D(3, strides=2), (9, 9, 1), (4, 4, 1)),
    (MaxPooling2D(3, strides=2, padding="same"), (9, 9, 1), (5, 5, 1)),
    (MaxPooling2D(2, strides=1), (7, 9, 2), (6, 8, 2)),
    (GlobalAveragePooling2D(), (7, 9, 5), (5,)),
    (Flatten(), (3, 4, 5), (60,)),
    (Dense(6), (10,), (6,)),
    (Dense(6), (3, 10), (3, 6)),
    (Dropout(0.5), (4, 3), (4, 3)),
]


@pytest.mark.parametrize(("spec", "input_shape", "expected"), SHAPES)
def test_output_shape_matches_keras_and_forward_pass(spec, input_shape, expected):
    assert spec.output_shape(input_shape) == expected
    assert forward_shape(spec, input_shape) == (2, *expected)


def test_conv_and_dense_parameter_shapes():
    conv = nnx.eval_shape(lambda: Conv2D(8, (3, 2)).build((9, 9, 5), nnx.Rngs(0)))
    dense = nnx.eval_shape(lambda: Dense(7).build((11,), nnx.Rngs(0)))
    assert conv.kernel.shape == (3, 2, 5, 8) and conv.bias.shape == (8,)
    assert dense.kernel.shape == (11, 7) and dense.bias.shape == (7,)


def test_activation_is_applied_after_conv_and_dense():
    for spec, shape in [(Conv2D(4, 3, activation="relu"), (9, 9, 2)), (Dense(5, "relu"), (6,))]:
        y = run(spec, shape)
        assert jnp.all(y >= 0) and jnp.any(y == 0)
        y_lin = run(dataclasses.replace(spec, activation=None), shape)
        np.testing.assert_allclose(y, jax.nn.relu(y_lin), rtol=1e-6)
        assert jnp.any(y_lin < 0)


def test_max_pooling_picks_window_maximum():
    x = jnp.array([[1, 9, 2, 0], [3, 4, 8, 5], [6, 0, 1, 1], [2, 7, 3, 4]], jnp.float32)
    y = run(MaxPooling2D(2), (4, 4, 1), x[None, :, :, None])
    np.testing.assert_array_equal(y[0, :, :, 0], [[9, 8], [7, 4]])


def test_same_max_pooling_pads_with_minus_infinity():
    # All values negative: zero padding would wrongly produce zeros on the edge.
    x = -jnp.arange(1.0, 10.0).reshape(1, 3, 3, 1)
    y = run(MaxPooling2D(2, padding="same"), (3, 3, 1), x)
    np.testing.assert_array_equal(y[0, :, :, 0], [[-1, -3], [-7, -9]])


def test_global_average_pooling_is_spatial_mean():
    x = np.random.default_rng(0).standard_normal((2, 5, 3, 4), np.float32)
    y = run(GlobalAveragePooling2D(), (5, 3, 4), x)
    np.testing.assert_allclose(y, x.mean(axis=(1, 2)), rtol=1e-6)


def test_max_pooling_strides_default_to_pool_size():
    assert MaxPooling2D((3, 2)).strides == (3, 2)
    assert MaxPooling2D(3, strides=1).strides == (1, 1)


def test_dropout_is_identity_without_key_and_scales_kept_units():
    x = jnp.ones((1000,))
    drop = Dropout(0.25)
    assert drop(x) is x
    y = drop(x, key=jax.random.key(0))
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    assert 0.2 < 1 - kept.mean() < 0.3
    np.testing.assert_array_equal(drop(x, key=jax.random.key(0)), y)
    assert jnp.any(drop(x, key=jax.random.key(1)) != y)
    np.testing.assert_array_equal(Dropout(0.0)(x, key=jax.random.key(0)), x)


@pytest.mark.parametrize(
    ("name", "x", "expected"),
    [
        ("relu", -1.0, 0.0),
        ("ReLU", 2.0, 2.0),
        ("tanh", 1.0, np.tanh(1.0)),
        ("sigmoid", 0.0, 0.5),
        ("elu", -1.0, np.exp(-1.0) - 1),
        ("gelu", 1.0, 0.8413447),  # exact: x * Phi(x)
        ("softplus", 0.0, np.log(2.0)),
        ("swish", 1.0, 1 / (1 + np.exp(-1.0))),
        ("silu", 1.0, 1 / (1 + np.exp(-1.0))),
        ("linear", -3.0, -3.0),
        (None, -3.0, -3.0),
    ],
)
def test_activation_lookup(name, x, expected):
    np.testing.assert_allclose(activation(name)(jnp.float32(x)), expected, rtol=1e-6)


def test_activation_passes_callables_through():
    assert activation(jnp.sin) is jnp.sin


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError, match="unknown activation 'mish'.*relu.*tanh"):
        activation("mish")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Conv2D(4, 3, padding="full"), "padding must be 'valid' or 'same'"),
        (lambda: MaxPooling2D(2, padding="causal"), "padding must be 'valid' or 'same'"),
        (lambda: Conv2D(4, (3, 3, 3)), "kernel_size"),
        (lambda: Conv2D(4, 0), "kernel_size"),
        (lambda: Conv2D(0, 3), "filters"),
        (lambda: Conv2D(4, 3, strides=(1, 0)), "strides"),
        (lambda: Conv2D(4, 3, activation="bogus"), "unknown activation"),
        (lambda: Dense(0), "units"),
        (lambda: Dropout(1.0), r"0 <= rate < 1"),
        (lambda: Dropout(-0.1), r"0 <= rate < 1"),
    ],
)
def test_bad_spec_arguments_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("spec", "input_shape", "message"),
    [
        (Conv2D(4, 3), (10,), r"expects an \(H, W, C\) input, got shape \(10,\)"),
        (GlobalAveragePooling2D(), (4, 4), r"expects an \(H, W, C\) input"),
        (Conv2D(4, 3), (2, 5, 1), "does not fit"),
        (MaxPooling2D(3), (2, 2, 1), "does not fit"),
    ],
)
def test_incompatible_input_shape_raises(spec, input_shape, message):
    with pytest.raises(ValueError, match=message):
        spec.output_shape(input_shape)
    with pytest.raises(ValueError, match=message):
        spec.build(input_shape, nnx.Rngs(0))


CONVS = [
    Conv2D(4, 3), Conv2D(4, 3, strides=2), Conv2D(4, 3, strides=2, padding="same"),
    Conv2D(3, (3, 2), strides=(2, 3)), Conv2D(3, 5, padding="same"), Conv2D(2, 2, strides=3),
]


@pytest.mark.parametrize("spec", CONVS)
def test_conv_matches_xla_convolution_and_its_gradient(spec):
    # On CPU convolutions run as slices and one matmul (fast inside lax.scan): they must
    # equal lax.conv_general_dilated, forward and backward.
    x = np.random.default_rng(2).standard_normal((2, 9, 8, 3), np.float32)
    layer = spec.build((9, 8, 3), nnx.Rngs(0))

    def xla(kernel, x):
        out = jax.lax.conv_general_dilated(
            x, kernel, spec.strides, spec.padding.upper(),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return out + layer.bias[...]

    graphdef, params = nnx.split(layer)

    def ours(kernel, x):
        return nnx.merge(graphdef, {**params, "kernel": kernel})(x)

    kernel = layer.kernel[...]
    np.testing.assert_allclose(ours(kernel, x), xla(kernel, x), rtol=1e-5, atol=1e-5)
    loss = lambda f: jax.grad(lambda k, x: (f(k, x) ** 2).sum(), (0, 1))  # noqa: E731
    for g_ours, g_xla in zip(loss(ours)(kernel, x), loss(xla)(kernel, x), strict=True):
        np.testing.assert_allclose(g_ours, g_xla, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "pool", [MaxPooling2D(2), MaxPooling2D((3, 2)), MaxPooling2D(3, strides=2)]
)
def test_max_pooling_matches_reduce_window_on_odd_sizes(pool):
    x = np.random.default_rng(3).standard_normal((2, 7, 9, 2), np.float32)
    expected = nnx.max_pool(x, pool.pool_size, pool.strides, pool.padding.upper())
    np.testing.assert_array_equal(run(pool, (7, 9, 2), x), expected)

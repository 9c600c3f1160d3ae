import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bayesnn.models import (
    CNN,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    MaxPooling2D,
)

LAYERS = [
    Conv2D(4, 3, strides=2, activation="relu"),  # 9x9 -> 4x4
    MaxPooling2D(2, strides=1, padding="same"),  # 4x4 -> 4x4
    Conv2D(6, 2, padding="same", activation="tanh"),  # 4x4 -> 4x4
    Dropout(0.5),
    GlobalAveragePooling2D(),
    Dense(5),
]


def make(layers=LAYERS, input_shape=(9, 9, 2)):
    return CNN(input_shape, layers, rngs=nnx.Rngs(0))


def test_output_shapes_and_summary():
    net = nnx.eval_shape(make)
    expected = [(4, 4, 4), (4, 4, 4), (4, 4, 6), (4, 4, 6), (6,), (5,)]
    assert net.output_shapes == tuple(expected)
    names = ["conv2d", "max_pooling2d", "conv2d_1", "dropout", "global_average_pooling2d", "dense"]
    assert net.summary() == list(zip(names, expected, strict=True))
    assert net.input_shape == (9, 9, 2) and net.out_features == 5


def test_parameter_layers_are_listed_in_order():
    net = nnx.eval_shape(make)
    shapes = jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(net, nnx.Param)))
    assert shapes == {
        "layers": {
            0: {"kernel": (3, 3, 2, 4), "bias": (4,)},
            1: {"kernel": (2, 2, 4, 6), "bias": (6,)},
            2: {"kernel": (6, 5), "bias": (5,)},
        }
    }


def conv(x, layer, strides, padding):
    dims = ("NHWC", "HWIO", "NHWC")
    y = jax.lax.conv_general_dilated(x, layer.kernel[...], strides, padding, dimension_numbers=dims)
    return y + layer.bias[...]


def test_forward_matches_layer_by_layer_computation():
    net = make()
    x = np.random.default_rng(0).standard_normal((3, 9, 9, 2), np.float32)
    conv0, conv1, dense = net.layers
    h = jax.nn.relu(conv(x, conv0, (2, 2), "VALID"))
    h = nnx.max_pool(h, (2, 2), (1, 1), "SAME")
    h = jnp.tanh(conv(h, conv1, (1, 1), "SAME")).mean(axis=(1, 2))
    expected = h @ dense.kernel[...] + dense.bias[...]
    np.testing.assert_allclose(net(x), expected, rtol=1e-5, atol=1e-6)


def test_split_merge_under_jit_with_dropout():
    net = make()
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)
    assert jax.tree.leaves(rest) == []
    pure = nnx.to_pure_dict(params)

    @jax.jit
    def apply(pure, x, key):
        return nnx.merge(graphdef, pure, rest)(x, key=key)

    x = np.random.default_rng(0).standard_normal((3, 9, 9, 2), np.float32)
    np.testing.assert_allclose(apply(pure, x, None), net(x), rtol=1e-5, atol=1e-6)  # jit vs eager
    np.testing.assert_array_equal(apply(pure, x, None), apply(pure, x, None))
    a = apply(pure, x, jax.random.key(1))
    np.testing.assert_array_equal(apply(pure, x, jax.random.key(1)), a)
    assert jnp.any(apply(pure, x, jax.random.key(2)) != a)
    assert jnp.any(a != net(x))


def test_each_dropout_layer_gets_its_own_key():
    net = make([Flatten(), Dropout(0.5), Dropout(0.5)], input_shape=(50, 40, 1))
    y = net(jnp.ones((1, 50, 40, 1)), key=jax.random.key(0))
    values = set(np.unique(y).tolist())
    # Independent masks keep a unit with probability 1/4, scaled by 2 twice.
    assert values == {0.0, 4.0}
    assert 0.2 < (y == 4.0).mean() < 0.3


@pytest.mark.parametrize("shape", [(3, 9, 9, 1), (3, 9, 9), (9, 9, 2), (3, 8, 9, 2)])
def test_wrong_input_shape_raises(shape):
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 9, 9, 2\)"):
        make()(jnp.ones(shape))


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([], "at least one layer"),
        ([Flatten(), Conv2D(4, 3)], r"Conv2D expects an \(H, W, C\) input, got shape \(162,\)"),
        ([Conv2D(4, 3), MaxPooling2D(8)], "does not fit"),
    ],
)
def test_incompatible_layers_raise(layers, message):
    with pytest.raises(ValueError, match=message):
        make(layers)

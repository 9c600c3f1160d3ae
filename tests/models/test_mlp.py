import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bayesnn.models import MLP


def make(**kwargs):
    args = {"in_features": 12, "hidden": (8, 6), "out_features": 3, "rngs": nnx.Rngs(0)}
    return MLP(**(args | kwargs))


def test_attributes_and_parameter_paths():
    net = nnx.eval_shape(make)
    assert net.input_shape == (12,) and net.out_features == 3
    shapes = jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(net, nnx.Param)))
    assert shapes == {
        "layers": {
            0: {"kernel": (12, 8), "bias": (8,)},
            1: {"kernel": (8, 6), "bias": (6,)},
            2: {"kernel": (6, 3), "bias": (3,)},
        }
    }


def test_no_hidden_layers_is_a_linear_model():
    net = make(in_features=6, hidden=())
    x = np.random.default_rng(0).standard_normal((4, 6), np.float32)
    layer = net.layers[0]
    np.testing.assert_allclose(net(x), x @ layer.kernel[...] + layer.bias[...], rtol=1e-5)


def test_images_are_flattened():
    net = make()
    x = np.random.default_rng(0).standard_normal((4, 3, 4, 1), np.float32)
    y = net(x)
    assert y.shape == (4, 3)
    np.testing.assert_array_equal(net(x[..., 0]), y)
    np.testing.assert_array_equal(net(x.reshape(4, -1)), y)


def test_activation_is_applied_to_hidden_layers_only():
    x = np.random.default_rng(0).standard_normal((4, 12), np.float32)
    linear = make(activation="linear")
    # Affine in x: f(2x) - f(0) == 2 (f(x) - f(0)); ReLU breaks this, the head stays linear.
    f0 = linear(jnp.zeros_like(x))
    np.testing.assert_allclose(linear(2 * x) - f0, 2 * (linear(x) - f0), rtol=1e-4, atol=1e-5)
    relu = make(activation="relu")
    hidden = relu.layers[1](jax.nn.relu(relu.layers[0](x)))
    np.testing.assert_allclose(relu(x), relu.layers[2](jax.nn.relu(hidden)), rtol=1e-6)
    assert jnp.any(relu(x) < 0)  # logits, no output activation


def test_dropout_needs_a_key():
    x = jnp.ones((4, 12))
    net = make(dropout=0.5)
    deterministic = net(x)
    np.testing.assert_array_equal(net(x), deterministic)
    assert jnp.any(net(x, key=jax.random.key(0)) != deterministic)
    no_dropout = make(dropout=0.0)
    np.testing.assert_array_equal(no_dropout(x, key=jax.random.key(0)), no_dropout(x))


def test_split_merge_under_jit():
    net = make(dropout=0.5)
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)
    assert jax.tree.leaves(rest) == []
    pure = nnx.to_pure_dict(params)

    @jax.jit
    def apply(pure, x, key):
        return nnx.merge(graphdef, pure, rest)(x, key=key)

    x = np.random.default_rng(0).standard_normal((4, 12), np.float32)
    np.testing.assert_allclose(apply(pure, x, None), net(x), rtol=1e-6)
    a = apply(pure, x, jax.random.key(1))
    np.testing.assert_array_equal(apply(pure, x, jax.random.key(1)), a)
    assert jnp.any(apply(pure, x, jax.random.key(2)) != a)
    # The merged network reads the given parameters.
    zeroed = jax.tree.map(jnp.zeros_like, pure)
    np.testing.assert_array_equal(apply(zeroed, x, None), jnp.zeros((4, 3)))


@pytest.mark.parametrize("shape", [(4, 11), (4, 3, 5), (12,)])
def test_wrong_input_shape_raises(shape):
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 12\).*got"):
        make()(jnp.ones(shape))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dropout": 1.0}, "rate"),
        ({"hidden": (8, 0)}, "positive ints"),
        ({"out_features": 0}, "positive ints"),
        ({"activation": "bogus"}, "unknown activation"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)

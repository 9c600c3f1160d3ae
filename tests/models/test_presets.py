import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bayesnn.models import CNN, MLP, Dropout, cifar_cnn, mnist_cnn, mnist_mlp


def n_params(net):
    return sum(p.size for p in jax.tree.leaves(nnx.state(net, nnx.Param)))


def test_mnist_mlp_is_the_keras_mlp():
    net = nnx.eval_shape(mnist_mlp)
    assert isinstance(net, MLP)
    assert n_params(net) == 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10 == 669_706
    assert net.dropout == Dropout(0.2)
    assert net.input_shape == (784,) and net.out_features == 10


def test_cifar_cnn_summary():
    net = nnx.eval_shape(cifar_cnn)
    assert isinstance(net, CNN)
    assert [shape for _, shape in net.summary()] == [
        (32, 32, 16),
        (16, 16, 16),
        (16, 16, 32),
        (8, 8, 32),
        (8, 8, 64),
        (4, 4, 64),
        (1024,),
        (500,),
        (10,),
    ]
    conv = [2 * 2 * c_in * c_out + c_out for c_in, c_out in [(3, 16), (16, 32), (32, 64)]]
    assert n_params(net) == sum(conv) + 1024 * 500 + 500 + 500 * 10 + 10


def test_cifar_cnn_dropout_and_classes():
    net = nnx.eval_shape(lambda: cifar_cnn(dropout=0.3, num_classes=4))
    names = [name for name, _ in net.summary()]
    assert names[6] == "dropout" and names[9] == "dropout_1"
    assert net.specs[6] == net.specs[9] == Dropout(0.3)
    assert net.output_shapes[-1] == (4,) and net.out_features == 4


@pytest.mark.parametrize(
    ("input_shape", "expected"),
    [
        ((28, 28, 1), [(28, 28, 32), (14, 14, 32), (14, 14, 64), (7, 7, 64), (3136,)]),
        ((8, 8, 1), [(8, 8, 32), (4, 4, 32), (4, 4, 64), (2, 2, 64), (256,)]),
    ],
)
def test_mnist_cnn_shapes(input_shape, expected):
    net = nnx.eval_shape(lambda: mnist_cnn(input_shape=input_shape, num_classes=7))
    assert net.output_shapes == (*expected, (128,), (7,))
    assert net.input_shape == input_shape and net.out_features == 7


def kernel(net):
    return net.layers[0].kernel[...]


def test_seed_and_rngs_control_initialisation():
    a, b = mnist_cnn(input_shape=(8, 8, 1)), mnist_cnn(input_shape=(8, 8, 1), seed=0)
    np.testing.assert_array_equal(kernel(a), kernel(b))
    c = mnist_cnn(input_shape=(8, 8, 1), seed=1)
    assert jnp.any(kernel(a) != kernel(c))
    d = mnist_cnn(input_shape=(8, 8, 1), rngs=nnx.Rngs(1))
    np.testing.assert_array_equal(kernel(c), kernel(d))


def test_digits_cnn_runs_under_jit():
    net = mnist_cnn(input_shape=(8, 8, 1), num_classes=10)
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)
    apply = jax.jit(lambda pure, x: nnx.merge(graphdef, pure, rest)(x))
    x = np.random.default_rng(0).uniform(size=(5, 8, 8, 1)).astype(np.float32)
    y = apply(nnx.to_pure_dict(params), x)
    assert y.shape == (5, 10) and jnp.all(jnp.isfinite(y))
    assert jnp.all(y[0] != y[1])  # distinct images give distinct logits

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import bayesnn as bnn
from bayesnn.data import Dataset
from bayesnn.inference.base import prepare_data
from bayesnn.inference.curvature import (
    curvature,
    jacobians,
    log_evidence,
    optimal_prior_precision,
)
from bayesnn.inference.laplace import select_subset
from bayesnn.models.layers import Conv2D, Dense, Flatten, MaxPooling2D
from bayesnn.testing import linear_model

NOISE = 0.5


def _classifier(num_classes=3, hidden=(5,), seed=0):
    net = bnn.models.MLP(2, hidden, num_classes, activation="tanh", rngs=nnx.Rngs(seed))
    return bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Categorical())


def _class_data(n=37, num_classes=3, key=0):
    rng = np.random.default_rng(key)
    return Dataset(rng.normal(size=(n, 2)).astype(np.float32),
                   rng.integers(0, num_classes, n))


@pytest.fixture(scope="module")
def clf():
    return _classifier(), _class_data()


@pytest.fixture(scope="module")
def reg():
    data = bnn.data.linear_regression(n=30, num_features=3, noise=NOISE, key=1)[0]
    return linear_model(3, 1.0, bnn.likelihoods.Gaussian(scale=NOISE)), data


def _curv(model, data, hessian, subset="all", **kwargs):
    data = prepare_data(model, data)
    sub = select_subset(model, model.init_position, subset, hessian, data.x)
    return sub, curvature(model, model.init_position, sub, data, hessian=hessian, **kwargs)


@pytest.mark.parametrize("kind", ["ggn", "ef"])
@pytest.mark.parametrize("hessian", ["full", "diag", "kron", "lowrank"])
def test_chunked_pass_equals_one_pass(hessian, kind, clf):
    model, data = clf
    key = jax.random.key(3)
    sub, whole = _curv(model, data, hessian, kind=kind, batch_size=1000, key=key, rank=8)
    _, chunked = _curv(model, data, hessian, kind=kind, batch_size=8, key=key, rank=8)
    np.testing.assert_allclose(chunked.dense(sub), whole.dense(sub), rtol=1e-4, atol=1e-5)


def test_full_ggn_of_linear_regression_is_xtx_over_noise_variance(reg):
    model, data = reg
    sub, curv = _curv(model, data, "full", batch_size=7)
    design = np.c_[data.x, np.ones(len(data.x))]
    # flat order is the leaf order: bias, then kernel
    design = np.c_[design[:, -1:], design[:, :-1]]
    assert sub.paths == ("layers/0/bias", "layers/0/kernel")
    np.testing.assert_allclose(curv.dense(sub), design.T @ design / NOISE**2, rtol=1e-4)


def test_ggn_is_the_exact_hessian_for_a_linear_softmax_model():
    model, data = _classifier(hidden=()), _class_data()
    sub, curv = _curv(model, data, "full", batch_size=10)
    pos = model.init_position

    def nll(v):
        net = sub.insert(pos["net"], v)
        return -model.loglikelihood_fn({"net": net, "lik": pos["lik"]},
                                       (jnp.asarray(data.x), jnp.asarray(data.y)))

    exact = jax.jit(jax.hessian(nll))(sub.ravel(pos["net"]))
    np.testing.assert_allclose(curv.dense(sub), exact, rtol=1e-4, atol=1e-5)


def test_empirical_fisher_is_the_sum_of_gradient_outer_products(clf):
    model, data = clf
    sub, curv = _curv(model, data, "full", kind="ef", batch_size=16)
    pos = model.init_position

    def ll(v, x, y):
        net = sub.insert(pos["net"], v)
        return model.log_prob_per_example({"net": net, "lik": pos["lik"]}, x[None], y[None])[0]

    g = jax.jit(jax.vmap(jax.grad(ll), (None, 0, 0)))(sub.ravel(pos["net"]), jnp.asarray(data.x),
                                           jnp.asarray(data.y))
    np.testing.assert_allclose(curv.dense(sub), g.T @ g, rtol=1e-4, atol=1e-5)


def test_diag_is_the_diagonal_of_full_and_full_rank_lowrank_is_full(clf):
    model, data = clf
    sub, full = _curv(model, data, "full")
    _, diag = _curv(model, data, "diag")
    _, low = _curv(model, data, "lowrank", key=jax.random.key(0), rank=sub.size)
    np.testing.assert_allclose(diag.eigvals, np.diag(full.dense(sub)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(low.dense(sub), full.dense(sub), rtol=1e-3, atol=1e-4)


def test_lowrank_keeps_the_top_eigenvalues(clf):
    model, data = clf
    sub, full = _curv(model, data, "full")
    _, low = _curv(model, data, "lowrank", key=jax.random.key(1), rank=4, power_iterations=3)
    top = np.sort(np.asarray(full.eigvals))[::-1][:4]
    np.testing.assert_allclose(np.sort(np.asarray(low.eigvals))[::-1], top, rtol=1e-2)


def test_kron_equals_full_for_one_dense_layer_with_one_gaussian_output(reg):
    model, data = reg
    sub, kron = _curv(model, data, "kron", batch_size=8)
    _, full = _curv(model, data, "full", batch_size=8)
    assert sub.layers == ("layers/0",)
    np.testing.assert_allclose(kron.dense(sub), full.dense(sub), rtol=1e-4, atol=1e-4)
    jac = jacobians(model, model.init_position, sub, jnp.asarray(data.x[:6]))
    eye = jnp.eye(sub.size)
    for delta in (0.3, 4.0):
        np.testing.assert_allclose(kron.jsj(sub, delta, jac), full.jsj(sub, delta, jac),
                                   rtol=1e-4, atol=1e-6)
        # the rows of sample(I) are a square root of (H + δI)^{-1}
        exact = np.linalg.inv(np.asarray(full.dense(sub)) + delta * np.eye(sub.size))
        for curv in (kron, full):
            root = np.asarray(curv.sample(sub, delta, eye))
            np.testing.assert_allclose(root.T @ root, exact, rtol=1e-4, atol=1e-6)


def test_kron_is_block_diagonal_over_layers(clf):
    model, data = clf
    sub, kron = _curv(model, data, "kron")
    dense = np.asarray(kron.dense(sub))
    hidden = [i for i, p in enumerate(sub.paths) if p.startswith("layers/0")]
    idx0 = np.concatenate([sub.offset(sub.paths[i]) + np.arange(np.prod(sub.shapes[i]))
                           for i in hidden])
    idx1 = np.setdiff1d(np.arange(sub.size), idx0)
    assert np.all(dense[np.ix_(idx0, idx1)] == 0)
    assert np.linalg.eigvalsh(dense).min() > -1e-5


def test_optimal_prior_precision_is_the_mackay_fixed_point_and_maximises_the_evidence():
    rng = np.random.default_rng(0)
    eigvals = np.concatenate([rng.gamma(1.0, 30.0, size=12), np.zeros(3)])
    sq_dist, num_params = 2.7, 15
    delta = optimal_prior_precision(sq_dist, eigvals)
    gamma = np.sum(eigvals / (eigvals + delta))  # effective number of parameters
    np.testing.assert_allclose(delta, gamma / sq_dist, rtol=1e-10)
    evidence = jax.jit(lambda d: log_evidence(0.0, sq_dist, num_params, eigvals, d))
    assert all(evidence(delta) >= evidence(delta * f) for f in (0.9, 0.99, 1.01, 1.1))
    # missing eigenvalues count as zeros
    np.testing.assert_allclose(log_evidence(0.0, sq_dist, num_params, eigvals[:12], delta),
                               evidence(delta), rtol=1e-6)


def _cnn(layers, input_shape, likelihood, seed=0):
    net = bnn.models.CNN(input_shape, layers, rngs=nnx.Rngs(seed))
    return bnn.BNN(net, bnn.priors.Normal(1.0), likelihood)


@pytest.mark.parametrize("conv, input_shape", [
    (Conv2D(1, (3, 2), padding="same"), (5, 4, 2)),  # one output channel, 20 positions
    (Conv2D(3, 2, strides=2), (5, 4, 2)),  # strided, 2×2 positions
    (Conv2D(2, 3), (3, 3, 2)),  # one position: the window covers the image
])
def test_kfc_equals_the_exact_ggn_where_its_assumptions_hold(conv, input_shape):
    # Outputs = the convolution's pre-activations, Gaussian likelihood: J_tᵀ Λ J_t' is I/σ²
    # for t = t' and 0 otherwise, so dropping cross-position terms and averaging the
    # derivative factor over positions (KFC) lose nothing.
    model = _cnn([conv, Flatten()], input_shape, bnn.likelihoods.Gaussian(scale=NOISE))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(23, *input_shape)).astype(np.float32)
    k = model.output_shape(x)[1]
    data = Dataset(x, rng.normal(size=(23, k)).astype(np.float32))
    sub, kron = _curv(model, data, "kron", batch_size=8)
    _, full = _curv(model, data, "full", batch_size=8)
    assert sub.layers == ("layers/0",)
    exact = np.asarray(full.dense(sub))
    np.testing.assert_allclose(kron.dense(sub), exact, atol=1e-5 * np.abs(exact).max())


@pytest.fixture(scope="module")
def cnn_clf():
    layers = [Conv2D(3, 3, padding="same", activation="relu"), MaxPooling2D(2), Flatten(),
              Dense(3)]
    rng = np.random.default_rng(1)
    data = Dataset(rng.normal(size=(50, 6, 6, 2)).astype(np.float32), rng.integers(0, 3, 50))
    return _cnn(layers, (6, 6, 2), bnn.likelihoods.Categorical()), data


def test_kfc_of_a_cnn_is_grosse_and_martens_formula(cnn_clf):
    # KFC of the conv layer of Conv-ReLU-MaxPool-Dense-softmax, against its formula written
    # out here: A = Σ_{n,t} ã ãᵀ / N from explicit patches, G = Σ_{n,t} J_tᵀ Λ J_t / T with
    # J_t the Jacobian of the outputs in the conv's pre-activations at pixel t.
    model, data = cnn_clf
    sub, kron = _curv(model, data, "kron")
    net = model.init_position["net"]["layers"]
    conv_w, conv_b = np.asarray(net[0]["kernel"]), np.asarray(net[0]["bias"])
    x = np.pad(np.asarray(data.x), ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = np.stack([x[:, i:i + 6, j:j + 6] for i in range(3) for j in range(3)], 3)
    a = np.concatenate([patches.reshape(50, 36, 18), np.ones((50, 36, 1))], -1)
    a_factor = np.einsum("nti,ntj->ij", a, a) / 50
    z = jnp.asarray(patches.reshape(50, 6, 6, 18) @ conv_w.reshape(18, 3) + conv_b)

    def head(z):  # relu, 2×2 max pool, flatten, dense: the network after the conv
        h = jax.nn.relu(z).reshape(3, 2, 3, 2, 3).max(axis=(1, 3)).reshape(-1)
        return h @ net[1]["kernel"] + net[1]["bias"]

    jac = jax.vmap(jax.jacobian(head))(z).reshape(50, 3, 36, 3)  # (n, k, t, out)
    p = jax.nn.softmax(jax.vmap(head)(z))
    lam = jax.vmap(jnp.diag)(p) - p[:, :, None] * p[:, None, :]
    g_factor = np.einsum("nkto,nkl,nltp->op", jac, lam, jac) / 36
    idx = sub.blocks()[0].ravel()
    expected = np.kron(a_factor, g_factor)
    np.testing.assert_allclose(np.asarray(kron.dense(sub))[np.ix_(idx, idx)], expected,
                               rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    # Here pixels interact (a Dense head on every pixel), so the cross-position terms KFC
    # drops are not small (relative Frobenius error of the block 0.77 at these weights),
    # but the curvature's size is kept: its trace within 15% of the exact block's (1.08×).
    _, full = _curv(model, data, "full")
    assert np.trace(expected) == pytest.approx(
        np.trace(np.asarray(full.dense(sub))[np.ix_(idx, idx)]), rel=0.15)


@pytest.mark.parametrize("kind", ["ggn", "ef"])
def test_chunked_kfc_equals_one_pass(kind, cnn_clf):
    model, data = cnn_clf
    sub, whole = _curv(model, data, "kron", kind=kind, batch_size=1000)
    _, chunked = _curv(model, data, "kron", kind=kind, batch_size=7)
    assert sub.layers == ("layers/0", "layers/1")
    np.testing.assert_allclose(chunked.dense(sub), whole.dense(sub), rtol=1e-4, atol=1e-5)

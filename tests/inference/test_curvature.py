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

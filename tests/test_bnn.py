import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from flax import nnx
from numpyro.infer.util import log_density

import bayesnn as bnn
from bayesnn.bnn import Batch


@pytest.fixture
def model():
    net = bnn.models.MLP(3, (8,), 1, rngs=nnx.Rngs(0))
    return bnn.BNN(net, bnn.priors.Normal(0.7), bnn.likelihoods.Gaussian(scale=0.3))


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    return x, (x[:, :1] ** 2 + 0.1 * rng.normal(size=(40, 1))).astype(np.float32)


def test_position_holds_network_and_likelihood_params(model):
    assert set(model.init_position) == {"net", "lik"}
    assert model.init_position["net"]["layers"][0]["kernel"].shape == (3, 8)
    assert model.init_position["lik"] == {}


def test_full_batch_logdensity_is_prior_plus_likelihood(model, data):
    x, y = data
    pos = model.init_position
    f = model.apply(pos, x)
    expected = model.prior.log_prob(pos["net"]) + jax.scipy.stats.norm.logpdf(y, f, 0.3).sum()
    np.testing.assert_allclose(model.logdensity_fn(pos, (x, y), 40), expected, rtol=1e-5)


def test_minibatch_logdensity_averages_to_full_batch(model, data):
    x, y = data
    pos = model.init_position
    batches = bnn.data.epoch_batches(jax.random.key(1), 40, 8)
    estimates = [
        model.logdensity_fn(pos, Batch(x[i], y[i], m), 40)
        for i, m in zip(batches.indices, batches.mask, strict=True)
    ]
    assert len(set(np.round(estimates, 3))) > 1  # the estimates really vary
    np.testing.assert_allclose(np.mean(estimates), model.logdensity_fn(pos, (x, y), 40), rtol=1e-5)


def test_masked_rows_do_not_count(model, data):
    x, y = data
    pos = model.init_position
    mask = np.arange(10) < 6
    full = model.logdensity_fn(pos, (x[:6], y[:6]), 40)
    np.testing.assert_allclose(model.logdensity_fn(pos, Batch(x[:10], y[:10], mask), 40), full,
                               rtol=1e-6)


def test_temperature_divides_the_likelihood(data):
    x, y = data
    net = bnn.models.MLP(3, (8,), 1, rngs=nnx.Rngs(0))
    warm = bnn.BNN(net, likelihood=bnn.likelihoods.Gaussian(scale=0.3))
    cold = bnn.BNN(net, likelihood=bnn.likelihoods.Gaussian(scale=0.3, temperature=0.5))
    pos = warm.init_position
    np.testing.assert_allclose(
        cold.loglikelihood_fn(pos, (x, y)), 2 * warm.loglikelihood_fn(pos, (x, y)), rtol=1e-6
    )


@pytest.mark.parametrize("batch_size", [None, 10])
def test_numpyro_model_matches_logdensity(model, data, batch_size):
    x, y = data
    pos = model.init_position
    sites = {f"net/{k}": v for k, v in bnn.tree.flatten_paths(pos["net"]).items()}
    with numpyro.handlers.seed(rng_seed=0):
        lp, trace = log_density(model.numpyro_model, (x, y), {"batch_size": batch_size}, sites)
    if batch_size is None:
        np.testing.assert_allclose(lp, model.logdensity_fn(pos, (x, y), 40), rtol=1e-5)
    else:
        idx = trace["data"]["value"]
        np.testing.assert_allclose(lp, model.logdensity_fn(pos, (x[idx], y[idx]), 40), rtol=1e-5)


def test_numpyro_model_learned_noise_site(data):
    x, y = data
    net = bnn.models.MLP(3, (8,), 1, rngs=nnx.Rngs(0))
    model = bnn.BNN(net, likelihood=bnn.likelihoods.Gaussian(learn_scale=True))
    pos = model.init_position
    sites = {f"net/{k}": v for k, v in bnn.tree.flatten_paths(pos["net"]).items()}
    sites["lik/log_scale"] = pos["lik"]["log_scale"]
    lp, _ = log_density(model.numpyro_model, (x, y), {}, sites)
    np.testing.assert_allclose(lp, model.logdensity_fn(pos, (x, y), 40), rtol=1e-5)
    back = model.position_from_sites(sites)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), back, pos))


def test_point_estimate_weights_have_no_prior(data):
    x, y = data
    net = bnn.models.MLP(3, (8,), 1, rngs=nnx.Rngs(0))
    prior = bnn.priors.PerParameter({"layers/1/*": bnn.priors.Normal(1.0)})
    model = bnn.BNN(net, prior)
    assert model.bayesian_mask["net"]["layers"][0]["kernel"] is False
    pos = model.init_position
    expected = jax.scipy.stats.norm.logpdf(bnn.tree.flatten_paths(pos["net"])["layers/1/kernel"])
    expected = expected.sum() + jax.scipy.stats.norm.logpdf(pos["net"]["layers"][1]["bias"]).sum()
    np.testing.assert_allclose(model.logprior_fn(pos), expected, rtol=1e-6)


def test_init_params_draws_fresh_weights(model):
    a, b = model.init_params(jax.random.key(0)), model.init_params(jax.random.key(1))
    assert jax.tree.structure(a) == jax.tree.structure(model.init_position)
    assert not np.allclose(a["net"]["layers"][0]["kernel"], b["net"]["layers"][0]["kernel"])
    np.testing.assert_array_equal(a["net"]["layers"][0]["bias"], 0.0)


def test_bad_network_and_inputs(model):
    with pytest.raises(TypeError, match="nnx.Module"):
        bnn.BNN(lambda x: x)
    with pytest.raises(ValueError, match=r"per-example shape \(4,\).*expects \(3,\)"):
        bnn.bnn.prepare_inputs(model, np.zeros((5, 4)))


def test_frozen_weights_are_constants_outside_the_position(data):
    x, y = data
    net = bnn.models.MLP(3, (8,), 1, rngs=nnx.Rngs(0))
    full = bnn.BNN(net)
    frozen = bnn.BNN(net, frozen=["layers/0/*"])
    assert set(bnn.tree.flatten_paths(frozen.init_position["net"])) == {
        "layers/1/kernel", "layers/1/bias"}
    np.testing.assert_array_equal(frozen.apply(frozen.init_position, x),
                                  full.apply(full.init_position, x))
    grads = jax.grad(frozen.logdensity_fn)(frozen.init_position, (x, y), 40)
    assert set(bnn.tree.flatten_paths(grads["net"])) == {"layers/1/kernel", "layers/1/bias"}
    back = bnn.BNN.from_state(frozen.to_state())
    assert back.frozen == ("layers/0/*",)
    np.testing.assert_array_equal(back.apply(back.init_position, x),
                                  frozen.apply(frozen.init_position, x))
    with pytest.raises(ValueError, match="matches no parameter"):
        bnn.BNN(net, frozen=["body/*"])
    with pytest.raises(ValueError, match="nothing is left"):
        bnn.BNN(net, frozen=["*"])


def test_apply_dense_sees_a_convolution_as_a_dense_layer_on_its_patches():
    from bayesnn.models.layers import Conv2D, Dense, Flatten
    layers = [Conv2D(4, (3, 2), strides=(2, 1), padding="same", activation="relu"),
              Conv2D(2, 2), Flatten(), Dense(3)]
    model = bnn.BNN(bnn.models.CNN((7, 6, 3), layers, rngs=nnx.Rngs(0)))
    assert list(model.conv_layers()) == ["layers/0", "layers/1"]
    assert list(model.dense_layers()) == ["layers/2"]
    x = np.random.default_rng(0).normal(size=(5, 7, 6, 3)).astype(np.float32)
    pos = model.init_position
    seen = {}

    def tap(m):
        def matmul(h, w):
            seen[m] = h, w
            return h @ w
        return matmul

    out = model.apply_dense(pos, x, {m: tap(m) for m in ("layers/0", "layers/1", "layers/2")})
    np.testing.assert_allclose(out, model.apply(pos, x), rtol=1e-5, atol=1e-6)
    patches, kernel = seen["layers/0"]
    assert patches.shape == (5, 4, 6, 3 * 2 * 3) and kernel.shape == (18, 4)
    # the patch at output pixel (1, 2): input rows 1..3 ('same' pads one row on top),
    # columns 2..3, in the kernel's (row, column, channel) order
    np.testing.assert_array_equal(patches[:, 1, 2], x[:, 1:4, 2:4].reshape(5, -1))
    conv_kernel = np.asarray(pos["net"]["layers"][0]["kernel"])
    np.testing.assert_array_equal(kernel, conv_kernel.reshape(18, 4))
    assert seen["layers/2"][0].shape == (5, 3 * 5 * 2)  # a Dense layer's input as before


def test_apply_dense_taps_a_dilated_nnx_conv():
    class Net(nnx.Module):
        def __init__(self):
            self.conv = nnx.Conv(2, 3, (3, 3), kernel_dilation=2, padding="SAME",
                                 rngs=nnx.Rngs(1))

        def __call__(self, x):
            return self.conv(x).reshape(x.shape[0], -1)

    model = bnn.BNN(Net())
    x = np.random.default_rng(1).normal(size=(4, 6, 5, 2)).astype(np.float32)
    pos = model.init_position
    out = model.apply_dense(pos, x, {"conv": lambda h, w: h @ w})
    np.testing.assert_allclose(out, model.apply(pos, x), rtol=1e-5, atol=1e-5)
    doubled = model.apply_dense(pos, x, {"conv": lambda h, w: 2 * (h @ w)})
    bias = np.tile(np.asarray(pos["net"]["conv"]["bias"]), 6 * 5)
    np.testing.assert_allclose(doubled - bias, 2 * (out - bias), rtol=1e-4, atol=1e-5)

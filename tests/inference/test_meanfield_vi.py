"""MeanFieldVI (bayesnn/inference/meanfield_vi.py): its local-reparameterisation pieces,
analytic KL and closed-form posteriors."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest
from flax import nnx
from numpyro.distributions.kl import kl_divergence

import bayesnn as bnn
from bayesnn.bnn import Batch
from bayesnn.inference.meanfield_vi import local_reparam_loss, noisy_matmul, normal_kl
from bayesnn.testing import assert_gaussian_matches, linear_posterior


def _linear_model(d, noise, prior_scale=1.0):
    net = bnn.models.MLP(d, (), 1, rngs=nnx.Rngs(0))
    return bnn.BNN(net, bnn.priors.Normal(prior_scale), bnn.likelihoods.Gaussian(scale=noise))


def _centred_orthogonal(x):
    """Columns orthogonal to each other and to 1, with ``xᵀx = n I``."""
    n = len(x)
    return (np.sqrt(n) * np.linalg.qr(x - x.mean(0))[0]).astype(np.float32)


def _stack_linear(draws):
    """``(chain, draw, d + 1)`` samples of ``[w, b]`` from a linear network's draws."""
    layer = draws["net"]["layers"][0]
    return np.concatenate([layer["kernel"][..., 0], layer["bias"]], axis=-1)


def test_noisy_matmul_draws_the_preactivations_of_the_weight_noise():
    # Per example and unit: mean x μ and variance x² σ² + σ_b², whatever the inputs' scale.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3)).astype(np.float32) * np.float32([[1], [3], [0.1], [0]])
    mu = rng.normal(size=(3, 2)).astype(np.float32)
    kernel_var = rng.uniform(0.1, 1.0, size=(3, 2)).astype(np.float32)
    bias_var = np.float32([0.2, 0.5])
    draws = jax.jit(jax.vmap(
        lambda k: noisy_matmul(k, "layer", kernel_var, bias_var)(x, mu)
    ))(jax.random.split(jax.random.key(1), 40000))
    var = x**2 @ kernel_var + bias_var
    se = np.sqrt(var / len(draws))
    np.testing.assert_array_less(np.abs(draws.mean(0) - x @ mu), 5 * se)
    # The sample variance's standard error is var · sqrt(2 / n) for normals.
    np.testing.assert_allclose(draws.var(0), var, rtol=5 * np.sqrt(2 / len(draws)))
    # A point-estimate kernel and bias leave the product exact.
    np.testing.assert_allclose(noisy_matmul(jax.random.key(0), "layer")(x, mu), x @ mu,
                               rtol=1e-6, atol=1e-6)


def test_noisy_matmul_refuses_a_second_call():
    matmul = noisy_matmul(jax.random.key(0), "layers/1", np.ones((2, 2), np.float32))
    x = np.ones((3, 2), np.float32)
    matmul(x, x[:2])
    with pytest.raises(ValueError, match="'layers/1' is applied more than once"):
        matmul(x, x[:2])


def test_local_reparam_loss_is_an_unbiased_negative_elbo():
    # Linear-Gaussian model: E_q[log p(y | x, w, b)] is closed form, so the Monte Carlo
    # mean of the loss must match the exact negative ELBO.
    noise, prior_scale = 0.5, 2.0
    model = _linear_model(3, noise, prior_scale)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 3)).astype(np.float32)
    y = rng.normal(size=(10, 1)).astype(np.float32)
    mask = np.arange(10) < 7
    loc_w, loc_b = rng.normal(size=(3, 1)), rng.normal(size=1)
    sd_w, sd_b = rng.uniform(0.2, 0.8, size=(3, 1)), np.array([0.3])
    site = "net/layers/0/"
    f32 = partial(jnp.asarray, dtype=jnp.float32)
    loc = {site + "kernel": f32(loc_w), site + "bias": f32(loc_b)}
    log_scale = {site + "kernel": f32(np.log(sd_w)), site + "bias": f32(np.log(sd_b))}
    batch = Batch(x, y, mask)
    beta, scale = 0.7, 3.0
    losses = jax.jit(jax.vmap(
        lambda k: local_reparam_loss(model, k, loc, log_scale, {}, batch, beta, scale)
    ))(jax.random.split(jax.random.key(0), 20000))
    mean = x @ loc_w + loc_b
    var = x**2 @ sd_w**2 + sd_b**2
    expected_ll = -0.5 * np.log(2 * np.pi * noise**2) - ((y - mean) ** 2 + var) / (2 * noise**2)
    sd_all, loc_all = np.r_[sd_w[:, 0], sd_b], np.r_[loc_w[:, 0], loc_b]
    kl = np.sum(np.log(prior_scale / sd_all) + (sd_all**2 + loc_all**2) / (2 * prior_scale**2)
                - 0.5)
    exact = -(scale * expected_ll[mask].sum() - beta * kl)
    se = np.std(losses) / np.sqrt(len(losses))
    assert abs(np.mean(losses) - exact) < 4 * se, (np.mean(losses), exact, se)
    # The pre-activations are really random (a forgotten noise term would leave std 0).
    assert np.std(losses) > 1.0


def test_normal_kl_matches_numpyro():
    rng = np.random.default_rng(1)
    loc, log_scale = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)) - 1
    q = dist.Normal(loc, np.exp(log_scale))
    for prior in (dist.Normal(0.5, 2.0).expand((4, 3)), dist.Normal(rng.normal(size=3), 0.3)):
        np.testing.assert_allclose(normal_kl(loc, log_scale, prior),
                                   np.sum(kl_divergence(q, prior)), rtol=1e-5)


@pytest.mark.parametrize("local_reparam", [False, True])
def test_mean_field_matches_the_factorised_linear_posterior(local_reparam):
    data, _ = bnn.data.linear_regression(n=100, num_features=3, noise=0.5, key=0, orthogonal=True)
    x = _centred_orthogonal(data.x)
    mean, cov = linear_posterior(x, data.y, 1.0, 0.5)
    std = np.sqrt(np.diag(cov))
    # The centred orthogonal design decouples every coefficient, the bias included: the
    # exact posterior is a factorised Gaussian, so it is the mean-field ELBO's optimum.
    np.testing.assert_allclose(cov, np.diag(np.diag(cov)), atol=1e-8)

    method = bnn.MeanFieldVI(
        learning_rate=optax.exponential_decay(2e-2, 1000, 1e-2), epochs=500, batch_size=50,
        num_particles=8, num_samples=2000, local_reparam=local_reparam,
    )
    post = bnn.fit(_linear_model(3, 0.5), (x, data.y), method, key=0)
    assert (post.num_chains, post.num_draws) == (1, 2000)
    gp = post.info["guide_params"]
    loc = np.r_[gp["net/layers/0/kernel_auto_loc"][:, 0], gp["net/layers/0/bias_auto_loc"]]
    scale = np.r_[gp["net/layers/0/kernel_auto_scale"][:, 0], gp["net/layers/0/bias_auto_scale"]]
    # What is left is the stochastic optimiser's noise (minibatch and reparameterisation
    # gradients): over keys 0-4 it measured ≤ 0.04 posterior sd for the means and ≤ 3.5%
    # for the sds (local reparameterisation: ≤ 0.011 and ≤ 1.7%); the tolerances allow for
    # more. A wrong N/B likelihood scaling would put the sds off by a factor √2 (B = N/2).
    np.testing.assert_array_less(np.abs(loc - mean) / std, 0.15)
    np.testing.assert_array_less(np.abs(scale / std - 1), 0.06)
    # The draws are the guide's: ESS-scaled check against the exact posterior, widened by
    # the optimisation tolerance above.
    assert_gaussian_matches(_stack_linear(post.draws), mean, cov, bias=0.15)
    elbo = post.info["history"]["elbo"]
    assert len(elbo) == 500 and np.mean(elbo[-50:]) > elbo[0]


@pytest.mark.parametrize("local_reparam", [False, True])
def test_gap_toy_is_more_uncertain_in_the_gap(local_reparam):
    train = bnn.data.gap_regression(n=80, noise=0.1, key=0)
    net = bnn.models.MLP(1, (16, 16), 1, activation="tanh", rngs=nnx.Rngs(0))
    model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=0.1))
    method = bnn.MeanFieldVI(learning_rate=2e-2, epochs=100, batch_size=16, num_samples=100,
                             local_reparam=local_reparam)
    post = bnn.fit(model, train, method, key=0)
    grid = bnn.data.gap_regression_grid(121).x
    in_gap = grid[np.abs(grid[:, 0]) < 0.4]
    std = np.asarray(post.predict(np.concatenate([in_gap, train.x])).std)
    std_gap, std_data = float(np.mean(std[: len(in_gap)])), float(np.mean(std[len(in_gap):]))
    assert std_gap > 1.2 * std_data, (std_gap, std_data)
    assert post.info["steps_per_epoch"] == 5  # ceil(80 / 16)


def test_local_reparam_rejects_models_it_does_not_fit():
    net = bnn.models.MLP(2, (4,), 1, rngs=nnx.Rngs(0))
    check = bnn.MeanFieldVI.check_local_reparam
    check(bnn.BNN(net, bnn.priors.FanInNormal(1.0)))  # Dense layers, Gaussian prior: fine
    with pytest.raises(ValueError, match="closed-form KL from a Normal, .* Laplace"):
        check(bnn.BNN(net, bnn.priors.Laplace(1.0)))
    with pytest.raises(ValueError, match="likelihood without parameters"):
        check(bnn.BNN(net, likelihood=bnn.likelihoods.Gaussian(learn_scale=True)))
    with pytest.raises(ValueError, match="Dense .* layers only, but the prior covers 'conv/.*"
                                         "the network has no Dense layers"):
        check(bnn.BNN(_Conv()))
    # Dense layers wherever they sit in the module graph, not only an MLP's.
    check(bnn.BNN(_Twice()))
    frozen_head = bnn.BNN(_Dense(), bnn.priors.PerParameter({"head/*": bnn.priors.Normal(1.0)}))
    check(frozen_head)
    with pytest.raises(ValueError, match="layers only, but the prior covers 'conv/"):
        check(bnn.BNN(_Dense()))
    with pytest.raises(ValueError, match="closed form; use elbo='meanfield'"):
        bnn.MeanFieldVI(local_reparam=True, elbo="trace")


class _Conv(nnx.Module):
    """One 3x3 convolution on 3x3 images: a Bayesian weight outside any Dense layer."""

    def __init__(self):
        self.input_shape, self.out_features = (3, 3, 1), 1
        self.conv = nnx.Conv(1, 1, (3, 3), padding="VALID", rngs=nnx.Rngs(0))

    def __call__(self, x, *, key=None):
        return self.conv(x).reshape(x.shape[0], 1)


class _Dense(nnx.Module):
    """A convolution under a Dense head named ``head``."""

    def __init__(self):
        self.input_shape, self.out_features = (3, 3, 1), 1
        self.conv = nnx.Conv(1, 2, (3, 3), padding="VALID", rngs=nnx.Rngs(0))
        self.head = nnx.Linear(2, 1, rngs=nnx.Rngs(1))

    def __call__(self, x, *, key=None):
        return self.head(self.conv(x).reshape(x.shape[0], 2))


class _Twice(nnx.Module):
    """One Dense layer applied twice: its weights are shared by both applications."""

    def __init__(self):
        self.input_shape, self.out_features = (2,), 2
        self.layer = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

    def __call__(self, x, *, key=None):
        return self.layer(self.layer(x))


def test_local_reparam_rejects_a_layer_applied_twice(toy):
    model = bnn.BNN(_Twice(), likelihood=bnn.likelihoods.Gaussian(scale=0.1))
    y = np.concatenate([toy[1], toy[1]], axis=1)
    method = bnn.MeanFieldVI(epochs=1, batch_size=16, local_reparam=True)
    with pytest.raises(ValueError, match="'layer' is applied more than once"):
        bnn.fit(model, (toy[0], y), method, key=0)


def test_local_reparam_fits_a_dense_head_on_any_module():
    # The Dense layer is found by the model's view at its module path ("head"), under a
    # point-estimate convolution: a fit draws the head's weights and moves the convolution.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3, 3, 1)).astype(np.float32)
    y = x.sum((1, 2)).astype(np.float32)
    model = bnn.BNN(_Dense(), bnn.priors.PerParameter({"head/*": bnn.priors.Normal(1.0)}),
                    bnn.likelihoods.Gaussian(scale=0.5))
    method = bnn.MeanFieldVI(learning_rate=1e-2, epochs=5, batch_size=8, num_samples=16,
                             local_reparam=True)
    post = bnn.fit(model, (x, y), method, key=0)
    assert np.all(np.isfinite(post.info["history"]["elbo"]))
    head, conv = post.draws["net"]["head"], post.draws["net"]["conv"]
    assert np.all(np.std(head["kernel"][0], axis=0) > 0)
    assert np.all(conv["kernel"][0] == conv["kernel"][0, 0])
    assert not np.allclose(conv["kernel"][0, 0], model.init_position["net"]["conv"]["kernel"])

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest
from flax import nnx
from numpyro.distributions.kl import kl_divergence
from numpyro.infer.util import log_density

import bayesnn as bnn
from bayesnn.bnn import Batch
from bayesnn.inference.map import evaluate
from bayesnn.inference.vi import kl_weight, local_reparam_loss, normal_kl, weight_sites
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


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype(np.float32)
    y = (np.sin(x[:, :1]) + 0.1 * rng.normal(size=(64, 1))).astype(np.float32)
    return x, y


def test_kl_weight_rises_linearly():
    np.testing.assert_allclose(kl_weight(np.arange(6), 4), [0, 0.25, 0.5, 0.75, 1, 1])
    assert float(kl_weight(0, None)) == 1.0


def test_weight_sites_scales_prior_and_likelihood_apart():
    data, _ = bnn.data.linear_regression(n=20, num_features=2, key=0)
    model = _linear_model(2, 0.5)
    sites = {f"net/{k}": v for k, v in bnn.tree.flatten_paths(model.init_position["net"]).items()}
    args = (data.x, data.y)
    mask = np.arange(20) < 12
    weighted = weight_sites(model.numpyro_model, latent=0.3, observed=2.5, mask=mask)
    scaled, _ = log_density(weighted, args, {}, sites)
    prior = model.logprior_fn(model.init_position)
    ll = model.log_prob_per_example(model.init_position, data.x, data.y)
    np.testing.assert_allclose(scaled, 0.3 * prior + 2.5 * ll[:12].sum(), rtol=1e-5)


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


@pytest.mark.parametrize("local_reparam", [False, True])
def test_partially_bayesian_network_with_warmup_is_reproducible(toy, local_reparam):
    net = bnn.models.MLP(2, (8,), 1, rngs=nnx.Rngs(0))
    prior = bnn.priors.PerParameter({"layers/1/*": bnn.priors.Normal(1.0)})
    model = bnn.BNN(net, prior, bnn.likelihoods.Gaussian(scale=0.1))
    method = bnn.MeanFieldVI(learning_rate=1e-2, epochs=20, batch_size=16, num_samples=8,
                             kl_warmup=40, local_reparam=local_reparam)
    a = bnn.fit(model, toy, method, key=0)
    b = bnn.fit(model, toy, method, key=0)
    assert jax.tree.all(jax.tree.map(np.array_equal, a.draws, b.draws))
    assert a.info["history"] == b.info["history"]

    layers = a.draws["net"]["layers"]
    assert layers[0]["kernel"].shape == (1, 8, 2, 8)
    # Point estimates: the same in every draw, the fitted SVI parameter, moved from init.
    kernel0 = layers[0]["kernel"][0]
    assert np.all(kernel0 == kernel0[0])
    np.testing.assert_array_equal(kernel0[0], a.info["guide_params"]["net/layers/0/kernel"])
    assert not np.allclose(kernel0[0], model.init_position["net"]["layers"][0]["kernel"])
    # Bayesian weights vary across draws.
    assert np.all(np.std(layers[1]["kernel"][0], axis=0) > 0)
    # 4 steps per epoch: β = min(1, last step of the epoch / 40).
    np.testing.assert_allclose(a.info["history"]["beta"][:3], [3 / 40, 7 / 40, 11 / 40])
    assert a.info["history"]["beta"][-1] == 1.0


@pytest.mark.parametrize("local_reparam", [False, True])
def test_recorded_elbo_is_the_closed_form_beta_weighted_elbo(local_reparam):
    # The guide is frozen (learning rate 1e-12) at near-point masses (σ = 1e-4) on weights
    # that fit y exactly, so every step's loss is the exact negative ELBO with that step's
    # KL weight β_t = t / 6 and likelihood scale N / b_t: N = 20 rows in batches of 8, 8, 4
    # make each step's scaled log-likelihood N · log N(0 | 0, s²), if the partial batch is
    # scaled by N / 4 (N / 8 would take 10 off it).
    noise, sd = 0.1, 1e-4
    model = _linear_model(2, noise)
    x = np.random.default_rng(0).normal(size=(20, 2)).astype(np.float32)
    y = np.asarray(model.apply(model.init_position, x))
    method = bnn.MeanFieldVI(learning_rate=1e-12, epochs=3, batch_size=8, init_scale=sd,
                             kl_warmup=6, num_samples=1, local_reparam=local_reparam)
    post = bnn.fit(model, (x, y), method, key=0)

    mu = np.concatenate([np.ravel(a) for a in jax.tree.leaves(model.init_position["net"])])
    kl = np.sum(np.log(1 / sd) - 0.5 + (sd**2 + mu**2) / 2)  # KL(q ‖ N(0, 1)), ≈ 26
    loglik = -0.5 * np.log(2 * np.pi * noise**2) * len(x)  # ≈ 28; E_q adds ~1e-5
    beta = np.minimum(np.arange(9) / 6, 1).reshape(3, 3).mean(1)  # per epoch of 3 steps
    np.testing.assert_allclose(post.info["history"]["elbo"], loglik - beta * kl, atol=1e-3)


def test_fused_guide_noise_changes_no_number(toy, monkeypatch):
    """The guide's weight noise through ``prng.normal`` (``_FusedNoise``) is NumPyro's
    ``jax.random.normal`` noise from the same keys: the fit is bit for bit the same."""
    from bayesnn.inference import vi

    model = bnn.BNN(bnn.models.MLP(2, (8,), 1, rngs=nnx.Rngs(0)), bnn.priors.Normal(1.0),
                    bnn.likelihoods.Gaussian(scale=0.1))
    method = bnn.MeanFieldVI(learning_rate=1e-2, epochs=3, batch_size=16, num_samples=4)
    swapped = []
    process = vi._FusedNoise.process_message

    def spy(self, msg):
        process(self, msg)
        swapped.append(type(msg["fn"]).__name__)

    monkeypatch.setattr(vi._FusedNoise, "process_message", spy)
    fused = bnn.fit(model, toy, method, key=0)
    assert "_PrngNormal" in swapped  # the handler did take over the guide's draws
    monkeypatch.setattr(vi._FusedNoise, "process_message", lambda self, msg: None)
    plain = bnn.fit(model, toy, method, key=0)
    assert fused.info["history"] == plain.info["history"]
    assert jax.tree.all(jax.tree.map(np.array_equal, fused.draws, plain.draws))


def test_map_initialisation(toy):
    model = bnn.BNN(bnn.models.MLP(2, (8,), 1, rngs=nnx.Rngs(0)),
                    likelihood=bnn.likelihoods.Gaussian(scale=0.1))
    method = bnn.MeanFieldVI(
        init="map", map_config=bnn.MAP(learning_rate=1e-2, epochs=30, batch_size=16),
        learning_rate=1e-9, epochs=1, batch_size=32, num_samples=4,
    )
    post = bnn.fit(model, toy, method, key=0)
    start = post.info["init_position"]
    assert len(post.info["map_info"]["history"]["loss"]) == 30
    assert evaluate(model, start, *toy)["nll"] < evaluate(model, model.init_position, *toy)["nll"]
    # One step at a negligible learning rate: the guide means are still the MAP weights.
    np.testing.assert_allclose(post.info["guide_params"]["net/layers/0/kernel_auto_loc"],
                               start["net"]["layers"][0]["kernel"], atol=1e-6)


def test_augment_is_applied_to_every_minibatch():
    # The label says on which side of a 4x4 image the bright pixel is: a left-right flip
    # turns every image into one of the other class. Every pixel position is equally often
    # of either class, so flipping half the images at random leaves the labels
    # uninformative and the fitted classifier must be unsure; without augmentation the
    # same fit is confident.
    i = np.arange(64)
    y = (i // 4) % 2
    x = np.zeros((64, 4, 4, 1), np.float32)
    x[i, i % 4, 3 * y, 0] = 1.0
    model = bnn.BNN(bnn.models.MLP(16, (), 1, rngs=nnx.Rngs(0)), bnn.priors.Normal(3.0),
                    bnn.likelihoods.Bernoulli())
    flip = bnn.data.Augment(horizontal_flip=True)
    confidence = {}
    for augment in (None, flip):
        method = bnn.MeanFieldVI(learning_rate=5e-2, epochs=30, batch_size=16, num_samples=32,
                                 augment=augment)
        probs = np.asarray(bnn.fit(model, (x, y), method, key=0).predict(x).probs)[:, 1]
        confidence[augment] = np.mean(np.abs(probs - 0.5))
    assert confidence[None] > 0.3, confidence
    assert confidence[flip] < 0.1, confidence


def test_local_reparam_rejects_models_it_does_not_fit():
    net = bnn.models.MLP(2, (4,), 1, rngs=nnx.Rngs(0))
    check = bnn.MeanFieldVI.check_local_reparam
    check(bnn.BNN(net, bnn.priors.FanInNormal(1.0)))  # Dense layers, Gaussian prior: fine
    with pytest.raises(ValueError, match="closed-form KL from a Normal, .* Laplace"):
        check(bnn.BNN(net, bnn.priors.Laplace(1.0)))
    with pytest.raises(ValueError, match="likelihood without parameters"):
        check(bnn.BNN(net, likelihood=bnn.likelihoods.Gaussian(learn_scale=True)))
    with pytest.raises(ValueError, match="Dense .* layers only, but the prior covers 'conv/"):
        check(bnn.BNN(_Conv()))
    with pytest.raises(ValueError, match="closed form; use elbo='meanfield'"):
        bnn.MeanFieldVI(local_reparam=True, elbo="trace")


class _Conv(nnx.Module):
    """One 3x3 convolution on 3x3 images: a Bayesian weight outside any Dense layer."""

    def __init__(self):
        self.input_shape, self.out_features = (3, 3, 1), 1
        self.conv = nnx.Conv(1, 1, (3, 3), padding="VALID", rngs=nnx.Rngs(0))

    def __call__(self, x, *, key=None):
        return self.conv(x).reshape(x.shape[0], 1)


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


def test_low_rank_vi_recovers_a_correlated_posterior():
    # Correlated, uncentred features: the exact posterior of [w1, w2, b] has correlations
    # -0.91 and -0.22, which a rank-3 guide over 3 coordinates can represent exactly.
    rng = np.random.default_rng(0)
    z = rng.normal(size=(40, 1))
    x = (np.c_[z, z + 0.3 * rng.normal(size=(40, 1))] + 1.0).astype(np.float32)
    y = (x @ [[1.0], [-0.5]] + 0.3 + 0.5 * rng.normal(size=(40, 1))).astype(np.float32)
    mean, cov = linear_posterior(x, y, 1.0, 0.5)
    method = bnn.LowRankVI(rank=3, elbo="trace", learning_rate=optax.exponential_decay(
        0.1, 2000, 1e-2), epochs=2000, batch_size=None, num_particles=64, num_samples=4000)
    post = bnn.fit(_linear_model(2, 0.5), (x, y), method, key=0)
    assert (post.num_chains, post.num_draws) == (1, 4000)
    assert post.info["guide_params"]["auto_cov_factor"].shape == (3, 3)
    # Independent draws; the optimiser's noise left whitened errors ≤ 0.04 (mean), 0.08
    # (variance) and 0.04 (correlation) over keys 0-6. A guide without its factor would
    # miss the -0.91 correlation entirely.
    assert_gaussian_matches(_stack_linear(post.draws), mean, cov, bias=0.05)


def test_divergence_raises_a_clear_error():
    data, _ = bnn.data.linear_regression(n=20, num_features=2, key=0)
    method = bnn.MeanFieldVI(optimizer="sgd", learning_rate=1e8, epochs=5, batch_size=None)
    with pytest.raises(bnn.NonFiniteError, match="MeanFieldVI: .* at step [0-9]+"):
        bnn.fit(_linear_model(2, 0.01), data, method, key=0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"optimizer": "adamw2"}, ValueError, "unknown optimizer 'adamw2'"),
        ({"epochs": 0}, ValueError, "epochs must be > 0"),
        ({"num_samples": 2.5}, TypeError, "num_samples must be an int"),
        ({"num_particles": 0}, ValueError, "num_particles must be > 0"),
        ({"init_scale": 0.0}, ValueError, "init_scale must be > 0"),
        ({"kl_warmup": -1}, ValueError, "kl_warmup must be > 0"),
        ({"learning_rate": -1.0}, ValueError, "learning_rate must be > 0"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive int"),
        ({"batch_size": 8.0}, TypeError, "batch_size must be a positive int"),
        ({"elbo": "renyi"}, ValueError, "unknown elbo 'renyi'"),
        ({"init": "zeros"}, ValueError, "init must be 'network' or 'map'"),
        ({"map_config": "adam"}, TypeError, "map_config must be a bayesnn.MAP"),
        ({"augment": "flip"}, TypeError, "augment must be a bayesnn.data.Augment"),
        ({"local_reparam": 1}, TypeError, "local_reparam must be a bool"),
    ],
)
def test_bad_configuration(kwargs, error, match):
    with pytest.raises(error, match=match):
        bnn.MeanFieldVI(**kwargs)


def test_bad_rank():
    with pytest.raises(ValueError, match="rank must be > 0"):
        bnn.LowRankVI(rank=0)


def test_batch_larger_than_data(toy):
    model = _linear_model(2, 0.1)
    with pytest.raises(ValueError, match=r"batch_size \(512\) is larger than the dataset"):
        bnn.fit(model, toy, bnn.MeanFieldVI(batch_size=512, epochs=1), key=0)


@pytest.mark.slow
def test_cnn_preset_on_digits():
    digits = bnn.data.load_digits()
    x, y = digits.x[:256], digits.y[:256]
    net = bnn.models.mnist_cnn(input_shape=(8, 8, 1))
    model = bnn.BNN(net, bnn.priors.FanInNormal(1.0), bnn.likelihoods.Categorical())
    method = bnn.MeanFieldVI(learning_rate=1e-3, epochs=3, batch_size=64, num_samples=8)
    post = bnn.fit(model, (x, y), method, key=0)
    assert (post.num_chains, post.num_draws) == (1, 8)
    probs = post.predict(digits.x[256:320]).probs
    assert probs.shape == (64, 10) and np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_mnist_mlp_preset(shared_data):
    train, test = bnn.data.load_mnist(shared_data / "mnist" / "mnist.npz")
    model = bnn.BNN(bnn.models.mnist_mlp(), bnn.priors.Normal(1.0), bnn.likelihoods.Categorical())
    method = bnn.MeanFieldVI(learning_rate=1e-3, epochs=2, batch_size=128, num_samples=8)
    post = bnn.fit(model, (train.x[:4096], train.y[:4096]), method, key=0)
    assert post.draws["net"]["layers"][0]["kernel"].shape == (1, 8, 784, 512)
    elbo = post.info["history"]["elbo"]
    assert elbo[1] > elbo[0]
    accuracy = np.mean(np.argmax(post.predict(test.x[:1000]).probs, -1) == test.y[:1000])
    assert accuracy > 0.8, accuracy

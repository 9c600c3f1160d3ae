import jax
import numpy as np
import pytest
from flax import nnx

import bayesnn as bnn
from bayesnn.arviz import rhat
from bayesnn.bnn import Batch
from bayesnn.inference.init import initial_positions
from bayesnn.testing import (
    assert_gaussian_matches,
    linear_model,
    linear_posterior,
    linear_weights,
)

PRIOR, NOISE = 0.7, 0.5  # a prior scale other than 1 tells a variance from a std
STATS = {"step_size", "acceptance_rate", "diverging", "n_steps", "energy", "lp"}


def _model(likelihood=None):
    return linear_model(3, PRIOR, likelihood or bnn.likelihoods.Gaussian(scale=NOISE))


@pytest.fixture(scope="module")
def linear():
    return bnn.data.linear_regression(n=40, num_features=3, noise=NOISE, key=0)[0]


@pytest.fixture(scope="module")
def nuts(linear):
    method = bnn.NUTS(num_warmup=200, num_samples=400, num_chains=2, init="random",
                      chain_method="sequential")
    return bnn.fit(_model(), linear, method, key=0)


def test_nuts_recovers_the_linear_posterior(nuts, linear):
    mean, cov = linear_posterior(linear.x, linear.y, PRIOR, NOISE)
    assert_gaussian_matches(linear_weights(nuts.draws), mean, cov, min_ess=200)
    pred = nuts.predict(linear.x)
    np.testing.assert_allclose(pred.mean[:, 0], np.c_[linear.x, np.ones(40)] @ mean, atol=0.05)


def test_chains_differ_and_mix(nuts):
    w = linear_weights(nuts.draws)
    assert w.shape == (2, 400, 4) and (nuts.num_chains, nuts.num_draws) == (2, 400)
    assert not np.allclose(w[0], w[1])
    assert np.all(rhat(w) < 1.02), rhat(w)


def test_sample_stats(nuts, linear):
    stats = nuts.info["sample_stats"]
    assert set(stats) == STATS | {"tree_depth"}
    assert all(v.shape == (2, 400) for v in stats.values())
    assert nuts.info["num_divergent"] == 0 and not stats["diverging"].any()
    assert 0.6 < stats["acceptance_rate"].mean() <= 1.0
    assert np.all(np.ptp(stats["step_size"], axis=1) == 0)  # adapted in warmup, then fixed
    assert np.all((stats["tree_depth"] >= 1) & (stats["tree_depth"] <= 10))
    assert np.all(2 ** (stats["tree_depth"] - 1) <= stats["n_steps"])
    assert np.all(stats["energy"] >= -stats["lp"])  # H = U + kinetic energy ≥ U
    # lp is the log joint density of each draw (unconstrained = constrained here)
    pos = jax.tree.map(lambda a: a[1, :3], nuts.draws)
    lp = jax.vmap(lambda p: nuts.model.logdensity_fn(p, Batch(linear.x, linear.y), 40))(pos)
    np.testing.assert_allclose(stats["lp"][1, :3], lp, rtol=1e-4)
    assert nuts.info["seconds"] > 0 and nuts.info["interrupted"] is False


def test_learned_noise_scale_and_same_key_same_draws(linear):
    model = _model(bnn.likelihoods.Gaussian(scale=1.0, learn_scale=True))
    # num_samples counts the draws kept after thinning: 400 steps, 200 draws
    method = bnn.NUTS(num_warmup=200, num_samples=200, thinning=2, init="prior")
    post, again = (bnn.fit(model, linear, method, key=1) for _ in range(2))
    for a, b in zip(jax.tree.leaves(post.draws), jax.tree.leaves(again.draws), strict=True):
        np.testing.assert_array_equal(a, b)
    sigma = np.exp(np.asarray(post.draws["lik"]["log_scale"]))
    assert sigma.shape == (1, 200)
    assert all(v.shape == (1, 200) for v in post.info["sample_stats"].values())
    assert 0.35 < np.mean(sigma) < 0.7, np.mean(sigma)  # data noise 0.5, 40 points
    assert post.info["num_divergent"] == 0
    assert 0.6 < post.info["sample_stats"]["acceptance_rate"].mean() <= 1.0
    mean, _ = linear_posterior(linear.x, linear.y, PRIOR, NOISE)
    np.testing.assert_allclose(linear_weights(post.draws).mean((0, 1)), mean, atol=0.1)


def test_hmc_from_map_keeps_point_estimates_at_their_map_values(linear):
    # A partially Bayesian model: the bias has no prior, so it is a point estimate.
    prior = bnn.priors.PerParameter({"*/kernel": bnn.priors.Normal(PRIOR)})
    model = bnn.BNN(bnn.models.MLP(3, (), 1, rngs=nnx.Rngs(0)), prior,
                    bnn.likelihoods.Gaussian(scale=NOISE))
    start = bnn.MAP(learning_rate=0.05, epochs=100, batch_size=None)
    method = bnn.HMC(num_steps=2, num_warmup=200, num_samples=400, init=start)
    post = bnn.fit(model, linear, method, key=0)
    stats = post.info["sample_stats"]
    assert set(stats) == STATS and np.all(stats["n_steps"] == 2)
    assert len(post.info["map_info"]["history"]["loss"]) == 100
    bias = np.asarray(post.draws["net"]["layers"][0]["bias"])
    assert bias.shape == (1, 400, 1) and np.all(bias == bias[0, 0]) and bias[0, 0, 0] != 0
    # The kernel's posterior given the bias is Gaussian in closed form.
    mean, cov = linear_posterior(linear.x, linear.y - bias[0, 0], PRIOR, NOISE, bias=False)
    assert_gaussian_matches(np.asarray(post.draws["net"]["layers"][0]["kernel"])[..., 0],
                            mean, cov)


def test_divergences_are_reported(linear):
    method = bnn.HMC(step_size=3.0, num_steps=10, adapt_step_size=False, num_warmup=0,
                     num_samples=10)
    with pytest.warns(UserWarning, match="divergent transitions"):
        post = bnn.fit(_model(), linear, method, key=0)
    assert post.info["num_divergent"] == post.info["sample_stats"]["diverging"].sum() > 0


@pytest.mark.parametrize("key", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_thinning_keeps_every_thinning_th_step(linear, key):
    kw = dict(num_steps=3, num_warmup=50, num_chains=2, init="random")
    thinned = bnn.fit(_model(), linear, bnn.HMC(num_samples=20, thinning=3, **kw), key=key)
    every = bnn.fit(_model(), linear, bnn.HMC(num_samples=60, **kw), key=key)
    assert thinned.num_draws == 20
    # the same chains (another program: equal up to rounding)
    np.testing.assert_allclose(linear_weights(thinned.draws),
                               linear_weights(every.draws)[:, 2::3], rtol=1e-4, atol=1e-5)


def test_initial_positions(linear):
    model, key = _model(), jax.random.key(0)
    same, info = initial_positions(key, model, linear, "network", 3)
    assert info is None
    for leaf, ref in zip(jax.tree.leaves(same), jax.tree.leaves(model.init_position),
                         strict=True):
        np.testing.assert_array_equal(leaf, np.broadcast_to(ref, (3, *np.shape(ref))))
    fresh, _ = initial_positions(key, model, linear, "random", 3)
    kernels = np.asarray(fresh["net"]["layers"][0]["kernel"])
    assert kernels.shape == (3, 3, 1) and not np.allclose(kernels[0], kernels[1])
    latent, params = model.sites(model.init_position)
    assert set(latent) == {"net/layers/0/kernel", "net/layers/0/bias"} and params == {}


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_samples": 0}, ValueError, "num_samples must be an int >= 1"),
        ({"num_warmup": -1}, ValueError, "num_warmup must be an int >= 0"),
        ({"num_chains": 1.5}, TypeError, "num_chains must be an int"),
        ({"thinning": 0}, ValueError, "thinning must be an int >= 1"),
        ({"target_accept_prob": 1.0}, ValueError, r"target_accept_prob must be in \(0, 1\)"),
        ({"max_tree_depth": 0}, ValueError, "max_tree_depth must be > 0"),
        ({"init": "zeros"}, ValueError, "init must be one of"),
        ({"chain_method": "pmap"}, ValueError, "chain_method must be one of"),
        ({"batch_size": 32}, TypeError, "batch_size"),
    ],
)
def test_bad_nuts_configuration(kwargs, error, match):
    with pytest.raises(error, match=match):
        bnn.NUTS(**kwargs)


def test_bad_hmc_configuration_and_checkpoint(linear, tmp_path):
    with pytest.raises(ValueError, match="step_size must be > 0"):
        bnn.HMC(step_size=-0.1)
    with pytest.raises(TypeError, match="num_steps must be an int"):
        bnn.HMC(num_steps=2.5)
    with pytest.raises(ValueError, match="cannot checkpoint"):
        bnn.fit(_model(), linear, bnn.NUTS(), key=0, checkpoint=tmp_path / "run.ckpt")


@pytest.mark.slow
def test_vectorized_chains_and_thinning(linear):
    method = bnn.NUTS(num_warmup=500, num_samples=500, num_chains=4, thinning=2)
    post = bnn.fit(_model(), linear, method, key=3)
    assert (post.num_chains, post.num_draws) == (4, 500)
    mean, cov = linear_posterior(linear.x, linear.y, PRIOR, NOISE)
    assert_gaussian_matches(linear_weights(post.draws), mean, cov)
    assert np.all(rhat(linear_weights(post.draws)) < 1.01)


@pytest.mark.slow
def test_nuts_bnn_is_uncertain_in_the_gap():
    train = bnn.data.gap_regression(n=40, noise=0.1, key=0)
    net = bnn.models.MLP(1, (16,), 1, activation="tanh", rngs=nnx.Rngs(0))
    model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=0.1))
    post = bnn.fit(model, train, bnn.NUTS(num_warmup=300, num_samples=300, init="map"), key=0)
    grid = bnn.data.gap_regression_grid(61)
    pred = post.predict(grid.x)
    x = grid.x[:, 0]
    data_region = (np.abs(x) > 0.6) & (np.abs(x) < 1.4)
    assert np.sqrt(np.mean((pred.mean[data_region] - grid.y[data_region]) ** 2)) < 0.15
    assert pred.epistemic_std[np.abs(x) < 0.2].mean() > 2 * pred.epistemic_std[data_region].mean()

"""SG-MCMC with hyperparameter Gibbs updates (``hyper=Hierarchical(...)``)."""

import jax
import numpy as np
import pytest

import bayesnn as bnn
from bayesnn.inference import PSGLD, SGHMC, SGLD
from bayesnn.inference.hyper import GammaPrecision, Hierarchical
from bayesnn.testing import assert_hyper_matches, hyper_posterior, linear_model

HIER = Hierarchical(GammaPrecision(alpha=2.0, scale=1.0), noise=GammaPrecision(2.0, 0.5))


@pytest.fixture(scope="module")
def linear():
    """Bayesian linear regression, N = 40, 2 features and a bias in one precision group."""
    data, _ = bnn.data.linear_regression(n=40, num_features=2, noise=0.5, key=0,
                                         orthogonal=True)
    lik = bnn.likelihoods.Gaussian(scale=0.5, learn_scale=True)
    return linear_model(2, 1.0, lik), data


@pytest.mark.parametrize("key", range(3))
def test_sgld_precision_draws_match_the_closed_form_hyper_posterior(linear, key):
    model, data = linear
    exact = hyper_posterior(np.asarray(data.x), np.asarray(data.y), HIER.weights, HIER.noise)
    # Posterior precision of the weights ≈ N τ_n ≈ 200: ε λ ≈ 0.02 keeps the Euler bias small.
    # The noise precision settles slowly from a random start: after 500 warm-up steps some
    # keys' chains had not (noise ESS ~100 of 2000 draws), after 2000 every key's has (> 900).
    method = SGLD(1e-4, batch_size=10, num_chains=4, num_warmup=2000, num_samples=500,
                  thinning=8, hyper=HIER)
    post = bnn.fit(model, data, method, key=key)
    tau = post.info["hyperparameters"]
    assert set(tau) == {"layers/0", "noise"} and tau["noise"].shape == (4, 500)
    assert_hyper_matches(tau, exact, min_ess=300)
    # the position carries the sampled noise std, for predictions
    np.testing.assert_allclose(post.draws["lik"]["log_scale"], -0.5 * np.log(tau["noise"]),
                               rtol=1e-5)


def test_sghmc_redraws_the_precisions_once_per_epoch(linear):
    model, data = linear
    config = SGHMC(1e-4, batch_size=10, num_warmup=0, num_samples=12, thinning=1,
                   num_chains=2, hyper=HIER)
    post = bnn.fit(model, data, config, key=1)
    tau = np.asarray(post.info["hyperparameters"]["layers/0"])
    # 4 batches per epoch: draws 0-2 hold the prior mean ω⁻² = 1, the epoch's last step
    # redraws the precisions (draws 3, 7, 11), which then hold for the next epoch.
    np.testing.assert_array_equal(tau[:, :3], 1.0)
    changed = np.diff(tau, axis=1) != 0
    assert changed[:, [2, 6, 10]].all() and not changed[:, [0, 1, 3, 4, 5, 7, 8, 9]].any()
    assert (tau[0] != tau[1]).any()  # each chain draws its own
    # between updates the noise std stays at the last drawn noise precision's
    noise = np.asarray(post.info["hyperparameters"]["noise"])
    np.testing.assert_allclose(post.draws["lik"]["log_scale"], -0.5 * np.log(noise), rtol=1e-5)


def test_hyper_validation(linear):
    model, data = linear
    for method in (SGLD, PSGLD, SGHMC):
        with pytest.raises(TypeError, match="hyper must be a bayesnn.Hierarchical"):
            method(1e-4, hyper=GammaPrecision())
    fixed = bnn.BNN(model.network(), bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(0.5))
    with pytest.raises(ValueError, match="learn_scale=True"):
        bnn.fit(fixed, data, SGLD(1e-4, num_samples=2, num_warmup=0, hyper=HIER), key=0)
    # weight precisions only; with the full batch every step ends an epoch
    weights_only = SGLD(1e-4, batch_size=None, num_samples=3, num_warmup=0, thinning=1,
                        hyper=Hierarchical())
    post = bnn.fit(fixed, data, weights_only, key=0)
    tau = np.asarray(post.info["hyperparameters"]["layers/0"])
    assert set(post.info["hyperparameters"]) == {"layers/0"} and post.draws["lik"] == {}
    assert (np.diff(tau[0]) != 0).all() and (tau != 1.0).all()


def test_hierarchical_logdensity_swaps_the_weight_prior(linear):
    model, data = linear
    position = model.init_params(jax.random.key(0))
    tau = {"layers/0": 3.0, "noise": 4.0}
    batch = bnn.bnn.Batch(data.x[:10], data.y[:10])
    want = (HIER.logprior_fn(model, position, tau)
            + model.likelihood.log_prior(position["lik"])
            + 4 * model.loglikelihood_fn(position, batch))
    np.testing.assert_allclose(HIER.logdensity_fn(model, position, tau, batch, 40), want,
                               rtol=1e-5)

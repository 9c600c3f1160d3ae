"""SG-MCMC out of the box: step sizes from the curvature, back-off, warnings, budgets, starts."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import bayesnn as bnn
from bayesnn.bnn import Batch
from bayesnn.inference import sgld as sgld_module
from bayesnn.inference.init import MIN_INIT_STEPS, ensemble_init_map, initial_positions
from bayesnn.inference.sghmc import SGHMC
from bayesnn.inference.sgld import SGLD, STEP_CURVATURE
from bayesnn.inference.sgmcmc import MIN_THINNING, MIN_WARMUP, WARMUP_EPOCHS, _drift_warnings
from bayesnn.testing import assert_gaussian_matches, linear_model, linear_posterior, linear_weights

NOISE, PRIOR = 0.5, 0.7


def _preconditioned_curvature(post, cov) -> np.ndarray:
    """Each chain's largest eigenvalue of ``G^½ H G^½``, ``H`` the posterior precision and
    ``G`` the adapted preconditioner of the run (``[w, b]`` order)."""
    root = np.sqrt(linear_weights(post.info["preconditioner"]).astype(np.float64))
    precision = np.linalg.inv(cov)
    return np.array([np.linalg.eigvalsh(g[:, None] * precision * g[None, :]).max()
                     for g in root])


def _linear(scale: float = 1.0):
    data, _ = bnn.data.linear_regression(n=100, num_features=2, noise=NOISE, key=0,
                                         orthogonal=True)
    data = bnn.data.Dataset(data.x * np.float32(scale), data.y)
    mean, cov = linear_posterior(data.x, data.y, PRIOR, NOISE)
    model = linear_model(2, PRIOR, bnn.likelihoods.Gaussian(scale=NOISE))
    return model, data, mean, cov, np.linalg.eigvalsh(np.linalg.inv(cov)).max()


def _rule(method, config) -> float:
    """ε λ of the step-size rule: SGLD's constant (stable below 4); SGHMC's sets
    η λ / (2 α) = SGLD's ε λ / 4 (stable below 2 (2 − α))."""
    return STEP_CURVATURE if method is SGLD else STEP_CURVATURE / 4 * 2 * config.alpha


@pytest.mark.parametrize("method", [SGLD, SGHMC], ids=["SGLD", "SGHMC"])
@pytest.mark.parametrize("scale", [1e-2, 1e-1, 1.0, 1e1, 1e2])
def test_the_chosen_step_size_follows_the_curvature_over_orders_of_magnitude(method, scale):
    """Inputs scaled by 1e-2 … 1e2: the largest curvature runs from ~4e2 (the intercept's,
    N/σ²) to ~4e6. The first step size keeps ε λ_max at the rule's constant; after
    warm-up the step is that of the adapted preconditioner G, whose curvature it keeps at
    the rule's constant (or below, by power iteration's error where G has made the
    eigenvalues nearly equal), far inside the stability limit; the run stays finite."""
    model, data, mean, cov, lam_max = _linear(scale)
    config = method(num_samples=20, num_warmup=100, thinning=5, init="random", batch_size=25)
    post = bnn.fit(model, data, config, key=0)
    rule = _rule(method, config)
    # The curvature rows are all 100 rows and the Hessian is constant; with s = 1 the
    # three eigenvalues are within 15% of each other, so power iteration stops between them.
    np.testing.assert_allclose(post.info["curvature"]["start"], lam_max, rtol=0.02)
    product = post.info["step_size"] * _preconditioned_curvature(post, cov)
    assert np.all(product >= 0.98 * rule) and np.all(product <= 2 * rule), product
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(post.draws))


@pytest.mark.parametrize("key", [0, pytest.param(1, marks=pytest.mark.slow),
                                 pytest.param(2, marks=pytest.mark.slow)])
@pytest.mark.parametrize("method", [SGLD, SGHMC], ids=["SGLD", "SGHMC"])
def test_the_defaults_recover_the_linear_regression_posterior(method, key):
    """Default step size, ensemble start and four chains; run lengths set for the ESS."""
    model, data, mean, cov, _ = _linear()
    config = method(batch_size=25, num_warmup=500, num_samples=500, thinning=25)
    post = bnn.fit(model, data, config, key=key)
    product = np.max(post.info["step_size"] * _preconditioned_curvature(post, cov))
    # Euler and minibatch excess of the variance along G^½ H G^½'s top eigenvector, as in
    # test_sgmcmc: (ελ/4) N/b for SGLD, (ηλ/(2α)) N/b for SGHMC (its Euler excess
    # ηλ/(2(2 − α)) is smaller still).
    excess = product / 4 if method is SGLD else product / (2 * config.alpha)
    samples = linear_weights(post.draws)
    assert samples.shape == (4, 500, 3)
    assert_gaussian_matches(samples, mean, cov, min_ess=250, var_bias=excess * 100 / 25)
    assert post.info["diagnostics"]["rhat"] < 1.05


@pytest.mark.parametrize("key", [0, pytest.param(1, marks=pytest.mark.slow)])
@pytest.mark.parametrize("method", [SGLD, SGHMC], ids=["SGLD", "SGHMC"])
def test_the_adapted_preconditioner_whitens_a_badly_scaled_posterior(method, key):
    """Inputs scaled by 100: the weights' curvature is 10⁴ times the intercept's, so with
    G = 1 the intercept would move 10⁴ times slower than the weights. The adapted G is the
    inverse diagonal curvature up to a common factor (Jacobi: G Hᵢᵢ equal across
    coordinates), and the draws recover the closed-form posterior in every coordinate."""
    model, data, mean, cov, _ = _linear(100.0)
    config = method(batch_size=25, num_warmup=500, num_samples=500, thinning=25)
    post = bnn.fit(model, data, config, key=key)
    g = linear_weights(post.info["preconditioner"]).astype(np.float64)
    scaled = g * np.diag(np.linalg.inv(cov))  # (chain, coordinate)
    assert np.all(scaled.max(1) / scaled.min(1) < 2), scaled
    product = np.max(post.info["step_size"] * _preconditioned_curvature(post, cov))
    excess = product / 4 if method is SGLD else product / (2 * config.alpha)
    assert_gaussian_matches(linear_weights(post.draws), mean, cov, min_ess=250,
                            var_bias=excess * 100 / 25)


@pytest.mark.parametrize("given", [True, False], ids=["given", "chosen"])
def test_a_diverging_warmup_backs_off_and_warns(given, monkeypatch):
    """ε λ = 24: warm-up diverges at 24, 12 and 6 and runs at 3 (stable, < 4): three
    restarts, each with a warning, for a given step size and for a chosen one."""
    model, data, *_, lam_max = _linear()
    if given:
        config = SGLD(24 / lam_max, batch_size=None, num_warmup=400, num_samples=20,
                      num_chains=2, init="random")
    else:  # without an adapted preconditioner (G = 1): warm-up is one window
        monkeypatch.setattr(sgld_module, "STEP_CURVATURE", 24.0)
        monkeypatch.setattr(SGLD, "adapts_preconditioner", False)
        config = SGLD(batch_size=None, num_warmup=400, num_samples=20, num_chains=2,
                      init="random")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = bnn.fit(model, data, config, key=0)
    backoffs = [w for w in caught if "from its start with half the step size" in str(w.message)]
    assert len(backoffs) == 3, [str(w.message) for w in caught]
    np.testing.assert_allclose(post.info["step_size"] * lam_max, 3.0, rtol=5e-3)
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(post.draws))


def test_an_unconverged_run_warns_about_rhat():
    data = bnn.data.gap_regression(n=40, noise=0.1, key=0)
    net = bnn.models.MLP(1, (8,), 1, activation="tanh", rngs=nnx.Rngs(0))
    model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=0.1))
    config = SGLD(num_chains=2, num_samples=20, num_warmup=0, thinning=1, init="random")
    with pytest.warns(UserWarning, match=r"SGLD: the 2 chains have not converged: R-hat up to"):
        post = bnn.fit(model, data, config, key=0)
    diagnostics = post.info["diagnostics"]
    assert diagnostics["rhat"] > 1.05 and diagnostics["num_rows"] == 40


def test_drift_and_runaway_noise_are_flagged_by_chain():
    model = linear_model(2, PRIOR, bnn.likelihoods.Gaussian(scale=0.3, learn_scale=True))
    data, _ = bnn.data.linear_regression(n=100, num_features=2, noise=0.3, key=0)
    probe = Batch(jnp.asarray(data.x), jnp.asarray(data.y))
    start = jax.tree.map(lambda a: jnp.stack([a] * 3), model.init_position)
    end = jax.tree.map(jnp.copy, start)
    end["net"]["layers"][0]["bias"] = end["net"]["layers"][0]["bias"].at[1].add(50.0)
    log_scale = end["lik"]["log_scale"]
    end["lik"]["log_scale"] = log_scale.at[2].set(jnp.log(20 * np.std(data.y)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _drift_warnings("SGLD", model, start, end, probe, data.y, 100)
    messages = [str(w.message) for w in caught]
    assert any("chain(s) [1]: the mean log-likelihood" in m for m in messages), messages
    assert any("chain(s) [2]: the noise scale lik/log_scale ran away" in m for m in messages)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # unchanged chains: nothing to say
        _drift_warnings("SGLD", model, start, start, probe, data.y, 100)


@pytest.mark.parametrize("n, batch_size", [(100, 32), (3_000, 32), (45_000, 100), (50, None)])
def test_budgets_in_epochs(n, batch_size):
    config = SGLD(batch_size=batch_size, num_samples=7)
    epoch = -(-n // (batch_size or n))
    warmup, thinning = config.budget(n)
    assert warmup == max(WARMUP_EPOCHS * epoch, MIN_WARMUP)
    assert thinning == max(epoch, MIN_THINNING)
    keep = config.kept_steps(n)
    assert len(keep) == warmup + 7 * thinning and keep.sum() == 7
    assert SGLD(num_warmup=3, thinning=2).budget(10**6) == (3, 2)  # given counts win


def test_budgets_need_the_data_size():
    with pytest.raises(ValueError, match="pass data_size"):
        SGLD().kept_steps()


@pytest.mark.parametrize("n, epochs", [(250, 1250), (3_000, 118), (45_000, 100)])
def test_ensemble_starts_train_for_at_least_ten_thousand_steps(n, epochs):
    """90% of the rows train (Keras' rule), 32 a batch: at least MIN_INIT_STEPS steps, and
    never fewer than MAP()'s 100 epochs; patience a tenth of the epochs (at least 10)."""
    training = ensemble_init_map(n)
    assert training.epochs == epochs and training.validation_split == 0.1
    assert training.epochs * -(-(n * 9 // 10) // 32) >= MIN_INIT_STEPS
    assert training.early_stopping_patience == max(10, epochs // 10)


def test_ensemble_init_is_the_deep_ensemble_of_the_same_key():
    data, _ = bnn.data.linear_regression(n=40, num_features=2, noise=0.5, key=0)
    net = bnn.models.MLP(2, (4,), 1, rngs=nnx.Rngs(0))
    model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=0.5))
    key = jax.random.key(3)
    positions, info = initial_positions(key, model, data, "ensemble", 3)
    training = ensemble_init_map(40)  # 36 rows to train (batches of 32 and 4), 4 held out
    assert training == bnn.MAP(epochs=MIN_INIT_STEPS // 2, validation_split=0.1,
                               early_stopping_patience=MIN_INIT_STEPS // 20)
    ensemble = bnn.Ensemble(training, size=3).run(model, data, key)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b[:, 0]), positions,
                 ensemble.draws)  # same program, same key: bit-identical
    kernel = np.asarray(positions["net"]["layers"][0]["kernel"])
    assert not np.allclose(kernel[0], kernel[1])  # each chain its own fit
    assert info["epochs_run"].shape == (3,)


def test_progress_names_warmup_and_shows_step_size_and_log_likelihood(capsys):
    """Warm-up lines carry no draw count; both phases show the step size and the running
    minibatch log-likelihood, which is also kept per draw and estimates the full-data
    mean log-likelihood of the draws."""
    model, data, *_ = _linear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 80 short-run draws: R-hat warns, as it should
        post = bnn.fit(model, data, SGLD(num_samples=40, num_warmup=200, thinning=5,
                                         batch_size=25, num_chains=2, init="random"), key=0)
    lines = capsys.readouterr().err.splitlines()
    warm = [line for line in lines if line.startswith("SGLD warm-up: ")]
    run = [line for line in lines if line.startswith("SGLD: ")]
    assert warm and run and not any("draws" in line for line in warm)
    for line in (warm[-1], run[-1]):
        assert " · step_size " in line and " · log_lik " in line
    assert "draws 40/40" in run[-1]
    kept = post.info["sample_stats"]["minibatch_log_lik"]
    assert kept.shape == (2, 40)
    x, y = jnp.asarray(data.x), jnp.asarray(data.y)
    full = jax.vmap(jax.vmap(lambda p: model.loglikelihood_fn(p, Batch(x, y)) / len(x)))(
        post.draws)
    # each kept value: one minibatch of 25 of the 100 rows; their mean over 80 draws
    spread = np.std(jax.vmap(jax.vmap(lambda p: model.log_prob_per_example(p, x, y)))(
        post.draws))
    np.testing.assert_allclose(np.mean(kept), np.mean(full), atol=5 * spread / np.sqrt(25 * 80))

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
from bayesnn.inference.init import initial_positions
from bayesnn.inference.sghmc import SGHMC
from bayesnn.inference.sgld import SGLD, STEP_CURVATURE
from bayesnn.inference.sgmcmc import (
    MIN_THINNING,
    MIN_WARMUP,
    WARMUP_EPOCHS,
    WARMUP_WINDOWS,
    _drift_warnings,
    gradient_noise,
    window_preconditioner,
)
from bayesnn.testing import assert_gaussian_matches, linear_model, linear_posterior, linear_weights

NOISE, PRIOR = 0.5, 0.7


def _preconditioned_curvature(post, cov) -> np.ndarray:
    """Each chain's λ_max(G^½ H G^½) for the linear model's constant Hessian ``H = cov⁻¹``
    and the chain's final preconditioner ``G``."""
    g = linear_weights(jax.tree.map(lambda a: a[:, None], post.info["preconditioner"]))[:, 0]
    root = np.sqrt(g.astype(np.float64))
    return np.array([np.linalg.eigvalsh(r[:, None] * np.linalg.inv(cov) * r[None]).max()
                     for r in root])


def _linear(scale: float = 1.0):
    data, _ = bnn.data.linear_regression(n=100, num_features=2, noise=NOISE, key=0,
                                         orthogonal=True)
    data = bnn.data.Dataset(data.x * np.float32(scale), data.y)
    mean, cov = linear_posterior(data.x, data.y, PRIOR, NOISE)
    model = linear_model(2, PRIOR, bnn.likelihoods.Gaussian(scale=NOISE))
    return model, data, mean, cov, np.linalg.eigvalsh(np.linalg.inv(cov)).max()


@pytest.mark.parametrize("method", [SGLD, SGHMC], ids=["SGLD", "SGHMC"])
@pytest.mark.parametrize("scale", [1e-2, 1e-1, 1.0, 1e1, 1e2])
def test_the_chosen_step_size_follows_the_curvature_over_orders_of_magnitude(method, scale):
    """Inputs scaled by 1e-2 … 1e2: the curvature along the weights runs from ~2 to ~4e6
    (the intercept's is N/σ² = 4e2). The preconditioner G chosen in warm-up and the
    measured curvature of G^½ H G^½ are those of the model; the step is the method's rule
    on the larger of that curvature and the preconditioned gradient noise, so ε λ_max stays
    at or below the rule's constant, far inside the stability limit, and the run stays
    finite."""
    model, data, _, cov, _ = _linear(scale)
    config = method(num_samples=20, num_warmup=100, thinning=5, init="random", batch_size=25)
    post = bnn.fit(model, data, config, key=0)
    eps, lam = post.info["step_size"], _preconditioned_curvature(post, cov)
    measured = post.info["curvature"]["warmup"][:, -1]
    noise = post.info["gradient_noise"]["warmup"][:, -1]
    # The curvature rows are all 100 rows and the Hessian is constant. Power iteration
    # stops between the top eigenvalues where they are close (within 15% at s = 1).
    assert np.all((measured > 0.8 * lam) & (measured < 1.01 * lam)), measured / lam
    assert np.all(noise > 0)  # 4 minibatches per epoch
    rules = np.minimum(config.stable_step_size(measured), config.noise_step_size(noise))
    np.testing.assert_allclose(eps, rules, rtol=1e-5)
    if method is SGLD:  # stable for ε λ < 4
        product, target = eps * lam, STEP_CURVATURE
    else:  # stable for η λ < 2 (2 − α); the rule holds η λ / (2 (2 − α)) at SGLD's ε λ / 4
        product, target = eps * lam / (2 * (2 - config.alpha)), STEP_CURVATURE / 4
    assert np.all(product < 1.25 * target), product / target
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(post.draws))


@pytest.mark.parametrize("method", [SGLD, SGHMC], ids=["SGLD", "SGHMC"])
def test_the_defaults_recover_the_linear_regression_posterior(method):
    """Default step size, ensemble start and four chains; run lengths set for the ESS."""
    model, data, mean, cov, _ = _linear()
    config = method(batch_size=25, num_warmup=500, num_samples=500, thinning=25)
    post = bnn.fit(model, data, config, key=0)
    eps = post.info["step_size"]
    lam, noise = _preconditioned_curvature(post, cov), post.info["gradient_noise"]["warmup"][:, -1]
    # Euler and minibatch excess of the variance along the preconditioned directions:
    # (ελ + εB)/4 for SGLD, ηλ/(2(2 − α)) + ηB/(2α) for SGHMC (B: the gradient noise the
    # rule measured; the rules hold each near 5%).
    excess = np.max(eps * (lam + noise) / 4 if method is SGLD else
                    eps * (lam / (2 * (2 - config.alpha)) + noise / (2 * config.alpha)))
    samples = linear_weights(post.draws)
    assert samples.shape == (4, 500, 3)
    assert_gaussian_matches(samples, mean, cov, min_ess=300, var_bias=excess)
    assert post.info["diagnostics"]["rhat"] < 1.05


@pytest.mark.parametrize("given", [True, False], ids=["given", "chosen"])
def test_a_diverging_warmup_backs_off_and_warns(given, monkeypatch):
    """ε λ = 24: warm-up diverges at 24, 12 and 6 and runs at 3 (stable, < 4): three
    restarts, each with a warning, for a given step size and for a chosen one (in its
    first warm-up window; later windows keep the factor 1/8)."""
    model, data, _, cov, lam_max = _linear()
    if given:
        config = SGLD(24 / lam_max, batch_size=None, num_warmup=400, num_samples=20,
                      num_chains=2, init="random")
    else:
        monkeypatch.setattr(sgld_module, "STEP_CURVATURE", 24.0)
        config = SGLD(batch_size=None, num_warmup=400, num_samples=20, num_chains=2,
                      init="random")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = bnn.fit(model, data, config, key=0)
    backoffs = [w for w in caught if "with half the step size" in str(w.message)]
    assert len(backoffs) == 3, [str(w.message) for w in caught]
    if given:
        np.testing.assert_allclose(post.info["step_size"] * lam_max, 3.0, rtol=5e-3)
    else:  # power iteration on the full batch, between the top eigenvalues at worst
        product = post.info["step_size"] * _preconditioned_curvature(post, cov)
        assert np.all((product > 0.8 * 3) & (product < 1.02 * 3)), product
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


def test_ensemble_init_is_the_deep_ensemble_of_the_same_key():
    data, _ = bnn.data.linear_regression(n=40, num_features=2, noise=0.5, key=0)
    net = bnn.models.MLP(2, (4,), 1, rngs=nnx.Rngs(0))
    model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=0.5))
    key = jax.random.key(3)
    positions, info = initial_positions(key, model, data, "ensemble", 3)
    ensemble = bnn.Ensemble(bnn.MAP(), size=3).run(model, data, key)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b[:, 0]), positions,
                 ensemble.draws)  # same program, same key: bit-identical
    kernel = np.asarray(positions["net"]["layers"][0]["kernel"])
    assert not np.allclose(kernel[0], kernel[1])  # each chain its own fit
    assert info["epochs_run"].shape == (3,)


def test_the_window_preconditioner_is_scale_free_and_bounded():
    """G ∝ 1/(√V̂ + δ) with mean 1: the same for V̂ scaled by any constant, the
    inverse-root ratio between coordinates, and a zero-gradient coordinate at most 1000
    times the typical G."""
    v = {"a": jnp.array([1.0, 4.0, 0.0]), "b": jnp.array([[16.0]])}
    g = window_preconditioner(v)
    flat = np.concatenate([np.ravel(g["a"]), np.ravel(g["b"])])
    np.testing.assert_allclose(flat.mean(), 1.0, rtol=1e-6)
    scaled = window_preconditioner(jax.tree.map(lambda a: 1e6 * a, v))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5), g, scaled)
    delta = 1e-3 * (1 + 2 + 0 + 4) / 4
    np.testing.assert_allclose(flat[0] / flat[1], (2 + delta) / (1 + delta), rtol=1e-5)
    assert flat[2] / flat[0] < 1e3


def test_gradient_noise_is_the_largest_preconditioned_variance():
    g = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([0.5])}
    var = {"a": jnp.array([3.0, 1.0]), "b": jnp.array([10.0])}
    np.testing.assert_allclose(gradient_noise(g, var, 100, 10), 100**2 * 5.0, rtol=1e-6)
    assert gradient_noise(g, var, 100, 100) == 0  # the full batch has no minibatch noise


@pytest.mark.parametrize("num_warmup, windows", [(3, 3), (12, WARMUP_WINDOWS)])
def test_a_short_warmup_runs_in_near_equal_windows(num_warmup, windows):
    """A given ``num_warmup`` that is not a multiple of the windows (or is fewer steps than
    windows) still runs every warm-up step, in at most :data:`WARMUP_WINDOWS` windows."""
    model, data, *_ = _linear()
    config = SGHMC(num_chains=2, num_samples=2, num_warmup=num_warmup, thinning=1,
                   init="random")
    post = bnn.fit(model, data, config, key=0, progress=False)
    assert post.info["curvature"]["warmup"].shape == (2, windows)
    assert post.info["num_steps"] == num_warmup + 2

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.linalg import solve_discrete_lyapunov

import bayesnn as bnn
from bayesnn.arviz import ess, rhat
from bayesnn.bnn import Batch
from bayesnn.data.batching import next_batch
from bayesnn.inference.diffusions import gaussian_noise
from bayesnn.inference.driver import EmptyInfo
from bayesnn.inference.psgld import PSGLD, PSGLDState, psgld
from bayesnn.inference.schedules import Cyclical
from bayesnn.inference.sghmc import SGHMC, SGHMCState, sghmc
from bayesnn.inference.sgld import SGLD, sgld
from bayesnn.testing import (
    assert_gaussian_matches,
    linear_model,
    linear_posterior,
    linear_weights,
    whiten,
)

POSITION = {"w": jnp.array([[0.5, -1.0], [2.0, 0.0]]), "b": jnp.array([0.3])}
GRAD = {"w": jnp.array([[1.0, 2.0], [-3.0, 0.5]]), "b": jnp.array([-0.7])}
KEY = jax.random.key(0)


def _close(a, b, **kw):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **kw), a, b)


# -- kernels ---------------------------------------------------------------------------


def test_sgld_step_is_welling_teh_eq_4():
    kernel = sgld()
    state = kernel.init(POSITION)
    eps, temp = 0.1, 0.5
    new, info = kernel.step(KEY, state, GRAD, eps, temp)
    assert info == EmptyInfo()  # nothing is accepted or rejected
    noise = gaussian_noise(KEY, POSITION)
    expected = jax.tree.map(
        lambda p, g, n: p + eps / 2 * g + np.sqrt(temp * eps) * n, POSITION, GRAD, noise
    )
    _close(new.position, expected, rtol=1e-6)
    _close(kernel.step(KEY, state, GRAD, eps, 0.0)[0].position,  # T = 0: gradient ascent
           jax.tree.map(lambda p, g: p + eps / 2 * g, POSITION, GRAD), rtol=1e-6)


def test_psgld_step_is_li_et_al_algorithm_1_without_gamma():
    n, alpha, lam, eps, temp = 50, 0.9, 1e-3, 0.01, 0.7
    kernel = psgld(n, alpha, lam)
    state = kernel.init(POSITION)
    assert isinstance(state, PSGLDState)
    state = state._replace(square_avg=jax.tree.map(lambda p: jnp.full_like(p, 0.2), POSITION))
    new, _ = kernel.step(KEY, state, GRAD, eps, temp)
    v = jax.tree.map(lambda g: alpha * 0.2 + (1 - alpha) * (g / n) ** 2, GRAD)
    precond = jax.tree.map(lambda v: 1 / (lam + np.sqrt(v)), v)
    noise = gaussian_noise(KEY, POSITION)
    expected = jax.tree.map(
        lambda p, g, c, z: p + eps / 2 * c * g + np.sqrt(temp * eps * c) * z,
        POSITION, GRAD, precond, noise,
    )
    _close(new.square_avg, v, rtol=1e-6)
    _close(new.position, expected, rtol=1e-5)


def test_sghmc_step_is_chen_et_al_eq_15():
    alpha, eta = 0.1, 0.01
    kernel = sghmc(alpha)
    state = kernel.init(POSITION)
    assert isinstance(state, SGHMCState)
    state = state._replace(momentum=jax.tree.map(jnp.ones_like, POSITION))
    new, _ = kernel.step(KEY, state, GRAD, eta, 0.0)  # noiseless: SGD with momentum
    v = jax.tree.map(lambda g: (1 - alpha) * 1.0 + eta * g, GRAD)
    _close(new.momentum, v, rtol=1e-6)
    _close(new.position, jax.tree.map(jnp.add, POSITION, v), rtol=1e-6)
    # with alpha = 1 and no momentum, SGHMC is SGLD with ε = 2η, noise included
    plain = sghmc(1.0)
    _close(plain.step(KEY, plain.init(POSITION), GRAD, eta, 0.5)[0].position,
           sgld().step(KEY, sgld().init(POSITION), GRAD, 2 * eta, 0.5)[0].position, rtol=1e-6)


def test_gaussian_noise_is_standard_normal_per_leaf_and_deterministic():
    tree = {"a": jnp.zeros((300, 200)), "b": jnp.zeros(7)}
    noise = gaussian_noise(KEY, tree)
    assert jax.tree.map(jnp.shape, noise) == jax.tree.map(jnp.shape, tree)
    _close(noise, gaussian_noise(KEY, tree), rtol=0)
    a = np.asarray(noise["a"]).ravel()
    assert abs(a.mean()) < 4 / np.sqrt(a.size) and abs(a.var() - 1) < 4 * np.sqrt(2 / a.size)
    assert not np.allclose(a[:7], np.asarray(noise["b"]))  # leaves get their own keys


def test_injected_noise_variances():
    keys = jax.random.split(KEY, 10000)
    zero = jax.tree.map(jnp.zeros_like, POSITION)
    eps, temp = 0.04, 0.5

    def sgld_noise(k):
        return sgld().step(k, sgld().init(zero), zero, eps, temp)[0].position["w"]

    def sghmc_noise(k):
        return sghmc(0.2).step(k, sghmc(0.2).init(zero), zero, eps, temp)[0].momentum["w"]

    # N(0, T ε) for SGLD, N(0, 2 α η T) for SGHMC's momentum; 4 standard errors
    for fn, var in ((sgld_noise, temp * eps), (sghmc_noise, 2 * 0.2 * eps * temp)):
        sample_var = np.var(np.asarray(jax.vmap(fn)(keys)), axis=0)
        np.testing.assert_allclose(sample_var, var, rtol=4 * np.sqrt(2 / len(keys)))


# -- the minibatch gradient ------------------------------------------------------------


def test_minibatch_gradients_average_to_the_full_gradient_over_an_epoch():
    data = bnn.data.gap_regression(n=24, noise=0.1, key=0)
    net = bnn.models.MLP(1, (8,), 1, activation="tanh", rngs=nnx.Rngs(0))
    model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=0.1))
    x, y = jnp.asarray(data.x), jnp.asarray(data.y)
    grad = jax.grad(model.logdensity_fn)

    @jax.jit
    def full_and_epoch(position, key):
        epoch, grads = jnp.zeros((4, 6), jnp.int32), []
        for step in range(4):  # batches of 6 divide 24: one epoch
            epoch, idx, mask = next_batch(jax.random.fold_in(key, step), epoch, step, 24, 6)
            grads.append(grad(position, Batch(x[idx], y[idx], mask), 24))
        return grad(position, Batch(x, y), 24), grads

    full, grads = full_and_epoch(model.init_position, jax.random.key(0))
    mean = jax.tree.map(lambda *g: np.mean(g, axis=0), *grads)
    _close(mean, full, rtol=1e-4, atol=1e-4)
    assert not np.allclose(grads[0]["net"]["layers"][0]["kernel"],
                           full["net"]["layers"][0]["kernel"])  # each batch alone is noisy


# -- correctness on Bayesian linear regression -----------------------------------------

# A prior scale other than 1 tells a prior variance from a prior std.
NOISE, PRIOR = 0.5, 0.7


@pytest.fixture(scope="module")
def linear():
    """Orthogonal design, N = 100; the posterior precisions are about N / σ² = 400."""
    data, _ = bnn.data.linear_regression(n=100, num_features=2, noise=NOISE, key=0,
                                         orthogonal=True)
    model = linear_model(2, PRIOR, bnn.likelihoods.Gaussian(scale=NOISE))
    mean, cov = linear_posterior(data.x, data.y, PRIOR, NOISE)
    return model, data, mean, cov, 1 / np.linalg.eigvalsh(cov).min()


def _fit(linear, method):
    model, data, mean, cov, _ = linear
    samples = linear_weights(bnn.fit(model, data, method, key=0).draws)
    assert samples.shape == (method.num_chains, method.num_samples, 3)
    return samples


# 4 chains x (1000 warm-up + 1000 draws x 25 steps); ESS ~ 600-900 for SGLD. On a Gaussian
# target the drift is linear, so the stationary mean is exact: the discretisation and the
# minibatch noise inflate the covariance only (var_bias).
RUN = {"num_chains": 4, "num_warmup": 1000, "num_samples": 1000, "thinning": 25,
       "init": "random"}


def test_full_batch_sgld_recovers_the_linear_regression_posterior(linear):
    *_, mean, cov, lam_max = linear
    eps = 0.04 / lam_max
    samples = _fit(linear, SGLD(eps, batch_size=None, **RUN))
    # Euler bias: the stationary variance along precision λ is 1 / (λ (1 - ελ/4)), a
    # relative excess of about ελ/4 = 1% at most.
    assert_gaussian_matches(samples, mean, cov, min_ess=400, var_bias=eps * lam_max / 4)


@pytest.mark.parametrize("b", [25, 30])  # 30: a partial (masked) last batch of 10
def test_minibatch_sgld_recovers_the_posterior_with_independent_chains(linear, b):
    *_, mean, cov, lam_max = linear
    eps, n = 0.04 / lam_max, 100
    samples = _fit(linear, SGLD(eps, batch_size=b, **RUN))
    # A batch of b_i real rows adds about (ε/4) Var(ĝ) ≲ (ελ/4)(N/b_i - 1) to the variance
    # (less, as batches are drawn without replacement); with the Euler bias, (ελ/4) N/b_i
    # on average over an epoch's batches: 4% (b = 25) or 5% (b = 30).
    sizes = np.diff(np.r_[0:n:b, n])
    assert_gaussian_matches(samples, mean, cov, min_ess=400,
                            var_bias=eps * lam_max / 4 * np.mean(n / sizes))
    # chains are independent: whitened draws of different chains are uncorrelated
    u = whiten(samples, mean, cov)
    ess_per_chain = ess(u[:1]).min()
    for i in range(1, 4):
        corr = [np.corrcoef(u[0, :, j], u[i, :, j])[0, 1] for j in range(3)]
        assert np.max(np.abs(corr)) < 4 / np.sqrt(ess_per_chain), corr
    assert np.max(rhat(samples)) < 1.05


def test_sghmc_recovers_the_posterior(linear):
    *_, mean, cov, lam_max = linear
    # ηλ = 0.01: Euler bias ≈ ηλ/4; the minibatch noise (b = 10) is not corrected (β̂ = 0).
    run = dict(RUN, thinning=12)  # mixes twice as fast as SGLD: ESS ~ 1000 in half the steps
    samples = _fit(linear, SGHMC(0.01 / lam_max, alpha=0.2, batch_size=10, **run))
    assert_gaussian_matches(samples, mean, cov, min_ess=600, var_bias=0.05)


def _sghmc_ar2(lam, eta, alpha, thinning, num_lags):
    """Stationary variance and autocorrelations of full-batch SGHMC on N(0, 1/λ).

    With ``ĝ = -λθ`` a step of :func:`~bayesnn.inference.diffusions.sghmc_dynamics` is linear,
    ``(θ, v) ← A (θ, v) + √(2αη) ξ (1, 1)`` with ``A = [[1 - ηλ, 1 - α], [-ηλ, 1 - α]]``:
    an AR(2) process in θ, whose stationary covariance ``S = A S Aᵀ + 2αη 11ᵀ``.

    Returns
    -------
    Var(θ), and the autocorrelations of θ at lags ``0 … num_lags`` draws (of
    ``thinning`` steps each).
    """
    a = np.array([[1 - eta * lam, 1 - alpha], [-eta * lam, 1 - alpha]])
    cov = solve_discrete_lyapunov(a, 2 * alpha * eta * np.ones((2, 2)))
    step, lagged = np.linalg.matrix_power(a, thinning), [cov]
    for _ in range(num_lags):
        lagged.append(step @ lagged[-1])
    return cov[0, 0], np.array([c[0, 0] for c in lagged]) / cov[0, 0]


def test_sghmc_autocorrelations_are_the_closed_form_ar2s(linear):
    """Along each eigenvector of the posterior precision, full-batch SGHMC is an AR(2)
    process (:func:`_sghmc_ar2`): the draws match its exact stationary variance (Euler bias
    included) and its lag-1 and lag-2 autocorrelations, which depend on the friction."""
    *_, mean, cov, lam_max = linear
    eta, alpha, thinning, num_lags = 0.01 / lam_max, 0.5, 12, 100
    samples = _fit(linear, SGHMC(eta, alpha=alpha, batch_size=None, **dict(RUN, thinning=thinning)))
    lam, vecs = np.linalg.eigh(np.linalg.inv(cov))
    var, rho = zip(*(_sghmc_ar2(l, eta, alpha, thinning, num_lags) for l in lam), strict=True)
    assert_gaussian_matches(samples, mean, vecs @ np.diag(var) @ vecs.T, min_ess=300)
    y = (samples - mean) @ vecs / np.sqrt(var)  # (chain, draw, eigenvector), unit variance
    num_chains, n = y.shape[:2]
    z = 4.0
    for i, r in enumerate(rho):
        sym = np.r_[r[:0:-1], r]  # ρ_j for j = -L … L
        for k in (1, 2):
            estimate = np.mean(y[:, k:, i] * y[:, :-k, i]) / np.mean(y[..., i] ** 2)
            # Bartlett's formula for the variance of a sample autocorrelation
            j = np.arange(k, len(sym) - k)
            bartlett = np.sum(sym[j] ** 2 + sym[j + k] * sym[j - k]
                              - 4 * r[k] * sym[j] * sym[j - k] + 2 * r[k] ** 2 * sym[j] ** 2)
            assert abs(estimate - r[k]) < z * np.sqrt(bartlett / (n * num_chains)), (i, k)


def test_psgld_recovers_the_posterior(linear):
    *_, mean, cov, _ = linear
    n, b, eps = 100, 50, 2e-5
    # Without Γ, the preconditioner must change slowly next to the chain: alpha = 0.999
    # (0.99 inflates the variance by ~25%; 16 chains give the ESS to tell them apart).
    samples = _fit(linear, PSGLD(eps, alpha=0.999, batch_size=b, **dict(RUN, num_chains=16)))
    # With V ≈ E[ĝ²] / N², E[ĝ ĝᵀ] ⪰ Λ (the posterior precision) at stationarity, and λ
    # negligible, G ≲ N / √diag(Λ): the chain is SGLD on the precision G^½ Λ G^½, with the
    # Euler and minibatch bias of the SGLD tests (G λ ε / 4) N/b ≈ 2%.
    precision = np.linalg.inv(cov)
    root_g = np.sqrt(n / np.sqrt(np.diag(precision)))
    lam_g = np.linalg.eigvalsh(root_g[:, None] * precision * root_g).max()
    assert_gaussian_matches(samples, mean, cov, min_ess=1500, var_bias=eps * lam_g / 4 * n / b)


def test_cold_posterior_temperature_scales_the_covariance(linear):
    *_, mean, cov, lam_max = linear
    temp = 0.25  # p(θ | D)^(1/T) of a Gaussian is Gaussian with covariance T Σ
    # The chain targets precisions λ / T with an effective step T ε, so ελ sets its bias
    # and mixing as at T = 1; twice the step of the tests above, for half the draws.
    eps = 0.08 / lam_max
    run = dict(RUN, num_samples=500)
    samples = _fit(linear, SGLD(eps, batch_size=None, temperature=temp, **run))
    assert_gaussian_matches(samples, mean, temp * cov, min_ess=200,
                            var_bias=eps * lam_max / 4)
    with pytest.raises(AssertionError, match="var"):  # and is clearly not the T = 1 posterior
        assert_gaussian_matches(samples, mean, cov, var_bias=eps * lam_max / 4)


# -- the loop ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gap():
    data = bnn.data.gap_regression(n=40, noise=0.1, key=0)
    net = bnn.models.MLP(1, (8,), 1, activation="tanh", rngs=nnx.Rngs(0))
    return bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=0.1)), data


# ε λ_max ≈ 0.3 at the peak of the cycle (λ_max ≈ 1.5–3·10⁴ for this network and noise
# 0.1), well inside SGLD's stability limit ε λ < 4 for every key (1e-3, ε λ ≈ 15 at the
# start, diverged for some keys and CPUs).
CYCLIC = SGLD(1e-5, batch_size=16, num_samples=6, num_warmup=5, thinning=3, num_chains=2,
              schedule=Cyclical(cycle_length=20, exploration=0.5), init="random")


@pytest.fixture(scope="module")
def cyclic(gap, tmp_path_factory):
    """One run of CYCLIC with key 0, checkpointed; and how often it traced the model."""
    model, data = gap
    traces = []
    logdensity = model.logdensity_fn

    def counted(*args, **kwargs):
        traces.append(1)
        return logdensity(*args, **kwargs)

    model.logdensity_fn = counted
    try:
        path = tmp_path_factory.mktemp("sgmcmc") / "run.ckpt"
        post = bnn.fit(model, data, CYCLIC, key=0, checkpoint=path)
    finally:
        del model.logdensity_fn
    return post, len(traces), path


def test_the_chunk_compiles_once(cyclic):
    a, num_traces, _ = cyclic
    assert num_traces == 1 and a.info["num_steps"] > a.info["steps_per_chunk"]  # many chunks


@pytest.mark.parametrize("key", range(5))
def test_same_key_same_draws(gap, key):
    model, data = gap
    a, b, c = (bnn.fit(model, data, CYCLIC, key=k) for k in (key, key, key + 1))
    wa, wb, wc = (p.draws["net"]["layers"][0]["kernel"] for p in (a, b, c))
    assert wa.shape == (2, 6, 1, 8) and np.all(np.isfinite(wa))
    np.testing.assert_array_equal(wa, wb)  # same program, same key: bit-identical
    assert not np.allclose(wa, wc)
    assert not np.allclose(wa[0], wa[1])  # chains differ
    assert not np.allclose(wa[0, 0], wa[0, 1])  # draws move


def test_unconditional_draw_store_keeps_the_same_draws(gap, cyclic, monkeypatch):
    """The GPU's store (every step writes, kept draws overwrite) equals the CPU's cond, to
    float32 rounding: they are different programs, which XLA may fuse differently."""
    from bayesnn.inference import driver

    model, data = gap
    monkeypatch.setattr(driver, "_skip_unkept", lambda: False)
    b = bnn.fit(model, data, CYCLIC, key=0)
    for x, y in zip(jax.tree.leaves(cyclic[0].draws), jax.tree.leaves(b.draws), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_cyclical_schedule_keeps_draws_in_sampling_phases_only():
    keep = np.flatnonzero(CYCLIC.kept_steps())
    # cycles of 20 steps sample from step 10 on; every 3rd sampling step; none before 5
    np.testing.assert_array_equal(keep, [12, 15, 18, 32, 35, 38])
    assert len(CYCLIC.kept_steps()) == 39  # the run stops at the last draw
    plain = SGLD(1e-3, num_samples=3, num_warmup=4, thinning=2)
    np.testing.assert_array_equal(np.flatnonzero(plain.kept_steps()), [5, 7, 9])


def test_sample_stats_record_each_draws_step_size(cyclic):
    sizes = cyclic[0].info["sample_stats"]["step_size"]
    eps = CYCLIC.step_size
    expected = eps * np.asarray(CYCLIC.schedule(np.array([12, 15, 18, 32, 35, 38])))
    np.testing.assert_allclose(sizes, np.broadcast_to(expected, (2, 6)), rtol=1e-6)
    assert np.all(sizes < 0.5 * eps)  # the sampling phase is the low-step-size half of a cycle


def test_checkpoint_of_a_finished_run_gives_back_its_draws(gap, cyclic):
    model, data = gap
    a, _, path = cyclic
    assert path.exists()
    b = bnn.fit(model, data, CYCLIC, key=0, checkpoint=path)  # restored: nothing to rerun
    np.testing.assert_array_equal(a.draws["net"]["layers"][0]["kernel"],
                                  b.draws["net"]["layers"][0]["kernel"])


def test_init_network_starts_every_chain_at_the_networks_weights(linear):
    model, data, *_ = linear
    # one step of length ~0 without noise: the draw is the starting point
    method = SGLD(1e-12, batch_size=None, num_samples=1, num_warmup=0, thinning=1,
                  num_chains=2, temperature=0.0, init="network")
    kernel = bnn.fit(model, data, method, key=0).draws["net"]["layers"][0]["kernel"]
    start = np.asarray(model.init_position["net"]["layers"][0]["kernel"])
    np.testing.assert_allclose(kernel, np.broadcast_to(start, kernel.shape), rtol=1e-6)


@pytest.mark.slow
def test_a_huge_step_size_names_the_step(gap):
    model, data = gap
    method = SGLD(1e3, batch_size=None, num_samples=20, num_warmup=20, num_chains=1,
                  init="random")
    with pytest.raises(bnn.NonFiniteError,
                       match=r"SGLD: .* at step [0-9]+; try a smaller step_size") as caught:
        bnn.fit(model, data, method, key=0)
    assert f"at step {caught.value.step};" in str(caught.value)  # the step, as an attribute


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: SGLD(0.0), "step_size must be > 0"),
        (lambda: SGLD(1e-3, num_samples=0), "num_samples must be an int >= 1"),
        (lambda: SGLD(1e-3, thinning=0), "thinning must be an int >= 1"),
        (lambda: SGLD(1e-3, num_warmup=-1), "num_warmup must be an int >= 0"),
        (lambda: SGLD(1e-3, num_chains=0), "num_chains must be an int >= 1"),
        (lambda: SGLD(1e-3, temperature=-1.0), "temperature must be >= 0"),
        (lambda: SGLD(1e-3, batch_size=0), "batch_size must be a positive int or None"),
        (lambda: SGLD(1e-3, thinning=8, schedule=Cyclical(10)), "exceeds the 5 sampling"),
        (lambda: SGLD(1e-3, init="zeros"), "init must be one of"),
        (lambda: PSGLD(1e-3, alpha=1.0), r"alpha must be in \(0, 1\)"),
        (lambda: PSGLD(1e-3, eps=0.0), "eps must be > 0"),
        (lambda: SGHMC(1e-3, alpha=0.0), r"alpha must be in \(0, 1\]"),
    ],
)
def test_bad_configuration(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_schedule_type_and_batch_larger_than_the_data(gap):
    with pytest.raises(TypeError, match="schedule must be a callable or None"):
        SGLD(1e-3, schedule="cosine")
    model, data = gap
    with pytest.raises(ValueError, match=r"batch_size \(64\) is larger than the dataset \(40"):
        bnn.fit(model, data, SGLD(1e-3, batch_size=64), key=0)


def test_point_estimate_weights_are_refused(gap):
    _, data = gap
    net = bnn.models.MLP(1, (8,), 1, rngs=nnx.Rngs(0))
    prior = bnn.priors.PerParameter({"layers/1/*": bnn.priors.Normal(1.0)})
    model = bnn.BNN(net, prior, bnn.likelihoods.Gaussian(scale=0.1))
    with pytest.raises(ValueError, match=r"SGHMC samples every weight.*layers/0/bias"):
        bnn.fit(model, data, SGHMC(1e-3), key=0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "method",
    [
        SGLD(4e-6, batch_size=16, num_samples=100, num_warmup=5000, thinning=50, num_chains=4),
        PSGLD(2e-5, batch_size=16, num_samples=100, num_warmup=5000, thinning=50, num_chains=4),
        SGHMC(2e-6, alpha=0.1, batch_size=16, num_samples=100, num_warmup=5000, thinning=50,
              num_chains=4, schedule=Cyclical(1000, exploration=0.5)),
    ],
    ids=["SGLD", "PSGLD", "cyclical-SGHMC"],
)
def test_bnn_posterior_is_uncertain_in_the_gap(method):
    train = bnn.data.gap_regression(n=80, noise=0.1, key=0)
    test = bnn.data.gap_regression(n=200, noise=0.1, key=1)
    net = bnn.models.MLP(1, (32, 32), 1, activation="tanh", rngs=nnx.Rngs(0))
    model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=0.1))
    post = bnn.fit(model, train, method, key=0)
    rmse = float(np.sqrt(np.mean((post.predict(test.x).mean - test.y) ** 2)))
    assert rmse < 0.15, rmse  # noise std 0.1
    grid = bnn.data.gap_regression_grid(num=200).x
    std, g = np.asarray(post.predict(grid).std[:, 0]), np.abs(grid[:, 0])
    in_gap, on_data = std[g < 0.4].mean(), std[(g > 0.6) & (g < 1.4)].mean()
    assert in_gap > 1.3 * on_data, (in_gap, on_data)

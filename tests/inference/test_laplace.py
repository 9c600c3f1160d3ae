import jax
import numpy as np
import pytest
from flax import nnx
from scipy import optimize, stats

import bayesnn as bnn
from bayesnn.inference.laplace import glm_predictive
from bayesnn.posterior import DrawPredictive, LinearisedPredictive
from bayesnn.testing import (
    assert_gaussian_matches,
    linear_model,
    linear_posterior,
    linear_weights,
)

PRIOR, NOISE = 0.7, 0.5
# The subset's flat order is its leaves' order (bias, then kernel); linear_posterior's is [w, b].
TO_WB = [1, 2, 3, 0]


def _model(prior=PRIOR, weights=None):
    net = bnn.models.MLP(3, (), 1, rngs=nnx.Rngs(0))
    if weights is not None:
        net.layers[0].kernel[...] = np.asarray(weights[:3, None], np.float32)
        net.layers[0].bias[...] = np.asarray(weights[3:], np.float32)
    return linear_model(3, prior, bnn.likelihoods.Gaussian(scale=NOISE), network=net)


def _cov_wb(post) -> np.ndarray:
    cov = np.asarray(post.info["laplace"].dense())
    return cov[np.ix_(TO_WB, TO_WB)]


@pytest.fixture(scope="module")
def linear():
    return bnn.data.linear_regression(n=40, num_features=3, noise=NOISE, key=0)[0]


@pytest.fixture(scope="module")
def full_post(linear):
    method = bnn.Laplace(init=bnn.MAP(optimizer="sgd", learning_rate=0.1, epochs=500,
                                      batch_size=None),
                         subset="all", hessian="full", num_samples=4000, batch_size=16)
    return bnn.fit(_model(), linear, method, key=0)


def test_full_laplace_is_the_exact_linear_regression_posterior(full_post, linear):
    mean, cov = linear_posterior(linear.x, linear.y, PRIOR, NOISE)
    assert (full_post.num_chains, full_post.num_draws) == (1, 4000)
    np.testing.assert_allclose(linear_weights(jax.tree.map(
        lambda a: a[None, None], full_post.predictive.center))[0, 0], mean, atol=1e-4)
    np.testing.assert_allclose(_cov_wb(full_post), cov, rtol=1e-4, atol=1e-7)
    assert_gaussian_matches(linear_weights(full_post.draws), mean, cov, min_ess=2000)
    assert full_post.info["prior_precision"] == pytest.approx(1 / PRIOR**2)


def test_linearised_predictive_std_is_the_exact_predictive_std(full_post, linear):
    mean, cov = linear_posterior(linear.x, linear.y, PRIOR, NOISE)
    x = np.linspace(-3, 3, 21 * 3).reshape(21, 3).astype(np.float32)
    design = np.c_[x, np.ones(len(x))]
    pred = glm_predictive(full_post, x, batch_size=8)
    epistemic = np.sqrt(np.einsum("np,pq,nq->n", design, cov, design))
    np.testing.assert_allclose(pred.epistemic_std[:, 0], epistemic, rtol=1e-4)
    np.testing.assert_allclose(pred.std[:, 0], np.sqrt(epistemic**2 + NOISE**2), rtol=1e-4)
    np.testing.assert_allclose(pred.mean[:, 0], design @ mean, atol=1e-3)
    # the weight draws give the same predictive, within their sampling error
    draws = full_post.predict(x)
    np.testing.assert_allclose(draws.epistemic_std[:, 0], epistemic, rtol=0.1)


def _log_evidence(x, y, delta):
    """Exact log p(y | δ) of Bayesian linear regression: y ~ N(0, σ²I + ΦΦᵀ/δ)."""
    design = np.c_[x, np.ones(len(x))].astype(np.float64)
    cov = NOISE**2 * np.eye(len(x)) + design @ design.T / delta
    return stats.multivariate_normal(np.zeros(len(x)), cov).logpdf(np.ravel(y))


def test_marglik_prior_precision_is_the_closed_form_evidence_maximiser(linear):
    # δ* maximises the exact evidence. At θ* = the posterior mean under δ*, the Laplace
    # evidence is exact at δ* and below the exact one at every other δ (it drops
    # ½(θ* - μ_δ)ᵀ(H + δI)(θ* - μ_δ)), so it is tangent there and its maximiser is δ* too.
    res = optimize.minimize_scalar(lambda t: -_log_evidence(linear.x, linear.y, np.exp(t)),
                                   bounds=(-8, 8), method="bounded",
                                   options={"xatol": 1e-10})
    best = float(np.exp(res.x))
    mean, _ = linear_posterior(linear.x, linear.y, best**-0.5, NOISE)
    method = bnn.Laplace(init="network", subset="all", hessian="full",
                         prior_precision="marglik", num_samples=10)
    post = bnn.fit(_model(weights=mean), linear, method, key=0)
    assert post.info["prior_precision"] == pytest.approx(best, rel=1e-3)
    assert post.info["log_evidence"] == pytest.approx(-res.fun, rel=1e-4)


def test_marglik_noise_and_prior_are_the_closed_form_evidence_maximiser(linear):
    """σ and δ jointly: the exact evidence log N(y; 0, σ²I + ΦΦᵀ/δ) maximised over both,
    and Laplace started from another σ (the tangent argument above holds in both)."""
    design = np.c_[linear.x, np.ones(len(linear.x))].astype(np.float64)

    def neg_evidence(p):
        cov = np.exp(2 * p[1]) * np.eye(len(design)) + design @ design.T / np.exp(p[0])
        return -stats.multivariate_normal(np.zeros(len(design)), cov).logpdf(np.ravel(linear.y))

    res = optimize.minimize(neg_evidence, [0.0, np.log(0.8)], method="Nelder-Mead",
                            options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000})
    delta, sigma = np.exp(res.x)
    mean = np.linalg.solve(design.T @ design / sigma**2 + delta * np.eye(4),
                           design.T @ np.ravel(linear.y) / sigma**2)  # [w, b]
    model = linear_model(3, PRIOR, bnn.likelihoods.Gaussian(scale=0.8, learn_scale=True),
                         network=_model(weights=mean).network())
    post = bnn.fit(model, linear, bnn.Laplace(init="network", subset="all", hessian="full",
                                              prior_precision="marglik", noise="marglik",
                                              num_samples=10), key=0)
    assert post.info["noise_scale"] == pytest.approx(sigma, rel=1e-3)
    assert post.info["prior_precision"] == pytest.approx(delta, rel=1e-3)
    assert post.info["log_evidence"] == pytest.approx(-res.fun, rel=1e-4)
    pred = post.predict(linear.x[:5])
    np.testing.assert_allclose(pred.aleatoric_std, sigma, rtol=1e-3)


def test_marglik_at_other_weights_is_mackays_fixed_point(linear):
    # At any θ*, the maximiser solves δ = γ / ‖θ*‖² with γ = Σ λ_i / (λ_i + δ).
    weights = np.array([0.3, -0.2, 0.5, 0.1])
    post = bnn.fit(_model(weights=weights), linear,
                   bnn.Laplace(init="network", subset="all", hessian="full",
                               prior_precision="marglik", num_samples=10), key=0)
    design = np.c_[linear.x, np.ones(len(linear.x))].astype(np.float64)
    lam = np.linalg.eigvalsh(design.T @ design / NOISE**2)
    delta = post.info["prior_precision"]
    gamma = np.sum(lam / (lam + delta))
    sq = float(np.sum(np.asarray(weights, np.float32).astype(np.float64) ** 2))
    assert delta == pytest.approx(gamma / sq, rel=1e-4)


@pytest.mark.parametrize("hessian", ["kron", "lowrank"])
def test_kron_and_full_rank_lowrank_equal_full_for_one_dense_layer(hessian, linear):
    mean, cov = linear_posterior(linear.x, linear.y, PRIOR, NOISE)
    model = _model(weights=mean)
    full = bnn.fit(model, linear, bnn.Laplace(init="network", subset="all", hessian="full",
                                              num_samples=10), key=0)
    other = bnn.fit(model, linear, bnn.Laplace(init="network", subset="all", hessian=hessian,
                                               rank=4, num_samples=10), key=0)
    np.testing.assert_allclose(_cov_wb(other), _cov_wb(full), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(_cov_wb(other), cov, rtol=1e-3, atol=1e-6)
    assert other.info["log_evidence"] == pytest.approx(full.info["log_evidence"], rel=1e-4)
    x = np.asarray(linear.x[:7])
    a, b = (glm_predictive(p, x) for p in (full, other))
    np.testing.assert_allclose(a.std, b.std, rtol=1e-4)


@pytest.fixture(scope="module")
def mlp_regression():
    data = bnn.data.gap_regression(n=40, noise=0.1, key=0)
    net = bnn.models.MLP(1, (8,), 1, activation="tanh", rngs=nnx.Rngs(1))
    return bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=0.1)), data


def test_last_layer_laplace_varies_only_the_last_layer(mlp_regression):
    model, data = mlp_regression
    method = bnn.Laplace(init="network", subset="last_layer", num_samples=50)
    post = bnn.fit(model, data, method, key=0)
    layers = post.draws["net"]["layers"]
    for name in ("kernel", "bias"):
        assert np.ptp(np.asarray(layers[0][name]), axis=1).max() == 0
        assert np.std(np.asarray(layers[1][name]), axis=1).min() > 0
    assert post.info["laplace"].subset.layers == ("layers/1",)
    by_glob = bnn.fit(model, data, bnn.Laplace(init="network", subset=["layers/1/*"],
                                               num_samples=50), key=0)
    assert by_glob.info["laplace"].subset == post.info["laplace"].subset
    np.testing.assert_array_equal(by_glob.draws["net"]["layers"][1]["kernel"],
                                  layers[1]["kernel"])  # same key, same draws
    pred = post.predict(data.x)
    assert pred.epistemic_std.min() > 0 and np.all(np.isfinite(pred.std))


def test_ten_class_last_layer_kron_stores_only_the_factors():
    num_in, hidden, classes = 20, 16, 10
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, num_in)).astype(np.float32)
    y = rng.integers(0, classes, 64)
    net = bnn.models.MLP(num_in, (hidden,), classes, rngs=nnx.Rngs(0))
    model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Categorical())
    post = bnn.fit(model, (x, y), bnn.Laplace(init="network", prior_precision="marglik",
                                              num_samples=20), key=0)
    (factor,) = post.info["laplace"].curvature.factors
    assert factor.in_eigvecs.shape == (hidden + 1, hidden + 1)
    assert factor.out_eigvecs.shape == (classes, classes)
    assert factor.in_eigvals.shape == (hidden + 1,) and factor.out_eigvals.shape == (classes,)
    stored = jax.tree.leaves(post.info["laplace"].curvature)
    assert max(a.size for a in stored) == (hidden + 1) ** 2  # never ((hidden+1)·classes)²
    assert post.info["prior_precision"] > 0
    pred = post.predict(x[:10])
    np.testing.assert_allclose(pred.probs.sum(-1), 1.0, rtol=1e-5)
    dt = post.to_arviz(x[:10], y[:10])
    assert dt["posterior"].sizes["draw"] == 20


def test_probit_predictive_lies_between_the_map_confidence_and_one_half():
    data = bnn.data.two_moons(n=80, noise=0.1, key=0)
    net = bnn.models.MLP(2, (16,), 1, activation="tanh", rngs=nnx.Rngs(0))
    model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Bernoulli())
    method = bnn.Laplace(init=bnn.MAP(learning_rate=0.05, epochs=100, batch_size=None),
                         prior_precision="marglik", num_samples=10)
    post = bnn.fit(model, data, method, key=0)
    x = np.concatenate([np.asarray(data.x[:20]), np.array([[4.0, 4.0], [-5.0, 3.0]])])
    p_map = np.asarray(model.likelihood.probs(model.apply(post.predictive.center, x)))[:, 1]
    p = np.asarray(glm_predictive(post, x).probs)[:, 1]
    assert np.all(np.abs(p - 0.5) <= np.abs(p_map - 0.5) + 1e-6)
    assert np.all(np.sign(p - 0.5) == np.sign(p_map - 0.5))
    assert np.any(np.abs(p - 0.5) < np.abs(p_map - 0.5) - 1e-3)
    mc = glm_predictive(post, x, method="mc", key=jax.random.key(0), num_samples=4000)
    np.testing.assert_allclose(mc.probs[:, 1], p, atol=0.05)  # probit ≈ MC within ~0.02
    assert np.all(np.asarray(mc.epistemic) >= 0)
    # post.predict is the MC GLM predictive of the weight draws: the probit one within MC error
    assert isinstance(post.predictive, LinearisedPredictive)
    draws = post.predict(x, draw_batch_size=7)
    np.testing.assert_allclose(draws.probs[:, 1], mc.probs[:, 1], atol=0.12)


def test_mc_glm_predictive_of_the_draws_agrees_with_the_closed_form(mlp_regression):
    model, data = mlp_regression
    x = np.linspace(-2, 2, 15, dtype=np.float32)[:, None]
    post = bnn.fit(model, data, bnn.Laplace(init="network", subset="all", hessian="full",
                                            num_samples=3000), key=2)
    exact = glm_predictive(post, x)
    mc = post.predict(x, draw_batch_size=500)
    error = np.abs(np.asarray(mc.mean) - np.asarray(exact.mean))
    assert np.all(error <= 4 * np.asarray(exact.epistemic_std) / np.sqrt(3000) + 1e-5)
    np.testing.assert_allclose(mc.epistemic_std, exact.epistemic_std, rtol=0.1)
    # the network's own draws ("nn") are another predictive: curved, not linear in θ
    nn = bnn.fit(model, data, bnn.Laplace(init="network", subset="all", hessian="full",
                                          num_samples=3000, predictive="nn"), key=2)
    assert isinstance(nn.predictive, DrawPredictive)
    with pytest.raises(ValueError, match="predictive='glm'"):
        glm_predictive(nn, x)
    jax.tree.map(np.testing.assert_array_equal, nn.draws, post.draws)  # same draws
    assert not np.allclose(nn.predict(x, draw_batch_size=500).mean, mc.mean, atol=1e-6)
    # log density and the ArviZ export go through the same predictive
    lpd = post.log_predictive_density(data.x, data.y)
    assert np.all(np.isfinite(lpd))


def test_linearised_predictive_survives_save_and_load(mlp_regression, tmp_path):
    model, data = mlp_regression
    post = bnn.fit(model, data, bnn.Laplace(init="network", subset="all",
                                            prior_precision="marglik_layerwise",
                                            num_samples=20), key=0)
    post.save(tmp_path / "laplace.bnn")
    back = bnn.Posterior.load(tmp_path / "laplace.bnn")
    assert isinstance(back.predictive, LinearisedPredictive)
    assert back.method == post.method
    assert back.info["prior_precision"] == post.info["prior_precision"]
    x = np.asarray(data.x[:9])
    np.testing.assert_array_equal(back.predict(x).std, post.predict(x).std)
    np.testing.assert_array_equal(glm_predictive(back, x).std, glm_predictive(post, x).std)


def _dense_log_evidence(loglik, h, sq_dev, groups, log_deltas):
    """The Laplace log evidence of N(0, diag(δ_l)⁻¹) written out with a dense log-determinant."""
    delta = np.zeros(len(sq_dev))
    for idx, t in zip(groups, log_deltas, strict=True):
        delta[idx] = np.exp(t)
    logdet = np.linalg.slogdet(h + np.diag(delta))[1]
    return loglik + 0.5 * np.sum(np.log(delta)) - 0.5 * delta @ sq_dev - 0.5 * logdet


@pytest.mark.parametrize("hessian", ["kron", "diag"])
def test_layerwise_marglik_maximises_the_evidence_over_a_grid(hessian, mlp_regression):
    model, data = mlp_regression
    method = bnn.Laplace(init="network", subset="all", hessian=hessian,
                         prior_precision="marglik_layerwise", num_samples=10)
    post = bnn.fit(model, data, method, key=0)
    deltas = post.info["prior_precision"]
    assert set(deltas) == {"layers/0", "layers/1"}
    cov = post.info["laplace"]
    sub = cov.subset
    h = np.asarray(cov.curvature.dense(sub), np.float64)
    sq_dev = np.asarray(sub.ravel(model.init_position["net"]), np.float64) ** 2  # μ₀ = 0
    groups = [sub.groups()[m] for m in ("layers/0", "layers/1")]
    loglik = float(model.loglikelihood_fn(model.init_position, (data.x, data.y)))

    def neg(t):
        return -_dense_log_evidence(loglik, h, sq_dev, groups, t)

    # brute force: a 41×41 grid of log δ, then Nelder–Mead from its best point
    best = optimize.brute(neg, [(-4.0, 6.0)] * 2, Ns=41, finish=None)
    best = optimize.minimize(neg, best, method="Nelder-Mead",
                             options={"xatol": 1e-8, "fatol": 1e-10}).x
    np.testing.assert_allclose([deltas["layers/0"], deltas["layers/1"]], np.exp(best),
                               rtol=1e-3)
    assert post.info["log_evidence"] == pytest.approx(-neg(best), rel=1e-5)
    assert abs(np.log(deltas["layers/0"] / deltas["layers/1"])) > 0.5  # really per layer
    # the posterior covariance is (H + diag(δ_l))⁻¹
    delta = np.zeros(sub.size)
    for idx, m in zip(groups, ("layers/0", "layers/1"), strict=True):
        delta[idx] = deltas[m]
    np.testing.assert_allclose(cov.dense(), np.linalg.inv(h + np.diag(delta)), rtol=1e-3,
                               atol=1e-6)
    # one δ for all layers is a special case: its evidence is no higher
    scalar = bnn.fit(model, data, bnn.Laplace(init="network", subset="all", hessian=hessian,
                                              prior_precision="marglik", num_samples=10), key=0)
    assert scalar.info["log_evidence"] < post.info["log_evidence"]


def test_layerwise_marglik_of_one_layer_is_the_scalar_marglik(linear):
    model = _model(weights=np.array([0.3, -0.2, 0.5, 0.1]))
    posts = [bnn.fit(model, linear, bnn.Laplace(init="network", subset="all", prior_precision=p,
                                                num_samples=10), key=0)
             for p in ("marglik", "marglik_layerwise")]
    assert posts[1].info["prior_precision"] == {
        "layers/0": pytest.approx(posts[0].info["prior_precision"], rel=1e-6)}
    assert posts[1].info["log_evidence"] == pytest.approx(posts[0].info["log_evidence"],
                                                          rel=1e-6)
    np.testing.assert_allclose(posts[1].info["laplace"].dense(), posts[0].info["laplace"].dense(),
                               rtol=1e-5)


@pytest.mark.parametrize("subset", ["last_layer", pytest.param("all", marks=pytest.mark.slow)])
def test_kron_laplace_of_a_cnn_predicts(subset):
    net = bnn.models.mnist_cnn(input_shape=(8, 8, 1), num_classes=3)
    model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Categorical())
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 8, 8, 1)).astype(np.float32), rng.integers(0, 3, 40)
    post = bnn.fit(model, (x, y), bnn.Laplace(init="network", subset=subset,
                                              prior_precision="marglik_layerwise",
                                              num_samples=8, batch_size=16), key=0)
    layers = ("layers/0", "layers/1", "layers/2", "layers/3") if subset == "all" \
        else ("layers/3",)
    assert post.info["laplace"].subset.layers == layers
    assert set(post.info["prior_precision"]) == set(layers)
    # the factors, never a layer's whole block: conv 3·3·1+1 and 32, conv 3·3·32+1 and 64,
    # dense 2·2·64+1 and 128, head 128+1 and 3
    shapes = [(f.in_eigvecs.shape[0], f.out_eigvecs.shape[0])
              for f in post.info["laplace"].curvature.factors]
    assert shapes == [(10, 32), (289, 64), (257, 128), (129, 3)][-len(layers):]
    drawn = post.draws["net"]["layers"]
    for i in range(4):
        varies = np.ptp(np.asarray(drawn[i]["kernel"]), axis=1).max() > 0
        assert varies == (f"layers/{i}" in layers)
    pred = post.predict(x[:10])
    np.testing.assert_allclose(pred.probs.sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.asarray(pred.epistemic) > 0)
    probit = glm_predictive(post, x[:10])
    np.testing.assert_allclose(probit.probs.sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.isfinite(probit.entropy))


@pytest.mark.parametrize("kwargs, match", [
    ({"hessian": "block"}, "hessian"),
    ({"curvature": "fisher"}, "curvature"),
    ({"subset": []}, "subset"),
    ({"subset": "layers"}, "subset"),
    ({"prior_precision": -1.0}, "prior_precision"),
    ({"prior_precision": "evidence"}, "prior_precision"),
    ({"prior_precision": "marglik_layerwise", "hessian": "full"}, "prior_precision"),
    ({"prior_precision": "marglik_layerwise", "hessian": "lowrank"}, "prior_precision"),
    ({"init": "prior"}, "init"),
    ({"init": "random"}, "init"),
    ({"predictive": "probit"}, "predictive"),
    ({"num_samples": 0}, "num_samples"),
    ({"rank": 1.5}, "rank must be an int"),
    ({"noise": "ml"}, "noise"),
    ({"noise": "marglik", "curvature": "ef"}, "noise"),
    ({"noise": "marglik", "prior_precision": "marglik_layerwise"}, "noise"),
])
def test_bad_config_is_refused_naming_the_argument(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        bnn.Laplace(**kwargs)


def test_bad_model_or_subset_is_refused_before_any_fit(mlp_regression):
    model, data = mlp_regression
    with pytest.raises(ValueError, match="kron"):
        bnn.fit(model, data, bnn.Laplace(subset=["layers/1/kernel"]), key=0)
    with pytest.raises(ValueError, match="matches no parameter"):
        bnn.fit(model, data, bnn.Laplace(subset=["head/*"]), key=0)
    student = bnn.BNN(model.network(), bnn.priors.StudentT(), model.likelihood)
    with pytest.raises(ValueError, match="prior_precision"):
        bnn.fit(student, data, bnn.Laplace(), key=0)
    hetero = bnn.BNN(bnn.models.MLP(1, (4,), 2, rngs=nnx.Rngs(0)),
                     likelihood=bnn.likelihoods.Gaussian(heteroscedastic=True))
    with pytest.raises(ValueError, match="heteroscedastic"):
        bnn.fit(hetero, data, bnn.Laplace(), key=0)
    fixed = bnn.BNN(model.network(), likelihood=bnn.likelihoods.Gaussian(0.3))
    with pytest.raises(ValueError, match="learn_scale=True"):
        bnn.fit(fixed, data, bnn.Laplace(init="network", noise="marglik"), key=0)


def test_a_refit_on_an_equal_model_compiles_no_curvature_program():
    """A new BNN of the same architecture (other weights, other data of the same shape)
    reuses the curvature, log-likelihood, draw and linearised-predictive programs: they
    take the model by its program key, not by identity."""
    from bayesnn.inference import curvature, laplace

    def fit(seed):
        x = jax.random.normal(jax.random.key(seed), (40, 3))
        y = x[:, :1] - x[:, 1:2]
        net = bnn.models.MLP(3, (6,), 1, rngs=nnx.Rngs(seed))
        model = bnn.BNN(net, likelihood=bnn.likelihoods.Gaussian(0.5))
        return bnn.fit(model, (x, y), bnn.Laplace(init="network", subset="all",
                                                  prior_precision="marglik"), key=seed)

    chunks = (curvature._summed_curvature, curvature._summed_loglik, laplace._glm_chunk,
              laplace._drawn)
    glm_predictive(fit(0), np.ones((5, 3), np.float32))
    sizes = [f._cache_size() for f in chunks]
    post = fit(1)
    glm_predictive(post, np.zeros((5, 3), np.float32))
    assert [f._cache_size() for f in chunks] == sizes
    assert np.all(np.isfinite(post.info["prior_precision"]))
    # a model of another width is another program
    x = np.zeros((40, 3), np.float32)
    other = bnn.BNN(bnn.models.MLP(3, (7,), 1, rngs=nnx.Rngs(0)),
                    likelihood=bnn.likelihoods.Gaussian(0.5))
    bnn.fit(other, (x, x[:, :1]), bnn.Laplace(init="network", subset="all"), key=0)
    assert curvature._summed_curvature._cache_size() == sizes[0] + 1

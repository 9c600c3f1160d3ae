import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from bayesnn import likelihoods as lk

B = 6


def _normal(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_gaussian_fixed_log_prob():
    f, y = _normal((B, 2), 0), _normal((B, 2), 1)
    lik = lk.Gaussian(scale=0.3)
    expected = stats.norm.logpdf(y, loc=f, scale=0.3).sum(-1)
    np.testing.assert_allclose(jax.jit(lik.log_prob)(f, y, {}), expected, rtol=1e-5)
    assert lik.task == "regression"
    assert lik.num_outputs(2) == 2
    assert lik.init_params() == {} and lik.param_priors() == {}
    assert jax.jit(lik.sample)(jax.random.key(0), f, {}).shape == (B, 2)


def test_gaussian_learned_noise_prior_has_jacobian():
    lik = lk.Gaussian(scale=0.5, learn_scale=True, noise_prior_scale=2.0)
    params = lik.init_params()
    np.testing.assert_allclose(params["log_scale"], np.log(0.5))
    u = np.array([-1.0, 0.3, 2.0])
    expected = stats.halfnorm.logpdf(np.exp(u), scale=2.0) + u
    log_prior = jax.jit(jax.vmap(lambda u: lik.log_prior({"log_scale": u})))
    np.testing.assert_allclose(log_prior(u), expected, rtol=1e-5)

    f, y = _normal((B, 1), 2), _normal((B, 1), 3)
    params = {"log_scale": jnp.asarray(-0.4)}
    expected = stats.norm.logpdf(y, loc=f, scale=np.exp(-0.4)).sum(-1)
    np.testing.assert_allclose(jax.jit(lik.log_prob)(f, y, params), expected, rtol=1e-5)
    # d/du [sum log N(y | f, e^u) + log HalfNormal(e^u) + u] = sum(r^2 e^-2u - 1) - e^2u / s^2 + 1
    objective = jax.jit(jax.grad(lambda p: lik.log_prob(f, y, p).sum() + lik.log_prior(p)))
    expected = np.sum((y - f) ** 2 * np.exp(0.8) - 1) - np.exp(-0.8) / 4.0 + 1.0
    np.testing.assert_allclose(objective(params)["log_scale"], expected, rtol=1e-4)


def test_gaussian_heteroscedastic():
    lik = lk.Gaussian(heteroscedastic=True, min_scale=1e-3)
    assert lik.num_outputs(2) == 4
    f, y = _normal((B, 4), 4), _normal((B, 2), 5)
    d = lik.distribution(f, {})
    assert (d.batch_shape, d.event_shape) == ((B,), (2,))
    scale = special.log1p(np.exp(f[:, 2:].astype(np.float64))) + 1e-3
    expected = stats.norm.logpdf(y, loc=f[:, :2], scale=scale).sum(-1)
    np.testing.assert_allclose(jax.jit(lik.log_prob)(f, y, {}), expected, rtol=1e-5)
    assert jax.jit(lik.sample)(jax.random.key(0), f, {}).shape == (B, 2)
    stats_ = jax.jit(lik.draw_stats)(f, {})
    assert {k: v.shape for k, v in stats_.items()} == dict.fromkeys(stats_, (B, 2))
    np.testing.assert_allclose(stats_["noise_var"], scale**2, rtol=1e-5)


def test_gaussian_options_are_validated():
    with pytest.raises(ValueError, match="mutually exclusive"):
        lk.Gaussian(learn_scale=True, heteroscedastic=True)
    with pytest.raises(ValueError, match="scale must be > 0"):
        lk.Gaussian(scale=0.0)


@pytest.mark.parametrize("cls", [lk.Gaussian, lk.Categorical, lk.Bernoulli, lk.Probit])
@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_temperature_must_be_positive(cls, temperature):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        cls(temperature=temperature)
    assert cls(temperature=0.5).temperature == 0.5


def test_categorical_log_prob():
    f = _normal((B, 3), 6)
    y = np.array([0, 1, 2, 2, 1, 0])
    lik = lk.Categorical()
    assert lik.task == "classification" and lik.num_outputs(3) == 3
    expected = special.log_softmax(f, axis=-1)[np.arange(B), y]
    np.testing.assert_allclose(jax.jit(lik.log_prob)(f, y, {}), expected, rtol=1e-5)
    assert lik.distribution(f, {}).batch_shape == (B,)
    assert jax.jit(lik.sample)(jax.random.key(0), f, {}).shape == (B,)


def test_bernoulli_log_prob_and_probs():
    f = _normal((B, 1), 7)
    y = np.array([0, 1, 1, 0, 1, 0])
    lik = lk.Bernoulli()
    assert lik.num_outputs(2) == 1
    p = special.expit(f[:, 0])
    log_prob = jax.jit(lik.log_prob)(f, y, {})
    np.testing.assert_allclose(log_prob, stats.bernoulli.logpmf(y, p), rtol=1e-5)
    assert lik.distribution(f, {}).batch_shape == (B,)
    np.testing.assert_allclose(jax.jit(lik.draw_stats)(f, {})["probs"], np.c_[1 - p, p], rtol=1e-5)


def test_probit_log_prob_into_the_tails():
    """p(y = 1 | f) = Φ(f); the log-likelihood stays exact where Φ rounds to 0 or 1."""
    f = np.array([[-40.0], [-3.0], [0.0], [0.7], [2.0], [40.0]], np.float32)
    y = np.array([1, 0, 1, 0, 1, 0])
    lik = lk.Probit()
    assert lik.num_outputs(2) == 1 and lik.task == "classification"
    expected = stats.norm.logcdf(np.where(y == 1, 1, -1) * f[:, 0].astype(np.float64))
    # float32: log Φ near 0 carries an absolute error of ~3e-8
    np.testing.assert_allclose(jax.jit(lik.log_prob)(f, y, {}), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(lik.distribution(f, {}).log_prob(y), expected, rtol=1e-5,
                               atol=1e-7)
    p = stats.norm.cdf(f[:, 0])
    np.testing.assert_allclose(jax.jit(lik.draw_stats)(f, {})["probs"], np.c_[1 - p, p],
                               rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="Probit needs 1 network output"):
        lik.validate_targets(np.array([0, 1]), 2)


def test_gaussian_validate_targets():
    lik = lk.Gaussian()
    y = lik.validate_targets(np.arange(4), 1)
    assert y.shape == (4, 1) and y.dtype == np.float32
    assert lk.Gaussian(heteroscedastic=True).validate_targets(np.zeros((4, 2)), 4).shape == (4, 2)
    with pytest.raises(ValueError, match=r"shape \(N, 3\).*got \(4, 2\)"):
        lik.validate_targets(np.zeros((4, 2)), 3)
    with pytest.raises(ValueError, match=r"shape \(N, 2\).*got \(4,\)"):
        lik.validate_targets(np.zeros(4), 2)
    with pytest.raises(TypeError, match="dtype <U1"):
        lik.validate_targets(np.array(["a", "b"]), 1)
    with pytest.raises(ValueError, match="NaN"):
        lik.validate_targets(np.array([0.0, np.nan]), 1)


def test_categorical_validate_targets():
    lik = lk.Categorical()
    y = lik.validate_targets(np.array([0.0, 2.0, 1.0]), 3)
    assert y.dtype == np.int32 and y.tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="float64 must be whole numbers"):
        lik.validate_targets(np.array([0.0, 0.5]), 3)
    with pytest.raises(TypeError, match="dtype <U1"):
        lik.validate_targets(np.array(["a", "b"]), 3)
    with pytest.raises(ValueError, match=r"\[0, 3\); found min -1, max 3"):
        lik.validate_targets(np.array([-1, 0, 3]), 3)
    with pytest.raises(ValueError, match="integer class indices.*one-hot"):
        lik.validate_targets(np.eye(3), 3)


def test_bernoulli_validate_targets():
    lik = lk.Bernoulli()
    assert lik.validate_targets(np.array([True, False]), 1).tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"\[0, 2\); found min 0, max 2"):
        lik.validate_targets(np.array([0, 1, 2]), 1)
    with pytest.raises(ValueError, match="1 network output"):
        lik.validate_targets(np.array([0, 1]), 2)


def _moments(draws):
    """Mean and variance over a list of per-draw stat dicts."""
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *draws)
    return jax.tree.map(lambda a: a.mean(0), stacked), jax.tree.map(lambda a: a.var(0), stacked)


def test_regression_summarize_decomposes_variance():
    # Two draws: means 1 and 3, noise variances 0.5 and 1.5.
    mean, noise_var = np.array([1.0, 3.0]), np.array([0.5, 1.5])
    avg = {"mean": mean.mean(), "noise_var": noise_var.mean()}
    var = {"mean": mean.var(), "noise_var": noise_var.var()}
    avg, var = (jax.tree.map(lambda x: jnp.full((2, 1), x, jnp.float32), t) for t in (avg, var))
    pred = jax.jit(lk.Gaussian().summarize)(avg, var)
    assert isinstance(pred, lk.RegressionPrediction)
    np.testing.assert_allclose(pred.mean, 2.0)
    np.testing.assert_allclose(pred.epistemic_std, 1.0)
    np.testing.assert_allclose(pred.aleatoric_std, 1.0)
    np.testing.assert_allclose(pred.std, np.sqrt(2.0), rtol=1e-6)


def test_regression_summarize_from_draws():
    lik = lk.Gaussian(learn_scale=True)
    fs, log_scales = _normal((5, B, 1), 8), [-1.0, 0.0, 0.5, -0.2, 0.1]
    draws = [
        lik.draw_stats(f, {"log_scale": jnp.asarray(s)})
        for f, s in zip(fs, log_scales, strict=True)
    ]
    pred = lik.summarize(*_moments(draws))
    np.testing.assert_allclose(pred.mean, fs.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pred.epistemic_std, fs.std(0), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(pred.aleatoric_std**2, np.mean(np.exp(2 * np.array(log_scales))))


def test_classification_summarize_known_values():
    # Row 0: draws [1, 0] and [0, 1] disagree confidently -> all uncertainty is epistemic.
    # Row 1: both draws are [0.5, 0.5] -> all uncertainty is aleatoric.
    avg = {"probs": jnp.full((2, 2), 0.5), "entropy": jnp.array([0.0, np.log(2)])}
    pred = jax.jit(lk.Categorical().summarize)(avg, {})
    assert isinstance(pred, lk.ClassificationPrediction)
    np.testing.assert_allclose(pred.entropy, [np.log(2), np.log(2)], rtol=1e-6)
    np.testing.assert_allclose(pred.aleatoric, [0.0, np.log(2)], rtol=1e-6)
    np.testing.assert_allclose(pred.epistemic, [np.log(2), 0.0], rtol=1e-6, atol=1e-7)


def test_classification_draw_stats_handle_zero_probs():
    f = jnp.array([[0.0, -jnp.inf, 0.0]])
    stats_ = jax.jit(lk.Categorical().draw_stats)(f, {})
    np.testing.assert_allclose(stats_["probs"], [[0.5, 0.0, 0.5]])
    np.testing.assert_allclose(stats_["entropy"], [np.log(2)], rtol=1e-6)


def test_classification_summarize_from_draws():
    lik = lk.Categorical()
    fs = _normal((4, B, 3), 9)
    draws = [lik.draw_stats(f, {}) for f in fs]
    pred = lik.summarize(*_moments(draws))
    p = special.softmax(fs.astype(np.float64), axis=-1)
    mean_p = p.mean(0)
    np.testing.assert_allclose(pred.probs, mean_p, rtol=1e-5)
    np.testing.assert_allclose(pred.entropy, stats.entropy(mean_p, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(pred.aleatoric, stats.entropy(p, axis=-1).mean(0), rtol=1e-5)
    assert np.all(pred.epistemic >= 0)


def test_one_shape_convention_for_scalar_targets():
    """Every likelihood with one target per example takes y as (N,) or (N, 1)."""
    labels = np.array([0, 1, 1, 0])
    for lik, outputs in ((lk.Bernoulli(), 1), (lk.Probit(), 1), (lk.Categorical(), 2)):
        for y in (labels, labels[:, None]):
            out = lik.validate_targets(y, outputs)
            assert out.shape == (4,) and out.dtype == np.int32 and out.tolist() == [0, 1, 1, 0]
    for y in (labels, labels[:, None]):
        assert lk.Gaussian().validate_targets(y, 1).shape == (4, 1)
        assert lk.Gaussian(heteroscedastic=True).validate_targets(y, 2).shape == (4, 1)
    with pytest.raises(ValueError, match=r"one-hot rows\? pass y.argmax"):
        lk.Categorical().validate_targets(np.eye(3)[[0, 1, 2, 0]], 3)
    with pytest.raises(ValueError, match=r"shape \(N,\) or \(N, 1\), got shape \(4, 3\)$"):
        lk.Bernoulli().validate_targets(np.zeros((4, 3)), 1)


def test_output_count_errors_say_what_the_network_needs():
    with pytest.raises(ValueError, match=r"2 outputs per target \(mean and scale\).* has 1"):
        lk.Gaussian(heteroscedastic=True).validate_targets(np.zeros(4), 1)
    with pytest.raises(ValueError, match="has 3"):
        lk.Gaussian(heteroscedastic=True).validate_targets(np.zeros((4, 1)), 3)
    with pytest.raises(ValueError, match="one output per class.*use Bernoulli"):
        lk.Categorical().validate_targets(np.array([0, 1]), 1)

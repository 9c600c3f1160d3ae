import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy import stats

from bayesnn import priors
from bayesnn.tree import flatten_paths


@pytest.fixture
def params():
    rng = np.random.default_rng(0)

    def dense(n_in, n_out):
        return {
            "kernel": jnp.asarray(rng.normal(size=(n_in, n_out)), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=n_out), jnp.float32),
        }

    return {"layers": {0: dense(3, 4), 1: dense(4, 2)}}


def _leaves(params):
    return [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]


@pytest.mark.parametrize(
    ("prior", "logpdf"),
    [
        (priors.Normal(scale=0.7), lambda x: stats.norm.logpdf(x, scale=0.7)),
        (priors.Laplace(scale=0.5), lambda x: stats.laplace.logpdf(x, scale=0.5)),
        (priors.StudentT(df=4.0, scale=2.0), lambda x: stats.t.logpdf(x, df=4.0, scale=2.0)),
    ],
)
def test_log_prob_matches_scipy(params, prior, logpdf):
    expected = sum(logpdf(x).sum() for x in _leaves(params))
    np.testing.assert_allclose(jax.jit(prior.log_prob)(params), expected, rtol=1e-5)


def test_log_prob_is_differentiable(params):
    grads = jax.jit(jax.grad(priors.Normal(scale=2.0).log_prob))(params)
    jax.tree.map(lambda g, x: np.testing.assert_allclose(g, -x / 4.0, rtol=1e-6), grads, params)


def test_fan_in_normal_std(params):
    conv = {"conv": {"kernel": jnp.zeros((3, 3, 2, 8)), "bias": jnp.zeros((8,))}}
    dists = priors.FanInNormal(scale=2.0).distributions({**params, **conv})
    expected = {
        "layers/0/kernel": 2.0 / np.sqrt(3),
        "layers/0/bias": 2.0,
        "layers/1/kernel": 2.0 / np.sqrt(4),
        "layers/1/bias": 2.0,
        "conv/kernel": 2.0 / np.sqrt(18),
        "conv/bias": 2.0,
    }
    assert set(dists) == set(expected)
    for path, std in expected.items():
        np.testing.assert_allclose(np.sqrt(dists[path].variance), std, rtol=1e-6)


def test_distributions_shapes_and_sum(params):
    prior = priors.PerParameter({"*/kernel": priors.Laplace()}, default=priors.Normal())
    dists = prior.distributions(params)
    named = flatten_paths(params)
    assert list(dists) == list(named)
    for path, d in dists.items():
        assert d.batch_shape == named[path].shape
        assert d.event_shape == ()
    total = jax.jit(lambda p: sum(d.log_prob(p[k]).sum() for k, d in dists.items()))(named)
    np.testing.assert_allclose(total, jax.jit(prior.log_prob)(params), rtol=1e-6)


def test_per_parameter_first_rule_wins_and_default(params):
    prior = priors.PerParameter(
        {"layers/0/*": priors.Normal(scale=3.0), "*/kernel": priors.Normal(scale=5.0)},
        default=priors.Normal(scale=7.0),
    )
    scales = {p: float(np.sqrt(d.variance).flat[0]) for p, d in prior.distributions(params).items()}
    assert scales == {
        "layers/0/kernel": 3.0,
        "layers/0/bias": 3.0,
        "layers/1/kernel": 5.0,
        "layers/1/bias": 7.0,
    }


def test_per_parameter_point_estimates(params):
    prior = priors.PerParameter({"layers/1/kernel": priors.Normal(scale=2.0)})
    assert prior.mask(params) == {
        "layers": {0: {"kernel": False, "bias": False}, 1: {"kernel": True, "bias": False}}
    }
    assert list(prior.distributions(params)) == ["layers/1/kernel"]
    expected = stats.norm.logpdf(np.asarray(params["layers"][1]["kernel"]), scale=2.0).sum()
    np.testing.assert_allclose(prior.log_prob(params), expected, rtol=1e-6)

    draw = prior.sample(jax.random.key(1), params)
    for path in ("layers/0/kernel", "layers/0/bias", "layers/1/bias"):
        assert flatten_paths(draw)[path] is flatten_paths(params)[path]
    assert not np.allclose(draw["layers"][1]["kernel"], params["layers"][1]["kernel"])


def test_per_parameter_unmatched_pattern(params):
    prior = priors.PerParameter({"layers/9/*": priors.Normal()})
    with pytest.raises(ValueError, match=r"'layers/9/\*' matches no parameter.*layers/0/kernel"):
        prior.log_prob(params)


def test_sample_shapes_and_dtypes(params):
    draw = jax.jit(priors.FanInNormal().sample)(jax.random.key(2), params)
    assert jax.tree.structure(draw) == jax.tree.structure(params)
    assert jax.tree.map(jnp.shape, draw) == jax.tree.map(jnp.shape, params)
    assert {x.dtype for x in jax.tree.leaves(draw)} == {jnp.dtype("float32")}


def test_mask_all_bayesian(params):
    assert all(jax.tree.leaves(priors.Normal().mask(params)))


def test_normal_pytree_loc(params):
    prior = priors.Normal(scale=0.5, loc=params)
    expected = sum(stats.norm.logpdf(x, loc=x, scale=0.5).sum() for x in _leaves(params))
    np.testing.assert_allclose(jax.jit(prior.log_prob)(params), expected, rtol=1e-6)
    draw = jax.jit(prior.sample)(jax.random.key(3), params)
    diff = ravel_pytree(draw)[0] - ravel_pytree(params)[0]
    assert np.abs(diff.mean()) < 5 * 0.5 / np.sqrt(diff.size)


def test_normal_loc_missing_path(params):
    prior = priors.Normal(loc={"layers": {0: params["layers"][0]}})
    with pytest.raises(ValueError, match="no value for parameter 'layers/1/"):
        prior.log_prob(params)


@pytest.mark.parametrize(
    ("prior", "std"),
    [
        (priors.Normal(scale=2.0, loc=1.0), 2.0),
        (priors.Laplace(scale=1.5), 1.5 * np.sqrt(2)),
    ],
)
def test_sample_moments(prior, std):
    n = 20_000
    draw = jax.jit(prior.sample)(jax.random.key(4), {"w": jnp.zeros((n,))})["w"]
    loc = getattr(prior, "loc", 0.0)
    # Within 5 standard errors: se(mean) = std / sqrt(n); se(std) ~ std * sqrt((kurtosis - 1) / 4n)
    # with kurtosis 3 (Normal) or 6 (Laplace), i.e. at most 0.8% of std here.
    assert abs(float(draw.mean()) - loc) < 5 * std / np.sqrt(n)
    np.testing.assert_allclose(float(draw.std()), std, rtol=5 * np.sqrt(5 / (4 * n)))


@pytest.mark.parametrize(
    "make",
    [
        lambda: priors.Normal(scale=0.0),
        lambda: priors.FanInNormal(scale=-1.0),
        lambda: priors.Laplace(scale=0.0),
        lambda: priors.StudentT(df=0.0),
    ],
)
def test_invalid_scale(make):
    with pytest.raises(ValueError, match="must be > 0"):
        make()

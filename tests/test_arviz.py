import arviz as az
import jax
import numpy as np
import pytest
from flax import nnx

import bayesnn as bnn
from bayesnn import arviz as bz
from bayesnn.posterior import DropoutPredictive
from bayesnn.tree import flatten_paths

C, D, N = 2, 40, 9
X = np.random.default_rng(0).normal(size=(N, 2)).astype(np.float32)
Y_REG = np.sin(X[:, 0])
Y_CLS = np.arange(N) % 3


def _draws(model, num_chains, num_draws, seed=0):
    keys = jax.random.split(jax.random.key(seed), num_chains * num_draws)
    draws = jax.jit(jax.vmap(model.init_params))(keys)
    return jax.tree.map(
        lambda a: np.asarray(a).reshape((num_chains, num_draws) + a.shape[1:]), draws
    )


def _model(likelihood, out, dropout=0.0):
    net = bnn.models.MLP(2, (4,), out, dropout=dropout, rngs=nnx.Rngs(0))
    return bnn.BNN(net, bnn.priors.Normal(1.0), likelihood)


@pytest.fixture(scope="module")
def regression():
    model = _model(bnn.likelihoods.Gaussian(scale=0.5), 1)
    stats = {"accept_prob": np.full((C, D), 0.8), "is_divergent": np.zeros((C, D), bool)}
    return bnn.Posterior(model, _draws(model, C, D), None, {"sample_stats": stats, "seconds": 2.0})


@pytest.fixture(scope="module")
def classification():
    """Random weights with MC dropout on top (a ``DropoutPredictive``, as MCDropout sets)."""
    model = _model(bnn.likelihoods.Categorical(), 3, dropout=0.5)
    predictive = DropoutPredictive(jax.random.key_data(jax.random.key(5)))
    return bnn.Posterior(model, _draws(model, C, D, seed=1), predictive=predictive)


@pytest.fixture(scope="module")
def regression_tree(regression):
    return regression.to_arviz(X, Y_REG, x_new=X[::-1], key=0)


def test_groups_dims_and_shapes(regression, regression_tree):
    dt = regression_tree
    assert set(dt.children) == {
        "posterior", "sample_stats", "log_likelihood", "observed_data", "posterior_predictive",
        "constant_data", "predictions", "predictions_constant_data",
    }
    post = dt["posterior"]
    kernel = post["net.layers.0.kernel"]
    assert kernel.dims == ("chain", "draw", "layers.0.in", "layers.0.out")
    assert post["net.layers.0.bias"].dims == ("chain", "draw", "layers.0.out")
    for path, value in flatten_paths(regression.draws).items():
        np.testing.assert_array_equal(post[bz.variable_name(path)].values, value)
    assert dt["log_likelihood"]["y"].dims == ("chain", "draw", "obs")
    assert dt["log_likelihood"]["y"].shape == (C, D, N)
    assert dt["posterior_predictive"]["y"].shape == (C, D, N)
    assert dt["predictions"]["y"].shape == (C, D, N)
    np.testing.assert_allclose(dt["observed_data"]["y"].values, Y_REG, rtol=1e-6)
    np.testing.assert_array_equal(dt["constant_data"]["x"].values, X)
    assert dt["sample_stats"]["acceptance_rate"].shape == (C, D)  # renamed to ArviZ's names
    assert dt["sample_stats"]["diverging"].dtype == bool
    assert dt.attrs["seconds"] == 2.0


def test_log_likelihood_and_predictive_draws_are_right(regression, regression_tree):
    model = regression.model

    @jax.jit
    @jax.vmap
    def loglik_and_mean(position):
        return (model.log_prob_per_example(position, X, Y_REG[:, None]),
                model.apply(position, X)[:, 0])

    ll, means = loglik_and_mean(regression.flat_draws())
    np.testing.assert_allclose(regression_tree["log_likelihood"]["y"].values.reshape(C * D, N),
                               ll, rtol=1e-5, atol=1e-5)
    noise = regression_tree["posterior_predictive"]["y"].values.reshape(C * D, N) - means
    assert np.std(noise) == pytest.approx(0.5, rel=0.15)  # the likelihood's scale
    assert abs(np.mean(noise)) < 0.1


def test_netcdf_round_trip(regression_tree, tmp_path):
    path = tmp_path / "posterior.nc"
    regression_tree.to_netcdf(path)
    back = az.from_netcdf(path)
    assert back.identical(regression_tree)


def test_loo_runs_on_the_log_likelihood(regression, regression_tree):
    with pytest.warns(UserWarning):  # Pareto k warnings are expected for random weights
        loo = az.loo(regression_tree)
    assert loo.n_data_points == N and loo.n_samples == C * D
    lppd = float(np.sum(regression.log_predictive_density(X, Y_REG)))
    assert np.isfinite(loo.elpd)
    assert loo.elpd + loo.p == pytest.approx(lppd, rel=1e-4)  # p_loo = lppd - elpd_loo


def test_classification_tree_with_mc_dropout(classification):
    dt = bz.to_datatree(classification, X, Y_CLS, key=3)
    pp = dt["posterior_predictive"]["y"].values
    assert pp.shape == (C, D, N) and np.issubdtype(pp.dtype, np.integer)
    assert pp.min() >= 0 and pp.max() <= 2
    assert "sample_stats" not in dt.children
    # draw s uses the dropout mask that Posterior.predict gives it
    ll = dt["log_likelihood"]["y"].values
    lpd = jax.nn.logsumexp(ll.reshape(C * D, N), axis=0) - np.log(C * D)
    np.testing.assert_allclose(lpd, classification.log_predictive_density(X, Y_CLS), rtol=1e-5)


def test_chunk_sizes_do_not_change_the_draws(regression, regression_tree):
    chunked = bz.to_datatree(regression, x_new=X[::-1], key=0, batch_size=4, draw_batch_size=7)
    # the same noise draws; the network outputs agree to float32 rounding (exactly on CPU;
    # a GPU multiplies matrices of other shapes in another order)
    np.testing.assert_allclose(chunked["predictions"]["y"], regression_tree["predictions"]["y"],
                               rtol=1e-5, atol=1e-6)


def test_thinned_predictive_and_skipped_stats(regression):
    bad = bnn.Posterior(regression.model, regression.draws, None,
                        {"sample_stats": {"per_step": np.zeros(7)}})
    with pytest.warns(UserWarning, match="per_step"):
        dt = bz.to_datatree(bad, x_new=X[:3], num_pp_samples=5)
    assert "sample_stats" not in dt.children and "posterior_predictive" not in dt.children
    np.testing.assert_array_equal(dt["predictions"]["draw"], [0, 10, 20, 29, 39])
    with pytest.raises(ValueError, match="needs the inputs"):
        bz.to_datatree(regression, y=Y_REG)
    with pytest.raises(ValueError, match="rows"):
        bz.to_datatree(regression, X, Y_REG[:-1])


def _permute_hidden(position, perm):
    net = position["net"]["layers"]
    layers = {0: {"kernel": net[0]["kernel"][:, perm], "bias": net[0]["bias"][perm]},
              1: {"kernel": net[1]["kernel"][perm], "bias": net[1]["bias"]}}
    return {"net": {"layers": layers}, "lik": position["lik"]}


def test_predictive_rhat_sees_through_permuted_modes(regression):
    """Chains around one mode and around its hidden-unit permutation: the weights look
    unmixed, the functions they compute agree."""
    model = regression.model
    mode = jax.tree.map(lambda a: np.asarray(a[0, 0]), regression.draws)
    mode["net"]["layers"][0]["bias"] = np.arange(4.0) / 4  # distinct hidden units
    modes = [mode, _permute_hidden(mode, [3, 2, 1, 0])]
    noise = _draws(model, 2, 100, seed=10)
    draws = jax.tree.map(lambda n, *m: np.stack(m)[:, None] + 0.05 * n, noise, *modes)
    diag = bnn.Posterior(model, draws).diagnostics(X)
    assert diag["max_rhat"] > 1.5
    assert diag["max_rhat_pred"] < 1.05
    assert diag["min_ess_bulk_pred"] > 50 and diag["min_ess_tail_pred"] > 50


def test_diagnostics_flag_disagreeing_chains(regression):
    shifted = jax.tree.map(lambda a: a + np.array([0.0, 2.0]).reshape(2, *[1] * (a.ndim - 1)),
                           regression.draws)
    diag = bz.diagnostics(bnn.Posterior(regression.model, shifted), X)
    assert diag["max_rhat"] > 2 and diag["max_rhat_pred"] > 1.5
    assert diag["num_chains"] == C and diag["num_draws"] == D
    one_chain = bnn.Posterior(regression.model, jax.tree.map(lambda a: a[:1], regression.draws))
    with pytest.raises(ValueError, match="2 chains"):
        one_chain.diagnostics()

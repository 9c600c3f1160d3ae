"""MCLMC ensembles: the closed-form linear posterior, tuning info, starts, resume, checks."""

import jax
import numpy as np
import pytest
from flax import nnx

import bayesnn as bnn
from bayesnn.bnn import Batch
from bayesnn.inference import programs
from bayesnn.inference.driver import thinned_steps
from bayesnn.testing import assert_gaussian_matches, linear_model, linear_posterior, linear_weights
from bayesnn.tree import tree_size

PRIOR, NOISE = 0.7, 0.5  # a prior scale other than 1 tells a variance from a std
SAMPLER = dict(num_warmup=400, num_samples=400, thinning=2, num_chains=4, init="random")


def _model():
    return linear_model(3, PRIOR, bnn.likelihoods.Gaussian(scale=NOISE))


@pytest.fixture(scope="module")
def linear():
    return bnn.data.linear_regression(n=40, num_features=3, noise=NOISE, key=0)[0]


@pytest.fixture(scope="module")
def mclmc(linear):
    return bnn.fit(_model(), linear, bnn.MCLMC(**SAMPLER), key=0, progress=False)


def _check_linear_posterior(post, linear):
    mean, cov = linear_posterior(linear.x, linear.y, PRIOR, NOISE)
    assert_gaussian_matches(linear_weights(post.draws), mean, cov, min_ess=200)


def test_mclmc_recovers_the_linear_posterior(mclmc, linear):
    _check_linear_posterior(mclmc, linear)
    mean, _ = linear_posterior(linear.x, linear.y, PRIOR, NOISE)
    pred = mclmc.predict(linear.x)
    np.testing.assert_allclose(pred.mean[:, 0], np.c_[linear.x, np.ones(40)] @ mean, atol=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("key", [1, 2, 3])
def test_mclmc_recovers_the_linear_posterior_for_other_keys(key, linear):
    _check_linear_posterior(bnn.fit(_model(), linear, bnn.MCLMC(**SAMPLER), key=key), linear)


def test_tuned_parameters_and_energy_statistics(mclmc, linear):
    info = mclmc.info
    assert info["L"].shape == info["step_size"].shape == (4,)
    assert np.all(np.isfinite(info["L"]) & (info["L"] > 0))
    assert np.all(np.isfinite(info["step_size"]) & (info["step_size"] > 0))
    assert not np.allclose(info["step_size"], 0.005)  # tuned away from the initial value
    stats = info["sample_stats"]
    assert set(stats) == {"energy_change", "lp"}
    assert all(v.shape == (4, 400) for v in stats.values())
    # Tuned for Var[ΔE] / d = 5e-4 at most (a short tuning errs on the small side).
    assert np.all((info["energy_variance"] > 0) & (info["energy_variance"] < 5e-3))
    assert np.all(info["num_reverted"] == 0) and not info["interrupted"]
    assert info["num_steps"] >= 800 and info["seconds"] >= info["tuning_seconds"] > 0
    # lp is the log joint density of each draw
    pos = jax.tree.map(lambda a: a[1, :3], mclmc.draws)
    lp = jax.vmap(lambda p: mclmc.model.logdensity_fn(p, Batch(linear.x, linear.y), 40))(pos)
    np.testing.assert_allclose(stats["lp"][1, :3], lp, rtol=1e-4)


def test_chains_differ_and_predictions_mix(mclmc, linear):
    w = linear_weights(mclmc.draws)
    assert w.shape == (4, 400, 4) and (mclmc.num_chains, mclmc.num_draws) == (4, 400)
    assert not np.allclose(w[0], w[1])
    diag = mclmc.diagnostics(linear.x)
    assert diag["max_rhat_pred"] < 1.05 and diag["min_ess_bulk_pred"] > 200, diag
    dt = mclmc.to_arviz(linear.x, linear.y)
    assert "energy_change" in dt["sample_stats"]


def test_each_chain_starts_at_its_own_ensemble_member(linear):
    members = bnn.MAP(learning_rate=0.05, epochs=30, batch_size=None)
    method = bnn.MCLMC(num_warmup=0, num_samples=3, thinning=1, num_chains=2, init=members,
                       step_size=0.01)
    post = bnn.fit(_model(), linear, method, key=0, progress=False)
    ensemble = bnn.fit(_model(), linear, bnn.Ensemble(members, size=2),
                       key=jax.random.split(jax.random.key(0), 3)[0], progress=False)
    np.testing.assert_array_equal(post.info["map_info"]["epochs_run"], [30, 30])
    start = linear_weights(ensemble.draws)[:, 0]
    first = linear_weights(post.draws)[:, 0]
    assert not np.allclose(start[0], start[1])
    np.testing.assert_allclose(first, start, atol=0.05)  # one small step from each member
    # Without tuning: L = sqrt(d) and the given step size.
    np.testing.assert_allclose(post.info["L"], np.sqrt(tree_size(_model().init_position)))
    np.testing.assert_allclose(post.info["step_size"], 0.01)


@pytest.mark.slow
def test_same_key_same_draws_and_thinning(linear):
    method = bnn.MCLMC(num_warmup=50, num_samples=6, thinning=3, num_chains=2, init="network")
    a, b = (bnn.fit(_model(), linear, method, key=5, progress=False) for _ in range(2))
    jax.tree.map(np.testing.assert_array_equal, a.draws, b.draws)
    assert a.num_draws == 6 and a.info["num_steps"] >= 18
    np.testing.assert_array_equal(np.flatnonzero(thinned_steps(0, 3, 4)), [3, 7, 11])


@pytest.mark.slow
def test_interrupted_run_resumes_bit_identically(linear, tmp_path, monkeypatch,
                                                ctrl_c_after):
    method = bnn.MCLMC(num_warmup=50, num_samples=40, thinning=2, num_chains=2, init="random")
    path = tmp_path / "run.ckpt"
    ctrl_c_after(1)
    with pytest.warns(UserWarning, match="interrupted after"):
        part = bnn.fit(_model(), linear, method, key=3, checkpoint=path, progress=False)
    assert part.info["interrupted"] and 0 < part.num_draws < 40
    monkeypatch.undo()  # Ctrl-C no more
    resumed = bnn.fit(_model(), linear, method, key=3, checkpoint=path, progress=False)
    fresh = bnn.fit(_model(), linear, method, key=3, progress=False)
    assert not resumed.info["interrupted"]
    jax.tree.map(np.testing.assert_array_equal, (resumed.draws, resumed.info["sample_stats"]),
                 (fresh.draws, fresh.info["sample_stats"]))


def test_a_second_fit_traces_neither_tuning_nor_sampling(monkeypatch):
    traces = []
    note = programs.note_compiling
    monkeypatch.setattr(programs, "note_compiling", lambda: (traces.append(1), note()))
    programs.clear_programs()
    method = bnn.MCLMC(num_warmup=20, num_samples=5, thinning=2, num_chains=2, init="random")
    posts = []
    for seed in (0, 1):  # other weights, other same-shaped data, another key
        data = bnn.data.linear_regression(n=30, num_features=3, noise=NOISE, key=seed)[0]
        model = linear_model(3, PRIOR, bnn.likelihoods.Gaussian(NOISE, learn_scale=True))
        posts.append(bnn.fit(model, data, method, key=seed, progress=False))
        assert len(traces) == 2  # the tuning and the sampling program, traced once
    programs.clear_programs()
    assert not np.allclose(linear_weights(posts[0].draws), linear_weights(posts[1].draws))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"num_samples": 0}, ValueError, "num_samples"),
    ({"num_warmup": 1.5}, TypeError, "num_warmup"),
    ({"thinning": 0}, ValueError, "thinning"),
    ({"num_chains": 0}, ValueError, "num_chains"),
    ({"init": "prior-ish"}, ValueError, "init"),
    ({"step_size": 0.0}, ValueError, "step_size"),
    ({"desired_energy_var": -1.0}, ValueError, "desired_energy_var"),
])
def test_bad_arguments_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        bnn.MCLMC(**kwargs)


def test_point_estimate_weights_are_refused(linear):
    prior = bnn.priors.PerParameter({"*/kernel": bnn.priors.Normal(PRIOR)})
    model = bnn.BNN(bnn.models.MLP(3, (), 1, rngs=nnx.Rngs(0)), prior,
                    bnn.likelihoods.Gaussian(scale=NOISE))
    with pytest.raises(ValueError, match="point estimates"):
        bnn.fit(model, linear, bnn.MCLMC(), key=0)

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import bayesnn as bnn
from bayesnn.inference import programs
from bayesnn.inference.driver import NonFiniteError
from bayesnn.inference.step_size import curvature_rows
from bayesnn.inference.swag import STABLE_FRACTION, collect, covariance, init_moments, sample
from bayesnn.testing import assert_gaussian_matches, linear_model, linear_posterior, linear_weights

PRIOR, NOISE, N = 0.7, 0.5, 200


def test_collected_moments_are_those_of_the_iterates():
    rng = np.random.default_rng(0)
    iterates = rng.normal(size=(13, 5)).astype(np.float32)
    tree = lambda v: {"a": v[:2], "b": {"c": v[2:].reshape(3, 1)}}  # noqa: E731
    moments = init_moments(tree(jnp.zeros(5)), rank=4)
    for v in iterates:
        moments = collect(moments, tree(jnp.asarray(v)))
    flat = lambda t: np.concatenate([np.ravel(t["a"]), np.ravel(t["b"]["c"])])  # noqa: E731
    np.testing.assert_allclose(flat(moments.mean), iterates.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flat(moments.sq_mean), (iterates**2).mean(0), rtol=1e-5)
    # the ring buffer holds the last 4 deviations from the running mean, oldest overwritten
    running = np.cumsum(iterates, 0) / np.arange(1, 14)[:, None]
    expected = {i % 4: iterates[i] - running[i] for i in range(9, 13)}
    dev = np.concatenate([moments.deviations["a"],
                          moments.deviations["b"]["c"].reshape(4, 3)], 1)
    for slot, d in expected.items():
        np.testing.assert_allclose(dev[slot], d, rtol=1e-5, atol=1e-6)
    assert int(moments.count) == 13


@pytest.mark.parametrize("count", [3, 9])
def test_draws_have_the_swag_mean_and_covariance(count):
    rng = np.random.default_rng(count)
    moments = init_moments({"w": jnp.zeros(4)}, rank=5)
    for v in rng.normal(size=(count, 4)) * [1.0, 0.5, 2.0, 0.1] + 3.0:
        moments = collect(moments, {"w": jnp.asarray(v, jnp.float32)})
    draws = sample(jax.random.key(count), moments, 20000)["w"]
    cov = np.asarray(covariance(moments), np.float64)
    assert np.linalg.eigvalsh(cov).min() > 0
    assert_gaussian_matches(np.asarray(draws)[None], np.asarray(moments.mean["w"]), cov,
                            min_ess=10000)


def _linear(weights):
    data = bnn.data.linear_regression(n=N, num_features=3, noise=NOISE, key=0)[0]
    net = bnn.models.MLP(3, (), 1, rngs=nnx.Rngs(0))
    net.layers[0].kernel[...] = np.asarray(weights[:3, None], np.float32)
    net.layers[0].bias[...] = np.asarray(weights[3:], np.float32)
    return linear_model(3, PRIOR, bnn.likelihoods.Gaussian(scale=NOISE), network=net), data


@pytest.fixture(scope="module")
def linear():
    data = bnn.data.linear_regression(n=N, num_features=3, noise=NOISE, key=0)[0]
    return linear_posterior(data.x, data.y, PRIOR, NOISE)


def test_full_batch_swa_mean_is_the_map(linear):
    mean, _ = linear
    # from the MAP, full-batch SGD stays there: SWA mean = MAP, no spread
    model, data = _linear(mean)
    post = bnn.fit(model, data, bnn.SWAG(learning_rate=0.05, batch_size=None, epochs=30,
                                         init="network", num_samples=10), key=0)
    moments = jax.tree.map(lambda a: a[:, None], post.info["swag"])
    np.testing.assert_allclose(linear_weights(moments.mean)[0, 0], mean, atol=1e-5)
    assert post.info["num_collected"] == 30


@pytest.mark.parametrize("key", [0, 1])
def test_minibatch_swag_mean_and_scale_on_linear_regression(linear, key):
    mean, cov = linear
    lr, b = 0.01, 10
    model, data = _linear(mean)
    post = bnn.fit(model, data, bnn.SWAG(learning_rate=lr, momentum=0.0, batch_size=b,
                                         epochs=200, collect_every=5, init="network",
                                         num_samples=100), key=key)
    moments = jax.tree.map(lambda a: a[:, None], post.info["swag"])
    swa = linear_weights(moments.mean)[0, 0]
    var = linear_weights(moments.sq_mean)[0, 0] - swa**2
    # SWA mean at the posterior mean (= MAP here) within a tenth of a posterior std
    assert np.all(np.abs(swa - mean) < 0.1 * np.sqrt(np.diag(cov)))
    # Mandt et al. (2017): with iid minibatches SGD's stationary covariance is ε/(2b) I
    # here (gradient noise covariance = Hessian); reshuffled epochs only lower it.
    assert np.all(var < 1.5 * lr / (2 * b)) and np.all(var > 0.05 * lr / (2 * b))
    full = np.asarray(covariance(jax.tree.map(lambda a: a[0], post.info["swag"])))
    assert np.linalg.eigvalsh(full).min() > 0
    assert (post.num_chains, post.num_draws) == (1, 100)


def test_default_learning_rate_is_a_fraction_of_the_stability_limit(linear):
    mean, _ = linear
    model, data = _linear(mean)
    b, momentum = 32, 0.9
    post = bnn.fit(model, data, bnn.SWAG(momentum=momentum, batch_size=b, epochs=2, rank=2,
                                         num_samples=2, init="network"), key=0)
    # Hessian of the mean loss: the likelihood's on the first curvature_rows rows, scaled to
    # N rows, plus the prior's, over N; weights [kernel; bias].
    rows = curvature_rows(N, b)
    x = np.hstack([np.asarray(data.x[:rows], np.float64), np.ones((rows, 1))])
    eig = np.linalg.eigvalsh(x.T @ x / (rows * NOISE**2) + np.eye(4) / (PRIOR**2 * N))
    measured = STABLE_FRACTION * 2 * (1 + momentum) / post.info["learning_rate"][0]
    # power iteration: the top eigenvalue, or a value between the top two when they are close
    assert eig[-2] * (1 - 1e-4) <= measured <= eig[-1] * (1 + 1e-4)


@pytest.mark.slow  # two SWAG fits: about 50 s on a loaded 2-core CPU
def test_default_learning_rate_follows_tight_noise():
    data = bnn.data.gap_regression(n=40, noise=0.1, key=0)
    net = bnn.models.MLP(1, (8,), 1, activation="tanh", rngs=nnx.Rngs(1))
    model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=0.03))
    config = {"batch_size": 10, "epochs": 5, "rank": 3, "num_samples": 4, "init": "network"}
    with pytest.raises(NonFiniteError, match="learning_rate"):  # the old default, 1e-2
        bnn.fit(model, data, bnn.SWAG(learning_rate=1e-2, **config), key=0)
    post = bnn.fit(model, data, bnn.SWAG(**config), key=0)
    assert post.info["learning_rate"][0] < 1e-3
    assert np.isfinite(np.asarray(post.predict(data.x).mean)).all()


@pytest.fixture(scope="module")
def gap():
    data = bnn.data.gap_regression(n=40, noise=0.1, key=0)
    net = bnn.models.MLP(1, (8,), 1, activation="tanh", rngs=nnx.Rngs(1))
    return bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=0.1)), data


@pytest.mark.slow
def test_multiswag_chains_are_independent_runs_from_their_own_map_fits(gap):
    model, data = gap
    method = bnn.SWAG(learning_rate=0.01, batch_size=10, epochs=6, rank=3, num_samples=7,
                      num_chains=2, init=bnn.MAP(learning_rate=1e-2, epochs=20, batch_size=10))
    post = bnn.fit(model, data, method, key=0)
    assert (post.num_chains, post.num_draws) == (2, 7)
    assert post.info["map_info"]["history"]["loss"].shape[0] == 2  # an ensemble's fits
    kernel = np.asarray(post.draws["net"]["layers"][0]["kernel"])
    assert not np.allclose(kernel[0].mean(0), kernel[1].mean(0))
    assert post.info["loss"].shape == (2, 6 * 4)
    pred = post.predict(data.x)
    assert np.all(np.asarray(pred.epistemic_std) > 0)
    assert post.to_arviz(data.x[:5], data.y[:5])["posterior"].sizes["chain"] == 2
    again = bnn.fit(model, data, method, key=0)
    jax.tree.map(np.testing.assert_array_equal, again.draws, post.draws)


@pytest.mark.slow
def test_interrupted_run_resumes_bit_identically(gap, tmp_path, ctrl_c_after):
    model, data = gap
    method = bnn.SWAG(learning_rate=1e-3, batch_size=10, epochs=40, rank=4, num_samples=5,
                      init="network")
    path = tmp_path / "swag.ckpt"
    ctrl_c_after(1)
    with pytest.warns(UserWarning, match="interrupted after"):
        part = bnn.fit(model, data, method, key=3, checkpoint=path)
    assert part.info["interrupted"] and part.info["num_collected"] == 2
    resumed = bnn.fit(model, data, method, key=3, checkpoint=path)
    fresh = bnn.fit(model, data, method, key=3)
    assert not resumed.info["interrupted"] and resumed.info["num_collected"] == 40
    jax.tree.map(np.testing.assert_array_equal, resumed.draws, fresh.draws)
    np.testing.assert_array_equal(resumed.info["loss"], fresh.info["loss"])


def test_posterior_survives_save_and_load(gap, tmp_path):
    model, data = gap
    post = bnn.fit(model, data, bnn.SWAG(batch_size=10, epochs=3, rank=2, num_samples=4,
                                         init="network"), key=0)
    post.save(tmp_path / "swag.bnn")
    back = bnn.Posterior.load(tmp_path / "swag.bnn")
    assert back.method == post.method
    np.testing.assert_array_equal(back.predict(data.x).mean, post.predict(data.x).mean)


@pytest.mark.parametrize("kwargs, match", [
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"momentum": 1.0}, "momentum"),
    ({"epochs": 0}, "epochs"),
    ({"collect_every": 0}, "collect_every"),
    ({"rank": 1}, "rank"),
    ({"num_samples": 2.5}, "num_samples"),
    ({"num_chains": 0}, "num_chains"),
    ({"batch_size": 0}, "batch_size"),
    ({"init": "prior"}, "init"),
    ({"schedule": 3}, "schedule"),
])
def test_bad_config_is_refused_naming_the_argument(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        bnn.SWAG(**kwargs)


def test_too_few_collected_iterates_is_refused_before_any_fit(gap):
    model, data = gap
    with pytest.raises(ValueError, match="at least 2"):
        bnn.fit(model, data, bnn.SWAG(epochs=1, batch_size=10), key=0)


def test_a_second_fit_of_the_same_architecture_traces_no_chunk_program(gap, monkeypatch):
    traces = []
    note = programs.note_compiling
    monkeypatch.setattr(programs, "note_compiling", lambda: (traces.append(1), note()))
    model, data = gap
    method = bnn.SWAG(learning_rate=1e-3, batch_size=10, epochs=3, rank=2, num_samples=2,
                      init="network")
    programs.clear_programs()
    try:
        first = bnn.fit(model, data, method, key=0, progress=False)
        assert len(traces) == 1
        moved = bnn.BNN(model.network(jax.tree.map(lambda a: a + 0.1, first.point())),
                        model.prior, model.likelihood)
        again = bnn.fit(moved, data, method, key=1, progress=False)  # other weights and key
        assert len(traces) == 1
        programs.clear_programs()
        fresh = bnn.fit(moved, data, method, key=1, progress=False)
        assert len(traces) == 2
        np.testing.assert_allclose(again.draws["net"]["layers"][0]["kernel"],
                                   fresh.draws["net"]["layers"][0]["kernel"], rtol=1e-6)
    finally:
        programs.clear_programs()

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import bayesnn as bnn
from bayesnn.posterior import DrawPredictive, DropoutPredictive, _chunk_moments


def _posterior(likelihood, out, num_chains=2, num_draws=5, dropout=0.0):
    net = bnn.models.MLP(2, (6,), out, dropout=dropout, rngs=nnx.Rngs(0))
    model = bnn.BNN(net, bnn.priors.Normal(1.0), likelihood)
    keys = jax.random.split(jax.random.key(0), num_chains * num_draws)
    draws = jax.vmap(model.init_params)(keys)
    draws = jax.tree.map(lambda a: a.reshape((num_chains, num_draws) + a.shape[1:]), draws)
    return bnn.Posterior(model, draws)


X = np.random.default_rng(0).normal(size=(23, 2)).astype(np.float32)


def test_regression_prediction_is_the_mixture_over_draws():
    post = _posterior(bnn.likelihoods.Gaussian(scale=0.5), 1)
    pred = post.predict(X)
    means = jax.vmap(lambda p: post.model.apply(p, X))(post.flat_draws())
    np.testing.assert_allclose(pred.mean, means.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pred.epistemic_std, means.std(0), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(pred.std**2, means.var(0) + 0.25, rtol=1e-4)


@pytest.mark.parametrize("batch_size, draw_batch_size", [(4, 3), (23, 10), (1000, 1)])
def test_chunking_does_not_change_the_answer(batch_size, draw_batch_size):
    post = _posterior(bnn.likelihoods.Categorical(), 3)
    ref = post.predict(X, batch_size=1000, draw_batch_size=1000)
    got = post.predict(X, batch_size=batch_size, draw_batch_size=draw_batch_size)
    for a, b in zip(ref, got, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.probs.sum(-1), 1.0, rtol=1e-5)
    assert np.all(got.epistemic >= 0) and np.all(got.entropy <= np.log(3) + 1e-5)


def test_log_predictive_density_is_log_mean_likelihood():
    post = _posterior(bnn.likelihoods.Categorical(), 3)
    y = np.arange(23) % 3
    lpd = post.log_predictive_density(X, y, batch_size=5, draw_batch_size=4)
    ll = jax.vmap(lambda p: post.model.log_prob_per_example(p, X, y))(post.flat_draws())
    np.testing.assert_allclose(lpd, jax.nn.logsumexp(ll, 0) - np.log(10), rtol=1e-5)


def test_mc_dropout_key_makes_draws_differ():
    post = _posterior(bnn.likelihoods.Gaussian(), 1, num_chains=1, num_draws=1, dropout=0.5)
    single = bnn.Posterior(post.model, jax.tree.map(lambda a: jnp.repeat(a, 8, 1), post.draws))
    assert float(single.predict(X).epistemic_std.max()) < 1e-6
    assert float(single.predict(X, key=jax.random.key(0)).epistemic_std.min()) > 0


def test_axes_and_input_checks():
    post = _posterior(bnn.likelihoods.Gaussian(), 1)
    assert (post.num_chains, post.num_draws, post.num_samples) == (2, 5, 10)
    with pytest.raises(ValueError, match="leading"):
        bnn.Posterior(post.model, jax.tree.map(lambda a: a[0], post.draws))
    with pytest.raises(ValueError, match="expects"):
        post.predict(np.zeros((3, 5)))


def test_save_load_round_trip(tmp_path):
    post = _posterior(bnn.likelihoods.Categorical(), 3)
    post.info.update(seconds=1.5, history={"loss": [1.0, 0.5]}, fn=lambda: None)
    post.save(tmp_path / "post.pkl")
    back = bnn.Posterior.load(tmp_path / "post.pkl")
    for a, b in zip(post.predict(X), back.predict(X), strict=True):
        np.testing.assert_array_equal(a, b)
    assert back.info["history"] == {"loss": [1.0, 0.5]} and isinstance(back.info["fn"], str)
    assert back.model.network_name == "MLP" and back.model.likelihood == post.model.likelihood
    (tmp_path / "junk.pkl").write_bytes(__import__("pickle").dumps({"a": 1}))
    with pytest.raises(ValueError, match="not a bayesnn posterior"):
        bnn.Posterior.load(tmp_path / "junk.pkl")


class _Shifted(NamedTuple):
    """A predictive of another kind: each draw's outputs plus an offset."""

    offset: jax.Array

    def outputs(self, model, position, x, index):
        return model.apply(position, x) + self.offset


def test_the_predictive_field_says_how_draws_predict():
    post = _posterior(bnn.likelihoods.Gaussian(scale=0.5), 1, dropout=0.5)
    assert post.predictive == DrawPredictive()
    key = jax.random.key(3)
    dropout = bnn.Posterior(post.model, post.draws, predictive=DropoutPredictive(key))
    by_key = post.predict(X, key=key)
    for a, b in zip(dropout.predict(X), by_key, strict=True):
        np.testing.assert_array_equal(a, b)  # the same program and key
    # draw s predicts with the dropout mask of fold_in(key, s)
    outs = jax.vmap(lambda p, s: post.model.apply(p, X, jax.random.fold_in(key, s)))(
        post.flat_draws(), jnp.arange(post.num_samples))
    np.testing.assert_allclose(by_key.mean, outs.mean(0), rtol=1e-5, atol=1e-6)
    # any predictive with the same interface: no branch on the method downstream
    shifted = bnn.Posterior(post.model, post.draws, predictive=_Shifted(jnp.float32(2.0)))
    np.testing.assert_allclose(shifted.predict(X).mean, post.predict(X).mean + 2.0, rtol=1e-5)
    y = np.zeros((23, 1))
    np.testing.assert_allclose(
        shifted.log_predictive_density(X, y),
        bnn.Posterior(post.model, post.draws).log_predictive_density(X, y - 2.0), rtol=1e-5)
    tree = shifted.to_arviz(X, y)
    ll = tree["log_likelihood"]["y"].values.reshape(post.num_samples, -1)
    np.testing.assert_allclose(jax.nn.logsumexp(ll, 0) - np.log(post.num_samples),
                               shifted.log_predictive_density(X, y), rtol=1e-5)


def test_a_new_dropout_key_does_not_recompile():
    post = _posterior(bnn.likelihoods.Gaussian(), 1, dropout=0.5)
    post.predict(X, key=jax.random.key(1))
    compiled = _chunk_moments._cache_size()
    post.predict(X, key=jax.random.key(2))
    assert _chunk_moments._cache_size() == compiled


def test_bad_predictive():
    post = _posterior(bnn.likelihoods.Gaussian(), 1)
    with pytest.raises(TypeError, match="predictive must have an outputs"):
        bnn.Posterior(post.model, post.draws, predictive=jax.random.key(0))

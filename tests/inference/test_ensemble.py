import copy

import jax
import numpy as np
import pytest
from flax import nnx

import bayesnn as bnn
from bayesnn.inference.ensemble import member_keys
from bayesnn.posterior import DropoutPredictive


def _model(dropout=0.0, width=16):
    net = bnn.models.MLP(1, (width,), 1, activation="tanh", dropout=dropout, rngs=nnx.Rngs(0))
    return bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=0.1))


def _kernel(position):
    return np.asarray(position["net"]["layers"][0]["kernel"])


@pytest.fixture(scope="module")
def gap():
    return bnn.data.gap_regression(n=60, noise=0.1, key=0)


def test_members_are_map_fits_that_keep_their_best_epochs(gap):
    config = bnn.MAP(learning_rate=0.1, epochs=200, batch_size=8, validation_split=0.25,
                     early_stopping_patience=4)
    model = _model(width=8)
    post = bnn.fit(model, gap, bnn.Ensemble(config, size=3), key=0)
    assert (post.num_chains, post.num_draws) == (3, 1)
    assert not np.allclose(_kernel(post.point(0)), _kernel(post.point(1)))
    hist, best, ran = post.info["history"], post.info["best_epoch"], post.info["epochs_run"]
    assert set(hist) == {"loss", "rmse", "val_loss", "val_rmse"}
    assert hist["val_loss"].shape == (3, ran.max()) and ran.max() < 200
    np.testing.assert_array_equal(ran - 1 - best, 4)
    val = bnn.data.validation_split(gap, 0.25)[1]
    for m in range(3):
        assert not np.isnan(hist["loss"][m, : ran[m]]).any()
        assert np.isnan(hist["loss"][m, ran[m]:]).all()
        assert best[m] == np.nanargmin(hist["val_loss"][m])
        member = bnn.Posterior(model, jax.tree.map(lambda a, m=m: a[m:m + 1], post.draws))
        nll = -float(np.mean(member.log_predictive_density(val.x, val.y)))
        np.testing.assert_allclose(nll, hist["val_loss"][m, best[m]], rtol=1e-4)
    # The last member is exactly a MAP fit from its own start with its own key.
    init_keys, train_keys = member_keys(jax.random.key(0), 3)
    single = copy.copy(model)
    single.init_position = model.init_params(init_keys[2])
    ref = bnn.fit(single, gap, config, key=train_keys[2])
    assert ref.info["best_epoch"] == best[2] and ref.info["epochs_run"] == ran[2]
    np.testing.assert_allclose(ref.info["history"]["val_loss"], hist["val_loss"][2, : ran[2]],
                               rtol=1e-4)
    for a, b in zip(jax.tree.leaves(post.point(2)), jax.tree.leaves(ref.point()), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_ensemble_fits_the_toy_and_spreads_in_the_gap(gap):
    config = bnn.MAP(learning_rate=1e-2, epochs=400, batch_size=None)
    post = bnn.fit(_model(), gap, bnn.Ensemble(config, size=4), key=1)
    test = bnn.data.gap_regression(n=100, noise=0.1, key=1)
    pred = post.predict(test.x)
    assert float(np.sqrt(np.mean((pred.mean - test.y) ** 2))) < 0.2
    means = jax.vmap(post.model.apply, (0, None))(post.flat_draws(), test.x)
    np.testing.assert_allclose(pred.mean, means.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pred.epistemic_std, means.std(0), rtol=1e-3, atol=1e-5)
    grid = bnn.data.gap_regression_grid(61).x
    spread = np.asarray(post.predict(grid).epistemic_std[:, 0])
    assert spread.min() > 0
    assert spread[np.abs(grid[:, 0]) > 2.5].mean() > 2 * spread[np.abs(grid[:, 0]) < 1.5].mean()


def test_mc_dropout_averages_masks(gap, tmp_path):
    config = bnn.MAP(learning_rate=2e-2, epochs=300, batch_size=None)
    model = _model(dropout=0.1, width=32)
    post = bnn.fit(model, gap, bnn.MCDropout(config, num_samples=16), key=0)
    assert (post.num_chains, post.num_draws) == (1, 16)
    point = post.point()
    assert all(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(point), jax.tree.leaves(post.point(0, 15)), strict=True))
    pred = post.predict(gap.x)
    assert float(pred.epistemic_std.min()) > 0
    assert isinstance(post.predictive, DropoutPredictive)
    assert "dropout_key" not in post.info
    key = post.predictive.key
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, np.arange(16))
    outs = jax.vmap(post.model.apply, (None, None, 0))(point, gap.x, keys)
    np.testing.assert_allclose(pred.mean, outs.mean(0), rtol=1e-4, atol=1e-5)
    rmse = float(np.sqrt(np.mean((pred.mean - gap.y) ** 2)))
    assert rmse < 0.3, rmse
    post.save(tmp_path / "mcd.pkl")
    again = bnn.Posterior.load(tmp_path / "mcd.pkl").predict(gap.x)
    np.testing.assert_allclose(again.epistemic_std, pred.epistemic_std, rtol=1e-5)


def test_mc_dropout_needs_dropout(gap):
    with pytest.raises(ValueError, match="dropout > 0"):
        bnn.fit(_model(), gap, bnn.MCDropout(bnn.MAP(epochs=1)), key=0)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: bnn.Ensemble(size=0), ValueError, "size must be > 0"),
        (lambda: bnn.Ensemble(size=2.0), TypeError, "size must be an int"),
        (lambda: bnn.Ensemble("adam"), TypeError, "map_config must be a bayesnn.MAP"),
        (lambda: bnn.MCDropout(num_samples=-1), ValueError, "num_samples must be > 0"),
    ],
)
def test_bad_configuration(make, error, match):
    with pytest.raises(error, match=match):
        make()

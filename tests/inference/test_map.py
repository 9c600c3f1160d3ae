import jax
import numpy as np
import optax
import pytest
from flax import nnx

import bayesnn as bnn
from bayesnn.inference.map import OPTIMIZERS


def _regression_model(width=32, seed=0, noise=0.1):
    net = bnn.models.MLP(1, (width, width), 1, activation="tanh", rngs=nnx.Rngs(seed))
    return bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=noise))


@pytest.fixture(scope="module")
def gap():
    return bnn.data.gap_regression(n=80, noise=0.1, key=0), bnn.data.gap_regression(
        n=200, noise=0.1, key=1
    )


def test_map_fits_the_gap_toy(gap):
    train, test = gap
    post = bnn.fit(_regression_model(), train, bnn.MAP(learning_rate=1e-2, epochs=600,
                                                       batch_size=None), key=0)
    assert (post.num_chains, post.num_draws) == (1, 1)
    rmse = float(np.sqrt(np.mean((post.predict(test.x).mean - test.y) ** 2)))
    assert rmse < 0.2, rmse  # noise std is 0.1
    assert post.info["history"]["loss"][-1] < post.info["history"]["loss"][0]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_name_trains(name, gap):
    train, _ = gap
    lr = {"sgd": 2e-3, "adadelta": 1.0, "adagrad": 0.05}.get(name, 1e-2)
    post = bnn.fit(_regression_model(width=16), train,
                   bnn.MAP(optimizer=name, learning_rate=lr, epochs=20, batch_size=16), key=0)
    loss = post.info["history"]["loss"]
    assert loss[-1] < 0.8 * loss[0], (name, loss[0], loss[-1])


def test_optax_transformation_is_accepted(gap):
    train, _ = gap
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    post = bnn.fit(_regression_model(width=16), train, bnn.MAP(optimizer=tx, epochs=10), key=0)
    assert len(post.info["history"]["loss"]) == 10


def test_validation_split_keeps_the_best_weights(gap, tmp_path):
    train, _ = gap
    path = tmp_path / "best.npz"
    model = _regression_model(width=16)
    method = bnn.MAP(learning_rate=3e-2, epochs=40, batch_size=16, validation_split=0.25,
                     checkpoint_path=str(path))
    post = bnn.fit(model, train, method, key=0)
    hist = post.info["history"]
    assert set(hist) == {"loss", "rmse", "val_loss", "val_rmse"} and len(hist["val_loss"]) == 40
    best = int(np.argmin(hist["val_loss"]))
    assert post.info["best_epoch"] == best
    val = bnn.data.validation_split(train, 0.25)[1]
    nll = -float(np.mean(post.log_predictive_density(val.x, val.y)))
    np.testing.assert_allclose(nll, hist["val_loss"][best], rtol=1e-4)
    saved = bnn.tree.load_tree(path, model.init_position)
    np.testing.assert_allclose(saved["net"]["layers"][0]["kernel"],
                               post.point()["net"]["layers"][0]["kernel"])


def test_early_stopping(gap):
    train, _ = gap
    method = bnn.MAP(learning_rate=0.1, epochs=200, batch_size=8, validation_split=0.3,
                     early_stopping_patience=3)
    post = bnn.fit(_regression_model(width=8), train, method, key=0)
    assert post.info["epochs_run"] < 200
    assert post.info["epochs_run"] - 1 - post.info["best_epoch"] == 3


def test_same_key_same_weights_and_dropout_trains(gap):
    train, _ = gap
    net = bnn.models.MLP(1, (16,), 1, dropout=0.3, rngs=nnx.Rngs(0))
    model = bnn.BNN(net, likelihood=bnn.likelihoods.Gaussian(scale=0.1))
    method = bnn.MAP(epochs=5, batch_size=16)
    a, b = (bnn.fit(model, train, method, key=3).point() for _ in range(2))
    c = bnn.fit(model, train, method, key=4).point()
    assert jax.tree.all(jax.tree.map(np.array_equal, a, b))
    assert not np.array_equal(a["net"]["layers"][0]["kernel"], c["net"]["layers"][0]["kernel"])


def test_classification_on_two_moons():
    train = bnn.data.two_moons(n=300, noise=0.1, key=0)
    test = bnn.data.two_moons(n=300, noise=0.1, key=1)
    net = bnn.models.MLP(2, (32, 32), 2, rngs=nnx.Rngs(0))
    model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Categorical())
    post = bnn.fit(model, train, bnn.MAP(learning_rate=1e-2, epochs=60, batch_size=32), key=0)
    acc = float(np.mean(np.argmax(post.predict(test.x).probs, -1) == test.y))
    assert acc > 0.95
    assert post.info["history"]["accuracy"][-1] > 0.9


def test_divergence_raises_a_clear_error(gap):
    train, _ = gap
    method = bnn.MAP(optimizer="sgd", learning_rate=1e6, epochs=50, batch_size=None)
    with pytest.raises(bnn.NonFiniteError, match="MAP: .* at step [0-9]+; try a smaller learning"):
        bnn.fit(_regression_model(width=8), train, method, key=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"optimizer": "adamw2"}, "unknown optimizer 'adamw2'"),
        ({"epochs": 0}, "epochs must be > 0"),
        ({"learning_rate": -1.0}, "learning_rate must be > 0"),
        ({"validation_split": 1.0}, r"validation_split must be in \[0, 1\)"),
    ],
)
def test_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bnn.MAP(**kwargs)


def test_batch_larger_than_data(gap):
    train, _ = gap
    with pytest.raises(ValueError, match=r"batch_size \(512\) is larger than the dataset"):
        bnn.fit(_regression_model(width=8), train, bnn.MAP(batch_size=512, epochs=1), key=0)


@pytest.mark.parametrize("kind", ["MAP", pytest.param("SGLD", marks=pytest.mark.slow)])
def test_augmentation_runs_inside_the_training_loop(kind):
    digits = bnn.data.load_digits()  # (N, 8, 8, 1) images; the MLP flattens them
    train = bnn.data.Dataset(digits.x[:128], digits.y[:128])
    model = bnn.BNN(bnn.models.MLP(64, (16,), 10, rngs=nnx.Rngs(0)),
                    likelihood=bnn.likelihoods.Categorical())
    augment = bnn.data.Augment(width_shift=0.25, horizontal_flip=True)
    if kind == "MAP":
        plain, shifted = (bnn.MAP(epochs=2, batch_size=32, augment=a) for a in (None, augment))
    else:
        plain, shifted = (bnn.SGLD(step_size=1e-4, batch_size=32, num_warmup=8, num_samples=2,
                                   thinning=4, augment=a,
                                       num_chains=1, init="random") for a in (None, augment))
    a, b, c = (bnn.fit(model, train, m, key=0).draws for m in (plain, shifted, shifted))
    assert not np.allclose(a["net"]["layers"][0]["kernel"], b["net"]["layers"][0]["kernel"])
    assert jax.tree.all(jax.tree.map(np.array_equal, b, c))

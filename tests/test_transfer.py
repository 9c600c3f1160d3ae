import jax
import numpy as np
import pytest
from flax import nnx

import bayesnn as bnn
from bayesnn import transfer
from bayesnn.tree import flatten_paths


@pytest.fixture(scope="module")
def trained():
    return bnn.models.mnist_cnn(input_shape=(8, 8, 1), num_classes=5, seed=1)


def _weights(net) -> dict:
    return flatten_paths(nnx.to_pure_dict(nnx.state(net, nnx.Param)))


def test_layer_names_and_cut(trained):
    assert transfer.layer_names(trained) == [
        "conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1", "flatten", "dense", "dense_1"]
    new, copied = transfer.with_new_head(
        trained, (bnn.models.Flatten(), bnn.models.Dense(3)), at="max_pooling2d",
        rngs=nnx.Rngs(0))
    assert copied == 1 and new.output_shapes[-1] == (3,)
    np.testing.assert_array_equal(_weights(new)["layers/0/kernel"],
                                  _weights(trained)["layers/0/kernel"])
    with pytest.raises(ValueError, match="no layer named 'conv9'"):
        transfer.transfer(trained, "freeze_early", 3, bnn.likelihoods.Categorical(), at="conv9")
    with pytest.raises(ValueError, match="unknown transfer case"):
        transfer.transfer(trained, "freeze", 3, bnn.likelihoods.Categorical())


def test_frozen_body_is_untouched_by_training(trained):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(64, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    model = transfer.transfer(trained, "freeze_all", 3, bnn.likelihoods.Categorical())
    post = bnn.fit(model, (x, y), bnn.MAP(epochs=3, batch_size=16, learning_rate=1e-2), key=0)
    assert set(flatten_paths(post.draws["net"])) == {"layers/3/kernel", "layers/3/bias"}
    # The body the fitted network uses is exactly the trained body.
    fitted = bnn.BNN.from_state(post.model.to_state())
    body = flatten_paths(fitted.to_state()["net"])
    for path, value in _weights(trained).items():
        if not path.startswith("layers/3/"):
            np.testing.assert_array_equal(body[path], value)
    head0 = model.init_position["net"]["layers"][3]["kernel"]
    assert not np.allclose(post.point()["net"]["layers"][3]["kernel"], head0)


def test_bayesian_last_layer_draws_vary_only_in_the_head(trained):
    model = transfer.transfer(trained, "freeze_all", 3, bnn.likelihoods.Categorical())
    keys = jax.random.split(jax.random.key(0), 6)
    draws = jax.vmap(lambda k: model.prior.sample(k, model.init_position["net"]))(keys)
    post = bnn.Posterior(model, {"net": jax.tree.map(lambda a: a.reshape((2, 3) + a.shape[1:]),
                                                     draws), "lik": {}})
    x = np.random.default_rng(0).uniform(size=(5, 8, 8, 1)).astype(np.float32)
    features = jax.vmap(lambda p: model.apply(p, x))(post.flat_draws())
    assert float(features.std(0).min()) > 0  # the head's draws differ
    assert set(flatten_paths(post.draws["net"])) == {"layers/3/kernel", "layers/3/bias"}


def test_finetune_prior_is_centred_at_the_trained_body(trained):
    model = transfer.transfer(trained, "finetune", 3, bnn.likelihoods.Categorical(),
                              body_scale=0.1)
    net = model.init_position["net"]
    shifted = jax.tree.map(lambda a: a, net)
    shifted["layers"][0]["kernel"] = net["layers"][0]["kernel"] + 0.1
    assert float(model.prior.log_prob(net)) > float(model.prior.log_prob(shifted))
    scratch = transfer.transfer(trained, "scratch", 3, bnn.likelihoods.Categorical())
    assert not np.allclose(scratch.init_position["net"]["layers"][0]["kernel"],
                           net["layers"][0]["kernel"])


def test_a_user_sequential_is_cut_frozen_and_reheaded():
    rngs = nnx.Rngs(0)
    net = nnx.Sequential(nnx.Linear(4, 8, rngs=rngs), nnx.relu, nnx.Linear(8, 5, rngs=rngs))
    assert transfer.layer_names(net) == ["linear", "relu", "linear_1"]
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype(np.float32), rng.integers(0, 3, size=32)
    model = transfer.transfer(net, "freeze_all", 3, bnn.likelihoods.Categorical())
    assert model.frozen == ("layers/0/*",)
    post = bnn.fit(model, (x, y), bnn.MAP(epochs=3, batch_size=16), key=0, progress=False)
    assert set(flatten_paths(post.draws["net"])) == {"layers/2/kernel", "layers/2/bias"}
    fitted = post.model.network(post.point())
    np.testing.assert_array_equal(fitted.layers[0].kernel[...], net.layers[0].kernel[...])
    assert post.predict(x).probs.shape == (32, 3)
    tuned = transfer.transfer(net, "finetune", 3, bnn.likelihoods.Categorical())
    assert not tuned.frozen and "layers/0/kernel" in flatten_paths(tuned.init_position["net"])
    fresh = transfer.transfer(net, "scratch", 3, bnn.likelihoods.Categorical())
    assert not np.allclose(fresh.init_position["net"]["layers"][0]["kernel"],
                           net.layers[0].kernel[...])
    with pytest.raises(TypeError, match="frozen="):
        transfer.transfer(bnn.models.MLP(4, (), 2, rngs=rngs).layers[0], "freeze_all", 3,
                          bnn.likelihoods.Categorical())

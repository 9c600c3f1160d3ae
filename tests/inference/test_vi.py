"""The SVI loop every Gaussian guide shares (bayesnn/inference/vi.py), run through
MeanFieldVI, the simplest guide; the guides' own pieces are in test_meanfield_vi.py and
test_lowrank_vi.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from numpyro.infer.util import log_density

import bayesnn as bnn
from bayesnn.inference.map import evaluate
from bayesnn.inference.vi import _chunk_fn, kl_weight, weight_sites


def _linear_model(d, noise, prior_scale=1.0):
    net = bnn.models.MLP(d, (), 1, rngs=nnx.Rngs(0))
    return bnn.BNN(net, bnn.priors.Normal(prior_scale), bnn.likelihoods.Gaussian(scale=noise))


def test_kl_weight_rises_linearly():
    np.testing.assert_allclose(kl_weight(np.arange(6), 4), [0, 0.25, 0.5, 0.75, 1, 1])
    assert float(kl_weight(0, None)) == 1.0


def test_weight_sites_scales_prior_and_likelihood_apart():
    data, _ = bnn.data.linear_regression(n=20, num_features=2, key=0)
    model = _linear_model(2, 0.5)
    sites = {f"net/{k}": v for k, v in bnn.tree.flatten_paths(model.init_position["net"]).items()}
    args = (data.x, data.y)
    mask = np.arange(20) < 12
    weighted = weight_sites(model.numpyro_model, latent=0.3, observed=2.5, mask=mask)
    scaled, _ = log_density(weighted, args, {}, sites)
    prior = model.logprior_fn(model.init_position)
    ll = model.log_prob_per_example(model.init_position, data.x, data.y)
    np.testing.assert_allclose(scaled, 0.3 * prior + 2.5 * ll[:12].sum(), rtol=1e-5)


def test_chunk_runs_its_epochs_and_none_past_the_last():
    # Chunk 1 of 3-epoch chunks with 5 epochs: epochs 3 and 4 run (each adds its index and
    # one to the state, returning 2 losses), epoch 5 is skipped (state kept, losses 0).
    def epoch_fn(state, key, epoch, x, y):
        return state + epoch + 1, jnp.full(2, epoch, jnp.float32)

    chunk = jax.jit(_chunk_fn(epoch_fn, steps=2, per_chunk=3, epochs=5))
    state, loss = chunk(jnp.zeros((), jnp.int32), jax.random.key(0), 1, None, None)
    assert int(state) == 4 + 5
    np.testing.assert_array_equal(loss, [3, 3, 4, 4, 0, 0])


@pytest.mark.parametrize("local_reparam", [False, True])
def test_partially_bayesian_network_with_warmup_is_reproducible(toy, local_reparam):
    net = bnn.models.MLP(2, (8,), 1, rngs=nnx.Rngs(0))
    prior = bnn.priors.PerParameter({"layers/1/*": bnn.priors.Normal(1.0)})
    model = bnn.BNN(net, prior, bnn.likelihoods.Gaussian(scale=0.1))
    method = bnn.MeanFieldVI(learning_rate=1e-2, epochs=20, batch_size=16, num_samples=8,
                             kl_warmup=40, local_reparam=local_reparam)
    a = bnn.fit(model, toy, method, key=0)
    b = bnn.fit(model, toy, method, key=0)
    assert jax.tree.all(jax.tree.map(np.array_equal, a.draws, b.draws))
    assert a.info["history"] == b.info["history"]

    layers = a.draws["net"]["layers"]
    assert layers[0]["kernel"].shape == (1, 8, 2, 8)
    # Point estimates: the same in every draw, the fitted SVI parameter, moved from init.
    kernel0 = layers[0]["kernel"][0]
    assert np.all(kernel0 == kernel0[0])
    np.testing.assert_array_equal(kernel0[0], a.info["guide_params"]["net/layers/0/kernel"])
    assert not np.allclose(kernel0[0], model.init_position["net"]["layers"][0]["kernel"])
    # Bayesian weights vary across draws.
    assert np.all(np.std(layers[1]["kernel"][0], axis=0) > 0)
    # 4 steps per epoch: β = min(1, last step of the epoch / 40).
    np.testing.assert_allclose(a.info["history"]["beta"][:3], [3 / 40, 7 / 40, 11 / 40])
    assert a.info["history"]["beta"][-1] == 1.0


@pytest.mark.parametrize("local_reparam", [False, True])
def test_recorded_elbo_is_the_closed_form_beta_weighted_elbo(local_reparam):
    # The guide is frozen (learning rate 1e-12) at near-point masses (σ = 1e-4) on weights
    # that fit y exactly, so every step's loss is the exact negative ELBO with that step's
    # KL weight β_t = t / 6 and likelihood scale N / b_t: N = 20 rows in batches of 8, 8, 4
    # make each step's scaled log-likelihood N · log N(0 | 0, s²), if the partial batch is
    # scaled by N / 4 (N / 8 would take 10 off it).
    noise, sd = 0.1, 1e-4
    model = _linear_model(2, noise)
    x = np.random.default_rng(0).normal(size=(20, 2)).astype(np.float32)
    y = np.asarray(model.apply(model.init_position, x))
    method = bnn.MeanFieldVI(learning_rate=1e-12, epochs=3, batch_size=8, init_scale=sd,
                             kl_warmup=6, num_samples=1, local_reparam=local_reparam)
    post = bnn.fit(model, (x, y), method, key=0)

    mu = np.concatenate([np.ravel(a) for a in jax.tree.leaves(model.init_position["net"])])
    kl = np.sum(np.log(1 / sd) - 0.5 + (sd**2 + mu**2) / 2)  # KL(q ‖ N(0, 1)), ≈ 26
    loglik = -0.5 * np.log(2 * np.pi * noise**2) * len(x)  # ≈ 28; E_q adds ~1e-5
    beta = np.minimum(np.arange(9) / 6, 1).reshape(3, 3).mean(1)  # per epoch of 3 steps
    np.testing.assert_allclose(post.info["history"]["elbo"], loglik - beta * kl, atol=1e-3)


def test_fused_guide_noise_changes_no_number(toy, monkeypatch):
    """The guide's weight noise through ``prng.normal`` (``_FusedNoise``) is NumPyro's
    ``jax.random.normal`` noise from the same keys: the fit is bit for bit the same."""
    from bayesnn.inference import vi

    model = bnn.BNN(bnn.models.MLP(2, (8,), 1, rngs=nnx.Rngs(0)), bnn.priors.Normal(1.0),
                    bnn.likelihoods.Gaussian(scale=0.1))
    method = bnn.MeanFieldVI(learning_rate=1e-2, epochs=3, batch_size=16, num_samples=4)
    swapped = []
    process = vi._FusedNoise.process_message

    def spy(self, msg):
        process(self, msg)
        swapped.append(type(msg["fn"]).__name__)

    monkeypatch.setattr(vi._FusedNoise, "process_message", spy)
    fused = bnn.fit(model, toy, method, key=0)
    assert "_PrngNormal" in swapped  # the handler did take over the guide's draws
    monkeypatch.setattr(vi._FusedNoise, "process_message", lambda self, msg: None)
    plain = bnn.fit(model, toy, method, key=0)
    assert fused.info["history"] == plain.info["history"]
    assert jax.tree.all(jax.tree.map(np.array_equal, fused.draws, plain.draws))


def test_map_initialisation(toy):
    model = bnn.BNN(bnn.models.MLP(2, (8,), 1, rngs=nnx.Rngs(0)),
                    likelihood=bnn.likelihoods.Gaussian(scale=0.1))
    method = bnn.MeanFieldVI(
        init=bnn.MAP(learning_rate=1e-2, epochs=30, batch_size=16),
        learning_rate=1e-9, epochs=1, batch_size=32, num_samples=4,
    )
    post = bnn.fit(model, toy, method, key=0)
    start = post.info["init_position"]
    assert len(post.info["map_info"]["history"]["loss"]) == 30
    assert evaluate(model, start, *toy)["nll"] < evaluate(model, model.init_position, *toy)["nll"]
    # One step at a negligible learning rate: the guide means are still the MAP weights.
    np.testing.assert_allclose(post.info["guide_params"]["net/layers/0/kernel_auto_loc"],
                               start["net"]["layers"][0]["kernel"], atol=1e-6)


def test_augment_is_applied_to_every_minibatch():
    # The label says on which side of a 4x4 image the bright pixel is: a left-right flip
    # turns every image into one of the other class. Every pixel position is equally often
    # of either class, so flipping half the images at random leaves the labels
    # uninformative and the fitted classifier must be unsure; without augmentation the
    # same fit is confident.
    i = np.arange(64)
    y = (i // 4) % 2
    x = np.zeros((64, 4, 4, 1), np.float32)
    x[i, i % 4, 3 * y, 0] = 1.0
    model = bnn.BNN(bnn.models.MLP(16, (), 1, rngs=nnx.Rngs(0)), bnn.priors.Normal(3.0),
                    bnn.likelihoods.Bernoulli())
    flip = bnn.data.Augment(horizontal_flip=True)
    confidence = {}
    for augment in (None, flip):
        method = bnn.MeanFieldVI(learning_rate=5e-2, epochs=30, batch_size=16, num_samples=32,
                                 augment=augment)
        probs = np.asarray(bnn.fit(model, (x, y), method, key=0).predict(x).probs)[:, 1]
        confidence[augment] = np.mean(np.abs(probs - 0.5))
    assert confidence[None] > 0.3, confidence
    assert confidence[flip] < 0.1, confidence


def test_divergence_raises_a_clear_error():
    data, _ = bnn.data.linear_regression(n=20, num_features=2, key=0)
    method = bnn.MeanFieldVI(optimizer="sgd", learning_rate=1e8, epochs=5, batch_size=None)
    with pytest.raises(bnn.NonFiniteError, match="MeanFieldVI: .* at step [0-9]+"):
        bnn.fit(_linear_model(2, 0.01), data, method, key=0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"optimizer": "adamw2"}, ValueError, "unknown optimizer 'adamw2'"),
        ({"epochs": 0}, ValueError, "epochs must be > 0"),
        ({"num_samples": 2.5}, TypeError, "num_samples must be an int"),
        ({"num_particles": 0}, ValueError, "num_particles must be > 0"),
        ({"init_scale": 0.0}, ValueError, "init_scale must be > 0"),
        ({"kl_warmup": -1}, ValueError, "kl_warmup must be > 0"),
        ({"learning_rate": -1.0}, ValueError, "learning_rate must be > 0"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive int"),
        ({"batch_size": 8.0}, TypeError, "batch_size must be an int or None"),
        ({"elbo": "renyi"}, ValueError, "unknown elbo 'renyi'"),
        ({"init": "zeros"}, ValueError,
         r"init must be one of \('network', 'map'\) or a bayesnn.MAP, got 'zeros'"),
        ({"init": "random"}, ValueError, "init must be one of .* got 'random'"),
        ({"init": bnn.MAP}, TypeError, "init must be a str or a bayesnn.MAP"),
        ({"augment": "flip"}, TypeError, "augment must be a bayesnn.data.Augment"),
        ({"local_reparam": 1}, TypeError, "local_reparam must be a bool"),
    ],
)
def test_bad_configuration(kwargs, error, match):
    with pytest.raises(error, match=match):
        bnn.MeanFieldVI(**kwargs)


def test_batch_larger_than_data(toy):
    model = _linear_model(2, 0.1)
    with pytest.raises(ValueError, match=r"batch_size \(512\) is larger than the dataset"):
        bnn.fit(model, toy, bnn.MeanFieldVI(batch_size=512, epochs=1), key=0)


@pytest.mark.slow
def test_cnn_preset_on_digits():
    digits = bnn.data.load_digits()
    x, y = digits.x[:256], digits.y[:256]
    net = bnn.models.mnist_cnn(input_shape=(8, 8, 1))
    model = bnn.BNN(net, bnn.priors.FanInNormal(1.0), bnn.likelihoods.Categorical())
    method = bnn.MeanFieldVI(learning_rate=1e-3, epochs=3, batch_size=64, num_samples=8)
    post = bnn.fit(model, (x, y), method, key=0)
    assert (post.num_chains, post.num_draws) == (1, 8)
    probs = post.predict(digits.x[256:320]).probs
    assert probs.shape == (64, 10) and np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_mnist_mlp_preset(shared_data):
    train, test = bnn.data.load_mnist(shared_data / "mnist" / "mnist.npz")
    model = bnn.BNN(bnn.models.mnist_mlp(), bnn.priors.Normal(1.0), bnn.likelihoods.Categorical())
    method = bnn.MeanFieldVI(learning_rate=1e-3, epochs=2, batch_size=128, num_samples=8)
    post = bnn.fit(model, (train.x[:4096], train.y[:4096]), method, key=0)
    assert post.draws["net"]["layers"][0]["kernel"].shape == (1, 8, 784, 512)
    elbo = post.info["history"]["elbo"]
    assert elbo[1] > elbo[0]
    accuracy = np.mean(np.argmax(post.predict(test.x[:1000]).probs, -1) == test.y[:1000])
    assert accuracy > 0.8, accuracy

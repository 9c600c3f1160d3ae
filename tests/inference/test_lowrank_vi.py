"""LowRankVI (bayesnn/inference/lowrank_vi.py)."""

import numpy as np
import optax
import pytest
from flax import nnx

import bayesnn as bnn
from bayesnn.testing import assert_gaussian_matches, linear_posterior


def _linear_model(d, noise, prior_scale=1.0):
    net = bnn.models.MLP(d, (), 1, rngs=nnx.Rngs(0))
    return bnn.BNN(net, bnn.priors.Normal(prior_scale), bnn.likelihoods.Gaussian(scale=noise))


def _stack_linear(draws):
    """``(chain, draw, d + 1)`` samples of ``[w, b]`` from a linear network's draws."""
    layer = draws["net"]["layers"][0]
    return np.concatenate([layer["kernel"][..., 0], layer["bias"]], axis=-1)


def test_low_rank_vi_recovers_a_correlated_posterior():
    # Correlated, uncentred features: the exact posterior of [w1, w2, b] has correlations
    # -0.91 and -0.22, which a rank-3 guide over 3 coordinates can represent exactly.
    rng = np.random.default_rng(0)
    z = rng.normal(size=(40, 1))
    x = (np.c_[z, z + 0.3 * rng.normal(size=(40, 1))] + 1.0).astype(np.float32)
    y = (x @ [[1.0], [-0.5]] + 0.3 + 0.5 * rng.normal(size=(40, 1))).astype(np.float32)
    mean, cov = linear_posterior(x, y, 1.0, 0.5)
    method = bnn.LowRankVI(rank=3, elbo="trace", learning_rate=optax.exponential_decay(
        0.1, 2000, 1e-2), epochs=2000, batch_size=None, num_particles=64, num_samples=4000)
    post = bnn.fit(_linear_model(2, 0.5), (x, y), method, key=0)
    assert (post.num_chains, post.num_draws) == (1, 4000)
    assert post.info["guide_params"]["auto_cov_factor"].shape == (3, 3)
    # Independent draws; the optimiser's noise left whitened errors ≤ 0.04 (mean), 0.08
    # (variance) and 0.04 (correlation) over keys 0-6. A guide without its factor would
    # miss the -0.91 correlation entirely.
    assert_gaussian_matches(_stack_linear(post.draws), mean, cov, bias=0.05)


def test_bad_rank():
    with pytest.raises(ValueError, match="rank must be > 0"):
        bnn.LowRankVI(rank=0)

"""Ctrl-C mid-run: a sampler returns the draws it has, or says clearly that it has none."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import bayesnn as bnn
from bayesnn.inference import driver
from bayesnn.inference.schedules import PolynomialDecay

# 40 steps in 20 chunks of 2: chunks 0-9 warm up, then every chunk keeps one draw.
SGLD = bnn.SGLD(1e-4, batch_size=16, num_warmup=20, num_samples=10, thinning=2,
                num_chains=2, schedule=PolynomialDecay(b=5.0), init="random")


@pytest.fixture(scope="module")
def sgld_problem():
    net = bnn.models.MLP(2, (4,), 1, rngs=nnx.Rngs(0))
    model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=0.5))
    data, _ = bnn.data.linear_regression(n=50, num_features=2, noise=0.5, key=0)
    return model, data


def test_sgmcmc_interrupted_returns_the_draws_so_far(sgld_problem, tmp_path, ctrl_c_after):
    model, data = sgld_problem
    full = bnn.fit(model, data, SGLD, key=0)
    ctrl_c_after(13)
    with pytest.warns(UserWarning, match="interrupted after 26 steps"):
        part = bnn.fit(model, data, SGLD, key=0, checkpoint=tmp_path / "run.ckpt")

    assert part.info["interrupted"] and part.info["num_steps"] == 26
    assert part.num_draws == 3  # steps 21, 23 and 25
    for a, b in zip(jax.tree.leaves(part.draws), jax.tree.leaves(full.draws), strict=True):
        np.testing.assert_array_equal(a, b[:, :3])
    # Each draw keeps its own (decaying) step size.
    sizes = part.info["sample_stats"]["step_size"]
    np.testing.assert_array_equal(sizes, full.info["sample_stats"]["step_size"][:, :3])
    np.testing.assert_allclose(sizes[0], 1e-4 * (1 + np.array([21, 23, 25]) / 5) ** -0.55,
                               rtol=1e-6)


def test_sgmcmc_interrupted_during_warmup_says_so(sgld_problem, tmp_path, ctrl_c_after):
    model, data = sgld_problem
    ctrl_c_after(10)  # the last warm-up chunk
    with pytest.warns(UserWarning, match="interrupted"), pytest.raises(
            RuntimeError, match="SGLD was interrupted before its first draw"):
        bnn.fit(model, data, SGLD, key=0, checkpoint=tmp_path / "run.ckpt")


def _random_walk(key, states, t):
    """A cheap stand-in for a Gibbs sweep: a Gaussian step per chain, its size the info."""
    step = jax.random.normal(key, states.shape)
    return states + step, {"step": step}


def _sweeps(**kwargs):
    # 30 sweeps in 15 chunks of 2: chunks 0-4 warm up, then one draw per chunk.
    return driver.sample_chains(_random_walk, jnp.zeros((2, 3)), jax.random.key(0),
                                driver.thinned_steps(10, 10, 2), store=lambda s: s,
                                desc="Gibbs", **kwargs)


def test_gibbs_interrupted_returns_the_draws_so_far(tmp_path, ctrl_c_after):
    full = _sweeps()
    assert full.draws.shape == (2, 10, 3) and not full.interrupted
    assert full.steps_per_chunk == 2
    ctrl_c_after(8)
    with pytest.warns(UserWarning, match="interrupted after 16 steps"):
        part = _sweeps(checkpoint=driver.Checkpoint(tmp_path / "c"))
    assert part.interrupted and part.draws.shape == (2, 3, 3)  # sweeps 11, 13 and 15
    np.testing.assert_array_equal(part.kept_steps, [11, 13, 15])
    np.testing.assert_array_equal(part.draws, full.draws[:, :3])
    np.testing.assert_array_equal(part.infos["step"], full.infos["step"][:, :3])


def test_gibbs_interrupted_during_warmup_says_so(tmp_path, ctrl_c_after):
    ctrl_c_after(5)
    with pytest.warns(UserWarning, match="interrupted"), pytest.raises(
            RuntimeError, match="Gibbs was interrupted before its first draw"):
        _sweeps(checkpoint=driver.Checkpoint(tmp_path / "c"))

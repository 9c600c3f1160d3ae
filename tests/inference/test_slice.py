import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bayesnn.inference.slice import slice_sample

# A skewed target: Gamma(3, 1), log-density -inf for x <= 0; its shape minus one is an
# argument threaded through the loop.
GAMMA = stats.gamma(3.0)


def _gamma_logdensity(x, power):
    return jnp.where(x > 0, power * jnp.log(jnp.abs(x)) - x, -jnp.inf)


@jax.jit
def _updates(key, x0, width, max_steps_out):
    """Three slice updates of each of the chains started at ``x0``."""

    def chain(key, x):
        def body(carry, k):
            x, logp, args = carry
            x, logp, args, info = slice_sample(k, _gamma_logdensity, x, logp, width,
                                               max_steps_out, args=args)
            return (x, logp, args), info

        args = (jnp.float32(2.0),)
        (x, logp, args), info = jax.lax.scan(body, (x, _gamma_logdensity(x, *args), args),
                                             jax.random.split(key, 3))
        return x, logp, args[0], info.num_evals, info.exhausted.any()

    return jax.vmap(chain)(jax.random.split(key, x0.shape[0]), x0)


# (0.3, 4) and (0.2, 6) make the stepping-out budget bind (the slice is often wider than
# m w): invariance then needs the budget split uniformly at random between the two ends.
@pytest.mark.parametrize("width,max_steps_out",
                         [(0.2, 50), (1.0, 10), (20.0, 1), (0.3, 4), (0.2, 6)])
def test_slice_sampling_leaves_the_target_invariant(width, max_steps_out):
    """Exact draws of the target stay exact draws after three updates (Neal 2003)."""
    n = 4000
    x0 = jnp.asarray(GAMMA.rvs(size=n, random_state=np.random.default_rng(0)), jnp.float32)
    x, logp, power, evals, exhausted = _updates(jax.random.key(1), x0, width, max_steps_out)
    x = np.asarray(x)
    assert not np.any(exhausted)
    np.testing.assert_array_equal(power, 2.0)  # the arguments come back unchanged
    np.testing.assert_allclose(logp, 2 * np.log(x) - x, rtol=1e-5)  # logp belongs to x
    assert np.mean(np.abs(x - np.asarray(x0)) > 1e-6) > 0.9  # it moves
    assert np.all(evals >= 1)
    assert stats.kstest(x, GAMMA.cdf).pvalue > 1e-3
    z = 4.0
    assert abs(x.mean() - GAMMA.mean()) < z * GAMMA.std() / np.sqrt(n)
    central4 = (3 + float(GAMMA.stats(moments="k"))) * GAMMA.var() ** 2
    assert abs(x.var() - GAMMA.var()) < z * np.sqrt((central4 - GAMMA.var() ** 2) / n)


def test_stepping_out_budget_bounds_the_interval():
    """With max_steps_out=1 the interval is never stepped out: draws stay within ±width."""
    def logdensity(x):
        return -0.5 * x**2 / 100.0  # N(0, 10²), much wider than the interval

    keys = jax.random.split(jax.random.key(0), 500)
    zero = jnp.float32(0.0)
    x, *_ = jax.jit(jax.vmap(lambda k: slice_sample(k, logdensity, zero, zero, 0.5, 1)))(keys)
    assert np.abs(np.asarray(x)).max() <= 0.5

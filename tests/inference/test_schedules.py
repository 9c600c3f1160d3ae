import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesnn.inference.schedules import Constant, Cyclical, PolynomialDecay


def _in_scan(schedule, num_steps):
    """The schedule evaluated at traced steps inside lax.scan."""
    return jax.lax.scan(lambda c, t: (c, schedule(t)), 0, jnp.arange(num_steps))[1]


def test_constant_is_one_everywhere():
    np.testing.assert_array_equal(_in_scan(Constant(), 5), np.ones(5))
    assert np.shape(Constant()(np.arange(3))) == (3,)


def test_polynomial_decay_is_a_times_b_plus_t_to_the_minus_gamma():
    b, gamma = 100.0, 0.55
    t = np.array([0, 1, 10, 1000, 100000])
    a = b**gamma  # so that the factor is 1 at t = 0
    np.testing.assert_allclose(PolynomialDecay(b, gamma)(t), a * (b + t) ** -gamma, rtol=1e-6)
    np.testing.assert_allclose(_in_scan(PolynomialDecay(b, gamma), 5), a * (b + np.arange(5)) **
                               -gamma, rtol=1e-6)


def test_cyclical_follows_zhang_et_al_eq_1():
    L = 10
    t = np.arange(3 * L)
    k = t + 1  # the paper counts steps from 1
    alpha = 0.5 * (np.cos(np.pi * np.mod(k - 1, L) / L) + 1)
    np.testing.assert_allclose(Cyclical(L)(t), alpha, atol=1e-6)
    np.testing.assert_allclose(_in_scan(Cyclical(L), 3 * L), alpha, atol=1e-6)
    np.testing.assert_allclose(Cyclical(L)([0, 5, 10]), [1.0, 0.5, 1.0], atol=1e-6)


def test_cyclical_sampling_phase_is_r_at_least_beta():
    # 0.3 * 10 = 3.0000000000000004 in floating point; the phase split must still be 3 / 7
    schedule = Cyclical(10, exploration=0.3)
    assert schedule.exploration_steps == 3
    t = np.arange(20)
    expected = (t % 10) / 10 >= 0.3
    np.testing.assert_array_equal(schedule.sampling(t), expected)
    np.testing.assert_array_equal(_in_scan(schedule.sampling, 20), expected)
    np.testing.assert_array_equal(schedule.sampling_step(t[:10]), np.arange(10) - 3)
    assert Cyclical(10, exploration=0.0).sampling(np.arange(10)).all()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: PolynomialDecay(b=0.0), "b must be > 0"),
        (lambda: PolynomialDecay(gamma=1.5), r"gamma must be in \(0, 1\]"),
        (lambda: PolynomialDecay(gamma=0.0), r"gamma must be in \(0, 1\]"),
        (lambda: Cyclical(0), "cycle_length must be > 0"),
        (lambda: Cyclical(10, exploration=1.0), r"exploration must be in \[0, 1\)"),
        (lambda: Cyclical(10, exploration=0.95), "has no sampling step"),
    ],
)
def test_bad_schedules(make, match):
    with pytest.raises(ValueError, match=match):
        make()

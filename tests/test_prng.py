import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesnn.prng import as_key, normal, threefry2x32


def _reference(key, shape, dtype=jnp.float32):
    with jax.threefry_partitionable(False):
        return jax.random.normal(key, shape, dtype)


@pytest.mark.parametrize("shape", [(), (1,), (2,), (3,), (7, 5), (513,), (33, 2, 3)])
@pytest.mark.parametrize("make_key", [jax.random.key, jax.random.PRNGKey])
def test_normal_equals_jax_classic_threefry_bit_for_bit(shape, make_key):
    for seed in (0, 1, 12345):
        key = make_key(seed)
        got = jax.jit(normal, static_argnums=1)(key, shape)
        ref = _reference(key, shape)
        assert got.shape == ref.shape and got.dtype == ref.dtype
        np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))


def test_threefry2x32_known_answer():
    # Known-answer vectors of Salmon et al. (2011), Random123's kat_vectors, 20 rounds.
    zero = jnp.uint32(0)
    ones = jnp.uint32(0xFFFFFFFF)
    assert [int(w) for w in threefry2x32(zero, zero, zero, zero)] == [0x6B200159, 0x99BA4EFE]
    assert [int(w) for w in threefry2x32(ones, ones, ones, ones)] == [0x1CB996FC, 0xBB002BE7]
    pi = [jnp.uint32(w) for w in (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344)]
    assert [int(w) for w in threefry2x32(pi[2], pi[3], pi[0], pi[1])] == [0xC4923A9C, 0x483DF7A0]


def test_normal_other_dtypes_and_empty():
    key = jax.random.key(3)
    np.testing.assert_array_equal(normal(key, (4, 3), jnp.bfloat16),
                                  _reference(key, (4, 3), jnp.bfloat16))
    assert normal(key, (0, 3)).shape == (0, 3)


def test_normal_is_standard_normal():
    z = np.asarray(normal(jax.random.key(7), (200_000,)))
    # mean and variance within 5 standard errors; tails as for N(0, 1)
    assert abs(z.mean()) < 5 / np.sqrt(z.size)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / z.size)
    assert abs(np.mean(np.abs(z) > 2) - 0.0455) < 5 * np.sqrt(0.0455 * 0.9545 / z.size)


def test_as_key_takes_seeds_and_keys_and_refuses_the_rest():
    typed = as_key(3)
    assert jax.dtypes.issubdtype(typed.dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(typed),
                                  jax.random.key_data(jax.random.key(3)))
    raw = jax.random.key_data(typed)
    assert as_key(raw) is raw and as_key(typed) is typed and as_key(np.int64(3)) is not None
    for bad in (True, 1.5, "0", np.zeros(3, np.uint32)):
        with pytest.raises(TypeError, match="key must be an int seed or a JAX PRNG key"):
            as_key(bad)

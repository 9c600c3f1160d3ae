from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesnn.data import Batches, Dataset, check_batch_size, epoch_batches, num_batches, take
from bayesnn.data.batching import next_batch

jit_batches = jax.jit(epoch_batches, static_argnums=(1, 2, 3))


@pytest.mark.parametrize(
    ("n", "b", "drop", "expected"),
    [(10, 5, False, 2), (10, 4, False, 3), (10, 4, True, 2), (10, 10, True, 1), (3, 1, False, 3)],
)
def test_num_batches(n, b, drop, expected):
    assert num_batches(n, b, drop) == expected


def test_check_batch_size():
    assert check_batch_size(None, 100) == 100
    assert check_batch_size(np.int64(32), 100) == 32
    with pytest.raises(
        ValueError, match=r"batch_size \(512\) is larger than the dataset \(100 examples\)"
    ):
        check_batch_size(512, 100)
    for bad in (0, -3):
        with pytest.raises(ValueError, match=f"positive int or None.*got {bad}"):
            check_batch_size(bad, 100)
    for bad in (2.5, "32", True):
        with pytest.raises(TypeError, match="positive int or None.*of type"):
            check_batch_size(bad, 100)


def test_epoch_batches_cover_every_example_once_with_a_partial_last_batch():
    batches = jit_batches(jax.random.key(0), 10, 4, False)
    assert isinstance(batches, Batches)
    assert batches.indices.shape == batches.mask.shape == (3, 4)
    assert batches.indices.dtype == jnp.int32 and batches.mask.dtype == jnp.bool_
    np.testing.assert_array_equal(batches.mask.sum(1), [4, 4, 2])
    assert not batches.mask[-1, 2:].any()
    real = np.asarray(batches.indices)[np.asarray(batches.mask)]
    np.testing.assert_array_equal(np.sort(real), np.arange(10))
    assert np.all((batches.indices >= 0) & (batches.indices < 10))  # padding stays in range


def test_epoch_batches_drop_remainder_keeps_only_full_batches():
    batches = jit_batches(jax.random.key(1), 10, 4, True)
    assert batches.indices.shape == (2, 4) and batches.mask.all()
    assert len(np.unique(batches.indices)) == 8


def test_epoch_batches_exact_division():
    batches = jit_batches(jax.random.key(2), 12, 4, False)
    assert batches.indices.shape == (3, 4) and batches.mask.all()
    np.testing.assert_array_equal(np.sort(batches.indices.ravel()), np.arange(12))


def test_epoch_batches_depend_only_on_the_key():
    a, b, c = (jit_batches(jax.random.key(k), 10, 4, False) for k in (3, 3, 4))
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)


def test_epoch_batches_validates_batch_size():
    with pytest.raises(ValueError, match=r"batch_size \(20\) is larger than the dataset \(10"):
        epoch_batches(jax.random.key(0), 10, 20)


LOSSES = jnp.asarray(np.random.default_rng(0).gamma(2.0, size=10), jnp.float32)


@partial(jax.jit, static_argnums=(1,))
def _estimates(key, batch_size):
    """(N / b) * sum of the losses of each batch, for one epoch."""
    n = LOSSES.shape[0]
    batches = epoch_batches(key, n, batch_size)
    sums = jnp.sum(jnp.where(batches.mask, take(LOSSES, batches.indices), 0.0), axis=1)
    return n / batches.mask.sum(1) * sums


def test_epoch_average_of_scaled_batch_sums_is_exact_when_batches_divide():
    estimates = _estimates(jax.random.key(0), 5)
    np.testing.assert_allclose(estimates.mean(), LOSSES.sum(), rtol=1e-6)


def test_scaled_batch_sums_are_unbiased_for_every_batch_including_the_partial_one():
    keys = jax.random.split(jax.random.key(0), 4000)
    estimates = jax.vmap(_estimates, in_axes=(0, None))(keys, 4)  # batches of 4, 4, 2
    mean = estimates.mean(0)
    standard_error = estimates.std(0) / np.sqrt(len(keys))
    # each batch's Monte Carlo mean lies within 4 standard errors of the full sum
    assert np.all(np.abs(mean - LOSSES.sum()) < 4 * standard_error), (mean, standard_error)


def test_take_gathers_rows_inside_jit():
    data = Dataset(np.arange(12.0).reshape(6, 2), np.arange(6))
    batch = jax.jit(take)(data, jnp.array([4, 1]))
    np.testing.assert_array_equal(batch.x, [[8.0, 9.0], [2.0, 3.0]])
    np.testing.assert_array_equal(batch.y, [4, 1])
    host = take(data, np.array([[0, 5]]))  # NumPy in, NumPy out; batch axes are kept
    assert isinstance(host.x, np.ndarray) and host.x.shape == (1, 2, 2)


@partial(jax.jit, static_argnums=(1, 2, 3))
def _stream(key, num_examples, batch_size, num_steps):
    """``num_steps`` batches of next_batch, each step with its own key."""

    def body(epoch, inp):
        step, k = inp
        epoch, idx, mask = next_batch(k, epoch, step, num_examples, batch_size)
        return epoch, (idx, mask)

    k = num_batches(num_examples, batch_size)
    epoch = jnp.zeros((k, batch_size), jnp.int32)
    steps = jnp.arange(num_steps)
    return jax.lax.scan(body, epoch, (steps, jax.random.split(key, num_steps)))[1]


def test_next_batch_streams_epochs_that_each_cover_the_data_once():
    idx, mask = _stream(jax.random.key(0), 10, 4, 9)  # 3 epochs of batches of 4, 4, 2
    idx, mask = np.asarray(idx).reshape(3, 3, 4), np.asarray(mask).reshape(3, 3, 4)
    np.testing.assert_array_equal(mask.sum(-1), [[4, 4, 2]] * 3)
    epochs = [np.sort(i[m]) for i, m in zip(idx, mask, strict=True)]
    for e in epochs:
        np.testing.assert_array_equal(e, np.arange(10))
    # each epoch is a fresh shuffle
    assert not np.array_equal(idx[0][mask[0]], idx[1][mask[1]])


def test_next_batch_matches_epoch_batches_at_the_start_of_an_epoch():
    key = jax.random.key(3)
    epoch, idx, mask = next_batch(key, jnp.zeros((3, 4), jnp.int32), 3, 12, 4)
    expected = epoch_batches(key, 12, 4)
    np.testing.assert_array_equal(epoch, expected.indices)
    np.testing.assert_array_equal(idx, expected.indices[0])
    # mid-epoch the carried epoch is used as is, whatever the key
    _, idx, _ = next_batch(jax.random.key(9), epoch, 5, 12, 4)
    np.testing.assert_array_equal(idx, expected.indices[2])


def test_next_batch_reshuffles_with_a_branch_under_vmap_when_the_step_is_shared():
    def chains(keys, epochs, step):
        return jax.vmap(next_batch, (0, 0, None, None, None))(keys, epochs, step, 1000, 10)

    jaxpr = jax.make_jaxpr(chains)(
        jax.random.split(jax.random.key(0), 4), jnp.zeros((4, 100, 10), jnp.int32), 0
    )
    # a cond (not a select of both branches): the O(N) shuffle runs only at epoch starts
    assert "cond" in str(jaxpr)

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesnn.inference.driver import NonFiniteError, all_finite, run_chunks


def _growth_chunk(state, key, i, rate):
    """Ten steps of x <- x * rate + noise; per-step values recorded."""

    def step(x, k):
        x = x * rate + 0.01 * jax.random.normal(k)
        return x, x

    return jax.lax.scan(step, state, jax.random.split(key, 10))


def test_same_key_same_result_and_chunks_see_distinct_keys():
    a = run_chunks(_growth_chunk, jnp.float32(1.0), jax.random.key(0), 3, 1.0, steps_per_chunk=10)
    b = run_chunks(_growth_chunk, jnp.float32(1.0), jax.random.key(0), 3, 1.0, steps_per_chunk=10)
    np.testing.assert_array_equal(np.concatenate(a.outputs), np.concatenate(b.outputs))
    increments = np.diff(np.concatenate(a.outputs))
    assert not np.allclose(increments[:10], increments[10:20])
    assert a.num_chunks_done == 3 and not a.interrupted


def test_chunk_function_compiles_once():
    traces = []

    def chunk(state, key, i, rate):
        traces.append(1)
        return _growth_chunk(state, key, i, rate)

    run_chunks(chunk, jnp.float32(1.0), jax.random.key(0), 5, 1.0, steps_per_chunk=10)
    assert len(traces) == 1


def test_non_finite_state_names_the_step():
    with pytest.raises(NonFiniteError, match=r"at step 1[3-5]; try a smaller step size"):
        # Noise lifts x to ~0.01 at step 0; x * 1e3 per step overflows float32 at step ~14.
        run_chunks(_growth_chunk, jnp.float32(1e-30), jax.random.key(0), 5, 1e3,
                   steps_per_chunk=10, desc="growth")


def test_locate_names_the_step_when_the_chunk_records_none():
    calls = []

    def final_only(state, key, i, rate):  # outputs one value per chunk, not per step
        state, _ = _growth_chunk(state, key, i, rate)
        return state, state

    def locate(state, key, i, rate):
        calls.append(i)
        return _growth_chunk(state, key, i, rate)

    ok = run_chunks(final_only, jnp.float32(1.0), jax.random.key(0), 3, 1.0,
                    steps_per_chunk=10, locate=locate)
    assert ok.num_chunks_done == 3 and calls == []  # only a failing chunk is replayed
    with pytest.raises(NonFiniteError, match=r"at step 1[3-5]; try a smaller step size"):
        run_chunks(final_only, jnp.float32(1e-30), jax.random.key(0), 5, 1e3,
                   steps_per_chunk=10, locate=locate)
    with pytest.raises(NonFiniteError, match=r"during steps 10-19"):
        run_chunks(final_only, jnp.float32(1e-30), jax.random.key(0), 5, 1e3,
                   steps_per_chunk=10)


def test_callback_can_stop_the_run():
    seen = []

    def callback(i, state, out):
        seen.append(i)
        return i == 1

    res = run_chunks(_growth_chunk, jnp.float32(1.0), jax.random.key(0), 10, 1.0,
                     steps_per_chunk=10, callback=callback)
    assert seen == [0, 1] and res.num_chunks_done == 2 and len(res.outputs) == 2


def test_keyboard_interrupt_returns_what_was_computed():
    def callback(i, state, out):
        if i == 2:
            raise KeyboardInterrupt

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = run_chunks(_growth_chunk, jnp.float32(1.0), jax.random.key(0), 10, 1.0,
                         steps_per_chunk=10, callback=callback)
    assert res.interrupted and res.num_chunks_done == 3 and len(res.outputs) == 3
    assert any("interrupted after 30 steps" in str(x.message) for x in w)


def test_all_finite_ignores_integer_leaves():
    assert bool(all_finite({"a": jnp.ones(3), "n": jnp.int32(4)}))
    assert not bool(all_finite({"a": jnp.array([1.0, jnp.nan])}))

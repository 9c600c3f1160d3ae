import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesnn.inference.driver import (
    EmptyInfo,
    NonFiniteError,
    all_finite,
    run_chunks,
    sample_chains,
    thinned_steps,
)


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


# -- sample_chains ---------------------------------------------------------------------


def _counter(key, state, t, offset):
    """Every chain counts its steps; the info is the step index: draws are exact."""
    return state + 1.0, {"t": jnp.broadcast_to(t + offset, state.shape[:1])}


@pytest.mark.parametrize("skip_unkept", [True, False])
@pytest.mark.parametrize("buffer_bytes", [None, 64])
def test_sample_chains_keeps_the_states_the_mask_marks(monkeypatch, skip_unkept, buffer_bytes):
    from bayesnn.inference import driver

    monkeypatch.setattr(driver, "_skip_unkept", lambda: skip_unkept)
    if buffer_bytes is not None:  # a few draws per chunk: many small chunks
        monkeypatch.setattr(driver, "DRAW_BUFFER_BYTES", buffer_bytes)
    keep = np.zeros(57, bool)
    keep[[4, 5, 9, 30, 31, 32, 56]] = True  # uneven, as a cyclical schedule's mask
    res = sample_chains(_counter, jnp.zeros((3, 2)), jax.random.key(0), keep, 100,
                        store=lambda s: s, desc="count")
    kept = np.flatnonzero(keep)
    assert res.draws.shape == (3, 7, 2) and res.infos["t"].shape == (3, 7)
    np.testing.assert_array_equal(res.draws, np.broadcast_to((kept + 1.0)[None, :, None],
                                                             (3, 7, 2)))
    np.testing.assert_array_equal(res.infos["t"], np.broadcast_to(kept + 100, (3, 7)))
    np.testing.assert_array_equal(res.kept_steps, kept)
    assert res.num_steps >= 57 and res.num_steps % res.steps_per_chunk == 0
    assert not res.interrupted
    if buffer_bytes is not None:
        assert res.steps_per_chunk < 57 // 20 + 1


def test_sample_chains_traces_the_step_once_and_same_key_same_draws():
    traces = []

    def walk(key, state, t):
        traces.append(1)
        return state + jax.random.normal(key, state.shape), EmptyInfo()

    keep = thinned_steps(num_warmup=10, num_samples=8, thinning=3)
    a = sample_chains(walk, jnp.zeros((2, 4)), jax.random.key(1), keep, store=lambda s: s,
                      desc="walk")
    assert len(traces) == 1 and a.num_steps // a.steps_per_chunk > 1  # many chunks
    b = sample_chains(walk, jnp.zeros((2, 4)), jax.random.key(1), keep, store=lambda s: s,
                      desc="walk")
    np.testing.assert_array_equal(a.draws, b.draws)
    assert a.draws.shape == (2, 8, 4) and a.infos == EmptyInfo()
    assert not np.allclose(a.draws[0], a.draws[1])  # chains get their own noise
    np.testing.assert_array_equal(a.kept_steps, 10 + 3 * np.arange(8) + 2)


def test_sample_chains_names_the_step_that_went_non_finite():
    def blow_up(key, state, t):
        return state + jnp.where(t == 17, jnp.inf, 0.0), EmptyInfo()

    with pytest.raises(NonFiniteError, match="blow: .* at step 17; check it"):
        sample_chains(blow_up, jnp.zeros((2, 1)), jax.random.key(0),
                      thinned_steps(0, 40, 1), store=lambda s: s, desc="blow", hint="check it")


def test_thinned_steps_is_warmup_then_every_thinning_th_step():
    np.testing.assert_array_equal(np.flatnonzero(thinned_steps(4, 3, 2)), [5, 7, 9])
    assert len(thinned_steps(4, 3, 2)) == 10  # ends at the last draw

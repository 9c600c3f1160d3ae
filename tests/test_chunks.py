import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesnn.chunks import chunk_indices, draw_chunks, map_rows


@pytest.mark.parametrize("balance", [False, True])
@pytest.mark.parametrize("n, size", [(1, 4), (10, 4), (10, 8), (10, 10), (10, 64), (17, 5)])
def test_chunks_cover_every_index_once_in_one_size(n, size, balance):
    chunks = list(chunk_indices(n, size, balance=balance))
    assert len({len(index) for index, _ in chunks}) == 1 and len(chunks[0][0]) <= size
    np.testing.assert_array_equal(np.concatenate([i[:c] for i, c in chunks]), np.arange(n))
    assert all(np.all(i[c:] == n - 1) for i, c in chunks)  # padding repeats the last index
    assert len(chunks) == -(-n // size)


def test_balanced_chunks_pad_less_and_fixed_ones_keep_their_size():
    assert [(len(i), c) for i, c in chunk_indices(10, 8, balance=True)] == [(5, 5), (5, 5)]
    assert [(len(i), c) for i, c in chunk_indices(10, 8)] == [(8, 8), (8, 2)]
    assert {len(i) for n in (9, 30) for i, _ in chunk_indices(n, 8)} == {8}


def test_map_rows_is_fn_on_all_rows_and_compiles_once():
    x = np.arange(22.0).reshape(11, 2)
    y = np.arange(11)
    fn = jax.jit(lambda a, b: {"sum": a.sum(1) + b, "x": a})
    out = map_rows(fn, (x, y), 4)
    np.testing.assert_array_equal(out["sum"], x.sum(1) + y)
    np.testing.assert_array_equal(out["x"], x)
    assert fn._cache_size() == 1
    np.testing.assert_array_equal(map_rows(jnp.negative, x, 100), -x)  # one array, one chunk


def test_draw_chunks_gather_by_chain_and_draw():
    draws = {"w": np.arange(2 * 5 * 3.0).reshape(2, 5, 3)}
    flat = draws["w"].reshape(10, 3)
    chunks = list(draw_chunks(draws, 4))
    assert [c for _, _, c in chunks] == [4, 4, 2]
    for positions, index, _ in chunks:
        np.testing.assert_array_equal(positions["w"], flat[index])
    index = np.array([7, 1, 8])
    (positions, got, count), = draw_chunks(draws, 64, index)
    np.testing.assert_array_equal(got, index)
    np.testing.assert_array_equal(positions["w"], flat[index])
    assert count == 3

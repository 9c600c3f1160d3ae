"""Internal: evaluation in fixed-size chunks of rows and of posterior draws.

Prediction, the ArviZ export and MAP's validation loss evaluate a function on more rows
(and draws) than fit in memory at once. Every chunk is padded to one size, so each
function compiles once; padding repeats the last index and is dropped from the results.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__: list[str] = []


def chunk_indices(n: int, size: int, *, balance: bool = False):
    """Yield ``(index, count)``: ``index`` of length ``min(size, n)`` whose first ``count``
    entries are the next ones of ``0..n-1`` and the rest repeat ``n - 1``.

    With ``balance`` the chunks are made as even as their number allows (10 at ``size=8``:
    two of 5, not 8 + 8 with 6 padded), so less than one entry per chunk is padding; the
    size then depends on ``n``. Without it the size is ``size`` whatever ``n >= size``, so
    a compiled function is reused across inputs of different lengths.
    """
    size = min(size, n)
    if balance:
        size = -(-n // -(-n // size))
    for start in range(0, n, size):
        yield np.minimum(np.arange(start, start + size), n - 1), min(size, n - start)


def map_rows(fn, arrays, batch_size: int):
    """Apply ``fn`` to row chunks of ``arrays`` (one array or a tuple) and concatenate.

    The last chunk is padded to the same size (one compilation); padding rows are dropped.
    """
    arrays = arrays if isinstance(arrays, tuple) else (arrays,)
    arrays = tuple(np.asarray(a) for a in arrays)
    outs = [
        jax.tree.map(lambda o, m=count: o[:m], fn(*(a[index] for a in arrays)))
        for index, count in chunk_indices(arrays[0].shape[0], batch_size)
    ]
    return jax.tree.map(lambda *o: jnp.concatenate(o), *outs)


def draw_chunks(draws, size: int, index=None):
    """Yield ``(positions, index, count)`` over balanced chunks of posterior draws.

    ``draws`` has leading ``(chain, draw)`` axes; ``index`` selects flat draw indices
    ``chain * num_draws + draw`` (default all). Each chunk gathers ``positions`` with one
    leading axis at its padded flat ``index``, whose first ``count`` entries are real.
    Draws are gathered by ``(chain, draw)``, so no copy of all draws is made.
    """
    num_chains, num_draws = jax.tree.leaves(draws)[0].shape[:2]
    index = np.arange(num_chains * num_draws) if index is None else np.asarray(index)
    for pick, count in chunk_indices(len(index), size, balance=True):
        flat = index[pick]
        chain, draw = np.divmod(flat, num_draws)
        yield jax.tree.map(lambda a, c=chain, d=draw: a[c, d], draws), flat, count

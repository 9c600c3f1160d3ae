"""The one loop every iterative method runs on.

A method supplies a pure ``chunk_fn(state, key, chunk_index, *args) -> (state, out)`` that
advances its state by a fixed number of steps inside one ``lax.scan``. The driver jits it
once and calls it chunk after chunk; between chunks, on the host, it checks that the
state is finite (a flag computed inside the jitted chunk), fetches the outputs the method
keeps, updates the progress bar, and hands the chunk to a callback (validation, early
stopping, checkpoints). Chunk ``i`` draws its randomness from ``fold_in(key, i)``, so
a run's result depends only on its key, never on how it was split into calls.

A state placed across devices (:func:`bayesnn.inference.sharding.shard_chains`) stays so:
every chunk returns it with the shardings it came in with, and jit partitions the work
along them.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from bayesnn import serialization
from bayesnn.bnn import Batch

__all__ = [
    "Checkpoint", "NonFiniteError", "RunResult", "all_finite", "buffer_slots", "first_rows",
    "run_chunks", "scan_minibatches", "store_row",
]


class NonFiniteError(FloatingPointError):
    """The sampler or optimiser state became NaN or infinite."""


class RunResult(NamedTuple):
    """What :func:`run_chunks` returns."""

    state: Any
    outputs: list
    num_chunks_done: int
    interrupted: bool
    seconds: float


def all_finite(tree) -> jax.Array:
    """True when every floating-point leaf of ``tree`` is finite."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else True


def _first_bad_step(out, chunk_index: int, steps_per_chunk: int) -> int | None:
    """The first step whose per-step outputs (leading axis = steps) are non-finite."""
    per_step = [
        np.asarray(v) for v in jax.tree.leaves(out)
        if np.ndim(v) >= 1 and np.shape(v)[0] == steps_per_chunk
        and np.issubdtype(np.asarray(v).dtype, np.inexact)
    ]
    if not per_step:
        return None
    bad = np.zeros(steps_per_chunk, bool)
    for v in per_step:
        bad |= ~np.isfinite(v.reshape(steps_per_chunk, -1)).all(axis=1)
    return int(chunk_index * steps_per_chunk + np.argmax(bad)) if bad.any() else None


def run_chunks(
    chunk_fn: Callable,
    state,
    key: jax.Array,
    num_chunks: int,
    *args,
    steps_per_chunk: int = 1,
    callback: Callable[[int, Any, Any], bool | None] | None = None,
    select: Callable[[int, Any], Any] | None = None,
    locate: Callable | None = None,
    desc: str = "",
    progress: bool | None = None,
    checkpoint: Checkpoint | None = None,
    hint: str = "try a smaller step size or learning rate",
) -> RunResult:
    """Run ``num_chunks`` jitted chunks of a method.

    Parameters
    ----------
    chunk_fn
        ``chunk_fn(state, key, chunk_index, *args) -> (state, out)``; pure and jittable.
        ``out`` is a pytree whose per-step arrays have ``steps_per_chunk`` leading rows.
    state
        Initial state (any pytree). If it is spread over several devices, every chunk
        returns it with the same shardings.
    key
        PRNG key; chunk ``i`` receives ``jax.random.fold_in(key, i)``.
    num_chunks
        Total number of chunks of the run.
    *args
        Passed to every call (data arrays: arguments, not constants baked into the jit).
    steps_per_chunk
        Steps per chunk, for the progress bar and error messages.
    callback
        ``callback(chunk_index, state, out)`` after each chunk; returning True stops the run.
    select
        ``select(chunk_index, out)``: the part of a chunk's outputs the run keeps, taken on
        the device before the copy to the host (e.g. the filled rows of a draw buffer; on a
        GPU the copy of a whole buffer can cost more than the chunk). Default: all of it.
    locate
        A variant of ``chunk_fn`` whose per-step outputs show where a state turned
        non-finite, for chunks whose own outputs do not (a per-step check has a cost on
        every step). Run, from the chunk's start, only when a chunk fails.
    progress
        Show a tqdm bar (it appears only once a run has lasted 2 s). None: on a terminal only.
    checkpoint
        Write the state, the outputs so far and the chunk counter to ``checkpoint.path``
        every ``checkpoint.every`` chunks; if the file exists, resume from it. Chunk ``i``
        always uses ``fold_in(key, i)``, so a resumed run gives the same result as one that
        was never interrupted.
    hint
        Advice appended to the non-finite error.

    Returns
    -------
    RunResult
        Final state, the list of chunk outputs (on the host), chunks done, whether the run
        was interrupted by Ctrl-C (it then returns what it has, with a warning), and seconds.

    Raises
    ------
    NonFiniteError
        When the state turns NaN or infinite, naming the step.
    """
    shardings = _placement(state)
    chunk_fn = _keep_placement(chunk_fn, shardings)

    @jax.jit
    def jitted(state, i, *args):
        state, out = chunk_fn(state, jax.random.fold_in(key, i), i, *args)
        return state, out, all_finite(state)

    outputs, start = [], 0
    if checkpoint is not None and Path(checkpoint.path).exists():
        state, outputs, start = _restore(checkpoint, state, key, num_chunks)
        state = state if shardings is None else jax.device_put(state, shardings)
    done = start
    interrupted = False
    t0 = time.perf_counter()
    bar = tqdm(
        total=num_chunks * steps_per_chunk, initial=start * steps_per_chunk, desc=desc,
        unit="step", delay=2.0, disable=None if progress is None else not progress, leave=False,
    )
    try:
        for i in range(start, num_chunks):
            new_state, out, finite = jitted(state, np.int32(i), *args)
            if not finite:
                if locate is not None:
                    out = jax.jit(locate)(state, jax.random.fold_in(key, i), np.int32(i), *args)[1]
                step = _first_bad_step(out, i, steps_per_chunk)
                where = (
                    f"at step {step}" if step is not None
                    else f"during steps {i * steps_per_chunk}-{(i + 1) * steps_per_chunk - 1}"
                )
                raise NonFiniteError(f"{desc or 'run'}: the state became NaN or infinite {where}; "
                                     f"{hint}")
            state = new_state
            outputs.append(_fetch(out if select is None else select(i, out)))
            done = i + 1
            bar.update(steps_per_chunk)
            stop = callback is not None and callback(i, state, out)
            if checkpoint is not None and (stop or done % checkpoint.every == 0
                                           or done == num_chunks):
                _save(checkpoint, state, outputs, done, key, num_chunks)
            if stop:
                break
    except KeyboardInterrupt:
        interrupted = True
        warnings.warn(
            f"{desc or 'run'} interrupted after {done * steps_per_chunk} steps; "
            "returning what was computed so far",
            stacklevel=2,
        )
    finally:
        bar.close()
    return RunResult(state, outputs, done, interrupted, time.perf_counter() - t0)


def _placement(state):
    """The shardings of ``state`` when some of its arrays span several devices, else None."""
    leaves = jax.tree.leaves(state)
    if not any(isinstance(a, jax.Array) and len(a.sharding.device_set) > 1 for a in leaves):
        return None
    return jax.tree.map(lambda a: a.sharding, state)


def _keep_placement(chunk_fn: Callable, shardings) -> Callable:
    """``chunk_fn`` returning its state with ``shardings`` (unchanged when None)."""
    if shardings is None:
        return chunk_fn

    def chunk(state, *args):
        state, out = chunk_fn(state, *args)
        return jax.lax.with_sharding_constraint(state, shardings), out

    return chunk


class Checkpoint(NamedTuple):
    """Where and how often :func:`run_chunks` saves a run, and what identifies the run.

    ``fingerprint`` (what :func:`bayesnn.fit` makes: the method's and the model's
    configuration by field, digests of the data and the initial weights) guards against
    resuming a different run from the same file. It holds no memory address, so the same
    run started again in a new process resumes.
    """

    path: str
    every: int = 1
    fingerprint: str = ""


_CHECKPOINT_FORMAT = "bayesnn.checkpoint/4"  # 4: JSON and .npy, no pickle; 3: SG-MCMC buffers


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _fetch(tree):
    """Device pytree → numpy pytree in one batched copy, gathering arrays that span other
    processes' devices (a run across hosts, after ``jax.distributed.initialize()``)."""
    tree = jax.tree.map(
        lambda x: multihost_utils.process_allgather(x, tiled=True)
        if isinstance(x, jax.Array) and not x.is_fully_addressable else x, tree)
    return jax.tree.map(np.asarray, jax.device_get(tree))


def buffer_slots(kept_per_chunk, steps_per_chunk: int) -> int:
    """Rows of a chunk's draw buffer: the most draws any chunk keeps, plus a scratch row that
    unkept steps may write to; never ``steps_per_chunk`` rows, so that the buffer is not
    taken for per-step outputs when a failed chunk is searched for its step."""
    slots = int(np.max(kept_per_chunk)) + 1
    return slots + (slots == steps_per_chunk)


def store_row(buffer, values, row):
    """``buffer`` (a pytree of arrays with a leading row axis) with ``values`` at ``row``."""
    return jax.tree.map(lambda b, v: jax.lax.dynamic_update_index_in_dim(b, v, row, 0),
                        buffer, values)


def first_rows(tree, k: int):
    """The first ``k`` rows of every array of ``tree``: a ``select`` for :func:`run_chunks`
    that keeps the filled part of a draw buffer (``k = 0`` touches no device)."""
    if k == 0:
        return jax.tree.map(lambda a: np.empty((0, *a.shape[1:]), a.dtype), tree)
    return jax.tree.map(lambda a: a[:k], tree)


def _to_host(tree):
    """Device pytree → host pytree: numpy arrays, gathered from other processes' devices;
    typed PRNG keys stay typed (on one device), so a file records their implementation."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = [_is_key(x) for x in leaves]
    data = _fetch([jax.random.key_data(x) if k else x for x, k in zip(leaves, keys, strict=True)])
    return jax.tree.unflatten(treedef, [
        jax.random.wrap_key_data(d, impl=jax.random.key_impl(x)) if k else d
        for d, x, k in zip(data, leaves, keys, strict=True)])


def _from_host(pairs, arrays, like):
    """Inverse of :func:`_to_host` after a file: the leaves saved by path, in the structure
    and key types of ``like`` (``ValueError`` naming a leaf that does not fit)."""
    return serialization.decode_leaves(pairs, arrays, like)


def _save(checkpoint: Checkpoint, state, outputs, done: int, key, num_chunks: int) -> None:
    arrays: dict = {}
    content = {
        "fingerprint": checkpoint.fingerprint, "num_chunks": num_chunks, "done": done,
        "key": serialization.encode(_to_host(key), arrays, "key"),
        "state": serialization.encode_leaves(_to_host(state), arrays, "state"),
        "outputs": serialization.encode(outputs, arrays, "outputs"),
    }
    serialization.write(checkpoint.path, _CHECKPOINT_FORMAT, content, arrays)


def _restore(checkpoint: Checkpoint, state, key, num_chunks: int, *, desc: str = "",
             progress: bool | None = None):
    """The state, outputs and chunk count of a checkpoint of this run; says so on stderr
    (unless ``progress=False``). ``ValueError`` when the file is not a checkpoint (a pickle
    is refused unread) or belongs to another run."""
    path = checkpoint.path
    header, arrays = serialization.read(path, _CHECKPOINT_FORMAT, "checkpoint")
    try:
        saved_key = serialization.decode(header["key"], arrays)
        done = header["done"]
        differ = serialization.fingerprint_difference(header["fingerprint"],
                                                      checkpoint.fingerprint)
        if header["num_chunks"] != num_chunks:
            differ.append("length")
        if _is_key(saved_key) != _is_key(key) or not np.array_equal(
                *(jax.random.key_data(k) if _is_key(k) else np.asarray(k)
                  for k in (saved_key, key))):
            differ.append("key")
        if differ:
            raise ValueError(
                f"checkpoint {path} belongs to a different run (its {', '.join(differ)} "
                f"differ{'s' if len(differ) == 1 else ''}); delete it or choose another path")
        if not (isinstance(done, int) and 0 <= done <= num_chunks):
            raise ValueError(f"checkpoint {path} is damaged: {done!r} chunks done")
        state = _from_host(header["state"], arrays, state)
        outputs = serialization.decode(header["outputs"], arrays)
    except KeyError as e:
        raise ValueError(f"checkpoint {path} is damaged: no {e}") from None
    if progress is not False:
        name = desc or _method_name(checkpoint.fingerprint)
        print(f"{name}: {path} holds a finished run; returning its saved result"
              if done == num_chunks else
              f"resuming {name} from chunk {done + 1} of {num_chunks} ({path})",
              file=sys.stderr)
    return state, outputs, done


def _method_name(fingerprint: str) -> str:
    """The method's class name in a fingerprint of :func:`bayesnn.fit`, else "run"."""
    try:
        name = json.loads(fingerprint)["method"]["config"]["class"]
    except (TypeError, KeyError, json.JSONDecodeError):
        return "run"
    return str(name).replace(":", ".").rsplit(".", 1)[-1]


def scan_minibatches(step_fn: Callable, state, key: jax.Array, batches, data) -> tuple:
    """Scan ``step_fn(state, key, batch) -> (state, out)`` over the batches of one epoch.

    ``batches`` is a :class:`bayesnn.data.Batches` of ``(K, B)`` indices and masks; each
    step gets the gathered :class:`bayesnn.bnn.Batch` and its own key.
    """
    x, y = data
    keys = jax.random.split(key, batches.indices.shape[0])

    def body(state, inp):
        k, idx, mask = inp
        return step_fn(state, k, Batch(x[idx], y[idx], mask))

    return jax.lax.scan(body, state, (keys, batches.indices, batches.mask))

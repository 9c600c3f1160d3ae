"""The one loop every iterative method runs on.

:func:`sample_chains` is the loop of every MCMC method: it steps all chains, keeps the
draws a keep-mask selects (warm-up and thinning) and returns them with leading
``(chain, draw)`` axes, on :func:`run_chunks`. Samplers are :class:`SamplingAlgorithm`
pairs. Below it, a method supplies a pure ``chunk_fn(state, key, chunk_index, *args) ->
(state, out)`` that advances its state by a fixed number of steps inside one ``lax.scan``;
:func:`run_chunks` jits it once and calls it chunk after chunk; between chunks, on the
host, it checks that the state is finite (a flag computed inside the jitted chunk),
fetches the outputs the method keeps, reports progress
(:mod:`~bayesnn.inference.progress`), and hands the chunk to a callback (validation, early
stopping, checkpoints). Chunk ``i`` draws its randomness from ``fold_in(key, i)``, so a
run's result depends only on its key, never on how it was split into calls.

Compiled once per program: the key, the state and the data are arguments of the jitted
chunk, and a run given a ``cache_key`` (:func:`~bayesnn.inference.programs.program_key` of
what its chunk closes over) reuses the program of an earlier run with the same key, chunk
length, state and data shapes and device layout (:mod:`~bayesnn.inference.programs`), so a
second fit of the same architecture and method does not compile.

A state placed across devices (:func:`bayesnn.inference.sharding.shard_chains`) stays so:
every chunk returns it with the shardings it came in with, and jit partitions the work
along them.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from collections.abc import Callable, Hashable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from bayesnn import serialization
from bayesnn.bnn import Batch
from bayesnn.inference.programs import all_finite, chunk_program, kept_shapes
from bayesnn.inference.progress import Progress
from bayesnn.inference.sharding import shard_chains, to_host

__all__ = [
    "Checkpoint", "EmptyInfo", "NonFiniteError", "RunResult", "SamplingAlgorithm", "Samples",
    "all_finite", "latest_epoch", "run_chunks", "sample_chains", "scan_minibatches",
    "thinned_steps",
]

CHUNKS_PER_RUN = 20  # chunks of a sampling run: its progress updates and finiteness checks
DRAW_BUFFER_BYTES = 64 * 2**20  # device memory for the draws kept within one chunk
STEPS_PER_EPOCH_CHUNK = 256  # MAP and VI group whole epochs into chunks of about this many steps


class NonFiniteError(FloatingPointError):
    """The sampler or optimiser state became NaN or infinite.

    ``step`` is the first step whose state was not finite (the chunk's first step when the
    chunk cannot say which), or None when the error does not come from a step.
    """

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


class RunResult(NamedTuple):
    """What :func:`run_chunks` returns."""

    state: Any
    outputs: list
    num_chunks_done: int
    interrupted: bool
    seconds: float


class SamplingAlgorithm(NamedTuple):
    """A sampler as a pair of pure functions (BlackJAX's ``SamplingAlgorithm``).

    ``init(position, ...) -> State`` and ``step(rng_key, state, ...) -> (State, Info)``,
    both NamedTuples; per-step values (step size, temperature, data) are arguments of
    ``step``, so that a schedule runs inside ``lax.scan`` without recompiling.
    """

    init: Callable
    step: Callable


class EmptyInfo(NamedTuple):
    """The ``Info`` of a step that records nothing (SGLD: nothing is accepted or rejected)."""


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
    cache_key: Hashable | None = None,
    metrics: Callable[[int, Any], Mapping] | None = None,
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
        False: silent. True or None: ``desc: compiling…`` while the program compiles, the
        steps and ``metrics``, and a summary line at the end; a live line on a terminal,
        plain lines (one per tenth of the run) elsewhere.
    checkpoint
        Write the state, the outputs so far and the chunk counter to ``checkpoint.path``
        every ``checkpoint.every`` chunks; if the file exists, resume from it. Chunk ``i``
        always uses ``fold_in(key, i)``, so a resumed run gives the same result as one that
        was never interrupted.
    hint
        Advice appended to the non-finite error.
    cache_key
        What ``chunk_fn`` closes over, by value
        (:func:`~bayesnn.inference.programs.program_key`): a later run with an
        equal key, the same ``chunk_fn`` code, chunk length, state and argument shapes and
        dtypes, and device layout reuses this run's compiled program. None: compile for
        this run only. A key must change whenever a value the chunk closes over changes.
    metrics
        ``metrics(chunk_index, out) -> {name: value}`` of a chunk's kept outputs (on the
        host), shown with the progress (``loss``, ``val_loss``).

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
    jitted = chunk_program(_keep_placement(chunk_fn, shardings), cache_key, chunk_fn,
                           steps_per_chunk, state, args, shardings)
    outputs, start = [], 0
    if checkpoint is not None:
        if Path(checkpoint.path).exists():
            state, outputs, start = _restore(checkpoint, state, key, num_chunks, desc=desc,
                                             progress=progress)
        _check_same_start(checkpoint.path, start)
        state = state if shardings is None else jax.device_put(state, shardings)
    done = start
    interrupted = False
    report = Progress(desc, num_chunks * steps_per_chunk, initial=start * steps_per_chunk,
                      enabled=progress)
    with report:
        try:
            for i in range(start, num_chunks):
                new_state, out, finite = jitted(state, key, np.int32(i), *args)
                if not finite:
                    if locate is not None:
                        out = jax.jit(locate)(state, jax.random.fold_in(key, i), np.int32(i),
                                              *args)[1]
                    step = _first_bad_step(out, i, steps_per_chunk)
                    where = (
                        f"at step {step}" if step is not None
                        else f"during steps {i * steps_per_chunk}-{(i + 1) * steps_per_chunk - 1}"
                    )
                    raise NonFiniteError(f"{desc or 'run'}: the state became NaN or infinite "
                                         f"{where}; {hint}",
                                         i * steps_per_chunk if step is None else step)
                state = new_state
                outputs.append(to_host(out if select is None else select(i, out)))
                done = i + 1
                report.update(steps_per_chunk,
                              None if metrics is None else metrics(i, outputs[-1]))
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
        report.finish(interrupted=interrupted)
    return RunResult(state, outputs, done, interrupted, report.seconds)


def latest_epoch(chunk_index: int, rows: dict) -> dict:
    """Progress metrics of epoch-based training, from a chunk's history ``rows`` (name →
    ``(epochs, members)``, with a boolean ``"ran"``): the epoch count and every value of
    the chunk's last epoch run (``loss``, ``val_loss``, ...), averaged over members."""
    ran = np.asarray(rows["ran"]).any(axis=1)
    if not ran.any():
        return {}
    last = int(np.flatnonzero(ran)[-1])
    return {"epoch": chunk_index * len(ran) + last + 1} | {
        k: float(np.mean(v[last])) for k, v in rows.items() if k != "ran"}


def thinned_steps(num_warmup: int, num_samples: int, thinning: int) -> np.ndarray:
    """The keep-mask of warm-up then thinning: ``num_warmup`` steps, then every
    ``thinning``-th step, ``num_samples`` draws; the mask ends at the last draw."""
    t = np.arange(num_warmup + num_samples * thinning)
    return (t >= num_warmup) & ((t - num_warmup + 1) % thinning == 0)


class Samples(NamedTuple):
    """What :func:`sample_chains` returns.

    ``draws`` and ``infos`` have leading ``(chain, draw)`` axes; ``kept_steps`` are the
    steps (counted from 0) whose states they are; ``num_steps`` the steps run.
    """

    draws: Any
    infos: Any
    state: Any
    kept_steps: np.ndarray
    num_steps: int
    steps_per_chunk: int
    seconds: float
    interrupted: bool


def sample_chains(
    step_fn: Callable,
    state,
    key: jax.Array,
    keep,
    *args,
    store: Callable = lambda state: state.position,
    desc: str,
    progress: bool | None = None,
    checkpoint: Checkpoint | None = None,
    hint: str = "try a smaller step size",
    cache_key: Hashable | None = None,
    metrics: Callable[[int, Any], Mapping] | None = None,
    kept_label: str | None = "draws",
) -> Samples:
    """Run every chain for ``len(keep)`` steps and keep the draws at the steps ``keep`` marks.

    Warm-up and thinning are the mask (a cyclical schedule gives another one). The steps
    run in :func:`run_chunks` chunks of about 1/20 of the run, fewer where a chunk's kept
    draws would pass 64 MiB; each chunk stores its kept draws in a small buffer (only kept
    steps advance its row), so memory holds draws, not steps. On CPU an unkept step skips
    the store; on other backends every step stores (a conditional costs more there than
    the copy) and the next kept draw overwrites the buffer's scratch row.

    Parameters
    ----------
    step_fn
        ``step_fn(rng_key, state, t, *args) -> (state, info)`` advances all chains by one
        step ``t``; pure and jittable.
    state
        All chains' states, with a leading chain axis; placed across devices by
        :func:`~bayesnn.inference.sharding.shard_chains`.
    key
        PRNG key: step ``t`` of chunk ``i`` uses ``split(fold_in(key, i), steps)[t - i·steps]``.
    keep
        Boolean mask over the steps of the run, True where the new state is a draw; its
        length is the number of steps.
    *args
        Passed to every step (data arrays: arguments, not constants baked into the jit).
    store
        ``store(state)``: what a kept step keeps of the chains (default their positions),
        with a leading chain axis. The step's ``info`` is kept alongside.
    desc, progress, checkpoint, hint
        As for :func:`run_chunks`; ``desc`` names the method in messages.
    cache_key
        As for :func:`run_chunks`, for what ``step_fn`` and ``store`` close over; the
        shapes of a step's info are kept with the program, so a run that reuses it traces
        nothing.
    metrics
        ``metrics(t, infos) -> {name: value}`` after the chunk that ends at step ``t``,
        from the infos of its kept steps (on the host, leading ``(draw, chain)`` axes):
        shown with the progress after the draws kept so far (``step_size``, a running
        log-likelihood).
    kept_label
        The progress line's name for the kept steps (``draws 40/200``); None shows no
        count (a warm-up run that keeps only infos for its metrics).

    Returns
    -------
    Samples

    Raises
    ------
    NonFiniteError
        When a state turns NaN or infinite, naming the step.
    RuntimeError
        When the run is interrupted before its first kept draw.
    """
    keep = np.asarray(keep, bool)
    state = shard_chains(state)
    if cache_key is not None:
        cache_key = (cache_key, getattr(step_fn, "__code__", step_fn),
                     getattr(store, "__code__", store))
    # jitted, so that the shape probe's trace is the one the chunk reuses (traced once)
    step_fn = jax.jit(step_fn)
    kept_like = kept_shapes(step_fn, store, state, key, args, cache_key)
    steps = _steps_per_chunk(keep, sum(a.size * a.dtype.itemsize
                                       for a in jax.tree.leaves(kept_like)))
    num_chunks = -(-len(keep) // steps)
    # The last chunk may run a few steps past the last draw; they change nothing kept.
    keep = np.pad(keep, (0, num_chunks * steps - len(keep)))
    kept_per_chunk = keep.reshape(num_chunks, steps).sum(1)
    # A scratch row that unkept steps may write to; never ``steps`` rows, so that the
    # buffer is not taken for per-step outputs when a failed chunk is searched.
    slots = int(kept_per_chunk.max()) + 1
    slots += slots == steps

    def chunk(state, key, i, keep, *args, trace=False):
        def body(carry, inp):
            state, buffer, row = carry
            t, k = inp
            state, info = step_fn(k, state, t, *args)
            buffer = _store_if(keep[t], buffer, (store(state), info), row)
            bad = jnp.where(all_finite(state), 0.0, jnp.nan) if trace else None
            return (state, buffer, row + keep[t]), bad

        buffer = jax.tree.map(lambda a: jnp.zeros((slots, *a.shape), a.dtype), kept_like)
        ts = i * steps + jnp.arange(steps)
        (state, buffer, _), bad = jax.lax.scan(
            body, (state, buffer, jnp.int32(0)), (ts, jax.random.split(key, steps)))
        return state, (bad if trace else buffer)

    total = int(kept_per_chunk.sum())

    def shown(i, out):
        kept = {} if kept_label is None else {
            kept_label: f"{int(kept_per_chunk[: i + 1].sum())}/{total}"}
        return kept if metrics is None else kept | dict(metrics((i + 1) * steps - 1, out[1]))

    res = run_chunks(
        chunk, state, key, num_chunks, jnp.asarray(keep), *args, steps_per_chunk=steps,
        desc=desc, progress=progress, checkpoint=checkpoint, hint=hint,
        select=lambda i, out: _first_rows(out, kept_per_chunk[i]),
        locate=partial(chunk, trace=True), metrics=shown,
        cache_key=None if cache_key is None else (cache_key, slots),
    )
    if not any(kept_per_chunk[: res.num_chunks_done]):
        raise RuntimeError(f"{desc} was interrupted before its first draw")
    draws, infos = jax.tree.map(lambda *c: np.swapaxes(np.concatenate(c), 0, 1), *res.outputs)
    kept_steps = np.flatnonzero(keep)[: int(kept_per_chunk[: res.num_chunks_done].sum())]
    return Samples(draws, infos, res.state, kept_steps, res.num_chunks_done * steps, steps,
                   res.seconds, res.interrupted)


def _steps_per_chunk(keep: np.ndarray, draw_bytes: int) -> int:
    """About 1/20 of the run, with a chunk's kept draws under :data:`DRAW_BUFFER_BYTES`.

    Kept steps at least ``gap`` apart put at most ``max_draws`` draws in ``max_draws · gap``
    steps. Chunks are balanced, so the last one overshoots the run by fewer steps than
    there are chunks.
    """
    num_steps = len(keep)
    gap = int(np.min(np.diff(np.flatnonzero(keep)), initial=num_steps))
    max_draws = max(1, DRAW_BUFFER_BYTES // max(draw_bytes, 1) - 2)
    longest = max(1, min(math.ceil(num_steps / CHUNKS_PER_RUN), max_draws * gap))
    return math.ceil(num_steps / math.ceil(num_steps / longest))


def _skip_unkept() -> bool:
    """Whether :func:`_store_if` skips the store at unkept steps: on CPU only. On a GPU a
    conditional costs more than the copy (38 µs a step on an H200, against 115 µs for the
    whole SGLD step: ``benchmarks/results/gpu/driver_overhead.md``)."""
    return jax.default_backend() == "cpu"


def _store_if(keep, buffer, values, row):
    """``buffer`` (a pytree with a leading row axis) with ``values`` at ``row`` where
    ``keep``; where unkept steps are not skipped (:func:`_skip_unkept`), at every step."""
    def store(buffer, values, row):
        return jax.tree.map(lambda b, v: jax.lax.dynamic_update_index_in_dim(b, v, row, 0),
                            buffer, values)

    if _skip_unkept():
        return jax.lax.cond(keep, store, lambda b, *_: b, buffer, values, row)
    return store(buffer, values, row)


def _first_rows(tree, k: int):
    """The first ``k`` rows of every array of ``tree``, the filled part of a draw buffer,
    taken on the device (``k = 0`` touches no device)."""
    if k == 0:
        return jax.tree.map(lambda a: np.empty((0, *a.shape[1:]), a.dtype), tree)
    return jax.tree.map(lambda a: a[:k], tree)


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


def _to_host(tree):
    """Device pytree → host pytree: numpy arrays, gathered from other processes' devices;
    typed PRNG keys stay typed (on one device), so a file records their implementation."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = [_is_key(x) for x in leaves]
    data = to_host([jax.random.key_data(x) if k else x for x, k in zip(leaves, keys, strict=True)])
    return jax.tree.unflatten(treedef, [
        jax.random.wrap_key_data(d, impl=jax.random.key_impl(x)) if k else d
        for d, x, k in zip(data, leaves, keys, strict=True)])


def _from_host(pairs, arrays, like):
    """Inverse of :func:`_to_host` after a file: the leaves saved by path, in the structure
    and key types of ``like`` (``ValueError`` naming a leaf that does not fit)."""
    return serialization.decode_leaves(pairs, arrays, like)


def _save(checkpoint: Checkpoint, state, outputs, done: int, key, num_chunks: int) -> None:
    """Write the run to ``checkpoint.path``: every process gathers the state, process 0
    writes (:func:`bayesnn.serialization.write`)."""
    arrays: dict = {}
    content = {
        "fingerprint": checkpoint.fingerprint, "num_chunks": num_chunks, "done": done,
        "key": serialization.encode(_to_host(key), arrays, "key"),
        "state": serialization.encode_leaves(_to_host(state), arrays, "state"),
        "outputs": serialization.encode(outputs, arrays, "outputs"),
    }
    serialization.write(checkpoint.path, _CHECKPOINT_FORMAT, content, arrays)


def _check_same_start(path, start: int) -> None:
    """In a run of several processes, ``ValueError`` on every process unless all resume
    from the same chunk: only process 0 writes the checkpoint, and all read it."""
    if jax.process_count() == 1:
        return
    starts = multihost_utils.process_allgather(np.int32(start))
    if np.ptp(starts):
        raise ValueError(
            f"checkpoint {path}: the processes find different progress in it ({starts.tolist()} "
            "chunks done); only process 0 writes the checkpoint, so put it on storage that "
            "every process reads")


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

"""Compiled chunk programs, kept for later runs.

A fit's chunk program (:func:`~bayesnn.inference.driver.run_chunks`) depends on the
method's configuration, the model's graph and the constants it closes over, the shapes of
the state and data, the chunk length and the device layout; never on the key, the data's
or the weights' values, which are its arguments. A run that names what its chunk closes
over (:func:`program_key`) reuses the program of an earlier run that had the same, so a
second fit of the same architecture and method traces and compiles nothing. JAX's own
persistent compilation cache (``jax.config.update("jax_compilation_cache_dir", ...)``)
does the same across processes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

import jax
import jax.numpy as jnp
import numpy as np

from bayesnn import serialization
from bayesnn.bnn import BNN
from bayesnn.inference.progress import note_compiling

__all__ = [
    "CACHED_PROGRAMS", "StaticModel", "all_finite", "chunk_program", "clear_programs",
    "kept_shapes", "program_key", "run_program", "strong_types",
]

CACHED_PROGRAMS = 32  # programs (and step shapes) kept for later runs; least recently used go
_PROGRAMS: OrderedDict = OrderedDict()


def all_finite(tree) -> jax.Array:
    """True when every floating-point leaf of ``tree`` is finite."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else True


def program_key(*parts) -> Hashable | None:
    """A ``cache_key`` for :func:`run_chunks` from what a chunk closes over.

    ``parts`` are method configurations, :class:`~bayesnn.BNN` models and other values
    (a mesh, a flag). A model counts by its network graph, prior, likelihood (as
    :meth:`~bayesnn.likelihoods.Likelihood.traced` sees it: not by the initial value of a
    learned noise scale) and digests of the constants a program bakes in (frozen weights,
    batch statistics, other non-parameter state), not by its trainable weights, which are
    the state; everything
    else by :func:`bayesnn.serialization.fingerprint` (dataclass fields, optax
    transformations and functions by code and closure values, arrays by digest).

    Returns None (no reuse) when a part is known only by its ``repr``, such as an
    instance of a class that is not a dataclass: its values cannot be compared.
    """
    graphs, named = [], {}
    for i, part in enumerate(parts):
        if isinstance(part, BNN):
            graphs.append((i, part.graphdef))
            part = {"prior": part.prior, "likelihood": part.likelihood.traced(),
                    "frozen": part._frozen, "rest": part._rest, "stats": part.stats,
                    "mask": part.bayesian_mask, "patterns": part.frozen,
                    "calls": (part._takes_key, part._rng_tags)}
        named[f"part{i}"] = part
    text = serialization.fingerprint(**named)
    if '"type":"opaque"' in text:
        return None
    return text, tuple(graphs)


class StaticModel:
    """A :class:`~bayesnn.BNN` as a static argument of ``jax.jit``, equal to another where
    their :func:`program_key` is: a program traced for one model serves every model that
    bakes in the same constants, so a refit on a new but equal model compiles nothing.
    A model whose key is None equals only itself."""

    __slots__ = ("model", "_key")

    def __init__(self, model: BNN):
        self.model = model
        self._key = program_key(model) or ("object", model)  # holds it: no reused id

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other) -> bool:
        return isinstance(other, StaticModel) and self._key == other._key


def clear_programs() -> None:
    """Forget the compiled chunk programs kept for later runs."""
    _PROGRAMS.clear()


def chunk_program(chunk: Callable, cache_key: Hashable | None, code, steps_per_chunk: int,
                  state, args, shardings) -> Callable:
    """The jitted chunk ``(state, key, i, *args) -> (state, out, all_finite(state))`` of
    ``chunk(state, fold_in(key, i), i, *args)``: the kept one of an earlier run when
    ``cache_key``, ``code`` (the method's chunk function), the chunk length, the shapes and
    dtypes of ``state`` and ``args`` and the state's ``shardings`` match, else a new one
    (kept when ``cache_key`` is given)."""
    if cache_key is not None:
        cache_key = ("chunk", cache_key, getattr(code, "__code__", code), steps_per_chunk,
                     _signature((state, args)),
                     None if shardings is None else _signature(shardings))
        if cache_key in _PROGRAMS:
            _PROGRAMS.move_to_end(cache_key)
            return _PROGRAMS[cache_key]

    @jax.jit
    def jitted(state, key, i, *args):
        note_compiling()  # runs while tracing only
        state, out = chunk(state, jax.random.fold_in(key, i), i, *args)
        return state, out, all_finite(state)

    def program(state, *args):
        # The first chunk's state may hold weakly typed leaves (a parameter made from a
        # Python float) that the chunk returns strongly typed: one program for all chunks.
        return jitted(strong_types(state), *args)

    if cache_key is not None:
        _keep(cache_key, program)
    return program


def run_program(fn: Callable, cache_key: Hashable | None, *args):
    """``jax.jit(fn)(*args)``, by a program kept for later runs: the kept one of an earlier
    run when ``cache_key`` (:func:`program_key` of what ``fn`` closes over), ``fn``'s code
    and the shapes and dtypes of ``args`` match. Weakly typed arguments are made strongly
    typed first (:func:`strong_types`), so that a Python float does not make a program of
    its own.

    For a method's programs outside :func:`chunk_program` (a tuning stage, a check after
    the run), so that a second fit of the same model and method traces and compiles
    nothing."""
    args = strong_types(args)
    if cache_key is not None:
        cache_key = ("program", cache_key, getattr(fn, "__code__", fn), _signature(args))
        if cache_key in _PROGRAMS:
            _PROGRAMS.move_to_end(cache_key)
            return _PROGRAMS[cache_key](*args)

    @jax.jit
    def jitted(*args):
        note_compiling()  # runs while tracing only
        return fn(*args)

    if cache_key is not None:
        _keep(cache_key, jitted)
    return jitted(*args)


def strong_types(tree):
    """``tree`` with its weakly typed arrays made strongly typed (same dtype and values),
    so that they match what a program returns for them."""
    return jax.tree.map(
        lambda x: jnp.asarray(x, x.dtype) if getattr(x, "weak_type", False) else x, tree)


def _signature(tree) -> tuple:
    """``tree``'s structure and its leaves' abstract values (shape, dtype, weak type), or
    the leaves themselves where they are not arrays (shardings)."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple(
        jax.typeof(x) if isinstance(x, jax.Array | np.ndarray | np.generic | float | int | bool)
        else x for x in leaves)


def kept_shapes(step_fn, store, state, key, args, cache_key):
    """The shapes of what a kept step stores, ``(store(state), info)``; kept with the
    programs under ``cache_key`` (a run that reuses its program traces no step)."""
    if cache_key is not None:
        cache_key = ("kept", cache_key, _signature((key, state, args)))
        if cache_key in _PROGRAMS:
            _PROGRAMS.move_to_end(cache_key)
            return _PROGRAMS[cache_key]
    info_like = jax.eval_shape(step_fn, key, state, np.int32(0), *args)[1]
    kept_like = (jax.eval_shape(store, state), info_like)
    if cache_key is not None:
        _keep(cache_key, kept_like)
    return kept_like


def _keep(key, value) -> None:
    _PROGRAMS[key] = value
    while len(_PROGRAMS) > CACHED_PROGRAMS:
        _PROGRAMS.popitem(last=False)

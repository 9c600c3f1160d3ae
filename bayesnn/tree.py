"""Parameter pytrees addressed by '/'-joined paths (``"net/layers/0/kernel"``)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

__all__ = ["flatten_paths", "unflatten_paths", "tree_size", "save_tree", "load_tree"]


def path_str(keypath) -> str:
    """Join a JAX key path into ``"a/b/0/c"``."""
    parts = []
    for k in keypath:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def flatten_paths(tree) -> dict[str, Any]:
    """Map each leaf's path string to the leaf, in the tree's leaf order."""
    return {path_str(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflatten_paths(named: dict[str, Any], like):
    """Inverse of :func:`flatten_paths`: put ``named[path]`` at each path of ``like``."""
    paths = list(flatten_paths(like))
    missing = [p for p in paths if p not in named]
    if missing:
        raise KeyError(f"no value for parameter path(s) {missing[:5]}")
    treedef = jax.tree.structure(like)
    return jax.tree.unflatten(treedef, [named[p] for p in paths])


def tree_size(tree) -> int:
    """Total number of scalars in a pytree."""
    return sum(int(x.size) for x in jax.tree.leaves(tree))


def save_tree(path, tree) -> None:
    """Write a pytree of arrays to an ``.npz`` file keyed by leaf path (no pickle)."""
    np.savez(path, allow_pickle=False,
             **{k: np.asarray(v) for k, v in flatten_paths(tree).items()})


def load_tree(path, like):
    """Read a pytree written by :func:`save_tree` into the structure of ``like``; a file
    holding pickled objects is refused (``ValueError``) without unpickling them."""
    with np.load(path, allow_pickle=False) as f:
        return unflatten_paths({k: jax.numpy.asarray(f[k]) for k in f.files}, like)


def split_tree(tree: dict, select, prefix: str = "") -> tuple[dict, dict]:
    """Split a nested dict into (leaves whose path ``select`` rejects, leaves it accepts).

    Keys (ints included) and nesting are kept; branches left empty are dropped.
    """
    rest, chosen = {}, {}
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            a, b = split_tree(v, select, path + "/")
            if a:
                rest[k] = a
            if b:
                chosen[k] = b
        elif select(path):
            chosen[k] = v
        else:
            rest[k] = v
    return rest, chosen


def merge_trees(a: dict, b: dict) -> dict:
    """Union of two nested dicts with disjoint leaves (inverse of :func:`split_tree`)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = merge_trees(out[k], v) if k in out else v
    return out

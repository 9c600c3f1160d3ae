"""Files of arrays and plain data that can fail to load but never run code.

Saved posteriors and checkpoints are zip archives (``numpy.load`` reads their arrays) of

- ``header.json``: the format version, the library versions and the content as JSON;
- ``arrays/<path>.npy``: one array per file, named by its place in the content
  (``arrays/draws/net/layers/0/kernel.npy``), written and read with ``allow_pickle=False``.

:func:`encode` turns a Python value into a JSON node and puts its arrays aside;
:func:`decode` is its inverse. Containers, numbers, strings, arrays and typed PRNG keys (raw
key data plus the implementation's name) come back as they were; instances of bayesnn's
dataclasses (method configurations, priors, likelihoods, layer specs) are rebuilt from their
fields, and NamedTuples of bayesnn, optax, NumPyro, BlackJAX, JAX or Flax from their items,
with the class looked up by name among modules already imported (nothing is imported,
nothing from the file is called). What cannot be rebuilt -- a function, an optax
transformation, an object of another library -- is recorded by qualified name and, for a
function, its closure's values (an optax transformation's hyperparameters), and comes
back as an :class:`Unbuilt` description. The same encoding, with arrays by digest, makes
:func:`fingerprint`, which identifies a run in any process: no memory address enters it.

In a run of several processes (after ``jax.distributed.initialize()``), all of which hold
the same content, only process 0 writes (:func:`is_writer`), so that hosts sharing a
file system do not write one file at once.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import math
import os
import re
import sys
import types
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from bayesnn.tree import path_str

__all__ = ["Unbuilt", "decode", "decode_leaves", "describe", "encode", "encode_leaves",
           "fingerprint", "fingerprint_difference", "is_writer", "read", "write"]

Node = Any  # a JSON value
_HEADER = "header.json"
_MAX_HEADER_BYTES = 1 << 28
_MAX_DEPTH = 64
# Packages whose NamedTuples (optimiser, sampler and NNX states) a file may rebuild.
_NAMEDTUPLE_PACKAGES = {"bayesnn", "optax", "numpyro", "blackjax", "jax", "flax"}
# Namespaces searched for a class's public name (stabler than the module defining it).
_PUBLIC = ("bayesnn", "bayesnn.priors", "bayesnn.likelihoods", "bayesnn.models",
           "bayesnn.data", "bayesnn.inference")
_REFUSAL = {
    "posterior": (
        "it is a pickle (bayesnn 0.1 saved posteriors so), and bayesnn no longer unpickles "
        "files, since unpickling can run any code; it was not read. To convert a file you "
        "trust: with bayesnn 0.1, post = Posterior.load(path) and "
        "bayesnn.tree.save_tree('draws.npz', post.draws); with this version, rebuild the "
        "model and save Posterior(model, bayesnn.tree.load_tree('draws.npz', "
        "model.init_position), method)"
    ),
    "checkpoint": (
        "it is a pickle (a checkpoint of bayesnn 0.1), and bayesnn no longer unpickles "
        "files, since unpickling can run any code; it was not read. Delete it to start the "
        "run afresh, or finish the run with the version that wrote it"
    ),
}


class Unbuilt(str):
    """The description of a value that a file records but cannot rebuild: a function or an
    optax transformation (by qualified name and closure values), or an object whose class
    is not one of bayesnn's. A ``str``."""


class _NotBuildable(Exception):
    pass


# -- files -----------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries whose objects a file holds."""
    found = {"python": ".".join(map(str, sys.version_info[:3]))}
    for name in ("bayesnn", "jax", "jaxlib", "flax", "numpy", "optax", "numpyro"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = getattr(sys.modules.get(name), "__version__", "unknown")
    return found


def is_writer() -> bool:
    """Whether this process writes files: process 0 of a run of several processes
    (``jax.distributed``), the only process otherwise."""
    return jax.process_index() == 0


def write(path, kind: str, content: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write ``content`` (JSON nodes from :func:`encode`) and ``arrays`` to ``path``.

    The header gets ``format = kind`` and the library versions. The file is replaced
    atomically: a kill mid-write leaves the previous file intact. Does nothing on a
    process other than the writer (:func:`is_writer`).
    """
    if not is_writer():
        return
    header = json.dumps({"format": kind, "versions": versions(), **content}, allow_nan=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr(_HEADER, header)
        for key, value in arrays.items():
            with zf.open(f"arrays/{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, value, allow_pickle=False)
    os.replace(tmp, path)


def read(path, kind: str, what: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The header and arrays of a file written by :func:`write` in format ``kind``.

    Raises ``ValueError`` naming the file when it is not one (``what``: "posterior" or
    "checkpoint" says so in the message): for a pickle, without reading it.
    """
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(1)
    if magic == b"\x80":
        raise ValueError(f"{path} is not a bayesnn {what} file of this version: "
                         + _REFUSAL.get(what, _REFUSAL["posterior"]))
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a bayesnn {what} file (not a zip archive)")
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(_HEADER)
        except KeyError:
            raise ValueError(f"{path} is not a bayesnn {what} file (no {_HEADER})") from None
        if info.file_size > _MAX_HEADER_BYTES:
            raise ValueError(f"{path}: {_HEADER} is over {_MAX_HEADER_BYTES} bytes")
        try:
            header = json.loads(zf.read(info))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} is not a bayesnn {what} file ({_HEADER}: {e})") from None
        found = header.get("format") if isinstance(header, dict) else None
        if found != kind:
            raise ValueError(f"{path} is not a bayesnn {what} file in format {kind} "
                             f"(found format {found!r})")
        arrays = {}
        for name in zf.namelist():
            if name.startswith("arrays/") and name.endswith(".npy"):
                with zf.open(name) as f:
                    arrays[name[len("arrays/"):-len(".npy")]] = np.lib.format.read_array(
                        f, allow_pickle=False)
    return header, arrays


# -- encoding --------------------------------------------------------------------------


def encode(obj, arrays: dict[str, np.ndarray], path: str = "") -> Node:
    """A JSON node for ``obj``; its arrays go into ``arrays``, keyed by their path."""
    return _Encoder(arrays).node(obj, path, 0)


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _qualified(obj) -> str:
    module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(name, str):
        return f"{module}.{name}"
    return _qualified(type(obj))


def class_name(cls: type) -> str:
    """``cls``'s public name (``"bayesnn.priors.Normal"``) where it has one, else
    ``"module:qualname"``."""
    for space in _PUBLIC:
        module = sys.modules.get(space)
        if module is not None and vars(module).get(cls.__name__) is cls:
            return f"{space}.{cls.__name__}"
    return f"{cls.__module__}:{cls.__qualname__}"


def _const(c) -> str:
    """A constant of compiled code as text that is the same in every process."""
    if isinstance(c, types.CodeType):
        return _code_digest(c)
    if isinstance(c, frozenset):
        return "frozenset(" + ",".join(sorted(map(_const, c))) + ")"
    if isinstance(c, tuple):
        return "(" + ",".join(map(_const, c)) + ")"
    return repr(c)


def _code_digest(code: types.CodeType) -> str:
    h = hashlib.blake2b(digest_size=8)
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    h.update(",".join(map(_const, code.co_consts)).encode())
    return h.hexdigest()


def _opaque_repr(obj) -> str:
    try:
        text = repr(obj)
    except Exception:  # a broken __repr__ must not stop a save
        text = f"<{type(obj).__qualname__}>"
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", text)
    return text if len(text) <= 200 else text[:197] + "..."


class _Encoder:
    def __init__(self, arrays):
        self.arrays = arrays
        self.active: set[int] = set()  # ids being encoded: a cycle is described, not followed

    def put(self, path: str, value: np.ndarray) -> str:
        base = path.strip("/") or "array"
        key, n = base, 1
        while key in self.arrays:
            key, n = f"{base}#{n}", n + 1
        self.arrays[key] = value
        return key

    def array(self, x, path: str, kind: str) -> Node:
        value = np.asarray(jax.device_get(x))
        if value.dtype.hasobject:
            raise TypeError(f"cannot store an array of Python objects at {path!r}")
        node = {"type": "array", "dtype": str(value.dtype), "shape": list(value.shape),
                "kind": kind}
        if type(value.dtype).__module__ != "numpy.dtypes" or value.dtype.kind == "V":
            # bfloat16 and the other ml_dtypes: their bits, as unsigned ints of their size
            stored = np.dtype(f"u{value.dtype.itemsize}")
            node["stored_as"] = str(stored)
            value = np.ascontiguousarray(value).view(stored)
        node["key"] = self.put(path, value)
        return node

    def node(self, obj, path: str, depth: int) -> Node:
        if obj is None or isinstance(obj, (bool, str)):
            return str(obj) if isinstance(obj, str) and type(obj) is not str else obj
        if isinstance(obj, int) and type(obj) in (int, bool):
            return obj
        if type(obj) is float:
            return obj if math.isfinite(obj) else {"type": "float", "value": repr(obj)}
        if isinstance(obj, os.PathLike):
            return os.fspath(obj)
        if _is_key(obj):
            data = self.array(jax.random.key_data(obj), path, "numpy")
            return {"type": "key", "impl": str(jax.random.key_impl(obj)), "data": data}
        if isinstance(obj, jax.Array):
            return self.array(obj, path, "jax")
        if isinstance(obj, np.ndarray):
            return self.array(obj, path, "numpy")
        if isinstance(obj, np.generic):
            return self.array(obj, path, "scalar")
        if depth > _MAX_DEPTH or id(obj) in self.active:
            return {"type": "opaque", "class": _qualified(type(obj)),
                    "repr": "<recursion>" if id(obj) in self.active else "<too deep>"}
        self.active.add(id(obj))
        try:
            return self.compound(obj, path, depth + 1)
        finally:
            self.active.discard(id(obj))

    def compound(self, obj, path: str, depth: int) -> Node:
        def sub(value, name):
            return self.node(value, f"{path}/{name}", depth)

        if isinstance(obj, tuple) and hasattr(type(obj), "_fields"):
            return {"type": "namedtuple", "class": class_name(type(obj)),
                    "items": {f: sub(v, f) for f, v in zip(obj._fields, obj, strict=True)}}
        if isinstance(obj, tuple):
            return {"type": "tuple", "items": [sub(v, i) for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [sub(v, i) for i, v in enumerate(obj)]
        if isinstance(obj, dict):
            if all(type(k) is str for k in obj):
                return {"type": "dict", "items": {k: sub(v, k) for k, v in obj.items()}}
            return {"type": "dict", "pairs": [[sub(k, "key"), sub(v, k)] for k, v in obj.items()]}
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {"type": "object", "class": class_name(type(obj)), "fields": {
                f.name: sub(getattr(obj, f.name), f.name)
                for f in dataclasses.fields(obj) if f.init}}
        if isinstance(obj, functools.partial):
            return {"type": "partial", "func": sub(obj.func, "func"),
                    "args": [sub(a, i) for i, a in enumerate(obj.args)],
                    "keywords": {k: sub(v, k) for k, v in obj.keywords.items()}}
        if isinstance(obj, types.MethodType):
            return {"type": "method", "func": sub(obj.__func__, "func"),
                    "self": sub(obj.__self__, "self")}
        if isinstance(obj, type):
            return {"type": "class", "name": _qualified(obj)}
        if isinstance(obj, types.FunctionType):
            return self.function(obj, sub)
        if callable(obj):
            return {"type": "callable", "name": _qualified(obj)}
        return {"type": "opaque", "class": _qualified(type(obj)), "repr": _opaque_repr(obj)}

    def function(self, fn: types.FunctionType, sub) -> Node:
        """A function by qualified name and code digest, with its closure's and defaults'
        values: what makes an optax transformation or a schedule the one it is."""
        node = {"type": "function", "name": _qualified(fn), "code": _code_digest(fn.__code__)}
        closure = {}
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=True):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            closure[name] = sub(value, name)
        if closure:
            node["closure"] = closure
        if fn.__defaults__:
            node["defaults"] = [sub(v, f"default{i}") for i, v in enumerate(fn.__defaults__)]
        if fn.__kwdefaults__:
            node["kwdefaults"] = {k: sub(v, k) for k, v in fn.__kwdefaults__.items()}
        return node


def encode_leaves(tree, arrays: dict[str, np.ndarray], prefix: str) -> list:
    """``[[path, node], ...]`` of ``tree``'s leaves in order, for :func:`decode_leaves`."""
    return [[p, encode(leaf, arrays, f"{prefix}/{p}")]
            for p, leaf in ((path_str(kp), leaf)
                            for kp, leaf in jax.tree_util.tree_flatten_with_path(tree)[0])]


# -- decoding --------------------------------------------------------------------------


def decode(node: Node, arrays: dict[str, np.ndarray], *, strict: bool = True):
    """The value :func:`encode` made ``node`` from.

    With ``strict=False`` what cannot be rebuilt (a function, an optax transformation, an
    object of a class that is not bayesnn's, a bayesnn object with such a field) becomes
    an :class:`Unbuilt` description; with ``strict=True`` it raises ``ValueError``, as does
    a node that is not one :func:`encode` writes.
    """
    try:
        return _Decoder(arrays, strict).value(node)
    except _NotBuildable as e:
        raise ValueError(f"the file holds a value that cannot be rebuilt: {e}") from None


class _Decoder:
    def __init__(self, arrays, strict: bool):
        self.arrays, self.strict = arrays, strict

    def value(self, node):
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.value(v) for v in node]
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            raise ValueError(f"malformed node in a bayesnn file: {_short(node)}")
        kind = node["type"]
        if kind == "float" and node.get("value") in ("nan", "inf", "-inf"):
            return float(node["value"])
        if kind == "tuple":
            return tuple(self.value(v) for v in _field(node, "items", list))
        if kind == "dict":
            if "pairs" in node:
                return {_hashable(self.value(k)): self.value(v)
                        for k, v in _field(node, "pairs", list)}
            return {k: self.value(v) for k, v in _field(node, "items", dict).items()}
        if kind == "array":
            return self.array(node)
        if kind == "key":
            impl = _field(node, "impl", str)
            data = self.array(_field(node, "data", dict))
            try:
                return jax.random.wrap_key_data(data, impl=impl)
            except (TypeError, ValueError) as e:
                raise ValueError(f"malformed PRNG key in a bayesnn file: {e}") from None
        if kind in ("object", "namedtuple"):
            if self.strict:
                return self.instance(node)
            try:
                return _Decoder(self.arrays, True).instance(node)
            except _NotBuildable:
                return Unbuilt(describe(node))
        if kind in ("function", "partial", "method", "class", "callable", "opaque"):
            if self.strict:
                raise _NotBuildable(describe(node))
            return Unbuilt(describe(node))
        raise ValueError(f"unknown node type {kind!r} in a bayesnn file")

    def array(self, node):
        key = _field(node, "key", str)
        if key not in self.arrays:
            raise ValueError(f"a bayesnn file lacks its array {key!r}")
        value = self.arrays[key]
        shape = tuple(_field(node, "shape", list))
        stored = node.get("stored_as", node.get("dtype"))
        if value.shape != shape or str(value.dtype) != stored:
            raise ValueError(f"array {key!r} of a bayesnn file has shape {value.shape} and dtype "
                             f"{value.dtype}; its header says {shape} and {stored}")
        if "stored_as" in node:
            value = value.view(jax.numpy.dtype(_field(node, "dtype", str)))
        kind = node.get("kind")
        if kind == "jax":
            return jax.numpy.asarray(value)
        return value[()] if kind == "scalar" else value

    def instance(self, node):
        name = _field(node, "class", str)
        cls = _resolve(name, node["type"])
        if node["type"] == "namedtuple":
            items = _field(node, "items", dict)
            if list(items) != list(cls._fields):
                raise _NotBuildable(f"{name} has fields {cls._fields}, the file {list(items)}")
            # tuple.__new__: no constructor of the class runs
            return tuple.__new__(cls, [self.value(v) for v in items.values()])
        fields = {k: self.value(v) for k, v in _field(node, "fields", dict).items()}
        try:
            return cls(**fields)
        except (TypeError, ValueError) as e:
            raise _NotBuildable(f"{describe(node)}: {e}") from None


def _field(node: dict, name: str, kind: type):
    value = node.get(name)
    if not isinstance(value, kind):
        raise ValueError(f"malformed node in a bayesnn file: {name!r} of {_short(node)}")
    return value


def _hashable(key):
    try:
        hash(key)
    except TypeError:
        raise ValueError(f"unhashable dict key in a bayesnn file: {key!r}") from None
    return key


def _short(node) -> str:
    return json.dumps(node)[:120]


def _resolve(name: str, kind: str) -> type:
    """The class called ``name`` (a public name or ``module:qualname``), if a file may build
    it: a bayesnn dataclass, or a NamedTuple of one of ``_NAMEDTUPLE_PACKAGES``, in a module
    already imported."""
    module_name, _, qualname = name.partition(":") if ":" in name else name.rpartition(".")
    package = module_name.split(".")[0]
    allowed = {"bayesnn"} if kind == "object" else _NAMEDTUPLE_PACKAGES
    obj = sys.modules.get(module_name) if package in allowed else None
    for part in qualname.split(".") if obj is not None else ():
        obj = vars(obj).get(part) if hasattr(obj, "__dict__") else None
    if not isinstance(obj, type) or str(obj.__module__).split(".")[0] not in allowed:
        raise _NotBuildable(f"{name} is not a class this file may build")
    if kind == "object" and not dataclasses.is_dataclass(obj):
        raise _NotBuildable(f"{name} is not a bayesnn dataclass")
    if kind == "namedtuple" and not (issubclass(obj, tuple) and hasattr(obj, "_fields")):
        raise _NotBuildable(f"{name} is not a NamedTuple")
    return obj


def decode_leaves(pairs, arrays: dict[str, np.ndarray], like):
    """The tree of ``like``'s structure with the leaves of :func:`encode_leaves`' ``pairs``
    (Equinox's ``tree_deserialise_leaves``): each saved leaf must have the path, shape,
    dtype and key implementation of ``like``'s, else ``ValueError`` names the first that
    does not."""
    expected = jax.tree_util.tree_flatten_with_path(like)
    paths = [path_str(kp) for kp, _ in expected[0]]
    if not isinstance(pairs, list) or [p for p, *_ in pairs] != paths:
        saved = [p for p, *_ in pairs] if isinstance(pairs, list) else pairs
        raise ValueError(f"the saved leaves {_first(saved)} do not match the expected "
                         f"{_first(paths)}")
    leaves = []
    for (path, node), (_, ref) in zip(pairs, expected[0], strict=True):
        leaf = decode(node, arrays)
        if _is_key(ref) != _is_key(leaf) or (
                _is_key(ref) and str(jax.random.key_impl(ref)) != str(jax.random.key_impl(leaf))):
            raise ValueError(f"leaf {path!r}: saved {_kind(leaf)}, expected {_kind(ref)}")
        got, want = [(np.shape(a), jax.numpy.result_type(a)) for a in (leaf, ref)]
        if got != want:
            raise ValueError(f"leaf {path!r}: saved shape and dtype {got}, expected {want}")
        leaves.append(leaf if _is_key(leaf) else jax.numpy.asarray(leaf))
    return jax.tree.unflatten(expected[1], leaves)


def _first(paths) -> str:
    paths = list(paths)
    return str(paths[:5])[:-1] + (", ...]" if len(paths) > 5 else "]")


def _kind(leaf) -> str:
    return f"a {jax.random.key_impl(leaf)} key" if _is_key(leaf) else "an array"


# -- descriptions and fingerprints -----------------------------------------------------


def describe(node: Node) -> str:
    """A one-line text of a node: ``MAP(optimizer=chain.<locals>.init_fn(...), epochs=3)``."""
    if not isinstance(node, (list, dict)):
        return repr(node)
    if isinstance(node, list):
        return "[" + ", ".join(map(describe, node)) + "]"
    kind = node.get("type")
    if kind == "float":
        return str(node.get("value"))
    if kind == "tuple":
        items = node.get("items", [])
        return "(" + ", ".join(map(describe, items)) + ("," if len(items) == 1 else "") + ")"
    if kind == "dict":
        pairs = node.get("pairs") or [[k, v] for k, v in node.get("items", {}).items()]
        return "{" + ", ".join(f"{describe(k)}: {describe(v)}" for k, v in pairs) + "}"
    if kind == "array":
        return f"array(shape={tuple(node.get('shape', ()))}, dtype={node.get('dtype')})"
    if kind == "key":
        return f"key<{node.get('impl')}>"
    if kind in ("object", "namedtuple"):
        name = str(node.get("class", "?")).replace(":", ".").rsplit(".", 1)[-1]
        items = node.get("fields", node.get("items", {}))
        return f"{name}(" + ", ".join(f"{k}={describe(v)}" for k, v in items.items()) + ")"
    if kind == "function":
        values = {**node.get("closure", {}), **node.get("kwdefaults", {})}
        inner = ", ".join(f"{k}={describe(v)}" for k, v in values.items())
        return f"{node.get('name')}({inner})" if inner else str(node.get("name"))
    if kind == "partial":
        args = [describe(node.get("func"))] + [describe(a) for a in node.get("args", [])]
        args += [f"{k}={describe(v)}" for k, v in node.get("keywords", {}).items()]
        return "partial(" + ", ".join(args) + ")"
    if kind == "method":
        return f"{describe(node.get('self'))}.{describe(node.get('func'))}"
    if kind in ("class", "callable"):
        return str(node.get("name"))
    return str(node.get("repr", node))


def fingerprint(**parts) -> str:
    """A text that identifies ``parts`` (e.g. ``method=..., model=..., data=...``) in any
    process: for each part its :func:`encode` node and a digest of its arrays' values."""
    out = {}
    for name, value in parts.items():
        arrays: dict[str, np.ndarray] = {}
        node = encode(value, arrays, name)
        digest = hashlib.blake2b(digest_size=16)
        for key in sorted(arrays):
            a = np.ascontiguousarray(arrays[key])
            digest.update(f"{key}{a.dtype}{a.shape}".encode())
            digest.update(a.tobytes())
        out[name] = {"config": node, "digest": digest.hexdigest()}
    return json.dumps(out, sort_keys=True, separators=(",", ":"), allow_nan=False)


def fingerprint_difference(a: str, b: str) -> list[str]:
    """Names of the parts in which two :func:`fingerprint` texts differ (all of them, or
    ``["fingerprint"]``, when one is not such a text)."""
    if a == b:
        return []
    try:
        pa, pb = json.loads(a), json.loads(b)
    except (TypeError, json.JSONDecodeError):
        return ["fingerprint"]
    if not (isinstance(pa, dict) and isinstance(pb, dict)):
        return ["fingerprint"]
    return sorted(k for k in pa.keys() | pb.keys() if pa.get(k) != pb.get(k))

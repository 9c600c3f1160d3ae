"""Argument checks shared by every configuration: clear errors naming the argument.

:func:`config` makes a frozen dataclass a configuration class, whose construction checks
every field against its type annotation (``TypeError`` naming the class, the field, what it
accepts and what it got) before the class's own ``__post_init__`` checks ranges with
:func:`check_positive` and :func:`check_range`. Annotations understood: ``Any``, ``bool``,
``int`` (not bool), ``float`` (int accepted; finite), ``str``, ``Literal[...]``, unions
(``X | None``), ``Callable``, ``Sequence[X]``, ``Mapping[K, V]``, ``tuple[...]`` and classes
(nested configurations, ``optax.GradientTransformation``).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import math
import numbers
import sys
import types
import typing
from typing import Any, Literal, Union

import numpy as np
import optax

__all__ = [
    "config", "check_fields", "check_types", "check_type", "check_positive", "check_range",
    "check_chain_args",
    "Optimizer", "LearningRate",
]

# What the optimiser fields of MAP and the VI methods accept.
Optimizer = str | optax.GradientTransformation
LearningRate = float | collections.abc.Callable | None


def config(cls: type) -> type:
    """Class decorator over ``@dataclass(frozen=True)``: type-check every field.

    On construction (and :func:`dataclasses.replace`) every field is checked against its
    annotation by :func:`check_type`, then the class's own ``__post_init__`` runs (its
    range checks), if it or a base class has one. A subclass's fields are checked once, by
    its outermost configuration class. The dataclass decorator stays visible, for tools
    that read it (type checkers, the API docs)::

        @config
        @dataclass(frozen=True)
        class MAP: ...
    """
    if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):
        raise TypeError(f"config decorates a frozen dataclass; put @dataclass(frozen=True) "
                        f"under it on {cls.__name__}")
    if not hasattr(cls, "__post_init__"):  # its __init__ calls none: check after it
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            init(self, *args, **kwargs)
            check_fields(self)

        cls.__init__ = __init__
        return cls
    own = cls.__dict__.get("__post_init__")

    def __post_init__(self):
        if _outermost_config(type(self)) is cls:
            check_fields(self)
        if own is not None:
            own(self)
        else:
            super(cls, self).__post_init__()

    __post_init__.config_class = cls
    cls.__post_init__ = __post_init__
    return cls


def _outermost_config(cls: type) -> type | None:
    """The first class in ``cls``'s MRO made by :func:`config`."""
    for klass in cls.__mro__:
        owner = getattr(klass.__dict__.get("__post_init__"), "config_class", None)
        if owner is not None:
            return owner
    return None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_fields(obj) -> None:
    """Check every field of the dataclass ``obj`` against its annotation (:func:`check_type`)."""
    hints = _hints(type(obj))
    owner = type(obj).__name__
    for f in dataclasses.fields(obj):
        check_type(f.name, getattr(obj, f.name), hints[f.name], owner)


def check_types(obj, **hints) -> None:
    """Check fields of ``obj`` against the given annotations instead of their own, for a
    field annotated ``Any``: ``check_types(self, learning_rate=LearningRate)``."""
    for name, hint in hints.items():
        check_type(name, getattr(obj, name), hint, type(obj).__name__)


def check_type(name: str, value, hint, owner: str = "") -> None:
    """Raise unless ``value`` fits the annotation ``hint``.

    ``TypeError`` for a wrong type, ``ValueError`` for a NaN or infinite float; the message
    names ``owner`` (the class), the argument ``name`` and what it accepts, e.g.
    ``MAP: epochs must be an int, got '3' (str)``.
    """
    if _accepts(value, hint, finite=True):
        return
    prefix = f"{owner}: " if owner else ""
    if _accepts(value, hint, finite=False):
        raise ValueError(f"{prefix}{name} must be finite, got {value!r}")
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise TypeError(
        f"{prefix}{name} must be {_describe(hint)}, got {shown} ({type(value).__name__})"
    )


def _is_real(value) -> bool:
    """A real number that is not a bool: Python and NumPy scalars, 0-d arrays."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, numbers.Real):
        return True
    dtype = getattr(value, "dtype", None)
    return (getattr(value, "shape", None) == () and dtype is not None
            and np.issubdtype(dtype, np.number) and not np.issubdtype(dtype, np.complexfloating))


def _accepts(value, hint, finite: bool) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(_accepts(value, a, finite) for a in args)
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if hint is bool:
        return isinstance(value, (bool, np.bool_))
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if hint is float:
        return _is_real(value) and (not finite or math.isfinite(float(value)))
    if hint is collections.abc.Callable or origin is collections.abc.Callable:
        return callable(value)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_accepts(v, args[0], finite) for v in value)
        return len(value) == len(args) and all(map(_accepts, value, args, [finite] * len(args)))
    if origin is collections.abc.Sequence:
        return (isinstance(value, collections.abc.Sequence) and not isinstance(value, str)
                and all(_accepts(v, args[0], finite) for v in value))
    if origin is collections.abc.Mapping:
        return isinstance(value, collections.abc.Mapping) and all(
            _accepts(k, args[0], finite) and _accepts(v, args[1], finite)
            for k, v in value.items()
        )
    if isinstance(hint, type):
        return isinstance(value, hint)
    raise TypeError(f"check_type does not understand the annotation {hint!r}")


def _short(hint) -> str:
    """A type's bare name, as inside ``a tuple of (str, Prior)``."""
    if typing.get_origin(hint) is tuple:
        return "(" + ", ".join(map(_short, typing.get_args(hint))) + ")"
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("collections.abc.", "")


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is None or hint is type(None):
        return "None"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if hint is collections.abc.Callable or origin is collections.abc.Callable:
        return "a callable"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a tuple of {_short(args[0])}"
        return f"a tuple {_short(hint)}"
    if origin is collections.abc.Sequence:
        return f"a sequence of {_short(args[0])}"
    if origin is collections.abc.Mapping:
        return f"a mapping of {_short(args[0])} to {_short(args[1])}"
    name = hint.__name__ if hint.__module__ == "builtins" else _public_name(hint)
    return ("an " if name[0].lower() in "aeiou" else "a ") + name


def _public_name(cls: type) -> str:
    """The shortest dotted path a user reaches ``cls`` by: ``bayesnn.MAP``,
    ``bayesnn.data.Augment``, ``optax.GradientTransformation``."""
    parts = cls.__module__.split(".")
    for i in range(1, len(parts) + 1):
        module = ".".join(parts[:i])
        if getattr(sys.modules.get(module), cls.__name__, None) is cls:
            return f"{module}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__name__}"


def check_positive(**values) -> None:
    """Raise ``ValueError`` naming any argument that is not > 0 (None is allowed)."""
    for name, v in values.items():
        if v is not None and not v > 0:
            raise ValueError(f"{name} must be > 0, got {v!r}")


def check_range(name: str, value, low: float = -math.inf, high: float = math.inf, *,
                closed: Literal["neither", "left", "right", "both"] = "neither") -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` lies between ``low`` and ``high``.

    ``closed`` says which ends belong to the range. The message reads ``must be >= 0``
    for a range open above, ``must be in (0, 1]`` otherwise.
    """
    left, right = closed in ("left", "both"), closed in ("right", "both")
    above = value >= low if left else value > low
    below = value <= high if right else value < high
    if above and below:
        return
    if high == math.inf:
        wanted = f"{'>=' if left else '>'} {low}"
    else:
        wanted = f"in {'[' if left else '('}{low}, {high}{']' if right else ')'}"
    raise ValueError(f"{name} must be {wanted}, got {value!r}")


def check_chain_args(*, num_samples, num_warmup, num_chains, thinning) -> None:
    """Draws, chains and thinning are ints >= 1 and warm-up an int >= 0.

    A non-int raises ``TypeError``, an int out of range ``ValueError``.
    """
    values = {"num_samples": num_samples, "num_chains": num_chains, "thinning": thinning,
              "num_warmup": num_warmup}
    for name, v in values.items():
        least = 0 if name == "num_warmup" else 1
        check_type(name, v, int)
        if v < least:
            raise ValueError(f"{name} must be an int >= {least}, got {v!r}")

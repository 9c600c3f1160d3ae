"""Malformed input, many kinds at once: each gives a ValueError/TypeError raised by bayesnn's
own checks, before anything reaches JAX."""

import dataclasses
import importlib
import inspect
import pkgutil
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import optax
import pytest
from flax import nnx

import bayesnn as bnn

RNG = np.random.default_rng(0)
X = RNG.normal(size=(30, 4)).astype(np.float32)
LABELS = np.arange(30) % 3


def _classifier():
    return bnn.BNN(bnn.models.MLP(4, (5,), 3, rngs=nnx.Rngs(0)),
                   likelihood=bnn.likelihoods.Categorical())


def _bad_data():
    """``(x, y, what the message must say)``, wrong in one way each, from a seeded generator."""
    cases = []
    for _ in range(8):
        i, j = RNG.integers(0, 30), RNG.integers(0, 4)
        x = X.copy()
        x[i, j] = RNG.choice([np.nan, np.inf, -np.inf])
        cases.append((x, LABELS, f"NaN or inf \\(first at row {i}\\)"))
    for d in (1, 3, 5, 16):
        cases.append((RNG.normal(size=(30, d)).astype(np.float32), LABELS,
                      rf"shape \({d},\), but the network expects \(4,\)"))
    for bad in (-1, 3, 7, 100):
        y = LABELS.copy()
        y[RNG.integers(0, 30)] = bad
        cases.append((X, y, rf"labels must lie in \[0, 3\); found min {min(bad, 0)}, "
                            rf"max {max(bad, 2)}"))
    cases += [
        (X, LABELS + 0.5, "whole numbers"), (X, LABELS.astype(str), "y must be numeric"),
        (X.astype(object), LABELS, "x must be numeric"), (X, np.eye(3)[LABELS], "one-hot"),
        (X, LABELS[:-1], "30 inputs and 29 targets"), (X[:0], LABELS[:0], "no examples"),
        (X[:, 0], LABELS, "num_examples, features"), (X.astype(str), LABELS, "x must be numeric"),
        ([[1, 2]], [0], r"shape \(2,\)"), (X, None, "y must be numeric"),
    ]
    return cases


def _raised_by_bayesnn(excinfo) -> bool:
    return any("bayesnn" in str(entry.path) for entry in excinfo.traceback[-3:])


@pytest.mark.parametrize("x, y, message", _bad_data())
def test_malformed_data(x, y, message):
    with pytest.raises((ValueError, TypeError), match=message) as excinfo:
        bnn.fit(_classifier(), (x, y), bnn.MAP(epochs=1, batch_size=8), key=0)
    assert _raised_by_bayesnn(excinfo), excinfo.traceback[-1]


@pytest.mark.parametrize(
    "make",
    [
        lambda: bnn.SGLD(step_size=0.0),
        lambda: bnn.SGLD(step_size=-1e-3),
        lambda: bnn.SGLD(step_size=1e-3, num_samples=0),
        lambda: bnn.SGLD(step_size=1e-3, thinning=0),
        lambda: bnn.SGHMC(step_size=1e-3, num_chains=0),
        lambda: bnn.PSGLD(step_size=1e-3, batch_size=0),
        lambda: bnn.MAP(optimizer="adamm"),
        lambda: bnn.MAP(epochs=-3),
        lambda: bnn.MAP(batch_size=2.5),
        lambda: bnn.MeanFieldVI(num_samples=0),
        lambda: bnn.MeanFieldVI(init_scale=-1.0),
        lambda: bnn.NUTS(num_samples=0),
        lambda: bnn.NUTS(target_accept_prob=1.5),
        lambda: bnn.Ensemble(bnn.MAP(), size=0),
        lambda: bnn.MCDropout(bnn.MAP(), num_samples=0),
        lambda: bnn.priors.Normal(-1.0),
        lambda: bnn.likelihoods.Gaussian(scale=0.0),
        lambda: bnn.likelihoods.Categorical(temperature=0.0),
        lambda: bnn.BNN(bnn.models.MLP(4, (5,), 3, rngs=nnx.Rngs(0)),
                        bnn.priors.PerParameter({"conv/*": bnn.priors.Normal(1.0)})),
        lambda: bnn.models.MLP(4, (0,), 3, rngs=nnx.Rngs(0)),
        lambda: bnn.models.Conv2D(8, 3, padding="full"),
    ],
)
def test_malformed_configuration(make):
    with pytest.raises((ValueError, TypeError)) as excinfo:
        make()
    assert _raised_by_bayesnn(excinfo), excinfo.traceback[-1]


def test_batch_larger_than_data_and_bad_prediction_inputs():
    model = _classifier()
    with pytest.raises(ValueError, match="larger than the dataset"):
        bnn.fit(model, (X, LABELS), bnn.SGLD(step_size=1e-3, batch_size=31), key=0)
    post = bnn.fit(model, (X, LABELS), bnn.MAP(epochs=1, batch_size=8), key=0)
    nan = X.copy()
    nan[5, 1] = np.nan
    for bad, message in ((X[:, :3], "expects"), (X[0], "num_examples"),
                         (X.astype(str), "numeric"), (nan, r"NaN or inf \(first at row 5\)")):
        with pytest.raises((ValueError, TypeError), match=message) as excinfo:
            post.predict(bad)
        assert _raised_by_bayesnn(excinfo)
    with pytest.raises(ValueError, match="NaN or inf"):
        post.log_predictive_density(nan, LABELS)
    with pytest.raises(ValueError, match="labels must lie"):
        post.log_predictive_density(X, LABELS + 3)


# -- every field of every configuration, with wrong values ---------------------------------

_PACKAGE = Path(bnn.__file__).parent
_CONFIG_MODULES = ("bayesnn.priors", "bayesnn.likelihoods", "bayesnn.data.augment",
                   *(f"bayesnn.inference.{m.name}" for m in
                     pkgutil.iter_modules(bnn.inference.__path__)))
# what a field needs where no default is given
_REQUIRED = {"SGLD": {"step_size": 1e-3}, "PSGLD": {"step_size": 1e-3},
             "SGHMC": {"step_size": 1e-3}, "Cyclical": {"cycle_length": 10},
             "PerParameter": {"rules": {"*": bnn.priors.Normal()}}}
# what the fields annotated Any accept (checked in their __post_init__)
_ANY = {"optimizer": str | optax.GradientTransformation,
        "learning_rate": float | Callable | None, "subset": str | Sequence[str],
        "prior_precision": float | str | None, "loc": None}
# numeric fields where a negative value is meaningful: none
_NEGATIVE_OK: set[tuple[str, str]] = set()
# free-text str fields, where any str is fine
_ANY_STR = {("MAP", "checkpoint_path")}


def _frozen_dataclasses():
    for name in _CONFIG_MODULES:
        module = importlib.import_module(name)
        for cls in vars(module).values():
            if (isinstance(cls, type) and cls.__module__ == name
                    and dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):
                yield cls


def _configs():
    return sorted((c for c in _frozen_dataclasses() if not inspect.isabstract(c)
                   and not c.__name__.startswith("_")), key=lambda c: c.__name__)


def _kinds(hint) -> set[str]:
    """What kinds of value an annotation admits."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return set().union(*map(_kinds, typing.get_args(hint)))
    simple = {int: "int", float: "float", bool: "bool", str: "str", type(None): "none",
              None: "none"}
    if hint in simple:
        return {simple[hint]}
    if hint is Callable or typing.get_origin(hint) is Callable:
        return {"callable"}
    return {"sequence"} if typing.get_origin(hint) is Sequence else {"object"}


def _wrong_values(owner: str, name: str, hint):
    """``(value, error)`` pairs the field must refuse."""
    kinds = _kinds(hint)
    numeric = kinds & {"int", "float"}
    cases = []
    if "str" not in kinds:
        cases.append(("1", TypeError))
    elif (owner, name) not in _ANY_STR:
        cases.append(("bogus", ValueError))
    if "bool" not in kinds:
        cases.append((True, TypeError))
    if "bool" in kinds or "int" not in kinds and "float" not in kinds:
        cases.append((1, TypeError))
    if "none" not in kinds:
        cases.append((None, TypeError))
    if "int" in kinds and "float" not in kinds:
        cases.append((2.5, TypeError))
    if numeric and (owner, name) not in _NEGATIVE_OK:
        cases.append((-1, ValueError))
    if "float" in kinds:
        cases += [(float("nan"), ValueError), (float("inf"), ValueError)]
    return cases


def _field_cases():
    cases = []
    for cls in _configs():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = _ANY.get(f.name, hints[f.name]) if hints[f.name] is typing.Any else hints[f.name]
            if hint is None:
                continue
            for value, error in _wrong_values(cls.__name__, f.name, hint):
                cases.append(pytest.param(cls, f.name, value, error,
                                          id=f"{cls.__name__}.{f.name}={value!r}"))
    return cases


def _in_bayesnn(excinfo) -> bool:
    return Path(excinfo.traceback[-1].path).is_relative_to(_PACKAGE)


def test_every_configuration_class_checks_its_fields():
    """Every frozen dataclass of these modules is made by ``validation.config``, and every
    method exported by bayesnn is among the configurations fuzzed below."""
    plain = [c.__name__ for c in _frozen_dataclasses()
             if not (hasattr(getattr(c, "__post_init__", None), "config_class")
                     or hasattr(c.__init__, "__wrapped__"))]
    assert plain == []
    names = {c.__name__ for c in _configs()}
    methods = {n for n in bnn.__all__ if isinstance(getattr(bnn, n), type)
               and dataclasses.is_dataclass(getattr(bnn, n)) and hasattr(getattr(bnn, n), "run")}
    assert methods <= names and {"MAP", "NUTS", "SGLD", "Gaussian", "Normal"} <= names


def test_unknown_argument_is_named():
    with pytest.raises(TypeError, match="unexpected keyword argument 'batch_size'"):
        bnn.CoordinateGibbs(batch_size=10)


@pytest.mark.parametrize("cls, name, value, error", _field_cases())
def test_every_field_refuses_wrong_values_naming_it(cls, name, value, error):
    kwargs = {**_REQUIRED.get(cls.__name__, {}), name: value}
    with pytest.raises(error, match=rf"\b{name}\b") as excinfo:
        cls(**kwargs)
    assert _in_bayesnn(excinfo), excinfo.traceback[-1]
    if error is TypeError:
        assert str(excinfo.value).startswith(f"{cls.__name__}: {name} must be ")

"""The declarative configuration checks of bayesnn.validation."""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import pytest

import bayesnn as bnn
from bayesnn.validation import check_range, check_type, config


@config
@dataclasses.dataclass(frozen=True)
class _Base:
    rate: float = 1.0
    count: int = 2
    mode: Literal["a", "b"] = "a"
    calls: list = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self.calls.append("base")
        check_range("rate", self.rate, 0, 1, closed="right")


@config
@dataclasses.dataclass(frozen=True)
class _Child(_Base):
    fn: Callable | None = None
    sizes: Sequence[int] = (1,)


def test_fields_are_checked_before_the_range_checks_and_once():
    with pytest.raises(TypeError, match=r"^_Base: rate must be a float, got '1' \(str\)$"):
        _Base(rate="1")
    with pytest.raises(ValueError, match=r"^rate must be in \(0, 1\], got 2.0$"):
        _Base(rate=2.0)
    child = _Child(rate=1)  # an int is a float
    assert child.calls == ["base"]  # the base's own checks ran once, through the child
    assert dataclasses.replace(child, count=3).count == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        child.rate = 0.5


@pytest.mark.parametrize("kwargs, error, match", [
    ({"count": True}, TypeError, r"_Child: count must be an int, got True \(bool\)"),
    ({"count": 2.0}, TypeError, "count must be an int"),
    ({"rate": np.nan}, ValueError, "rate must be finite, got nan"),
    ({"rate": -np.inf}, ValueError, "rate must be finite"),
    ({"mode": "c"}, TypeError, "mode must be one of 'a', 'b', got 'c'"),
    ({"fn": 3}, TypeError, "fn must be a callable or None"),
    ({"sizes": (1, "2")}, TypeError, "sizes must be a sequence of int"),
    ({"sizes": "12"}, TypeError, "sizes must be a sequence of int"),
])
def test_wrong_types_name_the_class_field_and_what_it_accepts(kwargs, error, match):
    with pytest.raises(error, match=match):
        _Child(**kwargs)


def test_numpy_scalars_and_zero_d_arrays_are_numbers():
    assert _Child(rate=np.float32(0.5), count=np.int64(3), sizes=[np.int32(2)]).count == 3
    assert _Base(rate=np.asarray(0.25)).rate == 0.25
    with pytest.raises(TypeError, match="rate must be a float"):
        _Base(rate=np.ones(2))


def test_check_type_describes_unions_and_public_classes():
    with pytest.raises(TypeError, match=r"must be a bayesnn.MAP or None, got 1 \(int\)"):
        check_type("init", 1, bnn.MAP | None)
    with pytest.raises(TypeError, match="must be a bayesnn.data.Augment"):
        check_type("augment", "flip", bnn.data.Augment)
    check_type("init", bnn.MAP(), bnn.MAP | None)


@config
@dataclasses.dataclass(frozen=True)
class _Plain:  # no __post_init__ anywhere
    size: int = 1


def test_a_config_without_post_init_is_checked_and_config_needs_a_frozen_dataclass():
    with pytest.raises(TypeError, match="_Plain: size must be an int"):
        _Plain(size="1")
    with pytest.raises(TypeError, match="frozen dataclass"):
        config(type("Loose", (), {}))


def test_check_range_messages():
    check_range("p", 0.0, 0, 1, closed="left")
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\), got 1"):
        check_range("p", 1, 0, 1, closed="left")
    with pytest.raises(ValueError, match="t must be >= 0, got -1"):
        check_range("t", -1, 0, closed="left")


@pytest.mark.parametrize("make, message", [
    (lambda: bnn.MAP(epochs="3"), r"MAP: epochs must be an int, got '3' \(str\)"),
    (lambda: bnn.MAP(epochs=2.5), "MAP: epochs must be an int, got 2.5"),
    (lambda: bnn.MAP(learning_rate="0.01"), "MAP: learning_rate must be a float or a callable"),
    (lambda: bnn.MAP(optimizer=3), "optimizer must be a str or an optax.GradientTransformation"),
    (lambda: bnn.SGLD(step_size="1e-4"), "SGLD: step_size must be a float"),
    (lambda: bnn.likelihoods.Gaussian("0.1"), "Gaussian: scale must be a float"),
    (lambda: bnn.Laplace(subset=3), "Laplace: subset must be a str or a sequence of str"),
    (lambda: bnn.priors.PerParameter({"*": 1.0}), "PerParameter: rules must be a mapping"),
])
def test_the_issue_examples(make, message):
    with pytest.raises(TypeError, match=message):
        make()

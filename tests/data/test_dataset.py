import jax
import numpy as np
import pytest

from bayesnn.data import (
    Dataset,
    Standardizer,
    as_dataset,
    train_test_split,
    validation_split,
)


def _data(n=10, d=3):
    x = np.arange(n * d, dtype=np.float64).reshape(n, d)
    return Dataset(x, np.arange(n))


@pytest.mark.parametrize("form", ["dataset", "tuple", "list", "dict"])
def test_as_dataset_accepts_pairs_and_converts_dtypes(form):
    x, y = np.ones((4, 2), np.float64), np.arange(4, dtype=np.int64)
    data = {"dataset": Dataset(x, y), "tuple": (x, y), "list": [x, y], "dict": {"x": x, "y": y}}
    out = as_dataset(data[form])
    assert isinstance(out, Dataset) and out.num_examples == 4
    assert out.x.dtype == np.float32
    assert out.y.dtype == np.int64  # integer labels untouched
    assert as_dataset((x, y.astype(np.float64))).y.dtype == np.float32


def test_as_dataset_keeps_float64_under_x64():
    x = np.ones((3, 1), np.float64)
    with jax.enable_x64(True):
        assert as_dataset((x, x[:, 0])).x.dtype == np.float64
    assert as_dataset((x, x[:, 0])).x.dtype == np.float32


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (np.ones((3, 2)), TypeError, r"\(x, y\) pair .* got ndarray$"),
        ((np.ones((3, 2)),), TypeError, "got tuple of length 1"),
        ({"inputs": 1}, TypeError, r"dict with keys 'x' and 'y'; got dict with keys \['inputs'\]"),
        ((np.array([["a"], ["b"]]), np.ones(2)), TypeError, "data.x must be numeric.*dtype <U1"),
        ((np.ones((2, 1)), np.array([None, 1])), TypeError, "data.y must be numeric.*dtype object"),
        ((np.ones(5), np.ones(5)), ValueError, r"got \(5,\); use x\[:, None\] for one feature"),
        ((np.ones((5, 1)), np.ones(4)), ValueError, "5 inputs and 4 targets"),
        ((np.ones((0, 2)), np.ones(0)), ValueError, "no examples"),
        ((np.ones((2, 1)), np.float32(1.0)), ValueError, "got a scalar"),
    ],
)
def test_as_dataset_rejects_bad_input(data, error, match):
    with pytest.raises(error, match=match):
        as_dataset(data)


def test_as_dataset_reports_non_finite_rows():
    x = np.ones((6, 2))
    x[2, 1], x[4, 0] = np.nan, np.inf
    with pytest.raises(
        ValueError, match=r"train.x has 2 row\(s\) with NaN or inf \(first at row 2\)"
    ):
        as_dataset((x, np.ones(6)), name="train")
    y = np.ones(6)
    y[5] = np.nan
    with pytest.raises(ValueError, match=r"data.y has 1 row\(s\).*first at row 5"):
        as_dataset((np.ones((6, 2)), y))


def test_train_test_split_is_a_keyed_partition():
    data = _data(10)
    train, test = train_test_split(data, 0.3, key=jax.random.key(0))
    assert (train.num_examples, test.num_examples) == (7, 3)
    assert sorted(np.concatenate([train.y, test.y])) == list(range(10))
    np.testing.assert_array_equal(train.x, as_dataset(data).x[train.y])  # rows stay paired
    again, _ = train_test_split(data, 0.3, key=jax.random.key(0))
    other, _ = train_test_split(data, 0.3, key=jax.random.key(1))
    np.testing.assert_array_equal(train.y, again.y)
    assert not np.array_equal(train.y, other.y)


def test_validation_split_takes_the_last_fraction_unshuffled():
    train, val = validation_split(_data(10), 0.25)  # Keras: split at floor(10 * 0.75) = 7
    np.testing.assert_array_equal(train.y, np.arange(7))
    np.testing.assert_array_equal(val.y, np.arange(7, 10))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_fraction_out_of_range(fraction):
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\)"):
        train_test_split(_data(), fraction, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"validation fraction must be in \(0, 1\)"):
        validation_split(_data(), fraction)


def test_split_leaving_an_empty_part():
    with pytest.raises(
        ValueError, match="=0.9 leaves an empty part: 2 examples split into 0 and 2"
    ):
        validation_split(_data(2), 0.9)
    with pytest.raises(ValueError, match="leaves an empty part"):
        train_test_split(_data(2), 0.9, key=jax.random.key(0))
    assert validation_split(_data(10), 0.01)[1].num_examples == 1  # Keras rounds up


def test_standardizer_uses_training_statistics_and_round_trips():
    rng = np.random.default_rng(0)
    train = rng.normal(3.0, 2.0, size=(200, 3)).astype(np.float32)
    train[:, 2] = 5.0  # constant feature
    test = rng.normal(3.0, 2.0, size=(50, 3)).astype(np.float32)
    s = Standardizer.fit(train)
    z = s.transform(train)
    np.testing.assert_allclose(z[:, :2].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[:, :2].std(0), 1.0, atol=1e-5)
    assert s.std[2] == 1.0 and np.all(z[:, 2] == 0.0)
    # test data is mapped with the training statistics, not its own
    np.testing.assert_allclose(s.transform(test), (test - train.mean(0)) / s.std, atol=1e-6)
    np.testing.assert_allclose(s.inverse_transform(s.transform(test)), test, rtol=1e-5, atol=1e-5)
    assert s.mean.dtype == s.std.dtype == np.float32


@pytest.mark.parametrize("shape", [(100,), (100, 1)])
def test_standardizer_on_targets(shape):
    y = np.random.default_rng(1).normal(10.0, 4.0, size=shape).astype(np.float32)
    s = Standardizer.fit(y)
    assert s.mean.shape == shape[1:]
    z = s.transform(y)
    assert z.shape == shape
    np.testing.assert_allclose(s.inverse_transform(z), y, rtol=1e-5)
    np.testing.assert_allclose(s.inverse_scale(np.ones(shape[1:])), y.std(0), rtol=1e-5)
    jz = jax.jit(s.inverse_transform)(z)  # works on device arrays too
    np.testing.assert_allclose(jz, y, rtol=1e-5)

import jax
import numpy as np
import pytest

from bayesnn.data import (
    Dataset,
    gap_function,
    gap_regression,
    gap_regression_grid,
    linear_regression,
    spirals,
    two_moons,
)


def _same(a: Dataset, b: Dataset) -> bool:
    return np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)


@pytest.mark.parametrize(
    ("make", "x_shape", "y_shape", "y_dtype"),
    [
        (lambda **kw: gap_regression(n=60, **kw), (60, 1), (60, 1), np.float32),
        (lambda **kw: two_moons(n=51, **kw), (51, 2), (51,), np.int32),
        (lambda **kw: spirals(n=51, num_classes=3, **kw), (51, 2), (51,), np.int32),
        (
            lambda **kw: linear_regression(n=20, num_features=4, **kw)[0],
            (20, 4),
            (20, 1),
            np.float32,
        ),
    ],
)
def test_toy_shapes_dtypes_and_seeds(make, x_shape, y_shape, y_dtype):
    data = make(key=0)
    assert isinstance(data, Dataset)
    assert data.x.shape == x_shape and data.x.dtype == np.float32
    assert data.y.shape == y_shape and data.y.dtype == y_dtype
    assert _same(data, make(key=0))
    assert _same(data, make(key=jax.random.key(0)))  # an int seeds jax.random.key
    assert not _same(data, make(key=1))


def test_gap_regression_leaves_the_gap_empty():
    data = gap_regression(n=500, noise=0.0)
    x = data.x[:, 0]
    assert not np.any((x > -0.5) & (x < 0.5))
    assert np.all(np.abs(x) <= 1.5)
    assert np.sum(x < 0) == 250  # half the points in each cluster
    np.testing.assert_allclose(data.y, gap_function(data.x), atol=1e-6)


def test_gap_regression_noise_level():
    data = gap_regression(n=4000, noise=0.3)
    residual = data.y - np.asarray(gap_function(data.x))
    assert abs(residual.std() - 0.3) < 0.02


def test_gap_regression_grid():
    grid = gap_regression_grid(num=7)
    np.testing.assert_allclose(grid.x[:, 0], np.linspace(-3, 3, 7), rtol=1e-6)
    assert grid.x.shape == grid.y.shape == (7, 1) and grid.y.dtype == np.float32
    np.testing.assert_allclose(grid.y, np.sin(3 * grid.x) + 0.1 * grid.x**3, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(gap_function)(grid.x), grid.y, rtol=1e-5)


@pytest.mark.parametrize("num_classes", [2, 3, 5])
def test_classification_toys_are_balanced(num_classes):
    data = spirals(n=100, num_classes=num_classes)
    counts = np.bincount(data.y, minlength=num_classes)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 100
    assert set(np.unique(two_moons(n=11).y)) == {0, 1}


def test_linear_regression_recovers_weights_by_least_squares():
    data, w = linear_regression(n=2000, num_features=3, noise=0.1)
    assert w.shape == (3, 1) and w.dtype == np.float32
    w_hat = np.linalg.lstsq(data.x, data.y, rcond=None)[0]
    np.testing.assert_allclose(w_hat, w, atol=0.02)


def test_orthogonal_design():
    n = 40
    data, _ = linear_regression(n=n, num_features=5, orthogonal=True)
    gram = data.x.T.astype(np.float64) @ data.x
    np.testing.assert_allclose(gram, n * np.eye(5), atol=1e-4)
    with pytest.raises(ValueError, match="needs n >= num_features, got n=2, num_features=3"):
        linear_regression(n=2, num_features=3, orthogonal=True)

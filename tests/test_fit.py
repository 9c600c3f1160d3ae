"""Bad input reaches the user as a clear error, before any computation."""

import numpy as np
import pytest
from flax import nnx

import bayesnn as bnn


@pytest.fixture
def classifier():
    net = bnn.models.MLP(4, (8,), 3, rngs=nnx.Rngs(0))
    return bnn.BNN(net, likelihood=bnn.likelihoods.Categorical())


@pytest.fixture
def regressor():
    net = bnn.models.MLP(4, (8,), 1, rngs=nnx.Rngs(0))
    return bnn.BNN(net, likelihood=bnn.likelihoods.Gaussian())


X = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
LABELS = np.arange(20) % 3
METHOD = bnn.MAP(epochs=1, batch_size=4)


@pytest.mark.parametrize(
    "x, y, error, match",
    [
        (X[:, :3], LABELS, ValueError, r"per-example shape \(3,\).*expects \(4,\)"),
        (np.where(np.eye(20, 4) > 0, np.nan, X), LABELS, ValueError, "NaN or inf"),
        (X, LABELS + 1, ValueError, r"must lie in \[0, 3\); found min 1, max 3"),
        (X, np.eye(3)[LABELS], ValueError, "integer class"),
        (X, LABELS[:10], ValueError, "20.*10|10.*20"),
        (X[:0], LABELS[:0], ValueError, "empty|no examples|0 examples"),
        (X.astype(str), LABELS, TypeError, "dtype"),
        (X, LABELS + 0.5, (TypeError, ValueError), "integer|whole"),
    ],
)
def test_classification_inputs(classifier, x, y, error, match):
    with pytest.raises(error, match=match):
        bnn.fit(classifier, (x, y), METHOD, key=0)


def test_regression_target_shape(regressor):
    with pytest.raises(ValueError, match="shape"):
        bnn.fit(regressor, (X, np.zeros((20, 2), np.float32)), METHOD, key=0)


def test_not_a_pair(regressor):
    with pytest.raises(TypeError, match="pair|\\(x, y\\)"):
        bnn.fit(regressor, X, METHOD, key=0)


def test_bad_key_model_and_method(regressor):
    y = np.zeros((20, 1), np.float32)
    with pytest.raises(TypeError, match="key must be"):
        bnn.fit(regressor, (X, y), METHOD, key="seed")
    with pytest.raises(TypeError, match="model must be a bayesnn.BNN"):
        bnn.fit(object(), (X, y), METHOD, key=0)
    with pytest.raises(TypeError, match="method must be"):
        bnn.fit(regressor, (X, y), "adam", key=0)


def test_checkpoint_of_other_values_with_the_same_shapes_is_refused(regressor, tmp_path):
    y = X[:, :1] ** 2
    path = tmp_path / "run.ckpt"
    bnn.fit(regressor, (X, y), METHOD, key=0, checkpoint=path)
    bnn.fit(regressor, (X, y), METHOD, key=0, checkpoint=path)  # the same run resumes
    other_net = bnn.BNN(bnn.models.MLP(4, (8,), 1, rngs=nnx.Rngs(1)),
                        likelihood=bnn.likelihoods.Gaussian())
    for model, data in ((regressor, (X, -y)), (regressor, (X[::-1], y)), (other_net, (X, y))):
        with pytest.raises(ValueError, match="belongs to a different run"):
            bnn.fit(model, data, METHOD, key=0, checkpoint=path)

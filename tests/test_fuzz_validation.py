"""Malformed input, many kinds at once: each gives a ValueError/TypeError raised by bayesnn's
own checks, before anything reaches JAX."""

import numpy as np
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
        lambda: bnn.CoordinateGibbs(batch_size=10),
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

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import brier_score_loss, roc_auc_score

from bayesnn import metrics
from bayesnn.likelihoods import ClassificationPrediction, RegressionPrediction

PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25], [0.9, 0.05, 0.05]])
LABELS = np.array([0, 1, 1, 2])


def test_classification_scores_match_hand_computation():
    assert metrics.accuracy(PROBS, LABELS) == pytest.approx(0.5)
    nll = -(np.log(0.7) + np.log(0.3) + np.log(0.5) + np.log(0.05)) / 4
    assert metrics.categorical_nll(PROBS, LABELS) == pytest.approx(nll)
    rows = [0.3**2 + 0.2**2 + 0.1**2, 0.1**2 + 0.7**2 + 0.6**2,
            0.25**2 + 0.5**2 + 0.25**2, 0.9**2 + 0.05**2 + 0.95**2]
    assert metrics.brier(PROBS, LABELS) == pytest.approx(np.mean(rows))


def test_brier_agrees_with_sklearn():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), 50)
    y = rng.integers(0, 4, 50)
    ref = brier_score_loss(y, probs, labels=range(4), scale_by_half=False)
    assert metrics.brier(probs, y) == pytest.approx(ref)
    p1 = rng.uniform(size=50)
    binary = np.stack([1 - p1, p1], -1)
    y2 = rng.integers(0, 2, 50)
    assert metrics.brier(binary, y2) == pytest.approx(2 * brier_score_loss(y2, p1))


def test_regression_scores_match_scipy():
    mean = np.array([[0.0], [1.0], [2.0]])
    std = np.array([[1.0], [0.5], [2.0]])
    y = np.array([0.5, 0.0, 2.0])  # (N,) against (N, 1) predictions
    nll = -stats.norm.logpdf(y, mean[:, 0], std[:, 0]).mean()
    assert metrics.gaussian_nll(mean, std, y) == pytest.approx(nll)
    assert metrics.rmse(mean, y) == pytest.approx(np.sqrt((0.25 + 1.0) / 3))
    np.testing.assert_allclose(metrics.gaussian_pit(mean, std, y)[:, 0],
                               stats.norm.cdf(y, mean[:, 0], std[:, 0]))
    np.testing.assert_allclose(metrics.gaussian_entropy(std), stats.norm(0, std[:, 0]).entropy())
    np.testing.assert_allclose(metrics.gaussian_mutual_information(std, std), 0.0)


def test_ece_and_reliability_by_hand():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    y = np.array([0, 1, 1, 1])
    curve = metrics.reliability_curve(probs, y, num_bins=2)
    np.testing.assert_array_equal(curve.count, [0, 4])  # every confidence is in (0.5, 1]
    assert np.isnan(curve.accuracy[0]) and np.isnan(curve.confidence[0])
    assert curve.confidence[1] == pytest.approx(0.75)
    assert curve.accuracy[1] == pytest.approx(0.75)
    assert metrics.ece(probs, y, num_bins=2) == pytest.approx(0.0)
    curve = metrics.reliability_curve(probs, y, num_bins=4)  # bins (.5,.75], (.75, 1]
    np.testing.assert_array_equal(curve.count, [0, 0, 2, 2])
    # |0.5 - 0.85| * 2/4 + |1.0 - 0.65| * 2/4
    assert metrics.ece(probs, y, num_bins=4) == pytest.approx(0.35)


def _synthetic(n, gap, seed=0):
    """Binary predictions whose top class is right with probability ``confidence - gap``."""
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0.5, 1.0, n)
    correct = rng.uniform(size=n) < conf - gap
    y = np.where(correct, 0, 1)
    return np.stack([conf, 1 - conf], -1), y


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_ece_small_when_calibrated_and_large_when_overconfident(strategy):
    probs, y = _synthetic(20_000, gap=0.0)
    assert metrics.ece(probs, y, strategy=strategy) < 0.02
    probs, y = _synthetic(20_000, gap=0.2)
    assert metrics.ece(probs, y, strategy=strategy) == pytest.approx(0.2, abs=0.03)


def test_equal_mass_bins_have_equal_counts_even_with_ties():
    rng = np.random.default_rng(1)
    conf = np.round(rng.uniform(0.5, 1.0, 1000), 1)  # only six distinct values
    probs = np.stack([conf, 1 - conf], -1)
    curve = metrics.reliability_curve(probs, np.zeros(1000, int), num_bins=10,
                                      strategy="quantile")
    np.testing.assert_array_equal(curve.count, 100)
    assert np.all(np.diff(curve.edges) >= 0) and np.all(np.diff(curve.confidence) >= 0)
    uniform = metrics.reliability_curve(probs, np.zeros(1000, int), num_bins=10)
    assert uniform.count.sum() == 1000 and len(set(uniform.count)) > 2


def test_coverage_of_a_correct_gaussian_predictive_is_nominal():
    rng = np.random.default_rng(2)
    n = 4000
    mean, std = rng.normal(size=(n, 1)), rng.uniform(0.5, 2.0, (n, 1))
    y = mean + std * rng.normal(size=(n, 1))
    samples = mean + std * rng.normal(size=(400, n, 1))
    for level in (0.5, 0.9):
        tol = 4 * np.sqrt(level * (1 - level) / n)
        gauss = metrics.interval_coverage(metrics.gaussian_interval(mean, std, level), y)
        assert gauss == pytest.approx(level, abs=tol)
        sampled = metrics.interval_coverage(metrics.sample_interval(samples, level), y)
        assert sampled == pytest.approx(level, abs=tol + 0.02)
    for pit in (metrics.gaussian_pit(mean, std, y), metrics.sample_pit(samples, y)):
        assert stats.kstest(pit.ravel(), "uniform").pvalue > 1e-3
    overconfident = metrics.gaussian_interval(mean, std / 3, 0.9)
    assert metrics.interval_coverage(overconfident, y) < 0.5


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    for _ in range(5):
        labels = rng.integers(0, 2, 200)
        scores = rng.integers(0, 6, 200) + labels  # many ties
        assert metrics.auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    assert metrics.ood_auroc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert metrics.ood_auroc([0.3, 0.4], [0.1, 0.2]) == 0.0
    assert metrics.ood_auroc(np.zeros(5), np.zeros(7)) == 0.5


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="shape"):
        metrics.accuracy(PROBS[:, 0], LABELS)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        metrics.brier(PROBS, LABELS + 1)
    with pytest.raises(TypeError, match="integers"):
        metrics.categorical_nll(PROBS, LABELS.astype(float))
    with pytest.raises(ValueError, match="strategy"):
        metrics.ece(PROBS, LABELS, strategy="mass")
    with pytest.raises(ValueError, match="num_bins"):
        metrics.ece(PROBS, LABELS, num_bins=0)
    with pytest.raises(ValueError, match="level"):
        metrics.gaussian_interval(0.0, 1.0, 1.5)
    with pytest.raises(ValueError, match="positive and one negative"):
        metrics.auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="shape"):
        metrics.rmse(np.zeros((3, 2)), np.zeros(4))


def test_metrics_take_the_prediction_objects():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(3), size=20)
    labels = rng.integers(0, 3, size=20)
    cls = ClassificationPrediction(probs, np.zeros(20), np.zeros(20), np.zeros(20))
    for fn in (metrics.ece, metrics.accuracy, metrics.brier, metrics.categorical_nll):
        assert fn(cls, labels) == fn(probs, labels) == fn(probs, labels[:, None])
    assert metrics.reliability_curve(cls, labels).count.sum() == 20
    mean, std, y = rng.normal(size=(20, 1)), rng.uniform(0.5, 2, (20, 1)), rng.normal(size=20)
    reg = RegressionPrediction(mean, std, 0.5 * std, np.sqrt(0.75) * std)
    assert metrics.gaussian_nll(reg, y) == metrics.gaussian_nll(mean, std, y)
    assert metrics.rmse(reg, y) == metrics.rmse(mean, y)
    np.testing.assert_array_equal(metrics.gaussian_pit(reg, y), metrics.gaussian_pit(mean, std, y))
    np.testing.assert_array_equal(metrics.gaussian_interval(reg, level=0.8),
                                  metrics.gaussian_interval(mean, std, 0.8))
    np.testing.assert_array_equal(metrics.gaussian_entropy(reg), metrics.gaussian_entropy(std))
    np.testing.assert_allclose(metrics.gaussian_mutual_information(reg), np.log(2.0))
    assert metrics.ood_auroc(cls, cls._replace(entropy=np.ones(20))) == 1.0
    with pytest.raises(TypeError, match="needs a classification prediction"):
        metrics.ece(reg, labels)
    with pytest.raises(TypeError, match="needs a regression prediction"):
        metrics.rmse(cls, y)
    with pytest.raises(TypeError, match=r"call gaussian_interval\(pred\)"):
        metrics.gaussian_interval(reg, 0.9)

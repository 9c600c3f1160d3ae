"""Predictive metrics on arrays: fit, calibration, intervals and out-of-distribution detection.

Every function takes predictions first and targets second, accepts NumPy or JAX arrays and
returns NumPy values. Classification inputs are class probabilities ``probs`` ``(N, K)`` and
integer labels ``y`` ``(N,)`` or ``(N, 1)``; regression inputs are predictive means, standard
deviations or samples with the shape of the targets ``y`` ``(N,)`` or ``(N, D)``.

Where a function takes probabilities or a predictive mean and std, it also takes the
prediction object :meth:`~bayesnn.Posterior.predict` returns: ``ece(pred, y)`` reads
``pred.probs`` of a :class:`~bayesnn.likelihoods.ClassificationPrediction`, and
``gaussian_nll(pred, y)`` ``pred.mean`` and ``pred.std`` of a
:class:`~bayesnn.likelihoods.RegressionPrediction`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import ndtr, ndtri

from bayesnn.likelihoods import ClassificationPrediction, RegressionPrediction

__all__ = [
    "categorical_nll",
    "gaussian_nll",
    "accuracy",
    "rmse",
    "brier",
    "ReliabilityCurve",
    "reliability_curve",
    "ece",
    "gaussian_interval",
    "sample_interval",
    "interval_coverage",
    "gaussian_pit",
    "sample_pit",
    "gaussian_entropy",
    "gaussian_mutual_information",
    "auroc",
    "ood_auroc",
]

_STRATEGIES = ("uniform", "quantile")


# -- checks ---------------------------------------------------------------------------------


def _probs_labels(probs, y) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities ``(N, K)`` (or a classification prediction's) and integer labels ``(N,)``
    or ``(N, 1)`` in ``[0, K)``, checked; labels come back ``(N,)``."""
    if isinstance(probs, RegressionPrediction):
        raise TypeError("probs: this metric needs a classification prediction, got a "
                        "RegressionPrediction")
    if isinstance(probs, ClassificationPrediction):
        probs = probs.probs
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y)
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape (N, num_classes), got {probs.shape}")
    if probs.shape[0] == 0:
        raise ValueError("probs has no rows")
    if y.shape == (probs.shape[0], 1):
        y = y[:, 0]
    if y.shape != probs.shape[:1]:
        raise ValueError(f"y must have shape ({probs.shape[0]},) or ({probs.shape[0]}, 1) to "
                         f"match probs, got {y.shape}")
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        raise TypeError(f"class labels must be integers, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= probs.shape[1]):
        raise ValueError(f"class labels must lie in [0, {probs.shape[1]})")
    return probs, y.astype(np.int64)


def _like(y, ref: np.ndarray, name: str = "y") -> np.ndarray:
    """``y`` as float64 with the shape of ``ref`` (``(N,)`` and ``(N, 1)`` are interchangeable)."""
    y = np.asarray(y, dtype=np.float64)
    if y.shape != ref.shape:
        if y.size != ref.size or y.shape[:1] != ref.shape[:1]:
            raise ValueError(f"{name} has shape {y.shape}, predictions have {ref.shape}")
        y = y.reshape(ref.shape)
    return y


def _mean(mean) -> np.ndarray:
    """A predictive mean, or a regression prediction's."""
    if isinstance(mean, ClassificationPrediction):
        raise TypeError("mean: this metric needs a regression prediction, got a "
                        "ClassificationPrediction")
    return np.asarray(mean.mean if isinstance(mean, RegressionPrediction) else mean, np.float64)


def _mean_std(mean, std, y, fn: str, needs_y: bool = True):
    """``(mean, std, y)``; with a regression prediction first, its mean and std, and ``y``
    from the second argument (``fn(pred, y)``, or ``fn(pred)`` without ``needs_y``)."""
    if isinstance(mean, RegressionPrediction):
        extra = y if needs_y else std
        if extra is not None:
            raise TypeError(f"{fn}: the std comes from the RegressionPrediction; call "
                            f"{fn}(pred{', y' if needs_y else ''})")
        mean, std, y = mean.mean, mean.std, std
    if std is None or (needs_y and y is None):
        raise TypeError(f"{fn} needs (mean, std{', y' if needs_y else ''}) or "
                        f"(pred{', y' if needs_y else ''}) with a RegressionPrediction")
    return _mean(mean), np.asarray(std, np.float64), y


def _std(std, field: str = "std") -> np.ndarray:
    """A predictive std, or a regression prediction's ``field``."""
    return np.asarray(getattr(std, field) if isinstance(std, RegressionPrediction) else std,
                      np.float64)


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(level)


# -- fit ------------------------------------------------------------------------------------


def categorical_nll(probs, y, *, eps: float = 1e-12) -> float:
    """Mean negative log predictive probability of the true class, ``-mean log p(y_i)``.

    Probabilities are floored at ``eps`` so a confident mistake costs ``-log eps``, not inf.
    """
    probs, y = _probs_labels(probs, y)
    return float(-np.mean(np.log(np.maximum(probs[np.arange(len(y)), y], eps))))


def gaussian_nll(mean, std, y=None) -> float:
    """Mean negative log density of ``y`` under ``N(mean, std²)``, summed over target columns.

    Also ``gaussian_nll(pred, y)`` with a :class:`~bayesnn.likelihoods.RegressionPrediction`.
    """
    mean, std, y = _mean_std(mean, std, y, "gaussian_nll")
    y = _like(y, mean)
    if np.any(std <= 0):
        raise ValueError("std must be > 0")
    z = (y - mean) / std
    lp = -0.5 * z**2 - np.log(std) - 0.5 * np.log(2 * np.pi)
    return float(-np.mean(lp.reshape(len(y), -1).sum(-1)))


def accuracy(probs, y) -> float:
    """Fraction of rows whose most probable class is ``y``."""
    probs, y = _probs_labels(probs, y)
    return float(np.mean(probs.argmax(-1) == y))


def rmse(mean, y) -> float:
    """Root mean squared error over all rows and target columns; ``mean`` may be a
    :class:`~bayesnn.likelihoods.RegressionPrediction`."""
    mean = _mean(mean)
    return float(np.sqrt(np.mean((_like(y, mean) - mean) ** 2)))


def brier(probs, y) -> float:
    """Multi-class Brier score ``mean_i Σ_k (p_ik - 1[y_i = k])²`` (Brier 1950, eq. 1).

    Ranges over ``[0, 2]``; for two classes it is twice the binary score ``mean (p_i - y_i)²``.
    """
    probs, y = _probs_labels(probs, y)
    onehot = np.eye(probs.shape[1])[y]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=-1)))


# -- calibration ----------------------------------------------------------------------------


class ReliabilityCurve(NamedTuple):
    """Top-label reliability per confidence bin (NaN where a bin is empty).

    ``confidence`` and ``accuracy`` are the bin means of the top-class probability and of
    its correctness, ``count`` the rows per bin, ``edges`` ``(num_bins + 1,)`` the bin limits
    (equal-mass bins: the lowest confidence, then the highest of each bin).
    """

    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray
    edges: np.ndarray


def reliability_curve(
    probs, y, *, num_bins: int = 15, strategy: str = "uniform"
) -> ReliabilityCurve:
    """Bin rows by top-class confidence and compare confidence with accuracy per bin.

    Parameters
    ----------
    probs : array, shape (N, K)
    y : int array, shape (N,)
    num_bins : int
    strategy : {"uniform", "quantile"}
        Equal-width bins on ``[0, 1]`` (Guo et al. 2017, *On calibration of modern neural
        networks*, §2), or equal-mass bins holding (as nearly as possible) the same number of
        rows (Nixon et al. 2019, *Measuring calibration in deep learning*). Equal-mass bins
        split the rows sorted by confidence, so ties never unbalance the counts.
    """
    probs, y = _probs_labels(probs, y)
    if not (isinstance(num_bins, int | np.integer) and num_bins > 0):
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}")
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
    conf = probs.max(-1)
    correct = (probs.argmax(-1) == y).astype(np.float64)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, num_bins + 1)
        bins = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, num_bins - 1)
    else:
        order = np.argsort(conf, kind="stable")
        sorted_bins = np.arange(len(conf)) * num_bins // len(conf)
        bins = np.empty(len(conf), dtype=np.int64)
        bins[order] = sorted_bins
        last = np.searchsorted(sorted_bins, np.arange(num_bins), side="right") - 1
        edges = conf[order][np.concatenate([[0], last])]
    count = np.bincount(bins, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, conf, num_bins) / count
        mean_acc = np.bincount(bins, correct, num_bins) / count
    return ReliabilityCurve(mean_conf, mean_acc, count, edges)


def ece(probs, y, *, num_bins: int = 15, strategy: str = "uniform") -> float:
    """Expected calibration error ``Σ_b (n_b / N) |acc_b - conf_b|`` (Guo et al. 2017, eq. 3).

    ``strategy`` picks equal-width (``"uniform"``) or equal-mass (``"quantile"``) bins; see
    :func:`reliability_curve`.
    """
    curve = reliability_curve(probs, y, num_bins=num_bins, strategy=strategy)
    full = curve.count > 0
    gap = np.abs(curve.accuracy[full] - curve.confidence[full])
    return float(np.sum(curve.count[full] * gap) / np.sum(curve.count))


# -- regression intervals ---------------------------------------------------------------------


def gaussian_interval(mean, std=None, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Central ``level`` interval ``mean ± z std`` of a Gaussian predictive.

    Also ``gaussian_interval(pred, level=0.9)`` with a
    :class:`~bayesnn.likelihoods.RegressionPrediction`.
    """
    z = ndtri(0.5 + _check_level(level) / 2)
    mean, std, _ = _mean_std(mean, std, None, "gaussian_interval", needs_y=False)
    return mean - z * std, mean + z * std


def sample_interval(samples, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Central ``level`` interval from predictive ``samples`` (leading axis: samples)."""
    tail = (1.0 - _check_level(level)) / 2
    lower, upper = np.quantile(np.asarray(samples, dtype=np.float64), [tail, 1 - tail], axis=0)
    return lower, upper


def interval_coverage(interval, y) -> float:
    """Fraction of targets inside ``interval = (lower, upper)`` (ends included).

    A calibrated predictive covers about ``level`` of the targets with its central
    ``level`` interval (:func:`gaussian_interval`, :func:`sample_interval`).
    """
    lower, upper = (np.asarray(a, dtype=np.float64) for a in interval)
    y = _like(y, lower)
    return float(np.mean((lower <= y) & (y <= upper)))


def gaussian_pit(mean, std, y=None) -> np.ndarray:
    """Probability integral transform ``Φ((y - mean) / std)``; uniform when calibrated.

    Also ``gaussian_pit(pred, y)`` with a :class:`~bayesnn.likelihoods.RegressionPrediction`.
    (Dawid 1984; Gneiting, Balabdaoui & Raftery 2007, *Probabilistic forecasts, calibration
    and sharpness*, §2.)
    """
    mean, std, y = _mean_std(mean, std, y, "gaussian_pit")
    return ndtr((_like(y, mean) - mean) / std)


def sample_pit(samples, y) -> np.ndarray:
    """PIT from predictive ``samples`` ``(S, ...)``: ``P(Y < y) + P(Y = y) / 2`` per target."""
    samples = np.asarray(samples, dtype=np.float64)
    y = _like(y, samples[0])
    return np.mean(samples < y, axis=0) + 0.5 * np.mean(samples == y, axis=0)


def gaussian_entropy(std) -> np.ndarray:
    """Entropy in nats of ``N(·, std²)`` per row, summed over target columns; ``std`` may be
    a :class:`~bayesnn.likelihoods.RegressionPrediction`."""
    std = _std(std)
    h = 0.5 * np.log(2 * np.pi * np.e) + np.log(std)
    return h.reshape(len(h), -1).sum(-1)


def gaussian_mutual_information(std, aleatoric_std=None) -> np.ndarray:
    """Epistemic part of a Gaussian-approximated predictive entropy, per row.

    ``H[N(·, std²)] - H[N(·, aleatoric_std²)] = log(std / aleatoric_std)``, summed over
    target columns: the regression analogue of the mutual information between target and
    weights (Depeweg et al. 2018, *Decomposition of uncertainty in Bayesian deep learning*).
    Also ``gaussian_mutual_information(pred)`` with a
    :class:`~bayesnn.likelihoods.RegressionPrediction`.
    """
    if isinstance(std, RegressionPrediction):
        std, aleatoric_std = std.std, std.aleatoric_std
    if aleatoric_std is None:
        raise TypeError("gaussian_mutual_information needs (std, aleatoric_std) or a "
                        "RegressionPrediction")
    std = _std(std)
    mi = np.log(std) - np.log(np.asarray(aleatoric_std, dtype=np.float64))
    return mi.reshape(len(mi), -1).sum(-1)


# -- out-of-distribution detection --------------------------------------------------------------


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based rank of each distinct value's first row
    return (first + (counts + 1) / 2.0)[inverse]


def auroc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (1 = positive).

    The Mann–Whitney statistic: the probability that a random positive scores above a random
    negative, ties counting one half (Hanley & McNeil 1982, *The meaning and use of the area
    under a ROC curve*).
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"scores and labels must be 1-D of equal length, got {scores.shape}, "
                         f"{labels.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or inf")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    positive = labels.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("auroc needs at least one positive and one negative example")
    rank_sum = _average_ranks(scores)[positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _entropy_score(score):
    if isinstance(score, ClassificationPrediction):
        return score.entropy
    if isinstance(score, RegressionPrediction):
        return gaussian_entropy(score)
    return score


def ood_auroc(score_in, score_out) -> float:
    """AUROC of telling out-of-distribution inputs (positives) by a higher uncertainty score.

    Use predictive entropy for total uncertainty or mutual information (the epistemic part)
    as the score; 0.5 is chance, 1 perfect separation. A prediction object scores by its
    total predictive entropy (``pred.entropy`` of a classification prediction,
    :func:`gaussian_entropy` of a regression one).
    """
    score_in, score_out = np.ravel(_entropy_score(score_in)), np.ravel(_entropy_score(score_out))
    labels = np.concatenate([np.zeros(len(score_in)), np.ones(len(score_out))])
    return auroc(np.concatenate([score_in, score_out]), labels)

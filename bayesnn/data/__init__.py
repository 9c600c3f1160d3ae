"""Datasets, minibatching and data loaders."""

from bayesnn.data.augment import Augment, affine_matrix, augment_batch, warp
from bayesnn.data.batching import Batches, check_batch_size, epoch_batches, num_batches, take
from bayesnn.data.dataset import (
    Dataset,
    Standardizer,
    as_dataset,
    check_finite,
    train_test_split,
    validation_split,
)
from bayesnn.data.images import load_digits, load_mnist, read_idx
from bayesnn.data.toys import (
    gap_function,
    gap_regression,
    gap_regression_grid,
    linear_regression,
    spirals,
    two_moons,
)
from bayesnn.data.uci import list_uci, load_uci, uci_num_splits

__all__ = [
    "Augment",
    "Batches",
    "Dataset",
    "Standardizer",
    "affine_matrix",
    "as_dataset",
    "check_finite",
    "augment_batch",
    "check_batch_size",
    "epoch_batches",
    "gap_function",
    "gap_regression",
    "gap_regression_grid",
    "linear_regression",
    "list_uci",
    "load_digits",
    "load_mnist",
    "load_uci",
    "num_batches",
    "read_idx",
    "spirals",
    "take",
    "train_test_split",
    "two_moons",
    "uci_num_splits",
    "validation_split",
    "warp",
]

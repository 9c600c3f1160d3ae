"""UCI regression datasets in the layout of the Bayesian deep-learning benchmark.

Each dataset is a folder ``root/<name>/`` (or ``root/<name>/data/``) holding
``data.txt`` (whitespace-separated rows), ``index_features.txt`` and ``index_target.txt``
(0-based columns) and ``index_train_K.txt`` / ``index_test_K.txt`` (0-based rows of
split ``K``), optionally ``n_splits.txt``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from bayesnn.data.dataset import Dataset, as_dataset

__all__ = ["load_uci", "uci_num_splits", "list_uci"]


def _has_data(folder: Path) -> bool:
    return (folder / "data.txt").is_file() or (folder / "data" / "data.txt").is_file()


def list_uci(root: str | Path) -> list[str]:
    """Names of the datasets under ``root``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"UCI root {root.resolve()} is not a directory; expected one folder per dataset, "
            "each holding data.txt and index files"
        )
    return sorted(d.name for d in root.iterdir() if d.is_dir() and _has_data(d))


def _dataset_dir(root: str | Path, name: str) -> Path:
    for folder in (Path(root) / name, Path(root) / name / "data"):
        if (folder / "data.txt").is_file():
            return folder
    raise FileNotFoundError(
        f"no UCI dataset {name!r} under {Path(root).resolve()}: expected {name}/data.txt; "
        f"datasets found: {list_uci(root)}"
    )


def _num_splits(folder: Path) -> int:
    if (folder / "n_splits.txt").is_file():
        return int(np.loadtxt(folder / "n_splits.txt"))
    pattern = re.compile(r"index_train_(\d+)\.txt")
    return sum(1 for p in folder.iterdir() if pattern.fullmatch(p.name))


def uci_num_splits(root: str | Path, name: str) -> int:
    """Number of train/test splits of dataset ``name`` (``n_splits.txt`` or index files)."""
    return _num_splits(_dataset_dir(root, name))


def load_uci(root: str | Path, name: str, split: int = 0) -> tuple[Dataset, Dataset]:
    """Load train/test split ``split`` of UCI dataset ``name``, unnormalised.

    Returns
    -------
    (Dataset, Dataset)
        ``(train, test)``: ``x`` float32 of shape ``(n, num_features)``, ``y`` float32 of
        shape ``(n, 1)``.
    """
    folder = _dataset_dir(root, name)
    num_splits = _num_splits(folder)
    if not 0 <= split < num_splits:
        raise ValueError(
            f"split {split} out of range: {name} has {num_splits} splits (0 to {num_splits - 1})"
        )
    files = [folder / f"index_{part}_{split}.txt" for part in ("train", "test")]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"split {split} of {name}: missing index file(s) {missing}")
    data = np.loadtxt(folder / "data.txt", ndmin=2)
    features = np.loadtxt(folder / "index_features.txt", dtype=int, ndmin=1)
    target = int(np.loadtxt(folder / "index_target.txt", dtype=int))

    def rows(file: Path, part: str) -> Dataset:
        r = np.loadtxt(file, dtype=int, ndmin=1)
        return as_dataset((data[r][:, features], data[r, target, None]), name=f"{name} {part}")

    train, test = (rows(f, part) for f, part in zip(files, ("train", "test"), strict=True))
    return train, test

"""Image classification data: scikit-learn's bundled digits and MNIST from disk.

Images are NHWC float32 in ``[0, 1]``; labels are int32.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np

from bayesnn.data.dataset import Dataset, as_dataset

__all__ = ["load_digits", "load_mnist", "read_idx"]

_MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")
_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
# Third byte of the IDX magic number -> element type (big-endian).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _images(x, y, max_value: float) -> Dataset:
    """Scale to ``[0, 1]``, add a channel axis to ``(n, h, w)`` images, validate."""
    x = np.asarray(x, np.float32) / np.float32(max_value)
    if x.ndim == 3:
        x = x[..., None]
    return as_dataset((x, np.asarray(y, np.int32)), name="images")


def load_digits(*, flatten: bool = False) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes).

    Returns
    -------
    Dataset
        ``x`` float32 in ``[0, 1]`` of shape ``(1797, 8, 8, 1)``, or ``(1797, 64)`` with
        ``flatten=True``; ``y`` int32 in ``{0, ..., 9}``.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    x = digits.images.reshape(len(digits.images), -1) if flatten else digits.images
    return _images(x, digits.target, 16.0)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the format of the original MNIST files), gzipped or not."""
    path = Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file: bad magic number 0x{raw[:4].hex()}")
    ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw[4:offset], ">u4"))
    if len(raw) != offset + math.prod(dims) * dtype.itemsize:
        raise ValueError(
            f"{path}: header says shape {dims} of {dtype.name}, which needs "
            f"{offset + math.prod(dims) * dtype.itemsize} bytes, but the file has {len(raw)}"
        )
    return np.frombuffer(raw, dtype, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_paths(directory: Path) -> dict[str, Path]:
    """The IDX files present in ``directory``, plain or ``.gz``."""
    found = {}
    for key, stem in _IDX_FILES.items():
        for candidate in (directory / stem, directory / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
    return found


def _read_mnist_arrays(path: Path) -> dict[str, np.ndarray]:
    if path.is_dir():
        idx = _idx_paths(path)
        if len(idx) == len(_IDX_FILES):
            return {key: read_idx(p) for key, p in idx.items()}
        if not (path / "mnist.npz").is_file():
            raise FileNotFoundError(
                f"no MNIST in directory {path.resolve()}: expected mnist.npz or the four IDX "
                f"files {sorted(_IDX_FILES.values())} (optionally .gz); "
                "load_digits() is the built-in alternative"
            )
        path = path / "mnist.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"MNIST not found at {path.resolve()}: expected an .npz with keys "
            f"{list(_MNIST_KEYS)} or a directory of IDX files; "
            "load_digits() is the built-in alternative"
        )
    with np.load(path) as npz:
        missing = [k for k in _MNIST_KEYS if k not in npz.files]
        if missing:
            raise ValueError(f"{path} lacks the Keras MNIST keys {missing} (has {npz.files})")
        return {k: npz[k] for k in _MNIST_KEYS}


def load_mnist(path: str | Path) -> tuple[Dataset, Dataset]:
    """MNIST from an ``.npz`` with Keras keys or a directory of IDX files.

    Parameters
    ----------
    path : str or Path
        An ``.npz`` holding ``x_train, y_train, x_test, y_test``, or a directory with
        ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
        and ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``) or a ``mnist.npz``.

    Returns
    -------
    (Dataset, Dataset)
        ``(train, test)``: ``x`` float32 in ``[0, 1]`` of shape ``(n, 28, 28, 1)``,
        ``y`` int32.
    """
    a = _read_mnist_arrays(Path(path))
    return _images(a["x_train"], a["y_train"], 255.0), _images(a["x_test"], a["y_test"], 255.0)

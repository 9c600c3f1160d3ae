import gzip

import numpy as np
import pytest

from bayesnn.data import Dataset, load_digits, load_mnist, read_idx

_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int16): 0x0B, np.dtype(np.float32): 0x0D}


def _write_idx(path, array, compress=False):
    """Write ``array`` in the IDX format: magic, big-endian uint32 dims, big-endian data."""
    header = bytes([0, 0, _IDX_CODES[array.dtype], array.ndim])
    dims = np.asarray(array.shape, ">u4").tobytes()
    raw = header + dims + array.astype(array.dtype.newbyteorder(">")).tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(raw)


def test_load_digits():
    data = load_digits()
    assert isinstance(data, Dataset)
    assert data.x.shape == (1797, 8, 8, 1) and data.x.dtype == np.float32
    assert data.x.min() == 0.0 and data.x.max() == 1.0
    assert data.y.dtype == np.int32 and set(np.unique(data.y)) == set(range(10))
    flat = load_digits(flatten=True)
    assert flat.x.shape == (1797, 64)
    np.testing.assert_array_equal(flat.x, data.x.reshape(1797, 64))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, dtype, compress):
    array = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    _write_idx(path, array, compress)
    out = read_idx(path)
    assert out.dtype == dtype and out.shape == (2, 3, 5)
    np.testing.assert_array_equal(out, array)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x1f\x8b\x08\x00rest")
    with pytest.raises(ValueError, match="not an IDX file: bad magic number 0x1f8b0800"):
        read_idx(tmp_path / "bad")
    _write_idx(tmp_path / "short", np.zeros((4, 3), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-2])
    with pytest.raises(ValueError, match=r"shape \(4, 3\) of uint8, which needs 24 bytes"):
        read_idx(tmp_path / "short")


def test_load_mnist_from_idx_directory(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([0, 1, 2, 3, 9], np.uint8),
        "t10k-images-idx3-ubyte.gz": np.full((2, 28, 28), 255, np.uint8),
        "t10k-labels-idx1-ubyte.gz": np.array([7, 8], np.uint8),
    }
    for name, array in arrays.items():
        _write_idx(tmp_path / name, array, compress=name.endswith(".gz"))
    train, test = load_mnist(tmp_path)
    assert train.x.shape == (5, 28, 28, 1) and test.x.shape == (2, 28, 28, 1)
    np.testing.assert_allclose(train.x[..., 0] * 255, arrays["train-images-idx3-ubyte"], atol=1e-4)
    assert np.all(test.x == 1.0)
    assert train.y.dtype == np.int32 and list(test.y) == [7, 8]


def test_load_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"MNIST not found at .*nowhere.*load_digits\(\)"):
        load_mnist(tmp_path / "nowhere.npz")
    with pytest.raises(
        FileNotFoundError, match=r"no MNIST in directory .*t10k-images.*load_digits"
    ):
        load_mnist(tmp_path)
    np.savez(tmp_path / "partial.npz", x_train=np.zeros((1, 28, 28)))
    with pytest.raises(ValueError, match=r"lacks the Keras MNIST keys \['y_train', 'x_test'"):
        load_mnist(tmp_path / "partial.npz")


def test_load_mnist_from_shared_npz(shared_data):
    train, test = load_mnist(shared_data / "mnist" / "mnist.npz")
    assert train.x.shape == (60000, 28, 28, 1) and test.x.shape == (10000, 28, 28, 1)
    assert train.y.shape == (60000,) and test.y.shape == (10000,)
    assert train.x.dtype == np.float32 and train.y.dtype == np.int32
    assert train.x.min() == 0.0 and train.x.max() == 1.0
    assert set(np.unique(test.y)) == set(range(10))

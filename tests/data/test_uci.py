import numpy as np
import pytest

from bayesnn.data import Dataset, list_uci, load_uci, uci_num_splits


def _write_uci(folder, data, features, target, splits):
    folder.mkdir(parents=True)
    np.savetxt(folder / "data.txt", data)
    np.savetxt(folder / "index_features.txt", features, fmt="%d")
    np.savetxt(folder / "index_target.txt", [target], fmt="%d")
    for k, (train, test) in enumerate(splits):
        np.savetxt(folder / f"index_train_{k}.txt", train, fmt="%d")
        np.savetxt(folder / f"index_test_{k}.txt", test, fmt="%d")


def test_boston_split_0(shared_data):
    root = shared_data / "uci"
    folder = root / "bostonHousing"
    train_rows = np.loadtxt(folder / "index_train_0.txt", dtype=int)
    test_rows = np.loadtxt(folder / "index_test_0.txt", dtype=int)
    train, test = load_uci(root, "bostonHousing", split=0)
    assert isinstance(train, Dataset)
    assert train.x.shape == (len(train_rows), 13) and test.x.shape == (len(test_rows), 13)
    assert train.y.shape == (len(train_rows), 1) and train.y.dtype == np.float32
    raw = np.loadtxt(folder / "data.txt")
    np.testing.assert_allclose(test.y[:, 0], raw[test_rows, 13], rtol=1e-6)
    assert uci_num_splits(root, "bostonHousing") == 20
    assert {"bostonHousing", "concrete", "energy", "wine-quality-red", "yacht"} <= set(
        list_uci(root)
    )


def test_any_dataset_in_the_layout(tmp_path):
    data = np.arange(24.0).reshape(6, 4)
    _write_uci(tmp_path / "toy" / "data", data, [0, 2], 3, [([0, 1, 2, 3], [4, 5]), ([5], [0])])
    (tmp_path / "notes").mkdir()
    assert list_uci(tmp_path) == ["toy"]
    assert uci_num_splits(tmp_path, "toy") == 2  # counted from the index files
    train, test = load_uci(tmp_path, "toy", split=1)
    np.testing.assert_array_equal(train.x, [[20.0, 22.0]])
    np.testing.assert_array_equal(test.y, [[3.0]])


def test_uci_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory; expected one folder per"):
        list_uci(tmp_path / "missing")
    _write_uci(tmp_path / "toy", np.ones((3, 2)), [0], 1, [([0, 1], [2])])
    with pytest.raises(FileNotFoundError, match=r"no UCI dataset 'boston'.*found: \['toy'\]"):
        load_uci(tmp_path, "boston")
    with pytest.raises(ValueError, match=r"split 3 out of range: toy has 1 splits \(0 to 0\)"):
        load_uci(tmp_path, "toy", split=3)
    (tmp_path / "toy" / "n_splits.txt").write_text("2\n")
    with pytest.raises(FileNotFoundError, match="split 1 of toy: missing index file"):
        load_uci(tmp_path, "toy", split=1)

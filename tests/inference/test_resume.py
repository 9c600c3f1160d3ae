"""Long runs survive interruption: kill a fit midway, resume it, get the same answer."""

import pickle
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

import bayesnn as bnn

PROBLEM = textwrap.dedent(
    """
    import numpy as np
    from flax import nnx
    import bayesnn as bnn

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1024, 4)).astype(np.float32)
    y = np.sin(x[:, :1]) + 0.1 * rng.normal(size=(1024, 1)).astype(np.float32)
    net = bnn.models.MLP(4, (64, 64), 1, rngs=nnx.Rngs(0))
    model = bnn.BNN(net, likelihood=bnn.likelihoods.Gaussian(0.1))
    data = (x, y)
    method = bnn.MAP(epochs=200, batch_size=32, learning_rate=1e-3)
    """
)
SCRIPT = PROBLEM + (
    "import sys\nbnn.fit(model, data, method, key=7, checkpoint=sys.argv[1], progress=False)\n"
)


def _problem():
    namespace = {}
    exec(PROBLEM, namespace)
    return namespace["model"], namespace["data"], namespace["method"]


def test_killed_run_resumes_to_the_same_result(tmp_path):
    path = tmp_path / "run.ckpt"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(path)])
    deadline = time.time() + 300
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert path.exists(), "the subprocess never wrote a checkpoint"
    with open(path, "rb") as f:
        saved = pickle.load(f)
    assert 0 < saved["done"] < saved["num_chunks"], "the kill did not land midway"

    model, data, method = _problem()
    resumed = bnn.fit(model, data, method, key=7, checkpoint=path)
    fresh = bnn.fit(model, data, method, key=7)
    assert jax.tree.all(jax.tree.map(np.array_equal, resumed.point(), fresh.point()))
    assert resumed.info["history"] == fresh.info["history"]


def test_checkpoint_of_another_run_is_refused(tmp_path):
    model, data, method = _problem()
    small = bnn.MAP(epochs=2, batch_size=512)
    bnn.fit(model, data, small, key=0, checkpoint=tmp_path / "a.ckpt")
    with pytest.raises(ValueError, match="belongs to a different run"):
        bnn.fit(model, data, small, key=1, checkpoint=tmp_path / "a.ckpt")
    with pytest.raises(ValueError, match="belongs to a different run"):
        bnn.fit(model, data, bnn.MAP(epochs=3, batch_size=512), key=0,
                checkpoint=tmp_path / "a.ckpt")


def test_finished_checkpoint_returns_the_same_posterior(tmp_path):
    model, data, _ = _problem()
    method = bnn.MAP(epochs=3, batch_size=512)
    first = bnn.fit(model, data, method, key=0, checkpoint=tmp_path / "b.ckpt")
    again = bnn.fit(model, data, method, key=0, checkpoint=tmp_path / "b.ckpt")
    assert jax.tree.all(jax.tree.map(np.array_equal, first.point(), again.point()))



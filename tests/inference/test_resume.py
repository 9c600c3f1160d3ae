"""Long runs survive interruption: kill a fit midway, resume it, get the same answer."""

import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
from flax import nnx

import bayesnn as bnn
from bayesnn import serialization
from bayesnn.inference import driver
from bayesnn.inference.hyper import GammaPrecision, Hierarchical

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
    saved, _ = serialization.read(path, driver._CHECKPOINT_FORMAT, "checkpoint")
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


def _tiny_model(learn_scale=False, dropout=0.0):
    net = bnn.models.MLP(2, (4,), 1, dropout=dropout, rngs=nnx.Rngs(0))
    return bnn.BNN(net, bnn.priors.Normal(1.0),
                   bnn.likelihoods.Gaussian(scale=0.5, learn_scale=learn_scale))


_HIER = Hierarchical(noise=GammaPrecision())
_SG = {"batch_size": 16, "num_warmup": 0, "num_samples": 20, "thinning": 2, "num_chains": 2}
_CHAINS = {"num_samples": 20, "num_warmup": 0, "num_chains": 2}
# Every method that checkpoints, each run in at least 2 chunks (VI and MAP: 64 epochs of
# 4 steps per chunk; samplers: 20 chunks), with the model's settings it needs.
RESUMABLE = {
    "MAP": ({}, bnn.MAP(epochs=80, batch_size=16)),
    "MCDropout": ({"dropout": 0.2},
                  bnn.MCDropout(bnn.MAP(epochs=80, batch_size=16), num_samples=2)),
    "Ensemble": ({}, bnn.Ensemble(bnn.MAP(epochs=80, batch_size=16), size=2)),
    "MeanFieldVI": ({}, bnn.MeanFieldVI(epochs=80, batch_size=16, num_samples=4)),
    "LowRankVI": ({}, bnn.LowRankVI(rank=2, epochs=80, batch_size=16, num_samples=4)),
    "SGLD": ({}, bnn.SGLD(1e-4, **_SG, init="random")),
    "PSGLD": ({}, bnn.PSGLD(1e-5, **_SG, init="random")),
    "SGHMC-hyper": ({"learn_scale": True}, bnn.SGHMC(1e-4, **_SG, hyper=_HIER,
                                                     init="random")),
    "CoordinateGibbs": ({}, bnn.CoordinateGibbs(**_CHAINS)),
    "LatentGibbs": ({}, bnn.LatentGibbs(**_CHAINS)),
    "HierarchicalNUTS": ({"learn_scale": True},
                         bnn.HierarchicalNUTS(_HIER, num_samples=20, num_warmup=0)),
}
# Each case compiles its method three times (5-60 s on CPU): by default run one with PRNG
# keys in its state and one with draw buffers, momenta and hyperparameters.
FAST = {"MeanFieldVI", "SGHMC-hyper"}


def _compared(post):
    """What must survive an interruption: the draws and the per-draw or per-epoch records."""
    keys = ("history", "sample_stats", "hyperparameters")
    return post.draws, {k: post.info[k] for k in keys if k in post.info}


@pytest.mark.parametrize("name", [
    name if name in FAST else pytest.param(name, marks=pytest.mark.slow) for name in RESUMABLE
])
def test_run_interrupted_after_a_checkpoint_resumes_bit_identically(name, tmp_path,
                                                                    monkeypatch, ctrl_c_after):
    settings, method = RESUMABLE[name]
    model = _tiny_model(**settings)
    data, _ = bnn.data.linear_regression(n=50, num_features=2, noise=0.5, key=0)
    path = tmp_path / "run.ckpt"
    save, saved = driver._save, []

    def record_save(checkpoint, state, outputs, done, *rest):
        saved.append(done)
        save(checkpoint, state, outputs, done, *rest)

    ctrl_c_after(1)  # as if pressed just after the first checkpoint
    with pytest.warns(UserWarning, match="interrupted after"):
        part = bnn.fit(model, data, method, key=3, checkpoint=path)
    assert part.info["interrupted"]
    monkeypatch.setattr(driver, "_save", record_save)
    resumed = bnn.fit(model, data, method, key=3, checkpoint=path)
    monkeypatch.undo()
    fresh = bnn.fit(model, data, method, key=3)

    assert saved[0] == 2, saved  # it went on from where it stopped
    assert not resumed.info["interrupted"]
    jax.tree.map(np.testing.assert_array_equal, _compared(resumed), _compared(fresh))

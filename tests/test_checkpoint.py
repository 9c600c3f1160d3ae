"""Checkpoints: files that cannot run code, and runs that resume in a new process."""

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from flax import nnx

import bayesnn as bnn
from bayesnn import serialization
from bayesnn.inference import driver
from bayesnn.inference.base import _fingerprint

# A MAP run of 25 chunks (8 epochs of 32 steps each) with an optax transformation: the
# fingerprint of old held its memory address, so such a run could not resume elsewhere.
PROBLEM = textwrap.dedent(
    """
    import numpy as np
    import optax
    from flax import nnx
    import bayesnn as bnn

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1024, 4)).astype(np.float32)
    y = np.sin(x[:, :1]) + 0.1 * rng.normal(size=(1024, 1)).astype(np.float32)
    net = bnn.models.MLP(4, (32,), 1, rngs=nnx.Rngs(0))
    model = bnn.BNN(net, likelihood=bnn.likelihoods.Gaussian(0.1))
    method = bnn.MAP(optimizer=optax.adam(optax.exponential_decay(1e-2, 100, 0.9)),
                     epochs=200, batch_size=32)
    """
)
RUN = PROBLEM + textwrap.dedent(
    """
    import sys
    post = bnn.fit(model, (x, y), method, key=7, checkpoint=sys.argv[1])
    if len(sys.argv) > 2:
        post.save(sys.argv[2])
    """
)


def _python(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(Path(bnn.__file__).parents[1])}  # this bayesnn
    return subprocess.Popen([sys.executable, "-c", *args], env=env, **kwargs)


def _problem():
    namespace = {}
    exec(PROBLEM, namespace)
    return namespace["model"], (namespace["x"], namespace["y"]), namespace["method"]


@pytest.mark.slow
def test_a_run_with_an_optax_transformation_killed_midway_resumes_in_a_new_process(tmp_path):
    path, saved = tmp_path / "run.ckpt", tmp_path / "post.bnn"
    first = _python(RUN, str(path))
    deadline = time.time() + 300
    while not path.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    first.wait()
    header, _ = serialization.read(path, driver._CHECKPOINT_FORMAT, "checkpoint")
    assert 0 < header["done"] < header["num_chunks"], "the kill did not land midway"

    second = _python(RUN, str(path), str(saved), stderr=subprocess.PIPE, text=True)
    _, err = second.communicate(timeout=600)
    assert second.returncode == 0, err
    assert f"resuming MAP from chunk {header['done'] + 1} of {header['num_chunks']}" in err

    model, data, method = _problem()
    fresh = bnn.fit(model, data, method, key=7)
    resumed = bnn.Posterior.load(saved)
    jax.tree.map(np.testing.assert_array_equal, resumed.draws, fresh.draws)
    assert resumed.info["history"] == fresh.info["history"]
    assert isinstance(resumed.method, serialization.Unbuilt)  # an optax transformation
    assert "scale_by_adam" in resumed.method and "exponential_decay" in resumed.method


def _tiny():
    net = bnn.models.MLP(2, (4,), 1, rngs=nnx.Rngs(0))
    model = bnn.BNN(net, likelihood=bnn.likelihoods.Gaussian(0.5))
    data, _ = bnn.data.linear_regression(n=50, num_features=2, noise=0.5, key=0)
    return model, data


def test_the_fingerprint_is_the_configuration_not_the_objects():
    model, data = _tiny()

    def fp(**kwargs):
        return _fingerprint(model, data, bnn.MAP(**kwargs))

    # Equal configurations, distinct objects (other addresses): the same run.
    assert fp(optimizer=optax.adam(1e-2)) == fp(optimizer=optax.adam(1e-2))
    assert fp(optimizer="sgd", learning_rate=optax.cosine_decay_schedule(0.1, 50)) == fp(
        optimizer="sgd", learning_rate=optax.cosine_decay_schedule(0.1, 50))
    assert fp(learning_rate=lambda t: 0.5 ** t) == fp(learning_rate=lambda t: 0.5 ** t)
    assert " at 0x" not in fp(optimizer=optax.adam(1e-2), learning_rate=lambda t: t)
    # A hyperparameter, a schedule's constant or the optimiser differs: another run.
    differ = serialization.fingerprint_difference
    assert differ(fp(optimizer=optax.adam(1e-2)), fp(optimizer=optax.adam(1e-3))) == ["method"]
    assert differ(fp(optimizer=optax.adam(1e-2)), fp(optimizer=optax.sgd(1e-2))) == ["method"]
    assert fp(learning_rate=lambda t: 0.5 ** t) != fp(learning_rate=lambda t: 0.6 ** t)
    other = bnn.BNN(bnn.models.MLP(2, (4,), 1, rngs=nnx.Rngs(1)),
                    likelihood=bnn.likelihoods.Gaussian(0.5))
    assert differ(fp(), _fingerprint(other, data, bnn.MAP())) == ["model"]


def test_the_fingerprint_is_the_same_in_a_new_process():
    code = textwrap.dedent(
        """
        import optax
        from flax import nnx
        import bayesnn as bnn
        from bayesnn.inference.base import _fingerprint
        net = bnn.models.MLP(2, (4,), 1, rngs=nnx.Rngs(0))
        model = bnn.BNN(net, likelihood=bnn.likelihoods.Gaussian(0.5))
        data, _ = bnn.data.linear_regression(n=32, num_features=2, noise=0.5, key=0)
        method = bnn.SGLD(1e-4, schedule=optax.linear_schedule(1.0, 0.1, 100),
                          init=bnn.MAP(optimizer=optax.adamw(1e-3, weight_decay=0.1)), num_chains=1)
        print(_fingerprint(model, data, method))
        """
    )
    ns = {}
    exec(code.replace("print(_fingerprint", "result = (_fingerprint"), ns)
    out = _python(code, stdout=subprocess.PIPE, text=True)
    printed, _ = out.communicate(timeout=300)
    assert printed.strip() == ns["result"]
    assert json.loads(ns["result"])["method"]["config"]["class"] == "bayesnn.SGLD"


def test_resume_and_a_finished_run_say_so(tmp_path, capfd, ctrl_c_after):
    model, data = _tiny()
    method = bnn.MAP(epochs=80, batch_size=16)  # 2 chunks of 64 and 16 epochs
    path = tmp_path / "run.ckpt"
    ctrl_c_after(1)
    with pytest.warns(UserWarning, match="interrupted"):
        bnn.fit(model, data, method, key=0, checkpoint=path)
    capfd.readouterr()
    bnn.fit(model, data, method, key=0, checkpoint=path)
    assert f"resuming MAP from chunk 2 of 2 ({path})" in capfd.readouterr().err
    bnn.fit(model, data, method, key=0, checkpoint=path)
    err = capfd.readouterr().err
    assert f"MAP: {path} holds a finished run; returning its saved result" in err


def test_restore_is_quiet_without_progress(tmp_path, capfd):
    checkpoint = driver.Checkpoint(str(tmp_path / "c"), 1, "a run")
    state = {"w": jax.numpy.arange(3.0), "key": jax.random.key(1)}
    driver._save(checkpoint, state, [{"draws": np.ones((1, 3))}], 1, jax.random.key(0), 2)
    like = {"w": jax.numpy.zeros(3), "key": jax.random.key(2)}
    restored, outputs, done = driver._restore(checkpoint, like, jax.random.key(0), 2,
                                              progress=False)
    assert capfd.readouterr().err == "" and done == 1
    jax.tree.map(np.testing.assert_array_equal, outputs, [{"draws": np.ones((1, 3))}])
    np.testing.assert_array_equal(restored["w"], state["w"])
    assert np.array_equal(jax.random.key_data(restored["key"]), jax.random.key_data(state["key"]))
    driver._restore(checkpoint, like, jax.random.key(0), 2, desc="SGLD")
    assert capfd.readouterr().err == f"resuming SGLD from chunk 2 of 2 ({checkpoint.path})\n"
    with pytest.raises(ValueError, match=r"different run \(its key differs\)"):
        driver._restore(checkpoint, like, jax.random.key(5), 2)
    with pytest.raises(ValueError, match=r"leaf 'w': saved shape and dtype \(\(3,\)"):
        driver._restore(checkpoint, {"w": jax.numpy.zeros(4), "key": jax.random.key(2)},
                        jax.random.key(0), 2)


class _WritesAFile:
    """Unpickling this runs ``open(marker, "w").write(...)``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


@pytest.mark.parametrize("protocol", [0, pickle.HIGHEST_PROTOCOL])
def test_a_crafted_pickle_at_the_checkpoint_path_runs_nothing(tmp_path, protocol):
    marker, path = tmp_path / "marker", tmp_path / "run.ckpt"
    path.write_bytes(pickle.dumps({"format": driver._CHECKPOINT_FORMAT,
                                   "payload": _WritesAFile(marker)}, protocol=protocol))
    model, data = _tiny()
    reason = "pickle.*no longer unpickles.*Delete it" if protocol else "not a zip archive"
    with pytest.raises(ValueError, match=f"not a bayesnn checkpoint file.*{reason}"):
        bnn.fit(model, data, bnn.MAP(epochs=2), key=0, checkpoint=path)
    assert not marker.exists()


def test_a_damaged_or_foreign_checkpoint_is_refused(tmp_path):
    model, data = _tiny()
    path = tmp_path / "run.ckpt"
    method = bnn.MAP(epochs=2, batch_size=16)
    bnn.fit(model, data, method, key=0, checkpoint=path)
    header, arrays = serialization.read(path, driver._CHECKPOINT_FORMAT, "checkpoint")
    content = {k: v for k, v in header.items() if k not in ("format", "versions")}
    serialization.write(path, "bayesnn.checkpoint/3", content, arrays)
    with pytest.raises(ValueError, match=r"in format bayesnn.checkpoint/4 \(found format "
                                         r"'bayesnn.checkpoint/3'\)"):
        bnn.fit(model, data, method, key=0, checkpoint=path)
    content["state"][0][1]["shape"] = [9]
    serialization.write(path, driver._CHECKPOINT_FORMAT, content, arrays)
    with pytest.raises(ValueError, match="has shape .* its header says"):
        bnn.fit(model, data, method, key=0, checkpoint=path)

"""Several processes (the multi-host recipe of docs/scale.md, on one machine): two processes
of two CPU devices each, joined by ``jax.distributed``, give the draws of one process with
four devices; and only process 0 writes files.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

import bayesnn as bnn

SCRIPT = Path(__file__).with_name("multiprocess_run.py")
TIMEOUT = 900  # seconds for all the processes together (5 min on 2 cores shared with others)
# Different programs (each device compiles for its own chains; the 4-device process does
# not talk to another process), so draws agree to float32 rounding, amplified a little by
# LatentGibbs's Cholesky solves (see test_multidevice.py); two chains differ by O(1).
TOL = 1e-5


def _close(a, b) -> bool:
    return np.max(np.abs(a - b)) <= TOL * np.max(np.abs(b))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(out: Path, num_devices: int, num_processes: int, process_id: int, port: int):
    out.mkdir(exist_ok=True)
    env = os.environ | {
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={num_devices}",
    }
    with open(out / f"log{process_id}.txt", "w") as log:
        return subprocess.Popen(
            [sys.executable, str(SCRIPT), str(out), str(num_processes), str(process_id),
             str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait(procs: dict, deadline: float) -> None:
    """Wait for every process until ``deadline``; on any failure or timeout, kill those
    still running (by their PIDs) and fail with the failed process's log."""
    try:
        for (out, pid), proc in procs.items():
            try:
                code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                code = "timed out"
            log = (out / f"log{pid}.txt").read_text()[-3000:]
            assert code == 0, f"{out.name} process {pid}: {code}\n{log}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_two_processes_give_the_draws_of_one(tmp_path):
    one, two, port = tmp_path / "one", tmp_path / "two", _free_port()
    deadline = time.monotonic() + TIMEOUT
    procs = {(one, 0): _launch(one, 4, 1, 0, 0)}
    procs |= {(two, i): _launch(two, 2, 2, i, port) for i in (0, 1)}
    _wait(procs, deadline)

    reference = dict(np.load(one / "draws0.npz"))
    ours = [dict(np.load(two / f"draws{i}.npz")) for i in (0, 1)]
    info = [json.loads((two / f"info{i}.json").read_text()) for i in (0, 1)]
    # Every process sees all four devices and ends with the whole posterior.
    for seen in [json.loads((one / "info0.json").read_text()), *info]:
        assert {k: seen[k] for k in ("visible", "num_devices")} == {
            "visible": 4, "num_devices": {"sgld": 4, "sgld_one_chain": 4, "ensemble": 4,
                                          "latent_gibbs": 4}}
    assert ours[0].keys() == ours[1].keys() == reference.keys()
    for name in reference:
        np.testing.assert_array_equal(ours[1][name], ours[0][name], err_msg=name)
        assert _close(ours[0][name], reference[name]), (
            name, np.max(np.abs(ours[0][name] - reference[name])))
    # The tolerance is meaningful: two chains of one run are far apart.
    assert not _close(reference["sgld/0"][0], reference["sgld/0"][1])
    # The run stopped midway resumed to the draws of the run never stopped; the saved
    # files load.
    assert [seen["stopped_draws"] for seen in info] == [1, 1]
    for name in [k for k in reference if k.startswith("sgld/")]:
        np.testing.assert_array_equal(ours[0][name.replace("sgld", "sgld_resumed")],
                                      ours[0][name])
    saved = bnn.Posterior.load(two / "ensemble.bnn")
    leaves = [a for k, a in sorted(ours[0].items()) if k.startswith("ensemble/")
              and k != "ensemble/predicted_mean"]
    for a, b in zip(jax.tree.leaves(saved.draws), leaves, strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    assert np.load(two / "best.npz").files
    # A checkpoint that process 1 cannot see is refused by both, not resumed by one.
    assert not (two / "unshared1.ckpt").exists()
    for seen in info:
        assert re.search(r"\[[1-9]\d*, 0\] chunks done", seen["unshared_checkpoint"])


def _model():
    net = bnn.models.MLP(2, (4,), 1, rngs=nnx.Rngs(0))
    return bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=0.5))


@pytest.mark.parametrize("process", [0, 1])
def test_only_process_zero_writes_files(tmp_path, monkeypatch, process):
    # As process 1 of a run across hosts: it computes what process 0 does, writes nothing.
    monkeypatch.setattr(jax, "process_index", lambda: process)
    data, _ = bnn.data.linear_regression(32, 2, 0.5, key=0)
    sgld = bnn.SGLD(step_size=1e-3, num_samples=4, num_warmup=4, num_chains=1, batch_size=16,
                    init="random")
    post = bnn.fit(_model(), data, sgld, key=0, progress=False, checkpoint=tmp_path / "run.ckpt")
    post.save(tmp_path / "post.bnn")
    bnn.fit(_model(), data, bnn.MAP(epochs=2, checkpoint_path=str(tmp_path / "best.npz")),
            key=0, progress=False)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == (["best.npz", "post.bnn", "run.ckpt"] if process == 0 else [])
    assert post.draws["net"]["layers"][0]["kernel"].shape[:2] == (1, 4)

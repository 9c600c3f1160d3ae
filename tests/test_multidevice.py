"""Chains across devices: four CPU devices give the draws of one. A single chain splits its
minibatch rows over the devices instead (data parallelism). Several processes:
``test_multiprocess.py``.

JAX fixes its device count at start-up, so each configuration runs in a subprocess
(``XLA_FLAGS=--xla_force_host_platform_device_count``); this file is also the script that
subprocess runs.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

# Each device compiles its own program, here for one chain instead of four; XLA then
# specialises some size-1 axes and may associate a few float32 sums differently, so draws
# agree to a few ulps, not bitwise (6 chains on 3 devices, 2 per device, agreed bitwise).
# LatentGibbs draws each layer through a Cholesky solve, which amplifies those ulps by the
# conditioning of the system: measured 6e-6 on draws of size ~2, after 20 sweeps. Hence a
# tolerance relative to the largest draw; two different chains differ by O(1).
TOL = 1e-5


def _close(a, b) -> bool:
    return np.max(np.abs(a - b)) <= TOL * np.max(np.abs(b))


def _fit_all(out: str) -> None:
    """Fit each multi-chain method on a tiny model; save draws and ``num_devices``."""
    import jax
    from flax import nnx

    import bayesnn as bnn
    from bayesnn.inference.sharding import num_chain_devices, shard_chains

    data, _ = bnn.data.linear_regression(48, 2, 0.5, key=0)

    def model():
        net = bnn.models.MLP(2, (4,), 1, rngs=nnx.Rngs(0))
        return bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=0.5))

    chains = dict(num_samples=10, num_warmup=10, num_chains=4)
    methods = {
        # from random starts: the ensemble start is the "ensemble" entry's training, and
        # costs a second MAP compile (8% of this file's CPU time)
        "sgld": bnn.SGLD(step_size=1e-3, batch_size=16, thinning=5, init="random", **chains),
        "sgld_one_chain": bnn.SGLD(step_size=1e-3, batch_size=16, thinning=5,
                                   **(chains | {"num_chains": 1}), init="random"),
        "ensemble": bnn.Ensemble(bnn.MAP(epochs=5, batch_size=16), size=4),
        "latent_gibbs": bnn.LatentGibbs(**chains),
    }
    arrays, devices = {}, {}
    for name, method in methods.items():
        post = bnn.fit(model(), data, method, key=1, progress=False)
        for i, leaf in enumerate(jax.tree.leaves(post.draws)):
            arrays[f"{name}/{i}"] = np.asarray(leaf)
        devices[name] = post.info["num_devices"]
    for n in (5, 6):  # chain counts that 4 does not divide
        devices[f"{n}_chains"] = num_chain_devices(shard_chains(np.zeros((n, 3))))
    np.savez(out, **arrays)
    with open(out + ".json", "w") as f:
        json.dump({"visible": len(jax.devices()), "used": devices}, f)


def _launch(out, num_devices: int) -> subprocess.Popen:
    env = os.environ | {
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={num_devices}",
    }
    return subprocess.Popen([sys.executable, __file__, str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _results(procs: list, out) -> tuple[dict, dict]:
    """Wait for ``procs`` (killing them on failure) and load the draws saved to ``out``."""
    try:
        for proc in procs:
            log, _ = proc.communicate(timeout=600)
            assert proc.returncode == 0, log[-3000:]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    with open(str(out) + ".json") as f:
        return dict(np.load(out)), json.load(f)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both configurations, run at the same time (two processes)."""
    tmp = tmp_path_factory.mktemp("multidevice")
    procs = {n: _launch(tmp / f"devices{n}.npz", n) for n in (1, 4)}
    try:
        return {n: _results([proc], tmp / f"devices{n}.npz") for n, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()


def test_four_devices_give_the_draws_of_one(runs):
    (one, _), (four, _) = runs[1], runs[4]
    assert one.keys() == four.keys() and len(one) > 0
    for name in one:
        assert _close(four[name], one[name]), (name, np.max(np.abs(four[name] - one[name])))


def test_chains_are_split_over_the_devices(runs):
    assert runs[1][1] == {"visible": 1, "used": {
        "sgld": 1, "sgld_one_chain": 1, "ensemble": 1, "latent_gibbs": 1, "5_chains": 1,
        "6_chains": 1}}
    # 5 chains: only 1 divides them (left in place); 6 chains: the largest divisor, 3.
    # One chain: its batch of 16 rows split over the 4 devices.
    assert runs[4][1] == {"visible": 4, "used": {
        "sgld": 4, "sgld_one_chain": 4, "ensemble": 4, "latent_gibbs": 4, "5_chains": 1,
        "6_chains": 3}}


def test_different_keys_differ_beyond_the_tolerance(runs):
    # The tolerance above is meaningful: two chains of one run are far apart.
    draws = runs[1][0]["sgld/0"]
    assert not _close(draws[0], draws[1])


if __name__ == "__main__":
    _fit_all(sys.argv[1])

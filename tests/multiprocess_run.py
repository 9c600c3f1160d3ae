"""The script ``tests/test_multiprocess.py`` starts: one of ``num_processes`` processes that
share their CPU devices through ``jax.distributed`` (coordinator on ``127.0.0.1:port``), or
a single process (``num_processes`` 1), fitting a tiny model with the multi-chain methods.

Usage: ``python tests/multiprocess_run.py OUT NUM_PROCESSES PROCESS_ID PORT``. Every
process writes the draws it ends with to ``OUT/draws<process_id>.npz`` (``np.savez``, not
through bayesnn, which writes from process 0 only) and what it saw to
``OUT/info<process_id>.json``; the fits' own files (checkpoint, best weights, saved
posterior) go to ``OUT``.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np


def main(out: Path, num_processes: int, process_id: int, port: int) -> None:
    import jax

    if num_processes > 1:
        jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=num_processes,
                                   process_id=process_id)
    from flax import nnx

    import bayesnn as bnn

    data, _ = bnn.data.linear_regression(48, 2, 0.5, key=0)

    def model():
        net = bnn.models.MLP(2, (4,), 1, rngs=nnx.Rngs(0))
        return bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=0.5))

    chains = dict(num_samples=10, num_warmup=10, num_chains=4, batch_size=16, thinning=5)
    fits = {
        # step size from the curvature, chains started at an ensemble of MAP fits
        "sgld": (bnn.SGLD(**chains), {}),
        "sgld_one_chain": (bnn.SGLD(step_size=1e-3, init="random",
                                    **(chains | {"num_chains": 1})), {}),
        "ensemble": (bnn.Ensemble(bnn.MAP(epochs=5, batch_size=16,
                                          checkpoint_path=str(out / "best.npz")), size=4), {}),
        "latent_gibbs": (bnn.LatentGibbs(num_samples=10, num_warmup=10, num_chains=4), {}),
    }
    arrays, info = {}, {"visible": len(jax.devices()), "num_devices": {}, "seconds": {}}
    for name, (method, kwargs) in fits.items():
        start = time.perf_counter()
        post = bnn.fit(model(), data, method, key=1, progress=False, **kwargs)
        for i, leaf in enumerate(jax.tree.leaves(post.draws)):
            arrays[f"{name}/{i}"] = np.asarray(leaf)
        info["num_devices"][name] = post.info["num_devices"]
        if name == "ensemble":
            arrays["ensemble/predicted_mean"] = np.asarray(post.predict(data.x).mean)
            post.save(out / "ensemble.bnn")
        info["seconds"][name] = time.perf_counter() - start
    # The SGLD run stopped after its second chunk (as by Ctrl-C on every host), then run
    # again: every process resumes from the file process 0 wrote.
    from bayesnn.inference import driver

    def save_then_stop(checkpoint, state, outputs, done, *rest):
        save(checkpoint, state, outputs, done, *rest)
        if done == 2:
            raise KeyboardInterrupt

    save, driver._save = driver._save, save_then_stop
    cut = bnn.fit(model(), data, fits["sgld"][0], key=1, progress=False,
                  checkpoint=out / "cut.ckpt")
    driver._save = save
    info["stopped_draws"] = cut.num_draws
    post = bnn.fit(model(), data, fits["sgld"][0], key=1, progress=False,
                   checkpoint=out / "cut.ckpt")
    for i, leaf in enumerate(jax.tree.leaves(post.draws)):
        arrays[f"sgld_resumed/{i}"] = np.asarray(leaf)
    if num_processes > 1:
        # A checkpoint that only process 0 sees (paths not shared): every process refuses.
        quick = bnn.SGLD(step_size=1e-3, init="random", **(chains | {"num_samples": 2}))
        path = out / f"unshared{process_id}.ckpt"
        bnn.fit(model(), data, quick, key=2, progress=False, checkpoint=path)
        try:
            bnn.fit(model(), data, quick, key=2, progress=False, checkpoint=path)
        except ValueError as err:
            info["unshared_checkpoint"] = str(err)
    np.savez(out / f"draws{process_id}.npz", **arrays)
    (out / f"info{process_id}.json").write_text(json.dumps(info))


if __name__ == "__main__":
    main(Path(sys.argv[1]), *map(int, sys.argv[2:]))

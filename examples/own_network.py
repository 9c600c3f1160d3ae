"""Your own Flax NNX module as a Bayesian neural network, end to end.

A plain ``nnx.Module`` of your own (``nnx.Linear`` layers and NNX's own ``nnx.Dropout``,
no bayesnn attributes, no ``key`` argument) on the 1-D regression toy with a gap in its
inputs: a MAP network, Monte Carlo dropout (the module's dropout driven by the library's
keys) and SGLD started from MAP weights. Writes ``summary.json`` to ``--out``.

    python examples/own_network.py --out out/own_network
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from flax import nnx

import bayesnn as bnn


class Net(nnx.Module):
    """Two tanh hidden layers with dropout: an ordinary NNX module."""

    def __init__(self, width: int, rate: float, *, rngs: nnx.Rngs):
        self.hidden1 = nnx.Linear(1, width, rngs=rngs)
        self.hidden2 = nnx.Linear(width, width, rngs=rngs)
        self.dropout = nnx.Dropout(rate, rngs=rngs)
        self.head = nnx.Linear(width, 1, rngs=rngs)

    def __call__(self, x):
        x = self.dropout(nnx.tanh(self.hidden1(x)))
        return self.head(self.dropout(nnx.tanh(self.hidden2(x))))


def main(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = bnn.data.gap_regression(n=args.n, noise=args.noise, key=args.seed)
    grid = bnn.data.gap_regression_grid(num=200).x
    gap = np.abs(grid[:, 0]) < 0.4
    on_data = (np.abs(grid[:, 0]) > 0.6) & (np.abs(grid[:, 0]) < 1.4)

    net = Net(args.width, args.dropout, rngs=nnx.Rngs(args.seed))
    model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=args.noise))
    map_config = bnn.MAP(learning_rate=1e-2, epochs=args.epochs, batch_size=None)
    fitted = {
        "MAP": bnn.fit(model, train, map_config, key=args.seed, progress=args.progress),
        "MCDropout": bnn.fit(model, train, bnn.MCDropout(map_config, num_samples=args.samples),
                             key=args.seed, progress=args.progress),
    }
    sgld = bnn.SGLD(step_size=args.sgld_step, batch_size=args.batch_size,
                    num_warmup=args.sgld_warmup, num_samples=args.samples,
                    thinning=args.thinning, init=map_config, num_chains=1)
    fitted["SGLD"] = bnn.fit(model, train, sgld, key=args.seed, progress=args.progress)

    summary = {}
    for name, post in fitted.items():
        std = np.asarray(post.predict(grid).std[:, 0])
        summary[name] = {"seconds": round(post.info["seconds"], 2),
                         "std_in_gap": float(std[gap].mean()),
                         "std_on_data": float(std[on_data].mean())}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/own_network")
    p.add_argument("--n", type=int, default=80, help="training points")
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--width", type=int, default=50)
    p.add_argument("--dropout", type=float, default=0.1, help="dropout rate")
    p.add_argument("--epochs", type=int, default=2000, help="MAP epochs (full batch)")
    p.add_argument("--samples", type=int, default=200, help="posterior draws per method")
    p.add_argument("--batch-size", type=int, default=20, help="SGLD minibatch")
    p.add_argument("--sgld-step", type=float, default=1e-5)
    p.add_argument("--sgld-warmup", type=int, default=5000)
    p.add_argument("--thinning", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

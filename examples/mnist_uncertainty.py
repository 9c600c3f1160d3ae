"""MNIST (or scikit-learn's digits): SGLD vs MAP on the classic MLP, with OOD inputs.

Out-of-distribution inputs are rotated digits and uniform-noise images; the report gives
accuracy, NLL, ECE and the OOD-detection AUROC of predictive entropy and mutual
information, with reliability diagrams and entropy histograms. Without ``--data`` (a path
to ``mnist.npz`` or the IDX files) it runs on scikit-learn's 8×8 digits.

    python examples/mnist_uncertainty.py --data ../shared/data/mnist/mnist.npz --out out/mnist
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from flax import nnx

import bayesnn as bnn
from bayesnn import report


def load(args):
    """(train, test, image side) from MNIST at ``--data`` or the built-in digits."""
    if args.data:
        train, test = bnn.data.load_mnist(args.data)
    else:
        digits = bnn.data.load_digits()
        train, test = bnn.data.train_test_split(digits, test_fraction=0.3, key=args.seed)
    take = lambda d, n: bnn.data.Dataset(d.x[:n], d.y[:n])  # noqa: E731
    return take(train, args.train_size), take(test, args.test_size), train.x.shape[1]


def ood_inputs(test, seed: int) -> np.ndarray:
    """Test digits rotated by 90° and uniform-noise images, as many as the test set."""
    rng = np.random.default_rng(seed)
    rotated = np.rot90(test.x, k=1, axes=(1, 2))
    noise = rng.uniform(size=test.x.shape).astype(np.float32)
    half = len(test.x) // 2
    return np.concatenate([rotated[:half], noise[: len(test.x) - half]])


def main(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, test, side = load(args)
    features = side * side
    net = bnn.models.MLP(features, (args.width, args.width), 10, dropout=0.2,
                         rngs=nnx.Rngs(args.seed))
    model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Categorical())
    map_config = bnn.MAP(epochs=args.epochs, batch_size=args.batch_size, learning_rate=1e-3)
    posteriors = {
        "MAP": bnn.fit(model, train, map_config, key=args.seed, progress=args.progress),
        "SGLD": bnn.fit(model, train, bnn.SGLD(
            step_size=args.sgld_step, batch_size=args.batch_size, num_warmup=args.sgld_warmup,
            num_samples=args.samples, thinning=args.thinning, init=map_config, num_chains=1
        ), key=args.seed, progress=args.progress),
    }
    rep = report.compare(posteriors, test, ood=ood_inputs(test, args.seed))
    rep.save(out)
    print(rep.to_markdown())
    summary = rep.to_dict()
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="mnist.npz or IDX directory (default: digits)")
    p.add_argument("--out", default="out/mnist")
    p.add_argument("--train-size", type=int, default=60000)
    p.add_argument("--test-size", type=int, default=10000)
    p.add_argument("--width", type=int, default=512, help="hidden units (the classic MLP: 512)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--sgld-step", type=float, default=1e-6)
    p.add_argument("--sgld-warmup", type=int, default=500)
    p.add_argument("--thinning", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

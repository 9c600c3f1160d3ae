"""Transfer learning, four ways: digits 0–4 → digits 5–9 from a small labelled set.

A CNN is trained on digits 0–4 (MNIST at ``--data``, else scikit-learn's digits), then
reused for digits 5–9 with only ``--few`` labelled examples: freeze all and fit a new
(Bayesian) head; keep only the early layers; fine-tune everything with a prior centred at
the trained weights; or train from scratch. Each is fitted by MAP and by SGLD (started at
the MAP weights) and compared on accuracy, NLL and ECE. Writes ``report.md``/``.json``.

    python examples/transfer_learning.py --out out/transfer
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import bayesnn as bnn
from bayesnn import report, transfer


def load(args):
    if args.data:
        train, test = bnn.data.load_mnist(args.data)
    else:
        train, test = bnn.data.train_test_split(bnn.data.load_digits(), 0.3, key=args.seed)
    return train, test


def subset(data, classes, limit=None) -> bnn.data.Dataset:
    """Examples of ``classes``, relabelled 0..len(classes)-1."""
    keep = np.isin(data.y, classes)
    x, y = data.x[keep][:limit], data.y[keep][:limit]
    return bnn.data.Dataset(x, np.searchsorted(classes, y).astype(np.int32))


def main(args) -> report.Report:
    out = Path(args.out)
    train, test = load(args)
    old, new = np.arange(5), np.arange(5, 10)
    source = subset(train, old)
    few, target_test = subset(train, new, args.few), subset(test, new)
    likelihood = bnn.likelihoods.Categorical()
    side = train.x.shape[1]
    base_net = bnn.models.mnist_cnn(input_shape=(side, side, 1), num_classes=5, seed=args.seed)
    base = bnn.BNN(base_net, bnn.priors.Normal(1.0), likelihood)
    fitted = bnn.fit(base, source, bnn.MAP(epochs=args.base_epochs, batch_size=64), key=0,
                     progress=args.progress)
    trained = fitted.model.network(fitted.point())

    map_config = bnn.MAP(epochs=args.epochs, batch_size=32, learning_rate=1e-3)
    posteriors = {}
    for case in transfer.CASES:
        at = "max_pooling2d" if case == "freeze_early" else None
        model = transfer.transfer(trained, case, 5, likelihood, at=at, seed=args.seed)
        posteriors[f"{case} MAP"] = bnn.fit(model, few, map_config, key=args.seed,
                                            progress=args.progress)
        posteriors[f"{case} SGLD"] = bnn.fit(model, few, bnn.SGLD(
            step_size=args.sgld_step, batch_size=32, num_warmup=args.sgld_warmup,
            num_samples=args.samples, thinning=args.thinning, init=map_config, num_chains=1
        ), key=args.seed, progress=args.progress)
    rep = report.compare(posteriors, target_test)
    rep.save(out)
    print(rep.to_markdown())
    return rep


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="mnist.npz or IDX directory (default: digits)")
    p.add_argument("--out", default="out/transfer")
    p.add_argument("--few", type=int, default=100, help="labelled examples of digits 5-9")
    p.add_argument("--base-epochs", type=int, default=20)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--sgld-step", type=float, default=1e-4)
    p.add_argument("--sgld-warmup", type=int, default=500)
    p.add_argument("--thinning", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

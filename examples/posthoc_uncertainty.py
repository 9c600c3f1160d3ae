"""Post-hoc uncertainty on two moons: MAP, a Laplace approximation, SWAG, a deep ensemble.

Laplace (last-layer KFAC, prior precision by the marginal likelihood, linearised
predictive) and SWAG both start from the MAP fit; the ensemble trains ``--members``
networks. Writes ``report.md`` (test NLL, accuracy, ECE, Brier; OOD AUROC on points far
from the moons), ``maps.png`` (predictive entropy of each method over the plane) and
``summary.json`` to ``--out``.

    python examples/posthoc_uncertainty.py --out out/posthoc
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from flax import nnx

import bayesnn as bnn


def methods(args) -> dict:
    fit_map = bnn.MAP(learning_rate=1e-2, epochs=args.epochs, batch_size=args.batch_size)
    return {
        "MAP": fit_map,
        "Laplace": bnn.Laplace(init=fit_map, subset="last_layer", hessian="kron",
                               prior_precision="marglik", num_samples=args.samples),
        "SWAG": bnn.SWAG(learning_rate=args.swag_lr, batch_size=args.batch_size,
                         epochs=args.swag_epochs, rank=args.rank, num_samples=args.samples,
                         init=fit_map),
        "Ensemble": bnn.Ensemble(fit_map, size=args.members),
    }


def main(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = bnn.data.two_moons(n=args.n + args.n_test, noise=0.15, key=args.seed)
    x = np.asarray(data.x) - np.asarray(data.x).mean(0)
    y = np.asarray(data.y)
    train, test = bnn.data.Dataset(x[:args.n], y[:args.n]), (x[args.n:], y[args.n:])
    angle = np.linspace(0, 2 * np.pi, 64, endpoint=False, dtype=np.float32)
    ood = 4.0 * np.c_[np.cos(angle), np.sin(angle)]
    net = bnn.models.MLP(2, (args.width, args.width), 2, rngs=nnx.Rngs(args.seed))
    model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Categorical())

    posteriors = {name: bnn.fit(model, train, method, key=args.seed, progress=args.progress)
                  for name, method in methods(args).items()}
    report = bnn.report.compare(posteriors, test, ood)
    (out / "report.md").write_text(report.to_markdown())
    print(report.to_markdown())
    g = np.linspace(-args.lim, args.lim, args.grid, dtype=np.float32)
    gx, gy = np.meshgrid(g, g)
    entropy = {name: np.asarray(post.predict(np.c_[gx.ravel(), gy.ravel()]).entropy)
               for name, post in posteriors.items()}
    plot_maps(out / "maps.png", entropy, train, gx, gy)
    summary = {name: {k: float(v) for k, v in row.items()} for name, row in report.table.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def plot_maps(path, entropy, train, gx, gy) -> None:
    """Predictive entropy over the plane, one panel per method, with the training data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(entropy), figsize=(4 * len(entropy), 3.8), squeeze=False)
    for ax, (name, h) in zip(axes[0], entropy.items(), strict=True):
        im = ax.contourf(gx, gy, h.reshape(gx.shape), levels=np.linspace(0, np.log(2), 11),
                         cmap="viridis")
        ax.scatter(*np.asarray(train.x).T, c=np.asarray(train.y), cmap="coolwarm", s=6,
                   edgecolors="k", linewidths=0.2)
        ax.set(title=name, xticks=[], yticks=[])
    fig.colorbar(im, ax=axes[0].tolist(), label="predictive entropy (nats)")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/posthoc")
    p.add_argument("--n", type=int, default=400, help="training points")
    p.add_argument("--n-test", type=int, default=400, help="test points")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--epochs", type=int, default=300, help="MAP epochs")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--samples", type=int, default=100, help="Laplace and SWAG draws")
    p.add_argument("--swag-epochs", type=int, default=40)
    p.add_argument("--swag-lr", type=float, default=1e-2)
    p.add_argument("--rank", type=int, default=20, help="SWAG's rank K")
    p.add_argument("--members", type=int, default=5, help="ensemble size")
    p.add_argument("--grid", type=int, default=80, help="grid points per axis of the maps")
    p.add_argument("--lim", type=float, default=4.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

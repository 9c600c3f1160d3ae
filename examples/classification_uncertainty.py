"""Two moons: class-probability maps of a point estimate and of Bayesian posteriors.

Far from the data a MAP network still gives confident probabilities; the posterior's
predictive entropy (and its epistemic part, the mutual information) grows away from the
data. Writes ``maps.png`` and ``summary.json`` to ``--out``.

    python examples/classification_uncertainty.py --out out/moons
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from flax import nnx

import bayesnn as bnn


def methods(args) -> dict:
    return {
        "MAP": bnn.MAP(learning_rate=1e-2, epochs=args.epochs, batch_size=args.batch_size),
        "Ensemble": bnn.Ensemble(
            bnn.MAP(learning_rate=1e-2, epochs=args.epochs, batch_size=args.batch_size),
            size=args.members,
        ),
        "SGLD": bnn.SGLD(
            step_size=args.sgld_step, batch_size=args.batch_size, num_warmup=args.sgld_warmup,
            num_samples=args.samples, thinning=args.thinning, num_chains=args.chains,
            init="map",
        ),
    }


def grid(lim: float, num: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.linspace(-lim, lim, num, dtype=np.float32)
    gx, gy = np.meshgrid(g, g)
    return gx, gy, np.c_[gx.ravel(), gy.ravel()]


def main(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = bnn.data.two_moons(n=args.n, noise=0.1, key=args.seed)
    # Centre the inputs: the moons span roughly [-1, 2] x [-0.5, 1].
    shift = train.x.mean(0)
    train = bnn.data.Dataset(train.x - shift, train.y)
    net = bnn.models.MLP(2, (args.width, args.width), 2, rngs=nnx.Rngs(args.seed))
    model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Categorical())
    gx, gy, points = grid(args.lim, args.grid)
    far = np.linalg.norm(points, axis=1) > 2.5

    preds, summary = {}, {}
    for name, method in methods(args).items():
        post = bnn.fit(model, train, method, key=args.seed, progress=args.progress)
        pred = post.predict(points)
        preds[name] = pred
        summary[name] = {
            "seconds": round(post.info["seconds"], 2),
            "train_accuracy": float(np.mean(
                np.argmax(post.predict(train.x).probs, -1) == train.y)),
            "entropy_far": float(np.mean(pred.entropy[far])),
            "mutual_information_far": float(np.mean(pred.epistemic[far])),
        }
    plot_maps(out / "maps.png", preds, train, gx, gy)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


def plot_maps(path, preds, train, gx, gy) -> None:
    """Top row: p(class 1); bottom row: predictive entropy; one column per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(preds), figsize=(4 * len(preds), 7.5), squeeze=False)
    for col, (name, pred) in enumerate(preds.items()):
        for row, (values, cmap, label) in enumerate(
            [(pred.probs[:, 1], "RdBu_r", "p(class 1)"), (pred.entropy, "viridis", "entropy")]
        ):
            ax = axes[row, col]
            levels = np.linspace(0, 1 if row == 0 else np.log(2), 21)
            cs = ax.contourf(gx, gy, np.asarray(values).reshape(gx.shape), levels, cmap=cmap)
            ax.scatter(*train.x.T, c=train.y, cmap="coolwarm", s=6, edgecolors="k",
                       linewidths=0.2)
            ax.set(title=f"{name}: {label}", xticks=[], yticks=[])
            fig.colorbar(cs, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/moons")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--sgld-step", type=float, default=1e-4)
    p.add_argument("--sgld-warmup", type=int, default=2000)
    p.add_argument("--thinning", type=int, default=20)
    p.add_argument("--lim", type=float, default=4.0, help="half-width of the plotted square")
    p.add_argument("--grid", type=int, default=100, help="grid points per axis")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

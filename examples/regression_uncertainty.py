"""The main demo: in-between uncertainty on a 1-D regression toy with a gap in its inputs.

A point-estimate network is confident everywhere; a Bayesian posterior widens its
predictive band inside the gap and outside the data. Writes ``bands.png`` and
``summary.json`` to ``--out``.

    python examples/regression_uncertainty.py --out out/demo
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from flax import nnx

import bayesnn as bnn


def methods(args) -> dict:
    """The methods compared, sized by the command-line flags."""
    return {
        "MAP": bnn.MAP(optimizer="adam", learning_rate=1e-2, epochs=args.epochs, batch_size=None),
    }


def main(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = bnn.data.gap_regression(n=args.n, noise=args.noise, key=args.seed)
    grid = bnn.data.gap_regression_grid(num=200).x
    net = bnn.models.MLP(
        1, (args.width, args.width), 1, activation="tanh", rngs=nnx.Rngs(args.seed)
    )
    model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=args.noise))

    summary, bands = {}, {}
    for name, method in methods(args).items():
        post = bnn.fit(model, train, method, key=args.seed, progress=args.progress)
        pred = post.predict(grid)
        inside = np.abs(grid[:, 0]) < 0.4
        on_data = (np.abs(grid[:, 0]) > 0.6) & (np.abs(grid[:, 0]) < 1.4)
        std = np.asarray(pred.std[:, 0])
        summary[name] = {
            "seconds": round(post.info["seconds"], 2),
            "std_in_gap": float(std[inside].mean()),
            "std_on_data": float(std[on_data].mean()),
            "train_nll": float(-post.log_predictive_density(train.x, train.y).mean()),
        }
        bands[name] = (np.asarray(pred.mean[:, 0]), std)
    plot_bands(out / "bands.png", train, grid, bands)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


def plot_bands(path, train, grid, bands) -> None:
    """Predictive mean and ±2 std bands, one panel per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(bands), figsize=(4.5 * len(bands), 3.5), squeeze=False)
    xs = grid[:, 0]
    for ax, (name, (mean, std)) in zip(axes[0], bands.items(), strict=True):
        ax.fill_between(xs, mean - 2 * std, mean + 2 * std, alpha=0.3, label="±2 std")
        ax.plot(xs, mean, lw=2, label="predictive mean")
        ax.plot(xs, bnn.data.gap_function(xs), "k--", lw=1, label="truth")
        ax.scatter(train.x[:, 0], train.y[:, 0], s=8, c="k")
        ax.set(title=name, xlabel="x", ylim=(-3, 3))
    axes[0, 0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/demo")
    p.add_argument("--n", type=int, default=80, help="training points")
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--width", type=int, default=50)
    p.add_argument("--epochs", type=int, default=2000, help="MAP epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

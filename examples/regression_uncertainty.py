"""The main demo: in-between uncertainty on a 1-D regression toy with a gap in its inputs.

A point-estimate network is as confident inside the gap as on the data; variational
inference, SGLD and NUTS widen their predictive bands where there are no data. Writes
``bands.png`` (one panel per method), ``summary.json`` and, under ``report/``, the
side-by-side report (test NLL, RMSE, interval coverage, time, R-hat) to ``--out``.

    python examples/regression_uncertainty.py --out out/demo
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from flax import nnx

import bayesnn as bnn
from bayesnn import plots, report


def methods(args) -> dict:
    """The methods compared, sized by the command-line flags."""
    return {
        "MAP": bnn.MAP(learning_rate=1e-2, epochs=args.epochs, batch_size=None),
        "MeanFieldVI": bnn.MeanFieldVI(
            learning_rate=1e-2, epochs=args.epochs, batch_size=None, num_samples=args.samples
        ),
        "SGLD": bnn.SGLD(
            step_size=args.sgld_step, batch_size=args.batch_size, num_warmup=args.sgld_warmup,
            num_samples=args.samples, thinning=args.thinning, num_chains=args.chains, init="random"
        ),
        "NUTS": bnn.NUTS(
            num_warmup=args.nuts_warmup, num_samples=args.samples // args.chains,
            num_chains=args.chains,
        ),
    }


def main(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = bnn.data.gap_regression(n=args.n, noise=args.noise, key=args.seed)
    test = bnn.data.gap_regression(n=200, noise=args.noise, key=args.seed + 1)
    grid = bnn.data.gap_regression_grid(num=200).x
    net = bnn.models.MLP(1, (args.width,), 1, activation="tanh", rngs=nnx.Rngs(args.seed))
    model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=args.noise))

    posteriors, summary = {}, {}
    for name, method in methods(args).items():
        post = bnn.fit(model, train, method, key=args.seed, progress=args.progress)
        std = np.asarray(post.predict(grid).std[:, 0])
        gap, on_data = np.abs(grid[:, 0]) < 0.4, (np.abs(grid[:, 0]) > 0.6) & (
            np.abs(grid[:, 0]) < 1.4
        )
        summary[name] = {
            "seconds": round(post.info["seconds"], 2),
            "std_in_gap": float(std[gap].mean()),
            "std_on_data": float(std[on_data].mean()),
        }
        posteriors[name] = post
    plot_bands(out / "bands.png", posteriors, train, grid)
    rep = report.compare(posteriors, test)
    rep.save(out / "report")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(rep.to_markdown())
    print(json.dumps(summary, indent=2))
    return summary


def plot_bands(path, posteriors, train, grid) -> None:
    """Predictive mean and 50/90% bands, one panel per method, truth dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(posteriors), figsize=(4 * len(posteriors), 3.4),
                             squeeze=False, sharey=True)
    for ax, (name, post) in zip(axes[0], posteriors.items(), strict=True):
        plots.plot_regression_bands(post.predict(grid), grid, data=(train.x, train.y), ax=ax,
                                    title=name)
        ax.plot(grid[:, 0], bnn.data.gap_function(grid[:, 0]), "k--", lw=1)
        ax.set_ylim(-3, 3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/demo")
    p.add_argument("--n", type=int, default=80, help="training points")
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--width", type=int, default=50)
    p.add_argument("--epochs", type=int, default=3000, help="MAP and VI epochs (full batch)")
    p.add_argument("--samples", type=int, default=400, help="posterior draws per method")
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=20, help="SGLD minibatch")
    p.add_argument("--sgld-step", type=float, default=1e-5)
    p.add_argument("--sgld-warmup", type=int, default=20000)
    p.add_argument("--thinning", type=int, default=50)
    p.add_argument("--nuts-warmup", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

"""Every inference method on one problem, side by side: accuracy, calibration and cost.

A small ReLU network on the 1-D gap toy, small enough that NUTS (the gold standard) and the
Gibbs samplers run in minutes; MCLMC starts one chain at each member of a deep ensemble.
Writes the comparison table (``report.md``, ``report.json``) and charts
(``comparison.png``, ``bands.png``) to ``--out``. The classic coordinate-wise
Gibbs sampler sees all the data for every single weight it updates: its time per draw is
the cost that SGLD's minibatches avoid.

    python examples/compare_samplers.py --out out/compare
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flax import nnx

import bayesnn as bnn
from bayesnn import report


def methods(args) -> dict:
    """Every method, with its size flags."""
    s, c = args.samples, args.chains
    sgmcmc = dict(batch_size=args.batch_size, num_warmup=args.sgmcmc_warmup, num_samples=s,
                  thinning=args.thinning, num_chains=c, init="random")
    mapc = bnn.MAP(learning_rate=1e-2, epochs=args.epochs, batch_size=None)
    return {
        "MAP": mapc,
        "Ensemble": bnn.Ensemble(mapc, size=args.members),
        "MCDropout": bnn.MCDropout(mapc, num_samples=s),
        "MeanFieldVI": bnn.MeanFieldVI(learning_rate=1e-2, epochs=args.epochs, batch_size=None,
                                       num_samples=s),
        "LowRankVI": bnn.LowRankVI(learning_rate=1e-2, epochs=args.epochs, batch_size=None,
                                   num_samples=s, rank=5),
        "SGLD": bnn.SGLD(step_size=args.step_size, **sgmcmc),
        "pSGLD": bnn.PSGLD(step_size=args.step_size * 10, **sgmcmc),
        "SGHMC": bnn.SGHMC(step_size=args.step_size, **sgmcmc),
        "NUTS": bnn.NUTS(num_warmup=args.nuts_warmup, num_samples=s, num_chains=c),
        "MCLMC": bnn.MCLMC(num_warmup=args.mclmc_warmup, num_samples=s, num_chains=c, init=mapc),
        "CoordinateGibbs": bnn.CoordinateGibbs(num_warmup=args.gibbs_warmup, num_samples=s,
                                               num_chains=c),
        "LatentGibbs": bnn.LatentGibbs(num_warmup=args.gibbs_warmup * 10, num_samples=s,
                                       num_chains=c, thinning=5),
    }


def main(args) -> report.Report:
    out = Path(args.out)
    train = bnn.data.gap_regression(n=args.n, noise=args.noise, key=args.seed)
    test = bnn.data.gap_regression(n=200, noise=args.noise, key=args.seed + 1)
    likelihood = bnn.likelihoods.Gaussian(scale=args.noise)

    def model(dropout: float = 0.0) -> bnn.BNN:
        net = bnn.models.MLP(1, (args.width,), 1, dropout=dropout, rngs=nnx.Rngs(args.seed))
        return bnn.BNN(net, bnn.priors.Normal(1.0), likelihood)

    posteriors = {}
    for name, method in methods(args).items():
        if args.only and name not in args.only:
            continue
        m = model(dropout=0.1) if name == "MCDropout" else model()
        posteriors[name] = bnn.fit(m, train, method, key=args.seed, progress=args.progress)
        print(f"{name}: {posteriors[name].info['seconds']:.1f} s", flush=True)
    rep = report.compare(posteriors, test)
    rep.save(out)
    print(rep.to_markdown())
    return rep


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/compare")
    p.add_argument("--only", nargs="*", default=None, help="run only these methods")
    p.add_argument("--n", type=int, default=60)
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--width", type=int, default=20)
    p.add_argument("--epochs", type=int, default=2000)
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--samples", type=int, default=200, help="draws per chain")
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--step-size", type=float, default=1e-5)
    p.add_argument("--sgmcmc-warmup", type=int, default=20000)
    p.add_argument("--thinning", type=int, default=50)
    p.add_argument("--nuts-warmup", type=int, default=300)
    p.add_argument("--mclmc-warmup", type=int, default=1000)
    p.add_argument("--gibbs-warmup", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

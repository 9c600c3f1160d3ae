"""NUTS through bayesnn vs raw NumPyro ``MCMC(NUTS(model))`` on the same small BNN.

Both sample the posterior of a one-hidden-layer tanh MLP on the gap toy, with the same
prior, likelihood, data, starting weights and NUTS settings, in the same process. The raw
model is a hand-written NumPyro program. Reported per sampler:

* ``wall_s``: one complete run (tracing, compilation, warmup, sampling), best of
  ``--repeats``;
* ``us_per_gradient``: one gradient of the potential energy (the cost of a leapfrog step),
  from a jitted loop of ``--gradients`` evaluations at the starting weights, after
  compilation, through :func:`numpyro.infer.util.initialize_model` of each model;
* ``ess``: the smallest bulk ESS over the predictive mean at grid inputs (weights are
  permutation-symmetric, their ESS says little), and ``ess_per_s`` = ESS / ``wall_s``.

Writes ``nuts_overhead.json`` and ``nuts_overhead.md`` to ``--out``.

    python -m benchmarks.nuts_overhead --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from flax import nnx
from numpyro.infer import MCMC, NUTS, init_to_value
from numpyro.infer.util import initialize_model

import bayesnn as bnn
from bayesnn.arviz import ess
from benchmarks.common import flags, interleaved, machine, machine_line, save_results


def raw_model(x, y=None, *, hidden: int, prior_scale: float, noise: float):
    """The same BNN written directly in NumPyro."""
    d = x.shape[1]
    prior = dist.Normal(0.0, prior_scale)
    w1 = numpyro.sample("w1", prior.expand([d, hidden]).to_event(2))
    b1 = numpyro.sample("b1", prior.expand([hidden]).to_event(1))
    w2 = numpyro.sample("w2", prior.expand([hidden, 1]).to_event(2))
    b2 = numpyro.sample("b2", prior.expand([1]).to_event(1))
    f = jnp.tanh(x @ w1 + b1) @ w2 + b2
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Normal(f, noise).to_event(1), obs=y)


def raw_predict(sites, x):
    """Predictive means ``(chain, draw, N)`` of raw NumPyro draws."""
    h = jnp.tanh(jnp.einsum("nd,csdh->csnh", x, sites["w1"]) + sites["b1"][:, :, None])
    return (jnp.einsum("csnh,csho->csno", h, sites["w2"]) + sites["b2"][:, :, None])[..., 0]


def problem(args):
    data = bnn.data.gap_regression(n=args.num_examples, noise=args.noise, key=0)
    net = bnn.models.MLP(1, (args.hidden,), 1, activation="tanh", rngs=nnx.Rngs(0))
    model = bnn.BNN(net, bnn.priors.Normal(args.prior_scale),
                    bnn.likelihoods.Gaussian(scale=args.noise))
    layers = model.init_position["net"]["layers"]
    start = {"w1": layers[0]["kernel"], "b1": layers[0]["bias"],
             "w2": layers[1]["kernel"], "b2": layers[1]["bias"]}
    raw = partial(raw_model, hidden=args.hidden, prior_scale=args.prior_scale, noise=args.noise)
    return model, data, raw, start


def run_bayesnn(model, data, args):
    method = bnn.NUTS(num_warmup=args.num_warmup, num_samples=args.num_samples,
                      num_chains=args.num_chains, chain_method="sequential")
    t0 = time.perf_counter()
    post = bnn.fit(model, data, method, key=0, progress=False)
    seconds = time.perf_counter() - t0
    grid = jnp.asarray(bnn.data.gap_regression_grid(args.grid).x)
    f = jax.vmap(model.apply, (0, None))(post.flat_draws(), grid)[..., 0]
    pred = np.asarray(f).reshape(post.num_chains, post.num_draws, -1)
    return seconds, post.info["sample_stats"]["n_steps"], pred


def run_raw(raw, start, data, args):
    t0 = time.perf_counter()
    kernel = NUTS(raw, init_strategy=init_to_value(values=start))
    mcmc = MCMC(kernel, num_warmup=args.num_warmup, num_samples=args.num_samples,
                num_chains=args.num_chains, chain_method="sequential", progress_bar=False)
    mcmc.run(jax.random.key(1), jnp.asarray(data.x), jnp.asarray(data.y),
             extra_fields=("num_steps",))
    sites = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
    seconds = time.perf_counter() - t0
    grid = jnp.asarray(bnn.data.gap_regression_grid(args.grid).x)
    steps = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["num_steps"])
    return seconds, steps, np.asarray(raw_predict(sites, grid))


def gradient_seconds(numpyro_model, start, data, args) -> float:
    """Best time of one potential-energy gradient (compiled loop of ``args.gradients``)."""
    info = initialize_model(
        jax.random.key(0), numpyro_model, init_strategy=init_to_value(values=start),
        model_args=(jnp.asarray(data.x), jnp.asarray(data.y)),
    )
    grad = jax.grad(info.potential_fn)

    @jax.jit
    def loop(z):
        # Feed each gradient back (scaled to nothing) so no evaluation can be skipped.
        step = lambda _, z: jax.tree.map(lambda a, g: a + 1e-30 * g, z, grad(z))  # noqa: E731
        return jax.lax.fori_loop(0, args.gradients, step, z)

    z = info.param_info.z
    times = interleaved({"gradients": lambda key: loop(z)}, args.repeats)
    return min(times["gradients"]["wall"]) / args.gradients


def summary(runs, us_per_gradient: float) -> dict:
    wall = min(s for s, _, _ in runs)
    _, steps, pred = runs[0]
    n_ess = float(np.min(ess(pred)))
    return {
        "wall_s": round(wall, 3),
        "us_per_gradient": round(1e6 * us_per_gradient, 2),
        "mean_leapfrog_per_draw": round(float(steps.mean()), 2),
        "ess": round(n_ess, 1),
        "ess_per_s": round(n_ess / wall, 2),
    }


def main(args) -> dict:
    model, data, raw, start = problem(args)
    ours, theirs = [], []
    for _ in range(args.repeats):  # alternate, so load changes hit both alike
        ours.append(run_bayesnn(model, data, args))
        theirs.append(run_raw(raw, start, data, args))
    sites = {"net/layers/0/kernel": start["w1"], "net/layers/0/bias": start["b1"],
             "net/layers/1/kernel": start["w2"], "net/layers/1/bias": start["b2"]}
    b = summary(ours, gradient_seconds(model.numpyro_model, sites, data, args))
    r = summary(theirs, gradient_seconds(raw, start, data, args))
    result = {
        "machine": machine("numpyro"),
        "sizes": {
            "num_examples": args.num_examples, "hidden": args.hidden,
            "num_params": bnn.tree.tree_size(model.init_position),
            "num_warmup": args.num_warmup, "num_samples": args.num_samples,
            "num_chains": args.num_chains, "gradients": args.gradients,
            "repeats": args.repeats,
        },
        "bayesnn": b,
        "numpyro": r,
        "wall_ratio_bayesnn_to_numpyro": round(b["wall_s"] / r["wall_s"], 3),
        "gradient_ratio_bayesnn_to_numpyro": round(b["us_per_gradient"] / r["us_per_gradient"], 3),
        "ess_per_s_ratio_bayesnn_to_numpyro": round(b["ess_per_s"] / r["ess_per_s"], 3),
    }
    write(args.out, result)
    print(json.dumps(result, indent=2))
    return result


def write(out: Path, result: dict) -> None:
    m, s = result["machine"], result["sizes"]
    lines = [
        "# NUTS: bayesnn vs raw NumPyro",
        "",
        f"{machine_line(m, 'numpyro')}.",
        f"MLP 1-{s['hidden']}-1 tanh ({s['num_params']} weights) on the gap toy, "
        f"{s['num_examples']} examples; {s['num_chains']} chain(s), {s['num_warmup']} warmup + "
        f"{s['num_samples']} draws; best of {s['repeats']}.",
        "",
        "| sampler | wall s (compile + warmup + draws) | µs / gradient | "
        "leapfrog / draw | min ESS (predictive mean) | ESS / s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("bayesnn", "numpyro"):
        r = result[name]
        lines.append(f"| {name} | {r['wall_s']:.2f} | {r['us_per_gradient']:.1f} | "
                     f"{r['mean_leapfrog_per_draw']:.1f} | {r['ess']:.0f} | {r['ess_per_s']:.1f} |")
    lines += [
        "",
        f"bayesnn ÷ NumPyro: wall time {result['wall_ratio_bayesnn_to_numpyro']:.2f}, "
        f"time per gradient {result['gradient_ratio_bayesnn_to_numpyro']:.2f}, "
        f"ESS / s {result['ess_per_s_ratio_bayesnn_to_numpyro']:.2f}. The chains differ "
        "(keys, site order), so ESS differences within chain-to-chain noise are not overhead.",
    ]
    save_results(out, "nuts_overhead", result, lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[flags(repeats=3)])
    p.add_argument("--num-examples", type=int, default=40)
    p.add_argument("--hidden", type=int, default=10)
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--prior-scale", type=float, default=1.0)
    p.add_argument("--num-warmup", type=int, default=200)
    p.add_argument("--num-samples", type=int, default=200)
    p.add_argument("--num-chains", type=int, default=1)
    p.add_argument("--grid", type=int, default=21)
    p.add_argument("--gradients", type=int, default=20000)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

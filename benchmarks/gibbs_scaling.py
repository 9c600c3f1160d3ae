"""Cost of Gibbs sampling a BNN, and what it buys.

1. Seconds per :class:`~bayesnn.CoordinateGibbs` sweep of a one-hidden-layer
   ReLU MLP as the number of weights P and of examples N grow (expected ∝ P · N): a table,
   a log-log plot and the least-squares exponents of ``seconds ~ P^a N^b``. Each cell times
   ``--sweeps`` jitted sweeps of one chain after compilation (best of ``--repeats``).
2. On teacher–student regressions (a random ReLU teacher; a wider ReLU student; one per
   ``--settings`` entry, the first the small default), the minimum effective sample size
   per second, over test inputs, of the student's predicted mean, for CoordinateGibbs,
   LatentGibbs (with and without collapsed unit weights), NUTS (if
   ``bayesnn.inference.hmc`` exists) and SGLD (if ``bayesnn.inference.sgld`` exists),
   all with the same warmup and number of draws. Seconds are those of the whole run
   (warmup and sampling) without compilation: each ``fit`` is timed on its second call,
   with JAX's persistent compilation cache on (a temporary folder). ESS is ArviZ's bulk
   ESS over ``--num-chains`` chains.

Writes ``gibbs_scaling.json``, ``gibbs_scaling.md`` and ``gibbs_scaling.png`` to ``--out``.

    python -m benchmarks.gibbs_scaling --out benchmarks/results
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import bayesnn as bnn
from bayesnn.arviz import ess, rhat
from bayesnn.inference.coordinate_gibbs import CoordinateGibbs, coordinate_gibbs, num_coordinates
from bayesnn.inference.latent_gibbs import LatentGibbs
from benchmarks.common import flags, machine, machine_line, save_results


def _mlp(inputs: int, width: int, noise: float, seed: int = 0) -> bnn.BNN:
    net = bnn.models.MLP(inputs, (width,), 1, rngs=nnx.Rngs(seed))
    return bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=noise))


# -- 1. cost of a sweep ----------------------------------------------------------------


def sweep_seconds(width: int, n: int, args) -> dict:
    """Best-of-``repeats`` seconds per CoordinateGibbs sweep and evaluations per coordinate."""
    model = _mlp(args.inputs, width, 0.1)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, args.inputs)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((n, 1)), jnp.float32)
    gibbs = coordinate_gibbs(model, slice_width=0.5)

    @jax.jit
    def sweeps(key, state):
        def body(state, k):
            state, info = gibbs.step(k, state, (x, y), k)
            return state, info.num_evals

        return jax.lax.scan(body, state, jax.random.split(key, args.sweeps))

    state = gibbs.init(model.init_position, (x, y))
    state, _ = jax.block_until_ready(sweeps(jax.random.key(0), state))  # compile, burn in
    times, evals = [], None
    for r in range(args.repeats):
        t0 = time.perf_counter()
        _, evals = jax.block_until_ready(sweeps(jax.random.key(r + 1), state))
        times.append((time.perf_counter() - t0) / args.sweeps)
    p = num_coordinates(model)
    return {"width": width, "num_weights": p, "num_examples": n,
            "seconds_per_sweep": min(times),
            "evals_per_coordinate": float(np.mean(evals)) / p}


def fit_exponents(rows: list[dict]) -> dict:
    """Least squares of log seconds = c + a log P + b log N."""
    design = np.array([[1.0, np.log(r["num_weights"]), np.log(r["num_examples"])] for r in rows])
    target = np.log([r["seconds_per_sweep"] for r in rows])
    _, a, b = np.linalg.lstsq(design, target, rcond=None)[0]
    return {"weights": round(float(a), 3), "examples": round(float(b), 3)}


# -- 2. ESS per second -----------------------------------------------------------------


def parse_setting(text: str) -> dict:
    """``"inputs,teacher_width,student_width,num_examples"`` as a dict."""
    keys = ("inputs", "teacher_width", "student_width", "num_examples")
    values = [int(v) for v in text.split(",")]
    if len(values) != len(keys):
        raise argparse.ArgumentTypeError(f"a setting is {','.join(keys)}, got {text!r}")
    return dict(zip(keys, values, strict=True))


def teacher_student(setting: dict, args):
    """Data from a random ReLU teacher; the student, test inputs and the teacher's values."""
    d, n = setting["inputs"], setting["num_examples"]
    teacher = _mlp(d, setting["teacher_width"], args.noise, seed=1)
    position = teacher.prior.sample(jax.random.key(args.seed), teacher.init_position)
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((n + args.num_test, d)).astype(np.float32)
    f = np.asarray(teacher.apply(position, jnp.asarray(x)))
    y = (f + args.noise * rng.standard_normal(f.shape)).astype(np.float32)
    student = _mlp(d, setting["student_width"], args.noise)
    return student, (x[:n], y[:n]), x[n:], f[n:]


def methods(args) -> dict:
    """Method configs by name, as functions of ``num_samples``; optional ones if present."""
    common = {"num_warmup": args.num_warmup, "num_chains": args.num_chains}
    out = {
        "CoordinateGibbs": lambda s: CoordinateGibbs(num_samples=s, slice_width=0.5, **common),
    }
    for pair in args.latent_vars:
        pre, post = (float(v) for v in pair.split(","))
        out[f"LatentGibbs (Δz={pre:g}, Δx={post:g})"] = lambda s, pre=pre, post=post: LatentGibbs(
            num_samples=s, preactivation_var=pre, postactivation_var=post,
            thinning=args.latent_thinning, **common)
    for pre in args.collapsed_vars:
        out[f"LatentGibbs collapsed (Δz={pre:g}, Δx=0)"] = lambda s, pre=pre: LatentGibbs(
            num_samples=s, preactivation_var=pre, collapse=True,
            thinning=args.collapsed_thinning, **common)
    if importlib.util.find_spec("bayesnn.inference.hmc"):
        from bayesnn.inference.hmc import NUTS

        out["NUTS"] = lambda s: NUTS(num_samples=s, init="random", **common)
    if importlib.util.find_spec("bayesnn.inference.sgld"):
        from bayesnn.inference.sgld import SGLD

        out["SGLD"] = lambda s: SGLD(args.sgld_step_size, batch_size=args.sgld_batch_size,
                                     num_samples=s, thinning=args.sgld_thinning, **common,
                                     init="random")
    return out


def cached_fit(model, data, method, seed: int):
    """Fit twice and return the second: with the persistent compilation cache on, its
    ``seconds`` are tracing and sampling, without XLA compilation."""
    bnn.fit(model, data, method, key=seed, progress=False)
    return bnn.fit(model, data, method, key=seed, progress=False)


def ess_per_second(name: str, make, model, data, x_test, f_test, args) -> dict:
    method = make(args.num_samples)
    post = cached_fit(model, data, method, args.seed)
    seconds = post.info["seconds"]
    steps = method.num_warmup + method.num_samples * method.thinning
    f = jax.vmap(jax.vmap(lambda p: model.apply(p, jnp.asarray(x_test))[:, 0]))(post.draws)
    f = np.asarray(f)  # (chain, draw, test point)
    min_ess = float(np.min(ess(f)))
    mean = f.mean(axis=(0, 1))
    return {
        "method": name, "num_draws": int(f.shape[0] * f.shape[1]), "run_seconds": seconds,
        "thinning": method.thinning, "ms_per_step": 1e3 * seconds / steps,
        "min_ess": min_ess, "min_ess_per_second": min_ess / seconds,
        "max_rhat": float(np.max(rhat(f))),
        "rmse_to_teacher": float(np.sqrt(np.mean((mean - f_test[:, 0]) ** 2))),
    }


# -- report ----------------------------------------------------------------------------


def main(args) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        try:
            return _main(args)
        finally:
            jax.config.update("jax_compilation_cache_dir", None)


def compare(setting: dict, args) -> dict:
    """The ESS-per-second rows of every method on one teacher–student setting."""
    model, data, x_test, f_test = teacher_student(setting, args)
    print(f"== teacher-student {setting}", flush=True)
    ess_rows = []
    for name, make in methods(args).items():
        ess_rows.append(ess_per_second(name, make, model, data, x_test, f_test, args))
        print(json.dumps(ess_rows[-1]), flush=True)
    base = next(r["min_ess_per_second"] for r in ess_rows if r["method"] == "CoordinateGibbs")
    for row in ess_rows:
        row["vs_coordinate_gibbs"] = row["min_ess_per_second"] / base
    return {**setting, "num_weights": num_coordinates(model), "num_warmup": args.num_warmup,
            "num_samples": args.num_samples, "methods": ess_rows,
            "load_average_1min": round(os.getloadavg()[0], 2)}


def _main(args) -> dict:
    sweeps = []
    for n in args.sizes:
        for w in args.widths:
            sweeps.append(row := sweep_seconds(w, n, args))
            print(f"P={row['num_weights']:5d} N={n:6d} {1e3 * row['seconds_per_sweep']:9.2f} "
                  "ms/sweep", flush=True)
    shorter = argparse.Namespace(**{**vars(args), **{
        k: max(1, round(args.more_fraction * getattr(args, k)))
        for k in ("num_warmup", "num_samples")}})
    first = compare(args.settings[0], args)
    more = [compare(setting, shorter) for setting in args.settings[1:]]
    result = {
        "machine": machine("numpyro", "blackjax"),
        "args": vars(args),
        "sweep_cost": sweeps,
        "sweep_cost_exponents": fit_exponents(sweeps),
        "teacher_student": first,  # the first setting (speed.py reads it)
        "teacher_student_more": more,
    }
    write(args.out, result)
    return result


def write(out: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m, rows, ex = result["machine"], result["sweep_cost"], result["sweep_cost_exponents"]
    fig, ax = plt.subplots(figsize=(5, 4))
    for n in sorted({r["num_examples"] for r in rows}):
        sel = [r for r in rows if r["num_examples"] == n]
        ax.loglog([r["num_weights"] for r in sel], [r["seconds_per_sweep"] for r in sel],
                  "o-", label=f"N = {n}")
    ax.set(xlabel="weights P", ylabel="seconds per sweep",
           title=f"CoordinateGibbs sweep ~ P^{ex['weights']} N^{ex['examples']}")
    ax.legend()
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "gibbs_scaling.png", dpi=120)
    plt.close(fig)
    args = result["args"]
    settings = [result["teacher_student"], *result.get("teacher_student_more", [])]
    lines = [
        "# Gibbs sampling: cost and ESS per second",
        "",
        f"{machine_line(m)}; load average at the end of the run, on a shared machine.",
        "",
        "## Seconds per CoordinateGibbs sweep (one-hidden-layer ReLU MLP, "
        f"{args['inputs']} inputs, one chain)",
        "",
        "| weights P | examples N | ms / sweep | evaluations / coordinate |",
        "|---:|---:|---:|---:|",
        *(f"| {r['num_weights']} | {r['num_examples']} | {1e3 * r['seconds_per_sweep']:.2f} | "
          f"{r['evals_per_coordinate']:.1f} |" for r in rows),
        "",
        f"Least squares: seconds ∝ P^{ex['weights']} · N^{ex['examples']} (expected P¹ N¹ once "
        "the per-update overhead is negligible). Plot: `gibbs_scaling.png`.",
        "",
        "## Teacher–student regressions: ESS per second",
        "",
        f"Noise {args['noise']}; {args['num_chains']} chains, the same number of warmup "
        "steps and of draws for every method (given with each setting), one draw every "
        "`thin` steps; ESS: minimum bulk "
        f"ESS over {args['num_test']} test inputs of the predicted mean (each method under "
        "its own posterior); seconds: the whole run, warmup included, compilation excluded; "
        "ms / step: one step (sweep, transition) of all chains; steps / ESS: sampling steps "
        "(of all chains) per effective sample, the mixing per step whatever a step costs. "
        "All methods of a setting run "
        "in one process, one after the other (load average at the end of each setting "
        "given).",
        "",
    ]
    for ts in settings:
        lines += [
            f"### {ts['inputs']} inputs, teacher width {ts['teacher_width']}, student width "
            f"{ts['student_width']} ({ts['num_weights']} weights), {ts['num_examples']} "
            f"examples; {ts['num_warmup']} warmup steps, {ts['num_samples']} draws per chain "
            f"(load average {ts['load_average_1min']})",
            "",
            "| method | draws | thin | seconds | ms / step | min ESS | steps / ESS | "
            "min ESS / s | ÷ CoordinateGibbs | max R̂ | RMSE to teacher |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *(f"| {r['method']} | {r['num_draws']} | {r['thinning']} | {r['run_seconds']:.1f} | "
              f"{r['ms_per_step']:.3f} | "
              f"{r['min_ess']:.0f} | {r['num_draws'] * r['thinning'] / r['min_ess']:.0f} | "
              f"{r['min_ess_per_second']:.2f} | "
              f"{r['vs_coordinate_gibbs']:.3g} | {r['max_rhat']:.2f} | "
              f"{r['rmse_to_teacher']:.3f} |" for r in ts["methods"]),
            "",
            summary(ts),
            "",
        ]
    lines += [
        "LatentGibbs samples the noisy network (pre-activation noise variance Δz, "
        "post-activation noise variance Δx; Δx = 0: none), a different posterior from the "
        "other methods', which tends to theirs as Δ → 0; its predictions are the "
        "deterministic forward pass of its weights. *Collapsed* (`LatentGibbs(collapse=True)`):"
        " each hidden unit's incoming weights are also drawn with its pre-activations "
        "integrated out (elliptical slice sampling), then moved with its outgoing weights "
        "along the ReLU's scale symmetry; see the LatentGibbs docstring."
        " A min ESS below ~50 or R̂ above 1.05 means the chains have not mixed within the "
        "run, and the ESS/s ratio is then only a rough bound.",
    ]
    save_results(out, "gibbs_scaling", result, lines)


def summary(ts: dict) -> str:
    """One sentence: the best LatentGibbs variant against CoordinateGibbs and NUTS."""
    by = {r["method"]: r for r in ts["methods"]}
    best = max((r for r in ts["methods"] if r["method"].startswith("LatentGibbs")),
               key=lambda r: r["min_ess_per_second"])
    text = (f"Best LatentGibbs here: {best['method']}, {best['vs_coordinate_gibbs']:.3g}× "
            "CoordinateGibbs's min ESS/s (goal ≥ 10×: "
            f"{'met' if best['vs_coordinate_gibbs'] >= 10 else 'not met'})")
    if "NUTS" in by:
        text += f", {best['min_ess_per_second'] / by['NUTS']['min_ess_per_second']:.3g}× NUTS's"
    return text + "."


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                parents=[flags(repeats=3, seed=True)])
    p.add_argument("--widths", type=int, nargs="+", default=[8, 32, 128],
                   help="hidden widths of the sweep-cost grid")
    p.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 8000],
                   help="numbers of examples of the sweep-cost grid")
    p.add_argument("--sweeps", type=int, default=5, help="timed sweeps per grid cell")
    p.add_argument("--inputs", type=int, default=2, help="inputs of the sweep-cost grid")
    p.add_argument("--settings", type=parse_setting, nargs="+",
                   default=[parse_setting("2,3,8,200"), parse_setting("4,3,16,500")],
                   help="teacher-student settings 'inputs,teacher_width,student_width,"
                        "num_examples'; the first is the headline (speed.py)")
    p.add_argument("--more-fraction", type=float, default=0.3,
                   help="warmup and draws of the settings after the first, as a fraction of "
                        "--num-warmup and --num-samples (their steps cost more)")
    p.add_argument("--num-test", type=int, default=20)
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--num-chains", type=int, default=2)
    p.add_argument("--num-warmup", type=int, default=1000)
    p.add_argument("--num-samples", type=int, default=2000)
    p.add_argument("--latent-vars", nargs="+", default=["0.1,0.1", "0.1,0", "0.01,0"],
                   help="'Δz,Δx' noise variances (pre-, post-activation) of the LatentGibbs "
                        "runs")
    p.add_argument("--latent-thinning", type=int, default=10)
    p.add_argument("--collapsed-vars", type=float, nargs="*", default=[0.1, 0.01],
                   help="Δz of the LatentGibbs(collapse=True) runs")
    p.add_argument("--collapsed-thinning", type=int, default=1)
    p.add_argument("--sgld-step-size", type=float, default=1e-5)
    p.add_argument("--sgld-batch-size", type=int, default=32)
    p.add_argument("--sgld-thinning", type=int, default=10)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

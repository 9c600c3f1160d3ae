"""Every speed ratio of bayesnn in one run: each against a baseline timed in the same process.

Runs ``speed_sgmcmc`` (SGLD step vs the hand-written BlackJAX loop and plain optax SGD),
``nuts_overhead`` (NUTS through bayesnn vs raw NumPyro), ``vi_epoch`` (VI epoch vs MAP
epoch) and ``gibbs_scaling`` (ESS per second of the Gibbs samplers, NUTS and SGLD), writes
each one's own results, and collects the headline ratios with their targets into
``speed.json`` and ``speed.md`` in ``--out``. The full run uses the sizes the targets are
set for (the SGLD step on a ``mnist_mlp()``-sized network, batch 128); ``--quick`` runs
short versions (minutes) for ``make bench``.

    python -m benchmarks.speed --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import gibbs_scaling, nuts_overhead, speed_sgmcmc, vi_epoch
from benchmarks.common import flags, machine, machine_line, save_results

# name: (module, arguments of the full run, arguments of the quick run)
_MNIST_MLP = ["--num-examples", "12800", "--features", "784", "--hidden", "512", "512",
              "--batch-size", "128"]
BENCHMARKS = {
    "speed_sgmcmc": (speed_sgmcmc, [*_MNIST_MLP, "--steps", "2000", "--repeats", "3"],
                     [*_MNIST_MLP, "--steps", "300"]),
    "nuts_overhead": (nuts_overhead, [], ["--repeats", "1"]),
    "vi_epoch": (vi_epoch, [], ["--num-examples", "2560", "--repeats", "3"]),
    "gibbs_scaling": (gibbs_scaling, [], ["--widths", "8", "32", "--sizes", "500", "2000",
                                          "--num-samples", "500", "--num-warmup", "200",
                                          "--settings", "2,3,8,200"]),
}


def _row(measure: str, ratio: float, target: str, met: bool | None) -> dict:
    return {"measure": measure, "ratio": round(float(ratio), 3), "target": target, "met": met}


def headlines(results: dict) -> list[dict]:
    """The ratios the issues set targets for, from each benchmark's result."""
    rows = []
    if r := results.get("speed_sgmcmc"):
        blackjax, sgd = r["ratio_bayesnn_to_blackjax"], r["ratio_bayesnn_to_optax_sgd"]
        cpu = r["cpu_ratio_bayesnn_to_optax_sgd"]
        rows += [_row("SGLD step ÷ hand-written BlackJAX SGLD step", blackjax, "≤ 1.0",
                      blackjax <= 1.0),
                 _row("SGLD step ÷ optax SGD step (wall)", sgd, "≤ 1.6", sgd <= 1.6),
                 _row("SGLD step ÷ optax SGD step (process CPU time)", cpu, "≤ 1.6", cpu <= 1.6)]
    if r := results.get("nuts_overhead"):
        wall = r["wall_ratio_bayesnn_to_numpyro"]
        rows += [_row("NUTS wall time, bayesnn ÷ raw NumPyro", wall, "≤ 1.05", wall <= 1.05),
                 _row("NUTS gradient time, bayesnn ÷ raw NumPyro",
                      r["gradient_ratio_bayesnn_to_numpyro"], "", None)]
    if r := results.get("vi_epoch"):
        for row in r["rows"]:
            for variant, ratio in row["ratio_to_map"].items():
                name = {"vi": "MeanFieldVI", "vi_local_reparam": "MeanFieldVI(local_reparam)"}
                rows.append(_row(f"{name.get(variant, variant)} epoch ÷ MAP epoch, batch "
                                 f"{row['batch_size']}", ratio, "≤ 2.0", ratio <= 2.0))
    if r := results.get("gibbs_scaling"):
        by_method = {m["method"]: m for m in r["teacher_student"]["methods"]}
        coordinate = by_method["CoordinateGibbs"]["min_ess_per_second"]
        for name, m in by_method.items():
            if name != "CoordinateGibbs":
                ratio = m["min_ess_per_second"] / coordinate
                target = "≥ 10" if name.startswith("LatentGibbs") else ""
                rows.append(_row(f"min ESS/s, {name} ÷ CoordinateGibbs", ratio, target,
                                 ratio >= 10 if target else None))
    return rows


def write(out: Path, result: dict) -> None:
    m = result["machine"]
    origin = (
        "Collected with `--summarize` from the saved results (each benchmark's machine, load "
        "average and commit are in its own file)"
        if result.get("summarized") else
        f"{machine_line(m)}; {'quick' if result['quick'] else 'full'} sizes"
    )
    lines = [
        "# Speed ratios",
        "",
        f"{origin}. Each ratio is measured against its baseline in the same process; details "
        "in each benchmark's own results file.",
        "",
        "| measure | ratio | target | met |",
        "|---|---:|---|---|",
    ]
    for row in result["headlines"]:
        met = {True: "yes", False: "**no**", None: ""}[row["met"]]
        lines.append(f"| {row['measure']} | {row['ratio']} | {row['target']} | {met} |")
    save_results(out, "speed", result, lines)


def main(args) -> dict:
    results = {}
    for name in args.only or BENCHMARKS:
        module, full, quick = BENCHMARKS[name]
        if args.summarize:
            results[name] = json.loads((args.out / f"{name}.json").read_text())
            continue
        print(f"== {name}", flush=True)
        argv = [*(quick if args.quick else full), "--out", str(args.out)]
        results[name] = module.main(module.parse_args(argv))
    result = {"machine": machine(), "quick": args.quick, "summarized": args.summarize,
              "headlines": headlines(results)}
    write(args.out, result)
    print(json.dumps(result["headlines"], indent=2, ensure_ascii=False))
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                parents=[flags(quick="short runs (for make bench)")])
    p.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these")
    p.add_argument("--summarize", action="store_true",
                   help="run nothing: rebuild speed.json/md from the results in --out")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

"""What every benchmark shares: its common flags, the machine it ran on, timing, result files.

The benchmarks are modules of the ``benchmarks`` package, run from the repository root:

    python -m benchmarks.speed --quick --out out/bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parent.parent  # the repository


def flags(*, quick: str | None = None, repeats: int | None = None,
          seed: bool = False) -> argparse.ArgumentParser:
    """The flags benchmarks share, as a parent parser: ``--out`` always; ``--quick`` (with
    its help text ``quick``), ``--repeats`` (default ``repeats``) and ``--seed`` (default 0)
    where asked for.

    Use as ``argparse.ArgumentParser(description=..., parents=[flags(repeats=3)])``.
    """
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                   help="folder of the result files (default: benchmarks/results)")
    if quick is not None:
        p.add_argument("--quick", action="store_true", help=quick)
    if repeats is not None:
        p.add_argument("--repeats", type=int, default=repeats,
                       help=f"timed repetitions (default: {repeats})")
    if seed:
        p.add_argument("--seed", type=int, default=0)
    return p


def commit() -> str:
    """Short hash of the checked-out commit, with ``+dirty`` when the tree has changes
    (other than in ``benchmarks/results``, which benchmarks write while they run).

    ``BAYESNN_COMMIT`` overrides it, for copies of the tree whose ``.git`` is not current
    (the lent GPU machine's).
    """
    if os.environ.get("BAYESNN_COMMIT"):
        return os.environ["BAYESNN_COMMIT"]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        dirty = git("status", "--porcelain", "--", ".", ":!benchmarks/results")
        return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine(*packages: str) -> dict:
    """CPU model, cores, load, device, commit, and the versions of jax and ``packages``."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = jax.devices()[0]
    return {
        "cpu": cpu, "cores": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
        "device": f"{device.platform}: {device.device_kind}", "commit": commit(),
        **{name: version(name) for name in ("jax", *packages)},
    }


def machine_line(m: dict, *packages: str) -> str:
    """The machine ``m`` of :func:`machine` in one line, the header of every report: CPU,
    cores, load average, device, versions of jax and ``packages``, commit."""
    versions = ", ".join(f"{name} {m[name]}" for name in ("jax", *packages))
    return (f"{m['cpu']}, {m['cores']} cores (1-min load average {m['load_average_1min']}), "
            f"{m['device']}; {versions}; commit `{m.get('commit', 'unknown')}`")


def interleaved(runs: dict[str, Callable[[jax.Array], object]],
                repeats: int) -> dict[str, dict[str, list[float]]]:
    """Wall and process-CPU seconds of each ``runs[name](key)``, blocked until ready.

    Every run is first called once (compiling) with ``key(0)``; then ``repeats`` rounds
    call every run once, with ``key(i + 1)`` in round ``i``. Interleaved so that every run
    sees the same load of a shared machine, and a ratio of two runs' times compares like
    with like. Returns ``{name: {"wall": [...], "cpu": [...]}}``.
    """
    for run in runs.values():
        jax.block_until_ready(run(jax.random.key(0)))
    times = {name: {"wall": [], "cpu": []} for name in runs}
    for i in range(repeats):
        for name, run in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(run(jax.random.key(i + 1)))
            times[name]["wall"].append(time.perf_counter() - wall)
            times[name]["cpu"].append(time.process_time() - cpu)
    return times


def save_results(out: Path, name: str, result: dict, lines: list[str]) -> None:
    """Write ``result`` to ``out/<name>.json`` and the report ``lines`` to ``out/<name>.md``.

    Each file is written whole and then renamed, so that a benchmark killed while writing
    leaves the previous results, not half a file.
    """
    out.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(result, indent=2, default=str)),
                         (".md", "\n".join(lines))):
        tmp = out / f"{name}{suffix}.tmp"
        tmp.write_text(text + "\n")
        tmp.replace(out / f"{name}{suffix}")

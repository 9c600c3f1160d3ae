"""What every benchmark records about the machine and the code it ran on."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path

import jax


def commit() -> str:
    """Short hash of the checked-out commit, with ``+dirty`` when the tree has changes
    (other than in ``benchmarks/results``, which benchmarks write while they run).

    ``BAYESNN_COMMIT`` overrides it, for copies of the tree whose ``.git`` is not current
    (the lent GPU machine's).
    """
    if os.environ.get("BAYESNN_COMMIT"):
        return os.environ["BAYESNN_COMMIT"]
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
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


def save_results(out: Path, name: str, result: dict, lines: list[str]) -> None:
    """Write ``result`` to ``out/<name>.json`` and the report ``lines`` to ``out/<name>.md``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")

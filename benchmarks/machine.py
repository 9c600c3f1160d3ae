"""What every benchmark records about the machine it ran on."""

from __future__ import annotations

import os
import platform
from importlib.metadata import version

import jax


def machine(*packages: str) -> dict:
    """CPU model, cores, load, device, and the versions of jax and ``packages``."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = jax.devices()[0]
    return {
        "cpu": cpu, "cores": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
        "device": f"{device.platform}: {device.device_kind}",
        **{name: version(name) for name in ("jax", *packages)},
    }

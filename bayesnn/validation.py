"""Argument checks shared by the method configurations: clear errors naming the argument."""

from __future__ import annotations

import numpy as np

__all__ = ["check_positive", "check_chain_args"]


def check_positive(**values) -> None:
    """Raise ``ValueError`` naming any argument that is not > 0 (None is allowed)."""
    for name, v in values.items():
        if v is not None and not v > 0:
            raise ValueError(f"{name} must be > 0, got {v!r}")


def check_chain_args(*, num_samples, num_warmup, num_chains, thinning) -> None:
    """Draws, chains and thinning are ints >= 1 and warm-up an int >= 0.

    A non-int raises ``TypeError``, an int out of range ``ValueError``.
    """
    values = {"num_samples": num_samples, "num_chains": num_chains, "thinning": thinning,
              "num_warmup": num_warmup}
    for name, v in values.items():
        least = 0 if name == "num_warmup" else 1
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int >= {least}, got {v!r}")
        if v < least:
            raise ValueError(f"{name} must be an int >= {least}, got {v!r}")

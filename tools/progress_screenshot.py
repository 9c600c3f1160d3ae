"""The gallery's picture of what a fit prints in a log (stderr not a terminal).

Fits a MAP network with a validation split, then ``SGLD()`` and ``MCLMC()`` with their
defaults, on scikit-learn's diabetes data (442 × 10, standardised; an MLP of 50 hidden
units), with stderr captured, and renders the lines as a PNG.

    python tools/progress_screenshot.py docs/img/progress_piped.png
"""

from __future__ import annotations

import contextlib
import io
import sys
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from sklearn.datasets import load_diabetes  # noqa: E402

import bayesnn as bnn  # noqa: E402


def fit_log() -> str:
    x, y = load_diabetes(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    y = ((y - y.mean()) / y.std()).astype(np.float32)
    model = bnn.BNN(bnn.models.MLP(10, (50,), 1, rngs=nnx.Rngs(0)),
                    likelihood=bnn.likelihoods.Gaussian(learn_scale=True))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        bnn.fit(model, (x, y), bnn.MAP(epochs=200, validation_split=0.2), key=0)
        for method in (bnn.SGLD(), bnn.MCLMC()):
            bnn.fit(model, (x, y), method, key=0)
    return err.getvalue()


def render(text: str, path: str, title: str) -> None:
    """``text`` as light monospace lines on a dark background, under ``title``."""
    lines = [title, ""] + [piece for line in text.splitlines()
                           for piece in textwrap.wrap(line, 130) or [""]]
    fig = plt.figure(figsize=(11, 0.19 * len(lines) + 0.3), facecolor="#1e1e1e")
    for i, line in enumerate(lines):
        fig.text(0.01, 1 - (i + 1) / (len(lines) + 1), line, family="monospace", fontsize=8.5,
                 color="#9cdcfe" if i == 0 else "#d4d4d4", va="center")
    fig.savefig(path, dpi=110, facecolor=fig.get_facecolor())


if __name__ == "__main__":
    log = fit_log()
    print(log, end="")
    render(log, sys.argv[1] if len(sys.argv) > 1 else "progress_piped.png",
           "python fit.py 2> log.txt   (not a terminal: plain lines)")

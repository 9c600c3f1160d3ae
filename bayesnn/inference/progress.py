"""What a run says while it runs, on stderr.

A phase line while its program compiles (``MAP: compiling…``), then the steps done with the
metrics the method supplies (Keras-like: ``loss``, ``val_loss``; for samplers the kept
draws, the step size and, for SG-MCMC, a running log-likelihood), and at the end a one-line
summary that stays. On a terminal the line is a live tqdm bar; elsewhere (a log file, a
pipe, a notebook) it is plain lines, one per tenth of the run.
"""

from __future__ import annotations

import contextvars
import sys
import time
from collections.abc import Mapping

from tqdm.auto import tqdm

__all__ = ["Progress", "format_metrics", "note_compiling"]

LINES_PER_RUN = 10  # plain lines a run prints before its summary, at most

_ACTIVE: contextvars.ContextVar[Progress | None] = contextvars.ContextVar("progress",
                                                                          default=None)


def format_metrics(metrics: Mapping) -> str:
    """``name value`` pairs joined by `` · ``: floats to 4 significant digits, the rest as
    text (``draws 40/200``)."""
    return " · ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())


def note_compiling() -> None:
    """Called while a chunk program is traced (only then): the active run says it is
    compiling."""
    progress = _ACTIVE.get()
    if progress is not None:
        progress.compiling()


def _on_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """The progress of one run of ``total`` steps.

    Parameters
    ----------
    desc
        The method's name, first on every line.
    total, initial
        Steps of the run, and those already done (a resumed run).
    enabled
        False: silent. True or None: a live line on a terminal, plain lines elsewhere.
    stream
        Where to write (default ``sys.stderr``, looked up when the run starts).
    """

    def __init__(self, desc: str, total: int, *, initial: int = 0, enabled: bool | None = None,
                 stream=None):
        self.desc, self.total, self.done = desc or "run", total, initial
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled is not False
        self.live = self.enabled and _on_terminal(self.stream)
        self.metrics: dict = {}
        self.compile_seconds = 0.0
        self.seconds = 0.0
        self._compile_start: float | None = None
        self._unsplit = False
        self._lines = initial * LINES_PER_RUN // max(total, 1)
        self._bar = None
        self._token = None
        self._t0 = time.perf_counter()

    def __enter__(self) -> Progress:
        self._token = _ACTIVE.set(self)
        if self.live:
            self._bar = tqdm(total=self.total, initial=self.done, desc=self.desc, unit="step",
                             file=self.stream, leave=False, dynamic_ncols=True)
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE.reset(self._token)
        if self._bar is not None:
            self._bar.close()

    def compiling(self) -> None:
        """The program is being traced and compiled; ends at the next :meth:`update`."""
        if self._compile_start is not None:
            return
        self._compile_start = time.perf_counter()
        if self._bar is not None:
            self._bar.set_description_str(f"{self.desc}: compiling…")
        elif self.enabled:
            self._write(f"{self.desc}: compiling…")

    def update(self, steps: int, metrics: Mapping | None = None) -> None:
        """``steps`` more steps done; ``metrics`` the latest values to show."""
        if self._compile_start is not None:
            if self.done + steps < self.total:
                self.compile_seconds += time.perf_counter() - self._compile_start
            else:  # compiled and ran in one call: the two cannot be told apart
                self._unsplit = True
            self._compile_start = None
            if self._bar is not None:
                self._bar.set_description_str(self.desc)
        self.done += steps
        self.metrics = dict(metrics or {})
        if self._bar is not None:
            self._bar.set_postfix_str(format_metrics(self.metrics), refresh=False)
            self._bar.update(steps)
            return
        line = self.done * LINES_PER_RUN // max(self.total, 1)
        if self.enabled and line > self._lines and self.done < self.total:
            self._lines = line
            self._write(self._status())

    def finish(self, *, interrupted: bool = False) -> None:
        """The summary line, which stays: steps, seconds (compiling among them), metrics.
        Sets :attr:`seconds`, the run's wall time."""
        self.seconds = time.perf_counter() - self._t0
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        compiled = (", compiling included" if self._unsplit else
                    f", {self.compile_seconds:.1f} s compiling" if self.compile_seconds else "")
        what = "interrupted after" if interrupted else "done:"
        text = f"{self.desc}: {what} {self.done} steps in {self.seconds:.1f} s{compiled}"
        self._write(" · ".join(filter(None, [text, format_metrics(self.metrics)])))

    def _status(self) -> str:
        seconds = time.perf_counter() - self._t0
        head = (f"{self.desc}: step {self.done}/{self.total} "
                f"({100 * self.done // max(self.total, 1)}%) · {seconds:.1f} s")
        return " · ".join(filter(None, [head, format_metrics(self.metrics)]))

    def _write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

import io

import jax
import jax.numpy as jnp
import numpy as np

from bayesnn.inference.driver import latest_epoch, run_chunks, sample_chains
from bayesnn.inference.programs import clear_programs
from bayesnn.inference.progress import Progress, format_metrics


def _growth_chunk(state, key, i, rate):
    def step(x, k):
        x = x * rate + 0.01 * jax.random.normal(k)
        return x, x

    return jax.lax.scan(step, state, jax.random.split(key, 10))


def _run(**kwargs):
    return run_chunks(_growth_chunk, jnp.float32(1.0), jax.random.key(0), 20, 1.0,
                      steps_per_chunk=10, desc="growth",
                      metrics=lambda i, out: {"last": float(out[-1])}, **kwargs)


def test_piped_output_is_plain_lines_compile_phase_and_a_summary(capsys):
    clear_programs()
    _run(cache_key="progress-test")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "growth: compiling…"
    assert lines[1].startswith("growth: step 20/200 (10%) · ") and " · last " in lines[1]
    assert len(lines) == 11 and "\r" not in "".join(lines)  # 9 periodic lines, not a bar
    assert lines[-1].startswith("growth: done: 200 steps in ")
    assert "s compiling · last " in lines[-1]
    _run(cache_key="progress-test")  # the program is kept: nothing to compile
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10 and not any("compiling" in line for line in lines)
    clear_programs()


def test_no_progress_is_silent(capfd):
    _run(progress=False)
    assert capfd.readouterr().err == ""


def test_samplers_show_kept_draws_and_their_metrics(capsys):
    keep = np.arange(60) % 3 == 2

    def walk(key, x, t):
        return x + 0.1 * jax.random.normal(key, x.shape), {"size": jnp.full(x.shape[0], 0.5)}

    sample_chains(walk, jnp.zeros((2, 1)), jax.random.key(0), keep, store=lambda s: s,
                  desc="walk",
                  metrics=lambda t, infos: {"t": t, "size": float(infos["size"][-1, 0])})
    summary = capsys.readouterr().err.splitlines()[-1]
    assert summary.startswith("walk: done: 60 steps in ")
    assert summary.endswith("draws 20/20 · t 59 · size 0.5")


def test_a_terminal_gets_a_live_line_and_the_summary_stays():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    with Progress("MAP", 100, stream=out) as progress:
        progress.compiling()
        assert "MAP: compiling…" in out.getvalue()
        progress.update(50, {"loss": 0.123456})
        progress.update(50, {"loss": 0.1})
        progress.finish()
    text = out.getvalue()
    assert text.count("\r") >= 2  # the live bar, redrawn in place
    last = text.rstrip("\n").rsplit("\n", 1)[-1].rsplit("\r", 1)[-1]
    assert last.startswith("MAP: done: 100 steps in ") and last.endswith("· loss 0.1")


def test_metrics_text_and_latest_epoch():
    assert format_metrics({"epoch": 3, "loss": 1.19549, "draws": "4/10"}) == (
        "epoch 3 · loss 1.195 · draws 4/10")
    rows = {"loss": np.array([[1.0, 3.0], [2.0, 4.0], [0.0, 0.0]]),
            "ran": np.array([[True, True], [True, True], [False, False]])}
    assert latest_epoch(1, rows) == {"epoch": 5, "loss": 3.0}
    assert latest_epoch(0, {**rows, "ran": np.zeros((3, 2), bool)}) == {}


def test_a_run_that_compiles_and_ends_in_one_update_does_not_split_the_time():
    out = io.StringIO()
    with Progress("tuning", 100, stream=out) as progress:
        progress.compiling()
        progress.update(100, {"L": 0.5})
        progress.finish()
    summary = out.getvalue().splitlines()[-1]
    assert summary.startswith("tuning: done: 100 steps in ")
    assert summary.endswith("s, compiling included · L 0.5")

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import bayesnn as bnn
from bayesnn.inference import programs
from bayesnn.inference.driver import run_chunks
from bayesnn.inference.programs import clear_programs, program_key


def _data(seed, n=64):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.1 * rng.normal(size=(n, 1))).astype(np.float32)
    return x, y


def _model(seed, **kwargs):
    net = nnx.Sequential(nnx.Linear(3, 8, rngs=nnx.Rngs(seed)), nnx.tanh,
                         nnx.Linear(8, 1, rngs=nnx.Rngs(seed + 1)))
    return bnn.BNN(net, likelihood=bnn.likelihoods.Gaussian(0.1), **kwargs)


@pytest.fixture
def traces(monkeypatch):
    """Counts the traces of chunk programs (each one is compiled)."""
    count = []
    note = programs.note_compiling
    monkeypatch.setattr(programs, "note_compiling", lambda: (count.append(1), note()))
    clear_programs()
    yield count
    clear_programs()


METHODS = [
    bnn.MAP(epochs=30, batch_size=16, validation_split=0.25),
    bnn.SGLD(step_size=1e-4, batch_size=16, num_samples=20, num_warmup=40, num_chains=2,
             init="random"),
]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: type(m).__name__)
def test_a_second_fit_on_other_data_weights_and_key_traces_no_chunk_program(traces, method):
    bnn.fit(_model(0), _data(0), method, key=0, progress=False)
    first = len(traces)
    assert first >= 1
    for seed in (1, 2):  # other initial weights, other same-shaped data, another key
        second = bnn.fit(_model(seed), _data(seed), method, key=seed, progress=False)
        assert len(traces) == first
    clear_programs()
    fresh = bnn.fit(_model(2), _data(2), method, key=2, progress=False)
    assert len(traces) == 2 * first  # compiled again, after the cache was cleared
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 second.draws, fresh.draws)


@pytest.fixture
def compiles():
    """Counts XLA compilations (of any program, cached by the library or not)."""
    count = []

    def listen(name, seconds, **kwargs):
        if name.endswith("backend_compile_duration"):
            count.append(seconds)

    jax.monitoring.register_event_duration_secs_listener(listen)
    yield count
    jax.monitoring.unregister_event_duration_listener(listen)


@pytest.mark.parametrize("method", [bnn.SGLD(num_samples=20), bnn.SGHMC(num_samples=20)],
                         ids=["SGLD", "SGHMC"])
def test_a_second_default_sgmcmc_fit_compiles_nothing(compiles, method):
    """With its defaults (ensemble start, step size from the curvature, warm-up windows with
    an adapted preconditioner, drift and R-hat checks), a second fit of an equal model on
    same-shaped data compiles no program."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short chains: R-hat warns
        bnn.fit(_model(0), _data(0), method, key=0, progress=False)
        assert compiles
        compiles.clear()
        bnn.fit(_model(1), _data(1), method, key=1, progress=False)
    assert compiles == []


@pytest.mark.slow
def test_other_shapes_or_config_compile_again(traces):
    method = bnn.MAP(epochs=5, batch_size=16)
    bnn.fit(_model(0), _data(0), method, key=0, progress=False)
    first = len(traces)
    bnn.fit(_model(0), _data(0, n=96), method, key=0, progress=False)  # other data shape
    bnn.fit(_model(0), _data(0), bnn.MAP(epochs=5, batch_size=16, learning_rate=3e-3),
            key=0, progress=False)
    assert len(traces) == 3 * first


def test_program_key_tells_apart_what_a_program_bakes_in():
    method = bnn.SGLD(step_size=1e-4, num_chains=1, init="random")
    same = program_key(method, _model(0))
    assert same is not None and same == program_key(method, _model(5))  # weights: arguments
    assert hash(same) == hash(program_key(method, _model(5)))
    assert same != program_key(bnn.SGLD(step_size=2e-4, num_chains=1, init="random"), _model(0))
    assert same != program_key(bnn.SGHMC(step_size=1e-4, num_chains=1, init="random"), _model(0))
    prior = bnn.BNN(_model(0).network(), prior=bnn.priors.Normal(0.5),
                    likelihood=bnn.likelihoods.Gaussian(0.1))
    assert same != program_key(method, prior)
    # frozen weights are constants of the program: other values, another key
    frozen = [program_key(method, _model(s, frozen=("layers/0/*",))) for s in (0, 5)]
    assert frozen[0] != frozen[1] and frozen[0] != same


def test_program_key_is_none_for_what_it_cannot_compare():
    class Opaque:
        pass

    assert program_key(bnn.MAP(), Opaque()) is None


def _growth_chunk(state, key, i, rate):
    def step(x, k):
        x = x * rate + 0.01 * jax.random.normal(k)
        return x, x

    return jax.lax.scan(step, state, jax.random.split(key, 10))


def test_cached_run_with_another_key_reuses_the_program_and_differs(traces):
    runs = [run_chunks(_growth_chunk, jnp.float32(1.0), jax.random.key(k), 3, 1.0,
                       steps_per_chunk=10, cache_key="growth", progress=False) for k in (0, 1, 0)]
    assert len(traces) == 1
    a, b, c = (np.concatenate(r.outputs) for r in runs)
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, c)


def test_a_weakly_typed_first_state_compiles_the_chunk_once(traces):
    # Gaussian(0.1, learn_scale=True) starts log_scale from a Python float (weakly typed);
    # Adam's moments of it start weakly typed as well. 130 epochs of 4 steps: 3 chunks.
    model = bnn.BNN(_model(0).network(), likelihood=bnn.likelihoods.Gaussian(0.1, learn_scale=True))
    post = bnn.fit(model, _data(0), bnn.MAP(epochs=130, batch_size=16), key=0, progress=False)
    assert post.info["epochs_run"] == 130 and len(traces) == 1


def test_program_key_ignores_only_the_initial_value_of_a_learned_noise_scale():
    method = bnn.SGLD(step_size=1e-4, num_chains=1, init="random")
    net = _model(0).network()

    def key(**lik):
        return program_key(method, bnn.BNN(net, likelihood=bnn.likelihoods.Gaussian(**lik)))

    # learned: the scale is only where the position starts
    assert key(scale=0.3, learn_scale=True) == key(scale=0.7, learn_scale=True)
    # fixed: the scale is a constant of the program
    assert key(scale=0.3) != key(scale=0.7)
    assert key(scale=0.3, learn_scale=True) != key(scale=0.3)

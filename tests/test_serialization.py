"""Saved posteriors: every method round-trips without pickle; no file runs code."""

import json
import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import bayesnn as bnn
from bayesnn import serialization
from bayesnn.inference.map import MAPState


def _round_trip(value, strict=True):
    arrays = {}
    node = serialization.encode(value, arrays, "v")
    return serialization.decode(json.loads(json.dumps(node)), arrays, strict=strict)


def test_values_round_trip_exactly():
    value = {
        "ints": {0: np.arange(3), 1: jnp.ones((2, 2), jnp.bfloat16)}, "t": (1, 2.5, None),
        "nan": float("nan"), "scalar": np.float32(0.1),
        "key": jax.random.key(3), "rbg": jax.random.key(3, impl="rbg"), "list": [1, [2]],
        "state": MAPState({"w": jnp.zeros(2)}, optax.adam(1e-3).init({"w": jnp.zeros(2)})),
    }
    back = _round_trip(value)
    assert jax.tree.structure(back) == jax.tree.structure(value)
    for a, b in zip(jax.tree.leaves(value), jax.tree.leaves(back), strict=True):
        if jax.dtypes.issubdtype(jnp.result_type(a), jax.dtypes.prng_key):
            assert jax.random.key_impl(a) == jax.random.key_impl(b)
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        assert type(a) is type(b) and np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))
    assert back["t"] == (1, 2.5, None) and np.isnan(back["nan"]) and back["list"] == [1, [2]]
    plain = {"s": "x", "flag": True, "n": None, "big": 2**70, "inf": -float("inf")}
    assert _round_trip(plain) == plain


def test_configurations_are_rebuilt_and_code_is_only_described():
    configs = [
        bnn.SGLD(1e-4, schedule=bnn.inference.schedules.Cyclical(50), init=bnn.MAP(epochs=3),
                 num_chains=1),
        bnn.Ensemble(bnn.MAP(optimizer="sgd", learning_rate=0.1), size=3),
        bnn.priors.PerParameter({"*/bias": bnn.priors.Laplace(0.3)}, bnn.priors.Normal(2.0)),
        bnn.likelihoods.Gaussian(0.2, learn_scale=True, temperature=0.5),
        bnn.data.Augment(width_shift=0.1, horizontal_flip=True),
    ]
    for config in configs:
        assert _round_trip(config) == config
    code = bnn.MAP(optimizer=optax.adamw(1e-3, weight_decay=0.2),
                   learning_rate=lambda step: 0.1)
    with pytest.raises(ValueError, match="cannot be rebuilt"):
        _round_trip(code)
    described = _round_trip(code, strict=False)
    assert isinstance(described, serialization.Unbuilt) and described.startswith("MAP(")
    assert "weight_decay=0.2" in described and "<lambda>" in described
    assert " at 0x" not in described


def test_a_file_names_only_classes_it_may_build(tmp_path):
    marker = tmp_path / "marker"
    command = f"touch {marker}"
    nodes = [
        {"type": "object", "class": "os:system", "fields": {"command": command}},
        {"type": "object", "class": "posix.system", "fields": {"command": command}},
        {"type": "namedtuple", "class": "builtins:eval", "items": {"source": "1"}},
        {"type": "object", "class": "subprocess:Popen", "fields": {"args": command}},
        {"type": "object", "class": "bayesnn.serialization:os.system",
         "fields": {"command": command}},
        {"type": "function", "name": "os.system", "closure": {}},
    ]
    for node in nodes:
        assert isinstance(serialization.decode(node, {}, strict=False), serialization.Unbuilt)
        with pytest.raises(ValueError):
            serialization.decode(node, {})
    assert not marker.exists()


class _WritesAFile:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def _model(net=None, likelihood=None):
    net = net or bnn.models.MLP(2, (4,), 1, dropout=0.2, rngs=nnx.Rngs(0))
    return bnn.BNN(net, bnn.priors.Normal(1.0), likelihood or bnn.likelihoods.Gaussian(0.5))


@pytest.mark.parametrize("protocol", [0, pickle.HIGHEST_PROTOCOL])
def test_a_crafted_pickle_at_a_posterior_path_runs_nothing(tmp_path, protocol):
    marker, path = tmp_path / "marker", tmp_path / "post.bnn"
    path.write_bytes(pickle.dumps({"format": "bayesnn.Posterior/1",
                                   "model": _WritesAFile(marker)}, protocol=protocol))
    reason = "a pickle .* was not read. To convert" if protocol else "not a zip archive"
    with pytest.raises(ValueError, match=f"not a bayesnn posterior file.*{reason}"):
        bnn.Posterior.load(path)
    assert not marker.exists()


def test_a_crafted_header_runs_nothing(tmp_path):
    """A zip whose header names a function where the prior belongs fails to load."""
    post = bnn.Posterior(_model(), jax.tree.map(lambda a: a[None, None],
                                                _model().init_position))
    post.save(tmp_path / "post.bnn")
    with zipfile.ZipFile(tmp_path / "post.bnn") as zf:
        header = json.loads(zf.read("header.json"))
        arrays = {n: zf.read(n) for n in zf.namelist() if n != "header.json"}
    marker = tmp_path / "marker"
    header["model"]["items"]["prior"] = {
        "type": "object", "class": "os:system", "fields": {"command": f"touch {marker}"}}
    with zipfile.ZipFile(tmp_path / "crafted.bnn", "w") as zf:
        zf.writestr("header.json", json.dumps(header))
        for name, data in arrays.items():
            zf.writestr(name, data)
    with pytest.raises(ValueError, match="saved prior cannot be rebuilt.*pass like="):
        bnn.Posterior.load(tmp_path / "crafted.bnn")
    assert not marker.exists()


def _data():
    data, _ = bnn.data.linear_regression(n=32, num_features=2, noise=0.5, key=0)
    return data


_MAP = bnn.MAP(epochs=2, batch_size=16)
_SAMPLES = {"num_samples": 3, "num_warmup": 2, "num_chains": 2}
METHODS = {
    "MAP": (_model, bnn.MAP(optimizer=optax.adam(1e-2), epochs=2, batch_size=16)),
    "MCDropout": (_model, bnn.MCDropout(_MAP, num_samples=3)),
    "Ensemble": (_model, bnn.Ensemble(_MAP, size=2)),
    "MeanFieldVI": (_model, bnn.MeanFieldVI(epochs=2, batch_size=16, num_samples=3)),
    "SGLD": (_model, bnn.SGLD(1e-4, batch_size=16, thinning=1, **_SAMPLES,
                              init="random")),
    "NUTS": (_model, bnn.NUTS(**_SAMPLES)),
    "CoordinateGibbs": (lambda: _model(bnn.models.MLP(2, (3,), 1, rngs=nnx.Rngs(0))),
                        bnn.CoordinateGibbs(**_SAMPLES)),
    "LowRankVI": (_model, bnn.LowRankVI(epochs=2, batch_size=16, num_samples=3, rank=2)),
    "PSGLD": (_model, bnn.PSGLD(1e-4, batch_size=16, thinning=1, **_SAMPLES, init="random")),
    "SGHMC": (_model, bnn.SGHMC(batch_size=16, thinning=1, **_SAMPLES, init="random")),
    "HMC": (_model, bnn.HMC(**_SAMPLES)),
    "MCLMC": (_model, bnn.MCLMC(num_samples=3, num_warmup=20, thinning=1, num_chains=2,
                                init="random")),
    "LatentGibbs": (lambda: _model(bnn.models.MLP(2, (3,), 1, rngs=nnx.Rngs(0))),
                    bnn.LatentGibbs(**_SAMPLES)),
    "HierarchicalNUTS": (_model, bnn.HierarchicalNUTS(**_SAMPLES)),
    "Laplace": (_model, bnn.Laplace(init=_MAP, num_samples=3)),
    "SWAG": (_model, bnn.SWAG(epochs=3, batch_size=16, rank=2, num_samples=3, init=_MAP)),
}


FAST = {"MAP", "MCDropout", "SGLD"}  # an optax transformation, a dropout key, many draws


@pytest.mark.filterwarnings("ignore:NUTS.*divergent")
@pytest.mark.parametrize("name", [
    name if name in FAST else pytest.param(name, marks=pytest.mark.slow) for name in METHODS
])
def test_every_method_round_trips_without_pickle(name, tmp_path, monkeypatch):
    make_model, method = METHODS[name]
    data = _data()
    post = bnn.fit(make_model(), data, method, key=1, progress=False)

    def refuse(*args, **kwargs):
        raise AssertionError("pickle was called")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    post.save(tmp_path / "post.bnn")
    back = bnn.Posterior.load(tmp_path / "post.bnn")

    jax.tree.map(np.testing.assert_array_equal, back.draws, post.draws)
    assert jax.tree.structure(back.draws) == jax.tree.structure(post.draws)
    if isinstance(back.method, serialization.Unbuilt):
        assert name == "MAP" and "scale_by_adam" in back.method  # an optax transformation
    else:
        assert back.method == post.method
    assert jax.tree.structure(back.info) == jax.tree.structure(post.info)
    for a, b in zip(jax.tree.leaves(post.info), jax.tree.leaves(back.info), strict=True):
        if isinstance(a, str):  # e.g. the parameter paths of a Laplace subset
            assert a == b
            continue
        if jax.dtypes.issubdtype(jnp.result_type(a), jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(a, b)
    for a, b in zip(post.predict(data.x), back.predict(data.x), strict=True):
        np.testing.assert_array_equal(a, b)
    assert repr(back.model) == repr(post.model)


class _OwnNetwork(nnx.Module):
    """A user's network: bayesnn cannot rebuild it from a file."""

    def __init__(self, rngs):
        self.body = nnx.Linear(2, 5, rngs=rngs)
        self.head = nnx.Linear(5, 1, rngs=rngs)
        self.input_shape, self.out_features = (2,), 1

    def __call__(self, x, *, key=None):
        return self.head(jnp.tanh(self.body(x)))


def test_a_users_own_network_loads_with_like(tmp_path):
    data = _data()
    post = bnn.fit(_model(_OwnNetwork(nnx.Rngs(0))), data, _MAP, key=0)
    post.save(tmp_path / "post.bnn")
    with pytest.raises(ValueError, match=r"_OwnNetwork\) is not one of bayesnn.models.*like="):
        bnn.Posterior.load(tmp_path / "post.bnn")
    # Another instance (other weights) gives the structure; the file gives the weights.
    back = bnn.Posterior.load(tmp_path / "post.bnn", like=_OwnNetwork(nnx.Rngs(5)))
    np.testing.assert_array_equal(back.predict(data.x).mean, post.predict(data.x).mean)
    again = bnn.Posterior.load(tmp_path / "post.bnn", like=_model(_OwnNetwork(nnx.Rngs(5))))
    np.testing.assert_array_equal(again.predict(data.x).mean, post.predict(data.x).mean)
    with pytest.raises(ValueError, match="do not fit the network MLP"):
        bnn.Posterior.load(tmp_path / "post.bnn", like=bnn.models.MLP(2, (4,), 1,
                                                                      rngs=nnx.Rngs(0)))


def test_a_cnn_with_frozen_layers_and_a_centred_prior_round_trips(tmp_path):
    net = bnn.models.mnist_cnn(input_shape=(8, 8, 1), num_classes=3)
    centre = jax.tree.map(jnp.zeros_like, _model(net).init_position["net"])
    model = bnn.BNN(net, bnn.priors.Normal(0.5, loc=centre), bnn.likelihoods.Categorical(),
                    frozen=["layers/0/*"])
    post = bnn.Posterior(model, jax.tree.map(lambda a: a[None, None], model.init_position),
                         bnn.MAP(epochs=1))
    post.save(tmp_path / "cnn.bnn")
    back = bnn.Posterior.load(tmp_path / "cnn.bnn")
    assert back.model.frozen == ("layers/0/*",) and back.method == bnn.MAP(epochs=1)
    assert back.model.network().get_config() == net.get_config()
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype(np.float32)
    np.testing.assert_array_equal(back.predict(x).probs, post.predict(x).probs)
    np.testing.assert_array_equal(back.model.logprior_fn(back.model.init_position),
                                  model.logprior_fn(model.init_position))

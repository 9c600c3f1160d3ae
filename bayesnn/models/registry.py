"""The networks a saved file can rebuild by name, from their recorded constructor arguments.

:class:`~bayesnn.models.MLP` and :class:`~bayesnn.models.CNN` (and so the presets, which
return one of them) record their arguments with ``get_config()``. Any other network is
recorded by class name only; loading its posterior needs the network itself
(``Posterior.load(path, like=network)``).
"""

from __future__ import annotations

from flax import nnx

from bayesnn.models.cnn import CNN
from bayesnn.models.mlp import MLP
from bayesnn.serialization import Unbuilt

__all__ = ["NETWORKS", "build_network", "network_spec"]

NETWORKS: dict[str, type[nnx.Module]] = {"MLP": MLP, "CNN": CNN}


def network_spec(network: nnx.Module) -> dict:
    """``{"class": name, "config": constructor arguments}`` of a registered network;
    ``{"class": "module.qualname", "config": None}`` of any other."""
    cls = type(network)
    name = next((n for n, c in NETWORKS.items() if c is cls), None)
    if name is None:
        return {"class": f"{cls.__module__}.{cls.__qualname__}", "config": None}
    return {"class": name, "config": network.get_config()}


def build_network(spec) -> nnx.Module:
    """An abstract network (shapes, no values: ``nnx.eval_shape``) of the architecture of a
    :func:`network_spec` read back from a file.

    Raises ``ValueError`` when the spec names no registered network or holds a value the
    file could not rebuild (a user's activation function).
    """
    name = spec.get("class") if isinstance(spec, dict) else None
    config = spec.get("config") if isinstance(spec, dict) else None
    if name not in NETWORKS or not isinstance(config, dict):
        raise ValueError(f"the network ({name}) is not one of bayesnn.models {sorted(NETWORKS)}")
    unbuilt = _unbuilt(config)
    if unbuilt:
        raise ValueError(f"the {name}'s configuration holds what a file cannot rebuild: "
                         f"{unbuilt[0]}")
    cls = NETWORKS[name]
    try:
        return nnx.eval_shape(lambda: cls(**config, rngs=nnx.Rngs(0)))
    except (TypeError, ValueError) as e:
        raise ValueError(f"cannot rebuild the {name} from its saved configuration: {e}") from None


def _unbuilt(tree) -> list[str]:
    if isinstance(tree, Unbuilt):
        return [tree]
    if isinstance(tree, dict):
        tree = list(tree.values())
    if isinstance(tree, (list, tuple)):
        return [u for v in tree for u in _unbuilt(v)]
    return []

"""Multilayer perceptron."""

import math
from collections.abc import Callable, Sequence

from flax import nnx

from bayesnn.models.layers import Dropout, Named, split_key
from bayesnn.models.layers import activation as resolve_activation


class MLP(nnx.Module):
    """Fully connected network with a linear (logits) head.

    Each hidden ``nnx.Linear`` is followed by ``activation`` and, when called with a
    ``key``, by dropout. Inputs with more than two axes are flattened to
    ``(batch, -1)``.

    Parameters
    ----------
    in_features
        Number of input features (after flattening).
    hidden
        Widths of the hidden layers.
    out_features
        Width of the output layer.
    activation
        Hidden activation, a name understood by :func:`~bayesnn.models.activation`
        or a callable.
    dropout
        Dropout rate after each hidden activation, in ``[0, 1)``.
    rngs
        Random streams for the parameter initialisation.

    Attributes
    ----------
    input_shape
        ``(in_features,)``.
    out_features
        Width of the output layer.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        activation: str | Callable | None = "relu",
        dropout: float = 0.0,
        *,
        rngs: nnx.Rngs,
    ):
        widths = [in_features, *hidden, out_features]
        if not all(isinstance(w, int) and w >= 1 for w in widths):
            raise ValueError(f"layer widths must be positive ints, got {widths}")
        self.input_shape = (in_features,)
        self.out_features = out_features
        self.activation = resolve_activation(activation)
        self.dropout = Dropout(dropout)
        self.layers = nnx.List(
            [nnx.Linear(m, n, rngs=rngs) for m, n in zip(widths[:-1], widths[1:], strict=True)]
        )

    def get_config(self) -> dict:
        """The constructor's arguments (but ``rngs``): ``MLP(**net.get_config(), rngs=...)``
        builds the same architecture. A saved posterior records them to rebuild the network."""
        activation = self.activation
        return {
            "in_features": self.input_shape[0],
            "hidden": [layer.out_features for layer in self.layers[:-1]],
            "out_features": self.out_features,
            "activation": activation.name if isinstance(activation, Named) else activation,
            "dropout": self.dropout.rate,
        }

    def __call__(self, x, *, key=None):
        """Logits for ``x``; dropout is active only when ``key`` is given."""
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.input_shape[0]:
            raise ValueError(
                f"expected input of shape (batch, {self.input_shape[0]}) or (batch, ...) with "
                f"{self.input_shape[0]} features in all, got {tuple(x.shape)}"
            )
        x = x.reshape(x.shape[0], -1)
        *hidden, head = self.layers
        for layer, k in zip(hidden, split_key(key, len(hidden)), strict=True):
            x = self.dropout(self.activation(layer(x)), key=k)
        return head(x)

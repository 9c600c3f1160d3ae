"""Ready-made networks from the classic Keras examples."""

from collections.abc import Sequence

from flax import nnx

from bayesnn.models.cnn import CNN
from bayesnn.models.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D
from bayesnn.models.mlp import MLP


def _rngs(rngs: nnx.Rngs | None, seed: int) -> nnx.Rngs:
    return nnx.Rngs(seed) if rngs is None else rngs


def mnist_mlp(*, rngs: nnx.Rngs | None = None, seed: int = 0) -> MLP:
    """Keras MNIST MLP: 784 -> 512 -> 512 -> 10, ReLU, dropout 0.2, logits head."""
    return MLP(784, (512, 512), 10, "relu", dropout=0.2, rngs=_rngs(rngs, seed))


def cifar_cnn(
    *,
    rngs: nnx.Rngs | None = None,
    seed: int = 0,
    num_classes: int = 10,
    dropout: float = 0.0,
) -> CNN:
    """CIFAR-10 CNN: three (Conv2D 2x2 'same' ReLU, MaxPooling2D 2) blocks, Dense 500, logits.

    With ``dropout > 0``, Dropout follows the last pooling and the 500-unit layer.
    """
    drop = [Dropout(dropout)] if dropout > 0 else []
    layers = []
    for filters in (16, 32, 64):
        layers += [Conv2D(filters, 2, padding="same", activation="relu"), MaxPooling2D(2)]
    layers += [*drop, Flatten(), Dense(500, activation="relu"), *drop, Dense(num_classes)]
    return CNN((32, 32, 3), layers, rngs=_rngs(rngs, seed))


def mnist_cnn(
    *,
    input_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 10,
    rngs: nnx.Rngs | None = None,
    seed: int = 0,
) -> CNN:
    """Small MNIST CNN (also fits 8x8x1 scikit-learn digits).

    Conv2D 32 3x3 and Conv2D 64 3x3 ('same', ReLU), each followed by MaxPooling2D 2,
    then Flatten, Dense 128 ReLU and a ``num_classes`` logits head.
    """
    layers = [
        Conv2D(32, 3, padding="same", activation="relu"),
        MaxPooling2D(2),
        Conv2D(64, 3, padding="same", activation="relu"),
        MaxPooling2D(2),
        Flatten(),
        Dense(128, activation="relu"),
        Dense(num_classes),
    ]
    return CNN(input_shape, layers, rngs=_rngs(rngs, seed))

"""Flax NNX networks; they know nothing of Bayes.

Every network is called as ``net(x, *, key=None)``: ``key=None`` is deterministic
(prediction), a PRNG key turns dropout on (training).
"""

from bayesnn.models.cnn import CNN
from bayesnn.models.layers import (
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    MaxPooling2D,
    activation,
)
from bayesnn.models.mlp import MLP
from bayesnn.models.presets import cifar_cnn, mnist_cnn, mnist_mlp

__all__ = [
    "CNN",
    "MLP",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "GlobalAveragePooling2D",
    "MaxPooling2D",
    "activation",
    "cifar_cnn",
    "mnist_cnn",
    "mnist_mlp",
]

"""Sequential network built from Keras-style layer specs."""

from collections.abc import Sequence

from flax import nnx

from bayesnn.models.layers import Layer, check_input, split_key


class CNN(nnx.Module):
    """Sequential network described by the specs of :mod:`bayesnn.models.layers`.

    Each layer's input shape is inferred from the previous layer's output, as in
    Keras. Only the layers with parameters (``Conv2D``, ``Dense``) become modules;
    they are kept in order in ``layers``, so ``layers/0/kernel`` is the kernel of the
    first of them.

    Parameters
    ----------
    input_shape
        Shape of one input, without the batch axis, e.g. ``(32, 32, 3)`` (NHWC).
    layers
        Layer specs, applied in order.
    rngs
        Random streams for the parameter initialisation.

    Attributes
    ----------
    output_shapes
        Output shape of every spec, without the batch axis.
    out_features
        Size of the last axis of the output.
    """

    def __init__(self, input_shape: Sequence[int], layers: Sequence[Layer], *, rngs: nnx.Rngs):
        if not layers:
            raise ValueError("CNN needs at least one layer")
        self.input_shape = tuple(input_shape)
        self.specs = tuple(layers)
        modules, shapes = [], []
        shape = self.input_shape
        for spec in self.specs:
            layer = spec.build(shape, rngs)
            if spec.has_params:
                modules.append(layer)
            shape = spec.output_shape(shape)
            shapes.append(shape)
        self.layers = nnx.List(modules)
        self.output_shapes = tuple(shapes)
        self.out_features = shape[-1]

    def get_config(self) -> dict:
        """The constructor's arguments (but ``rngs``): ``CNN(**net.get_config(), rngs=...)``
        builds the same architecture. A saved posterior records them to rebuild the network."""
        return {"input_shape": list(self.input_shape), "layers": list(self.specs)}

    def __call__(self, x, *, key=None):
        """Apply the layers to ``x``; dropout is active only when ``key`` is given."""
        check_input(x, self.input_shape)
        modules = iter(self.layers)
        for spec, k in zip(self.specs, split_key(key, len(self.specs)), strict=True):
            layer = next(modules) if spec.has_params else spec
            x = layer(x, key=k)
        return x

    def summary(self) -> list[tuple[str, tuple[int, ...]]]:
        """``(layer_name, output_shape)`` per layer, with Keras-style names."""
        counts: dict[str, int] = {}
        rows = []
        for spec, shape in zip(self.specs, self.output_shapes, strict=True):
            n = counts[spec.name] = counts.get(spec.name, -1) + 1
            rows.append((spec.name if n == 0 else f"{spec.name}_{n}", shape))
        return rows

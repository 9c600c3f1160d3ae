"""Random image augmentation in JAX: shifts, flips, rotations and zoom on NHWC batches.

Every transformation is one affine map per image, so a batch is augmented by one
resampling pass: :func:`affine_matrix` builds the map from output pixel coordinates to
input coordinates, :func:`warp` samples the images there (bilinear, or exact
nearest-pixel when all maps are integer shifts and flips), and :class:`Augment` draws an
independent map per image. Everything is pure and jittable; randomness comes from the
explicit key.

Coordinates are ``(row, column)`` pixel indices, row 0 at the top; transformations act
about the image centre ``((H - 1) / 2, (W - 1) / 2)``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from functools import partial

import jax
import jax.numpy as jnp

from bayesnn.validation import config

__all__ = ["Augment", "affine_matrix", "augment_batch", "warp"]

FILL_MODES = ("constant", "nearest")


def affine_matrix(height, width, *, rotation=0.0, zoom=1.0, shift=(0, 0), flip=False):
    """The ``(2, 3)`` map from output to input pixel coordinates of one transformation.

    The image is flipped left-right (``flip``), scaled by ``zoom`` and rotated by
    ``rotation`` about its centre, then shifted by ``shift``. An output pixel ``p``
    reads the input at ``A @ p + b`` where ``[A | b]`` is the returned matrix. All
    arguments but ``height`` and ``width`` may be traced (``jax.vmap`` over them).

    Parameters
    ----------
    height, width : int
        Image size in pixels.
    rotation : float
        Angle in degrees; positive turns the content counter-clockwise (as displayed,
        like ``numpy.rot90``).
    zoom : float
        Scale of the content: > 1 magnifies (zooms in), < 1 shrinks.
    shift : (float, float)
        ``(down, right)`` displacement of the content in pixels.
    flip : bool
        Mirror left-right first.

    Returns
    -------
    array of shape ``(2, 3)``, float32
    """
    theta = jnp.deg2rad(jnp.asarray(rotation, jnp.float32))
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    # Inverse of a counter-clockwise rotation, in (row, col) with rows pointing down.
    inv_rotation = jnp.array([[cos, sin], [-sin, cos]])
    mirror = jnp.where(flip, -1.0, 1.0)
    a = inv_rotation * jnp.array([1.0, mirror])[:, None] / zoom
    centre = jnp.array([(height - 1) / 2, (width - 1) / 2], jnp.float32)
    # input = a @ (p - centre - shift) + centre; products written out, as a matmul may run
    # at reduced precision (TF32) on GPUs.
    b = centre - jnp.sum(a * (centre + jnp.asarray(shift, jnp.float32)), axis=1)
    return jnp.concatenate([a, b[:, None]], axis=1)


def _check_images(images) -> jax.Array:
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(
            f"images must be a 4-D batch (N, H, W, C), got shape {tuple(images.shape)}"
        )
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(f"images must have a float dtype, got {images.dtype}; convert them first")
    return images


def _check_fill(fill: str) -> None:
    if fill not in FILL_MODES:
        raise ValueError(f"fill must be one of {FILL_MODES}, got {fill!r}")


def _sample(image: jax.Array, rows: jax.Array, cols: jax.Array, order: int, fill: str):
    """Values of one ``(H, W, C)`` image at coordinates ``rows, cols`` (each ``(H, W)``)."""
    height, width = image.shape[:2]
    if fill == "nearest":  # clamping the coordinates repeats the edge pixels
        rows, cols = jnp.clip(rows, 0, height - 1), jnp.clip(cols, 0, width - 1)

    def pixel(r, c):
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        value = image[jnp.clip(r, 0, height - 1), jnp.clip(c, 0, width - 1)]
        return jnp.where(inside[..., None], value, 0.0)

    if order == 0:
        return pixel(jnp.round(rows).astype(jnp.int32), jnp.round(cols).astype(jnp.int32))
    r0, c0 = jnp.floor(rows), jnp.floor(cols)
    fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
    r0, c0 = r0.astype(jnp.int32), c0.astype(jnp.int32)
    # At integer coordinates fr = fc = 0, so the result is exactly pixel(r0, c0).
    return (1 - fr) * ((1 - fc) * pixel(r0, c0) + fc * pixel(r0, c0 + 1)) + fr * (
        (1 - fc) * pixel(r0 + 1, c0) + fc * pixel(r0 + 1, c0 + 1)
    )


def warp(images, matrices, *, fill: str = "constant", order: int = 1) -> jax.Array:
    """Resample each image of a batch through its affine map.

    Parameters
    ----------
    images : float array of shape ``(N, H, W, C)``
    matrices : array of shape ``(N, 2, 3)`` or ``(2, 3)``
        Maps from output to input pixel coordinates (:func:`affine_matrix`); one
        ``(2, 3)`` matrix applies to every image.
    fill : {"constant", "nearest"}
        Outside the input: zeros, or the nearest edge pixel.
    order : {0, 1}
        Nearest-pixel or bilinear interpolation. Both are exact where the map hits
        integer coordinates (integer shifts and flips).

    Returns
    -------
    array of the shape and dtype of ``images``
    """
    images = _check_images(images)
    _check_fill(fill)
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (nearest) or 1 (bilinear), got {order!r}")
    n, height, width, _ = images.shape
    matrices = jnp.broadcast_to(jnp.asarray(matrices, jnp.float32), (n, 2, 3))
    grid = jnp.stack(
        jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij"), axis=-1
    ).astype(jnp.float32)  # (H, W, 2) output coordinates

    def one(image, matrix):
        rows, cols = (grid[..., 0] * m[0] + grid[..., 1] * m[1] + m[2] for m in matrix)
        out = _sample(image.astype(jnp.float32), rows, cols, order, fill)
        return out.astype(images.dtype)

    return jax.vmap(one)(images, matrices)


def _check_range(name: str, value, upper: float, upper_name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} of type {type(value).__name__}")
    if not (0 <= value < upper):
        raise ValueError(f"{name} must be >= 0 and < {upper_name}, got {value!r}")


@config
@dataclasses.dataclass(frozen=True)
class Augment:
    """Random affine augmentation of image batches, drawn independently per image.

    Argument names and ranges follow Keras' ``ImageDataGenerator``. Each image is
    flipped left-right with probability 1/2 (``horizontal_flip``), zoomed by a factor
    drawn uniformly from ``[1 - zoom, 1 + zoom]``, rotated by an angle drawn uniformly
    from ``[-rotation, rotation]`` degrees, and shifted by a whole number of pixels
    drawn uniformly from ``[-s, s]`` with ``s = floor(width_shift * W)`` (right) and
    ``floor(height_shift * H)`` (down); all in one resampling pass (:func:`warp`).
    Without rotation and zoom the result is exact (pixels are moved, never blended).

    Parameters
    ----------
    width_shift, height_shift : float
        Largest shift as a fraction of the image width / height, in ``[0, 1)``.
    horizontal_flip : bool
        Randomly mirror images left-right.
    rotation : float
        Largest rotation in degrees, in ``[0, 180)``.
    zoom : float
        Zoom range: factors in ``[1 - zoom, 1 + zoom]`` (> 1 magnifies), ``zoom`` in
        ``[0, 1)``.
    fill : {"constant", "nearest"}
        Pixels from outside the image: zeros, or the nearest edge pixel.

    Examples
    --------
    >>> augment = Augment(width_shift=0.1, height_shift=0.1, rotation=10.0)
    >>> x_aug = jax.jit(augment)(key, x)  # x: (N, H, W, C) floats

    References
    ----------
    Simard, Steinkraus & Platt (2003), "Best practices for convolutional neural networks
    applied to visual document analysis", ICDAR (affine distortions of training images).
    Krizhevsky, Sutskever & Hinton (2012), "ImageNet classification with deep
    convolutional neural networks", NeurIPS, Sec. 4.1 (translations and horizontal flips).
    """

    width_shift: float = 0.0
    height_shift: float = 0.0
    horizontal_flip: bool = False
    rotation: float = 0.0
    zoom: float = 0.0
    fill: str = "constant"

    def __post_init__(self):
        _check_range("width_shift", self.width_shift, 1, "1 (a fraction of the width)")
        _check_range("height_shift", self.height_shift, 1, "1 (a fraction of the height)")
        _check_range("rotation", self.rotation, 180, "180 (degrees)")
        _check_range("zoom", self.zoom, 1, "1")
        if not isinstance(self.horizontal_flip, bool):
            raise TypeError(f"horizontal_flip must be a bool, got {self.horizontal_flip!r}")
        _check_fill(self.fill)

    @property
    def exact(self) -> bool:
        """Whether every map is an integer shift or a flip (no interpolation needed)."""
        return self.rotation == 0 and self.zoom == 0

    def matrices(self, key: jax.Array, num_images: int, height: int, width: int) -> jax.Array:
        """Draw ``num_images`` independent maps, shape ``(num_images, 2, 3)``."""
        k_flip, k_rot, k_zoom, k_down, k_right = jax.random.split(key, 5)
        n = (num_images,)

        def shift(k, fraction, size):
            s = math.floor(fraction * size)
            return jax.random.randint(k, n, -s, s + 1) if s else jnp.zeros(n, jnp.int32)

        flip = jax.random.bernoulli(k_flip, 0.5, n) if self.horizontal_flip else jnp.zeros(n, bool)
        rotation = jax.random.uniform(k_rot, n, minval=-self.rotation, maxval=self.rotation)
        zoom = jax.random.uniform(k_zoom, n, minval=1 - self.zoom, maxval=1 + self.zoom)
        shifts = jnp.stack(
            [shift(k_down, self.height_shift, height), shift(k_right, self.width_shift, width)],
            axis=-1,
        )
        build = partial(affine_matrix, height, width)
        return jax.vmap(lambda r, z, s, f: build(rotation=r, zoom=z, shift=s, flip=f))(
            rotation, zoom, shifts, flip
        )

    def __call__(self, key: jax.Array, images) -> jax.Array:
        """Augment a batch ``(N, H, W, C)``, one random transformation per image."""
        images = _check_images(images)
        if self == Augment(fill=self.fill):  # nothing to do
            return images
        n, height, width, _ = images.shape
        matrices = self.matrices(key, n, height, width)
        return warp(images, matrices, fill=self.fill, order=0 if self.exact else 1)


def augment_batch(augment: Augment | None, key: jax.Array, batch):
    """Augment the inputs ``x`` of a :class:`~bayesnn.bnn.Batch`; ``y`` and ``mask`` are kept.

    ``augment=None`` returns the batch unchanged, so methods can call this unconditionally
    inside their jitted step.
    """
    if augment is None:
        return batch
    return batch._replace(x=augment(key, batch.x))

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesnn.bnn import Batch
from bayesnn.data import Augment, affine_matrix, augment_batch, warp

H, W = 6, 7
# Jitted once per shape and mode: much faster than op-by-op dispatch.
warp = jax.jit(warp, static_argnames=("fill", "order"))


@pytest.fixture
def images():
    """Two asymmetric non-square 3-channel patterns."""
    return jnp.asarray(np.random.default_rng(0).normal(size=(2, H, W, 3)), jnp.float32)


def shifted(x, down, right, fill):
    """Reference shift in NumPy: content moves ``down`` rows and ``right`` columns."""
    x = np.asarray(x)
    rows, cols = np.arange(H) - down, np.arange(W) - right
    out = x[:, np.clip(rows, 0, H - 1)][:, :, np.clip(cols, 0, W - 1)]
    if fill == "constant":
        out[:, (rows < 0) | (rows >= H)] = 0
        out[:, :, (cols < 0) | (cols >= W)] = 0
    return out


@pytest.mark.parametrize("fill", ["constant", "nearest"])
@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize(("down", "right"), [(2, 0), (-2, 0), (0, 3), (0, -3), (1, -2)])
def test_shift_moves_a_pattern_by_exactly_k_pixels(images, down, right, fill, order):
    out = warp(images, affine_matrix(H, W, shift=(down, right)), fill=fill, order=order)
    np.testing.assert_array_equal(out, shifted(images, down, right, fill))
    out = np.asarray(out)
    vacated_rows = slice(0, down) if down >= 0 else slice(H + down, H)
    vacated_cols = slice(0, right) if right >= 0 else slice(W + right, W)
    if fill == "constant":  # the vacated border is zero
        assert np.all(out[:, vacated_rows] == 0) and np.all(out[:, :, vacated_cols] == 0)
    else:  # the vacated border repeats the edge of the moved content
        edge_row, edge_col = (
            (down if down >= 0 else H - 1 + down),
            (right if right >= 0 else W - 1 + right),
        )
        assert np.all(out[:, vacated_rows] == out[:, edge_row : edge_row + 1])
        assert np.all(out[:, :, vacated_cols] == out[:, :, edge_col : edge_col + 1])
    assert np.count_nonzero(out) >= 2 * 3 * (H - abs(down)) * (W - abs(right))


def test_random_shifts_are_whole_pixels_within_the_range(images):
    x = jnp.broadcast_to(images[:1], (24, H, W, 3))
    out = np.asarray(jax.jit(Augment(width_shift=0.3, height_shift=0.2))(jax.random.key(1), x))
    max_down, max_right = math.floor(0.2 * H), math.floor(0.3 * W)
    found = []
    for img in out:
        matches = [
            (d, r)
            for d in range(-max_down, max_down + 1)
            for r in range(-max_right, max_right + 1)
            if np.array_equal(img, shifted(x[:1], d, r, "constant")[0])
        ]
        assert matches, "an augmented image is not an exact in-range pixel shift"
        found.append(matches[0])
    assert len(set(found)) > 5  # independent shifts per image
    assert {d for d, _ in found} >= {-1, 1} and {r for _, r in found} >= {-2, 2}


def test_flip_mirrors_and_twice_is_identity(images):
    flip = affine_matrix(H, W, flip=True)
    for order in (0, 1):
        once = warp(images, flip, order=order)
        np.testing.assert_array_equal(once, images[:, :, ::-1])
        np.testing.assert_array_equal(warp(once, flip, order=order), images)


def test_random_flips_half_the_images(images):
    x = jnp.broadcast_to(images[:1], (64, H, W, 3))
    out = np.asarray(jax.jit(Augment(horizontal_flip=True))(jax.random.key(0), x))
    same = np.all(out == np.asarray(x), axis=(1, 2, 3))
    mirrored = np.all(out == np.asarray(x)[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same ^ mirrored)
    assert 16 < mirrored.sum() < 48


@pytest.mark.parametrize(("degrees", "k"), [(90, 1), (-90, -1), (180, 2)])
def test_rotation_by_right_angles_matches_rot90(degrees, k):
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 5, 2)), jnp.float32)
    out = warp(x, affine_matrix(5, 5, rotation=degrees))
    # sin/cos of right angles are exact only up to float32 rounding: tiny blends at borders.
    np.testing.assert_allclose(out, np.rot90(np.asarray(x), k, axes=(1, 2)), atol=1e-5)


def test_rotation_of_a_constant_image_with_nearest_fill_stays_constant():
    x = jnp.full((4, 8, 8, 1), 0.7, jnp.float32)
    out = jax.jit(Augment(rotation=30.0, zoom=0.2, fill="nearest"))(jax.random.key(0), x)
    np.testing.assert_allclose(out, 0.7, rtol=1e-6)
    constant = jax.jit(Augment(rotation=30.0, zoom=0.2))(jax.random.key(0), x)
    assert np.any(np.asarray(constant) < 0.69)  # zeros blended in at the corners


def test_zoom_one_is_identity_and_bilinear_zoom_is_exact_on_a_ramp(images):
    np.testing.assert_array_equal(warp(images, affine_matrix(H, W, zoom=1.0)), images)
    ramp = jnp.broadcast_to(jnp.arange(W, dtype=jnp.float32)[None, None, :, None], (1, H, W, 1))
    centre = (W - 1) / 2
    out = warp(ramp, affine_matrix(H, W, zoom=2.0))
    expected = centre + (np.arange(W) - centre) / 2  # content magnified twice about the centre
    np.testing.assert_allclose(out[0, :, :, 0], np.broadcast_to(expected, (H, W)), atol=1e-6)


def test_zoom_factors_are_drawn_in_range():
    m = Augment(zoom=0.2).matrices(jax.random.key(0), 200, H, W)
    factors = 1 / np.asarray(m[:, 0, 0])
    assert np.all((factors >= 0.8 - 1e-6) & (factors <= 1.2 + 1e-6))
    np.testing.assert_allclose(m[:, 1, 1], m[:, 0, 0])  # isotropic
    assert factors.min() < 0.85 and factors.max() > 1.15


AUGMENT = Augment(width_shift=0.2, height_shift=0.2, horizontal_flip=True, rotation=20.0, zoom=0.1)


@pytest.mark.parametrize(
    ("dtype", "fill"),
    [(jnp.float32, "constant"), (jnp.bfloat16, "nearest"), (jnp.float16, "constant")],
)
def test_shapes_and_dtypes_are_kept(images, dtype, fill):
    out = Augment(width_shift=0.2, rotation=20.0, fill=fill)(
        jax.random.key(0), images.astype(dtype)
    )
    assert out.shape == images.shape and out.dtype == dtype


def test_same_key_same_output_different_keys_differ(images):
    augment = jax.jit(AUGMENT)
    a = augment(jax.random.key(3), images)
    np.testing.assert_array_equal(a, augment(jax.random.key(3), images))
    assert not np.allclose(a, augment(jax.random.key(4), images))


def test_jit_and_one_independent_transform_per_image(images):
    x = jnp.broadcast_to(images[:1], (8, H, W, 3))
    key = jax.random.key(5)
    out = jax.jit(AUGMENT)(key, x)
    np.testing.assert_allclose(out, AUGMENT(key, x), atol=1e-5)  # up to fusion rounding
    flat = np.asarray(out).reshape(8, -1)
    assert all(not np.allclose(flat[i], flat[j]) for i in range(8) for j in range(i))
    # Image i went through its own map.
    matrices = jax.jit(AUGMENT.matrices, static_argnums=(1, 2, 3))(key, 8, H, W)
    np.testing.assert_allclose(out, warp(x, matrices), atol=1e-5)


def test_identity_config_returns_the_images(images):
    assert Augment()(jax.random.key(0), images) is images


def test_augment_batch_changes_only_x(images):
    y, mask = jnp.arange(2), jnp.array([True, False])
    batch = Batch(images, y, mask)
    out = jax.jit(augment_batch, static_argnums=0)(AUGMENT, jax.random.key(0), batch)
    assert isinstance(out, Batch) and out.x.shape == images.shape
    assert not np.allclose(out.x, images)
    np.testing.assert_array_equal(out.y, y)
    np.testing.assert_array_equal(out.mask, mask)
    assert augment_batch(None, jax.random.key(0), batch) is batch


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"width_shift": -0.1}, ValueError, "width_shift must be >= 0"),
        ({"height_shift": 1.0}, ValueError, "height_shift must be >= 0 and < 1"),
        ({"rotation": 180}, ValueError, "rotation must be >= 0 and < 180"),
        ({"zoom": 1.0}, ValueError, "zoom must be >= 0 and < 1"),
        ({"zoom": float("nan")}, ValueError, "zoom"),
        ({"fill": "reflect"}, ValueError, "fill must be one of"),
        ({"width_shift": "0.1"}, TypeError, "width_shift must be a (number|float)"),
        ({"horizontal_flip": 1}, TypeError, "horizontal_flip must be a bool"),
    ],
)
def test_bad_config_is_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        Augment(**kwargs)


def test_bad_images_are_rejected(images):
    with pytest.raises(ValueError, match=r"4-D batch \(N, H, W, C\), got shape \(6, 7, 3\)"):
        AUGMENT(jax.random.key(0), images[0])
    with pytest.raises(TypeError, match="float dtype, got int32"):
        AUGMENT(jax.random.key(0), images.astype(jnp.int32))
    with pytest.raises(ValueError, match="order must be 0"):
        warp(images, affine_matrix(H, W), order=3)
    with pytest.raises(ValueError, match="fill must be one of"):
        warp(images, affine_matrix(H, W), fill="wrap")

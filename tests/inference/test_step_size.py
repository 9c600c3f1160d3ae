import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesnn.inference.step_size import hvp, largest_curvature


def _quadratic(precision):
    return lambda p: -0.5 * p["w"] @ precision @ p["w"] - 0.5 * p["b"] ** 2 * precision[0, 0]


def test_hvp_of_a_quadratic_is_the_matrix_product():
    a = jnp.array([[3.0, 1.0], [1.0, 2.0]])
    position = {"w": jnp.array([0.3, -0.2]), "b": jnp.array(0.5)}
    out = hvp(_quadratic(a), position, {"w": jnp.array([1.0, -1.0]), "b": jnp.array(2.0)})
    np.testing.assert_allclose(out["w"], -(a @ np.array([1.0, -1.0])), rtol=1e-6)
    np.testing.assert_allclose(out["b"], -2.0 * 3.0, rtol=1e-6)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("scale", [1e-2, 1.0, 1e2, 1e4])
def test_largest_curvature_finds_the_top_eigenvalue(seed, scale):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    eig = scale * np.array([10.0, 3.0, 1.0, 0.5, 0.1, 0.01])
    precision = jnp.asarray(q @ np.diag(eig) @ q.T, jnp.float32)

    def logdensity(p):
        return -0.5 * p @ precision @ p

    lam = largest_curvature(jax.random.key(seed), logdensity, jnp.zeros(6), num_iters=30)
    np.testing.assert_allclose(lam, eig[0], rtol=1e-3)

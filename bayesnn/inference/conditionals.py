"""Exact conditional draws: the pieces of :class:`~bayesnn.inference.latent_gibbs.LatentGibbs`.

Each draws one block of a Gibbs sweep exactly from its conditional (or, for
:func:`elliptical_slice`, leaves it invariant): a normal truncated to [0, ∞) far into its
tail, a Gaussian with a shared precision, a Bayesian linear regression, ReLU (and linear)
pre-activations under a Gaussian likelihood of their activations, and the post-activations
between two noisy layers. Each is tested on its own against its closed form.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import erfcx, log_ndtr, ndtri

__all__ = [
    "truncated_normal_draw", "gaussian_draw", "linear_regression_draw",
    "relu_preactivation_draw", "relu_preactivation_log_marginal", "elliptical_slice",
    "postactivation_draw",
]

_SQRT2, _SQRT_HALF_PI = math.sqrt(2.0), math.sqrt(math.pi / 2)


def truncated_normal_draw(key, mean, std, shape=None) -> jax.Array:
    """Draw N(mean, std²) conditioned on being ≥ 0, exactly, far into either tail.

    With ``a = -mean/std`` the standard normal is drawn beyond ``a`` by inverting its tail
    probability: directly, z = -Φ⁻¹(u Φ(-a)), for a < 5; beyond, the excess e = z - a
    solves log Φ(-(a + e)) - log Φ(-a) = log u, written with the scaled complementary
    error function as -(a e + e²/2) + log erfcx((a + e)/√2) - log erfcx(a/√2) so that no
    large terms cancel. Newton's method solves it from Marsaglia's (1964) tail guess
    e = sqrt(a² - 2 log u) - a, which lies above the root, so the iteration (on a concave
    function) converges monotonically; three steps reach float32 precision. The draw is
    then ``std · e`` (``mean + std · a = 0``), accurate even thousands of stds out.
    """
    shape = jnp.broadcast_shapes(jnp.shape(mean), jnp.shape(std)) if shape is None else shape
    a = -mean / std
    u = 1.0 - jax.random.uniform(key, shape, jnp.result_type(mean))  # (0, 1]
    direct = mean + std * -ndtri(u * jnp.exp(log_ndtr(-a)))
    tail = jnp.maximum(a, 5.0)  # the tail branch only serves a ≥ 5
    e = -2 * jnp.log(u) / (jnp.sqrt(tail**2 - 2 * jnp.log(u)) + tail)
    log_erfcx_a = jnp.log(erfcx(tail / _SQRT2))

    for _ in range(3):  # unrolled: one fused elementwise kernel, also inside callers' loops
        scaled = erfcx((tail + e) / _SQRT2)
        g = -(tail * e + e**2 / 2) + jnp.log(scaled) - log_erfcx_a - jnp.log(u)
        e = e + g * _SQRT_HALF_PI * scaled  # Φ(-z)/φ(z) = sqrt(π/2) erfcx(z/√2)
    return jnp.maximum(jnp.where(a < 5.0, direct, std * e), 0.0)


def _lower_inverse(chol):
    """L⁻¹ of a lower-triangular L (batched over leading axes).

    On CPU by forward substitution in XLA, row by row: there XLA calls LAPACK's triangular
    solve, whose OpenBLAS threads stall for milliseconds on a busy machine, a thousand
    times the arithmetic of a small sampler's sweep. Elsewhere the backend's solve.
    """
    size = chol.shape[-1]
    eye = jnp.eye(size, dtype=chol.dtype)

    def forward(chol):
        def row(i, inv):  # rows ≥ i of inv are still 0: chol[i] @ inv sums over j < i
            return inv.at[i].set((eye[i] - chol[i] @ inv) / chol[i, i])

        return jax.lax.fori_loop(0, size, row, jnp.zeros_like(chol))

    def solve(chol):
        return jax.scipy.linalg.solve_triangular(chol, eye, lower=True)

    return jax.lax.platform_dependent(chol, cpu=forward, default=solve)


def gaussian_draw(key, precision, shift) -> jax.Array:
    """Draw the columns of ``shift`` ``(d, m)`` into N(P⁻¹ shift, P⁻¹), one precision P.

    With P = L Lᵀ the draw is L⁻ᵀ (L⁻¹ shift + ε), ε ~ N(0, I): one Cholesky factor and
    one (d × d) triangular inverse serve all m columns, the rest is matrix products.
    """
    inv = _lower_inverse(jnp.linalg.cholesky(precision))
    return inv.T @ (inv @ shift + jax.random.normal(key, shift.shape, shift.dtype))


def linear_regression_draw(key, inputs, targets, noise_var, prior_loc, prior_var):
    """Draw (W, b) from the Gaussian posterior of ``targets = inputs W + b + N(0, noise_var)``.

    Every output column is a Bayesian linear regression on the same design ``[inputs, 1]``
    with prior ``N(prior_loc, diag(prior_var))`` (``prior_loc`` of shape ``(d + 1, h)``,
    ``prior_var`` of shape ``(d + 1,)``, the bias last), so the columns share one posterior
    precision (Bishop 2006, eq. 3.53–3.54) and one :func:`gaussian_draw`.
    """
    design = jnp.concatenate([inputs, jnp.ones((inputs.shape[0], 1), inputs.dtype)], axis=1)
    prior_prec = 1.0 / prior_var
    precision = design.T @ design / noise_var + jnp.diag(prior_prec)
    theta = gaussian_draw(key, precision, design.T @ targets / noise_var
                          + prior_prec[:, None] * prior_loc)
    return theta[:-1], theta[-1]


def _gaussian_piece(mean, pre_var, precision, shift):
    """N(z; mean, Δz) exp(shift · z - precision · z² / 2) = exp(log_mass) N(z; μ, v).

    Returns ``(log_mass, μ, v)``: 1/v = 1/Δz + precision, μ = v (mean/Δz + shift), and
    log_mass = ½ (Δz shift² + 2 shift mean - precision mean²) / (1 + precision Δz)
    - ½ log(1 + precision Δz), which stays finite as precision → 0.
    """
    ratio = 1.0 + precision * pre_var  # v = Δz / ratio
    log_mass = (0.5 * (pre_var * shift**2 + 2 * shift * mean - precision * mean**2) / ratio
                - 0.5 * jnp.log(ratio))
    return log_mass, (mean + pre_var * shift) / ratio, pre_var / ratio


def _relu_pieces(mean, pre_var, precision, shift):
    """Log-masses of the z < 0 and z ≥ 0 pieces of the density of
    :func:`relu_preactivation_draw`, and the mean and variance of the z ≥ 0 piece."""
    log_mass, mu, var = _gaussian_piece(mean, pre_var, precision, shift)
    return (log_ndtr(-mean / jnp.sqrt(pre_var)), log_mass + log_ndtr(mu / jnp.sqrt(var)),
            mu, var)


def relu_preactivation_draw(key, mean, pre_var, precision, shift) -> jax.Array:
    """Draw z ∝ N(z; mean, Δz) exp(shift · relu(z) - precision · relu(z)² / 2), elementwise.

    The second factor is a Gaussian likelihood of relu(z) (``precision`` a, ``shift`` b):
    for a noisy post-activation x, N(x; relu(z), Δx) gives a = 1/Δx, b = x/Δx. For z < 0
    it is 1: N(mean, Δz) truncated to z < 0, of mass Φ(-mean/√Δz). For z ≥ 0 the product
    is N(μ, v) with 1/v = 1/Δz + a, μ = v (mean/Δz + b), truncated to z ≥ 0, of mass
    (1 + a Δz)^(-1/2) exp(½ (Δz b² + 2 b mean - a mean²) / (1 + a Δz)) Φ(μ/√v), which stays
    finite as a → 0. The piece is drawn by its weight (in log space), then the truncated
    normal exactly (:func:`truncated_normal_draw`).
    """
    k_piece, k_draw = jax.random.split(key)
    log_neg, log_pos, mu, var = _relu_pieces(mean, pre_var, precision, shift)
    u = jax.random.uniform(k_piece, mean.shape, mean.dtype)
    positive = u < jax.nn.sigmoid(log_pos - log_neg)
    # z ≥ 0: N(μ, v) truncated to [0, ∞); z < 0: minus N(-mean, Δz) truncated to [0, ∞).
    loc = jnp.where(positive, mu, -mean)
    scale = jnp.sqrt(jnp.where(positive, var, pre_var))
    return jnp.where(positive, 1.0, -1.0) * truncated_normal_draw(k_draw, loc, scale, mean.shape)


def relu_preactivation_log_marginal(mean, pre_var, precision, shift) -> jax.Array:
    """log ∫ N(z; mean, Δz) exp(shift · relu(z) - precision · relu(z)² / 2) dz, elementwise:
    the normaliser of :func:`relu_preactivation_draw`'s density, the sum of its two pieces'
    masses."""
    log_neg, log_pos, _, _ = _relu_pieces(mean, pre_var, precision, shift)
    return jnp.logaddexp(log_neg, log_pos)


def _linear_preactivation_draw(key, mean, pre_var, precision, shift) -> jax.Array:
    """As :func:`relu_preactivation_draw` for the identity activation: a Gaussian."""
    _, mu, var = _gaussian_piece(mean, pre_var, precision, shift)
    return mu + jnp.sqrt(var) * jax.random.normal(key, jnp.shape(mu), jnp.result_type(mu))


def _linear_preactivation_log_marginal(mean, pre_var, precision, shift) -> jax.Array:
    """As :func:`relu_preactivation_log_marginal` for the identity activation."""
    return _gaussian_piece(mean, pre_var, precision, shift)[0]


# activation: (draw of the pre-activations, log of their normaliser)
PREACTIVATION = {
    "relu": (relu_preactivation_draw, relu_preactivation_log_marginal),
    "linear": (_linear_preactivation_draw, _linear_preactivation_log_marginal),
}


class _EllipseCarry(NamedTuple):
    key: jax.Array
    angle: jax.Array
    lower: jax.Array
    upper: jax.Array
    accepted: jax.Array
    evals: jax.Array


def elliptical_slice(key, loglik_fn, theta, prior_loc, prior_std, design, max_evals: int = 100):
    """One elliptical slice sampling update (Murray, Adams & MacKay 2010, Fig. 2).

    Leaves p(θ) ∝ N(θ; prior_loc, diag(prior_std²)) exp(loglik_fn(design @ θ)) invariant.
    A direction ν is drawn from the prior, the level from the current likelihood, and
    points θ(a) = loc + (θ - loc) cos a + ν sin a on the ellipse through θ are proposed,
    the bracket on the angle a shrinking towards a = 0 (the current point) after each
    rejection. The likelihood sees θ only through ``design @ θ``, so after three products
    each evaluation costs O(rows of ``design``). After ``max_evals`` rejections (a
    non-finite likelihood) θ is kept.

    Returns ``(θ', design @ θ', evaluations)``.
    """
    k_nu, k_level, k_angle = jax.random.split(key, 3)
    nu = prior_std * jax.random.normal(k_nu, theta.shape, theta.dtype)
    base, offset, direction = design @ prior_loc, design @ (theta - prior_loc), design @ nu

    def point(angle):
        return base + offset * jnp.cos(angle) + direction * jnp.sin(angle)

    zero = jnp.zeros((), theta.dtype)
    level = loglik_fn(point(zero)) - jax.random.exponential(k_level, (), theta.dtype)
    angle = jax.random.uniform(k_angle, (), theta.dtype, 0.0, 2 * math.pi)

    def body(c: _EllipseCarry) -> _EllipseCarry:
        accepted = loglik_fn(point(c.angle)) > level
        lower = jnp.where(c.angle < 0, c.angle, c.lower)
        upper = jnp.where(c.angle < 0, c.upper, c.angle)
        key, sub = jax.random.split(c.key)
        proposal = jax.random.uniform(sub, (), theta.dtype, lower, upper)
        return _EllipseCarry(key, jnp.where(accepted, c.angle, proposal), lower, upper,
                             accepted, c.evals + 1)

    c = jax.lax.while_loop(
        lambda c: ~c.accepted & (c.evals < max_evals), body,
        _EllipseCarry(key, angle, angle - 2 * math.pi, angle, jnp.bool_(False), jnp.int32(0)))
    angle = jnp.where(c.accepted, c.angle, zero)
    new = prior_loc + (theta - prior_loc) * jnp.cos(angle) + nu * jnp.sin(angle)
    return new, point(angle), c.evals


def postactivation_draw(key, act_pre, next_pre, next_kernel, next_bias, post_var, next_var):
    """Draw post-activations X from N(X; σ(Z), Δx) N(Z'; X W' + b', Δz').

    The rows are independent Gaussians sharing the precision I/Δx + W' W'ᵀ/Δz', so one
    :func:`gaussian_draw` serves all N rows.
    """
    eye = jnp.eye(next_kernel.shape[0], dtype=act_pre.dtype)
    precision = eye / post_var + next_kernel @ next_kernel.T / next_var
    shift = act_pre / post_var + (next_pre - next_bias) @ next_kernel.T / next_var
    return gaussian_draw(key, precision, shift.T).T

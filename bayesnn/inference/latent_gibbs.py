"""Latent-variable Gibbs sampling of a ReLU MLP (Piccioli, Troiani & Zdeborová 2023).

Noisy pre- and post-activations of the hidden layers become latent variables; then every
block (a layer's weights, a layer's pre-activations, a layer's post-activations) has a
conditional that :mod:`~bayesnn.inference.conditionals` draws exactly and in parallel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from bayesnn import likelihoods
from bayesnn.bnn import BNN, Batch, DenseView
from bayesnn.data import Dataset
from bayesnn.inference.conditionals import (
    PREACTIVATION,
    elliptical_slice,
    linear_regression_draw,
    postactivation_draw,
    truncated_normal_draw,
)
from bayesnn.inference.driver import SamplingAlgorithm, sample_chains, thinned_steps
from bayesnn.inference.gibbs import (
    check_gibbs_args,
    flat_inputs,
    gibbs_posterior,
    set_row,
    start_chains,
)
from bayesnn.inference.map import MAP
from bayesnn.inference.slice import slice_sample
from bayesnn.posterior import Posterior
from bayesnn.tree import flatten_paths, unflatten_paths
from bayesnn.validation import config

__all__ = ["LatentGibbs", "LatentGibbsInfo", "LatentGibbsState", "latent_gibbs"]

_SCALE_SLICE_WIDTH = 0.5  # slice width in log c of the scale move of collapsed units


def _unitwise_preactivation_draw(key, act, pieces, preacts, inputs, weights, pre_var,
                                 next_kernel, residual, next_var, collapse=None):
    """Draw a hidden layer's pre-activations Z without post-activation noise, unit by unit.

    With X = act(Z) exactly, unit j's pre-activations given everything else have the
    density N(z_j; x̃ θ_j, Δz) N(R_j; act(z_j) w_j, Δ'), where x̃ = [inputs, 1], θ_j the
    unit's incoming weights and bias, w_j row j of the next layer's kernel, Δ' the next
    layer's noise variance and R_j the next layer's targets less the other units'
    contributions: the draw of ``pieces`` (:func:`relu_preactivation_draw` and
    :func:`relu_preactivation_log_marginal` for ReLU) with precision ‖w_j‖²/Δ' and shift
    R_j w_jᵀ/Δ'. Units are drawn in turn, all N rows at once, each given the latest values
    of the others; ``residual``, the next layer's targets less its mean ``act(Z) W' + b'``,
    follows every update.

    With ``collapse = (prior_loc (d + 1, h), prior_std (d + 1,), next_loc (h, k),
    next_std (h,))`` (the Gaussian priors of θ and of the next layer's kernel rows), z_j is
    integrated out of two moves before it is drawn: θ_j from p(θ_j | w_j, rest) ∝
    N(θ_j; prior) Π_n ∫ N(z; x̃_n θ_j, Δz) N(R_nj; act(z) w_j, Δ') dz (the factors are
    :func:`relu_preactivation_log_marginal`) by :func:`elliptical_slice`; then the pair
    (θ_j, w_j) along the orbit (c θ_j, w_j / c), c > 0, of the ReLU's scale symmetry, by
    slice sampling s = log c from π(c θ_j, w_j / c) c^(d + 1 - k) — Liu & Sabatti's (2000)
    generalised Gibbs step for the multiplicative group, whose Haar measure dc/c = ds, with
    Jacobian c^(d + 1 - k). The network's function is invariant along the orbit (up to the
    noise), so the move crosses in one step the ridge along which alternating θ_j | w_j and
    w_j | θ_j draws creep. Together with the draw of z_j this is a partially collapsed
    Gibbs step (van Dyk & Park 2008): every move leaves p(θ_j, w_j, z_j | rest) invariant.
    The sign of w_j is left to the next layer's draw.

    Returns Z, the layer's ``(kernel, bias)``, the next layer's kernel and the number of
    density evaluations of the collapsed moves.
    """
    draw, log_marginal = pieces
    design = jnp.concatenate([inputs, jnp.ones((inputs.shape[0], 1), inputs.dtype)], axis=1)
    theta_t = jnp.concatenate([weights[0], weights[1][None]]).T  # (h, d + 1): rows contiguous

    def unit(j, carry):
        z, theta_t, next_kernel, residual, evals = carry
        k_theta, k_scale, k_z = jax.random.split(jax.random.fold_in(key, j), 3)
        w = next_kernel[j]
        without = residual + act(z[j])[:, None] * w
        shift = without @ w / next_var
        precision = jnp.sum(w**2) / next_var
        if collapse is None:
            mean = design @ theta_t[j]
        else:
            loc, std, next_loc, next_std = collapse

            def loglik(mean, scale=1.0):  # with θ_j scaled by c, w_j by 1/c
                return jnp.sum(log_marginal(mean * scale, pre_var, precision / scale**2,
                                            shift / scale))

            theta, mean, n = elliptical_slice(k_theta, loglik, theta_t[j], loc[:, j], std,
                                              design)

            def log_orbit(s, mean):  # Liu & Sabatti (2000): π(g_c x) |J_c| in s = log c
                c = jnp.exp(s)
                return (loglik(mean, c) + s * (theta.size - w.size)
                        - jnp.sum(((c * theta - loc[:, j]) / std) ** 2) / 2
                        - jnp.sum(((w / c - next_loc[j]) / next_std[j]) ** 2) / 2)

            zero = jnp.zeros((), theta.dtype)
            s, _, _, info = slice_sample(k_scale, log_orbit, zero, log_orbit(zero, mean),
                                         _SCALE_SLICE_WIDTH, args=(mean,))
            c = jnp.exp(s)
            theta, mean, w = c * theta, c * mean, w / c
            shift, precision = shift / c, precision / c**2
            theta_t, next_kernel = set_row(theta_t, j, theta), set_row(next_kernel, j, w)
            evals = evals + n + info.num_evals
        new = draw(k_z, mean, pre_var, precision, shift)
        return (set_row(z, j, new), theta_t, next_kernel, without - act(new)[:, None] * w,
                evals)

    z, theta_t, next_kernel, _, evals = jax.lax.fori_loop(
        0, next_kernel.shape[0], unit,
        (preacts.T, theta_t, next_kernel, residual, jnp.int32(0)))
    return z.T, (theta_t[:, :-1].T, theta_t[:, -1]), next_kernel, evals


class LatentGibbsInfo(NamedTuple):
    """Per sweep: the full-data log-density at the new weights, and with ``collapse`` the
    likelihood evaluations of the collapsed moves (else None)."""

    logdensity: jax.Array
    num_evals: jax.Array | None


class LatentGibbsState(NamedTuple):
    """Weights and the latent pre- (``preacts``) and post-activations of the hidden layers
    (without post-activation noise, ``postacts`` are the activations of ``preacts``)."""

    position: Any
    preacts: tuple
    postacts: tuple


def _gaussian_prior_blocks(model: BNN, view: DenseView):
    """Per layer: prior means ``(d + 1, h)`` and variances ``(d + 1,)`` of ``[kernel; bias]``."""
    dists = model.prior.distributions(model.init_position["net"])
    blocks = []
    for layer in range(len(view.layers)):
        locs, variances = [], []
        for kind in ("kernel", "bias"):
            path = getattr(view.layers[layer], kind)
            d = dists.get(path)
            if not isinstance(getattr(d, "base_dist", d), dist.Normal):
                raise ValueError(
                    f"LatentGibbs needs a Gaussian prior on every weight; {path} has "
                    f"{'none' if d is None else type(getattr(d, 'base_dist', d)).__name__}"
                )
            shape = getattr(view, kind)(model.init_position, layer).shape
            var = np.broadcast_to(np.asarray(d.variance), shape)
            if np.ptp(var) > 0:
                raise ValueError(f"LatentGibbs needs one prior variance per leaf; {path} varies")
            locs.append(np.broadcast_to(np.asarray(d.mean), shape).reshape(-1, shape[-1]))
            variances.append(np.full(locs[-1].shape[0], var.reshape(-1)[0]))
        blocks.append((jnp.asarray(np.concatenate(locs)), jnp.asarray(np.concatenate(variances))))
    return blocks


def _per_layer(value, num_hidden: int, name: str, zero: bool = False) -> tuple[float, ...]:
    """One float per hidden layer, each > 0 (or ≥ 0 with ``zero``)."""
    values = tuple(value) if isinstance(value, Sequence) else (value,) * num_hidden
    if len(values) != num_hidden:
        raise ValueError(f"{name} needs one value per hidden layer ({num_hidden}), got {values}")
    if not all(v >= 0 if zero else v > 0 for v in values):
        raise ValueError(f"{name} must be {'>=' if zero else '>'} 0, got {value!r}")
    return tuple(float(v) for v in values)


def latent_gibbs(
    model: BNN, preactivation_var, postactivation_var, collapse: bool = False
) -> SamplingAlgorithm:
    """Gibbs sampling of a ReLU MLP with noisy activations (Piccioli et al. 2023).

    The noisy network, for hidden layers ``l = 1..L-1`` (``X_0`` the inputs):
    ``Z_l = X_{l-1} W_l + b_l + N(0, Δz_l)``, ``X_l = relu(Z_l) + N(0, Δx_l)``, and the
    output ``y = X_{L-1} W_L + b_L + N(0, σ² T)`` (the Gaussian likelihood, tempered). With a
    :class:`~bayesnn.likelihoods.Probit` likelihood the output is a latent
    ``u = X_{L-1} W_L + b_L + N(0, 1)`` with ``y = 1[u > 0]``, drawn first in each sweep
    from its truncated normal (Albert & Chib 1993), and the sweep goes on with ``u`` in
    place of ``y``. Given the rest, every block's conditional is exact. A sweep draws all
    (W_l, b_l) at once (:func:`linear_regression_draw`; independent given the latents),
    then layer by layer the latents: with Δx_l > 0, all of Z_l elementwise
    (:func:`relu_preactivation_draw`) and all of X_l row by row
    (:func:`postactivation_draw`); with Δx_l = 0 (X_l = relu(Z_l), no
    post-activation latents) Z_l one unit at a time, all rows at once, given the next
    layer (:func:`_unitwise_preactivation_draw`). Cost per sweep: O(N · P) products plus
    a Cholesky factor and a triangular inverse per layer, O(Σ_l width_l³).

    With ``collapse`` (all Δx_l = 0), each hidden unit's incoming weights and bias are
    drawn again, just before its pre-activations, with those pre-activations integrated
    out (:func:`elliptical_slice` on the collapsed conditional), and then rescaled jointly
    with its outgoing weights along the ReLU's scale symmetry (see
    :func:`_unitwise_preactivation_draw`): some 12–14 evaluations of O(N) each per unit.
    ``step``'s info then also holds ``num_evals``, their number in the sweep.
    """
    view = model.require_dense_view("LatentGibbs")
    lik = model.likelihood
    act_name = getattr(view.activation, "name", None)
    if act_name not in ("relu", "linear"):
        raise ValueError(f"LatentGibbs supports relu (and linear) activations, got {act_name!r}")
    probit = isinstance(lik, likelihoods.Probit)
    if probit and lik.temperature != 1:
        raise ValueError(f"LatentGibbs with a Probit likelihood needs temperature 1, got "
                         f"{lik.temperature}")
    if not (probit or isinstance(lik, likelihoods.Gaussian) and not lik.heteroscedastic
            and not lik.learn_scale):
        raise ValueError(
            "LatentGibbs needs a homoscedastic likelihoods.Gaussian with a fixed scale, or "
            "likelihoods.Probit"
        )
    num_layers = len(view.layers)
    pre_var = _per_layer(preactivation_var, num_layers - 1, "preactivation_var")
    post_var = _per_layer(postactivation_var, num_layers - 1, "postactivation_var", zero=True)
    if collapse and any(post_var):
        raise ValueError(
            "collapse=True needs postactivation_var=0: it integrates out the pre-activations "
            f"of units whose outputs are exactly act(z), got postactivation_var={post_var}"
        )
    noise = (*pre_var, 1.0 if probit else lik.scale**2 * lik.temperature)  # of the targets
    priors = _gaussian_prior_blocks(model, view)
    act = view.activation
    pieces = PREACTIVATION[act_name]

    def init(position, batch) -> LatentGibbsState:
        zs = view.preactivations(position, Batch(*batch).x)[:-1]
        return LatentGibbsState(position, zs, tuple(act(z) for z in zs))

    def output_latents(key, position, inputs, y):
        """Probit: u = f + N(0, 1) given y = 1[u > 0], drawn first in each sweep."""
        mean = inputs @ view.kernel(position, num_layers - 1) + view.bias(position, num_layers - 1)
        sign = jnp.where(y == 1, 1.0, -1.0)[:, None]
        return sign * truncated_normal_draw(key, sign * mean, 1.0)

    def step(key, state: LatentGibbsState, batch) -> tuple[LatentGibbsState, LatentGibbsInfo]:
        batch = Batch(*batch)
        inputs = (flat_inputs(batch.x), *state.postacts)
        y = batch.y
        if probit:
            key, k_u = jax.random.split(key)
            y = output_latents(k_u, state.position, inputs[-1], y)
        k_w, k_z, k_x = (jax.random.split(k, num_layers) for k in jax.random.split(key, 3))
        targets = (*state.preacts, y)
        layers = [
            dict(zip(("kernel", "bias"), linear_regression_draw(
                k_w[l], inputs[l], targets[l], noise[l], *priors[l]), strict=True))
            for l in range(num_layers)  # noqa: E741
        ]
        h, preacts, postacts, evals = inputs[0], [], [], jnp.int32(0)
        for l in range(num_layers - 1):  # noqa: E741
            kernel, bias = layers[l + 1]["kernel"], layers[l + 1]["bias"]
            if post_var[l] == 0:
                residual = targets[l + 1] - state.postacts[l] @ kernel - bias
                prior = (priors[l][0], jnp.sqrt(priors[l][1]), priors[l + 1][0][:-1],
                         jnp.sqrt(priors[l + 1][1][:-1])) if collapse else None
                z, weights, kernel, n = _unitwise_preactivation_draw(
                    k_z[l], act, pieces, state.preacts[l], h,
                    (layers[l]["kernel"], layers[l]["bias"]), pre_var[l], kernel, residual,
                    noise[l + 1], prior)
                layers[l], evals = dict(zip(("kernel", "bias"), weights, strict=True)), evals + n
                layers[l + 1] = {**layers[l + 1], "kernel": kernel}
                h = act(z)
            else:
                mean = h @ layers[l]["kernel"] + layers[l]["bias"]
                z = pieces[0](k_z[l], mean, pre_var[l], 1.0 / post_var[l],
                              state.postacts[l] / post_var[l])
                h = postactivation_draw(k_x[l], act(z), targets[l + 1], kernel, bias,
                                        post_var[l], noise[l + 1])
            preacts.append(z)
            postacts.append(h)
        named = flatten_paths(state.position)
        for layer, weights in zip(view.layers, layers, strict=True):
            named[f"net/{layer.kernel}"], named[f"net/{layer.bias}"] = (weights["kernel"],
                                                                         weights["bias"])
        position = unflatten_paths(named, state.position)
        logdensity = model.logdensity_fn(position, batch, batch.x.shape[0])
        info = LatentGibbsInfo(logdensity, evals if collapse else None)
        return LatentGibbsState(position, tuple(preacts), tuple(postacts)), info

    return SamplingAlgorithm(init, step)


@config
@dataclass(frozen=True)
class LatentGibbs:
    """Gibbs sampling of a ReLU MLP with noisy activations as latent variables.

    Piccioli, Troiani & Zdeborová (2023) add Gaussian noise to every hidden pre-activation
    (variance Δz, ``preactivation_var``) and post-activation (variance Δx,
    ``postactivation_var``) of the network. With these as latent variables each block —
    a layer's weights and biases, a layer's pre-activations, a layer's post-activations —
    has a conditional that is sampled exactly: Bayesian linear regression for the weights,
    a two-piece truncated normal for ReLU pre-activations, a Gaussian for the
    post-activations; see :func:`latent_gibbs`. ``postactivation_var=0`` drops the
    post-activation noise (X = relu(Z)); the pre-activations are then drawn one unit at a
    time (all examples at once) given the next layer, still exactly. A sweep costs a few
    matrix products over the data plus a Cholesky factor per layer, O(N · P), against
    O(k · N · P) for a :class:`CoordinateGibbs` sweep, and moves all weights of a layer
    jointly.

    Mixing. Given the latents, a layer's weights are pinned to within √(Δ/N) (Δ the noise
    of the layer's targets), while their posterior spread is set by the output noise and
    by the symmetries of the network, so on large data sets the chain moves slowly, as
    data augmentation samplers do; post-activation latents add a second such coupling
    (X W' ≈ Z' or y). ``collapse=True`` (with Δx = 0) removes the first coupling: each
    hidden unit's weights are drawn with its pre-activations integrated out, and moved
    along the ReLU's scale symmetry (θ_j, w_j) → (c θ_j, w_j / c) jointly with its
    outgoing weights; the sweep then costs some 12–14 O(N) likelihood evaluations per
    hidden unit, more than the matrix products of the plain sweep. On the teacher–student
    regression of ``benchmarks/gibbs_scaling.py`` (2 inputs, 33 weights, 200 examples,
    output noise 0.1) the predictions needed 1,100–3,800 plain sweeps per effective sample
    (Δz = 0.1 to 0.01; the sweeps of both chains counted), so thin (``thinning``) rather
    than store every sweep; collapsed, 47–92 sweeps, fewer than CoordinateGibbs's 107, but
    each cost about 4 of its sweeps (the log Φ of the collapsed likelihood), so the ESS
    per second was 0.3–0.6× CoordinateGibbs's (plain: 0.05–0.15×) and a quarter of NUTS's
    at best; on a larger setting (97 weights, 500 examples) neither Gibbs sampler mixed
    within the benchmark's short run. Without post-activation noise (the default) the
    sampled predictions are closer to those of the ordinary network's posterior.

    The noisy network is a different model from the ordinary one: its weight posterior
    is that of a network whose hidden units are noisy. As Δ → 0 it tends to the ordinary
    network's posterior (at the price of slower mixing); the output noise is the model's
    Gaussian likelihood in both. With no hidden layer there are no latents and the sampler
    draws the exact linear-regression posterior.

    Predictions use the deterministic forward pass of the sampled weights, like every
    other :class:`~bayesnn.Posterior`: the network the user built is the model of
    interest, the activation noise is a device to make Gibbs sampling possible, and for
    small Δ the two predictives differ by O(Δ ‖W‖²) in variance.

    Parameters
    ----------
    num_samples, num_warmup, num_chains, thinning, init
        As :class:`~bayesnn.inference.coordinate_gibbs.CoordinateGibbs` (the latents start
        at their noise-free values).
    preactivation_var : float or sequence of float
        Δz > 0, one value for all hidden layers or one per hidden layer.
    postactivation_var : float or sequence of float
        Δx ≥ 0, likewise; 0: no post-activation latents.
    collapse : bool
        Also draw each hidden unit's weights with its pre-activations integrated out, and
        move them along the scale symmetry (see Mixing); needs ``postactivation_var=0``.
        ``sample_stats`` then holds ``num_evals``, the likelihood evaluations per sweep.

    Notes
    -----
    Every block is drawn given all the data: no minibatches, as an exact draw from the
    conditional of a noisy minibatch density does not leave the posterior invariant
    (:mod:`bayesnn.inference.gibbs`). Needs a network with a dense view
    (:attr:`~bayesnn.BNN.dense_view`: a :class:`~bayesnn.models.MLP`) with ``relu`` (or
    ``linear``) activation, a Gaussian prior on every weight with one variance per leaf
    (``priors.Normal``, ``priors.FanInNormal``), and either a homoscedastic
    ``likelihoods.Gaussian`` with fixed scale or ``likelihoods.Probit`` (binary labels,
    untempered): its latent outputs ``u ~ N(f, 1)``, ``y = 1[u > 0]``, are one more Gibbs
    block (Albert & Chib 1993).

    References
    ----------
    Piccioli, G., Troiani, E. & Zdeborová, L. (2023). Gibbs sampling the posterior of
    neural networks. arXiv:2306.02729.
    Albert, J. H. & Chib, S. (1993). Bayesian analysis of binary and polychotomous
    response data. *JASA* 88(422), 669–679.
    Murray, I., Adams, R. P. & MacKay, D. J. C. (2010). Elliptical slice sampling.
    *AISTATS*, 541–548.
    Liu, J. S. & Sabatti, C. (2000). Generalised Gibbs sampler and multigrid Monte Carlo
    for Bayesian computation. *Biometrika* 87(2), 353–369.
    van Dyk, D. A. & Park, T. (2008). Partially collapsed Gibbs samplers. *JASA* 103,
    790–796.
    """

    num_samples: int = 1000
    num_warmup: int = 1000
    num_chains: int = 1
    thinning: int = 1
    preactivation_var: float | Sequence[float] = 1e-1
    postactivation_var: float | Sequence[float] = 0.0
    collapse: bool = False
    init: str | MAP = "random"

    def __post_init__(self):
        check_gibbs_args(self)
        for name, zero in (("preactivation_var", False), ("postactivation_var", True)):
            value = getattr(self, name)
            _per_layer(value, len(value) if isinstance(value, Sequence) else 1, name, zero)
        post = self.postactivation_var
        if self.collapse and any(post if isinstance(post, Sequence) else (post,)):
            raise ValueError(f"collapse=True needs postactivation_var=0, got {post!r}")

    def run(
        self, model: BNN, data: Dataset, key, *, progress=None, checkpoint=None
    ) -> Posterior:
        gibbs = latent_gibbs(model, self.preactivation_var, self.postactivation_var,
                             self.collapse)

        def step(key, states, t, x, y):
            keys = jax.random.split(key, self.num_chains)
            return jax.vmap(gibbs.step, in_axes=(0, 0, None))(keys, states, (x, y))

        k_init, k_run = jax.random.split(key)
        states, map_info = start_chains(k_init, model, data, self, gibbs.init,
                                        progress=progress)
        res = sample_chains(
            step, states, k_run, thinned_steps(self.num_warmup, self.num_samples, self.thinning),
            jnp.asarray(data.x), jnp.asarray(data.y), desc="LatentGibbs", progress=progress,
            checkpoint=checkpoint, hint="try larger preactivation_var / postactivation_var",
        )
        return gibbs_posterior(model, self, data.x, res.draws, res, map_info)

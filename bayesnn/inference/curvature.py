"""Curvature of the log-likelihood for Laplace approximations, and the Laplace evidence.

The curvature is the generalised Gauss–Newton matrix ``H = Σ_n J_nᵀ Λ_n J_n`` (``J_n`` the
Jacobian of the network outputs with respect to the weights, ``Λ_n`` the Hessian of
``-log p(y_n | f)`` with respect to the outputs; exact for the natural links: Gaussian
identity, Categorical softmax, Bernoulli sigmoid) or the empirical Fisher, which replaces
``Λ_n`` by ``r_n r_nᵀ`` with ``r_n = ∇_f log p(y_n | f)``, so that ``H = Σ_n g_n g_nᵀ``. It is
summed over the data in row chunks of fixed size, so memory is bounded whatever ``N``.

Every structure holds an eigendecomposition ``H = V diag(λ) Vᵀ``, so the posterior precision
``H + δI`` of any prior precision ``δ`` is diagonal in the same basis: its inverse square
root, its log-determinant and the linearised predictive variance ``J (H + δI)⁻¹ Jᵀ`` come
without a new factorisation, and the evidence is a scalar function of ``δ`` (Immer,
Korzepa & Bauer 2021). JAX, NumPyro and BlackJAX have no such curvature; it is written
here.

References
----------
MacKay, D. J. C. (1992). A practical Bayesian framework for backpropagation networks.
*Neural Computation* 4(3), 448–472.
Martens, J. & Grosse, R. (2015). Optimizing neural networks with Kronecker-factored
approximate curvature. *ICML* (section 3, eq. 1–2).
Grosse, R. & Martens, J. (2016). A Kronecker-factored approximate Fisher matrix for
convolution layers. *ICML* (KFC: its IAD, SH and SUD assumptions).
Ritter, H., Botev, A. & Barber, D. (2018). A scalable Laplace approximation for neural
networks. *ICLR* (section 3).
Halko, N., Martinsson, P.-G. & Tropp, J. A. (2011). Finding structure with randomness.
*SIAM Review* 53(2), 217–288 (Algorithms 4.4 and 5.3).
Immer, A., Korzepa, M. & Bauer, M. (2021). Improving predictions of Bayesian neural nets
via local linearization. *AISTATS* (section 3, eq. 4).
Immer, A., Bauer, M., Fortuin, V., Rätsch, G. & Khan, M. E. (2021). Scalable marginal
likelihood estimation for model selection in deep learning. *ICML*.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from bayesnn.bnn import BNN
from bayesnn.data import Dataset
from bayesnn.inference.programs import StaticModel
from bayesnn.tree import flatten_paths, unflatten_paths

__all__ = [
    "Subset", "Full", "Diag", "Kron", "KronFactor", "LowRank", "HESSIANS", "CURVATURES",
    "output_hessians", "jacobians", "curvature", "log_likelihood", "log_evidence",
    "optimal_prior_precision", "optimal_noise_and_prior", "optimal_layer_prior_precisions",
    "layer_log_evidence", "scaled",
]

HESSIANS = ("full", "diag", "kron", "lowrank")
CURVATURES = ("ggn", "ef")


class Subset(NamedTuple):
    """The weights a Laplace approximation covers, flattened one leaf after another.

    ``paths`` are parameter paths in ``position["net"]`` (in its leaf order) and ``shapes``
    their shapes; ``layers`` the module paths of the Dense and Conv layers (``"layers/1"``)
    that make up the subset, kernel and bias each, when a Kronecker factorisation needs
    them. Hashable, so it can be a static argument of a jitted function.
    """

    paths: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    layers: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        """Number of weights ``P``."""
        return sum(math.prod(s) for s in self.shapes)

    def offset(self, path: str) -> int:
        """Where the leaf at ``path`` starts in the flat vector."""
        i = self.paths.index(path)
        return sum(math.prod(s) for s in self.shapes[:i])

    def ravel(self, net) -> jax.Array:
        """The subset's weights of ``net`` as one vector ``(P,)``."""
        named = flatten_paths(net)
        return jnp.concatenate([jnp.ravel(named[p]) for p in self.paths])

    def unravel(self, vec) -> dict:
        """``{path: leaf}`` from a vector ``(..., P)`` (leading axes kept)."""
        out, start = {}, 0
        for path, shape in zip(self.paths, self.shapes, strict=True):
            stop = start + math.prod(shape)
            out[path] = vec[..., start:stop].reshape(vec.shape[:-1] + shape)
            start = stop
        return out

    def insert(self, net, vec):
        """``net`` with the subset's weights replaced by ``vec``."""
        return unflatten_paths(flatten_paths(net) | self.unravel(vec), like=net)

    def blocks(self) -> list[np.ndarray]:
        """For each layer, the flat indices of its weights ``[kernel; bias]`` ``(in+1, out)``
        (a convolution's kernel ``(*window, in, out)`` flattened to ``(prod(window) · in,
        out)``)."""
        out = []
        for layer in self.layers:
            shape = self.shapes[self.paths.index(f"{layer}/kernel")]
            fan_in, fan_out = math.prod(shape[:-1]), shape[-1]
            kernel = self.offset(f"{layer}/kernel") + np.arange(fan_in * fan_out)
            bias = self.offset(f"{layer}/bias") + np.arange(fan_out)
            out.append(np.concatenate([kernel, bias]).reshape(fan_in + 1, fan_out))
        return out

    def groups(self) -> dict[str, np.ndarray]:
        """The flat indices of each module's weights, by module path (a parameter path
        without its last part), in leaf order: the layers of a per-layer prior."""
        out: dict[str, list] = {}
        for path, shape in zip(self.paths, self.shapes, strict=True):
            start = self.offset(path)
            out.setdefault(path.rpartition("/")[0], []).append(
                np.arange(start, start + math.prod(shape)))
        return {m: np.concatenate(idx) for m, idx in out.items()}

    def per_weight(self, by_group: dict[str, float]) -> jax.Array:
        """A vector ``(P,)`` holding ``by_group[module]`` at each module's weights."""
        out = np.zeros(self.size, np.result_type(float))
        for m, idx in self.groups().items():
            out[idx] = by_group[m]
        return jnp.asarray(out)


# -- structures: eigendecompositions of H and the operations of (H + δI)⁻¹ ---------------
# δ is a scalar, or for Diag and Kron a vector (P,) that is constant over each layer
# (a per-layer prior): their layers' blocks keep their eigenbases under it.


class Full(NamedTuple):
    """``H = V diag(λ) Vᵀ`` as a dense ``(P, P)`` eigendecomposition."""

    eigvals: jax.Array
    eigvecs: jax.Array

    def dense(self, subset: Subset) -> jax.Array:
        """``H`` as a ``(P, P)`` matrix."""
        return (self.eigvecs * self.eigvals) @ self.eigvecs.T

    def sample(self, subset: Subset, delta, z) -> jax.Array:
        """``(H + δI)^{-1/2} z`` for standard normal rows ``z`` ``(S, P)``."""
        return (z / jnp.sqrt(self.eigvals + delta)) @ self.eigvecs.T

    def jsj(self, subset: Subset, delta, jac) -> jax.Array:
        """``J (H + δI)⁻¹ Jᵀ`` ``(B, K, K)`` for Jacobians ``(B, K, P)``."""
        t = (jac @ self.eigvecs) / jnp.sqrt(self.eigvals + delta)
        return jnp.einsum("bkp,blp->bkl", t, t)


class Diag(NamedTuple):
    """The diagonal of ``H`` ``(P,)`` (its eigenvectors are the weights themselves)."""

    eigvals: jax.Array

    def layer_eigvals(self, subset: Subset) -> dict[str, jax.Array]:
        """The eigenvalues of each module's block of ``H``, by module path."""
        return {m: self.eigvals[idx] for m, idx in subset.groups().items()}

    def dense(self, subset: Subset) -> jax.Array:
        return jnp.diag(self.eigvals)

    def sample(self, subset: Subset, delta, z) -> jax.Array:
        return z / jnp.sqrt(self.eigvals + delta)

    def jsj(self, subset: Subset, delta, jac) -> jax.Array:
        return jnp.einsum("bkp,p,blp->bkl", jac, 1.0 / (self.eigvals + delta), jac)


class KronFactor(NamedTuple):
    """One layer's ``H ≈ A ⊗ G`` by the eigendecompositions of its two factors.

    A layer maps inputs ``ã_{n,t}`` (with a 1 appended, size ``in + 1``) to pre-activations
    ``z_{n,t} = Wᵀ ã_{n,t}`` at ``T`` positions ``t`` (one for a Dense layer; a
    convolution's output pixels, ``ã_{n,t}`` the patch under its window). Then
    ``A = Σ_{n,t} ã_{n,t} ã_{n,t}ᵀ / N`` ``(in + 1, in + 1)`` and
    ``G = Σ_{n,t} J_{n,t}ᵀ Λ_n J_{n,t} / T`` ``(out, out)``, ``J_{n,t}`` the Jacobian of
    the outputs in ``z_{n,t}``; the layer's weights are ``[kernel; bias]``
    ``(in + 1, out)``, flattened row by row. For ``T = 1`` this is KFAC (Martens & Grosse
    2015, eq. 1–2); for a convolution, KFC (Grosse & Martens 2016): the exact block
    ``Σ_n Σ_{t,t'} ã_{n,t} ã_{n,t'}ᵀ ⊗ J_{n,t}ᵀ Λ_n J_{n,t'}`` with the cross-position
    terms ``t ≠ t'`` dropped (spatially uncorrelated derivatives, SUD), then
    ``Σ_{n,t} ã_{n,t} ã_{n,t}ᵀ ⊗ J_{n,t}ᵀ Λ_n J_{n,t} ≈ A ⊗ G``: the derivative factor
    taken independent of the inputs (IAD) and the same at every position (spatial
    homogeneity, SH), its average over examples and positions. It is exact where
    ``J_{n,t}ᵀ Λ_n J_{n,t'}`` is one constant matrix for ``t = t'`` and zero otherwise, e.g.
    a Gaussian likelihood on the pre-activations of a layer as the outputs (a Dense layer;
    a convolution whose output pixels are flattened into the outputs).
    """

    in_eigvals: jax.Array
    in_eigvecs: jax.Array
    out_eigvals: jax.Array
    out_eigvecs: jax.Array

    def scale(self, delta) -> jax.Array:
        """``(a_i g_j + δ)^{-1/2}`` ``(in + 1, out)``: the eigenvalues of the precision (δ a
        scalar or ``(in + 1, out)``, constant)."""
        return jax.lax.rsqrt(jnp.outer(self.in_eigvals, self.out_eigvals) + delta)


class Kron(NamedTuple):
    """Block-diagonal over Dense and Conv layers, each block Kronecker-factored (KFAC, KFC).

    Memory per layer is ``(in+1)² + out²``, never the ``((in+1)·out)²`` of its block.
    """

    factors: tuple[KronFactor, ...]

    def layer_eigvals(self, subset: Subset) -> dict[str, jax.Array]:
        """The eigenvalues of each layer's block of ``H``, by module path."""
        return {m: jnp.outer(f.in_eigvals, f.out_eigvals).ravel()
                for m, f in zip(subset.layers, self.factors, strict=True)}

    @property
    def eigvals(self) -> jax.Array:
        return jnp.concatenate(
            [jnp.outer(f.in_eigvals, f.out_eigvals).ravel() for f in self.factors])

    def dense(self, subset: Subset) -> jax.Array:
        order = np.concatenate([b.ravel() for b in subset.blocks()])
        blocks = [jnp.kron((f.in_eigvecs * f.in_eigvals) @ f.in_eigvecs.T,
                           (f.out_eigvecs * f.out_eigvals) @ f.out_eigvecs.T)
                  for f in self.factors]
        block_diag = jax.scipy.linalg.block_diag(*blocks)
        return jnp.zeros_like(block_diag).at[order[:, None], order[None, :]].set(block_diag)

    def sample(self, subset: Subset, delta, z) -> jax.Array:
        out = jnp.zeros_like(z)
        for f, idx in zip(self.factors, subset.blocks(), strict=True):
            w = f.in_eigvecs @ (z[:, idx] * f.scale(_block(delta, idx))) @ f.out_eigvecs.T
            out = out.at[:, idx].set(w)
        return out

    def jsj(self, subset: Subset, delta, jac) -> jax.Array:
        total = 0.0
        for f, idx in zip(self.factors, subset.blocks(), strict=True):
            t = jnp.einsum("ia,bkij,jg->bkag", f.in_eigvecs, jac[..., idx], f.out_eigvecs)
            t = t * f.scale(_block(delta, idx))
            total = total + jnp.einsum("bkag,blag->bkl", t, t)
        return total


def _block(delta, idx):
    """A layer's part of ``δ``: itself if scalar, else the entries at ``idx``."""
    return delta if jnp.ndim(delta) == 0 else delta[idx]


class LowRank(NamedTuple):
    """The top ``rank`` eigenpairs of ``H``: ``H ≈ U diag(s) Uᵀ``, ``U`` ``(P, rank)``."""

    eigvals: jax.Array
    eigvecs: jax.Array

    def dense(self, subset: Subset) -> jax.Array:
        return (self.eigvecs * self.eigvals) @ self.eigvecs.T

    def sample(self, subset: Subset, delta, z) -> jax.Array:
        # (H + δI)^{-1/2} = δ^{-1/2} I + U diag((s + δ)^{-1/2} - δ^{-1/2}) Uᵀ
        c = jax.lax.rsqrt(self.eigvals + delta) - jax.lax.rsqrt(delta)
        return z * jax.lax.rsqrt(delta) + ((z @ self.eigvecs) * c) @ self.eigvecs.T

    def jsj(self, subset: Subset, delta, jac) -> jax.Array:
        ju = jac @ self.eigvecs
        c = 1.0 / (self.eigvals + delta) - 1.0 / delta
        return (jnp.einsum("bkp,blp->bkl", jac, jac) / delta
                + jnp.einsum("bkr,r,blr->bkl", ju, c, ju))


def scaled(curv, factor: float):
    """The curvature ``factor · H`` in ``curv``'s structure (a Gaussian likelihood's
    Gauss–Newton matrix at another noise std: ``H ∝ 1/σ²``)."""
    if isinstance(curv, Kron):  # A ⊗ G: G's eigenvalues
        return Kron(tuple(f._replace(out_eigvals=f.out_eigvals * factor) for f in curv.factors))
    return curv._replace(eigvals=curv.eigvals * factor)


# -- per-example pieces --------------------------------------------------------------------


def output_hessians(model: BNN, f, y, lik_params, kind: str = "ggn") -> jax.Array:
    """``Λ_n`` ``(B, K, K)``: the Hessian of the tempered ``-log p(y_n | f_n)`` in ``f_n``
    (``"ggn"``), or the outer product of its gradient (``"ef"``)."""
    temperature = model.likelihood.temperature

    def nll(fn, yn):
        return -model.likelihood.log_prob(fn[None], yn[None], lik_params)[0] / temperature

    if kind == "ggn":
        return jax.vmap(jax.hessian(nll))(f, y)
    g = jax.vmap(jax.grad(nll))(f, y)
    return g[:, :, None] * g[:, None, :]


def jacobians(model: BNN, position, subset: Subset, x) -> jax.Array:
    """Per-example Jacobians ``(B, K, P)`` of the outputs in the subset's weights."""
    vec = subset.ravel(position["net"])

    def outputs(v, xn):
        net = subset.insert(position["net"], v)
        return model.apply({"net": net, "lik": position["lik"]}, xn[None])[0]

    return jax.vmap(jax.jacrev(outputs), (None, 0))(vec, x)


def _weighted_hessians(model, position, kind, x, y, mask):
    f = model.apply(position, x)
    return output_hessians(model, f, y, position["lik"], kind) * mask[:, None, None]


def _ggn_chunk(model, position, subset, kind, form, x, y, mask, v=None):
    """``Σ_n J_nᵀ Λ_n J_n`` over one chunk: dense (``form="full"``), its diagonal
    (``"diag"``) or times ``v`` ``(P, r)`` (``"matmul"``)."""
    jac = jacobians(model, position, subset, x)
    lam = _weighted_hessians(model, position, kind, x, y, mask)
    if form == "diag":
        return jnp.einsum("bkp,bkl,blp->p", jac, lam, jac)
    if form == "full":
        return jnp.einsum("bkp,bkl,blq->pq", jac, lam, jac)
    return jnp.einsum("bkp,bkl,blr->pr", jac, lam, jnp.einsum("blq,qr->blr", jac, v))


def _kron_chunk(model, position, subset, kind, x, y, mask):
    """Each layer's ``(Σ_{n,t} ã ãᵀ, Σ_{n,t} J_{n,t}ᵀ Λ_n J_{n,t} / T)`` over one chunk (see
    :class:`KronFactor`): the inputs (a convolution's patches) and the output Jacobians of
    the pre-activations ``z`` are tapped through :meth:`BNN.apply_dense`, ``z = h @ W + ε``
    with ``ε = 0``."""

    def outputs(eps):
        inputs = {}

        def tap(m):
            def matmul(h, w):
                inputs[m] = h
                return h @ w + (0.0 if eps is None else eps[m])
            return matmul

        f = model.apply_dense(position, x, {m: tap(m) for m in subset.layers})
        return f.sum(0), (f, inputs)

    # the shapes of the pre-activations (batch, *positions, out), from a first trace
    _, (_, shapes) = jax.eval_shape(outputs, None)
    eps = {m: jnp.zeros(h.shape[:-1] + (subset.shapes[subset.paths.index(f"{m}/kernel")][-1],),
                        jnp.result_type(float)) for m, h in shapes.items()}
    jz, (f, inputs) = jax.jacrev(outputs, has_aux=True)(eps)  # jz[m]: (K, B, *positions, out)
    lam = output_hessians(model, f, y, position["lik"], kind) * mask[:, None, None]
    out = []
    for m in subset.layers:
        h = inputs[m].reshape(x.shape[0], -1, inputs[m].shape[-1])  # (B, T, in)
        a = jnp.concatenate([h, jnp.ones_like(h[..., :1])], -1) * mask[:, None, None]
        j = jz[m].reshape(jz[m].shape[:2] + (h.shape[1], -1))  # (K, B, T, out)
        out.append((jnp.einsum("bti,btj->ij", a, a),
                    jnp.einsum("kbto,bkl,lbtp->op", j, lam, j) / h.shape[1]))
    return out


def _chunk_sum(fn, x, y, size: int):
    """``Σ_c fn(x_c, y_c, mask_c)`` over chunks of ``size`` rows, inside a traced program.

    Every chunk has one shape: the last ends at row N, its mask 0 on the rows the one
    before it took, so every row counts once."""
    n = x.shape[0]
    size = min(size, n)

    def part(i):
        start = jnp.minimum(i * size, n - size)
        mask = (start + jnp.arange(size) >= i * size).astype(jnp.result_type(float))
        take = partial(jax.lax.dynamic_slice_in_dim, start_index=start, slice_size=size)
        return fn(take(x), take(y), mask)

    def add(i, total):
        return jax.tree.map(jnp.add, total, part(i))

    return jax.lax.fori_loop(1, -(-n // size), add, part(0))


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _summed_curvature(static, subset, hessian, kind, size, position, x, y):
    """The ``"full"``, ``"diag"`` or ``"kron"`` curvature over all chunks, factorised: one
    program, kept for an equal model (:class:`~bayesnn.inference.programs.StaticModel`)."""
    model = static.model
    if hessian in ("full", "diag"):
        h = _chunk_sum(partial(_ggn_chunk, model, position, subset, kind, hessian), x, y, size)
        if hessian == "diag":
            return Diag(h)
        eigvals, eigvecs = jnp.linalg.eigh(h)
        return Full(jnp.clip(eigvals, 0.0), eigvecs)
    factors = []
    for a, g in _chunk_sum(partial(_kron_chunk, model, position, subset, kind), x, y, size):
        (la, qa), (lg, qg) = jnp.linalg.eigh(a / x.shape[0]), jnp.linalg.eigh(g)
        factors.append(KronFactor(jnp.clip(la, 0.0), qa, jnp.clip(lg, 0.0), qg))
    return Kron(tuple(factors))


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _summed_matmul(static, subset, kind, size, position, x, y, v):
    """``H v`` over all chunks (``hessian="lowrank"``'s passes)."""
    return _chunk_sum(partial(_ggn_chunk, static.model, position, subset, kind, "matmul", v=v),
                      x, y, size)


def curvature(model: BNN, position, subset: Subset, data: Dataset, *, hessian: str = "full",
              kind: str = "ggn", batch_size: int = 256, key=None, rank: int = 20,
              power_iterations: int = 1):
    """The curvature of the subset's weights at ``position``, summed over ``data``.

    Parameters
    ----------
    model : BNN
    position : pytree
        The linearisation point (a MAP estimate).
    subset : Subset
        The weights; ``hessian="kron"`` needs ``subset.layers``.
    data : Dataset
        Validated data (see :func:`~bayesnn.inference.base.prepare_data`).
    hessian : {"full", "diag", "kron", "lowrank"}
    kind : {"ggn", "ef"}
        Generalised Gauss–Newton or empirical Fisher.
    batch_size : int
        Rows per chunk: memory grows with ``batch_size × K × P`` (``"kron"``:
        ``batch_size × K × positions × out`` per layer, ``positions`` a convolution's
        output pixels), not with ``N``.
    key : PRNG key
        The random test matrix of ``"lowrank"`` (Halko et al. 2011, Algorithm 4.4).
    rank : int
        Eigenpairs kept by ``"lowrank"``; it takes ``rank + 10`` test vectors and
        ``power_iterations + 2`` passes over the data.

    Returns
    -------
    Full, Diag, Kron or LowRank
    """
    model = StaticModel(model)  # a refit of an equal model reuses the programs
    rows = jnp.asarray(data.x), jnp.asarray(data.y)
    if hessian != "lowrank":
        return _summed_curvature(model, subset, hessian, kind, batch_size, position, *rows)

    def matmul(v):
        return _summed_matmul(model, subset, kind, batch_size, position, *rows, v)

    width = min(rank + 10, subset.size)
    y = matmul(jax.random.normal(key, (subset.size, width)))
    for _ in range(power_iterations):
        y = matmul(jnp.linalg.qr(y)[0])
    q = jnp.linalg.qr(y)[0]
    s, w = jnp.linalg.eigh(q.T @ matmul(q))
    keep = slice(width - min(rank, width), width)  # eigh sorts ascending: the top ones
    return LowRank(jnp.clip(s[keep], 0.0), q @ w[:, keep])


@partial(jax.jit, static_argnums=(0, 1))
def _summed_loglik(static, size, position, x, y):
    def chunk(x, y, mask):
        return static.model.loglikelihood_fn(position, (x, y, mask.astype(bool)))

    return _chunk_sum(chunk, x, y, size)


def log_likelihood(model: BNN, position, data: Dataset, batch_size: int = 256) -> jax.Array:
    """The tempered ``Σ_n log p(y_n | x_n, θ) / T`` over ``data``, in row chunks."""
    return _summed_loglik(StaticModel(model), batch_size, position, jnp.asarray(data.x),
                          jnp.asarray(data.y))


# -- the evidence ----------------------------------------------------------------------


def log_evidence(loglik, sq_dist, num_params: int, eigvals, delta):
    """The Laplace log marginal likelihood of an isotropic Gaussian prior of precision δ.

    ``log p(D | θ*) + log N(θ*; μ₀, I/δ) + (P/2) log 2π - ½ log det(H + δI)``
    ``= loglik + (P/2) log δ - (δ/2) sq_dist - ½ Σ_i log(λ_i + δ)``, where ``sq_dist`` is
    ``‖θ* - μ₀‖²`` and ``eigvals`` are the eigenvalues of ``H`` (fewer than ``P``: the others
    are 0, as for a low-rank ``H``). MacKay (1992), eq. 25; Immer et al. (2021), eq. 4.
    """
    eigvals = jnp.asarray(eigvals)
    missing = num_params - eigvals.shape[0]
    logdet = jnp.sum(jnp.log(eigvals + delta)) + missing * jnp.log(delta)
    return loglik + 0.5 * num_params * jnp.log(delta) - 0.5 * delta * sq_dist - 0.5 * logdet


def optimal_prior_precision(sq_dist, eigvals, *, lower: float = 1e-8,
                            upper: float = 1e8) -> float:
    """The δ in ``[lower, upper]`` that maximises :func:`log_evidence` at fixed θ*.

    In ``t = log δ`` the evidence is strictly concave, and its slope is
    ``(γ - δ ‖θ* - μ₀‖²) / 2`` with ``γ = Σ_i λ_i / (λ_i + δ)`` the effective number of
    parameters (MacKay 1992, eq. 28: the optimum is ``δ = γ / ‖θ* - μ₀‖²``). The root of the
    slope is found by SciPy's ``brentq`` in float64, to machine precision.
    """
    eigvals = np.asarray(eigvals, np.float64)
    sq_dist = float(sq_dist)

    def slope(t):
        delta = np.exp(t)
        return np.sum(eigvals / (eigvals + delta)) - delta * sq_dist

    lo, hi = np.log(lower), np.log(upper)
    if slope(lo) <= 0 or slope(hi) >= 0:
        return float(lower if slope(lo) <= 0 else upper)
    return float(np.exp(optimize.brentq(slope, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps)))


def optimal_noise_and_prior(loglik, num_targets: int, eigvals, sq_dist, *, scale: float,
                            temperature: float = 1.0, prior_precision: float | None = None,
                            max_iterations: int = 500) -> tuple[float, float]:
    """The Gaussian noise std σ (and δ, unless ``prior_precision`` is given) maximising the
    Laplace evidence of a Gaussian likelihood at fixed θ*: ``(σ, δ)``.

    With a Gaussian likelihood the generalised Gauss–Newton matrix is ``H₁ / σ²``, so the
    evidence is a function of ``σ`` and ``δ`` through the eigenvalues ``eigvals`` of ``H``
    at ``σ = scale`` and the residual sum of squares, which follows from the tempered
    log-likelihood ``loglik`` at ``scale``:
    ``RSS = 2 σ₀² (−T loglik − n log σ₀ − (n/2) log 2π)``, ``n = num_targets``. Its
    stationary points are MacKay's (1992, eq. 28–29) ``δ = γ / ‖θ* − μ₀‖²`` and
    ``σ² = RSS / (n − T γ)``, ``γ = Σ_i λ_i / (λ_i + δ)`` the effective number of
    parameters; they are iterated, δ by :func:`optimal_prior_precision` at each σ, until σ²
    changes by less than 1e-12 of itself. The evidence is concave in ``log σ`` at fixed δ
    and in ``log δ`` at fixed σ. As in the papers, σ gets no hyperprior (type-II maximum
    likelihood); Immer, Bauer, Fortuin, Rätsch & Khan (2021) optimise the same evidence
    in both by gradient ascent.
    """
    n, t, s0 = float(num_targets), float(temperature), float(scale)
    rss = 2 * s0**2 * (-t * float(loglik) - n * np.log(s0) - 0.5 * n * np.log(2 * np.pi))
    unit = np.asarray(eigvals, np.float64) * s0**2  # H at σ = 1
    var, delta = s0**2, prior_precision
    for _ in range(max_iterations):
        eig = unit / var
        if prior_precision is None:
            delta = optimal_prior_precision(sq_dist, eig)
        gamma = float(np.sum(eig / (eig + delta)))
        new = max(rss / max(n - t * gamma, 1.0), (1e-6 * s0) ** 2)  # RSS = 0: no optimum
        done = abs(new - var) <= 1e-12 * var
        var = new
        if done:
            break
    return float(np.sqrt(var)), float(delta)


def optimal_layer_prior_precisions(sq_dev, subset: Subset, curv: Diag | Kron) -> dict[str, float]:
    """One δ per layer (module path) maximising the Laplace evidence of the prior
    ``N(μ₀, diag(δ_l)⁻¹)``, for a curvature that is block-diagonal over the layers.

    With ``H`` block-diagonal the log-determinant splits over the layers, so the evidence
    is a sum of one :func:`log_evidence` per layer in its own ``δ_l`` (:func:`layer_log_evidence`),
    each maximised by :func:`optimal_prior_precision` of the layer's eigenvalues and
    ``‖θ*_l - μ₀_l‖²``: MacKay's fixed point ``δ_l = γ_l / ‖θ*_l - μ₀_l‖²`` per layer
    (MacKay 1992, eq. 28, with one weight class per layer; Immer, Bauer, Fortuin, Rätsch &
    Khan 2021 tune per-layer precisions by gradient ascent on ``log δ`` instead).
    ``sq_dev`` is ``(θ* - μ₀)²`` ``(P,)``.
    """
    eigvals = curv.layer_eigvals(subset)
    return {m: optimal_prior_precision(float(jnp.sum(sq_dev[idx])), eigvals[m])
            for m, idx in subset.groups().items()}


def layer_log_evidence(loglik, sq_dev, subset: Subset, curv: Diag | Kron,
                       deltas: dict[str, float]) -> jax.Array:
    """The Laplace log evidence with one prior precision per layer, ``deltas[module]``:
    ``loglik`` plus each layer's :func:`log_evidence` term."""
    eigvals = curv.layer_eigvals(subset)
    return loglik + sum(log_evidence(0.0, jnp.sum(sq_dev[idx]), idx.size, eigvals[m], deltas[m])
                        for m, idx in subset.groups().items())

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import integrate, stats

import bayesnn as bnn
from bayesnn.inference import gibbs as gibbs_module
from bayesnn.inference.conditionals import (
    elliptical_slice,
    gaussian_draw,
    relu_preactivation_draw,
    relu_preactivation_log_marginal,
    truncated_normal_draw,
)
from bayesnn.inference.coordinate_gibbs import CoordinateGibbs, coordinate_gibbs, num_coordinates
from bayesnn.inference.hierarchical_nuts import HierarchicalNUTS
from bayesnn.inference.hyper import GammaPrecision, Hierarchical
from bayesnn.inference.latent_gibbs import LatentGibbs, _unitwise_preactivation_draw, latent_gibbs
from bayesnn.testing import (
    assert_gaussian_matches,
    assert_hyper_matches,
    hyper_posterior,
    linear_model,
    linear_posterior,
    linear_weights,
)
from bayesnn.tree import tree_size

# A prior scale other than 1 tells a prior variance from a prior std.
PRIOR, NOISE = 0.7, 0.5


@pytest.fixture(scope="module")
def linear_data():
    data, _ = bnn.data.linear_regression(n=40, num_features=2, noise=NOISE, key=0)
    return data


def _linear_model(network=None):
    return linear_model(2, PRIOR, bnn.likelihoods.Gaussian(scale=NOISE), network)


class _Linear(nnx.Module):
    """A linear model that is not a bayesnn MLP: CoordinateGibbs' generic path."""

    def __init__(self, rngs):
        self.input_shape, self.out_features = (2,), 1
        self.dense = nnx.Linear(2, 1, rngs=rngs)

    def __call__(self, x, *, key=None):
        return self.dense(x)


def _weights(post):
    return linear_weights(post.draws)


def test_coordinate_gibbs_recovers_the_linear_regression_posterior(linear_data):
    post = bnn.fit(_linear_model(), linear_data,
                   CoordinateGibbs(num_samples=600, num_warmup=20, num_chains=2,
                                   slice_width=0.5), key=0)
    assert (post.num_chains, post.num_draws) == (2, 600)
    mean, cov = linear_posterior(linear_data.x, linear_data.y, PRIOR, NOISE)
    assert_gaussian_matches(_weights(post), mean, cov)
    stats_ = post.info["sample_stats"]
    assert stats_["num_evals"].shape == (2, 600) and stats_["num_exhausted"].sum() == 0
    assert post.info["seconds"] > 0 and post.info["num_coordinates"] == 3
    diagnostics = post.info["diagnostics"]  # converged: no warning
    assert diagnostics["rhat"] < 1.05 and diagnostics["ess"] > 100


def test_same_key_same_draws_on_any_network(linear_data):
    """A network that is not a bayesnn MLP takes the generic path (a full forward pass per
    evaluation); a random scan; the same key gives the same draws."""
    model = _linear_model(_Linear(nnx.Rngs(0)))
    method = CoordinateGibbs(num_samples=500, num_warmup=20, num_chains=2, scan="random",
                             slice_width=0.5)
    post = bnn.fit(model, linear_data, method, key=3)
    a, b = (linear_weights(p.draws, ("net", "dense"))
            for p in (post, bnn.fit(model, linear_data, method, key=3)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], a[1])
    mean, cov = linear_posterior(linear_data.x, linear_data.y, PRIOR, NOISE)
    assert_gaussian_matches(a, mean, cov)
    pred = post.predict(linear_data.x[:5])
    np.testing.assert_allclose(pred.aleatoric_std, NOISE, rtol=1e-5)


def test_an_unconverged_gibbs_run_warns_about_rhat():
    """Two random starts and 20 sweeps of a hidden-layer network: the chains disagree."""
    data = bnn.data.gap_regression(n=40, noise=0.1, key=0)
    net = bnn.models.MLP(1, (8,), 1, rngs=nnx.Rngs(0))
    model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=0.1))
    method = LatentGibbs(num_chains=2, num_samples=20, num_warmup=0, init="random")
    with pytest.warns(UserWarning, match=r"LatentGibbs: the 2 chains have not converged: R-hat"):
        post = bnn.fit(model, data, method, key=0)
    assert post.info["diagnostics"]["rhat"] > 1.05


def test_latent_gibbs_recovers_the_linear_regression_posterior(linear_data, tmp_path):
    """No hidden layer: no latents, and each sweep is an exact posterior draw. Same key,
    same draws; a finished checkpoint gives them back without sampling."""
    method = LatentGibbs(num_samples=500, num_warmup=5, num_chains=2)
    path = tmp_path / "latent.ckpt"
    post = bnn.fit(_linear_model(), linear_data, method, key=0, checkpoint=path)
    for again in (bnn.fit(_linear_model(), linear_data, method, key=0),
                  bnn.fit(_linear_model(), linear_data, method, key=0, checkpoint=path)):
        np.testing.assert_array_equal(_weights(post), _weights(again))
    mean, cov = linear_posterior(linear_data.x, linear_data.y, PRIOR, NOISE)
    assert_gaussian_matches(_weights(post), mean, cov, min_ess=600)  # independent draws
    assert post.info["sample_stats"]["logdensity"].shape == (2, 500)


def test_coordinate_gibbs_caches_the_mlp_forward_pass_exactly():
    """After a sweep of column-by-column updates of the cached pre-activations (two hidden
    layers, a learned noise scale), the log-density equals a fresh evaluation."""
    net = bnn.models.MLP(2, (3, 2), 2, rngs=nnx.Rngs(0))
    model = bnn.BNN(net, bnn.priors.Normal(1.0),
                    bnn.likelihoods.Gaussian(scale=0.3, learn_scale=True))
    x = jax.random.normal(jax.random.key(1), (30, 2))
    y = jax.random.normal(jax.random.key(2), (30, 2))
    gibbs = coordinate_gibbs(model, scan="random")
    size = num_coordinates(model)
    assert size == 2 * 3 + 3 + 3 * 2 + 2 + 2 * 2 + 2 + 1
    state = jax.jit(gibbs.init)(model.init_position, (x, y))
    new, info = jax.jit(gibbs.step)(jax.random.key(0), state, (x, y), jax.random.key(3))
    fresh = jax.jit(model.logdensity_fn, static_argnums=2)(new.position, (x, y), 30)
    np.testing.assert_allclose(new.logdensity, fresh, rtol=1e-5)
    moved = jax.tree.map(lambda a, b: np.mean(np.asarray(a) != np.asarray(b)),
                         new.position, state.position)
    assert all(m == 1.0 for m in jax.tree.leaves(moved))  # every coordinate was updated
    assert info.num_evals >= size


def _geweke_chains(gibbs, model, x, num_steps, num_chains, key, probit=False):
    """Successive-conditional simulator (Geweke 2004): a Gibbs sweep given y, then a fresh
    y | rest; its stationary law is the joint prior, so weights keep their prior marginal.
    With ``probit``, y = 1[f + N(0, 1) > 0]; else y = f + N(0, NOISE²)."""
    k_init, k_run = jax.random.split(key)

    def resample_y(key, state):
        if hasattr(state, "postacts"):  # noisy network: y | last hidden post-activations
            last = state.position["net"]["layers"][len(state.postacts)]
            f = state.postacts[-1] @ last["kernel"] + last["bias"]
        else:
            f = model.apply(state.position, x)
        if probit:
            return (f[:, 0] + jax.random.normal(key, f.shape[:1]) > 0).astype(jnp.int32)
        return f + NOISE * jax.random.normal(key, f.shape)

    def chain(key, position):
        k0, k1, k_steps = jax.random.split(key, 3)
        state = gibbs.init(position, (x, jnp.zeros((x.shape[0], 1))))
        y = resample_y(k0, state)  # noise-free latents: a start near, not at, the joint prior

        def body(carry, k):
            state, y = carry
            k_sweep, k_y = jax.random.split(k)
            state = gibbs.step(k_sweep, state, (x, y))[0]
            return (state, resample_y(k_y, state)), _flat(state.position)

        return jax.lax.scan(body, (state, y), jax.random.split(k_steps, num_steps))[1]

    priors = jax.vmap(lambda k: model.prior.sample(k, model.init_position))(
        jax.random.split(k_init, num_chains))
    return jax.jit(jax.vmap(chain))(jax.random.split(k_run, num_chains),
                                    {"net": priors["net"], "lik": {}})


# Uncollapsed sweeps mix slowly: 1500 of them give an ESS of only 15-65, enough to catch a
# prior variance off by a factor 2, not by 10%; 500 collapsed sweeps give over 100 with one
# hidden layer, 68 with two.
GEWEKE_MIN_ESS = {False: 15, True: 60}


def _flat(position):
    return jnp.concatenate([a.ravel() for a in jax.tree.leaves(position)])


@pytest.mark.parametrize("activation,hidden,post_var,collapse", [
    ("relu", (2,), 0.1, False), ("relu", (2, 2), 0.0, False), ("relu", (2,), 0.0, True),
    pytest.param("relu", (2, 2), 0.0, True, marks=pytest.mark.slow),
    pytest.param("relu", (2, 2), (0.1, 0.0), False, marks=pytest.mark.slow),
    pytest.param("linear", (2,), 0.1, False, marks=pytest.mark.slow),
    pytest.param("linear", (2,), 0.0, False, marks=pytest.mark.slow),
    pytest.param("linear", (2,), 0.0, True, marks=pytest.mark.slow),
])
def test_latent_gibbs_keeps_the_joint_prior_invariant(activation, hidden, post_var, collapse):
    """Geweke's joint-distribution test of the whole noisy-network sweep (weights, ReLU
    pre-activations drawn elementwise given noisy post-activations, or unit by unit
    without them, with each unit's weights redrawn with its pre-activations integrated
    out under ``collapse``): the weights keep their N(0, 1) prior marginal."""
    net = bnn.models.MLP(1, hidden, 1, activation=activation, rngs=nnx.Rngs(0))
    model = bnn.BNN(net, bnn.priors.Normal(PRIOR), bnn.likelihoods.Gaussian(scale=NOISE))
    x = jnp.linspace(-1.5, 1.5, 3)[:, None]
    gibbs = latent_gibbs(model, 0.1, post_var, collapse)
    steps = 500 if collapse else 1500  # collapsed sweeps mix faster and cost more
    samples = _geweke_chains(gibbs, model, x, steps, 4, jax.random.key(0))[:, steps // 5:]
    size = samples.shape[-1]
    assert size == tree_size(model.init_position)
    assert_gaussian_matches(samples, np.zeros(size), PRIOR**2 * np.eye(size),
                            min_ess=GEWEKE_MIN_ESS[collapse])


@pytest.mark.parametrize("hidden,collapse", [((2,), False), ((2,), True)])
def test_latent_gibbs_with_a_probit_head_keeps_the_joint_prior_invariant(hidden, collapse):
    """Geweke's test with binary labels: the latent outputs u ~ N(f, 1) given y = 1[u > 0]
    (Albert & Chib 1993) feed the rest of the sweep in place of y."""
    net = bnn.models.MLP(1, hidden, 1, rngs=nnx.Rngs(0))
    model = bnn.BNN(net, bnn.priors.Normal(PRIOR), bnn.likelihoods.Probit())
    x = jnp.linspace(-1.5, 1.5, 10)[:, None]  # binary labels say less: more of them
    steps = 500 if collapse else 1500
    samples = _geweke_chains(latent_gibbs(model, 0.1, 0.0, collapse), model, x, steps, 4,
                             jax.random.key(1), probit=True)[:, steps // 5:]
    size = samples.shape[-1]
    assert_gaussian_matches(samples, np.zeros(size), PRIOR**2 * np.eye(size),
                            min_ess=GEWEKE_MIN_ESS[collapse])


def test_latent_gibbs_recovers_the_probit_regression_posterior():
    """No hidden layer: Albert & Chib's (1993) sampler for probit regression. Its draws'
    mean and covariance match the posterior's, computed by quadrature on a grid."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 1)).astype(np.float32)
    y = (1.5 * x[:, 0] - 0.5 + rng.standard_normal(30) > 0).astype(np.int32)
    model = bnn.BNN(bnn.models.MLP(1, (), 1, rngs=nnx.Rngs(0)), bnn.priors.Normal(PRIOR),
                    bnn.likelihoods.Probit())
    post = bnn.fit(model, (x, y), LatentGibbs(num_samples=1500, num_warmup=50, num_chains=2),
                   key=0)
    w, b = np.meshgrid(np.linspace(-3, 7, 401), np.linspace(-5, 4, 361), indexing="ij")
    sign = np.where(y == 1, 1.0, -1.0)
    log_post = stats.norm.logcdf(sign * (w[..., None] * x[:, 0] + b[..., None])).sum(-1)
    log_post += stats.norm.logpdf(w, scale=PRIOR) + stats.norm.logpdf(b, scale=PRIOR)
    density = np.exp(log_post - log_post.max())
    density /= density.sum()
    grid = np.stack([w, b], -1)
    mean = np.einsum("ij,ijk->k", density, grid)
    centred = grid - mean
    cov = np.einsum("ij,ijk,ijl->kl", density, centred, centred)
    assert density[[0, -1]].sum() + density[:, [0, -1]].sum() < 1e-8  # the grid holds it all
    assert_gaussian_matches(_weights(post), mean, cov, min_ess=300)


@pytest.mark.slow
def test_coordinate_gibbs_keeps_the_joint_prior_invariant():
    """Geweke's test of the cached hidden-layer updates of CoordinateGibbs."""
    net = bnn.models.MLP(1, (2,), 1, activation="tanh", rngs=nnx.Rngs(0))
    model = bnn.BNN(net, bnn.priors.Normal(PRIOR), bnn.likelihoods.Gaussian(scale=NOISE))
    x = jnp.linspace(-1.5, 1.5, 3)[:, None]
    gibbs = coordinate_gibbs(model, slice_width=1.0)
    step = lambda k, s, b: gibbs.step(k, s, b, k)  # noqa: E731
    samples = _geweke_chains(gibbs._replace(step=step), model, x, 1500, 4, jax.random.key(0))
    assert_gaussian_matches(samples[:, 100:], np.zeros(7), PRIOR**2 * np.eye(7))


def test_gaussian_draw_has_the_mean_and_covariance_of_its_precision():
    """Columns of N(P⁻¹ b, P⁻¹) through the row-by-row triangular inverse (on CPU)."""
    a = np.array([[2.0, 0.5, 0.0, 0.3], [0.5, 1.0, -0.4, 0.0], [0.0, -0.4, 3.0, 1.0],
                  [0.3, 0.0, 1.0, 0.8]])
    precision = a @ a.T + np.eye(4)
    b = np.array([1.0, -2.0, 0.5, 0.0])
    n = 40000
    draws = jax.jit(gaussian_draw)(jax.random.key(0), jnp.asarray(precision, jnp.float32),
                                   jnp.asarray(np.tile(b[:, None], (1, n)), jnp.float32))
    cov = np.linalg.inv(precision)
    mean = cov @ b
    assert_gaussian_matches(np.asarray(draws, np.float64).T[None], mean, cov)


@pytest.mark.parametrize("mean,std", [(2.0, 1.0), (0.0, 1.0), (-2.0, 1.0), (-6.0, 1.0),
                                      (-30.0, 0.5), (-3e3, 1.0), (-1e5, 2.0)])
def test_truncated_normal_draw_matches_scipy_into_the_far_tail(mean, std):
    n = 20000
    draw = jax.jit(truncated_normal_draw)
    z = np.asarray(draw(jax.random.key(0), jnp.full(n, mean), std), np.float64)
    a = -mean / std
    if a < 30:
        ref = stats.truncnorm(a, np.inf, loc=mean, scale=std)
        ref_mean, ref_std = ref.mean(), ref.std()
    else:  # far tail: the excess is exponential with rate a / std, up to O(1/a²)
        ref_mean = ref_std = std / a
    assert z.min() >= 0
    assert abs(z.mean() - ref_mean) < 5 * ref_std / np.sqrt(n)
    assert abs(z.std() / ref_std - 1) < 0.05


@pytest.mark.parametrize("mean,post", [(0.3, 0.5), (-1.0, 0.05), (1.5, 0.0), (0.0, -0.3)])
def test_relu_preactivation_draw_matches_its_density(mean, post):
    pre_var, post_var = 0.1, 0.05

    def density(z):
        return stats.norm.pdf(z, mean, pre_var**0.5) * stats.norm.pdf(post, max(z, 0.0),
                                                                      post_var**0.5)

    grid = (-10, 0, 10)
    mass = sum(integrate.quad(density, a, b)[0] for a, b in zip(grid, grid[1:], strict=False))
    m1 = sum(integrate.quad(lambda z: z * density(z), a, b)[0]
             for a, b in zip(grid, grid[1:], strict=False)) / mass
    m2 = sum(integrate.quad(lambda z: z * z * density(z), a, b)[0]
             for a, b in zip(grid, grid[1:], strict=False)) / mass
    n = 40000
    draw = jax.jit(relu_preactivation_draw)
    z = np.asarray(draw(jax.random.key(1), jnp.full(n, mean), pre_var, 1 / post_var,
                        post / post_var), np.float64)
    sd = np.sqrt(m2 - m1**2)
    assert abs(z.mean() - m1) < 5 * sd / np.sqrt(n)
    assert abs(z.var() / sd**2 - 1) < 0.05
    neg = integrate.quad(density, -10, 0)[0] / mass
    assert abs(np.mean(z < 0) - neg) < 5 * np.sqrt(neg * (1 - neg) / n) + 1e-3


@pytest.mark.parametrize("mean,precision,shift", [(0.3, 2.0, 1.0), (-1.0, 50.0, 30.0),
                                                  (2.0, 0.0, 0.0), (0.5, 100.0, -20.0)])
def test_relu_preactivation_log_marginal_matches_quadrature(mean, precision, shift):
    pre_var = 0.1

    def density(z):
        r = max(z, 0.0)
        return stats.norm.pdf(z, mean, pre_var**0.5) * np.exp(shift * r - precision * r * r / 2)

    ref = np.log(integrate.quad(density, -np.inf, 0)[0] + integrate.quad(density, 0, np.inf)[0])
    got = relu_preactivation_log_marginal(jnp.float32(mean), pre_var, precision, shift)
    np.testing.assert_allclose(float(got), ref, rtol=1e-4, atol=1e-4)


def _chain(step, init, num_steps, num_chains, key, draw=lambda c: c):
    """``num_chains`` chains of ``step(key, carry) -> carry`` from ``init``; returns
    ``draw(carry)`` of every step, ``(chain, step, ...)``."""
    def run(key):
        def body(carry, k):
            carry = step(k, carry)
            return carry, draw(carry)

        return jax.lax.scan(body, init, jax.random.split(key, num_steps))[1]

    return np.asarray(jax.jit(jax.vmap(run))(jax.random.split(key, num_chains)), np.float64)


def _f32(a):
    return jnp.asarray(a, jnp.float32)


def test_elliptical_slice_samples_a_gaussian_posterior():
    """Prior N(loc, diag(std²)) and a Gaussian likelihood of design @ θ: the closed-form
    Gaussian posterior (the update sees θ only through design @ θ)."""
    rng = np.random.default_rng(0)
    design = rng.standard_normal((6, 3))
    y = rng.standard_normal(6)
    loc, std, noise = np.array([0.5, -1.0, 0.0]), np.array([1.0, 2.0, 0.5]), 0.7
    cov = np.linalg.inv(np.diag(std**-2.0) + design.T @ design / noise**2)
    mean = cov @ (loc / std**2 + design.T @ y / noise**2)

    def loglik(m):
        return -jnp.sum((_f32(y) - m) ** 2) / (2 * noise**2)

    def step(key, theta):
        new, fitted, _ = elliptical_slice(key, loglik, theta, _f32(loc), _f32(std),
                                          _f32(design))
        return new

    assert_gaussian_matches(_chain(step, _f32(loc), 3000, 4, jax.random.key(0)), mean, cov)


def test_collapsed_unit_weights_match_brute_force_integration():
    """One hidden ReLU unit (1 input and a bias) and its output weight w', all N(0, 1)
    a priori: the chain of collapsed draws (elliptical slice for θ, the scale move for
    (θ, w'), then z), each followed by w' | z, y (the output layer's draw), has the mean
    and covariance of p(θ, w' | y) ∝ N(θ; 0, I) N(w'; 0, 1) Π_n ∫ N(z; [x_n, 1] θ, Δz)
    N(y_n; relu(z) w', σ²) dz, integrated on grids."""
    x = np.array([-1.0, -0.3, 0.4, 1.2])
    y = np.array([0.1, -0.2, 0.5, 1.1])
    pre_var, noise_var = 0.1, 0.3**2
    # brute force: (w, b, w') on a grid, each z integral on a grid of N(0, 1) quantiles t
    grid = np.linspace(-4, 4, 41)
    w, b, v = (a[..., None] for a in np.meshgrid(grid, grid, grid, indexing="ij"))
    t = np.linspace(-6, 6, 81)
    logp = -(w**2 + b**2 + v**2)[..., 0] / 2
    for xn, yn in zip(x, y, strict=True):
        z = w * xn + b + pre_var**0.5 * t
        lik = np.exp(-((yn - np.maximum(z, 0) * v) ** 2) / (2 * noise_var))
        logp += np.log(np.trapezoid(stats.norm.pdf(t) * lik, t, axis=-1) + 1e-300)
    p = np.exp(logp - logp.max()).ravel()
    p /= p.sum()
    points = np.stack([a[..., 0].ravel() for a in (w, b, v)], axis=1)
    mean = p @ points
    cov = (points - mean).T @ ((points - mean) * p[:, None])

    def step(key, carry):
        theta, z = carry
        k_unit, k_out = jax.random.split(key)
        z, (kernel, bias), _, _ = _unitwise_preactivation_draw(
            k_unit, jax.nn.relu, (relu_preactivation_draw, relu_preactivation_log_marginal), z,
            _f32(x[:, None]), (theta[:1, None], theta[1:2]), pre_var, theta[2:, None],
            _f32(y[:, None]) - jax.nn.relu(z) * theta[2], noise_var,
            (jnp.zeros((2, 1)), jnp.ones(2), jnp.zeros((1, 1)), jnp.ones(1)))
        a = jax.nn.relu(z[:, 0])  # w' | z, y: a Bayesian linear regression (no bias)
        precision = 1 + a @ a / noise_var
        out = (a @ _f32(y) / noise_var + jax.random.normal(k_out) * precision**0.5) / precision
        return jnp.concatenate([kernel[:, 0], bias, out[None]]), z

    init = (jnp.array([0.5, 0.0, 0.5]), jnp.zeros((4, 1)))
    draws = _chain(step, init, 2000, 4, jax.random.key(0), draw=lambda c: c[0])
    assert_gaussian_matches(draws, mean, cov)


@pytest.mark.parametrize("method", [CoordinateGibbs, LatentGibbs, HierarchicalNUTS])
def test_no_minibatches_and_the_docs_say_why(method):
    assert "batch_size" not in {f.name for f in dataclasses.fields(method)}
    why = " ".join(gibbs_module.__doc__.split())
    assert re.search("full conditional.*exact likelihood of all the data.*no longer leaves "
                     "the posterior invariant", why)
    assert "bayesnn.inference.gibbs" in method.__doc__  # each method points to it


@pytest.mark.parametrize("method", [CoordinateGibbs, LatentGibbs, HierarchicalNUTS])
def test_init_takes_the_shared_vocabulary(method):
    for init in ("network", "random", "prior", "map", bnn.MAP(epochs=1)):
        assert method(init=init).init == init
    with pytest.raises(ValueError, match="init must be one of"):
        method(init="zeros")


def test_bad_arguments():
    with pytest.raises(ValueError, match="scan"):
        CoordinateGibbs(scan="sometimes")
    with pytest.raises(ValueError, match="slice_width"):
        CoordinateGibbs(slice_width=0.0)
    with pytest.raises(ValueError, match="num_warmup"):
        LatentGibbs(num_warmup=-1)
    with pytest.raises(ValueError, match="preactivation_var"):
        LatentGibbs(preactivation_var=(0.1, 0.0))
    with pytest.raises(ValueError, match="postactivation_var must be >= 0"):
        LatentGibbs(postactivation_var=-1e-3)
    assert LatentGibbs(postactivation_var=(0.0, 0.1)).postactivation_var == (0.0, 0.1)
    with pytest.raises(ValueError, match="collapse=True needs postactivation_var=0"):
        LatentGibbs(postactivation_var=(0.0, 0.1), collapse=True)
    tanh = bnn.BNN(bnn.models.MLP(2, (3,), 1, activation="tanh", rngs=nnx.Rngs(0)),
                   bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian())
    with pytest.raises(ValueError, match="relu"):
        latent_gibbs(tanh, 0.1, 0.1)
    laplace = bnn.BNN(bnn.models.MLP(2, (3,), 1, rngs=nnx.Rngs(0)), bnn.priors.Laplace(1.0))
    with pytest.raises(ValueError, match="Gaussian prior"):
        latent_gibbs(laplace, 0.1, 0.1)
    learned = bnn.BNN(bnn.models.MLP(2, (3,), 1, rngs=nnx.Rngs(0)), bnn.priors.Normal(1.0),
                      bnn.likelihoods.Gaussian(learn_scale=True))
    with pytest.raises(ValueError, match="fixed scale"):
        latent_gibbs(learned, 0.1, 0.1)
    for lik, match in ((bnn.likelihoods.Bernoulli(), "or likelihoods.Probit"),
                       (bnn.likelihoods.Probit(temperature=0.5), "needs temperature 1")):
        with pytest.raises(ValueError, match=match):
            latent_gibbs(bnn.BNN(bnn.models.MLP(2, (3,), 1, rngs=nnx.Rngs(0)),
                                 bnn.priors.Normal(1.0), lik), 0.1, 0.0)
    relu = bnn.BNN(bnn.models.MLP(2, (3,), 1, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="one value per hidden layer"):
        latent_gibbs(relu, (0.1, 0.1), 0.1)
    with pytest.raises(ValueError, match="collapse=True needs postactivation_var=0"):
        latent_gibbs(relu, 0.1, 0.1, collapse=True)


@pytest.mark.slow
def test_hierarchical_nuts_samples_weights_and_precisions(linear_data):
    model = linear_model(2, PRIOR, bnn.likelihoods.Gaussian(scale=1.0, learn_scale=True))
    hier = Hierarchical(GammaPrecision(2.0, 1.0), noise=GammaPrecision(2.0, 0.5))
    method = HierarchicalNUTS(hier, num_samples=500, num_warmup=200, num_chains=2)
    post = bnn.fit(model, linear_data, method, key=0)
    hyper = post.info["hyperparameters"]
    assert set(hyper) == {"layers/0", "noise"} and hyper["noise"].shape == (2, 500)
    np.testing.assert_allclose(post.draws["lik"]["log_scale"], -0.5 * np.log(hyper["noise"]),
                               rtol=1e-5)
    # both precisions' marginals, the weights integrated out in closed form
    exact = hyper_posterior(linear_data.x, linear_data.y, hier.weights, hier.noise)
    assert_hyper_matches(hyper, exact, min_ess=300)
    assert post.info["sample_stats"]["diverging"].mean() < 0.05
    assert post.info["sample_stats"]["acceptance_rate"].mean() > 0.6
    with pytest.raises(ValueError, match="learn_scale=True"):
        bnn.fit(_linear_model(), linear_data, method, key=0)

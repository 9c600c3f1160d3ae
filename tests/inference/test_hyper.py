from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from flax import nnx
from scipy import stats

import bayesnn as bnn
from bayesnn.inference.hyper import (
    GammaPrecision,
    Hierarchical,
    gamma_conditional,
    gibbs_hyper_update,
    sample_precision,
    weight_groups,
)


def _model(learn_scale=False, hidden=(3,)):
    net = bnn.models.MLP(2, hidden, 1, rngs=nnx.Rngs(0))
    lik = bnn.likelihoods.Gaussian(scale=0.5, learn_scale=learn_scale)
    return bnn.BNN(net, bnn.priors.Normal(1.0), lik)


def test_neal_parametrisation_and_conditional():
    prior = GammaPrecision(alpha=4.0, scale=0.5)
    assert (prior.shape, prior.rate) == (2.0, 4.0 * 0.25 / 2)
    np.testing.assert_allclose(prior.distribution().mean, 0.5**-2)  # E[τ] = ω⁻²
    shape, rate = gamma_conditional(prior, sum_sq=3.0, count=10)
    assert (shape, rate) == ((4.0 + 10) / 2, (4.0 * 0.25 + 3.0) / 2)
    shape, rate = gamma_conditional(prior, sum_sq=3.0, count=10, temperature=2.0)
    assert (shape, rate) == (2.0 + 10 / 4, 0.5 + 3.0 / 4)
    with pytest.raises(ValueError, match="alpha"):
        GammaPrecision(alpha=0.0)


def test_gamma_normal_hyper_update_leaves_the_prior_invariant():
    """w ~ N(0, 1/τ), τ ~ Gamma(α/2, αω²/2): alternating exact draws of w | τ and τ | w
    (the conjugate update) keeps τ distributed as its prior."""
    prior = GammaPrecision(alpha=3.0, scale=0.7)
    n_chains, dim = 4000, 5
    gamma = stats.gamma(prior.shape, scale=1 / prior.rate)
    tau0 = jnp.asarray(gamma.rvs(n_chains, random_state=np.random.default_rng(0)), jnp.float32)

    def chain(key, tau):
        def body(tau, k):
            k_w, k_tau = jax.random.split(k)
            w = jax.random.normal(k_w, (dim,)) / jnp.sqrt(tau)
            return sample_precision(k_tau, prior, jnp.sum(w**2), dim), None

        return jax.lax.scan(body, tau, jax.random.split(key, 10))[0]

    tau = np.asarray(jax.jit(jax.vmap(chain))(jax.random.split(jax.random.key(1), n_chains), tau0))
    assert stats.kstest(tau, gamma.cdf).pvalue > 1e-3
    z = 4.0
    assert abs(tau.mean() - gamma.mean()) < z * gamma.std() / np.sqrt(n_chains)


def test_groups():
    model = _model()
    assert weight_groups(model) == {
        "layers/0": ("layers/0/bias", "layers/0/kernel"),
        "layers/1": ("layers/1/bias", "layers/1/kernel"),
    }
    assert len(weight_groups(model, "leaf")) == 4
    net = bnn.models.MLP(2, (3,), 1, rngs=nnx.Rngs(0))
    partial = bnn.BNN(net, bnn.priors.PerParameter({"layers/0/*": bnn.priors.Normal(1.0)}))
    assert list(weight_groups(partial)) == ["layers/0"]  # point estimates get no precision
    with pytest.raises(ValueError, match="group"):
        Hierarchical(group="unit")


def test_gibbs_hyper_update_draws_each_precision_from_its_conditional():
    model = _model(learn_scale=True)
    hier = Hierarchical(GammaPrecision(2.0, 1.0), noise=GammaPrecision(1.0, 0.3))
    x = jax.random.normal(jax.random.key(0), (20, 2))
    y = jax.random.normal(jax.random.key(1), (20, 1))
    position = model.init_params(jax.random.key(2))

    @jax.jit
    def both(key, position):
        # The update, and the same draws by hand (the update splits its key per group).
        tau, new = gibbs_hyper_update(key, position, hier, model, (x, y))
        keys = jax.random.split(key, 3)
        layer = position["net"]["layers"][1]
        sum_sq = jnp.sum(layer["kernel"] ** 2) + jnp.sum(layer["bias"] ** 2)
        resid = y - model.apply(position, x)
        by_hand = {"layers/1": sample_precision(keys[1], hier.weights, sum_sq, 4),
                   "noise": sample_precision(keys[2], hier.noise, jnp.sum(resid**2), 20)}
        return tau, new, by_hand

    tau, new, by_hand = both(jax.random.key(3), position)
    assert set(tau) == {"layers/0", "layers/1", "noise"}
    np.testing.assert_allclose(new["lik"]["log_scale"], -0.5 * np.log(tau["noise"]), rtol=1e-6)
    for name, value in by_hand.items():
        np.testing.assert_allclose(tau[name], value, rtol=1e-6)
    with pytest.raises(ValueError, match="training data"):
        gibbs_hyper_update(jax.random.key(3), position, hier, model)


def test_hierarchical_numpyro_model_has_the_hierarchical_density():
    model = _model(learn_scale=True)
    hier = Hierarchical(GammaPrecision(2.0, 1.5), noise=GammaPrecision(1.0, 0.3))
    x = np.asarray(jax.random.normal(jax.random.key(0), (20, 2)))
    y = np.asarray(jax.random.normal(jax.random.key(1), (20, 1)))
    position = model.init_params(jax.random.key(2))
    tau = {"layers/0": 2.0, "layers/1": 0.5, "noise": 4.0}
    sites = {f"hyper/{k}": jnp.float32(v) for k, v in tau.items()}
    sites |= {f"net/{p}": v for p, v in bnn.tree.flatten_paths(position["net"]).items()}
    names = []

    @jax.jit
    def log_density(sites):
        logp, trace = numpyro.infer.util.log_density(
            partial(hier.numpyro_model, model), (x, y), {}, sites)
        names.extend(n for n, s in trace.items() if s["type"] == "sample")  # at trace time
        return logp

    logp = log_density(sites)
    position["lik"]["log_scale"] = -0.5 * jnp.log(tau["noise"])
    want = (
        hier.logprior_fn(model, position, tau)
        + sum(hier.weights.distribution().log_prob(tau[g]) for g in ("layers/0", "layers/1"))
        + hier.noise.distribution().log_prob(tau["noise"])
        + model.loglikelihood_fn(position, (x, y))
    )
    np.testing.assert_allclose(logp, want, rtol=1e-5)
    assert set(names) == set(sites) | {"y"}


def test_logprior_and_checks():
    model = _model()
    hier = Hierarchical()
    position = model.init_params(jax.random.key(0))
    tau = {"layers/0": jnp.float32(4.0), "layers/1": jnp.float32(0.25)}
    leaves = position["net"]["layers"]
    want = sum(
        stats.norm(0, tau[f"layers/{i}"] ** -0.5).logpdf(np.asarray(leaves[i][k])).sum()
        for i in (0, 1) for k in ("kernel", "bias")
    )
    np.testing.assert_allclose(hier.logprior_fn(model, position, tau), want, rtol=1e-5)
    assert set(hier.init_precisions(model)) == {"layers/0", "layers/1"}
    with pytest.raises(ValueError, match="learn_scale=True"):
        Hierarchical(noise=GammaPrecision()).check(model)

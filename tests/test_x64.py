"""Float64 mode (``jax_enable_x64``) works for every method, on the conjugate model.

JAX fixes the precision at start-up, so the check runs in a subprocess.
"""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import jax
    import numpy as np
    from flax import nnx

    import bayesnn as bnn
    from bayesnn.testing import linear_posterior

    assert jax.config.jax_enable_x64
    data, _ = bnn.data.linear_regression(n=40, num_features=2, noise=0.5, key=0)
    data = bnn.data.Dataset(data.x.astype(np.float64), data.y.astype(np.float64))
    mean, _ = linear_posterior(data.x, data.y, 1.0, 0.5)
    methods = {
        "MAP": bnn.MAP(epochs=200, batch_size=None, learning_rate=0.05),
        "Ensemble": bnn.Ensemble(bnn.MAP(epochs=20, batch_size=None), size=2),
        "MeanFieldVI": bnn.MeanFieldVI(epochs=20, batch_size=20, num_samples=5),
        "SGLD": bnn.SGLD(step_size=1e-3, batch_size=20, num_warmup=50, num_samples=5,
                         num_chains=1, init="random"),
        "NUTS": bnn.NUTS(num_warmup=50, num_samples=50),
        "CoordinateGibbs": bnn.CoordinateGibbs(num_warmup=5, num_samples=5),
        "LatentGibbs": bnn.LatentGibbs(num_warmup=5, num_samples=5),
    }
    for name, method in methods.items():
        net = bnn.models.MLP(2, (), 1, activation="linear", rngs=nnx.Rngs(0))
        model = bnn.BNN(net, bnn.priors.Normal(1.0), bnn.likelihoods.Gaussian(scale=0.5))
        post = bnn.fit(model, data, method, key=0, progress=False)
        kernel = post.draws["net"]["layers"][0]["kernel"]
        assert kernel.dtype == np.float64, (name, kernel.dtype)
        assert post.predict(data.x).mean.dtype == np.float64, name
        if name == "MAP":  # the exact posterior mode, to float64 accuracy of the optimiser
            np.testing.assert_allclose(kernel[0, 0, :, 0], mean[:2], atol=1e-4)
        print(name, "ok")
    """
)


def test_every_method_runs_in_float64():
    env = {**os.environ, "JAX_ENABLE_X64": "1"}
    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.stdout.count(" ok") == 7


pytestmark = pytest.mark.filterwarnings("ignore")

"""The numba backend computes what the NumPy reference computes, for every configuration the API accepts."""

import subprocess
import sys

import numpy as np
import pytest

import minivae
from minivae import backend as backends

LIKELIHOODS = ["categorical", "bernoulli", "gaussian"]


def _data(likelihood, n=9, d=12, num_values=5, seed=0):
    rng = np.random.default_rng(seed)
    if likelihood == "categorical":
        return rng.integers(0, num_values, (n, d))
    if likelihood == "bernoulli":
        return rng.integers(0, 2, (n, d))
    return rng.standard_normal((n, d))


def _pair(likelihood, dtype, activation="leaky_relu", hidden=(7, 6)):
    return [minivae.VAE(12, 3, hidden=hidden, activation=activation, likelihood=likelihood, num_values=5,
                        learn_variance=True, dtype=dtype, seed=4, backend=name) for name in ("numpy", "numba")]


# Every configuration the API accepts: likelihood (with the Gaussian's fixed and learned variance)
# x activation (the leaky ReLU with its default and another slope) x KL method x dtype.
LIKELIHOOD_OPTIONS = {"categorical": {}, "bernoulli": {}, "gaussian-fixed": {"likelihood": "gaussian"},
                      "gaussian-learned": {"likelihood": "gaussian", "learn_variance": True}}
ACTIVATIONS = {"leaky_relu": {}, "leaky_relu-0.2": {"slope": 0.2}, "relu": {"activation": "relu"},
               "tanh": {"activation": "tanh"}, "sigmoid": {"activation": "sigmoid"}}
DTYPES = {"float64": (np.float64, 1e-10), "float32": (np.float32, 2e-5)}


def _model(backend, dtype, likelihood="categorical", **options):
    options = {"likelihood": likelihood, **options}
    return minivae.VAE(12, 3, hidden=(7, 6), num_values=5, dtype=dtype, seed=4, backend=backend, **options)


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("kl", ["analytic", "monte_carlo"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("likelihood", LIKELIHOOD_OPTIONS)
def test_same_loss_and_gradients_for_every_configuration(likelihood, activation, kl, dtype_name):
    dtype, tolerance = DTYPES[dtype_name]
    options = {"likelihood": "categorical", **LIKELIHOOD_OPTIONS[likelihood], **ACTIVATIONS[activation], "kl": kl}
    reference, compiled = (_model(name, dtype, **options) for name in ("numpy", "numba"))
    x = _data(options["likelihood"])
    eps = np.random.default_rng(1).standard_normal((9, 3))
    loss_numpy, grads_numpy = reference.loss_and_grads(x, eps=eps)
    loss_numba, grads_numba = compiled.loss_and_grads(x, eps=eps)
    assert loss_numba == pytest.approx(loss_numpy, rel=tolerance)
    assert list(grads_numba) == list(grads_numpy) == list(reference.params)
    for key, g in grads_numpy.items():
        # the gradients come back in the model's dtype on both backends
        assert g.dtype == grads_numba[key].dtype == dtype and grads_numba[key].shape == g.shape, key
        # relative to the largest entry: float32 sums in another order differ by a few ulps of it
        assert np.max(np.abs(grads_numba[key] - g)) <= tolerance * np.max(np.abs(g)), key


def test_mlp_with_a_non_default_slope_is_the_same_function_on_both_backends():
    # the example: the kernels once ignored the slope (max |diff| 0.19)
    from minivae.layers import MLP, LeakyReLU
    m = MLP("enc", [4, 5, 3], LeakyReLU(0.2))
    p = m.init_params(np.random.default_rng(0), np.float64)
    x = np.random.default_rng(0).standard_normal((6, 4))
    out_numpy, cache_numpy = m.forward(p, x, "numpy")
    out_numba, cache_numba = m.forward(p, x, "numba")
    np.testing.assert_allclose(out_numba, out_numpy, rtol=1e-12, atol=1e-14)
    dout = np.random.default_rng(1).standard_normal(out_numpy.shape)
    grads_numpy, grads_numba = {}, {}
    for backend, cache, grads in (("numpy", cache_numpy, grads_numpy), ("numba", cache_numba, grads_numba)):
        dx = m.backward(dout, cache, grads, need_dx=False, backend=backend)
        assert dx is None  # need_dx is honoured on both backends
    for key in grads_numpy:
        np.testing.assert_allclose(grads_numba[key], grads_numpy[key], rtol=1e-12, atol=1e-14)


def test_the_numba_backend_runs_a_kernel_only_where_one_exists():
    from minivae import kernels, ops
    compiled = backends.leaf_ops("numba")
    assert backends.leaf_ops("numpy") is ops
    for name in kernels.LEAF_OPS:
        assert getattr(compiled, name) is getattr(kernels, name), name
        assert callable(getattr(ops, name)), f"the kernel {name} has no reference in minivae.ops"
    for name in ("reparameterize", "kl_standard_normal", "logsumexp", "bernoulli_log_prob"):
        assert getattr(compiled, name) is getattr(ops, name), name


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_same_evaluation_with_the_same_draws(likelihood):
    reference, compiled = _pair(likelihood, np.float64)
    x = _data(likelihood)
    for method in ("elbo", "log_likelihood"):
        values = [getattr(model, method)(x, n_samples=7, rng=np.random.default_rng(3))
                  for model in (reference, compiled)]
        np.testing.assert_allclose(values[1], values[0], rtol=1e-11)
    np.testing.assert_allclose(compiled.reconstruct(x), reference.reconstruct(x), rtol=1e-11)


@pytest.mark.parametrize("optimizer_class", [minivae.SGD, minivae.Adam, minivae.Adamax])
def test_training_with_either_backend_gives_the_same_parameters(optimizer_class):
    x = _data("categorical", n=40)
    results = []
    for name in ("numpy", "numba"):
        model = minivae.VAE(12, 3, hidden=(7,), num_values=5, dtype=np.float64, seed=0)
        options = {"momentum": 0.9} if optimizer_class is minivae.SGD else {}
        minivae.fit(model, x, x[:10], epochs=3, batch_size=16, optimizer=optimizer_class(lr=1e-2, **options),
                    rng=np.random.default_rng(0), ema=0.9, backend=name, verbose=False)
        results.append(model.params)
    for key in results[0]:
        np.testing.assert_allclose(results[1][key], results[0][key], rtol=1e-8, atol=1e-11)


def test_switching_the_backend():
    assert minivae.get_backend() in backends.BACKENDS
    before = minivae.get_backend()
    with minivae.use_backend("numpy"):
        assert minivae.get_backend() == "numpy"
        with minivae.use_backend("numba"):
            assert minivae.get_backend() == "numba"
        assert minivae.get_backend() == "numpy"
    assert minivae.get_backend() == before
    model = minivae.VAE(4, 2, hidden=(3,), backend="numpy")
    with minivae.use_backend("numba"):
        assert "backend='numpy'" in repr(model)  # the model's own choice wins
    with pytest.raises(ValueError, match=r"backend must be one of \('numpy', 'numba'\); got 'cuda'"):
        minivae.set_backend("cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        minivae.VAE(4, 2, backend="jax")
    with pytest.raises(ValueError, match="backend must be one of"):
        minivae.Adam(backend="torch")


WITHOUT_NUMBA = "import sys; sys.modules['numba'] = None; sys.modules['llvmlite'] = None\n"  # imports then fail


def test_without_numba_the_default_runs_on_numpy_and_says_so(tmp_path):
    # numba is a dependency, but a student's environment may lack it: the default backend falls back
    # with one warning, `minivae train` works, and asking for numba by name is a clear error
    code = WITHOUT_NUMBA + (
        "from minivae import cli\n"
        f"sys.exit(cli.main(['train', '--epochs', '1', '--hidden', '16', '--latent', '2', '--test-samples', '4',"
        f" '--no-figures', '--quiet', '--out', {str(tmp_path / 'run')!r}]))")
    env = {key: value for key, value in __import__("os").environ.items() if key != "MINIVAE_BACKEND"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "runs on its NumPy backend" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "run" / "params.npz").exists()
    explicit = WITHOUT_NUMBA + (
        "import numpy as np, minivae\n"
        "m = minivae.VAE(4, 2, hidden=(3,), backend='numba')\n"
        "m.loss_and_grads(np.zeros((2, 4)))\n")
    result = subprocess.run([sys.executable, "-c", explicit], capture_output=True, text=True, env=env)
    assert result.returncode != 0 and "the numba backend needs numba" in result.stderr

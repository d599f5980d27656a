"""The numba backend computes what the NumPy reference computes, for every likelihood and activation."""

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
    models = [minivae.VAE(12, 3, hidden=hidden, activation=activation, likelihood=likelihood, num_values=5,
                          learn_variance=True, dtype=dtype, seed=4, backend=name) for name in ("numpy", "numba")]
    return models


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_same_loss_and_gradients(likelihood, dtype, tolerance):
    reference, compiled = _pair(likelihood, dtype)
    x = _data(likelihood)
    eps = np.random.default_rng(1).standard_normal((9, 3))
    loss_numpy, grads_numpy = reference.loss_and_grads(x, eps=eps)
    loss_numba, grads_numba = compiled.loss_and_grads(x, eps=eps)
    assert loss_numba == pytest.approx(loss_numpy, rel=tolerance)
    for key, g in grads_numpy.items():
        assert grads_numba[key].dtype == dtype and grads_numba[key].shape == g.shape
        # relative to the largest entry: float32 sums in another order differ by a few ulps of it
        assert np.max(np.abs(grads_numba[key] - g)) <= tolerance * np.max(np.abs(g)), key


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_same_gradients_for_every_activation(activation):
    reference, compiled = _pair("categorical", np.float64, activation=activation)
    x, eps = _data("categorical"), np.random.default_rng(2).standard_normal((9, 3))
    _, grads_numpy = reference.loss_and_grads(x, eps=eps)
    _, grads_numba = compiled.loss_and_grads(x, eps=eps)
    for key in grads_numpy:
        np.testing.assert_allclose(grads_numba[key], grads_numpy[key], rtol=1e-9, atol=1e-12)


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

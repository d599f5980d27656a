"""The prior is a piece that plugs in: a prior written here, in a few lines, trains, checks and saves."""

import numpy as np
import pytest

import minivae
from minivae import ops
from minivae.gradcheck import check_model_gradients, numerical_gradient_array, rel_error
from minivae.priors import Prior, StandardNormal, make_prior

TOLERANCE = 1e-6


class ShiftedScaledGaussian(Prior):
    """p(z) = N(m, diag(exp(s))) with learnable m and s: a prior defined in a few lines of a test."""

    name = "shifted"

    def param_shapes(self, latent_dim):
        return {"prior.m": (latent_dim,), "prior.s": (latent_dim,)}

    def init_params(self, latent_dim, rng, dtype):
        return {"prior.m": rng.normal(0, 0.5, latent_dim).astype(dtype),
                "prior.s": rng.normal(0, 0.3, latent_dim).astype(dtype)}

    def log_prob(self, z, params):
        return ops.diagonal_gaussian_log_prob(z, params["prior.m"], params["prior.s"])

    def log_prob_backward(self, dlogp, cache, grads):
        dz, dm, ds = ops.diagonal_gaussian_log_prob_backward(dlogp, cache)
        ops.accumulate(grads, "prior.m", dm)
        ops.accumulate(grads, "prior.s", ds)
        return dz

    def sample(self, n, latent_dim, params, rng, dtype=np.float64):
        eps = rng.standard_normal((n, latent_dim))
        return (params["prior.m"] + np.exp(0.5 * params["prior.s"]) * eps).astype(dtype)


def _model(backend, prior=None, seed=0):
    model = minivae.VAE(4, 2, hidden=(5,), activation="tanh", likelihood="gaussian", variance=0.7,
                        prior=prior if prior is not None else ShiftedScaledGaussian(), dtype=np.float64,
                        seed=seed, backend=backend)
    rng = np.random.default_rng(seed)
    for value in model.params.values():
        value[...] = rng.standard_normal(value.shape) * 0.5
    return model, rng


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_prior_written_in_the_test_passes_the_whole_model_gradient_check(backend):
    model, rng = _model(backend)
    assert {"prior.m", "prior.s"} <= set(model.params)
    assert model.objective().kl_method(model) == "monte_carlo"  # no closed form: the Monte Carlo KL
    x, eps = rng.standard_normal((3, 4)), rng.standard_normal((3, 2))
    errors = check_model_gradients(model, x, eps)
    assert set(errors) == set(model.params)
    assert max(errors.values()) < TOLERANCE, errors


def test_both_backends_give_the_same_loss_and_gradients_with_that_prior():
    (reference, rng), (compiled, _) = _model("numpy"), _model("numba")
    x, eps = rng.standard_normal((6, 4)), rng.standard_normal((6, 2))
    loss_numpy, grads_numpy = reference.loss_and_grads(x, eps)
    loss_numba, grads_numba = compiled.loss_and_grads(x, eps)
    assert loss_numba == pytest.approx(loss_numpy, rel=1e-12)
    for key in grads_numpy:
        np.testing.assert_allclose(grads_numba[key], grads_numpy[key], rtol=1e-10, atol=1e-12)


def test_the_monte_carlo_kl_with_that_prior_matches_the_closed_form_on_average():
    # KL(N(mu, v) || N(m, exp s)) has a closed form; the model's Monte Carlo KL must agree with it
    model, rng = _model("numpy")
    x = rng.standard_normal((2, 4))
    mu, logvar = model.encode(x)
    p = model.params
    exact = ops.kl_diagonal_gaussians(mu, logvar, p["prior.m"], p["prior.s"])[0]
    samples = np.stack([model.kl(x, method="monte_carlo", rng=np.random.default_rng(k)) for k in range(4000)])
    assert np.all(np.abs(samples.mean(axis=0) - exact) < 4 * samples.std(axis=0) / np.sqrt(4000))


def test_fit_trains_the_prior_s_parameters(tmp_path):
    x = minivae.datasets.load_digits("train")[0][:128]
    model = minivae.VAE(64, 2, hidden=(16,), prior=ShiftedScaledGaussian())
    before = {key: model.params[key].copy() for key in ("prior.m", "prior.s")}
    minivae.fit(model, x, epochs=2, verbose=False)
    assert not np.allclose(model.params["prior.m"], before["prior.m"])
    assert model.sample(5).shape == (5, 64)


def test_save_and_load_restore_the_prior(tmp_path):
    model, rng = _model("numpy", seed=3)
    path = tmp_path / "model.npz"
    model.save(path)
    with pytest.raises(ValueError, match=r"prior .*'shifted'.* not one of minivae's .*VAE.load\(path, prior="):
        minivae.VAE.load(path)
    with pytest.raises(ValueError, match="holds a model with the 'shifted' prior"):
        minivae.VAE.load(path, prior=StandardNormal())
    loaded = minivae.VAE.load(path, prior=ShiftedScaledGaussian())
    for key in model.params:
        np.testing.assert_array_equal(loaded.params[key], model.params[key])
    x, eps = rng.standard_normal((3, 4)), rng.standard_normal((3, 2))
    assert loaded.loss_and_grads(x, eps)[0] == model.loss_and_grads(x, eps)[0]


def test_the_standard_prior_is_the_default_and_round_trips():
    model = minivae.VAE(4, 2, hidden=(3,))
    assert isinstance(model.prior, StandardNormal) and model.prior.analytic_kl
    assert isinstance(make_prior("standard"), StandardNormal)
    with pytest.raises(ValueError, match="prior must be a minivae.priors.Prior or one of"):
        minivae.VAE(4, 2, prior="vampire")
    with pytest.raises(ValueError, match="kl='analytic' needs a prior with a closed-form KL"):
        minivae.VAE(4, 2, prior=ShiftedScaledGaussian(), kl="analytic")


def test_standard_normal_log_prob_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    prior = StandardNormal()
    z, dlogp = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3))
    dz = prior.log_prob_backward(dlogp, prior.log_prob(z)[1])
    assert rel_error(dz, numerical_gradient_array(lambda v: prior.log_prob(v)[0], z, dlogp)) < 1e-8

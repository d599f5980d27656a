"""The two-level VAE: its hand-written gradient, its importance-weighted log p(x), and its plumbing."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

import minivae
from minivae.gradcheck import check_model_gradients
from minivae.hierarchical import TwoLevelVAE
from minivae.objectives import ELBO, IWAE

TOLERANCE = 1e-6


def _model(backend="numpy", likelihood="categorical", prior=None, kl=None, seed=0):
    model = TwoLevelVAE(4, (3, 2), hidden=(5,), hidden2=(4,), activation="tanh", likelihood=likelihood,
                        num_values=3, variance=0.7, learn_variance=True, prior=prior, kl=kl, dtype=np.float64,
                        seed=seed, backend=backend)
    rng = np.random.default_rng(seed)
    for value in model.params.values():
        value[...] = rng.standard_normal(value.shape) * 0.5
    x = rng.integers(0, 3, (3, 4)).astype(np.float64) if likelihood == "categorical" else rng.standard_normal((3, 4))
    return model, x, rng


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("kl", ["analytic", "monte_carlo"])
@pytest.mark.parametrize("likelihood", ["categorical", "gaussian"])
def test_two_level_elbo_gradient_every_parameter(likelihood, kl, backend):
    model, x, rng = _model(backend, likelihood, kl=kl, seed=1)
    eps = model.draw_noise(3, rng).astype(np.float64)
    errors = check_model_gradients(model, x, eps)
    assert set(errors) == set(model.params) and any(key.startswith("decoder2.") for key in errors)
    assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_two_level_iwae_gradient_and_a_learnable_prior_on_z2(backend):
    model, x, rng = _model(backend, "gaussian", prior="mog:2", seed=2)
    objective = IWAE(3)
    eps = objective.draw_noise(model, 3, rng).astype(np.float64)
    errors = check_model_gradients(model, x, eps, objective=objective)
    assert {"prior.means", "encoder2.0.W"} <= set(errors)
    assert max(errors.values()) < TOLERANCE, errors


def test_both_backends_give_the_same_two_level_numbers():
    (reference, x, rng), (compiled, _, _) = _model("numpy"), _model("numba")
    eps = reference.draw_noise(3, rng, samples=4)
    for objective in (ELBO(), IWAE(4)):
        noise = eps if isinstance(objective, IWAE) else eps[0]
        a, b = objective.loss_and_grads(reference, x, noise), objective.loss_and_grads(compiled, x, noise)
        assert a[0] == pytest.approx(b[0], rel=1e-12)
        for key in a[1]:
            np.testing.assert_allclose(b[1][key], a[1][key], rtol=1e-9, atol=1e-12)


def _linear_gaussian_two_level():
    """A linear two-level model whose p(x) is Gaussian in closed form: p(z1|z2) has a log-variance that
    does not depend on z2 (its weights are zero), so z1 and then x are linear-Gaussian in z2. The
    encoders are set to the exact conditionals p(z1|x) (its variances' diagonal) and p(z2|z1) = p(z2|z1, x),
    so that importance sampling converges fast and the test is sharp."""
    sigma2 = 0.5
    model = TwoLevelVAE(3, (2, 1), hidden=(), hidden2=(), likelihood="gaussian", variance=sigma2, dtype=np.float64,
                        seed=3)
    rng = np.random.default_rng(3)
    p = model.params
    for key in p:
        p[key][...] = rng.normal(0, 0.7, p[key].shape)
    p["decoder2.0.W"][:, 2:] = 0.0  # log-variance of p(z1|z2): a constant, its bias
    A, a, D = p["decoder2.0.W"][:, :2], p["decoder2.0.b"][:2], np.exp(p["decoder2.0.b"][2:])
    B, b = p["decoder.0.W"], p["decoder.0.b"]
    cov_z1 = A.T @ A + np.diag(D)
    marginal = multivariate_normal(a @ B + b, B.T @ cov_z1 @ B + sigma2 * np.eye(3))
    # p(z1|x): precision C⁻¹ + B Bᵀ / σ², mean linear in x
    cov_post = np.linalg.inv(np.linalg.inv(cov_z1) + B @ B.T / sigma2)
    gain = cov_post @ B / sigma2                                             # (2, 3): mean = gain (x - b) + ...
    p["encoder.0.W"][:, :2] = gain.T
    p["encoder.0.b"][:2] = cov_post @ np.linalg.inv(cov_z1) @ a - gain @ b
    p["encoder.0.W"][:, 2:] = 0.0
    p["encoder.0.b"][2:] = np.log(np.diag(cov_post))
    # p(z2|z1): precision 1 + A D⁻¹ Aᵀ, mean linear in z1
    var2 = 1.0 / (1.0 + float(np.sum(A * A / D)))
    p["encoder2.0.W"][:, 0] = var2 * (A / D)[0]
    p["encoder2.0.b"][0] = -var2 * float(np.sum((A / D)[0] * a))
    p["encoder2.0.W"][:, 1] = 0.0
    p["encoder2.0.b"][1] = np.log(var2)
    return model, marginal


def test_importance_weighted_log_px_over_both_levels_equals_the_closed_form():
    model, marginal = _linear_gaussian_two_level()
    x = marginal.rvs(size=4, random_state=5)
    estimate = model.log_likelihood(x, n_samples=20000, rng=np.random.default_rng(0))
    # Monte Carlo error here is about 0.01 nats (measured: 0.002 at K = 200000); a term left out of log w
    # would move it by nats
    np.testing.assert_allclose(estimate, marginal.logpdf(x), atol=0.03)
    # the ELBO is below it: the gap is what a diagonal q(z1|x) cannot express
    elbo = model.elbo(x, n_samples=4000, rng=np.random.default_rng(1))
    assert np.all(elbo < marginal.logpdf(x))
    # a worse proposal (its encoder scrambled): the same log p(x) with more samples, a larger gap
    model.params["encoder.0.b"][:2] += 1.0
    worse = model.log_likelihood(x, n_samples=20000, rng=np.random.default_rng(2))
    np.testing.assert_allclose(worse, marginal.logpdf(x), atol=0.1)
    assert np.all(model.elbo(x, n_samples=4000, rng=np.random.default_rng(1)) < elbo)


def test_two_level_vae_trains_saves_loads_samples_and_counts_active_units_per_level(tmp_path):
    x_train = minivae.datasets.load_digits("train")[0][:200]
    x_val = minivae.datasets.load_digits("val")[0][:100]
    model = TwoLevelVAE(64, (6, 3), hidden=(32,), hidden2=(16,))
    before = -model.elbo(x_val, rng=np.random.default_rng(0)).mean()
    history = minivae.fit(model, x_train, x_val, epochs=4, verbose=False)
    assert -model.elbo(x_val, rng=np.random.default_rng(0)).mean() < before - 5
    assert len(history.active_units) == 4 and all(len(levels) == 2 for levels in history.active_units)
    units = model.active_units(x_val)
    assert 0 <= units[0] <= 6 and 0 <= units[1] <= 3
    assert model.sample(7).shape == (7, 64)
    model.save(tmp_path / "two.npz")
    loaded = minivae.VAE.load(tmp_path / "two.npz")
    assert isinstance(loaded, TwoLevelVAE) and loaded.latent_dims == (6, 3) and loaded.hidden2 == (16,)
    np.testing.assert_array_equal(loaded.elbo(x_val[:5], rng=np.random.default_rng(2)),
                                  model.elbo(x_val[:5], rng=np.random.default_rng(2)))
    minivae.VAE(4, 2).save(tmp_path / "one.npz")  # VAE.load picks the class; a subclass refuses others
    with pytest.raises(ValueError, match=r"one.npz holds a 'VAE' model; load it with VAE.load"):
        TwoLevelVAE.load(tmp_path / "one.npz")


def test_two_level_settings_are_checked():
    with pytest.raises(ValueError, match="latent_dims must be two sizes"):
        TwoLevelVAE(4, (3,))
    with pytest.raises(ValueError, match="latent_dims must be a positive integer"):
        TwoLevelVAE(4, (3, 0))
    with pytest.raises(ValueError, match="VampPrior"):
        TwoLevelVAE(4, (3, 2), prior="vamp:5")

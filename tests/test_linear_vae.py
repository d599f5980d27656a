"""A VAE with hidden=() and a Gaussian decoder is a pPCA: its exact log p(x), ELBO and gap.

Checks, on tiny float64 problems with fixed seeds:

* log p(x) = ELBO(x) + KL(q(z|x) || p(z|x)) to 1e-9, the three computed separately, for random
  linear VAEs and inputs; log p(x) against scipy's dense multivariate normal;
* the core model's sampled ELBO (``model.elbo``) agrees with the closed form within 4 standard
  errors estimated from the samples themselves;
* a linear VAE built from a fitted PPCA, with the optimal encoder, has ELBO = pPCA log-likelihood;
* training a linear VAE the ordinary way (``minivae.fit``: reparameterized single-sample gradients,
  Adam, a decaying learning rate) on pPCA data reaches the pPCA maximum within 0.1 nats per example;
* models that are not linear and Gaussian are refused with a message that says why.
"""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from minivae import VAE, Adam, fit
from minivae.linear_vae import linear_vae_arrays, linear_vae_exact, linear_vae_from_ppca, set_optimal_encoder
from minivae.ppca import PPCA

RTOL = 1e-9
N_STANDARD_ERRORS = 4.0  # Monte Carlo tolerance: a correct estimate strays further once in ~16000 runs


def random_linear_vae(seed, d=7, q=3, learn_variance=True, sigma2=0.4):
    """A linear Gaussian VAE with every parameter drawn at random (not at any optimum)."""
    rng = np.random.default_rng(seed)
    model = VAE(d, q, hidden=(), likelihood="gaussian", variance=sigma2, learn_variance=learn_variance,
                seed=seed, dtype=np.float64)
    model.params["encoder.0.W"][...] = 0.3 * rng.standard_normal((d, 2 * q))
    model.params["encoder.0.b"][...] = np.concatenate([rng.standard_normal(q), rng.normal(-1.0, 0.3, q)])
    model.params["decoder.0.W"][...] = rng.standard_normal((q, d))
    model.params["decoder.0.b"][...] = rng.standard_normal(d)
    if learn_variance:
        model.params["decoder.logvar"][...] = np.log(sigma2) + 0.2 * rng.standard_normal()
    return model, 2.0 * rng.standard_normal((5, d))


def ppca_data(rng, n=500, d=6, column_scales=(3.0, 1.5), sigma2=0.25):
    """n draws from a pPCA with orthogonal columns of the given lengths: eigenvalues 9.25, 2.5, then
    0.25 four times -- a well separated spectrum."""
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    W = Q[:, :len(column_scales)] * np.asarray(column_scales)
    z = rng.standard_normal((n, len(column_scales)))
    return z @ W.T + 2.0 * rng.standard_normal(d) + np.sqrt(sigma2) * rng.standard_normal((n, d))


# --------------------------------------------------------------------------------------------------
# The identity log p(x) = ELBO + gap, and the closed-form ELBO against the sampled one
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("learn_variance", [True, False])
def test_log_px_is_elbo_plus_gap(seed, learn_variance):
    model, x = random_linear_vae(seed, learn_variance=learn_variance)
    exact = linear_vae_exact(model, x)
    assert all(value.shape == (5,) and value.dtype == np.float64 for value in exact)
    np.testing.assert_allclose(exact.elbo + exact.gap, exact.log_px, rtol=RTOL)
    assert np.all(exact.gap > 1e-3)                     # a random encoder is far from the posterior
    # and log p(x) is the dense Gaussian marginal N(b, Wᵀ W + σ² I) of the decoder
    _, _, W_dec, b_dec, sigma2 = linear_vae_arrays(model)
    C = W_dec.T @ W_dec + sigma2 * np.eye(7)
    np.testing.assert_allclose(exact.log_px, multivariate_normal.logpdf(x, b_dec, C), rtol=RTOL)


def test_sigma2_comes_from_the_learned_parameter_or_the_fixed_value():
    fixed, _ = random_linear_vae(3, learn_variance=False, sigma2=0.7)
    assert linear_vae_arrays(fixed)[-1] == pytest.approx(0.7, rel=1e-15)
    learned, _ = random_linear_vae(3, learn_variance=True)
    learned.params["decoder.logvar"][...] = np.log(2.5)
    assert linear_vae_arrays(learned)[-1] == pytest.approx(2.5, rel=1e-15)


@pytest.mark.parametrize("learn_variance", [True, False])
def test_sampled_elbo_of_the_core_model_agrees_with_the_closed_form(learn_variance):
    model, x = random_linear_vae(4, learn_variance=learn_variance)
    closed_form = linear_vae_exact(model, x).elbo
    rng = np.random.default_rng(5)
    n_samples = 2000
    # single-sample ELBOs give the spread; their mean and the core's own average give the estimate
    draws = np.stack([model.elbo(x, n_samples=1, rng=rng) for _ in range(n_samples)])   # (S, n)
    standard_error = draws.std(axis=0, ddof=1) / np.sqrt(n_samples)
    assert np.all(np.abs(draws.mean(axis=0) - closed_form) < N_STANDARD_ERRORS * standard_error)
    averaged = model.elbo(x, n_samples=n_samples, rng=rng)
    assert np.all(np.abs(averaged - closed_form) < N_STANDARD_ERRORS * standard_error)
    # the check has teeth: the closed form of a slightly different decoder is many errors away
    model.params["decoder.0.b"] += 0.5
    shifted = linear_vae_exact(model, x).elbo
    assert np.any(np.abs(draws.mean(axis=0) - shifted) > 10 * standard_error)


def test_float32_model_is_evaluated_in_float64():
    model64, x = random_linear_vae(6)
    model32 = VAE(7, 3, hidden=(), likelihood="gaussian", learn_variance=True, dtype=np.float32)
    model32.set_params({key: value.astype(np.float32) for key, value in model64.params.items()})
    exact32, exact64 = linear_vae_exact(model32, x), linear_vae_exact(model64, x)
    assert exact32.elbo.dtype == np.float64
    np.testing.assert_allclose(exact32.elbo + exact32.gap, exact32.log_px, rtol=RTOL)
    np.testing.assert_allclose(exact32.log_px, exact64.log_px, rtol=1e-5)   # float32 weights, not float32 sums


# --------------------------------------------------------------------------------------------------
# The optimal encoder and the VAE that a PPCA is
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("learn_variance", [True, False])
def test_linear_vae_from_ppca_has_elbo_equal_to_the_ppca_likelihood(learn_variance):
    X = ppca_data(np.random.default_rng(7), n=200)
    ppca = PPCA(2).fit(X)
    model = linear_vae_from_ppca(ppca, learn_variance=learn_variance)
    assert model.hidden == () and model.dtype == np.float64
    assert ("decoder.logvar" in model.params) == learn_variance
    exact = linear_vae_exact(model, X)
    np.testing.assert_allclose(exact.elbo, ppca.log_likelihood(X), rtol=RTOL)
    np.testing.assert_allclose(exact.log_px, ppca.log_likelihood(X), rtol=RTOL)
    assert np.max(np.abs(exact.gap)) < 1e-9
    assert np.mean(exact.elbo) == pytest.approx(ppca.max_log_likelihood(), rel=RTOL)
    x_new = ppca.sample(20, np.random.default_rng(8))               # and off the training data
    np.testing.assert_allclose(linear_vae_exact(model, x_new).elbo, ppca.log_likelihood(x_new), rtol=RTOL)
    # the core model's own encoder gives the pPCA posterior
    posterior_mean, posterior_cov = ppca.posterior(x_new)
    mu, logvar = model.encode(x_new)
    np.testing.assert_allclose(mu, posterior_mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.exp(logvar), np.broadcast_to(np.diag(posterior_cov), mu.shape), rtol=1e-9)


def test_linear_vae_from_ppca_round_trips_through_save_and_load(tmp_path):
    X = ppca_data(np.random.default_rng(9), n=100)
    ppca = PPCA(2).fit(X)
    model = linear_vae_from_ppca(ppca, learn_variance=False)
    model.save(tmp_path / "linear.npz")
    loaded = VAE.load(tmp_path / "linear.npz")
    np.testing.assert_allclose(linear_vae_exact(loaded, X).elbo, ppca.log_likelihood(X), rtol=RTOL)


def test_set_optimal_encoder_maximises_the_elbo_for_the_decoder():
    model, x = random_linear_vae(10)
    before = linear_vae_exact(model, x)
    assert set_optimal_encoder(model) is model
    after = linear_vae_exact(model, x)
    np.testing.assert_allclose(after.log_px, before.log_px, rtol=RTOL)    # the decoder is untouched
    assert np.all(after.elbo > before.elbo)
    # WᵀW is not diagonal, so a diagonal q(z|x) cannot be exact: a gap remains ...
    assert np.all(after.gap > 1e-6)
    # ... but no nearby encoder does better
    rng = np.random.default_rng(11)
    best = {key: model.params[key].copy() for key in ("encoder.0.W", "encoder.0.b")}
    for _ in range(10):
        for key, value in best.items():
            model.params[key][...] = value + 1e-3 * rng.standard_normal(value.shape)
        assert np.mean(linear_vae_exact(model, x).elbo) < np.mean(after.elbo)


def test_optimal_variances_are_the_mean_field_solution_not_the_posterior_marginals():
    # with a correlated posterior, the best diagonal q has variances sigma2 / diag(M) (one over the
    # diagonal of the precision); the marginal variances diag(sigma2 M⁻¹) are wider and worse
    model, x = random_linear_vae(10)
    set_optimal_encoder(model)
    _, _, W_dec, _, sigma2 = linear_vae_arrays(model)
    q = model.latent_dim
    M = W_dec @ W_dec.T + sigma2 * np.eye(q)
    best = np.mean(linear_vae_exact(model, x).elbo)
    np.testing.assert_allclose(np.exp(model.params["encoder.0.b"][q:]), sigma2 / np.diag(M), rtol=1e-12)
    for j in range(q):  # each log-variance sits at the maximum: moving it either way lowers the ELBO
        for step in (-1e-3, 1e-3):
            model.params["encoder.0.b"][q + j] += step
            assert np.mean(linear_vae_exact(model, x).elbo) < best
            model.params["encoder.0.b"][q + j] -= step
    model.params["encoder.0.b"][q:] = np.log(np.diag(sigma2 * np.linalg.inv(M)))
    assert np.mean(linear_vae_exact(model, x).elbo) < best - 1e-6  # worse by far more than round-off


def test_optimal_encoder_closes_the_gap_when_the_decoder_rows_are_orthogonal():
    model, x = random_linear_vae(12)
    Q, _ = np.linalg.qr(np.random.default_rng(13).standard_normal((7, 3)))
    model.params["decoder.0.W"][...] = (Q * np.array([3.0, 2.0, 0.5])).T   # W_dec W_decᵀ diagonal
    exact = linear_vae_exact(set_optimal_encoder(model), x)
    assert np.max(np.abs(exact.gap)) < 1e-9 * np.max(np.abs(exact.log_px))
    np.testing.assert_allclose(exact.elbo, exact.log_px, rtol=RTOL)


# --------------------------------------------------------------------------------------------------
# Training the ordinary way reaches the maximum-likelihood solution
# --------------------------------------------------------------------------------------------------

def test_training_a_linear_vae_reaches_the_ppca_maximum():
    """minivae.fit with Adam on pPCA data: the closed-form training ELBO ends within 0.1 nats per
    example of the pPCA maximum. The learning rate decays exponentially through fit's callback:
    a large one travels, a small one averages out the noise of single-sample gradients."""
    rng = np.random.default_rng(14)
    X = ppca_data(rng)
    best = PPCA(2).fit(X).max_log_likelihood()
    model = VAE(6, 2, hidden=(), likelihood="gaussian", learn_variance=True, seed=15, dtype=np.float64)
    start = np.mean(linear_vae_exact(model, X).elbo)
    epochs, lr, final_lr = 600, 5e-2, 3e-4                     # 3000 steps, well under a second
    optimizer = Adam(lr=lr)

    def decay(epoch, history):
        optimizer.lr = lr * (final_lr / lr) ** ((epoch + 1) / epochs)

    fit(model, X, epochs=epochs, batch_size=100, optimizer=optimizer, rng=np.random.default_rng(16),
        verbose=False, callback=decay)
    elbo = np.mean(linear_vae_exact(model, X).elbo)
    assert start < best - 5.0                                       # there was a long way to go
    assert best - 0.1 < elbo <= best + 1e-9                         # and the ELBO never passes the maximum
    assert np.exp(model.params["decoder.logvar"][0]) == pytest.approx(0.25, rel=0.15)


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------

def test_only_linear_gaussian_models_are_accepted():
    x = np.zeros((2, 6))
    nonlinear = VAE(6, 2, hidden=(8,), likelihood="gaussian", dtype=np.float64)
    with pytest.raises(ValueError, match=r"hidden=\(\).*got hidden=\(8,\)"):
        linear_vae_exact(nonlinear, x)
    with pytest.raises(ValueError, match="hidden"):
        set_optimal_encoder(nonlinear)
    for likelihood in ("bernoulli", "categorical"):
        model = VAE(6, 2, hidden=(), likelihood=likelihood, dtype=np.float64)
        with pytest.raises(ValueError, match=f"likelihood='gaussian'; got '{likelihood}'"):
            linear_vae_exact(model, x)
    with pytest.raises(TypeError, match="minivae.VAE"):
        linear_vae_exact(PPCA(2), x)


def test_bad_inputs_name_the_problem():
    model, x = random_linear_vae(17)
    with pytest.raises(ValueError, match="x has 6 columns; the model expects input_dim=7"):
        linear_vae_exact(model, x[:, :6])
    with pytest.raises(ValueError, match="2-D"):
        linear_vae_exact(model, x[0])
    with pytest.raises(ValueError, match="not fitted"):
        linear_vae_from_ppca(PPCA(2))
    with pytest.raises(TypeError, match="ppca"):
        linear_vae_from_ppca(model)

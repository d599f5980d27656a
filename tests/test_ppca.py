"""Tests of minivae.ppca: exact pPCA and the exact quantities of a linear Gaussian VAE.

Everything is float64 on small fixed-seed problems, checked against dense linear algebra and
scipy.stats.multivariate_normal, plus one Monte Carlo check with a 4-standard-error tolerance.
"""

import gzip
import importlib.resources

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from minivae.linear_vae import linear_vae_arrays, linear_vae_from_ppca
from minivae.ppca import (
    PPCA,
    linear_gaussian_elbo,
    linear_gaussian_log_marginal,
    linear_gaussian_posterior_gap,
    optimal_linear_encoder,
)

RTOL = 1e-9


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    """The 1797 digit images as (1797, 64) floats, read from the shipped file directly."""
    path = importlib.resources.files("minivae") / "data" / "digits.csv.gz"
    with path.open("rb") as raw, gzip.open(raw) as handle:
        return np.loadtxt(handle, delimiter=",")[:, :64]


def anisotropic_data(rng, n=300, d=6, scales=(5.0, 3.0, 1.0, 0.5, 0.4, 0.3)):
    """n points with a clear spectral gap after the second direction, randomly rotated and shifted."""
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (rng.standard_normal((n, d)) * np.asarray(scales[:d])) @ Q.T + rng.standard_normal(d)


def dense_mean_log_likelihood(W, sigma2, S):
    """-1/2 [d log 2π + log|C| + tr(C⁻¹ S)] with C = W Wᵀ + sigma2 I formed densely."""
    d = W.shape[0]
    C = W @ W.T + sigma2 * np.eye(d)
    _, logdet = np.linalg.slogdet(C)
    return -0.5 * (d * np.log(2 * np.pi) + logdet + np.trace(np.linalg.solve(C, S)))


def covariance_about(X, mean):
    Xc = X - mean
    return Xc.T @ Xc / X.shape[0]


# --------------------------------------------------------------------------------------------------
# The log-likelihood is exact
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("q", [1, 3])
def test_log_likelihood_matches_scipy_on_random_data(q):
    rng = np.random.default_rng(0)
    X = anisotropic_data(rng, n=50)
    model = PPCA(q).fit(X[:40])
    X_eval = np.vstack([X, 3.0 * rng.standard_normal((5, 6))])    # held-out rows and far-away rows
    expected = multivariate_normal.logpdf(X_eval, model.mean_, model.covariance())
    np.testing.assert_allclose(model.log_likelihood(X_eval), expected, rtol=RTOL)
    assert model.mean_log_likelihood(X_eval) == pytest.approx(np.mean(expected), rel=RTOL)


@pytest.mark.parametrize("q", [2, 16])
def test_log_likelihood_matches_scipy_on_digits(digits, q):
    assert np.sum(digits.std(axis=0) == 0) >= 3          # the always-zero pixels are really there
    model = PPCA(q).fit(digits[:1000])
    assert not model.noise_variance_floored_
    expected = multivariate_normal.logpdf(digits, model.mean_, model.covariance())
    np.testing.assert_allclose(model.log_likelihood(digits), expected, rtol=RTOL)


def test_attributes_have_documented_shapes_and_values():
    rng = np.random.default_rng(1)
    X = anisotropic_data(rng)
    model = PPCA(2).fit(X)
    eigenvalues = np.linalg.eigvalsh(covariance_about(X, X.mean(axis=0)))[::-1]   # 1/N, descending
    assert model.W_.shape == (6, 2) and model.mean_.shape == (6,)
    assert model.n_features_in_ == 6 and model.n_samples_ == 300
    np.testing.assert_allclose(model.mean_, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(model.explained_variance_, eigenvalues[:2], rtol=1e-10)
    assert model.noise_variance_ == pytest.approx(np.mean(eigenvalues[2:]), rel=1e-10)
    WtW = model.W_.T @ model.W_                                  # Λ_q - sigma2 I, diagonal
    np.testing.assert_allclose(WtW, np.diag(eigenvalues[:2] - model.noise_variance_), atol=1e-10)


# --------------------------------------------------------------------------------------------------
# The fit is the maximum
# --------------------------------------------------------------------------------------------------

def likelihood_gradients(W, sigma2, S):
    """dL/dW = C⁻¹ S C⁻¹ W - C⁻¹ W and dL/dsigma2 = 1/2 tr(C⁻¹ S C⁻¹ - C⁻¹) of the mean log-likelihood."""
    C_inv = np.linalg.inv(W @ W.T + sigma2 * np.eye(W.shape[0]))
    C_inv_S_C_inv = C_inv @ S @ C_inv
    return C_inv_S_C_inv @ W - C_inv @ W, 0.5 * np.trace(C_inv_S_C_inv - C_inv), C_inv


@pytest.mark.parametrize("q", [1, 2, 4])
def test_fit_is_a_stationary_point(q):
    X = anisotropic_data(np.random.default_rng(2))
    model = PPCA(q).fit(X)
    S = covariance_about(X, model.mean_)
    dW, dsigma2, C_inv = likelihood_gradients(model.W_, model.noise_variance_, S)
    scale_W = np.linalg.norm(C_inv @ model.W_)                 # the size of each of the two terms
    scale_sigma2 = 0.5 * abs(np.trace(C_inv))
    assert np.linalg.norm(dW) <= 1e-9 * scale_W
    assert abs(dsigma2) <= 1e-9 * scale_sigma2


def test_gradient_formula_is_not_trivially_zero():
    """The stationarity check above can fail: away from the fit the same gradient is large."""
    X = anisotropic_data(np.random.default_rng(2))
    model = PPCA(2).fit(X)
    S = covariance_about(X, model.mean_)
    dW, dsigma2, C_inv = likelihood_gradients(1.1 * model.W_, 0.9 * model.noise_variance_, S)
    assert np.linalg.norm(dW) > 1e-3 * np.linalg.norm(C_inv @ model.W_)
    assert abs(dsigma2) > 1e-3 * 0.5 * abs(np.trace(C_inv))


def test_random_perturbations_lower_the_likelihood():
    rng = np.random.default_rng(3)
    X = anisotropic_data(rng)
    model = PPCA(2).fit(X)
    S = covariance_about(X, model.mean_)
    best = dense_mean_log_likelihood(model.W_, model.noise_variance_, S)
    assert best == pytest.approx(model.mean_log_likelihood(X), rel=RTOL)
    for _ in range(20):
        W = model.W_ + 1e-3 * np.linalg.norm(model.W_) * rng.standard_normal(model.W_.shape)
        sigma2 = model.noise_variance_ * np.exp(1e-3 * rng.standard_normal())
        assert dense_mean_log_likelihood(W, sigma2, S) < best
        assert dense_mean_log_likelihood(model.W_, sigma2, S) < best


@pytest.mark.parametrize("q", [1, 2, 4])
def test_max_log_likelihood_equals_mean_training_log_likelihood(q):
    X = anisotropic_data(np.random.default_rng(4))
    model = PPCA(q).fit(X)
    assert model.max_log_likelihood() == pytest.approx(model.mean_log_likelihood(X), rel=RTOL)
    # and it is the textbook formula -1/2 [d log 2π + Σ_{j≤q} log λ_j + (d - q) log sigma2 + d]
    d = X.shape[1]
    formula = -0.5 * (d * np.log(2 * np.pi) + np.sum(np.log(model.explained_variance_))
                      + (d - q) * np.log(model.noise_variance_) + d)
    assert model.max_log_likelihood() == pytest.approx(formula, rel=RTOL)


def test_max_log_likelihood_on_digits(digits):
    model = PPCA(16).fit(digits[:1000])
    assert model.max_log_likelihood() == pytest.approx(model.mean_log_likelihood(digits[:1000]), rel=RTOL)


# --------------------------------------------------------------------------------------------------
# EM
# --------------------------------------------------------------------------------------------------

def test_em_is_monotone_and_reaches_the_closed_form_maximum():
    X = anisotropic_data(np.random.default_rng(5))
    model, history = PPCA(2).fit_em(X, rng=np.random.default_rng(6))
    assert len(history) > 5
    assert np.all(np.diff(history) >= -1e-10 * abs(history[-1]))
    assert history[-1] > history[0]
    closed_form = PPCA(2).fit(X)
    best = closed_form.max_log_likelihood()
    assert history[-1] == pytest.approx(best, rel=1e-6)
    assert model.mean_log_likelihood(X) == pytest.approx(history[-1], rel=1e-9)
    np.testing.assert_allclose(model.covariance(), closed_form.covariance(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.explained_variance_, closed_form.explained_variance_, rtol=1e-4)
    WtW = model.W_.T @ model.W_                                  # rotated to principal axes
    np.testing.assert_allclose(WtW - np.diag(np.diag(WtW)), 0.0, atol=1e-10 * np.max(WtW))


def test_em_is_monotone_on_digits_from_a_given_start(digits):
    X = digits[:300]
    W_init = np.random.default_rng(7).standard_normal((64, 3))
    _, history = PPCA(3).fit_em(X, n_iter=30, W_init=W_init, sigma2_init=1.0)
    assert len(history) == 31
    assert np.all(np.diff(history) >= -1e-10 * abs(history[-1]))
    assert history[-1] > history[0] + 1.0


def test_em_needs_a_start_and_is_reproducible():
    X = anisotropic_data(np.random.default_rng(8), n=40)
    with pytest.raises(ValueError, match="W_init"):
        PPCA(2).fit_em(X)
    with pytest.raises(ValueError, match="W_init"):
        PPCA(2).fit_em(X, W_init=np.ones((5, 2)))
    a, history_a = PPCA(2).fit_em(X, n_iter=5, rng=np.random.default_rng(9))
    b, history_b = PPCA(2).fit_em(X, n_iter=5, rng=np.random.default_rng(9))
    assert history_a == history_b
    np.testing.assert_array_equal(a.W_, b.W_)
    with pytest.raises(ValueError, match="fit_em"):
        a.max_log_likelihood()


# --------------------------------------------------------------------------------------------------
# Posterior, reconstruction, sampling
# --------------------------------------------------------------------------------------------------

def test_posterior_matches_dense_gaussian_conditioning():
    rng = np.random.default_rng(10)
    X = anisotropic_data(rng, n=30)
    model = PPCA(2).fit(X)
    mean, cov = model.posterior(X)
    C = model.covariance()
    W = model.W_
    # (z, x) jointly Gaussian with Cov(z, x) = Wᵀ: E[z|x] = Wᵀ C⁻¹ (x - mu), Cov = I - Wᵀ C⁻¹ W
    np.testing.assert_allclose(mean, np.linalg.solve(C, (X - model.mean_).T).T @ W, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cov, np.eye(2) - W.T @ np.linalg.solve(C, W), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.reconstruct(X), mean @ W.T + model.mean_, rtol=1e-12)


def test_sample_is_reproducible_and_has_the_model_covariance():
    model = PPCA(2).fit(anisotropic_data(np.random.default_rng(11), d=4, scales=(3.0, 2.0, 0.5, 0.5)))
    x, z = model.sample(20000, np.random.default_rng(12), return_latent=True)
    assert x.shape == (20000, 4) and z.shape == (20000, 2)
    np.testing.assert_array_equal(x, model.sample(20000, np.random.default_rng(12)))
    C = model.covariance()
    # sampling error of a covariance entry is about sqrt(C_ii C_jj / n) < 1% of the diagonal here
    np.testing.assert_allclose(np.cov(x.T, bias=True), C, atol=0.05 * np.max(np.diag(C)))
    noise = x - z @ model.W_.T - model.mean_
    assert np.var(noise) == pytest.approx(model.noise_variance_, rel=0.03)
    with pytest.raises(TypeError, match="rng"):
        model.sample(3, 0)


# --------------------------------------------------------------------------------------------------
# Degenerate data and errors
# --------------------------------------------------------------------------------------------------

def test_constant_columns_are_harmless():
    rng = np.random.default_rng(13)
    X = anisotropic_data(rng, n=50)
    X = np.hstack([X, np.zeros((50, 2)), np.full((50, 1), 7.0)])   # d = 9, three constant columns
    model = PPCA(2).fit(X)
    expected = multivariate_normal.logpdf(X, model.mean_, model.covariance())
    np.testing.assert_allclose(model.log_likelihood(X), expected, rtol=RTOL)


def test_q_at_least_the_rank_gives_a_floored_finite_model():
    rng = np.random.default_rng(14)
    X = rng.standard_normal((40, 2)) @ rng.standard_normal((2, 5)) + 1.0   # rank 2 in d = 5
    for q in (2, 3, 4):
        model = PPCA(q).fit(X)
        assert model.noise_variance_floored_
        assert model.noise_variance_ > 0
        ll = model.log_likelihood(X)
        assert np.all(np.isfinite(ll))
        assert model.max_log_likelihood() == pytest.approx(np.mean(ll), rel=RTOL)
        mean, cov = model.posterior(X)
        assert np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))
        np.testing.assert_allclose(model.reconstruct(X), X, atol=1e-4 * np.max(np.abs(X)))


@pytest.mark.parametrize("q", [2, 6])   # q = 6 > n = 4: more components than examples
def test_fewer_examples_than_dimensions(q):
    rng = np.random.default_rng(15)
    X = rng.standard_normal((4, 10)) * np.arange(1, 11)
    model = PPCA(q).fit(X)
    S = covariance_about(X, X.mean(axis=0))
    np.testing.assert_allclose(model.eigenvalues_, np.clip(np.linalg.eigvalsh(S)[::-1], 0, None),
                               atol=1e-10 * np.trace(S))
    # the SVD route gives the same C as the dense eigen-decomposition would
    eigenvalues, U = np.linalg.eigh(S)
    eigenvalues, U = eigenvalues[::-1], U[:, ::-1]
    sigma2 = model.noise_variance_
    k = min(q, 3)                                                   # centred data have rank n - 1 = 3
    C = U[:, :k] @ np.diag(np.maximum(eigenvalues[:k], sigma2) - sigma2) @ U[:, :k].T + sigma2 * np.eye(10)
    np.testing.assert_allclose(model.covariance(), C, atol=1e-9 * np.trace(S))
    ll = model.log_likelihood(np.vstack([X, rng.standard_normal((3, 10))]))
    assert np.all(np.isfinite(ll))
    assert model.max_log_likelihood() == pytest.approx(model.mean_log_likelihood(X), rel=RTOL)


def test_constant_data_do_not_break_anything():
    model = PPCA(1).fit(np.ones((5, 3)))
    assert model.noise_variance_floored_
    assert np.all(np.isfinite(model.log_likelihood(np.ones((2, 3)))))


def test_errors_name_the_problem():
    X = np.random.default_rng(16).standard_normal((10, 4))
    for q in (0, -1):
        with pytest.raises(ValueError, match="n_components"):
            PPCA(q)
    with pytest.raises(TypeError, match="n_components"):
        PPCA(2.0)
    for q in (4, 5):
        with pytest.raises(ValueError, match="n_components"):
            PPCA(q).fit(X)
    X_nan = X.copy()
    X_nan[3, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        PPCA(2).fit(X_nan)
    with pytest.raises(ValueError, match="2-D"):
        PPCA(2).fit(X[0])
    for method in ("log_likelihood", "posterior", "reconstruct"):
        with pytest.raises(ValueError, match="not fitted"):
            getattr(PPCA(2), method)(X)
    with pytest.raises(ValueError, match="not fitted"):
        PPCA(2).covariance()
    model = PPCA(2).fit(X)
    with pytest.raises(ValueError, match="X has 3 columns; the model was fitted with 4"):
        model.log_likelihood(X[:, :3])
    with pytest.raises(ValueError, match="finite"):
        model.log_likelihood(X_nan)


def test_digits_wrong_width_message(digits):
    model = PPCA(2).fit(digits[:200])
    with pytest.raises(ValueError, match="X has 63 columns; the model was fitted with 64"):
        model.log_likelihood(digits[:5, :63])


# --------------------------------------------------------------------------------------------------
# The linear VAE with a Gaussian decoder
# --------------------------------------------------------------------------------------------------

def random_linear_vae(seed, n=5, q=3, d=7):
    rng = np.random.default_rng(seed)
    return dict(
        x=rng.standard_normal((n, d)) * 2.0,
        mu=rng.standard_normal((n, q)),
        logvar=rng.normal(-1.0, 0.5, (n, q)),
        W_dec=rng.standard_normal((q, d)),
        b_dec=rng.standard_normal(d),
        sigma2=0.3,
    )


def test_log_marginal_is_the_ppca_marginal():
    p = random_linear_vae(20)
    C = p["W_dec"].T @ p["W_dec"] + p["sigma2"] * np.eye(7)
    expected = multivariate_normal.logpdf(p["x"], p["b_dec"], C)
    np.testing.assert_allclose(linear_gaussian_log_marginal(p["x"], p["W_dec"], p["b_dec"], p["sigma2"]),
                               expected, rtol=RTOL)


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_log_marginal_is_elbo_plus_gap(seed):
    p = random_linear_vae(seed)
    log_px = linear_gaussian_log_marginal(p["x"], p["W_dec"], p["b_dec"], p["sigma2"])
    elbo = linear_gaussian_elbo(**p)
    gap = linear_gaussian_posterior_gap(**p)
    np.testing.assert_allclose(elbo + gap, log_px, rtol=RTOL)
    assert np.all(gap > 0) and np.all(elbo < log_px)


def test_optimal_encoder_of_a_fitted_ppca_closes_the_gap(digits):
    q = 4
    model = PPCA(q).fit(digits[:500])
    params, sigma2 = model.to_linear_vae_params()
    assert params["encoder.0.W"].shape == (64, 2 * q) and params["encoder.0.b"].shape == (2 * q,)
    assert params["decoder.0.W"].shape == (q, 64) and params["decoder.0.b"].shape == (64,)
    x = digits[500:600]
    y = x @ params["encoder.0.W"] + params["encoder.0.b"]
    mu, logvar = y[:, :q], y[:, q:]
    decoder = (params["decoder.0.W"], params["decoder.0.b"], sigma2)
    log_px = linear_gaussian_log_marginal(x, *decoder)
    np.testing.assert_allclose(log_px, model.log_likelihood(x), rtol=RTOL)
    np.testing.assert_allclose(linear_gaussian_elbo(x, mu, logvar, *decoder), log_px, rtol=RTOL)
    gap = linear_gaussian_posterior_gap(x, mu, logvar, *decoder)
    assert np.all(np.abs(gap) < 1e-9 * np.abs(log_px))
    posterior_mean, posterior_cov = model.posterior(x)
    np.testing.assert_allclose(mu, posterior_mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.exp(logvar[0]), np.diag(posterior_cov), rtol=1e-9)


def test_optimal_encoder_mean_is_exact_even_when_the_posterior_is_correlated():
    p = random_linear_vae(24)
    W_enc, b_enc = optimal_linear_encoder(p["W_dec"], p["b_dec"], p["sigma2"])
    y = p["x"] @ W_enc + b_enc
    mu, logvar = y[:, :3], y[:, 3:]
    W = p["W_dec"].T
    M = W.T @ W + p["sigma2"] * np.eye(3)
    np.testing.assert_allclose(mu, (p["x"] - p["b_dec"]) @ W @ np.linalg.inv(M), rtol=1e-9)
    gap = linear_gaussian_posterior_gap(p["x"], mu, logvar, p["W_dec"], p["b_dec"], p["sigma2"])
    other = linear_gaussian_posterior_gap(p["x"], mu + 0.1, logvar, p["W_dec"], p["b_dec"], p["sigma2"])
    assert np.all(gap > 0)                  # WᵀW is not diagonal: a diagonal q cannot be exact
    assert np.all(gap < other)              # but the exact mean beats a shifted one


def test_closed_form_elbo_matches_monte_carlo():
    p = random_linear_vae(25, n=4)
    rng = np.random.default_rng(26)
    n_samples = 20000
    eps = rng.standard_normal((n_samples,) + p["mu"].shape)
    z = p["mu"] + np.exp(0.5 * p["logvar"]) * eps                           # (S, n, q)
    mean = z @ p["W_dec"] + p["b_dec"]                                      # (S, n, d)
    d = p["x"].shape[1]
    log_px_given_z = -0.5 * (d * np.log(2 * np.pi * p["sigma2"])
                             + np.sum((p["x"] - mean) ** 2, axis=-1) / p["sigma2"])
    kl = 0.5 * np.sum(p["mu"] ** 2 + np.exp(p["logvar"]) - 1 - p["logvar"], axis=1)
    estimate = log_px_given_z.mean(axis=0) - kl
    standard_error = log_px_given_z.std(axis=0, ddof=1) / np.sqrt(n_samples)
    closed_form = linear_gaussian_elbo(**p)
    assert np.all(np.abs(estimate - closed_form) < 4 * standard_error)


def test_linear_vae_functions_check_their_arguments():
    p = random_linear_vae(27)
    with pytest.raises(ValueError, match="sigma2"):
        linear_gaussian_elbo(**{**p, "sigma2": 0.0})
    with pytest.raises(ValueError, match="b_dec"):
        linear_gaussian_log_marginal(p["x"], p["W_dec"], p["b_dec"][:-1], p["sigma2"])
    with pytest.raises(ValueError, match="x has 6 columns"):
        linear_gaussian_log_marginal(p["x"][:, :6], p["W_dec"], p["b_dec"], p["sigma2"])
    with pytest.raises(ValueError, match="logvar"):
        linear_gaussian_posterior_gap(**{**p, "logvar": p["logvar"][:, :2]})


@pytest.mark.parametrize("learn_variance", [True, False])
def test_linear_vae_from_ppca_holds_the_linear_vae_params(digits, learn_variance):
    model = PPCA(3).fit(digits[:300])
    params, sigma2 = model.to_linear_vae_params()
    vae = linear_vae_from_ppca(model, learn_variance=learn_variance)
    for key, value in params.items():
        np.testing.assert_array_equal(vae.params[key], value)
    assert linear_vae_arrays(vae)[-1] == pytest.approx(sigma2, rel=1e-15)
    assert vae.likelihood.variance == pytest.approx(sigma2, rel=1e-15)     # saved in its config, too

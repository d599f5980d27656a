"""The leaf operations of the posterior and the KL, the prior, the likelihoods: values, gradients, statistics."""

import numpy as np
import pytest
from scipy import stats

from minivae.gradcheck import numerical_gradient, numerical_gradient_array, rel_error
from minivae.likelihoods import BernoulliLikelihood, CategoricalLikelihood, GaussianLikelihood, make_likelihood
from minivae.ops import (diagonal_gaussian_log_prob, diagonal_gaussian_log_prob_backward, kl_diagonal_gaussians,
                         kl_diagonal_gaussians_backward, kl_standard_normal, logsumexp, logsumexp_backward,
                         reparameterize, reparameterize_backward, reparameterized_log_prob,
                         reparameterized_log_prob_backward)
from minivae.priors import StandardNormal

TOLERANCE = 1e-7


@pytest.fixture
def rng():
    return np.random.default_rng(7)


# ------------------------------------------------------------------------------------------------
# Reparameterization and KL
# ------------------------------------------------------------------------------------------------

def test_reparameterize_backward_matches_finite_differences(rng):
    mu, logvar, eps = rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    dz = rng.standard_normal((3, 4))
    _, cache = reparameterize(mu, logvar, eps)
    dmu, dlogvar = reparameterize_backward(dz, cache)
    assert rel_error(dmu, numerical_gradient_array(lambda v: reparameterize(v, logvar, eps)[0], mu, dz)) < TOLERANCE
    assert rel_error(dlogvar,
                     numerical_gradient_array(lambda v: reparameterize(mu, v, eps)[0], logvar, dz)) < TOLERANCE


def test_reparameterized_samples_have_mean_mu_and_std_exp_half_logvar():
    rng = np.random.default_rng(0)
    mu, logvar = np.array([[1.5, -2.0, 0.0]]), np.array([[0.0, np.log(4.0), np.log(0.01)]])
    n = 200_000
    z, _ = reparameterize(mu, logvar, rng.standard_normal((n, 3)))
    std = np.exp(0.5 * logvar[0])
    # the sample mean has standard error std / sqrt(n); the sample std has about std / sqrt(2n)
    assert np.all(np.abs(z.mean(axis=0) - mu[0]) < 5 * std / np.sqrt(n))
    assert np.all(np.abs(z.std(axis=0) - std) < 5 * std / np.sqrt(2 * n))
    np.testing.assert_allclose(std, [1.0, 2.0, 0.1])


def test_analytic_kl_matches_closed_form_and_scipy_free_formula(rng):
    prior = StandardNormal()
    mu, logvar = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    var = np.exp(logvar)
    # KL(N(m, s²) || N(0, 1)) = log(1/s) + (s² + m²)/2 - 1/2, summed over dimensions
    expected = np.sum(-0.5 * logvar + (var + mu ** 2) / 2 - 0.5, axis=1)
    np.testing.assert_allclose(prior.kl(mu, logvar)[0], expected, rtol=1e-13)
    assert np.all(prior.kl(mu, logvar)[0] >= 0)
    np.testing.assert_allclose(prior.kl(np.zeros((1, 3)), np.zeros((1, 3)))[0], [0.0], atol=0)


def test_kl_backward_matches_finite_differences(rng):
    prior = StandardNormal()
    mu, logvar, dkl = rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), rng.standard_normal(4)
    dmu, dlogvar = prior.kl_backward(dkl, prior.kl(mu, logvar)[1])
    assert rel_error(dmu, numerical_gradient_array(lambda v: prior.kl(v, logvar)[0], mu, dkl)) < TOLERANCE
    assert rel_error(dlogvar, numerical_gradient_array(lambda v: prior.kl(mu, v)[0], logvar, dkl)) < TOLERANCE


def test_analytic_kl_equals_large_monte_carlo_estimate():
    rng = np.random.default_rng(1)
    prior = StandardNormal()
    mu, logvar = np.array([[0.7, -1.2, 0.1, 2.0]]), np.array([[-1.0, 0.5, -3.0, 0.0]])
    n = 400_000
    eps = rng.standard_normal((n, 1, 4))
    z, _ = reparameterize(mu, logvar, eps)
    samples = (reparameterized_log_prob(eps, logvar)[0] - prior.log_prob(z)[0])[:, 0]
    np.testing.assert_allclose(reparameterized_log_prob(eps, logvar)[0], diagonal_gaussian_log_prob(z, mu, logvar)[0],
                               rtol=1e-10)
    standard_error = samples.std() / np.sqrt(n)
    assert abs(samples.mean() - prior.kl(mu, logvar)[0][0]) < 4 * standard_error
    assert standard_error < 0.01  # the comparison is sharp


def test_gaussian_log_probs_match_scipy(rng):
    z, mu, logvar = rng.standard_normal((6, 3)), rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    expected = stats.norm.logpdf(z, mu, np.exp(0.5 * logvar)).sum(axis=1)
    np.testing.assert_allclose(diagonal_gaussian_log_prob(z, mu, logvar)[0], expected, rtol=1e-13)
    np.testing.assert_allclose(StandardNormal().log_prob(z)[0], stats.norm.logpdf(z).sum(axis=1), rtol=1e-13)


def test_diagonal_gaussian_log_prob_backward_matches_finite_differences(rng):
    # mu broadcast over K draws, logvar over K draws and N rows: the backward sums over the broadcast axes
    z, mu, logvar = rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 4)), rng.standard_normal((1, 4))
    dlogp = rng.standard_normal((2, 3))
    dz, dmu, dlogvar = diagonal_gaussian_log_prob_backward(dlogp, diagonal_gaussian_log_prob(z, mu, logvar)[1])
    assert dmu.shape == mu.shape and dlogvar.shape == logvar.shape
    for value, analytic, f in [
            (z, dz, lambda v: diagonal_gaussian_log_prob(v, mu, logvar)[0]),
            (mu, dmu, lambda v: diagonal_gaussian_log_prob(z, v, logvar)[0]),
            (logvar, dlogvar, lambda v: diagonal_gaussian_log_prob(z, mu, v)[0])]:
        assert rel_error(analytic, numerical_gradient_array(f, value, dlogp)) < TOLERANCE


def test_reparameterized_log_prob_backward_is_the_total_derivative_through_the_sample(rng):
    # log q(z|x) at z = mu + std eps, as a function of (mu, logvar) with eps fixed
    mu, logvar, eps, dlogp = (rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng.standard_normal((3, 4)),
                              rng.standard_normal(3))

    def log_q(m, lv):
        return diagonal_gaussian_log_prob(reparameterize(m, lv, eps)[0], m, lv)[0]

    dmu, dlogvar = reparameterized_log_prob_backward(dlogp, reparameterized_log_prob(eps, logvar)[1])
    assert rel_error(dmu, numerical_gradient_array(lambda v: log_q(v, logvar), mu, dlogp)) < TOLERANCE
    assert rel_error(dlogvar, numerical_gradient_array(lambda v: log_q(mu, v), logvar, dlogp)) < TOLERANCE


def test_kl_between_diagonal_gaussians_matches_scipy_free_formula_and_its_gradient(rng):
    mu_q, logvar_q, mu_p, logvar_p = (rng.standard_normal((5, 3)) for _ in range(4))
    kl, cache = kl_diagonal_gaussians(mu_q, logvar_q, mu_p, logvar_p)
    var_q, var_p = np.exp(logvar_q), np.exp(logvar_p)
    # KL(N(a, s²) || N(b, t²)) = log(t/s) + (s² + (a - b)²) / (2 t²) - 1/2
    expected = np.sum(0.5 * (logvar_p - logvar_q) + (var_q + (mu_q - mu_p) ** 2) / (2 * var_p) - 0.5, axis=1)
    np.testing.assert_allclose(kl, expected, rtol=1e-12)
    np.testing.assert_allclose(kl_diagonal_gaussians(mu_q, logvar_q, 0.0 * mu_q, 0.0 * mu_q)[0],
                               kl_standard_normal(mu_q, logvar_q)[0], rtol=1e-13)
    dkl = rng.standard_normal(5)
    grads = kl_diagonal_gaussians_backward(dkl, cache)
    inputs = [mu_q, logvar_q, mu_p, logvar_p]
    for i, analytic in enumerate(grads):
        def f(v, i=i):
            args = list(inputs)
            args[i] = v
            return kl_diagonal_gaussians(*args)[0]
        assert rel_error(analytic, numerical_gradient_array(f, inputs[i], dkl)) < TOLERANCE


def test_logsumexp_is_stable_and_its_backward_is_the_softmax(rng):
    a = rng.standard_normal((4, 6)) * 3
    out, cache = logsumexp(a, axis=1)
    np.testing.assert_allclose(out, np.log(np.exp(a).sum(axis=1)), rtol=1e-13)
    dout = rng.standard_normal(4)
    assert rel_error(logsumexp_backward(dout, cache),
                     numerical_gradient_array(lambda v: logsumexp(v, axis=1)[0], a, dout)) < TOLERANCE
    with np.errstate(over="raise", invalid="raise"):
        big, _ = logsumexp(np.array([[1000.0, 1000.0], [-1000.0, -1000.0]]), axis=1)
    np.testing.assert_allclose(big, [1000.0 + np.log(2), -1000.0 + np.log(2)], rtol=1e-15)
    assert logsumexp(np.array([-np.inf, -np.inf]))[0] == -np.inf


# ------------------------------------------------------------------------------------------------
# Likelihoods
# ------------------------------------------------------------------------------------------------

def _data(likelihood, rng, shape):
    if likelihood.name == "categorical":
        return rng.integers(0, likelihood.num_values, shape).astype(np.float64)
    if likelihood.name == "bernoulli":
        return rng.integers(0, 2, shape).astype(np.float64)
    return rng.standard_normal(shape)


LIKELIHOOD_CASES = [GaussianLikelihood(0.5), GaussianLikelihood(0.5, learn_variance=True),
                    BernoulliLikelihood(), CategoricalLikelihood(5)]


@pytest.mark.parametrize("likelihood", LIKELIHOOD_CASES, ids=["gaussian", "gaussian-learned", "bernoulli",
                                                               "categorical"])
def test_likelihood_backward_matches_finite_differences(likelihood, rng):
    params = likelihood.init_params(np.float64)
    if params:
        params["decoder.logvar"][...] = -0.3
    x = _data(likelihood, rng, (4, 3))
    out = rng.standard_normal((4, likelihood.output_dim(3)))
    dlogp = rng.standard_normal(4)
    _, cache = likelihood.forward(x, out, params)
    grads = {}
    dout = likelihood.backward(dlogp, cache, grads)
    numerical = numerical_gradient_array(lambda v: likelihood.forward(x, v, params)[0], out, dlogp)
    assert rel_error(dout, numerical) < TOLERANCE
    for key in params:
        numerical = numerical_gradient_array(lambda _: likelihood.forward(x, out, params)[0], params[key], dlogp)
        assert rel_error(grads[key], numerical) < TOLERANCE


def test_likelihood_values_match_scipy(rng):
    x = rng.standard_normal((4, 3))
    mean = rng.standard_normal((4, 3))
    np.testing.assert_allclose(GaussianLikelihood(0.3).log_prob(x, mean, {}),
                               stats.norm.logpdf(x, mean, np.sqrt(0.3)).sum(axis=1), rtol=1e-13)

    logits = rng.standard_normal((4, 3)) * 3
    bits = rng.integers(0, 2, (4, 3)).astype(float)
    np.testing.assert_allclose(BernoulliLikelihood().log_prob(bits, logits, {}),
                               stats.bernoulli.logpmf(bits, 1 / (1 + np.exp(-logits))).sum(axis=1), rtol=1e-12)

    categorical = CategoricalLikelihood(4)
    logits = rng.standard_normal((2, 3 * 4))
    values = rng.integers(0, 4, (2, 3))
    probs = np.exp(logits.reshape(2, 3, 4))
    probs /= probs.sum(axis=-1, keepdims=True)
    expected = [sum(np.log(probs[n, d, values[n, d]]) for d in range(3)) for n in range(2)]
    np.testing.assert_allclose(categorical.log_prob(values.astype(float), logits, {}), expected, rtol=1e-13)


def test_logits_layout_is_c_order_dimension_major():
    # logits[n, d * L + k] is the logit of value k in dimension d
    categorical = CategoricalLikelihood(3)
    logits = np.full((1, 2 * 3), -50.0)
    logits[0, 0 * 3 + 2] = 50.0  # dimension 0 -> value 2
    logits[0, 1 * 3 + 0] = 50.0  # dimension 1 -> value 0
    np.testing.assert_allclose(categorical.mean(logits, {}), [[2.0, 0.0]], atol=1e-12)
    assert categorical.log_prob(np.array([[2.0, 0.0]]), logits, {})[0] > -1e-12


def test_extreme_logits_stay_finite():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        big = np.array([[1e3, -1e3, 0.0] * 2])
        assert np.isfinite(CategoricalLikelihood(3).log_prob(np.array([[0.0, 1.0]]), big, {})).all()
        logp = BernoulliLikelihood().log_prob(np.array([[1.0, 0.0]]), np.array([[-800.0, 800.0]]), {})
        np.testing.assert_allclose(logp, [-1600.0])
        _, cache = CategoricalLikelihood(3).forward(np.array([[0.0, 1.0]]), big, {})
        assert np.isfinite(CategoricalLikelihood(3).backward(np.ones(1), cache, {})).all()


@pytest.mark.parametrize("likelihood", [BernoulliLikelihood(), CategoricalLikelihood(4), GaussianLikelihood(0.25)],
                         ids=["bernoulli", "categorical", "gaussian"])
def test_samples_follow_the_distribution(likelihood):
    rng = np.random.default_rng(3)
    n = 100_000
    out = np.tile(np.random.default_rng(4).standard_normal((1, likelihood.output_dim(2))), (n, 1))
    samples = likelihood.sample(out, {}, rng)
    mean = likelihood.mean(out[:1], {})[0]
    # the sample mean of a bounded or Gaussian variable: standard error = std / sqrt(n)
    std = samples.std(axis=0)
    assert np.all(np.abs(samples.mean(axis=0) - mean) < 5 * std / np.sqrt(n) + 1e-12)
    if likelihood.name == "categorical":
        probs = likelihood.distribution_params(out[:1], {})[0]
        frequencies = np.stack([(samples == k).mean(axis=0) for k in range(4)], axis=-1)
        np.testing.assert_allclose(frequencies, probs, atol=5 * 0.5 / np.sqrt(n))
    if likelihood.name == "gaussian":
        np.testing.assert_allclose(std, 0.5, rtol=0.02)


def test_likelihood_checks_name_the_problem():
    with pytest.raises(ValueError, match=r"x must hold integers in \[0, 17\).*17"):
        CategoricalLikelihood(17).check_data(np.array([[3.0, 17.0]]))
    with pytest.raises(ValueError, match=r"integers.*2.5"):
        CategoricalLikelihood(17).check_data(np.array([[2.5]]))
    with pytest.raises(ValueError, match="binarize"):
        BernoulliLikelihood().check_data(np.array([[0.0, 0.4]]))
    with pytest.raises(ValueError, match="variance must be a positive number"):
        GaussianLikelihood(-1.0)
    with pytest.raises(ValueError, match="num_values must be an integer"):
        CategoricalLikelihood(1)
    with pytest.raises(ValueError, match="likelihood must be one of"):
        make_likelihood("poisson")


def test_gaussian_learned_variance_gradient_sign():
    # data spread wider than σ²: increasing log σ² raises log p, so its gradient (of -log p) is negative
    likelihood = GaussianLikelihood(0.01, learn_variance=True)
    params = likelihood.init_params(np.float64)
    x, mean = np.ones((3, 4)), np.zeros((3, 4))
    _, cache = likelihood.forward(x, mean, params)
    grads = {}
    likelihood.backward(-np.ones(3), cache, grads)
    assert grads["decoder.logvar"][0] < 0
    assert numerical_gradient(lambda _: -likelihood.forward(x, mean, params)[0].sum(),
                              params["decoder.logvar"])[0] < 0

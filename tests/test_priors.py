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
    with pytest.raises(ValueError, match="prior must be a minivae.priors.Prior, 'standard', 'mog:K' or 'vamp:K'"):
        minivae.VAE(4, 2, prior="vampire")
    with pytest.raises(ValueError, match="kl='analytic' needs a prior with a closed-form KL"):
        minivae.VAE(4, 2, prior=ShiftedScaledGaussian(), kl="analytic")


def test_standard_normal_log_prob_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    prior = StandardNormal()
    z, dlogp = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3))
    dz = prior.log_prob_backward(dlogp, prior.log_prob(z)[1])
    assert rel_error(dz, numerical_gradient_array(lambda v: prior.log_prob(v)[0], z, dlogp)) < 1e-8


# ------------------------------------------------------------------------------------------------
# The learnable priors: a mixture of Gaussians and the VampPrior
# ------------------------------------------------------------------------------------------------

from scipy import special, stats  # noqa: E402

from minivae.priors import MixtureOfGaussians, VampPrior  # noqa: E402


def _mog_params(rng, K=3, L=2):
    prior = MixtureOfGaussians(K)
    params = prior.init_params(L, rng, np.float64)
    params["prior.logvars"][...] = rng.normal(0, 0.5, (K, L))
    params["prior.logits"][...] = rng.normal(0, 1, K)
    return prior, params


def test_mixture_log_density_sums_over_dimensions_inside_the_logsumexp():
    rng = np.random.default_rng(0)
    prior, params = _mog_params(rng, K=3, L=2)
    z = rng.standard_normal((5, 2))
    weights = special.softmax(params["prior.logits"])
    std = np.exp(0.5 * params["prior.logvars"])
    expected = np.log(sum(weights[k] * np.prod(stats.norm.pdf(z, params["prior.means"][k], std[k]), axis=1)
                          for k in range(3)))
    np.testing.assert_allclose(prior.log_prob(z, params)[0], expected, rtol=1e-12)
    # the other order (logsumexp per dimension, then the sum) is a different density
    wrong = sum(np.log(sum(weights[k] * stats.norm.pdf(z[:, j], params["prior.means"][k, j], std[k, j])
                           for k in range(3))) for j in range(2))
    assert np.max(np.abs(wrong - expected)) > 1e-3


def test_mixture_with_one_component_at_the_origin_is_the_standard_normal():
    prior = MixtureOfGaussians(1, init_scale=0.0)
    params = prior.init_params(3, np.random.default_rng(0), np.float64)
    z = np.random.default_rng(1).standard_normal((2, 4, 3))
    np.testing.assert_allclose(prior.log_prob(z, params)[0], StandardNormal().log_prob(z)[0], rtol=1e-14)


@pytest.mark.parametrize("shape", [(5,), (3, 4)], ids=["N", "KxN"])
def test_mixture_log_prob_backward_matches_finite_differences(shape):
    rng = np.random.default_rng(2)
    prior, params = _mog_params(rng)
    z = rng.standard_normal(shape + (2,))
    dlogp = rng.standard_normal(shape)
    grads = {}
    dz = prior.log_prob_backward(dlogp, prior.log_prob(z, params)[1], grads)
    assert rel_error(dz, numerical_gradient_array(lambda v: prior.log_prob(v, params)[0], z, dlogp)) < 1e-8
    for key in params:
        numerical = numerical_gradient_array(lambda _: prior.log_prob(z, params)[0], params[key], dlogp)
        assert rel_error(grads[key], numerical) < 1e-8, key


def test_mixture_samples_follow_its_density():
    rng = np.random.default_rng(3)
    prior, params = _mog_params(rng, K=3, L=1)
    n = 200_000
    z = prior.sample(n, 1, params, np.random.default_rng(4))[:, 0]
    weights = special.softmax(params["prior.logits"])
    means, std = params["prior.means"][:, 0], np.exp(0.5 * params["prior.logvars"][:, 0])
    mean = np.sum(weights * means)
    variance = np.sum(weights * (std ** 2 + means ** 2)) - mean ** 2
    assert abs(z.mean() - mean) < 5 * np.sqrt(variance / n)
    assert abs(z.var() - variance) < 5 * variance * np.sqrt(2 / n) * 2
    # a histogram test in 1-D: counts in 20 equal-probability bins of the mixture's own CDF
    cdf = np.sum(weights * stats.norm.cdf((z[:, None] - means) / std), axis=1)
    counts = np.histogram(cdf, bins=20, range=(0, 1))[0]
    assert stats.chisquare(counts).pvalue > 1e-4
    # and the density integrates against the histogram of the samples
    grid = np.linspace(z.min(), z.max(), 400)
    assert np.trapezoid(np.exp(prior.log_prob(grid[:, None], params)[0]), grid) == pytest.approx(1, abs=1e-3)


def _vamp_model(backend="numpy", K=3, seed=0):
    data = np.random.default_rng(seed).integers(0, 3, (20, 4)).astype(np.float64)
    model = minivae.VAE(4, 2, hidden=(5,), activation="tanh", likelihood="categorical", num_values=3,
                        prior=VampPrior(K, data=data), dtype=np.float64, seed=seed, backend=backend)
    rng = np.random.default_rng(seed)
    for key, value in model.params.items():
        # the pseudo-inputs too: away from the ends of the sigmoid, where finite differences lose digits
        value[...] = rng.standard_normal(value.shape) * (0.5 if key != "prior.pseudo_inputs" else 1.0)
    return model, rng


def test_vamp_prior_with_one_pseudo_input_is_the_posterior_there():
    model, rng = _vamp_model(K=1)
    prior = model.prior
    u = prior.pseudo_inputs(model.params)
    assert np.all((u >= prior.low) & (u <= prior.high)) and prior.low == 0 and prior.high == 2
    mu, logvar = model.encode(u, check=False)  # pseudo-inputs are real numbers in [0, 2], not data
    z = rng.standard_normal((6, 2))
    np.testing.assert_allclose(prior.log_prob(z, model.params)[0], ops.diagonal_gaussian_log_prob(z, mu, logvar)[0],
                               rtol=1e-12)
    model.params["prior.pseudo_inputs"][...] = 40.0  # far out on the sigmoid: still in the range
    assert np.all(prior.pseudo_inputs(model.params) <= prior.high)


def test_vamp_prior_pseudo_inputs_start_at_training_examples_or_at_random_in_range():
    data = np.random.default_rng(0).integers(0, 17, (30, 4)).astype(np.float64)
    model = minivae.VAE(4, 2, hidden=(5,), prior=VampPrior(5, data=data), dtype=np.float64)
    u = model.prior.pseudo_inputs(model.params)
    # each pseudo-input is a training example (up to the margin that keeps sigmoid⁻¹ finite at 0 and 16)
    distances = np.abs(u[:, None, :] - data[None]).max(axis=2).min(axis=1)
    assert np.all(distances <= 16 * VampPrior.SIGMOID_MARGIN + 1e-9)
    random = minivae.VAE(4, 2, hidden=(5,), prior=VampPrior(5, low=-1, high=3), dtype=np.float64)
    u = random.prior.pseudo_inputs(random.params)
    assert np.all((u > -1) & (u < 3)) and u.std() > 0.5


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_vamp_prior_log_prob_backward_matches_finite_differences(backend):
    model, rng = _vamp_model(backend)
    prior = model.prior
    z, dlogp = rng.standard_normal((3, 5, 2)), rng.standard_normal((3, 5))
    grads = {}
    dz = prior.log_prob_backward(dlogp, prior.log_prob(z, model.params)[1], grads)
    assert rel_error(dz, numerical_gradient_array(lambda v: prior.log_prob(v, model.params)[0], z, dlogp)) < 1e-7
    assert set(grads) == {key for key in model.params if key.startswith("encoder.")} | {"prior.pseudo_inputs"}
    for key, value in grads.items():
        numerical = numerical_gradient_array(lambda _: prior.log_prob(z, model.params)[0], model.params[key], dlogp)
        assert rel_error(value, numerical) < 1e-7, key


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("prior_name", ["mog", "vamp"])
def test_the_whole_model_with_a_learnable_prior_passes_the_gradient_check(prior_name, backend):
    if prior_name == "vamp":
        model, rng = _vamp_model(backend)
    else:
        model = minivae.VAE(4, 2, hidden=(5,), activation="tanh", likelihood="gaussian", variance=0.7,
                            prior=MixtureOfGaussians(3), dtype=np.float64, seed=1, backend=backend)
        rng = np.random.default_rng(1)
        for value in model.params.values():
            value[...] = rng.standard_normal(value.shape) * 0.5
    x = (rng.integers(0, 3, (3, 4)) if prior_name == "vamp" else rng.standard_normal((3, 4))).astype(np.float64)
    eps = rng.standard_normal((3, 2))
    errors = check_model_gradients(model, x, eps)
    assert set(errors) == set(model.params)
    assert max(errors.values()) < TOLERANCE, errors


def test_learnable_priors_give_the_same_numbers_on_both_backends():
    for make in (lambda b: _vamp_model(b)[0],
                 lambda b: minivae.VAE(4, 2, hidden=(5,), prior="mog:3", dtype=np.float64, num_values=3, backend=b)):
        reference, compiled = make("numpy"), make("numba")
        x = np.random.default_rng(5).integers(0, 3, (6, 4))
        eps = np.random.default_rng(6).standard_normal((6, 2))
        (loss_numpy, grads_numpy), (loss_numba, grads_numba) = (m.loss_and_grads(x, eps) for m in (reference, compiled))
        assert loss_numba == pytest.approx(loss_numpy, rel=1e-12)
        for key in grads_numpy:
            np.testing.assert_allclose(grads_numba[key], grads_numpy[key], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("spec", ["mog:4", "vamp:3"])
def test_learnable_priors_save_load_and_sample(spec, tmp_path):
    model = minivae.VAE(4, 2, hidden=(5,), prior=spec, num_values=3, seed=2)
    x = np.random.default_rng(0).integers(0, 3, (40, 4))
    minivae.fit(model, x, epochs=2, verbose=False)
    model.save(tmp_path / "m.npz")
    loaded = minivae.VAE.load(tmp_path / "m.npz")
    assert type(loaded.prior) is type(model.prior) and loaded.prior.config() == model.prior.config()
    for key in model.params:
        np.testing.assert_array_equal(loaded.params[key], model.params[key])
    np.testing.assert_array_equal(loaded.sample(5, rng=np.random.default_rng(1)),
                                  model.sample(5, rng=np.random.default_rng(1)))
    with pytest.raises(ValueError, match=r"prior.* holds a model with the .* prior"):
        minivae.VAE.load(tmp_path / "m.npz", prior=StandardNormal())


def test_prior_specs_are_checked():
    for spec, message in [("mog:0", "at least 1"), ("vamp:x", "must be an integer"), ("gauss", "'mog:K'")]:
        with pytest.raises(ValueError, match=message):
            minivae.VAE(4, 2, prior=spec)
    with pytest.raises(ValueError, match="n_components must be a positive integer"):
        MixtureOfGaussians(-2)
    with pytest.raises(ValueError, match="high > low"):
        VampPrior(3, low=1, high=1)
    with pytest.raises(ValueError, match="data has 5 columns; the model expects input_dim=4"):
        minivae.VAE(4, 2, prior=VampPrior(2, data=np.arange(15.0).reshape(3, 5)))


def test_vamp_prior_samples_follow_its_density():
    # a mixture of the posteriors at the pseudo-inputs: compare the samples' moments and a 1-D histogram
    data = np.random.default_rng(0).random((30, 3))
    model = minivae.VAE(3, 1, hidden=(4,), likelihood="gaussian", prior=VampPrior(4, data=data), dtype=np.float64)
    mu, logvar, _ = model.prior.components(model.params)
    mu, std = mu[:, 0], np.exp(0.5 * logvar[:, 0])
    n = 200_000
    z = model.prior.sample(n, 1, model.params, np.random.default_rng(1))[:, 0]
    mean = mu.mean()
    variance = np.mean(std ** 2 + mu ** 2) - mean ** 2
    assert abs(z.mean() - mean) < 5 * np.sqrt(variance / n)
    assert abs(z.var() - variance) < 10 * variance * np.sqrt(2 / n)
    cdf = np.mean(stats.norm.cdf((z[:, None] - mu) / std), axis=1)
    assert stats.chisquare(np.histogram(cdf, bins=20, range=(0, 1))[0]).pvalue > 1e-4
    grid = np.linspace(z.min(), z.max(), 400)
    assert np.trapezoid(np.exp(model.prior.log_prob(grid[:, None], model.params)[0]), grid) == pytest.approx(1, abs=1e-3)

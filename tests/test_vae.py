"""The VAE: whole-ELBO gradient checks, the estimators of log p(x), the API contract and bad input."""

import json

import numpy as np
import pytest
from scipy import stats

import minivae
from minivae.gradcheck import check_model_gradients

# Whole-model checks: the loss is O(10) nats, so centered differences with h = 1e-5 carry a round-off
# of about 1e-16 * 10 / 1e-5 = 1e-10 in absolute terms. Gradient entries much smaller than 1e-4 would
# then show relative errors above 1e-6 without any bug, so the checks use weights of moderate size
# (standard deviation WEIGHT_SCALE) whose gradients are all well above that noise.
WEIGHT_SCALE = 0.5
TOLERANCE = 1e-6


def _data(likelihood, rng, n, d, num_values=3):
    if likelihood == "categorical":
        return rng.integers(0, num_values, (n, d)).astype(np.float64)
    if likelihood == "bernoulli":
        return rng.integers(0, 2, (n, d)).astype(np.float64)
    return rng.standard_normal((n, d))


def _small_model(likelihood, activation="tanh", kl="analytic", seed=0, hidden=(5,), learn_variance=True,
                 backend="numpy"):
    """A tiny float64 model. Gradient checks run on the NumPy reference; test_backends.py shows that
    the numba backend computes the same losses and gradients."""
    model = minivae.VAE(4, 2, hidden=hidden, activation=activation, likelihood=likelihood, num_values=3,
                        variance=0.7, learn_variance=learn_variance, kl=kl, seed=seed, dtype=np.float64,
                        backend=backend)
    rng = np.random.default_rng(seed)
    for key, value in model.params.items():
        value[...] = rng.standard_normal(value.shape) * (WEIGHT_SCALE if key != "decoder.logvar" else 0.3)
    return model, rng


# ------------------------------------------------------------------------------------------------
# Gradient checks of the whole -ELBO, every parameter of encoder and decoder
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli", "categorical"])
@pytest.mark.parametrize("activation", ["leaky_relu", "relu", "tanh", "sigmoid"])
def test_elbo_gradients_every_parameter(likelihood, activation):
    model, rng = _small_model(likelihood, activation, seed=1)
    x, eps = _data(likelihood, rng, 2, 4), rng.standard_normal((2, 2))
    errors = check_model_gradients(model, x, eps)
    assert set(errors) == set(model.params)
    assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli", "categorical"])
def test_elbo_gradients_with_monte_carlo_kl(likelihood):
    model, rng = _small_model(likelihood, "tanh", kl="monte_carlo", seed=2)
    x, eps = _data(likelihood, rng, 3, 4), rng.standard_normal((3, 2))
    assert max(check_model_gradients(model, x, eps).values()) < TOLERANCE


@pytest.mark.parametrize("likelihood", ["gaussian", "categorical"])
def test_elbo_gradients_linear_model_and_beta(likelihood):
    model, rng = _small_model(likelihood, hidden=(), seed=3)
    model.beta = 2.5
    x, eps = _data(likelihood, rng, 3, 4), rng.standard_normal((3, 2))
    assert max(check_model_gradients(model, x, eps).values()) < TOLERANCE


def test_gradient_check_catches_a_wrong_gradient(monkeypatch):
    # the check can fail: break the KL's backward (drop the factor 1/2 in dKL/dlogvar) and see it
    model, rng = _small_model("gaussian", seed=4)
    x, eps = _data("gaussian", rng, 3, 4), rng.standard_normal((3, 2))

    def wrong_kl_backward(dkl, cache, grads=None):
        mu, var = cache
        return dkl[:, None] * mu, dkl[:, None] * (var - 1)

    monkeypatch.setattr(model.prior, "kl_backward", wrong_kl_backward)
    errors = check_model_gradients(model, x, eps)
    assert errors["encoder.1.W"] > 1e-3
    assert errors["decoder.1.W"] < TOLERANCE  # the decoder does not see the KL


def test_loss_is_mean_negative_elbo_with_analytic_kl():
    model, rng = _small_model("categorical", seed=5)
    x, eps = _data("categorical", rng, 3, 4), rng.standard_normal((3, 2))
    loss, _ = model.loss_and_grads(x, eps=eps)
    mu, logvar = model.encode(x)
    z = mu + np.exp(0.5 * logvar) * eps
    log_px = model.likelihood.log_prob(x, model.decoder.forward(model.params, z)[0], model.params)
    kl = 0.5 * np.sum(mu ** 2 + np.exp(logvar) - 1 - logvar, axis=1)
    assert loss == pytest.approx(np.mean(kl - log_px), rel=1e-13)


# ------------------------------------------------------------------------------------------------
# The API contract
# ------------------------------------------------------------------------------------------------

def test_parameter_names_shapes_and_order():
    model = minivae.VAE(64, 16)
    expected = {
        "encoder.0.W": (64, 256), "encoder.0.b": (256,), "encoder.1.W": (256, 256), "encoder.1.b": (256,),
        "encoder.2.W": (256, 32), "encoder.2.b": (32,),
        "decoder.0.W": (16, 256), "decoder.0.b": (256,), "decoder.1.W": (256, 256), "decoder.1.b": (256,),
        "decoder.2.W": (256, 64 * 17), "decoder.2.b": (64 * 17,),
    }
    assert list(model.params) == list(expected)
    assert {key: value.shape for key, value in model.params.items()} == expected
    assert all(value.dtype == np.float32 for value in model.params.values())
    gaussian = minivae.VAE(64, 2, hidden=(), likelihood="gaussian", learn_variance=True)
    assert list(gaussian.params) == ["encoder.0.W", "encoder.0.b", "decoder.0.W", "decoder.0.b",
                                     "decoder.logvar"]
    assert gaussian.params["decoder.logvar"].shape == (1,)


def test_grads_have_the_keys_and_shapes_of_params():
    model = minivae.VAE(8, 3, hidden=(6, 5), likelihood="bernoulli", seed=1)
    x = np.random.default_rng(0).integers(0, 2, (7, 8))
    loss, grads = model.loss_and_grads(x)
    assert np.isfinite(loss)
    assert list(grads) == list(model.params)
    assert all(grads[key].shape == model.params[key].shape for key in model.params)
    assert all(grads[key].dtype == np.float32 for key in model.params)


def test_writing_into_params_in_place_changes_the_model():
    model = minivae.VAE(4, 2, hidden=(3,), likelihood="gaussian", dtype=np.float64)
    x = np.ones((2, 4))
    mu_before, _ = model.encode(x)
    model.params["encoder.1.b"][0] += 1.0
    mu_after, _ = model.encode(x)
    np.testing.assert_allclose(mu_after[:, 0] - mu_before[:, 0], 1.0)


def test_same_seed_same_model_and_eps_makes_loss_deterministic():
    a, b = minivae.VAE(6, 2, hidden=(4,), seed=3), minivae.VAE(6, 2, hidden=(4,), seed=3)
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])
    assert not np.array_equal(minivae.VAE(6, 2, hidden=(4,), seed=4).params["encoder.0.W"], a.params["encoder.0.W"])
    x = np.random.default_rng(0).integers(0, 17, (5, 6))
    eps = np.random.default_rng(1).standard_normal((5, 2))
    assert a.loss_and_grads(x, eps=eps)[0] == a.loss_and_grads(x, eps=eps)[0]
    assert a.loss_and_grads(x, rng=np.random.default_rng(2))[0] == b.loss_and_grads(x, rng=np.random.default_rng(2))[0]


def test_decode_sample_reconstruct_shapes_and_ranges():
    model = minivae.VAE(64, 4, hidden=(32,), seed=0)
    x, _ = minivae.datasets.load_digits("val")
    probs = model.decode(np.zeros((3, 4)))
    assert probs.shape == (3, 64, 17)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(model.decode(np.zeros((3, 4)), mean=True), probs @ np.arange(17), rtol=1e-5)
    samples = model.sample(5, rng=np.random.default_rng(0))
    assert samples.shape == (5, 64) and set(np.unique(samples)) <= set(range(17))
    means = model.sample(5, rng=np.random.default_rng(0), mean=True)
    assert means.shape == (5, 64) and means.min() >= 0 and means.max() <= 16
    reconstruction = model.reconstruct(x[:4])
    assert reconstruction.shape == (4, 64) and reconstruction.min() >= 0 and reconstruction.max() <= 16
    np.testing.assert_array_equal(model.sample(3, rng=np.random.default_rng(9)),
                                  model.sample(3, rng=np.random.default_rng(9)))


def test_elbo_parts_rate_and_distortion():
    model = minivae.VAE(64, 4, hidden=(32,), seed=0, dtype=np.float64)
    x, _ = minivae.datasets.load_digits("val")
    reconstruction, kl = model.elbo_parts(x[:10], n_samples=3, rng=np.random.default_rng(0))
    elbo = model.elbo(x[:10], n_samples=3, rng=np.random.default_rng(0))
    np.testing.assert_allclose(elbo, reconstruction - kl, rtol=1e-12)
    assert np.all(kl >= 0) and np.all(reconstruction < 0)
    mu, logvar = model.encode(x[:10])
    np.testing.assert_allclose(kl, 0.5 * np.sum(mu ** 2 + np.exp(logvar) - 1 - logvar, axis=1), rtol=1e-12)


def test_monte_carlo_kl_agrees_with_analytic_kl():
    model = minivae.VAE(64, 4, hidden=(32,), seed=0, dtype=np.float64)
    x, _ = minivae.datasets.load_digits("val")
    analytic = model.kl(x[:5])
    n = 20_000
    monte_carlo = model.kl(x[:5], method="monte_carlo", n_samples=n, rng=np.random.default_rng(0))
    # the standard error of the mean of n single-sample estimates log q(z|x) - log p(z)
    mu, logvar = model.encode(x[:5])
    eps = np.random.default_rng(1).standard_normal((n,) + mu.shape)
    z = mu + np.exp(0.5 * logvar) * eps
    single = 0.5 * np.sum(z ** 2 - logvar - eps ** 2, axis=-1)
    standard_error = single.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(single.mean(axis=0) - analytic) < 5 * standard_error)  # the formula itself
    assert np.all(np.abs(monte_carlo - analytic) < 5 * standard_error)


def test_active_units_counts_dimensions_whose_mean_varies():
    model = minivae.VAE(3, 4, hidden=(), likelihood="gaussian", dtype=np.float64)
    model.params["encoder.0.W"][...] = 0
    model.params["encoder.0.W"][0, 0] = 1.0   # mu_0 = x_0: variance 1 over x
    model.params["encoder.0.W"][1, 1] = 0.05  # mu_1 = 0.05 x_1: variance 0.0025 < 0.01
    x = np.random.default_rng(0).standard_normal((2000, 3))
    assert model.active_units(x) == 1
    assert model.active_units(x, threshold=1e-3) == 2


# ------------------------------------------------------------------------------------------------
# The importance-weighted estimate of log p(x)
# ------------------------------------------------------------------------------------------------

def _linear_gaussian_with_true_posterior(d=5, q=2, sigma2=0.3, seed=0):
    """A linear VAE whose encoder outputs the exact posterior of its decoder, and the decoder's p(x).

    The decoder's W (q, d) has orthogonal rows, so that the posterior covariance σ² (W Wᵀ + σ² I)⁻¹ is
    diagonal and a diagonal Gaussian q can equal it.
    """
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((d, q)))
    W = (basis * np.array([2.0, 0.7])[:q]).T  # (q, d), rows orthogonal
    b = rng.standard_normal(d)
    model = minivae.VAE(d, q, hidden=(), likelihood="gaussian", variance=sigma2, dtype=np.float64)
    M = W @ W.T + sigma2 * np.eye(q)  # diagonal
    M_inv = np.linalg.inv(M)
    model.params["decoder.0.W"][...] = W
    model.params["decoder.0.b"][...] = b
    model.params["encoder.0.W"][...] = np.concatenate([(M_inv @ W).T, np.zeros((d, q))], axis=1)
    model.params["encoder.0.b"][...] = np.concatenate([-(M_inv @ W) @ b, np.log(sigma2 * np.diag(M_inv))])
    marginal = stats.multivariate_normal(mean=b, cov=W.T @ W + sigma2 * np.eye(d))
    return model, marginal, rng


def test_importance_weighted_estimate_is_exact_with_the_true_posterior():
    model, marginal, rng = _linear_gaussian_with_true_posterior()
    x = marginal.rvs(size=6, random_state=1)
    exact = marginal.logpdf(x)
    # with q = p(z|x), every weight p(x, z_k) / q(z_k|x) equals p(x): the estimate is exact for any K
    for K in (1, 7, 512):
        np.testing.assert_allclose(model.log_likelihood(x, n_samples=K, rng=rng), exact, rtol=1e-10)
    # the ELBO is then log p(x) too, but only in expectation: its reconstruction term is sampled
    n = 4000
    elbo = model.elbo(x, n_samples=n, rng=rng)
    assert np.all(np.abs(elbo - exact) < 0.1)


def _widened(model):
    model.params["encoder.0.b"][2:] += 1.5  # posterior variances 4.5 times too wide: ELBO < log p(x)
    return model


def test_importance_weighted_estimate_rises_with_k_towards_log_px():
    model, marginal, _ = _linear_gaussian_with_true_posterior()
    _widened(model)
    x = marginal.rvs(size=4, random_state=2)
    exact = marginal.logpdf(x).mean()
    rows = np.repeat(x, 200, axis=0)  # 200 independent estimates per example, averaged
    estimates = {K: model.log_likelihood(rows, n_samples=K, rng=np.random.default_rng(K)).mean()
                 for K in (1, 10, 100, 1000)}
    assert estimates[1] < estimates[10] < estimates[100] < estimates[1000] < exact + 1e-3
    assert exact - estimates[1000] < 0.1 * (exact - estimates[1])
    # K = 1 is the ELBO
    elbo = model.elbo(rows, rng=np.random.default_rng(0)).mean()
    assert abs(elbo - estimates[1]) < 0.1 * (exact - estimates[1])


def test_log_likelihood_is_chunked_without_changing_the_result(monkeypatch):
    model, marginal, _ = _linear_gaussian_with_true_posterior()
    x = marginal.rvs(size=5, random_state=3)
    exact = marginal.logpdf(x)
    widest = max(model.decoder.sizes)
    # one example and one sample at a time: each weight is exact, so the result is too
    monkeypatch.setattr(minivae.evaluate, "EVAL_CHUNK_ELEMENTS", widest)
    np.testing.assert_allclose(model.log_likelihood(x, n_samples=9), exact, rtol=1e-10)
    # with weights that differ: all examples at once, 3 samples a chunk, draws the same eps as one
    # pass over all 40 samples, so the running logsumexp must give the one-pass answer
    _widened(model)
    monkeypatch.setattr(minivae.evaluate, "EVAL_CHUNK_ELEMENTS", widest * 5 * 3)
    chunked = model.log_likelihood(x, n_samples=40, rng=np.random.default_rng(0))
    monkeypatch.setattr(minivae.evaluate, "EVAL_CHUNK_ELEMENTS", 2 ** 22)
    one_pass = model.log_likelihood(x, n_samples=40, rng=np.random.default_rng(0))
    np.testing.assert_allclose(chunked, one_pass, rtol=1e-12)
    assert np.abs(one_pass - exact).max() > 1e-3  # the weights did differ


# ------------------------------------------------------------------------------------------------
# Saving and loading
# ------------------------------------------------------------------------------------------------

def test_save_load_round_trip_without_pickle(tmp_path):
    model = minivae.VAE(8, 3, hidden=(5,), likelihood="gaussian", learn_variance=True, seed=2)
    model.params["decoder.logvar"][...] = -0.25
    path = tmp_path / "model.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as archive:
        config = json.loads(str(archive["__config__"]))
    assert config["likelihood"] == "gaussian" and config["hidden"] == [5]
    loaded = minivae.VAE.load(path)
    assert loaded.config == model.config
    model.beta = 4.0  # changed after construction: the checkpoint keeps the current value
    model.save(path)
    assert minivae.VAE.load(path).beta == 4.0
    for key in model.params:
        np.testing.assert_array_equal(loaded.params[key], model.params[key])


def test_checkpoint_that_does_not_match_is_refused(tmp_path):
    path = tmp_path / "small.npz"
    minivae.VAE(8, 3, hidden=(5,)).save(path)
    with pytest.raises(ValueError, match=r"parameter 'encoder.0.W' has shape \(8, 5\); this model expects \(8, 7\)"):
        minivae.VAE(8, 3, hidden=(7,)).load_params(path)
    with pytest.raises(ValueError, match="missing"):
        minivae.VAE(8, 3, hidden=(5, 5)).load_params(path)


def test_a_checkpoint_whose_settings_lie_is_refused_before_anything_is_built(tmp_path):
    # a few-kB file claiming input_dim = 10**9: building that model would ask for terabytes
    path = tmp_path / "lying.npz"
    model = minivae.VAE(8, 3, hidden=(5,))
    model.save(path)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    config = json.loads(str(arrays.pop("__config__")))
    config["input_dim"] = 10 ** 9
    np.savez(path, __config__=np.array(json.dumps(config)), **arrays)
    with pytest.raises(ValueError, match=r"these settings ask for 107,000,000,061 weights \(input_dim=1000000000"):
        minivae.VAE.load(path)
    config["input_dim"] = 100  # a size that could be built, but not these arrays
    np.savez(path, __config__=np.array(json.dumps(config)), **arrays)
    with pytest.raises(ValueError, match=r"lying.npz: parameter 'encoder.0.W' has shape \(8, 5\); its settings "
                                         r"ask for \(100, 5\)"):
        minivae.VAE.load(path)
    config["input_dim"], config["hidden"] = 8, "five"
    np.savez(path, __config__=np.array(json.dumps(config)), **arrays)
    with pytest.raises((ValueError, TypeError), match="hidden"):
        minivae.VAE.load(path)


def test_save_is_atomic_a_failed_save_leaves_the_earlier_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    model = minivae.VAE(8, 3, hidden=(5,), seed=1)
    model.save(path)
    before = path.read_bytes()

    def failing_savez(file, **arrays):  # writes part of the archive, then the disk is full
        file.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="No space left"):
        minivae.VAE(8, 3, hidden=(5,), seed=2).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temporary file left behind
    np.testing.assert_array_equal(minivae.VAE.load(path).params["encoder.0.W"], model.params["encoder.0.W"])


def test_elbo_is_evaluated_in_chunks(monkeypatch):
    # the decoder never sees more rows than a chunk allows, whatever the number of examples
    model = minivae.VAE(6, 2, hidden=(4,), num_values=3)
    x = np.random.default_rng(0).integers(0, 3, (50, 6))
    widest = max(model.decoder.sizes)
    monkeypatch.setattr(minivae.evaluate, "EVAL_CHUNK_ELEMENTS", widest * 7)
    seen = []
    forward = model.decoder.forward

    def counting_forward(params, z, backend=None):
        seen.append(z.shape[0])
        return forward(params, z, backend)

    monkeypatch.setattr(model.decoder, "forward", counting_forward)
    reconstruction, kl = model.elbo_parts(x, n_samples=3, rng=np.random.default_rng(1))
    assert reconstruction.shape == kl.shape == (50,) and np.all(np.isfinite(reconstruction))
    assert max(seen) == 7 and sum(seen) == 3 * 50
    monkeypatch.undo()
    # the analytic KL does not depend on the draws: chunked or not, the same numbers
    np.testing.assert_allclose(kl, model.kl(x), rtol=1e-6)


def test_values_beyond_float32_are_refused_not_turned_into_inf():
    model = minivae.VAE(3, 2, hidden=(4,), likelihood="gaussian")  # float32
    with pytest.raises(ValueError, match=r"x holds values beyond the range of float32 \(largest magnitude 1e\+39\)"):
        model.elbo(np.array([[0.0, 1e39, 1.0]]))
    # in float64 the same value is representable: the model takes it
    minivae.VAE(3, 2, hidden=(4,), likelihood="gaussian", dtype=np.float64).encode(np.array([[0.0, 1e39, 1.0]]))


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------

def test_bad_input_is_named():
    model = minivae.VAE(64, 16, hidden=(8,))
    good = np.zeros((2, 64))
    with pytest.raises(ValueError, match="x has 63 columns; the model expects input_dim=64"):
        model.loss_and_grads(np.zeros((2, 63)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.elbo(np.full((2, 64), np.nan))
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.encode(np.full((2, 64), np.inf))
    with pytest.raises(ValueError, match=r"integers in \[0, 17\)"):
        model.log_likelihood(good + 0.5, n_samples=2)
    with pytest.raises(ValueError, match=r"integers in \[0, 17\)"):
        model.loss_and_grads(good + 17)
    with pytest.raises(ValueError, match="reshape"):
        model.encode(np.zeros(64))
    with pytest.raises(ValueError, match="eps has 3 rows; x has 2"):
        model.loss_and_grads(good, eps=np.zeros((3, 16)))
    with pytest.raises(ValueError, match="z has 15 columns; the model expects latent_dim=16"):
        model.decode(np.zeros((1, 15)))
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        model.sample(2, rng=np.random.RandomState(0))
    with pytest.raises(TypeError, match="numeric"):
        model.encode(np.array([["a"] * 64]))
    bernoulli = minivae.VAE(64, 2, hidden=(), likelihood="bernoulli")
    with pytest.raises(ValueError, match=r"binarize"):
        bernoulli.loss_and_grads(good + 0.5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(latent_dim=0), "latent_dim must be a positive integer; got 0"),
    (dict(latent_dim=-3), "latent_dim must be a positive integer"),
    (dict(hidden=(256, 0)), "hidden must be a positive integer"),
    (dict(activation="gelu"), "activation must be one of"),
    (dict(likelihood="poisson"), "likelihood must be one of"),
    (dict(kl="exact"), "kl must be one of"),
    (dict(beta=-1.0), "beta must be a number"),
    (dict(likelihood="categorical", num_values=1), "num_values must be an integer"),
    (dict(likelihood="gaussian", variance=0.0), "variance must be a positive number"),
])
def test_bad_settings_are_named(kwargs, message):
    settings = dict(input_dim=64, latent_dim=16, hidden=(8,))
    settings.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message):
        minivae.VAE(**settings)


def test_latent_dim_must_be_an_integer():
    with pytest.raises(TypeError, match="latent_dim must be a positive integer; got 2.5"):
        minivae.VAE(64, 2.5)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        minivae.VAE(64, 2, dtype=np.int32)

"""Objectives: the IWAE bound and its gradient, the KL warm-up and free bits, on both backends."""

import numpy as np
import pytest

import minivae
from minivae.gradcheck import check_model_gradients
from minivae.objectives import ELBO, IWAE, make_objective

TOLERANCE = 1e-6


def _model(backend="numpy", likelihood="categorical", prior=None, seed=0):
    model = minivae.VAE(4, 2, hidden=(5,), activation="tanh", likelihood=likelihood, num_values=3, variance=0.7,
                        prior=prior, dtype=np.float64, seed=seed, backend=backend)
    rng = np.random.default_rng(seed)
    for value in model.params.values():
        value[...] = rng.standard_normal(value.shape) * 0.5
    x = rng.integers(0, 3, (3, 4)).astype(np.float64) if likelihood == "categorical" else rng.standard_normal((3, 4))
    return model, x, rng


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_iwae_gradient_every_parameter(k, backend):
    model, x, rng = _model(backend, seed=k)
    objective = IWAE(k)
    eps = objective.draw_noise(model, 3, rng).astype(np.float64)
    errors = check_model_gradients(model, x, eps, objective=objective)
    assert set(errors) == set(model.params)
    assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.parametrize("prior", ["mog:2", "vamp:2"])
def test_iwae_gradient_with_a_learnable_prior(prior):
    model, x, rng = _model("numpy", likelihood="gaussian", prior=prior, seed=3)
    eps = rng.standard_normal((4, 3, 2))
    errors = check_model_gradients(model, x, eps, objective=IWAE(4))
    assert max(errors.values()) < TOLERANCE, errors


def test_iwae_with_one_sample_is_the_monte_carlo_elbo_exactly():
    for prior in (None, "mog:3"):
        model, x, rng = _model(prior=prior, seed=1)
        eps = rng.standard_normal((1, 3, 2))
        loss_iwae, grads_iwae, stats = IWAE(1).loss_and_grads(model, x, eps)
        loss_elbo, grads_elbo, _ = ELBO(kl="monte_carlo").loss_and_grads(model, x, eps[0])
        assert loss_iwae == pytest.approx(loss_elbo, rel=1e-14)
        assert stats["ess"] == 1.0
        for key in grads_elbo:
            np.testing.assert_allclose(grads_iwae[key], grads_elbo[key], rtol=1e-12, atol=1e-14)


def test_iwae_is_the_same_on_both_backends():
    (reference, x, rng), (compiled, _, _) = _model("numpy"), _model("numba")
    eps = rng.standard_normal((5, 3, 2))
    a, b = IWAE(5).loss_and_grads(reference, x, eps), IWAE(5).loss_and_grads(compiled, x, eps)
    assert a[0] == pytest.approx(b[0], rel=1e-12)
    for key in a[1]:
        np.testing.assert_allclose(b[1][key], a[1][key], rtol=1e-9, atol=1e-12)


def test_iwae_bound_rises_with_k_and_its_ess_is_between_1_and_k():
    model = minivae.VAE(64, 4, hidden=(32,), seed=0, dtype=np.float64)
    x = model.check_x(minivae.datasets.load_digits("val")[0][:100])
    bounds = {}
    for k in (1, 5, 50):
        objective = IWAE(k)
        values = [objective.loss_and_grads(model, x, objective.draw_noise(model, 100, np.random.default_rng(s)))
                  for s in range(3)]
        bounds[k] = np.mean([-loss for loss, _, _ in values])
        for loss, _, stats in values:
            assert 1 <= stats["ess"] <= k and stats["bound"] == pytest.approx(-loss)
    assert bounds[1] < bounds[5] < bounds[50]
    # and L_k stays below the K = 5000 estimate of log p(x), up to noise
    assert bounds[50] < np.mean(model.log_likelihood(x, n_samples=5000, rng=np.random.default_rng(9))) + 0.5


def test_fit_trains_with_iwae_and_records_the_effective_sample_size():
    x = minivae.datasets.load_digits("train")[0][:200]
    x_val = minivae.datasets.load_digits("val")[0][:100]
    model = minivae.VAE(64, 4, hidden=(32,))
    history = minivae.fit(model, x, x_val, objective=IWAE(5), epochs=3, verbose=False)
    assert len(history.train_stats["ess"]) == 3 and all(1 <= e <= 5 for e in history.train_stats["ess"])
    assert history.train_loss[-1] < history.train_loss[0]
    assert len(history.active_units) == 3 and len(history.train_rate) == 3


def test_iwae_validates_on_its_own_bound_recomputed_by_hand():
    """IWAE(k).validation_loss is -mean L_k: k samples of z ~ q(z|x), log w by scipy, logsumexp - log k."""
    from scipy.special import log_softmax, logsumexp
    from scipy.stats import norm

    model, x, _ = _model(seed=4)
    k, n = 6, x.shape[0]
    eps = model.draw_noise(n, np.random.default_rng(11), samples=k)                   # (k, n, 2)
    mu, logvar = model.encode(x)
    z = mu + np.exp(0.5 * logvar) * eps
    logits = model.decode(z.reshape(k * n, 2), check=False).reshape(k, n, 4, 3)
    log_px = np.take_along_axis(log_softmax(logits, axis=-1), x.astype(int)[None, :, :, None], -1).sum(axis=(2, 3))
    log_pz = norm.logpdf(z).sum(-1)
    log_qz = norm.logpdf(z, mu, np.exp(0.5 * logvar)).sum(-1)
    bound = logsumexp(log_px + log_pz - log_qz, axis=0) - np.log(k)                  # L_k per example
    objective = IWAE(k)
    assert objective.validation_name == "-L_6"
    assert objective.validation_loss(model, x, 1, np.random.default_rng(11)) == pytest.approx(-bound.mean(), rel=1e-12)
    # the ELBO validates on the plain -ELBO, whatever its training devices (warm-up, free bits, β)
    elbo = ELBO(beta=3.0, warmup=5, free_bits=0.5)
    assert elbo.validation_name == "-ELBO"
    assert elbo.validation_loss(model, x, 4, np.random.default_rng(2)) == pytest.approx(
        -np.mean(model.elbo(x, n_samples=4, rng=np.random.default_rng(2))), rel=1e-14)


class _ScriptedValidation(ELBO):
    """The ELBO, validated on a scripted sequence of losses: fit must stop on this, not on the -ELBO."""
    validation_name = "-scripted"

    def __init__(self, losses):
        super().__init__()
        self.losses, self.calls = list(losses), []

    def validation_loss(self, model, x, n_samples=1, rng=None):
        self.calls.append((x.shape[0], n_samples))
        return self.losses[len(self.calls) - 1]


def test_fit_stops_on_the_objective_validation_loss():
    x = minivae.datasets.load_digits("train")[0][:100]
    x_val = minivae.datasets.load_digits("val")[0][:30]
    objective = _ScriptedValidation([5.0, 3.0, 4.0, 2.5, 2.6, 2.7, 2.8, 1.0])
    history = minivae.fit(minivae.VAE(64, 2, hidden=(8,)), x, x_val, objective=objective, epochs=8,
                          patience=3, val_samples=2, verbose=False)
    assert history.val_loss == [5.0, 3.0, 4.0, 2.5, 2.6, 2.7, 2.8]  # stopped 3 epochs after epoch 4
    assert (history.best_epoch, history.best_val_loss, history.stopped_early) == (4, 2.5, True)
    assert history.val_loss_name == "-scripted" and objective.calls == [(30, 2)] * 7


def test_fit_with_iwae_records_minus_l_k_as_its_validation_loss():
    x = minivae.datasets.load_digits("train")[0][:100]
    x_val = minivae.datasets.load_digits("val")[0][:40]
    model = minivae.VAE(64, 3, hidden=(16,), seed=1)
    history = minivae.fit(model, x, x_val, objective=IWAE(4), epochs=2, ema=None, verbose=False)
    assert history.val_loss_name == "-L_4"
    # the model holds the best epoch's parameters: its -L_4, recomputed, is that epoch's value up to noise
    again = IWAE(4).validation_loss(model, model.check_x(x_val), 20, np.random.default_rng(0))
    assert again == pytest.approx(history.best_val_loss, abs=1.0)
    assert again < -np.mean(model.elbo(x_val, n_samples=20, rng=np.random.default_rng(0)))  # L_4 above the ELBO


# ------------------------------------------------------------------------------------------------
# Posterior collapse: KL warm-up and free bits
# ------------------------------------------------------------------------------------------------

def test_warmup_raises_the_kl_weight_linearly_to_beta_and_fit_moves_it_per_epoch():
    objective = ELBO(beta=2.0, warmup=4, warmup_start=0.25)
    weights = []
    for epoch in range(1, 8):
        objective.start_epoch(epoch)
        weights.append(objective.kl_weight())
    np.testing.assert_allclose(weights, [0.5, 0.875, 1.25, 1.625, 2.0, 2.0, 2.0])
    seen = []

    class Watching(ELBO):
        def loss_and_grads(self, model, x, eps):
            seen.append(self.kl_weight())
            return super().loss_and_grads(model, x, eps)

    x = minivae.datasets.load_digits("train")[0][:128]
    minivae.fit(minivae.VAE(64, 2, hidden=(8,)), x, objective=Watching(warmup=2), epochs=3, batch_size=64,
                verbose=False)
    assert seen == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_warmup_gradient_is_the_gradient_of_the_weighted_loss(backend):
    model, x, rng = _model(backend, seed=4)
    objective = ELBO(warmup=10)
    objective.start_epoch(4)  # weight 0.3
    eps = rng.standard_normal((3, 2))
    assert max(check_model_gradients(model, x, eps, objective=objective).values()) < TOLERANCE
    loss, _, stats = objective.loss_and_grads(model, x, eps)
    assert loss == pytest.approx(stats["distortion"] + 0.3 * stats["rate"], rel=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_free_bits_gradient_and_floor(backend):
    model, x, rng = _model(backend, seed=5)
    eps = rng.standard_normal((3, 2))
    mu, logvar = model.encode(x)
    kl_mean = model.prior.kl_per_dimension(mu, logvar)[0].mean(axis=0)
    # a floor between the two dimensions' average KL: one dimension is floored, one is not
    floor = float(np.mean(kl_mean))
    assert kl_mean.min() < floor < kl_mean.max()
    objective = ELBO(free_bits=floor)
    errors = check_model_gradients(model, x, eps, objective=objective)
    assert max(errors.values()) < TOLERANCE, errors
    loss, _, stats = objective.loss_and_grads(model, x, eps)
    assert loss == pytest.approx(stats["distortion"] + floor + kl_mean.max(), rel=1e-12)
    assert stats["rate"] == pytest.approx(kl_mean.sum(), rel=1e-12)
    # with a floor above every dimension's KL the encoder gets gradient from the reconstruction only
    _, grads_floored, _ = ELBO(free_bits=10 * kl_mean.max()).loss_and_grads(model, x, eps)
    _, grads_no_kl, _ = ELBO(beta=0.0).loss_and_grads(model, x, eps)
    for key in grads_no_kl:
        np.testing.assert_allclose(grads_floored[key], grads_no_kl[key], rtol=1e-12, atol=1e-15)


def test_objective_settings_are_checked():
    for kwargs, message in [(dict(warmup=0), "warmup must be a number of epochs"),
                            (dict(free_bits=-0.1), "free_bits must be a number of nats ≥ 0"),
                            (dict(warmup_start=1.5), "warmup_start must be a fraction"),
                            (dict(free_bits=0.5, kl="monte_carlo"), "free_bits needs the analytic KL")]:
        with pytest.raises(ValueError, match=message):
            ELBO(**kwargs)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        IWAE(0)
    with pytest.raises(ValueError, match="objective must be 'elbo' or 'iwae:K'"):
        make_objective("vi")
    with pytest.raises(ValueError, match="must be an integer"):
        make_objective("iwae:five")
    assert make_objective("iwae:50").k == 50 and make_objective("elbo", free_bits=0.25).free_bits == 0.25
    model, x, rng = _model(prior="mog:2")
    with pytest.raises(ValueError, match="free_bits needs a prior whose KL splits over dimensions"):
        ELBO(free_bits=0.1).loss_and_grads(model, x, rng.standard_normal((3, 2)))
    with pytest.raises(ValueError, match=r"warm-up takes 50 epochs, longer than the run \(epochs=10\)"):
        minivae.fit(model, x, objective=ELBO(warmup=50), epochs=10)

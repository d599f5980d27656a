"""fit: learning, early stopping, reproducibility, and what happens when the loss blows up."""

import numpy as np
import pytest

import minivae
from minivae.training import TrainingError, fit


@pytest.fixture(scope="module")
def digits():
    x_train, _ = minivae.datasets.load_digits("train")
    x_val, _ = minivae.datasets.load_digits("val")
    return x_train[:256], x_val[:128]


def _small(seed=0, **kwargs):
    return minivae.VAE(64, 4, hidden=(32,), seed=seed, **kwargs)


def test_fit_lowers_the_training_and_validation_loss(digits, capsys):
    x_train, x_val = digits
    model = _small()
    before = -model.elbo(x_val, n_samples=5, rng=np.random.default_rng(0)).mean()
    history = fit(model, x_train, x_val, epochs=8, optimizer=minivae.Adam(lr=3e-3), patience=None)
    after = -model.elbo(x_val, n_samples=5, rng=np.random.default_rng(0)).mean()
    assert history.epochs == 8 and len(history.train_loss) == 8 and len(history.val_loss) == 8
    assert history.train_loss[-1] < history.train_loss[0] - 10
    assert after < before - 10
    assert history.steps == 8 * 4  # 256 examples in batches of 64
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 8 and printed[0].startswith("epoch    1") and "val -ELBO" in printed[0]


def test_early_stopping_restores_the_best_parameters(digits):
    x_train, x_val = digits
    model = _small()
    # an absurd learning rate for SGD makes the validation loss worse after the first epochs
    seen = {}

    def remember(epoch, history):
        seen[epoch] = {key: value.copy() for key, value in model.params.items()}

    history = fit(model, x_train, x_val, epochs=30, optimizer=minivae.Adam(lr=3e-3), patience=2, ema=None,
                  val_samples=1, verbose=False, callback=remember)
    assert history.best_val_loss == min(history.val_loss)
    assert history.best_epoch == int(np.argmin(history.val_loss)) + 1  # epochs count from 1
    if history.stopped_early:
        assert history.epochs == history.best_epoch + 2
    for key in model.params:
        np.testing.assert_array_equal(model.params[key], seen[history.best_epoch][key])


def test_same_seed_gives_identical_parameters(digits):
    x_train, x_val = digits
    runs = []
    for _ in range(2):
        model = _small(seed=5)
        fit(model, x_train, x_val, epochs=3, rng=np.random.default_rng(11), verbose=False)
        runs.append(model.params)
    for key in runs[0]:
        np.testing.assert_array_equal(runs[0][key], runs[1][key])
    other = _small(seed=5)
    fit(other, x_train, x_val, epochs=3, rng=np.random.default_rng(12), verbose=False)
    assert not np.array_equal(other.params["encoder.0.W"], runs[0]["encoder.0.W"])


def test_without_validation_all_epochs_run(digits):
    x_train, _ = digits
    history = fit(_small(), x_train, epochs=3, patience=1, verbose=False)
    assert history.epochs == 3 and history.val_loss == [] and not history.stopped_early


def test_polyak_average_is_what_is_validated_and_kept(digits):
    x_train, x_val = digits
    model = _small()
    history = fit(model, x_train, x_val, epochs=4, ema=0.9, patience=None, verbose=False,
                  rng=np.random.default_rng(0))
    plain = _small()
    fit(plain, x_train, x_val, epochs=4, ema=None, patience=None, verbose=False, rng=np.random.default_rng(0))
    assert not np.allclose(model.params["decoder.0.W"], plain.params["decoder.0.W"])
    assert history.best_val_loss == min(history.val_loss)


def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_best(digits):
    x_train, x_val = digits
    model = _small()
    fit(model, x_train, x_val, epochs=1, verbose=False)
    good = {key: value.copy() for key, value in model.params.items()}

    def explode(epoch, history):
        model.params["decoder.1.b"][0] = np.inf  # the next step's loss is no longer finite
    with pytest.raises(TrainingError, match=r"epoch 2, step 1 of 4.*best epoch \(1\) were restored"):
        fit(model, x_train, x_val, epochs=5, verbose=False, callback=explode)
    for key in good:
        assert np.all(np.isfinite(model.params[key]))


def test_huge_learning_rate_raises_training_error(digits):
    x_train, x_val = digits
    model = _small()
    initial = {key: value.copy() for key, value in model.params.items()}
    with pytest.raises(TrainingError, match=r"non-finite .* at epoch 1, step \d+ of 4; the initial parameters"):
        fit(model, x_train, x_val, epochs=3, optimizer=minivae.SGD(lr=1e12), verbose=False)
    for key in initial:
        np.testing.assert_array_equal(model.params[key], initial[key])


def test_fit_checks_its_arguments(digits):
    x_train, x_val = digits
    model = _small()
    with pytest.raises(ValueError, match="x_train has 63 columns"):
        fit(model, x_train[:, :63])
    with pytest.raises(ValueError, match=r"x_val must hold integers in \[0, 17\)"):
        fit(model, x_train, x_val + 0.5)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        fit(model, x_train, batch_size=0)
    with pytest.raises(TypeError, match="optimizer must be a minivae.optim.Optimizer"):
        fit(model, x_train, optimizer="adam")
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        fit(model, x_train, rng=0)


def test_fit_defaults_are_the_reference_setting():
    import inspect

    from minivae.reference import REFERENCE
    defaults = {name: p.default for name, p in inspect.signature(fit).parameters.items()}
    assert defaults["batch_size"] == REFERENCE.batch_size and defaults["patience"] == REFERENCE.patience
    assert defaults["ema"] == REFERENCE.ema and defaults["val_samples"] == REFERENCE.val_samples
    assert defaults["epochs"] == REFERENCE.max_epochs


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_the_weight_average_follows_its_formula(digits, backend):
    # avg_t = d_t avg_{t-1} + (1 - d_t) params_t with d_t = min(ema, (1 + t) / (10 + t)), t = 0, 1, ...:
    # recomputed here from the parameters after every step, recorded by an optimizer that remembers
    x_train, _ = digits
    model = _small(dtype=np.float64)
    snapshots = []

    class Remembering(minivae.Adamax):
        def step(self, params, grads):
            super().step(params, grads)
            snapshots.append({key: value.copy() for key, value in params.items()})

    initial = {key: value.copy() for key, value in model.params.items()}
    fit(model, x_train, epochs=2, ema=0.5, optimizer=Remembering(lr=1e-3), backend=backend, verbose=False)
    average = initial
    for t, params in enumerate(snapshots):
        d = min(0.5, (1 + t) / (10 + t))
        average = {key: d * average[key] + (1 - d) * params[key] for key in average}
    assert len(snapshots) == 8
    for key in average:  # without validation data the model ends holding the average
        np.testing.assert_allclose(model.params[key], average[key], rtol=1e-12, atol=1e-14)
        assert not np.allclose(model.params[key], snapshots[-1][key], rtol=1e-9, atol=0)


def test_recorded_training_loss_is_the_mean_over_examples(digits):
    # 200 examples in batches of 64: 64, 64, 64, 8; the epoch's loss is weighted by batch size
    x_train, _ = digits
    losses = []

    class Recording(minivae.ELBO):
        def loss_and_grads(self, model, x, eps):
            loss, grads, stats = super().loss_and_grads(model, x, eps)
            losses.append((loss, x.shape[0], stats))
            return loss, grads, stats

    history = fit(_small(), x_train[:200], objective=Recording(), epochs=1, verbose=False)
    assert [n for _, n, _ in losses] == [64, 64, 64, 8]
    expected = sum(loss * n for loss, n, _ in losses) / 200
    assert history.train_loss == [pytest.approx(expected, rel=1e-12)]
    assert history.train_rate == [pytest.approx(sum(s["rate"] * n for _, n, s in losses) / 200, rel=1e-12)]
    assert history.train_distortion[0] + history.train_rate[0] == pytest.approx(expected, rel=1e-5)


def test_fit_trains_with_an_objective_written_here(digits):
    # a toy objective: the negative ELBO with the KL weighted by 0 for the decoder's sake, written
    # from the model's public pieces only; it must drive the reconstruction term down
    x_train, x_val = digits

    class Reconstruction:
        def draw_noise(self, model, n, rng):
            return rng.standard_normal((n, model.latent_dim)).astype(model.dtype)

        def loss_and_grads(self, model, x, eps):
            params, L = model.params, model.latent_dim
            h, encoder_cache = model.encoder.forward(params, x, model.backend)
            z = h[:, :L] + np.exp(0.5 * h[:, L:]) * eps
            out, decoder_cache = model.decoder.forward(params, z, model.backend)
            log_px, likelihood_cache = model.likelihood.forward(x, out, params, model.backend)
            grads = {}
            dout = model.likelihood.backward(np.full(x.shape[0], -1 / x.shape[0], model.dtype), likelihood_cache, grads)
            dz = model.decoder.backward(dout, decoder_cache, grads, backend=model.backend)
            dh = np.concatenate([dz, dz * eps * 0.5 * np.exp(0.5 * h[:, L:])], axis=1)
            model.encoder.backward(dh, encoder_cache, grads, need_dx=False, backend=model.backend)
            return -float(np.mean(log_px)), grads, {}

    model = _small()
    before = -model.elbo_parts(x_val, rng=np.random.default_rng(0))[0].mean()
    history = fit(model, x_train, objective=Reconstruction(), epochs=5, ema=None, verbose=False)
    after = -model.elbo_parts(x_val, rng=np.random.default_rng(0))[0].mean()
    assert history.train_loss[-1] < history.train_loss[0] and after < before - 5
    assert history.train_rate == []  # this objective reports no rate
    with pytest.raises(TypeError, match=r"objective must have a method draw_noise\(\); got object"):
        fit(model, x_train, objective=object())


def test_ctrl_c_keeps_the_best_parameters_and_says_where(digits, capsys):
    x_train, x_val = digits
    model = _small()
    seen = {}

    def interrupt(epoch, history):
        seen[epoch] = {key: value.copy() for key, value in model.params.items()}
        if epoch == 3:
            raise KeyboardInterrupt

    history = fit(model, x_train, x_val, epochs=10, ema=None, patience=None, callback=interrupt)
    assert history.interrupted and history.interrupted_at == {"epoch": 4, "step": 0}
    assert history.epochs == 3 and len(history.val_loss) == 3
    for key in model.params:
        np.testing.assert_array_equal(model.params[key], seen[history.best_epoch][key])
    assert f"interrupted at epoch 4, step 0; kept the parameters of epoch {history.best_epoch}" in \
        capsys.readouterr().out

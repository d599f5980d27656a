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

    history = fit(model, x_train, x_val, epochs=30, optimizer=minivae.Adam(lr=3e-3), patience=2,
                  val_samples=1, verbose=False, callback=remember)
    assert history.best_val_loss == min(history.val_loss)
    assert history.best_epoch == int(np.argmin(history.val_loss))
    if history.stopped_early:
        assert history.epochs == history.best_epoch + 1 + 2
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
    fit(plain, x_train, x_val, epochs=4, patience=None, verbose=False, rng=np.random.default_rng(0))
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

"""The numbers users read, recomputed independently.

``minivae train`` reports its test numbers in summary.json and its training curve in history.json;
``minivae compare`` reports pPCA's noise variance and test NLL. Each number here is computed again
from its definition, from the saved model and the data, by a route that does not go through the code
that reported it, so that a wrong sign, a missing division or the wrong data set shows up.
"""

import json

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from minivae import VAE, cli, optim
from minivae.datasets import load_digits
from minivae.reference import REFERENCE

EPOCHS = 3
TRAIN = ["train", "--epochs", str(EPOCHS), "--hidden", "16", "--latent", "2", "--test-samples", "64",
         "--no-figures", "--quiet", "--seed", "7"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small `minivae train` on the digits: (summary, history, the saved model, the test digits)."""
    out = tmp_path_factory.mktemp("numbers") / "run"
    assert cli.main(TRAIN + ["--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    history = json.loads((out / "history.json").read_text())
    return summary, history, VAE.load(out / "params.npz"), load_digits("test")[0]


def _nll(model, x, seed):
    return -model.log_likelihood(x, n_samples=64, rng=np.random.default_rng(seed))


def test_test_nll_is_minus_the_saved_models_log_likelihood(run):
    summary, _, model, test = run
    first, second = _nll(model, test, 100), _nll(model, test, 101)
    # Two independent estimates on the same examples differ by Monte Carlo noise only: its scale
    # bounds how far the reported mean may be from a recomputed one.
    noise = np.std(first - second) / np.sqrt(len(test))
    assert summary["test_nll_samples"] == 64
    assert summary["test_nll"] > 0  # -log P(x) of discrete data is positive
    assert abs(summary["test_nll"] - np.mean(first)) < 6 * noise + 1e-3


def test_bits_per_dimension_divide_by_the_dimensions_and_ln2(run):
    summary, _, model, test = run
    nll = np.mean(_nll(model, test, 102))
    bits = nll / (test.shape[1] * np.log(2))  # 64 pixels, nats -> bits
    assert 0 < summary["test_nll_bits_per_dim"] < np.log2(REFERENCE.num_values)  # below a uniform guess
    assert summary["test_nll_bits_per_dim"] == pytest.approx(bits, rel=0.01)


def test_rate_and_distortion_recomputed_and_they_sum_to_the_nelbo(run):
    summary, _, model, test = run
    mu, logvar = (a.astype(np.float64) for a in model.encode(test))
    kl = 0.5 * np.sum(mu ** 2 + np.exp(logvar) - 1 - logvar, axis=1)  # KL(N(mu, e^logvar) || N(0, I))
    assert summary["test_rate"] == pytest.approx(np.mean(kl), rel=1e-5)

    rng = np.random.default_rng(103)
    log_px = []
    for _ in range(20):
        z = mu + np.exp(0.5 * logvar) * rng.standard_normal(mu.shape)
        probabilities = model.decode(z).astype(np.float64)  # (N, 64, 17)
        picked = np.take_along_axis(probabilities, test[:, :, None], axis=2)[:, :, 0]
        log_px.append(np.sum(np.log(picked), axis=1))
    log_px = np.array(log_px)  # (20 draws, N)
    distortion = -np.mean(log_px)
    noise = np.std(np.mean(log_px, axis=1))  # the spread of one draw's mean; 20 draws average it
    assert summary["test_distortion"] == pytest.approx(distortion, abs=4 * noise + 0.05)
    assert summary["test_nelbo"] == pytest.approx(summary["test_rate"] + summary["test_distortion"], rel=1e-12)
    assert summary["test_nelbo"] >= summary["test_nll"] - 4 * noise - 0.5  # the ELBO bounds log p(x)


def test_active_units_and_best_epoch_recomputed(run):
    summary, history, model, test = run
    mu, _ = model.encode(test)
    assert summary["active_units"] == int(np.sum(np.var(mu.astype(np.float64), axis=0) > 0.01))
    assert summary["epochs"] == len(history["train_loss"]) == len(history["val_loss"]) == EPOCHS
    assert summary["best_epoch"] == 1 + int(np.argmin(history["val_loss"]))  # 1-based
    assert summary["val_best_nelbo"] == min(history["val_loss"])


def test_the_recorded_training_loss_is_the_mean_over_examples(run):
    """Epoch 1 replayed step by step: the mean -ELBO over the 1000 training digits, each minibatch
    weighted by its size (the last has 1000 - 15 * 64 = 40 digits)."""
    summary, history, saved, _ = run
    config = dict(saved.config, hidden=tuple(saved.config["hidden"]))
    model = VAE(**config)  # the same seed: the same initial weights
    optimizer = optim.make_optimizer("adamax", REFERENCE.lr)
    x = load_digits("train")[0].astype(model.dtype)
    rng = np.random.default_rng(summary["settings"]["seed"])
    order = rng.permutation(len(x))
    losses, sizes = [], []
    for start in range(0, len(x), REFERENCE.batch_size):
        batch = x[order[start:start + REFERENCE.batch_size]]
        eps = rng.standard_normal((len(batch), model.latent_dim)).astype(model.dtype)
        loss, grads = model.loss_and_grads(batch, eps=eps)
        optimizer.step(model.params, grads)
        losses.append(float(loss))
        sizes.append(len(batch))
    assert sizes[-1] == 40
    assert history["train_loss"][0] == pytest.approx(np.dot(losses, sizes) / sum(sizes), rel=1e-5)


# --------------------------------------------------------------------------------------------------
# minivae compare: pPCA's numbers from the eigenvalues of the sample covariance
# --------------------------------------------------------------------------------------------------

def _dequantized_digits(seed):
    """The digits' standard split with u ~ U[0, 1) added, as compare's docstring states it."""
    rng = np.random.default_rng([seed, 0])
    return {name: load_digits(name)[0] + rng.random(load_digits(name)[0].shape) for name in ("train", "val", "test")}


def test_compare_reports_ppca_noise_variance_and_test_nll_of_the_test_data(tmp_path, capsys):
    q, seed = 2, 0
    code = cli.main(["compare", "--quick", "--json", "--latent", str(q), "--no-nonlinear", "--no-figures",
                     "--linear-steps", "20", "--quiet", "--seed", str(seed), "--out", str(tmp_path)])
    assert code == 0
    ppca = json.loads(capsys.readouterr().out)["results"][str(q)]["ppca"]

    x = _dequantized_digits(seed)
    train, test = x["train"], x["test"]
    mean = train.mean(axis=0)
    covariance = np.cov(train, rowvar=False, bias=True)  # maximum likelihood: divided by N
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    d = train.shape[1]
    sigma2 = np.mean(eigenvalues[:d - q])  # Tipping & Bishop: the mean of the d - q smallest
    top, directions = eigenvalues[d - q:], eigenvectors[:, d - q:]
    model_covariance = directions @ np.diag(top - sigma2) @ directions.T + sigma2 * np.eye(d)

    assert ppca["noise_variance"] == pytest.approx(sigma2, rel=1e-6)
    expected_test = -np.mean(multivariate_normal(mean, model_covariance).logpdf(test))
    expected_train = -np.mean(multivariate_normal(mean, model_covariance).logpdf(train))
    assert ppca["test_nll"] == pytest.approx(expected_test, rel=1e-6)
    assert ppca["train_nll"] == pytest.approx(expected_train, rel=1e-6)
    assert ppca["test_nll_bits_per_dim"] == pytest.approx(expected_test / (d * np.log(2)), rel=1e-6)

"""The command line: `minivae train` writes everything it promises, and refuses bad options clearly."""

import json
import subprocess
import sys

import numpy as np
import pytest

from minivae import VAE, cli


def test_train_writes_parameters_summary_history_and_figures(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--epochs", "2", "--hidden", "32", "--latent", "4", "--test-samples", "8",
                     "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("test_nelbo", "test_nll", "val_best_nelbo", "epochs", "seconds", "active_units"):
        assert key in summary, key
    assert summary["epochs"] == 2 and 0 <= summary["active_units"] <= 4
    # the NLL estimate (K=8) is a tighter bound than the ELBO, up to Monte Carlo noise
    assert summary["test_nll"] < summary["test_nelbo"] + 1.0
    assert summary["test_nelbo"] == pytest.approx(summary["test_rate"] + summary["test_distortion"])
    history = json.loads((out / "history.json").read_text())
    assert len(history["train_loss"]) == 2 and len(history["val_loss"]) == 2
    for name in ("curves.png", "reconstructions.png", "samples.png", "latent.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    model = VAE.load(out / "params.npz")
    assert model.latent_dim == 4 and model.hidden == (32,)
    with np.load(out / "params.npz", allow_pickle=False) as archive:
        assert "encoder.0.W" in archive.files
    assert "test NLL (K=8)" in capsys.readouterr().out


def test_train_on_a_users_file_with_bernoulli(tmp_path):
    rng = np.random.default_rng(0)
    data = (rng.random((60, 16)) < 0.3).astype(np.float64)
    path = tmp_path / "bits.npy"
    np.save(path, data)
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(path), "--likelihood", "bernoulli", "--binarize", "0.5",
                     "--epochs", "2", "--hidden", "8", "--latent", "2", "--test-samples", "4",
                     "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"] == str(path) and summary["config"]["likelihood"] == "bernoulli"
    assert (out / "samples.png").exists()  # 16 = 4x4 images


def test_bad_options_are_reported_not_raised(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--latent", "0", "--out", str(tmp_path / "x"), "--quiet"])
    assert exit_info.value.code == 2
    assert "--latent must be a positive integer; got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--data", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "y")])
    assert "missing.npy" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--likelihood", "bernoulli", "--out", str(tmp_path / "z")])
    assert "--binarize" in capsys.readouterr().err


def test_import_and_help_do_not_compile_or_import_numba_or_matplotlib():
    code = ("import sys, minivae, minivae.cli; "
            "assert 'numba' not in sys.modules, 'numba'; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib'")
    subprocess.run([sys.executable, "-c", code], check=True)
    result = subprocess.run([sys.executable, "-m", "minivae", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "train" in result.stdout

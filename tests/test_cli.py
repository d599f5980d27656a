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
    assert "--latent takes one or two positive integers separated by a comma (16 or 16,8); got '0'" in capsys.readouterr().err
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


def _error_line(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return exit_info.value.code, err[0]


def test_every_command_checks_where_it_writes_before_working(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    code, line = _error_line(capsys, ["compare", "--quick", "--out", str(a_file)])
    assert code == cli.EXIT_USAGE and line.startswith("minivae compare: error: --out") and "is a file" in line
    code, line = _error_line(capsys, ["notebooks", str(a_file)])
    assert code == cli.EXIT_USAGE and line.startswith("minivae notebooks: error: DIR") and "is a file" in line
    code, line = _error_line(capsys, ["bench", "--quick", "--json", str(tmp_path)])
    assert code == cli.EXIT_USAGE and "--json" in line and "is a folder" in line
    assert a_file.read_text() == "mine"


def test_compare_refuses_a_train_run_it_cannot_use_before_training(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text("{not json")
    argv = ["compare", "--quick", "--latent", "2", "--no-nonlinear", "--train-run", str(run),
            "--out", str(tmp_path / "c")]
    code, line = _error_line(capsys, argv)
    assert code == cli.EXIT_USAGE and "--train-run" in line and "cannot be read" in line
    (run / "summary.json").write_text(json.dumps({"data": "digits", "interrupted": True,
                                                  "config": {"likelihood": "categorical"}}))
    code, line = _error_line(capsys, argv)
    assert code == cli.EXIT_USAGE and "was interrupted" in line
    code, line = _error_line(capsys, argv[:-4] + ["--linear-steps", "0", "--out", str(tmp_path / "c")])
    assert code == cli.EXIT_USAGE and "--linear-steps must be a positive integer; got 0" in line
    assert not (tmp_path / "c" / "compare.json").exists()


def test_errors_show_a_traceback_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIVAE_TRACEBACK", "1")
    with pytest.raises(ValueError, match="--test-samples must be a positive integer"):
        cli.main(["train", "--test-samples", "0", "--out", str(tmp_path / "run")])


def _sorted_digits_csv(path):
    """The digits sorted by class, the label in the last column, as a spreadsheet would hold them."""
    from minivae.datasets import load_digits

    x, y = load_digits()
    order = np.argsort(y, kind="stable")
    np.savetxt(path, np.column_stack([x[order], y[order]]), fmt="%d", delimiter=",",
               header=",".join([f"p{i}" for i in range(64)] + ["label"]), comments="")
    return np.column_stack([x[order], y[order]])


def test_a_file_sorted_by_class_is_split_shuffled_by_default_and_in_file_order_on_request(tmp_path):
    table = _sorted_digits_csv(tmp_path / "sorted.csv")
    base = ["train", "--data", str(tmp_path / "sorted.csv"), "--label-column", "-1"]
    x, labels, image_shape = cli.load_training_data(cli.build_parser().parse_args(base))
    assert image_shape == (8, 8) and x["train"].shape[1] == 64
    assert len(np.unique(labels["test"])) == 10  # every class in the test set
    assert sorted(np.concatenate([labels[name] for name in ("train", "val", "test")]).tolist()) == \
        sorted(table[:, -1].tolist())  # a permutation: no row lost or repeated
    x, labels, _ = cli.load_training_data(cli.build_parser().parse_args(base + ["--split", "file-order"]))
    assert set(labels["test"].tolist()) == {9}  # the last rows of the file: one class only
    assert np.array_equal(x["test"], table[-len(x["test"]):, :64])


def test_separate_validation_and_test_files_and_a_labels_file(tmp_path):
    rng = np.random.default_rng(0)
    train, val, test = (rng.integers(0, 4, size=(n, 9)) for n in (30, 7, 5))
    np.savez(tmp_path / "train.npz", images=train, other=train[:, :2])
    np.save(tmp_path / "val.npy", val)
    np.savetxt(tmp_path / "test.csv", test, fmt="%d", delimiter=";")
    np.savetxt(tmp_path / "labels.txt", np.arange(30) % 3, fmt="%d")
    args = cli.build_parser().parse_args(
        ["train", "--data", str(tmp_path / "train.npz"), "--npz-key", "images", "--val-data", str(tmp_path / "val.npy"),
         "--test-data", str(tmp_path / "test.csv"), "--labels", str(tmp_path / "labels.txt")])
    x, labels, image_shape = cli.load_training_data(args)
    assert sorted(map(tuple, x["train"].tolist())) == sorted(map(tuple, train.tolist()))  # all of --data
    assert np.array_equal(x["val"], val) and np.array_equal(x["test"], test) and image_shape == (3, 3)
    assert sorted(labels["train"].tolist()) == sorted((np.arange(30) % 3).tolist())
    assert labels["test"] is None
    np.save(tmp_path / "narrow.npy", test[:, :8])
    args = cli.build_parser().parse_args(["train", "--data", str(tmp_path / "train.npz"), "--npz-key", "images",
                                          "--test-data", str(tmp_path / "narrow.npy")])
    with pytest.raises(ValueError, match="--test-data .*narrow.npy' has 8 columns; --data .* has 9"):
        cli.load_training_data(args)


def test_the_latent_figure_is_coloured_by_the_users_labels(tmp_path, monkeypatch):
    from minivae import plots

    _sorted_digits_csv(tmp_path / "sorted.csv")
    seen = []
    plot_latent = plots.plot_latent

    def spy(z, labels=None, *args, **kwargs):
        seen.append(labels)
        return plot_latent(z, labels, *args, **kwargs)

    monkeypatch.setattr(plots, "plot_latent", spy)
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(tmp_path / "sorted.csv"), "--label-column", "-1", "--epochs", "1",
                     "--hidden", "8", "--latent", "2", "--test-samples", "2", "--out", str(out), "--quiet"]) == 0
    assert len(seen) == 1 and seen[0] is not None and len(np.unique(seen[0])) == 10
    assert (out / "latent.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["input_dim"] == 64  # the label column is not a pixel


@pytest.mark.parametrize("likelihood_options", [["--likelihood", "categorical"],
                                                ["--likelihood", "bernoulli", "--binarize", "0.5"],
                                                ["--likelihood", "gaussian"],
                                                ["--likelihood", "gaussian", "--learn-variance"]])
def test_each_likelihood_trains_from_the_command_lines_defaults(likelihood_options, tmp_path, capsys):
    """float32 and the default backend, as users run them; only the size is small."""
    out = tmp_path / "run"
    assert cli.main(["train", *likelihood_options, "--epochs", "2", "--hidden", "16", "--test-samples", "4",
                     "--no-figures", "--quiet", "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["likelihood"] == likelihood_options[1] and summary["config"]["dtype"] == "float32"
    assert np.isfinite(summary["test_nll"]) and np.isfinite(summary["test_nelbo"])
    model = VAE.load(out / "params.npz")
    assert all(value.dtype == np.float32 for value in model.params.values())


@pytest.mark.parametrize("option", [["--val-data", "v.npy"], ["--test-data", "t.npy"], ["--labels", "y.npy"],
                                    ["--label-column", "-1"], ["--npz-key", "x"], ["--split", "file-order"],
                                    ["--val-fraction", "0.2"]])
def test_options_for_a_users_file_are_refused_for_the_digits(option, tmp_path, capsys):
    code, line = _error_line(capsys, ["train", *option, "--out", str(tmp_path / "run")])
    assert code == cli.EXIT_USAGE
    assert f"{option[0]} applies to --data; the shipped digits come with their labels and their standard split" in line


def test_ctrl_c_stops_compare_even_inside_fit(tmp_path, capsys, monkeypatch):
    """fit keeps its work on KeyboardInterrupt and returns; in `minivae compare`, which has nothing to
    keep, the signal must stop the command, not only the model being trained."""
    import os
    import signal

    from minivae import optim

    steps = []
    step = optim.Optimizer.step

    def step_then_interrupt(self, params, grads):
        steps.append(1)
        if len(steps) == 25:  # after the 20 linear-VAE steps: inside fit, training the Gaussian VAE
            os.kill(os.getpid(), signal.SIGINT)
        return step(self, params, grads)

    monkeypatch.setattr(optim.Optimizer, "step", step_then_interrupt)
    code, line = _error_line(capsys, ["compare", "--quick", "--latent", "2", "--linear-steps", "20", "--quiet",
                                      "--no-figures", "--out", str(tmp_path)])
    assert code == 130 and line == "minivae compare: interrupted by SIGINT"
    assert len(steps) <= 26  # stopped at once, not after this and the next models
    assert not (tmp_path / "compare.json").exists()


def test_train_the_model_family_from_the_command_line(tmp_path):
    # a mixture prior with the IWAE objective; a two-level VAE with warm-up; a VampPrior with free bits
    for options, check in [
            (["--prior", "mog:3", "--objective", "iwae:3"], lambda m: (m.prior.n_components, type(m).__name__) == (3, "VAE")),
            (["--latent", "4,2", "--warmup", "2"], lambda m: m.latent_dims == (4, 2)),
            (["--prior", "vamp:5", "--warmup", "1"], lambda m: m.prior.name == "vamp"),
            (["--free-bits", "0.1"], lambda m: m.prior.name == "standard")]:
        out = tmp_path / "_".join(options).replace(":", "").replace(",", "").replace("-", "")
        result = subprocess.run([sys.executable, "-m", "minivae", "train", "--epochs", "2", "--hidden", "16",
                                 "--latent", "4", "--test-samples", "8", "--out", str(out), "--quiet", *options],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        model = VAE.load(out / "params.npz")
        assert check(model), options
        summary = json.loads((out / "summary.json").read_text())
        assert summary["settings"]["prior"] == (options[1] if options[0] == "--prior" else "standard")
        if "4,2" in options:
            assert len(summary["active_units"]) == 2 and " and " in result.stdout
        history = json.loads((out / "history.json").read_text())
        # the run stopped on its objective's own bound: -L_3 for IWAE(3), the -ELBO otherwise
        name = "-L_3" if "iwae:3" in options else "-ELBO"
        assert summary["val_loss_name"] == history["val_loss_name"] == name
        assert summary["val_best_loss"] == min(history["val_loss"])
        assert ("val_best_nelbo" in summary) == (name == "-ELBO")


@pytest.mark.parametrize("options, message", [
    (["--prior", "gauss"], "--prior: prior must be a minivae.priors.Prior, 'standard', 'mog:K' or 'vamp:K'"),
    (["--prior", "mog:0"], "--prior: prior 'mog:0': the number of components must be at least 1"),
    (["--objective", "iwae:0"], "--objective: k must be a positive integer"),
    (["--objective", "vi"], "--objective: objective must be 'elbo' or 'iwae:K'"),
    (["--free-bits", "-1"], "--free-bits must be a number of nats ≥ 0"),
    (["--warmup", "50", "--epochs", "10"], "--warmup 50 is longer than the run"),
    (["--latent", "4,2,1"], "--latent takes one or two positive integers"),
    (["--prior", "mog:4", "--free-bits", "0.5"], "--free-bits needs a prior whose KL splits over latent dimensions"),
    (["--objective", "iwae:5", "--beta", "2"], "--objective: warm-up, free bits and beta belong to the ELBO"),
])
def test_model_family_options_are_checked_before_training(options, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "minivae", "train", "--out", str(tmp_path / "run"), *options],
                            capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "run" / "params.npz").exists()


def test_exercises_command_is_wired(tmp_path, capsys):
    assert cli.main(["exercises", "make", str(tmp_path / "hw"), "--set", "adam", "--solutions"]) == 0
    assert cli.main(["exercises", "check", str(tmp_path / "hw")]) == 0
    assert "score: 1 / 1" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:  # the folder is not empty, and no --force
        cli.main(["exercises", "make", str(tmp_path / "hw"), "--set", "adam"])
    assert exit_.value.code == 2 and "exists and is not empty" in capsys.readouterr().err

"""`minivae train` under faults and bad input: one line on stderr, an exit code, and nothing lost.

Each test causes one kind of fault as a user would meet it (a damaged file, a file from a
spreadsheet, a full disk, Ctrl-C, a scheduler's SIGTERM, a diverging run) and checks three things:
exactly one line on stderr and no traceback, the exit code, and what is on disk afterwards (a
previous run in the output folder is left whole, or the interrupted run's work is kept).
"""

import errno
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minivae import VAE, cli
from minivae.datasets import load_digits, save_idx
from minivae.files import TEMPORARY_PREFIX

SMALL = ["--epochs", "2", "--hidden", "8", "--latent", "2", "--test-samples", "4", "--quiet"]
REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, argv):
    """``cli.main(argv)`` in this process: (exit code, stdout, stderr lines)."""
    try:
        code = cli.main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def run_process(argv, preexec_fn=None, timeout=120):
    """``python -m minivae argv`` in a child process: (exit code, stdout, stderr lines)."""
    result = subprocess.run([sys.executable, "-m", "minivae", *argv], capture_output=True, text=True,
                            timeout=timeout, preexec_fn=preexec_fn, env=_child_env())
    return result.returncode, result.stdout, result.stderr.splitlines()


def _child_env():
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(REPO))
    env.pop("MINIVAE_TRACEBACK", None)
    return env


def assert_one_line(err, *fragments):
    """Exactly one line on stderr, the command's error line (or its line saying it was interrupted),
    holding every fragment."""
    assert len(err) == 1, err
    assert err[0].startswith(("minivae train: error: ", "minivae train: interrupted by ")), err[0]
    assert "Traceback" not in err[0]
    for fragment in fragments:
        assert fragment in err[0], (fragment, err[0])


def snapshot(folder):
    """Every file of ``folder`` as name -> bytes."""
    return {path.name: path.read_bytes() for path in sorted(Path(folder).iterdir())}


@pytest.fixture(scope="module")
def user_data(tmp_path_factory):
    """A small integer data set in a .npy file: 60 rows of 16 values 0..4."""
    folder = tmp_path_factory.mktemp("data")
    x = np.random.default_rng(0).integers(0, 5, size=(60, 16))
    np.save(folder / "x.npy", x)
    return folder / "x.npy", x


@pytest.fixture(scope="module")
def good_run(user_data, tmp_path_factory):
    """The folder of a finished run with figures: what a rerun must not damage."""
    out = tmp_path_factory.mktemp("good") / "run"
    assert cli.main(["train", "--data", str(user_data[0]), *SMALL, "--out", str(out)]) == 0
    return out


@pytest.fixture
def previous_run(good_run, tmp_path):
    """A copy of the good run to rerun into, and its files as they were."""
    out = tmp_path / "run"
    shutil.copytree(good_run, out)
    return out, snapshot(out)


# --------------------------------------------------------------------------------------------------
# Damaged and unusual data files
# --------------------------------------------------------------------------------------------------

def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def _npz_truncated(folder, x):
    np.savez(folder / "d.npz", x=x)
    _truncate(folder / "d.npz")
    return folder / "d.npz"


def _npz_member_damaged(folder, x):
    """A whole zip archive whose array member is not a .npy (a damaged member, not a damaged zip)."""
    with zipfile.ZipFile(folder / "d.npz", "w") as archive:
        archive.writestr("x.npy", b"\x93NUMPY garbage")
    return folder / "d.npz"


def _npy_truncated(folder, x):
    np.save(folder / "d.npy", x)
    _truncate(folder / "d.npy")
    return folder / "d.npy"


def _npy_not_numpy(folder, x):
    (folder / "d.npy").write_text("x,y\n1,2\n")
    return folder / "d.npy"


def _csv_gz_truncated(folder, x):
    text = "\n".join(",".join(str(v) for v in row) for row in x)
    (folder / "d.csv.gz").write_bytes(gzip.compress(text.encode())[:-40])
    return folder / "d.csv.gz"


def _csv_gz_not_gzip(folder, x):
    (folder / "d.csv.gz").write_text("\n".join(",".join(str(v) for v in row) for row in x))
    return folder / "d.csv.gz"


def _idx_truncated(folder, x):
    save_idx(folder / "d-ubyte", x.astype(np.uint8))
    _truncate(folder / "d-ubyte", keep=0.9)
    return folder / "d-ubyte"


def _idx_gz_truncated(folder, x):
    save_idx(folder / "d-ubyte.gz", x.astype(np.uint8))
    _truncate(folder / "d-ubyte.gz")
    return folder / "d-ubyte.gz"


def _csv_latin1(folder, x):
    text = "température," + ",".join(f"c{i}" for i in range(x.shape[1] - 1)) + "\n"
    text += "\n".join(",".join(str(v) for v in row) for row in x)
    (folder / "d.csv").write_bytes(text.encode("latin-1"))
    return folder / "d.csv"


def _csv_nan_cell(folder, x):
    y = x.astype(float)
    y[6, 2] = np.nan
    np.savetxt(folder / "d.csv", y, delimiter=",")
    return folder / "d.csv"


def _csv_empty_cell(folder, x):
    rows = [",".join(str(v) for v in row) for row in x]
    rows[4] = "," + ",".join(str(v) for v in x[4, 1:])
    (folder / "d.csv").write_text("\n".join(rows))
    return folder / "d.csv"


def _npy_float32_overflow(folder, x):
    y = x.astype(np.float64)
    y[9, 3] = 1e39  # finite in float64, infinite in float32
    np.save(folder / "d.npy", y)
    return folder / "d.npy"


def _npy_stray_large_value(folder, x):
    y = x.copy()
    y[2, 5] = 10**9  # a categorical decoder with 10**9 values per pixel: hundreds of GiB
    np.save(folder / "d.npy", y)
    return folder / "d.npy"


def _npy_fraction(folder, x):
    y = x.astype(float)
    y[1, 1] = 2.5
    np.save(folder / "d.npy", y)
    return folder / "d.npy"


def _npy_transposed(folder, x):
    """Images in the columns: 10 rows of 60000 values 0..255 ask for a decoder of 60000 × 256 outputs."""
    np.save(folder / "d.npy", np.random.default_rng(1).integers(0, 256, size=(10, 60000), dtype=np.uint8))
    return folder / "d.npy"


DATA_FAULTS = {
    # name: (writer, fragments the one line must hold)
    "npz truncated": (_npz_truncated, ["d.npz", "truncated or corrupt"]),
    "npz member damaged": (_npz_member_damaged, ["d.npz", "damaged"]),
    "npy truncated": (_npy_truncated, ["d.npy", "damaged .npy", "written completely"]),
    "npy not numpy": (_npy_not_numpy, ["d.npy", "not a .npy file"]),
    "csv.gz truncated": (_csv_gz_truncated, ["d.csv.gz", "truncated gzip"]),
    "csv.gz not gzip": (_csv_gz_not_gzip, ["d.csv.gz", "not a valid gzip"]),
    "idx truncated": (_idx_truncated, ["d-ubyte", "header declares shape (60, 16)"]),
    "idx.gz truncated": (_idx_gz_truncated, ["d-ubyte.gz", "truncated gzip"]),
    "csv in latin-1": (_csv_latin1, ["d.csv", "not UTF-8", "line 1", "CSV UTF-8"]),
    "csv NaN cell": (_csv_nan_cell, ["d.csv", "row 7, column 3 is NaN"]),
    "csv empty cell": (_csv_empty_cell, ["d.csv", "data row 5", "column 1 is empty"]),
    "float32 overflow": (_npy_float32_overflow, ["d.npy", "row 10, column 4", "beyond the range of float32",
                                                 "--dtype float64"]),
    "stray large value": (_npy_stray_large_value, ["d.npy", "row 3, column 6", "1000000001 values",
                                                   "MAX_CATEGORICAL_VALUES"]),
    "fraction for categorical": (_npy_fraction, ["d.npy", "row 2, column 2 holds 2.5", "integers"]),
    "transposed file": (_npy_transposed, ["MAX_PARAMETERS", "8 training rows of 60000 columns",
                                          "Are the examples in the columns of the file?"]),
}


@pytest.mark.parametrize("fault", list(DATA_FAULTS))
def test_a_damaged_or_unusual_data_file_is_one_line_and_nothing_is_written(fault, tmp_path, capsys,
                                                                           user_data, previous_run):
    writer, fragments = DATA_FAULTS[fault]
    path = writer(tmp_path, user_data[1])
    out, before = previous_run
    code, stdout, err = run_cli(capsys, ["train", "--data", str(path), *SMALL, "--out", str(out)])
    assert code == cli.EXIT_USAGE
    assert_one_line(err, *fragments)
    assert "epoch" not in stdout  # refused before training
    assert snapshot(out) == before  # the previous run is untouched


def test_missing_data_file_and_a_folder_as_data(tmp_path, capsys):
    code, _, err = run_cli(capsys, ["train", "--data", str(tmp_path / "nope.csv"), *SMALL,
                                    "--out", str(tmp_path / "run")])
    assert code == cli.EXIT_USAGE
    assert_one_line(err, "nope.csv", "does not exist")
    code, _, err = run_cli(capsys, ["train", "--data", str(tmp_path), *SMALL, "--out", str(tmp_path / "run")])
    assert code == cli.EXIT_USAGE
    assert_one_line(err, "is a directory, not a file")
    assert list((tmp_path / "run").iterdir()) == []


def test_a_csv_with_a_byte_order_mark_keeps_its_first_row(tmp_path, capsys, user_data):
    x = user_data[1]
    text = "\n".join(",".join(str(v) for v in row) for row in x) + "\n"
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())  # Excel's "CSV UTF-8"
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, ["train", "--data", str(tmp_path / "excel.csv"), *SMALL, "--no-figures",
                                    "--out", str(out)])
    assert code == 0 and err == []
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_train"] + summary["n_val"] + summary["n_test"] == len(x) == 60


def test_a_failed_run_does_not_leave_a_process_traceback(tmp_path, user_data):
    """The same path through a real process: `python -m minivae`, one line, the exit code."""
    path = _npz_truncated(tmp_path, user_data[1])
    code, stdout, err = run_process(["train", "--data", str(path), *SMALL, "--out", str(tmp_path / "run")])
    assert code == cli.EXIT_USAGE, err
    assert_one_line(err, "d.npz", "truncated or corrupt")


# --------------------------------------------------------------------------------------------------
# Options and the output folder, checked before training
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options, fragments", [
    (["--test-samples", "0"], ["--test-samples must be a positive integer; got 0"]),
    (["--val-samples", "0"], ["--val-samples must be a positive integer; got 0"]),
    (["--image-shape", "3x3"], ["--image-shape 3x3 has 9 pixels; the data has 16 columns"]),
    (["--image-shape", "4by4"], ["--image-shape must be HEIGHTxWIDTH", "'4by4'"]),
    (["--hidden", "8,x"], ["--hidden must be comma-separated positive integers", "'8,x'"]),
    (["--hidden", "100000,100000"], ["would have 2e+10 parameters (74.5 GiB", "the limit is 1e+08 (MAX_PARAMETERS)"]),
    (["--val-fraction", "0.5", "--test-fraction", "0.5"], ["--val-fraction + --test-fraction must be below 1"]),
    (["--ema", "1"], ["--ema must be a decay in [0, 1)"]),
    (["--val-fraction", "0"], ["no validation rows", "--val-fraction"]),
    (["--num-values", "100000"], ["--num-values must be from 2 to 256"]),
    (["--npz-key", "images"], ["--npz-key applies to .npz files"]),
])
def test_bad_options_are_refused_before_training(options, fragments, tmp_path, capsys, user_data, previous_run):
    out, before = previous_run
    code, stdout, err = run_cli(capsys, ["train", "--data", str(user_data[0]), *SMALL, *options,
                                         "--out", str(out)])
    assert code == cli.EXIT_USAGE
    assert_one_line(err, *fragments)
    assert "epoch" not in stdout
    assert snapshot(out) == before


def test_out_naming_a_file_or_a_path_under_a_file_is_refused_before_training(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    for out, fragment in ((a_file, "is a file, not a folder"), (a_file / "run", "lies under")):
        code, stdout, err = run_cli(capsys, ["train", *SMALL, "--out", str(out)])
        assert code == cli.EXIT_USAGE
        assert_one_line(err, "--out", fragment)
        assert stdout == ""
    assert a_file.read_text() == "mine"


def _limit_file_size(limit):
    def preexec():
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_an_output_folder_that_cannot_be_written_is_found_before_training(tmp_path):
    """A file-size limit of 100 bytes (as root, a read-only folder would not stop us): the folder
    check fails at once, before any epoch."""
    out = tmp_path / "run"
    start = time.perf_counter()
    code, stdout, err = run_process(["train", *SMALL, "--out", str(out)], preexec_fn=_limit_file_size(100))
    assert code == cli.EXIT_FAULT
    assert_one_line(err, "--out", "is not a folder minivae can write to", "File too large")
    assert "epoch" not in stdout
    assert list(out.iterdir()) == []  # the probe was removed
    assert time.perf_counter() - start < 60


# --------------------------------------------------------------------------------------------------
# Faults while writing, divergence: the previous run stays whole
# --------------------------------------------------------------------------------------------------

def test_a_full_disk_while_writing_leaves_the_previous_run_whole(tmp_path, user_data, previous_run):
    """A real write failure: the child may write files of at most 64 KiB, and the new parameters
    (hidden 256) are larger; the previous run's smaller files were written without the limit."""
    out, before = previous_run
    code, stdout, err = run_process(["train", "--data", str(user_data[0]), *SMALL, "--hidden", "256",
                                     "--no-figures", "--out", str(out)], preexec_fn=_limit_file_size(64 * 1024))
    assert code == cli.EXIT_FAULT, err
    assert_one_line(err, "could not write params.npz in", "File too large (EFBIG);", "keeps what it held")
    assert snapshot(out) == before  # no truncated params.npz, no temporary file left
    VAE.load(out / "params.npz")


def test_a_failure_half_way_through_the_files_leaves_the_previous_run_whole(tmp_path, capsys, monkeypatch,
                                                                           user_data, previous_run):
    """The disk fills up after params.npz and history.json are written, at the figures."""
    out, before = previous_run

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "curves.png"))

    monkeypatch.setattr(cli, "write_train_figures", full_disk)
    code, _, err = run_cli(capsys, ["train", "--data", str(user_data[0]), *SMALL, "--seed", "5",
                                    "--out", str(out)])
    assert code == cli.EXIT_FAULT
    assert_one_line(err, "No space left on device (ENOSPC)", "curves.png", "keeps what it held")
    assert snapshot(out) == before
    assert not any(name.startswith(TEMPORARY_PREFIX) for name in os.listdir(out))


def test_divergence_is_one_line_and_leaves_the_previous_run_whole(capsys, user_data, previous_run):
    out, before = previous_run
    code, _, err = run_cli(capsys, ["train", "--data", str(user_data[0]), *SMALL, "--lr", "1e6",
                                    "--out", str(out)])
    assert code == cli.EXIT_FAULT
    assert_one_line(err, "training diverged", "non-finite", "Nothing written")
    assert snapshot(out) == before


def test_a_rerun_without_figures_removes_the_old_figures_and_lists_its_files(capsys, user_data, previous_run):
    out, before = previous_run
    assert {"curves.png", "latent.png", "samples.png", "reconstructions.png"} <= set(before)
    code, _, err = run_cli(capsys, ["train", "--data", str(user_data[0]), *SMALL, "--no-figures", "--seed", "1",
                                    "--out", str(out)])
    assert code == 0 and err == []
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["files"]) == sorted(os.listdir(out)) == ["history.json", "optimizer.npz", "params.npz",
                                                                   "summary.json"]
    assert (out / "params.npz").read_bytes() != before["params.npz"]  # seed 1: a new run


# --------------------------------------------------------------------------------------------------
# Interruption by a real signal
# --------------------------------------------------------------------------------------------------

def _train_until_epoch(out, epoch, extra=()):
    """Start `minivae train` on the digits in a child process, read its stdout until the line of
    ``epoch``; returns the process and the lines read."""
    process = subprocess.Popen(
        [sys.executable, "-m", "minivae", "train", "--epochs", "1000", "--patience", "1000", "--hidden", "16",
         "--latent", "2", "--test-samples", "8", "--no-figures", "--out", str(out), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env())
    watchdog = threading.Timer(90, process.kill)
    watchdog.start()
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith(f"epoch {epoch:4d}"):
                break
    finally:
        watchdog.cancel()
    assert any(line.startswith(f"epoch {epoch:4d}") for line in lines), "".join(lines)
    return process, lines


@pytest.mark.parametrize("signal_number, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_keeps_its_best_parameters_history_and_summary(signal_number, exit_code, tmp_path):
    out = tmp_path / "run"
    process, lines = _train_until_epoch(out, epoch=3)
    process.send_signal(signal_number)
    stdout, stderr = process.communicate(timeout=60)
    err = stderr.splitlines()
    assert process.returncode == exit_code, stderr
    assert_one_line(err, f"interrupted by {signal.Signals(signal_number).name}", "kept the best")
    summary = json.loads((out / "summary.json").read_text())
    history = json.loads((out / "history.json").read_text())
    assert summary["interrupted"] is True and summary["interrupted_by"] == signal.Signals(signal_number).name
    finished = summary["epochs"]
    assert finished >= 3 and len(history["val_loss"]) == finished
    assert summary["interrupted_at"]["epoch"] in (finished, finished + 1)  # 1-based: the epoch that was running
    assert summary["best_epoch"] == 1 + int(np.argmin(history["val_loss"]))
    assert sorted(summary["files"]) == sorted(os.listdir(out)) == ["history.json", "optimizer.npz", "params.npz",
                                                                   "summary.json"]
    model = VAE.load(out / "params.npz")
    # the parameters kept are those whose validation -ELBO is the best recorded (up to 1-sample noise)
    val = load_digits("val")[0]
    nelbo = -np.mean(model.elbo(val, n_samples=20, rng=np.random.default_rng(0)))
    assert abs(nelbo - summary["val_best_nelbo"]) < 3.0

    # --resume continues it from its folder, with its settings, to a new limit of epochs
    assert cli.main(["train", "--resume", "--out", str(out), "--epochs", str(finished + 2), "--quiet",
                     "--no-figures"]) == 0
    resumed = json.loads((out / "summary.json").read_text())
    resumed_history = json.loads((out / "history.json").read_text())
    assert resumed["interrupted"] is False and resumed["resumed_after_epoch"] == finished
    assert resumed["epochs"] == len(resumed_history["val_loss"]) == finished + 2
    assert resumed_history["val_loss"][:finished] == history["val_loss"]
    assert resumed_history["train_loss"][:finished] == history["train_loss"]
    for name, values in resumed_history.items():  # every per-epoch record continues
        if isinstance(values, list) and values:
            assert len(values) == finished + 2, name
    assert resumed["best_epoch"] == 1 + int(np.argmin(resumed_history["val_loss"]))
    assert resumed["settings"]["hidden"] == "16" and resumed["config"]["latent_dim"] == 2


def test_an_interruption_before_the_first_epoch_ends_leaves_the_previous_run_whole(capsys, monkeypatch, user_data,
                                                                                 previous_run):
    """A real SIGINT to this process at the third optimizer step of the first epoch: nothing to keep,
    so the previous run stays as it was."""
    from minivae import optim

    out, before = previous_run
    make_optimizer = optim.make_optimizer
    steps = []

    def make_interrupting_optimizer(*args, **kwargs):
        optimizer = make_optimizer(*args, **kwargs)
        step = optimizer.step

        def step_then_interrupt(params, grads):
            steps.append(1)
            if len(steps) == 3:
                os.kill(os.getpid(), signal.SIGINT)
            return step(params, grads)

        optimizer.step = step_then_interrupt
        return optimizer

    monkeypatch.setattr(optim, "make_optimizer", make_interrupting_optimizer)
    code, _, err = run_cli(capsys, ["train", "--data", str(user_data[0]), *SMALL, "--batch-size", "4",
                                    "--out", str(out)])
    assert code == 130
    assert len(steps) <= 4  # stopped at once, not at the end of the epoch (12 steps)
    assert_one_line(err, "interrupted by SIGINT", "keeps what it held")
    assert snapshot(out) == before


# --------------------------------------------------------------------------------------------------
# --resume: what it refuses
# --------------------------------------------------------------------------------------------------

def test_resume_refuses_a_lying_checkpoint_without_allocating(capsys, previous_run):
    """A few-KB params.npz whose settings claim input_dim = 10**9: refused, naming the key."""
    out, _ = previous_run
    with np.load(out / "params.npz", allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    config = json.loads(str(arrays["__config__"]))
    config["input_dim"] = 10**9
    arrays["__config__"] = np.array(json.dumps(config))
    np.savez(out / "params.npz", **arrays)
    before = snapshot(out)
    code, stdout, err = run_cli(capsys, ["train", "--resume", "--epochs", "4", "--out", str(out)])
    assert code == cli.EXIT_USAGE
    assert_one_line(err, "params.npz", "1000000000")
    assert "epoch" not in stdout
    assert snapshot(out) == before


def test_resume_refuses_other_settings_a_finished_run_and_an_empty_folder(tmp_path, capsys, previous_run):
    out, before = previous_run
    code, _, err = run_cli(capsys, ["train", "--resume", "--lr", "0.1", "--latent", "3", "--out", str(out)])
    assert code == cli.EXIT_USAGE
    assert_one_line(err, "--resume takes the settings of the run", "--latent", "--lr")
    code, _, err = run_cli(capsys, ["train", "--resume", "--out", str(out)])
    assert code == cli.EXIT_USAGE
    assert_one_line(err, "has finished its 2 epochs; give --epochs above 2")
    code, _, err = run_cli(capsys, ["train", "--resume", "--out", str(tmp_path / "empty")])
    assert code == cli.EXIT_USAGE
    assert_one_line(err, "holds no summary.json")
    assert snapshot(out) == before


@pytest.mark.parametrize("stage", ["evaluate", "write_train_figures"])
def test_an_interruption_after_training_keeps_the_trained_model(stage, capsys, monkeypatch, user_data,
                                                                 previous_run):
    """A real SIGINT to this process while the test numbers are computed, or while the figures are
    drawn: the training is finished, so its parameters and history are kept; the summary says what
    is missing."""
    out, before = previous_run
    real = getattr(cli, stage)

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(cli, stage, interrupted)
    code, _, err = run_cli(capsys, ["train", "--data", str(user_data[0]), *SMALL, "--seed", "4", "--out", str(out)])
    assert code == 130
    assert_one_line(err, "interrupted by SIGINT during the", "kept the best (epoch")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["epochs"] == 2
    assert summary["interrupted_at"] == {"during": "test evaluation" if stage == "evaluate" else "figures"}
    assert ("test_nll" in summary) == (stage != "evaluate")
    assert sorted(summary["files"]) == sorted(os.listdir(out)) == ["history.json", "optimizer.npz", "params.npz",
                                                                   "summary.json"]
    assert (out / "params.npz").read_bytes() != before["params.npz"]  # seed 4: this run's parameters
    kept = VAE.load(out / "params.npz").params

    # --resume finishes what was left: no more training, the test numbers and the figures
    monkeypatch.setattr(cli, stage, real)
    code, stdout, err = run_cli(capsys, ["train", "--resume", "--out", str(out)])
    assert code == 0 and err == [] and not any(line.startswith("epoch ") for line in stdout.splitlines())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is False and summary["epochs"] == 2 and "test_nll" in summary
    assert "curves.png" in summary["files"]
    assert all(np.array_equal(value, kept[key]) for key, value in VAE.load(out / "params.npz").params.items())


def test_positions_are_the_files_even_with_a_label_column_first(tmp_path, capsys, user_data):
    x = user_data[1].astype(float)
    x[4, 2] = 2.5  # row 5, column 4 of the file once the label column is put in front
    np.savetxt(tmp_path / "d.csv", np.column_stack([np.arange(len(x)) % 3, x]), delimiter=",", fmt="%g")
    code, _, err = run_cli(capsys, ["train", "--data", str(tmp_path / "d.csv"), "--label-column", "0", *SMALL,
                                    "--out", str(tmp_path / "run")])
    assert code == cli.EXIT_USAGE
    assert_one_line(err, "d.csv", "row 5, column 4 holds 2.5")


def test_an_interruption_inside_numba_is_sent_again_not_lost():
    """A signal that comes while numba's own Python code runs (its import, a compilation) is not
    raised there, where ctypes callbacks drop it and exec() marks the process to die by SIGINT: it
    is sent again and raised once minivae's code runs."""
    inside_numba = compile("import os, signal, time\n"
                           "os.kill(os.getpid(), signal.SIGINT)\n"
                           "deadline = time.perf_counter() + 0.1\n"
                           "while time.perf_counter() < deadline:\n"
                           "    pass\n", os.path.join("site-packages", "numba", "core", "fake.py"), "exec")
    with cli._interrupts:
        try:
            exec(inside_numba, {})
        except KeyboardInterrupt:
            pytest.fail("the interruption was raised inside numba's code")
        with pytest.raises(KeyboardInterrupt):
            time.sleep(5 * cli.COMPILER_RETRY_SECONDS)
        assert cli._interrupts.exit_code == 130

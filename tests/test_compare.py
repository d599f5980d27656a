"""``minivae compare``: the JSON it prints, the relations its numbers must satisfy, its files, its errors.

The command runs once, with ``--quick`` (tiny settings, a few seconds), and every test reads that
run. The relations hold whatever the training reached: pPCA's training maximum bounds every linear
Gaussian model; the exact log p(x) of the linear VAE bounds its ELBO and the gap is their difference;
the K=512 estimate sits between the two up to Monte Carlo error.
"""

import contextlib
import io
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from minivae import cli, compare, linear_vae

EXACT = 1e-9  # nats: what round-off may cost a relation that holds exactly
LINEAR_KEYS = {"train_nelbo", "train_nll", "train_gap", "test_nelbo", "test_nll", "test_gap", "test_nll_iw",
               "test_nll_iw_standard_error", "importance_samples", "noise_variance", "steps", "epochs",
               "train_seconds", "stopped_by_time_budget", "trace", "gap_to_ppca_max",
               "test_nelbo_bits_per_dim", "test_nll_bits_per_dim", "test_nll_iw_bits_per_dim"}
GAUSSIAN_KEYS = {"hidden", "test_nelbo", "test_nll_iw", "importance_samples", "epochs", "train_seconds",
                 "test_nelbo_bits_per_dim", "test_nll_iw_bits_per_dim"}
CATEGORICAL_KEYS = {"source", "latent_dim", "hidden", "test_nelbo", "test_nll_iw", "importance_samples",
                    "epochs", "train_seconds", "test_nelbo_bits_per_dim", "test_nll_iw_bits_per_dim"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """(the JSON printed by `minivae compare --quick --json`, the output folder)."""
    out = tmp_path_factory.mktemp("compare")
    stdout = io.StringIO()                                          # capsys is function-scoped
    with contextlib.redirect_stdout(stdout):
        status = cli.main(["compare", "--quick", "--json", "--quiet", "--seed", "3", "--out", str(out)])
    assert status == 0
    return json.loads(stdout.getvalue()), out


def test_json_has_the_documented_keys(quick_run):
    result, _ = quick_run
    assert {"minivae_version", "units", "data", "settings", "results", "categorical_vae", "table",
            "seconds"} <= set(result)
    assert result["data"] == {"name": "digits", "dequantized": True, "seed": 3, "input_dim": 64,
                              "n_train": 1000, "n_val": 350, "n_test": 447}
    assert result["settings"]["quick"] is True and result["settings"]["latent_sizes"] == [2, 16]
    assert set(result["results"]) == {"2", "16"}
    for entry in result["results"].values():
        assert set(entry) == {"ppca", "linear_vae", "gaussian_vae"}
        assert set(entry["ppca"]) == {"train_nll", "test_nll", "noise_variance", "test_nll_bits_per_dim"}
        assert set(entry["linear_vae"]) == LINEAR_KEYS
        assert set(entry["gaussian_vae"]) == GAUSSIAN_KEYS
        assert set(entry["linear_vae"]["trace"]) == {"step", "train_elbo", "train_log_px"}
    assert set(result["categorical_vae"]) == CATEGORICAL_KEYS
    assert result["categorical_vae"]["source"] == "trained by minivae compare"
    for row in result["table"]:
        assert set(row) == {"latent_dim", "model", "measure", "train_nats", "test_nats", "test_bits_per_dim"}


def test_numbers_satisfy_the_bounds(quick_run):
    result, _ = quick_run
    for q, entry in result["results"].items():
        ppca, linear = entry["ppca"], entry["linear_vae"]
        # pPCA's training maximum bounds every linear Gaussian model on the training data
        assert ppca["train_nll"] <= linear["train_nll"] + EXACT
        assert linear["train_nll"] <= linear["train_nelbo"] + EXACT
        assert linear["gap_to_ppca_max"] == pytest.approx(linear["train_nelbo"] - ppca["train_nll"], abs=EXACT)
        assert linear["gap_to_ppca_max"] >= -EXACT
        for split in ("train", "test"):
            nelbo, nll, gap = (linear[f"{split}_{key}"] for key in ("nelbo", "nll", "gap"))
            assert gap >= 0 and nll <= nelbo
            assert gap == pytest.approx(nelbo - nll, abs=EXACT)
        # the K=512 estimate is a stochastic lower bound on log p(x) that rises above the ELBO
        slack = 4 * linear["test_nll_iw_standard_error"] + compare.MONTE_CARLO_SLACK
        assert linear["test_nll"] - slack <= linear["test_nll_iw"] <= linear["test_nelbo"] + slack
        gaussian = entry["gaussian_vae"]
        assert gaussian["test_nll_iw"] <= gaussian["test_nelbo"] + compare.MONTE_CARLO_SLACK
        assert linear["steps"] == result["settings"]["linear_steps"] and not linear["stopped_by_time_budget"]
        trace = linear["trace"]
        assert trace["step"][0] == 0 and trace["step"][-1] == linear["steps"]
        assert trace["train_elbo"][-1] == pytest.approx(-linear["train_nelbo"], abs=EXACT)
        assert all(elbo <= log_px + EXACT for elbo, log_px in zip(trace["train_elbo"], trace["train_log_px"]))
        assert max(trace["train_log_px"]) <= -ppca["train_nll"] + EXACT
    # training did something, even in quick mode: q=2 is nearly at the pPCA maximum
    assert result["results"]["2"]["linear_vae"]["gap_to_ppca_max"] < 1.0
    categorical = result["categorical_vae"]
    assert 0 < categorical["test_nll_iw"] <= categorical["test_nelbo"] + compare.MONTE_CARLO_SLACK


def test_bits_per_dim_are_nats_over_64_ln_2(quick_run):
    result, _ = quick_run
    linear = result["results"]["16"]["linear_vae"]
    assert linear["test_nll_bits_per_dim"] == pytest.approx(linear["test_nll"] / (64 * math.log(2)), rel=1e-12)
    for row in result["table"]:
        if "gap" in row["measure"]:
            assert row["test_bits_per_dim"] is None
        else:
            assert row["test_bits_per_dim"] == pytest.approx(row["test_nats"] / (64 * math.log(2)), rel=1e-12)


def test_files_are_written_and_match_stdout(quick_run):
    result, out = quick_run
    names = {path.name for path in out.iterdir()}
    assert names == {"compare.json", "compare_gaps.png", "compare_curves_q2.png", "compare_curves_q16.png"}
    assert json.loads((out / "compare.json").read_text()) == result
    for name in names - {"compare.json"}:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_reads_like_the_json(quick_run):
    result, _ = quick_run
    text = compare.format_table(result)
    linear = result["results"]["16"]["linear_vae"]
    assert f"{linear['test_nll']:.3f}" in text
    assert f"q=16: the linear VAE's training -ELBO is {linear['gap_to_ppca_max']:.4f} nats above" in text
    assert len([line for line in text.splitlines() if line.startswith(" 16")]) == 9   # 7 for q=16 + 2 categorical


def test_reusing_a_train_run(tmp_path):
    summary = {"data": "digits", "test_nelbo": 110.0, "test_nll": 105.0, "test_nll_samples": 512, "epochs": 40,
               "seconds": 12.0, "config": {"likelihood": "categorical", "latent_dim": 16, "hidden": [256, 256]}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    result = compare.compare(latent_sizes=(2,), seed=0, quick=True, linear_steps=50, nonlinear=False,
                             train_run=tmp_path)
    categorical = result["categorical_vae"]
    assert categorical["test_nll_iw"] == 105.0 and categorical["test_nelbo"] == 110.0
    assert categorical["test_nll_iw_bits_per_dim"] == pytest.approx(105.0 / (64 * math.log(2)))
    assert categorical["source"].endswith("summary.json")
    assert set(result["results"]["2"]) == {"ppca", "linear_vae"}
    summary["config"]["likelihood"] = "gaussian"
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match="categorical VAE trained on the digits"):
        compare.categorical_from_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="summary.json"):
        compare.categorical_from_run(tmp_path / "missing")


def test_same_seed_same_numbers():
    a = compare.compare(latent_sizes=(3,), seed=1, quick=True, linear_steps=30, nonlinear=False)
    b = compare.compare(latent_sizes=(3,), seed=1, quick=True, linear_steps=30, nonlinear=False)
    c = compare.compare(latent_sizes=(3,), seed=2, quick=True, linear_steps=30, nonlinear=False)
    for key in ("train_nelbo", "test_nll_iw"):
        assert a["results"]["3"]["linear_vae"][key] == b["results"]["3"]["linear_vae"][key]
    assert a["results"]["3"]["ppca"]["test_nll"] != c["results"]["3"]["ppca"]["test_nll"]   # new noise u


def test_learning_rate_schedule():
    lr, final = 1e-2, 1e-4
    assert linear_vae.learning_rate(0.0, lr, final) == lr
    assert linear_vae.learning_rate(0.5, lr, final) == lr
    assert linear_vae.learning_rate(0.75, lr, final) == pytest.approx(1e-3)        # halfway down, geometrically
    assert linear_vae.learning_rate(1.0, lr, final) == pytest.approx(final)
    values = [linear_vae.learning_rate(p, lr, final) for p in np.linspace(0, 1, 50)]
    assert all(b <= a for a, b in zip(values, values[1:]))


def test_time_budget_compresses_the_schedule():
    from minivae import VAE

    _, x = compare.load_dequantized_digits(0)
    model = VAE(64, 2, hidden=(), likelihood="gaussian", learn_variance=True, dtype=np.float64)
    trace = linear_vae.train_linear_vae(model, x["train"][:200], np.random.default_rng(0), steps=10 ** 7,
                                     seconds=0.3)
    assert trace["stopped_by_time_budget"] and 0 < trace["steps"] < 10 ** 7
    assert trace["seconds"] < 3.0


def test_errors_name_the_argument(capsys):
    for bad in ("2,x", ","):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["compare", "--latent", bad, "--quick"])
        assert exit_info.value.code == 2
        assert "--latent" in capsys.readouterr().err
    with pytest.raises(ValueError, match="latent size"):
        compare.compare(latent_sizes=(64,), quick=True)
    with pytest.raises(SystemExit):
        cli.main(["compare", "--linear-seconds", "0", "--quick"])
    assert "--linear-seconds" in capsys.readouterr().err
    from minivae import VAE

    with pytest.raises(ValueError, match="hidden"):
        linear_vae.train_linear_vae(VAE(64, 2), np.zeros((10, 64)), np.random.default_rng(0))


def test_importing_compare_loads_neither_matplotlib_nor_numba():
    code = ("import sys, minivae.compare, minivae.cli; minivae.cli.build_parser(); "
            "print(sorted(m for m in ('matplotlib', 'numba', 'scipy') if m in sys.modules))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


def test_a_train_run_that_cannot_give_numbers_is_refused_before_any_training(tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("compare trained before checking train_run")

    monkeypatch.setattr(linear_vae, "train_linear_vae", no_training)
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"interrupted": True, "data": "digits"}))
    with pytest.raises(ValueError, match="was interrupted and has no test numbers"):
        compare.compare(latent_sizes=(2,), quick=True, train_run=run)
    (run / "summary.json").write_text("{not json")
    with pytest.raises(ValueError, match="summary.json cannot be read"):
        compare.compare(latent_sizes=(2,), quick=True, train_run=run)
    (run / "summary.json").write_text(json.dumps({"data": "digits", "test_nelbo": 96.0}))
    with pytest.raises(ValueError, match=r"summary.json has no \['test_nll'\]"):
        compare.compare(latent_sizes=(2,), quick=True, train_run=run)


def test_outputs_are_written_as_a_whole_and_stale_figures_removed(tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    (out / "compare_curves_q7.png").write_bytes(b"an earlier run's figure")
    result = compare.compare(latent_sizes=(2,), seed=0, quick=True, linear_steps=30, nonlinear=False)
    written = compare.write_outputs(result, out)
    assert sorted(path.name for path in out.iterdir()) == sorted(path.name for path in written)
    assert written[-1].name == "compare.json" and not (out / "compare_curves_q7.png").exists()
    assert json.loads((out / "compare.json").read_text())["settings"]["latent_sizes"] == [2]

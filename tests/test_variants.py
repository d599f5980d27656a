"""minivae variants: every variant trains and is measured; the numbers it reports are recomputed."""

import argparse
import json

import numpy as np
import pytest

import minivae
from minivae import variants
from minivae.hierarchical import TwoLevelVAE


@pytest.fixture(scope="module")
def data():
    return {split: minivae.datasets.load_digits(split)[0] for split in ("train", "val", "test")}


@pytest.mark.parametrize("name", variants.VARIANTS)
def test_every_variant_trains_quick_and_reports_what_it_measured(name, data):
    row = variants.run_variant(name, data, seed=0, quick=True)
    assert row["variant"] == name and row["epochs"] == 2 and row["test_nll_samples"] == 16
    assert np.isfinite(row["test_nelbo"]) and np.isfinite(row["test_nll"])
    # the importance-weighted NLL is a tighter bound than the -ELBO, up to Monte Carlo noise
    assert row["test_nll"] < row["test_nelbo"] + 1.0
    if name == "two_level":
        assert len(row["active_units"]) == 2
    expected_objective = {"iwae5": "IWAE(k=5)", "iwae50": "IWAE(k=50)"}.get(name)
    if expected_objective:
        assert row["objective"] == expected_objective


def test_the_variants_are_the_pieces_they_say(data):
    built = {name: variants.build_variant(name, data["train"][:100]) for name in variants.VARIANTS}
    assert built["mog16"][0].prior.n_components == 16 and built["vamp50"][0].prior.n_components == 50
    assert isinstance(built["two_level"][0], TwoLevelVAE) and built["two_level"][0].latent_dims == (16, 8)
    assert built["warmup"][1].warmup == 50 and built["free_bits"][1].free_bits == 0.25
    assert built["standard"][0].hidden == minivae.REFERENCE.hidden
    with pytest.raises(ValueError, match="variant must be one of"):
        variants.build_variant("flow", data["train"])


def test_the_command_writes_its_table_and_json(tmp_path, capsys):
    args = argparse.Namespace(only="standard,iwae5", seeds="0,1", out=str(tmp_path / "v"), quick=True)
    assert variants.run(args) == 0
    result = json.loads((tmp_path / "v" / "variants.json").read_text())
    assert [(row["variant"], row["seed"]) for row in result["rows"]] == [
        ("standard", 0), ("iwae5", 0), ("standard", 1), ("iwae5", 1)]
    printed = capsys.readouterr().out
    for row in result["rows"]:
        assert f"{row['test_nll']:.2f}" in printed
    assert variants.run(argparse.Namespace(only="standard,nope", seeds="0", out=str(tmp_path), quick=True)) == 2
    assert "--only takes names from" in capsys.readouterr().err


def test_the_reported_numbers_are_recomputed_from_the_same_training(data):
    row = variants.run_variant("mog16", data, seed=3, quick=True)
    x = {split: values[:variants.QUICK["rows"]] for split, values in data.items()}
    model, objective = variants.build_variant("mog16", x["train"], 3, variants.QUICK["hidden"])
    minivae.fit(model, x["train"], x["val"], objective=objective, epochs=2, rng=np.random.default_rng(3),
                verbose=False)
    rng = np.random.default_rng([3, 3])
    assert row["test_nelbo"] == pytest.approx(-model.elbo(x["test"], n_samples=100, rng=rng).mean(), rel=1e-12)
    assert row["test_nll"] == pytest.approx(-model.log_likelihood(x["test"], n_samples=16, rng=rng).mean(), rel=1e-12)
    assert row["active_units"] == model.active_units(x["test"])


def test_the_twin_comparison_recomputes_each_mean_and_verdict():
    def row(name, seed, nll, k=variants.TEST_NLL_SAMPLES):
        return {"variant": name, "seed": seed, "test_nll": nll, "test_nll_samples": k}

    rows = [row("standard", 0, 92.5), row("standard", 1, 93.0), row("free_bits", 0, 92.84), row("free_bits", 1, 92.62),
            row("iwae50", 0, 93.5), row("mog16", 0, 91.0),              # mog16: seed 1 missing, no verdict
            row("vamp50", 0, 90.0, k=16), row("vamp50", 1, 90.0, k=16)]  # quick rows (K = 16): no verdict
    lines = variants.format_twin_comparison(rows).splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["standard", "free_bits", "iwae50"]
    standard, free_bits, iwae50 = (line.split() for line in lines[1:])
    twin = np.mean(variants.TWIN_TEST_NLL["standard"])
    assert float(standard[2]) == pytest.approx(92.75, abs=5e-4) and float(standard[4]) == pytest.approx(twin, abs=5e-4)
    assert "beats the twin by 0.285; within the bound by 0.585" in lines[1]
    assert float(free_bits[2]) == pytest.approx(92.73, abs=5e-4)
    assert "ABOVE the bound by 0.005" in lines[2]
    assert "behind the twin by 0.850; ABOVE the bound by 0.550" in lines[3]
    assert variants.format_twin_comparison([row("mog16", 0, 91.0)]) == ""


def test_the_time_comparison_recomputes_each_ratio():
    rows = [{"variant": "iwae50", "seed": 0, "train_seconds": 120.0, "threads": 2, "epochs": 117,
             "twin_status": "ok", "twin_train_seconds": 420.0, "twin_epochs": 150},
            {"variant": "vamp50", "seed": 1, "train_seconds": 30.0, "threads": 2, "epochs": 90,
             "twin_status": "not installed"},
            {"variant": "mog16", "seed": 0, "train_seconds": 20.0, "threads": 2, "epochs": 80}]  # no twin timed
    lines = variants.format_time_comparison(rows).splitlines()
    assert len(lines) == 3 and "--quick" not in lines[0]
    assert lines[1].split() == ["iwae50", "0", "120.0", "2", "117", "420.0", "150", f"{420 / 120:.2f}x"]
    assert lines[2].split()[:2] == ["vamp50", "1"] and lines[2].endswith("PyTorch twin: not installed")
    assert "the ratio means nothing" in variants.format_time_comparison(rows, quick=True).splitlines()[0]
    assert variants.format_time_comparison(rows[2:]) == ""


def test_twin_time_trains_the_pytorch_twin_and_reports_its_time(tmp_path, capsys):
    pytest.importorskip("torch")
    args = argparse.Namespace(only="iwae5,mog16", seeds="0", out=str(tmp_path / "v"), quick=True, twin_time=True)
    assert variants.run(args) == 0
    iwae5, mog16 = json.loads((tmp_path / "v" / "variants.json").read_text())["rows"]
    assert iwae5["twin_status"] == "ok" and iwae5["twin_epochs"] == variants.QUICK["epochs"]
    assert iwae5["twin_train_seconds"] > 0 and iwae5["twin_threads"] == 1
    assert "twin_status" not in mog16  # no PyTorch twin of the mixture prior is trained
    printed = capsys.readouterr().out
    assert f"{iwae5['twin_train_seconds'] / iwae5['train_seconds']:.2f}x" in printed

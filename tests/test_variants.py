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

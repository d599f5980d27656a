"""Tests for minivae.bench: the quick benchmark runs through the command line and writes JSON of the
documented structure, with positive, finite numbers. No timing is asserted: the numbers depend on
the machine and its load."""

import json
import math

import pytest

from minivae import bench, cli


def positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    assert cli.main(["bench", "--quick", "--json", str(path)]) == 0
    return json.loads(path.read_text())


def test_quick_bench_writes_every_part(quick_results):
    assert set(quick_results) >= {"machine", "settings", "gemm", "dense", "steps", "mnist_steps", "memory",
                                  "compile", "train", "seconds", "load_before", "load_after", "peak_gflops"}
    assert quick_results["settings"]["quick"] is True
    assert quick_results["machine"]["cpu_count"] >= 1
    assert quick_results["train"] is None  # --train not given


def test_gemm_covers_every_product_of_the_reference_model_in_both_dtypes(quick_results):
    measured = {(r["op"], r["M"], r["K"], r["N"], r["dtype"]) for r in quick_results["gemm"]}
    expected = {shape + (dtype,) for shape in bench.product_shapes() for dtype in ("float32", "float64")}
    assert measured == expected
    for r in quick_results["gemm"]:
        assert positive(r["kernel_gflops"]) and positive(r["blas_gflops"])
        assert r["winner"] in ("kernel", "blas")
        assert r["threads"] == 1


def test_fused_layers_are_timed_for_every_reference_layer(quick_results):
    assert [r["layer"] for r in quick_results["dense"]] == [name for name, *_ in bench.reference_layers()]
    for r in quick_results["dense"]:
        for key in ("forward_fused_us", "forward_numpy_us", "backward_fused_us", "backward_numpy_us"):
            assert positive(r[key]), key


def test_training_steps_of_both_backends_are_timed(quick_results):
    steps = {(s["backend"], s["threads"]): s for s in quick_results["steps"]}
    for backend in ("numpy", "numba"):
        s = steps[backend, 1]
        assert s["status"] == "ok"
        assert positive(s["ms_per_step"])
        assert s["steps_per_second"] == pytest.approx(1000 / s["ms_per_step"])
        assert s["gflop"] == pytest.approx(bench.step_flops() / 1e9)
    # the other programs are reported even when skipped or not installed
    assert {"torch", "torch-compile", "jax"} <= {backend for backend, _ in steps}
    for backend in ("torch", "torch-compile", "jax"):
        assert steps[backend, 1]["status"] == "skipped (--quick)"


def test_step_flops_count_the_products_of_every_layer():
    # the reference model: 438 272 weights; forward, x.T @ g and g @ W.T of each layer on 64 rows, but no
    # g @ W.T for the first encoder layer (64 x 256 weights): the data needs no gradient
    assert bench.step_flops() == 3 * 2 * 64 * 438_272 - 2 * 64 * 64 * 256
    # IWAE(50) decodes 50 samples of every image; a VampPrior encodes 50 pseudo-inputs too
    decoder_weights = 16 * 256 + 256 * 256 + 256 * 1088
    assert bench.step_flops("iwae50") - bench.step_flops() == 3 * 2 * 49 * 64 * decoder_weights
    assert bench.step_flops("vamp50") > bench.step_flops()
    assert bench.step_flops("mnist") == pytest.approx(3 * 2 * 128 * 2 * (784 * 512 + 512 * 256) + 3 * 2 * 128 * (
        256 * 32 + 16 * 256) - 2 * 128 * 784 * 512)


def test_the_peak_is_the_best_product_rate_and_steps_are_a_fraction_of_it(quick_results):
    records = [r for r in quick_results["gemm"] if r["dtype"] == "float32" and r["threads"] == 1]
    peak = quick_results["peak_gflops"]["1"]
    assert peak == max(max(r["kernel_gflops"], r["blas_gflops"]) for r in records)
    text = bench.format_results(quick_results)
    assert f"1 thread(s) {peak:.1f}" in text
    numba = next(s for s in quick_results["steps"] if s["backend"] == "numba" and s["threads"] == 1)
    rate = numba["gflop"] / (numba["ms_per_step"] / 1e3)
    assert f"{rate:.1f}" in text and f"{rate / peak:.0%}" in text


def test_the_mnist_sized_step_is_timed(quick_results):
    mnist = {(s["backend"], s["threads"]): s for s in quick_results["mnist_steps"]}
    assert mnist["numba", 1]["status"] == "ok" and positive(mnist["numba", 1]["ms_per_step"])
    assert mnist["torch", 1]["status"] == "skipped (--quick)"
    # 784 -> 512 -> 256 on 128 rows costs more than the reference model's step on 64
    reference = next(s for s in quick_results["steps"] if s["backend"] == "numba" and s["threads"] == 1)
    assert mnist["numba", 1]["ms_per_step"] > reference["ms_per_step"]
    assert "MNIST-sized training step" in bench.format_results(quick_results)


def test_the_model_familys_steps_are_timed(quick_results):
    family = {(s["variant"], s["backend"]): s for s in quick_results["family_steps"]}
    assert set(family) == {(variant, backend) for variant in bench.FAMILY_STEPS
                           for backend in ("numpy", "numba", "torch")}
    for (variant, backend), s in family.items():
        if backend == "torch":
            assert s["status"] == "skipped (--quick)"
        else:
            assert s["status"] == "ok" and positive(s["ms_per_step"])
    # an IWAE(50) step decodes 50 samples of every image: it costs more than the reference step
    reference = {s["backend"]: s["ms_per_step"] for s in quick_results["steps"] if s["threads"] == 1
                 and "ms_per_step" in s}
    assert family["iwae50", "numba"]["ms_per_step"] > reference["numba"]
    assert "model family" in bench.format_results(quick_results)


def test_a_busy_machine_is_named_in_the_report(quick_results):
    results = dict(quick_results, load_before=[9.5, 9.0, 8.0], busy=None)
    results["busy"] = bench.busy_reasons(results)
    assert any("load average before the run was 9.5" in reason for reason in results["busy"])
    text = bench.format_results(results)
    assert text.splitlines()[2].startswith("WARNING: the machine was busy")
    quiet = dict(quick_results, load_before=[0.1, 0.1, 0.1], load_after=[0.1, 0.1, 0.1],
                 steps=[dict(s, spread=1.01) for s in quick_results["steps"] if "ms_per_step" in s],
                 family_steps=[dict(s, spread=1.01) for s in quick_results["family_steps"] if "ms_per_step" in s],
                 mnist_steps=[dict(s, spread=1.01) for s in quick_results["mnist_steps"] if "ms_per_step" in s])
    assert bench.busy_reasons(quiet) == []
    noisy = dict(quiet, steps=[dict(quiet["steps"][0], spread=1.6)])
    assert "disagree between repeats by more than 25%" in bench.busy_reasons(noisy)[0]


def test_memory_and_compile_time_are_positive(quick_results):
    memory = quick_results["memory"]
    mnist = memory["mnist_training"]
    assert mnist["status"] == "ok" and mnist["rows"] == 600 and positive(mnist["maxrss_mib"])
    assert mnist["n_params"] > 700_000  # 784 -> 512 -> 256 -> 32, and back
    assert positive(memory["baseline_mib"]) and positive(memory["baseline_kernels_mib"])
    assert positive(memory["training"]["maxrss_mib"])
    assert memory["training"]["maxrss_mib"] >= memory["baseline_mib"]
    assert quick_results["compile"]["cold"] is None  # --quick skips the cold compile
    assert positive(quick_results["compile"]["warm"]["first_step_seconds"])


def test_the_table_names_every_part(quick_results):
    text = bench.format_results(quick_results)
    for heading in ("Matrix products", "Fused layers", "Training step", "Memory",
                    "First float32 training step"):
        assert heading in text


def test_product_shapes_are_the_three_products_of_each_layer():
    shapes = bench.product_shapes(batch=64)
    assert ("matmul", 64, 256, 1088) in shapes  # decoder output layer, forward
    assert ("matmul_tn", 256, 64, 1088) in shapes  # its weight gradient
    assert ("matmul_nt", 64, 1088, 256) in shapes  # its input gradient
    assert len(shapes) == len(set(shapes)) == 15  # 6 layers x 3 products, two layers share a shape


def test_a_failing_worker_is_reported_not_raised():
    result = bench.run_worker("step", {"backend": "no-such-backend", "step_repeats": 1, "step_count": 1}, 1)
    assert result["status"].startswith("error")


def test_best_seconds_is_the_time_of_one_call():
    calls = []
    seconds = bench.best_seconds(lambda: calls.append(1), repeats=3, min_seconds=0.0)
    assert positive(seconds) and seconds < 0.1
    assert len(calls) == 1 + 3  # one warm-up call, then one call per repeat


def test_the_jax_twin_of_the_reference_step_runs_when_jax_is_installed():
    pytest.importorskip("jax")
    result = bench.run_worker("step", {"backend": "jax", "step_repeats": 1, "step_count": 2}, 1)
    assert result["status"] == "ok", result
    assert positive(result["ms_per_step"])

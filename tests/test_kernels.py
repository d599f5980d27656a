"""Tests for minivae.kernels: every numba kernel against its reference in minivae.ops (or NumPy's own
``@`` and ``exp``), in float64 and float32.

The first run compiles the kernels (about 8 s); numba caches the machine code in
minivae/__pycache__, so later runs take about a second. To keep compilation cheap the tests use
few dtypes and layouts, and cross block boundaries by shrinking the blocking parameters (they are
plain arguments of the kernels, so this compiles nothing new).
"""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from minivae import kernels as K
from minivae import ops

DTYPES = [np.float64, np.float32]
# Tolerances relative to the natural scale of each result (see assert_within): float64 results must
# agree to ~1e-12 of it, float32 results to ~1e-5.
RTOL = {np.float64: 1e-12, np.float32: 1e-5}


def assert_within(actual, expected, scale, rtol):
    """|actual - expected| <= rtol * scale elementwise, where scale bounds the size of the terms
    that were summed (e.g. |x| @ |W| for x @ W): the form of the rounding-error bound of a sum."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    assert np.all(np.isfinite(actual))
    err = np.abs(actual - expected)
    bound = rtol * (np.asarray(scale, dtype=np.float64) + np.finfo(np.float64).tiny)
    worst = np.unravel_index(np.argmax(err / bound), err.shape) if err.size else ()
    assert np.all(err <= bound), f"error {err[worst]:.3g} > bound {bound[worst]:.3g} at {worst}"


def random(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


@pytest.fixture(autouse=True)
def hand_written_products(monkeypatch):
    """These tests are of the hand-written kernel: every product takes it, whatever BLAS would do."""
    monkeypatch.setattr(K.gemm, "GEMM_ROUTE", "kernel")


# --------------------------------------------------------------------------------------------------
# The package does not import numba
# --------------------------------------------------------------------------------------------------

def test_import_minivae_does_not_import_numba():
    code = "import sys, minivae; print('numba' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------------
# Matrix products
# --------------------------------------------------------------------------------------------------

# (M, K, N): a single element; ragged edges in every dimension; one whole 8 x 2v tile of C and
# more (v = 8 float64 or 16 float32 lanes with AVX-512); a long k; a narrow C with a wide C.T
# (g @ W.T then computes C.T) and the other way round.
SHAPES = [(1, 1, 1), (7, 5, 3), (65, 7, 9), (16, 33, 130), (9, 70, 6), (24, 40, 64), (64, 20, 5)]

PRODUCTS = {
    "matmul": (K.matmul, lambda x, W: x @ W, lambda x, W: np.abs(x) @ np.abs(W)),
    "matmul_nt": (K.matmul_nt, lambda g, W: g @ W.T, lambda g, W: np.abs(g) @ np.abs(W).T),
    "matmul_tn": (K.matmul_tn, lambda x, g: x.T @ g, lambda x, g: np.abs(x).T @ np.abs(g)),
}


def operands(name, M, Kd, N, dtype, rng):
    """Operands of the product called name whose result is (M, N) with inner dimension Kd."""
    if name == "matmul":
        return random(rng, (M, Kd), dtype), random(rng, (Kd, N), dtype)
    if name == "matmul_nt":
        return random(rng, (M, Kd), dtype), random(rng, (N, Kd), dtype)
    return random(rng, (Kd, M), dtype), random(rng, (Kd, N), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", PRODUCTS)
def test_products_match_numpy(name, dtype):
    kernel, twin, scale = PRODUCTS[name]
    rng = np.random.default_rng(0)
    for M, Kd, N in SHAPES:
        a, b = operands(name, M, Kd, N, dtype, rng)
        c = kernel(a, b)
        assert c.dtype == dtype and c.shape == (M, N)
        assert_within(c, twin(a, b), scale(a, b), RTOL[dtype])


def tile_width(dtype):
    """Columns of C per tile of the micro-kernel: two SIMD vectors."""
    return 2 * K.gemm.VECTOR_BYTES // np.dtype(dtype).itemsize


@pytest.mark.parametrize("name", PRODUCTS)
def test_products_cross_every_block_boundary(name, monkeypatch):
    """Tiny blocks (k-blocks of 8, row blocks of 8) on products with several whole tiles and a
    ragged border in every dimension; for g @ W.T both ways of transposing (W, or g and C)."""
    monkeypatch.setattr(K.gemm, "GEMM_B_PANEL_BYTES", 8 * 2 * K.gemm.VECTOR_BYTES)
    monkeypatch.setattr(K.gemm, "GEMM_MC", 8)
    kernel, twin, scale = PRODUCTS[name]
    rng = np.random.default_rng(1)
    width = tile_width(np.float64)
    for M, Kd, N in [(37, 45, 2 * width + 5), (9, 45, 5 * width + 1)]:
        a, b = operands(name, M, Kd, N, np.float64, rng)
        assert_within(kernel(a, b), twin(a, b), scale(a, b), RTOL[np.float64])
        start = random(rng, (M, N), np.float64)
        out = start.copy()
        kernel(a, b, out=out, accumulate=True)
        assert_within(out, start + twin(a, b), np.abs(start) + scale(a, b), RTOL[np.float64])


@pytest.mark.parametrize("name", PRODUCTS)
def test_products_of_strided_and_transposed_views(name):
    rng = np.random.default_rng(2)
    kernel, twin, scale = PRODUCTS[name]
    a, b = operands(name, 13, 10, 11, np.float64, rng)
    big = random(rng, (3 * a.shape[0], a.shape[1] + 2), np.float64)
    cases = [
        (big[::3, 1:-1], b),  # strided rows, offset columns: copied
        (np.asfortranarray(a), b),  # F-contiguous: read as a transposed C array, no copy
        (a, b.T.copy().T),  # a transposed view
    ]
    for x, y in cases:
        assert not (x.flags.c_contiguous and y.flags.c_contiguous)
        assert_within(kernel(x, y), twin(x, y), scale(x, y), RTOL[np.float64])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", PRODUCTS)
def test_products_write_into_out_and_accumulate(name, dtype):
    kernel, twin, scale = PRODUCTS[name]
    rng = np.random.default_rng(3)
    a, b = operands(name, 6, 7, 5, dtype, rng)
    out = np.full((6, 5), np.nan, dtype)  # overwriting must not read the old contents
    assert kernel(a, b, out=out) is out
    assert_within(out, twin(a, b), scale(a, b), RTOL[dtype])
    start = random(rng, (6, 5), dtype)
    out[...] = start
    assert kernel(a, b, out=out, accumulate=True) is out
    assert_within(out, start + twin(a, b), np.abs(start) + scale(a, b), RTOL[dtype])


def test_products_with_empty_dimensions():
    x, W = np.ones((3, 0)), np.ones((0, 4))
    np.testing.assert_array_equal(K.matmul(x, W), np.zeros((3, 4)))
    out = np.ones((3, 4))
    K.matmul(x, W, out=out, accumulate=True)
    np.testing.assert_array_equal(out, np.ones((3, 4)))
    assert K.matmul(np.ones((0, 3)), np.ones((3, 4))).shape == (0, 4)
    assert K.matmul_tn(np.ones((5, 3)), np.ones((5, 0))).shape == (3, 0)


@pytest.mark.parametrize("name", PRODUCTS)
def test_threaded_products_match_numpy(name, monkeypatch):
    """The threaded driver with C split into 3 column chunks (which works with any number of
    threads: prange hands the chunks out), each chunk whole tiles and the last one ragged."""
    monkeypatch.setattr(K.gemm, "GEMM_THREADS", 3)
    monkeypatch.setattr(K.gemm, "GEMM_PARALLEL_MIN_FLOPS", 0)
    kernel, twin, scale = PRODUCTS[name]
    rng = np.random.default_rng(4)
    a, b = operands(name, 21, 70, 3 * tile_width(np.float64) + 5, np.float64, rng)
    assert_within(kernel(a, b), twin(a, b), scale(a, b), RTOL[np.float64])


def test_product_errors_name_the_argument():
    with pytest.raises(ValueError, match="inner dimensions differ"):
        K.matmul(np.ones((2, 3)), np.ones((4, 5)))
    with pytest.raises(TypeError, match="same dtype"):
        K.matmul(np.ones((2, 3)), np.ones((3, 5), np.float32))
    with pytest.raises(TypeError, match="x must be float32 or float64"):
        K.matmul(np.ones((2, 3), int), np.ones((3, 5)))
    with pytest.raises(ValueError, match="out must be"):
        K.matmul(np.ones((2, 3)), np.ones((3, 5)), out=np.ones((5, 2)))
    with pytest.raises(ValueError, match="accumulate=True needs out"):
        K.matmul(np.ones((2, 3)), np.ones((3, 5)), accumulate=True)
    x = np.ones((3, 3))
    with pytest.raises(ValueError, match="out must not overlap"):
        K.matmul(x, np.ones((3, 3)), out=x)


# --------------------------------------------------------------------------------------------------
# The vectorised exp
# --------------------------------------------------------------------------------------------------

def test_exp_is_accurate_over_the_whole_range():
    x = np.concatenate([np.linspace(-745, 709.7, 20001), [-1e-300, 0.0, 1e-300]])
    assert_within(K.exp(x), np.exp(x), np.exp(x), 5e-16)  # within about 2 ulp
    special = np.array([-np.inf, np.inf, np.nan, -800.0, 710.0])
    np.testing.assert_array_equal(K.exp(special), [0.0, np.inf, np.nan, 0.0, np.inf])
    x32 = np.linspace(-87, 88, 1001, dtype=np.float32)  # normal float32 results
    assert K.exp(x32).dtype == np.float32
    np.testing.assert_allclose(K.exp(x32), np.exp(x32.astype(np.float64)), rtol=1e-7, atol=0)


def test_float32_exp_is_accurate_over_the_whole_range():
    from minivae.kernels.exp import exp32
    x = np.concatenate([np.linspace(-103, 88.7, 200001, dtype=np.float32), np.float32([-1e-30, 0.0, 1e-30])])
    expected = np.exp(x.astype(np.float64))
    y = exp32(x)
    assert y.dtype == np.float32
    normal = expected >= np.finfo(np.float32).tiny
    np.testing.assert_allclose(y[normal], expected[normal], rtol=2 * np.finfo(np.float32).eps, atol=0)
    # subnormal results: within one step of the smallest subnormal
    assert np.all(np.abs(y[~normal] - expected[~normal]) <= 2.0 ** -149)
    special = np.float32([-np.inf, np.inf, np.nan, -200.0, 89.0, -104.0])
    np.testing.assert_array_equal(exp32(special), np.float32([0.0, np.inf, np.nan, 0.0, np.inf, 0.0]))


# --------------------------------------------------------------------------------------------------
# Dense layer
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", list(K.ACTIVATION_CODES))
def test_dense_forward_and_backward_match_ops(activation, dtype):
    rng = np.random.default_rng(5)
    rtol = RTOL[dtype]
    x, W, b = random(rng, (7, 65), dtype), random(rng, (65, 9), dtype, 0.3), random(rng, 9, dtype)
    for slope in (0.01, 0.2):
        a, cache = K.dense_forward(x, W, b, activation, slope)
        a_ref, cache_ref = ops.dense_forward(x, W, b, activation, slope)
        assert a.dtype == dtype and cache[2] is a and cache[0] is x and cache[1] is W
        # every activation is 1-Lipschitz, so the error of h = x W + b bounds that of a
        assert_within(a, a_ref, np.abs(x) @ np.abs(W) + np.abs(b), rtol)

        da = random(rng, a.shape, dtype)
        dx, dW, db = K.dense_backward(da, cache_ref, activation, slope)
        dx_ref, dW_ref, db_ref = ops.dense_backward(da, cache_ref, activation, slope)
        g = np.abs(da)  # |act'| <= 1
        assert dx.dtype == dW.dtype == db.dtype == dtype
        assert_within(dx, dx_ref, g @ np.abs(W).T, rtol)
        assert_within(dW, dW_ref, np.abs(x).T @ g, rtol)
        assert_within(db, db_ref, g.sum(axis=0), rtol)
        dx_none, dW_skip, _ = K.dense_backward(da, cache_ref, activation, slope, need_dx=False)
        assert dx_none is None and ops.dense_backward(da, cache_ref, activation, slope, need_dx=False)[0] is None
        np.testing.assert_array_equal(dW_skip, dW)


def test_dense_leaky_relu_slope_is_data():
    # the kernel once ignored the slope: a LeakyReLU(0.2) network differed from NumPy by 0.19
    x, W, b = np.array([[-1.0, 2.0]]), np.eye(2), np.zeros(2)
    for slope in (0.0, 0.01, 0.2, 0.5):
        a, cache = K.dense_forward(x, W, b, "leaky_relu", slope)
        np.testing.assert_array_equal(a, [[-slope, 2.0]])
        _, _, db = K.dense_backward(np.ones((1, 2)), cache, "leaky_relu", slope)
        np.testing.assert_array_equal(db, [slope, 1.0])


def test_dense_sigmoid_and_tanh_saturate_without_overflow():
    x = np.array([[-1000.0], [0.0], [1000.0]])
    W, b = np.ones((1, 1)), np.zeros(1)
    with np.errstate(all="raise"):
        np.testing.assert_array_equal(K.dense_forward(x, W, b, "sigmoid")[0][:, 0], [0.0, 0.5, 1.0])
        np.testing.assert_array_equal(K.dense_forward(x, W, b, "tanh")[0][:, 0], [-1.0, 0.0, 1.0])


def test_dense_rejects_an_unknown_activation_and_a_bad_bias():
    with pytest.raises(ValueError, match="activation must be one of"):
        K.dense_forward(np.ones((2, 3)), np.ones((3, 4)), np.ones(4), "softplus")
    with pytest.raises(ValueError, match=r"b must be a float64 array of shape \(4,\)"):
        K.dense_forward(np.ones((2, 3)), np.ones((3, 4)), np.ones(3))


# --------------------------------------------------------------------------------------------------
# Categorical likelihood
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_categorical_matches_ops_including_extreme_logits(dtype):
    rng = np.random.default_rng(7)
    B, D, L = 3, 5, 17
    logits = random(rng, (B, D * L), dtype, 3.0)
    logits[0, :L] = rng.choice([-1e3, 1e3], L)  # one pixel of ±1000
    logits[1, L:2 * L] = -1e3  # all equal and very negative
    logits[2, 2 * L] = 1e3  # one huge logit
    x_int = rng.integers(0, L, (B, D))
    logp, grad = K.categorical_log_prob(logits, x_int)
    logp_ref, grad_ref = ops.categorical_log_prob(logits, x_int)
    assert logp.dtype == grad.dtype == dtype and grad.shape == logits.shape
    assert np.all(np.isfinite(logp)) and np.all(np.isfinite(grad))
    rtol = RTOL[dtype]
    assert_within(logp, logp_ref, np.abs(logits).reshape(B, D, L).max(axis=2).sum(axis=1) + D, rtol)
    assert_within(grad, grad_ref, np.ones((B, D * L)), rtol)
    # the gradient of each pixel sums to zero (softmax sums to one)
    pixel_sums = grad.reshape(B, D, L).sum(axis=2)
    assert_within(pixel_sums, np.zeros((B, D)), np.ones((B, D)), 10 * rtol)
    # the backward scales the cache by dL/dlogp per row, the same on both
    weight = random(rng, B, dtype)
    np.testing.assert_allclose(ops.categorical_log_prob_backward(weight, grad), grad_ref * weight[:, None],
                               rtol=rtol, atol=rtol)


@pytest.mark.parametrize("position", range(5))
def test_categorical_finds_the_maximum_in_every_position(position):
    # one logit far above the others, in each position of a pixel's L values (the last one included)
    L = 5
    logits = np.zeros((1, 2 * L))
    logits[0, position] = logits[0, L + position] = 800.0
    x_int = np.array([[position, (position + 1) % L]])
    logp, grad = K.categorical_log_prob(logits, x_int)
    logp_ref, grad_ref = ops.categorical_log_prob(logits, x_int)
    assert np.all(np.isfinite(logp)) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(logp, logp_ref, rtol=1e-12)
    np.testing.assert_allclose(logp, [-800.0], rtol=1e-12)
    np.testing.assert_allclose(grad, grad_ref, atol=1e-12)


def test_categorical_gradient_is_the_derivative_of_logp():
    """Central differences of logp against the gradient, in float64."""
    rng = np.random.default_rng(8)
    logits = rng.standard_normal((2, 12))
    x_int = rng.integers(0, 4, (2, 3))
    logp, grad = K.categorical_log_prob(logits, x_int)
    h = 1e-5
    for row, column in [(0, 0), (0, 4 + x_int[0, 1]), (1, 11)]:
        up, down = logits.copy(), logits.copy()
        up[row, column] += h
        down[row, column] -= h
        numeric = (K.categorical_log_prob(up, x_int)[0][row] - K.categorical_log_prob(down, x_int)[0][row]) / (2 * h)
        assert abs(numeric - grad[row, column]) < 1e-8


@pytest.mark.parametrize("dtype", DTYPES)
def test_categorical_log_prob_alone_is_the_logp_of_the_fused_pass(dtype):
    rng = np.random.default_rng(9)
    B, D, L = 4, 6, 17
    logits = random(rng, (B, D * L), dtype, 3.0)
    x_int = rng.integers(0, L, (B, D))
    logp, cache = K.categorical_log_prob(logits, x_int, need_grad=False)
    assert cache is None and logp.dtype == dtype and logp.shape == (B,)
    np.testing.assert_array_equal(logp, K.categorical_log_prob(logits, x_int)[0])
    assert_within(logp, ops.categorical_log_prob(logits, x_int, need_grad=False)[0],
                  np.abs(logits).reshape(B, D, L).max(axis=2).sum(axis=1) + D, RTOL[dtype])
    with pytest.raises(ValueError, match=r"x_int must lie in \[0, 17\)"):
        K.categorical_log_prob(logits, x_int + L)


@pytest.mark.parametrize("dtype", DTYPES)
def test_categorical_on_threads_gives_the_numbers_of_one_thread(dtype, monkeypatch):
    """Large batches are split into chunks of rows on threads: the same numbers, bit for bit."""
    from minivae.kernels import threads
    rng = np.random.default_rng(10)
    B, D, L = 37, 6, 17
    logits = random(rng, (B, D * L), dtype, 3.0)
    x_int = rng.integers(0, L, (B, D))
    monkeypatch.setattr(threads, "THREADS", 1)
    logp_1, grad_1 = K.categorical_log_prob(logits, x_int)
    monkeypatch.setattr(threads, "THREADS", 3)
    monkeypatch.setattr(threads, "PARALLEL_MIN_ELEMENTS", 1)
    calls = []
    run_chunks = threads.run_chunks
    monkeypatch.setattr(threads, "run_chunks", lambda f, n, k, **o: (calls.append(k), run_chunks(f, n, k, **o)))
    logp_3, grad_3 = K.categorical_log_prob(logits, x_int)
    assert calls == [3]
    np.testing.assert_array_equal(logp_3, logp_1)
    np.testing.assert_array_equal(grad_3, grad_1)
    logp_ref, grad_ref = ops.categorical_log_prob(logits, x_int)
    assert_within(logp_3, logp_ref, np.abs(logits).reshape(B, D, L).max(axis=2).sum(axis=1) + D, RTOL[dtype])
    assert_within(grad_3, grad_ref, np.ones((B, D * L)), RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_passes_on_threads_give_the_numbers_of_one_thread(dtype, monkeypatch):
    """The bias-and-activation pass of a big layer and the categorical backward's scaling are split
    into chunks of rows on threads: the same numbers, bit for bit, as one thread and as NumPy's scaling."""
    from minivae.kernels import threads
    rng = np.random.default_rng(12)
    x, W, b = random(rng, (45, 7), dtype), random(rng, (7, 33), dtype), random(rng, (33,), dtype)
    logits, x_int = random(rng, (45, 6 * 17), dtype, 3.0), rng.integers(0, 17, (45, 6))
    weight = rng.standard_normal(45)  # float64, cast to the cache's dtype first, as NumPy's version does

    def run():
        forward = {act: K.dense_forward(x, W, b, act)[0] for act in ("relu", "leaky_relu", "sigmoid", "identity")}
        return forward, K.categorical_log_prob_backward(weight, K.categorical_log_prob(logits, x_int)[1])

    monkeypatch.setattr(threads, "THREADS", 1)
    forward_1, scaled_1 = run()
    monkeypatch.setattr(threads, "THREADS", 3)
    monkeypatch.setattr(threads, "PARALLEL_MIN_PASS", 1)
    calls = []
    run_chunks = threads.run_chunks
    monkeypatch.setattr(threads, "run_chunks", lambda f, n, k, **o: (calls.append(k), run_chunks(f, n, k, **o)))
    forward_3, scaled_3 = run()
    assert calls.count(3) == 5  # four forward passes and the scaling (the categorical pass is smaller)
    for act in forward_1:
        np.testing.assert_array_equal(forward_3[act], forward_1[act])
    np.testing.assert_array_equal(scaled_3, scaled_1)
    grad_numpy = ops.categorical_log_prob(logits, x_int)[1]
    cache = K.categorical_log_prob(logits, x_int)[1]
    np.testing.assert_array_equal(cache, K.categorical_log_prob(logits, x_int)[1])
    np.testing.assert_array_equal(scaled_3, cache * weight.astype(dtype)[:, None])
    assert_within(scaled_3, ops.categorical_log_prob_backward(weight, grad_numpy), np.abs(weight)[:, None] + 0 * cache,
                  RTOL[dtype])
    with pytest.raises(ValueError, match=r"dlogp must have shape \(45,\)"):
        K.categorical_log_prob_backward(weight[:3], cache)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 5), (3, 1), (64, 1088), (3200, 16), (37, 259)])
def test_bias_gradient_is_numpys_column_sum_bit_for_bit(dtype, shape):
    """The identity layer's bias gradient (the decoder's last layer) is summed by a compiled loop in
    the order NumPy's ``sum(axis=0)`` adds the rows: the same numbers, bit for bit."""
    rng = np.random.default_rng(13)
    da = random(rng, shape, dtype, 10.0)
    x, W = random(rng, (shape[0], 3), dtype), random(rng, (3, shape[1]), dtype)
    _, _, db = K.dense_backward(da, (x, W, da), "identity")
    np.testing.assert_array_equal(db, da.sum(axis=0))


def test_freed_memory_is_kept_so_big_arrays_do_not_page_fault_every_step():
    """Importing the kernels tunes glibc's malloc: a step that allocates and frees six arrays of 14 MB
    (the IWAE(50) decoder's logits, their gradient, ...) touches no fresh page after the first step; with
    MINIVAE_KEEP_MEMORY=0, malloc unmaps or trims what was freed and every step page-faults part of
    it in again (about 3000 pages of 4 KiB here). Counted by the kernel, not timed."""
    import platform

    from minivae.kernels import memory
    if platform.system() != "Linux" or not memory.keep_freed_memory():
        pytest.skip("glibc's malloc only (Linux)")
    script = ("import resource, numpy as np, minivae.kernels\n"
              "def step():\n"
              "    arrays = [np.ones((3200, 1088), np.float32) for _ in range(6)]\n"
              "step()\n"
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
              "for _ in range(10):\n"
              "    step()\n"
              "print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)\n")
    faults = {}
    for keep in ("1", "0"):
        env = {**__import__("os").environ, "MINIVAE_KEEP_MEMORY": keep}
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        faults[keep] = float(result.stdout)
    assert faults["1"] < 50, faults  # a few pages of NumPy's own bookkeeping at most
    assert faults["0"] > 1000, faults  # pages touched fresh every step (one array is 3400 pages)


def test_run_chunks_covers_every_row_once_and_raises_what_a_chunk_raised():
    from minivae.kernels import threads
    for n_rows, n_threads, min_rows, align in [(1, 2, 1, 1), (7, 2, 1, 1), (100, 3, 16, 1), (5, 4, 16, 1),
                                               (64, 1, 1, 1), (100, 2, 8, 32), (3200, 2, 32, 32)]:
        seen = np.zeros(n_rows, int)
        starts = []

        def mark(begin, end):
            seen[begin:end] += 1
            starts.append(begin)

        threads.run_chunks(mark, n_rows, n_threads, min_rows=min_rows, align=align)
        assert np.all(seen == 1), (n_rows, n_threads, seen)
        assert all(start % align == 0 for start in starts)
        assert len(starts) == (1 if n_threads == 1 or n_rows < 2 * max(min_rows, align) else
                               min(n_threads * threads.CHUNKS_PER_THREAD, n_rows // max(min_rows, align)))
        assert all(end - start >= min(min_rows, n_rows) for start, end in zip(sorted(starts), sorted(starts)[1:]))

    def fail(begin, end):
        if begin > 0:
            raise ValueError(f"chunk {begin}")

    with pytest.raises(ValueError, match="chunk"):
        threads.run_chunks(fail, 40, 2)


def test_run_tasks_runs_every_task_once_in_order_and_raises_what_a_task_raised():
    from minivae.kernels import threads
    for n_tasks, n_threads in [(0, 2), (1, 2), (5, 1), (7, 2), (9, 3)]:
        started = []
        threads.run_tasks([lambda i=i: started.append(i) for i in range(n_tasks)], n_threads)
        assert sorted(started) == list(range(n_tasks))
        if n_threads == 1:
            assert started == list(range(n_tasks))
    ran = []

    def fail():
        raise ValueError("task 1")

    with pytest.raises(ValueError, match="task 1"):
        threads.run_tasks([lambda: ran.append(0), fail, lambda: ran.append(2)], 2)
    assert sorted(ran) == [0, 2]  # the others still ran


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_concurrent_products_are_each_products_own_numbers(dtype, monkeypatch):
    """gemm_concurrent (a dense layer's backward: xᵀ g and g Wᵀ at once) gives each product the numbers
    gemm gives it alone, on one thread or two; on two, the first runs whole and the second in chunks."""
    from minivae.kernels import threads
    rng = np.random.default_rng(12)
    monkeypatch.setattr(K.gemm, "GEMM_ROUTE", "blas")
    tasks, blas_threads = [], []
    run_tasks = threads.run_tasks
    get_blas_threads = threads._blas_functions()[1]
    monkeypatch.setattr(threads, "run_tasks", lambda t, k: (tasks.append(len(t)), blas_threads.append(get_blas_threads()),
                                                            run_tasks(t, k)))
    for M, K_, N in [(100, 33, 21), (3, 5, 7), (61, 24, 40)]:
        x, g, W = random(rng, (M, K_), dtype), random(rng, (M, N), dtype), random(rng, (K_, N), dtype)
        products = [(x, True, g, False, ("x", "g")), (g, False, W, True, ("g", "W"))]
        monkeypatch.setattr(threads, "THREADS", 1)
        alone = [K.gemm.gemm(*product[:4], None, False, product[4]) for product in products]
        np.testing.assert_allclose(alone[0], x.T.astype(np.float64) @ g, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(alone[1], g.astype(np.float64) @ W.T, rtol=1e-4, atol=1e-4)
        for n_threads in (1, 2):
            monkeypatch.setattr(threads, "THREADS", n_threads)
            monkeypatch.setattr(threads, "PARALLEL_MIN_FLOPS", 1)
            monkeypatch.setattr(K.gemm, "BLAS_MIN_ROWS", 12)
            tasks.clear()
            together = K.gemm.gemm_concurrent(products)
            for one, other in zip(together, alone):
                np.testing.assert_array_equal(one, other)
            if n_threads == 1 or not threads.blas_can_split():
                assert tasks == []
            else:  # the first whole, the second in as many chunks as a split product, BLAS on one thread
                assert tasks == [1 + len(threads.chunk_bounds(M, 2, 12, K.gemm.BLAS_ROW_ALIGN)) if M >= 24 else 2]
                assert blas_threads[-1] == 1


def test_an_iwae_training_step_on_two_threads_gives_the_numbers_of_one(monkeypatch):
    """Every split at once (products, their concurrent pairs in the backward, the categorical passes,
    the bias passes), as an IWAE(k) decoder's many rows get them: the loss, every gradient and the
    parameters after two Adamax steps equal those of one thread, bit for bit."""
    from minivae import VAE
    from minivae.kernels import threads
    from minivae.objectives import IWAE
    from minivae.optim import make_optimizer
    rng = np.random.default_rng(13)
    x = rng.integers(0, 17, (30, 12)).astype(np.float32)
    monkeypatch.setattr(K.gemm, "GEMM_ROUTE", "blas")

    def train(n_threads):
        monkeypatch.setattr(threads, "THREADS", n_threads)
        model = VAE(12, 3, hidden=(40, 24), likelihood="categorical", num_values=17, seed=2, backend="numba")
        objective, optimizer = IWAE(7), make_optimizer("adamax", 1e-3, backend="numba")
        noise_rng = np.random.default_rng(5)
        for _ in range(2):
            loss, grads, _ = objective.loss_and_grads(model, x, objective.draw_noise(model, 30, noise_rng))
            optimizer.step(model.params, grads)
        return loss, grads, model.params

    one = train(1)
    for name, value in (("PARALLEL_MIN_FLOPS", 1), ("PARALLEL_MIN_ELEMENTS", 1), ("PARALLEL_MIN_PASS", 1)):
        monkeypatch.setattr(threads, name, value)
    monkeypatch.setattr(K.gemm, "BLAS_MIN_ROWS", 12)
    tasks = []
    run_tasks = threads.run_tasks
    monkeypatch.setattr(threads, "run_tasks", lambda t, k: (tasks.append(k), run_tasks(t, k)))
    two = train(2)
    if threads.blas_can_split():
        assert tasks.count(2) > 10  # the splits ran on two threads (210 decoder rows: 7 samples of 30)
    assert two[0] == one[0]
    for key in one[1]:
        np.testing.assert_array_equal(two[1][key], one[1][key], err_msg=key)
        np.testing.assert_array_equal(two[2][key], one[2][key], err_msg=key)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_a_products_epilogue_sees_each_row_once_after_it_is_computed(n_threads, monkeypatch):
    """gemm's epilogue (a dense layer's bias and activation) runs on every chunk of a split product,
    after its rows are computed, and once on all rows of one that is not split; a dense layer whose
    pass rides on the product's chunks gives the numbers of one thread."""
    from minivae.kernels import threads
    rng = np.random.default_rng(14)
    x, W, b = random(rng, (100, 33), np.float32), random(rng, (33, 21), np.float32), random(rng, (21,), np.float32)
    monkeypatch.setattr(K.gemm, "GEMM_ROUTE", "blas")
    monkeypatch.setattr(threads, "THREADS", 1)
    product, layer = x @ W, K.dense_forward(x, W, b, "leaky_relu")[0]
    monkeypatch.setattr(threads, "THREADS", n_threads)
    monkeypatch.setattr(threads, "PARALLEL_MIN_FLOPS", 1)
    monkeypatch.setattr(K.gemm, "BLAS_MIN_ROWS", 12)
    for route in ("blas", "kernel"):
        monkeypatch.setattr(K.gemm, "GEMM_ROUTE", route)
        c = np.empty((100, 21), np.float32)
        seen, chunks = np.zeros((100, 21), np.float32), []

        def copy_rows(begin, end):
            seen[begin:end] += c[begin:end]
            chunks.append((begin, end))

        K.gemm.gemm(x, False, W, False, c, False, ("x", "W"), epilogue=copy_rows)
        np.testing.assert_allclose(seen, product, rtol=1e-5, atol=1e-5)  # each row once, after the product
        split = route == "blas" and n_threads == 2 and threads.blas_can_split()
        assert len(chunks) == (len(threads.chunk_bounds(100, 2, 12, K.gemm.BLAS_ROW_ALIGN)) if split else 1)
    monkeypatch.setattr(K.gemm, "GEMM_ROUTE", "blas")
    np.testing.assert_array_equal(K.dense_forward(x, W, b, "leaky_relu")[0], layer)


def test_helpers_sleep_when_there_is_no_work_and_start_again_in_a_forked_child():
    """A helper polls for SPIN_SECONDS after its work, then sleeps: an idle process uses no CPU. A child
    forked from a process with helpers starts its own (the parent's threads do not exist in it)."""
    import os
    import time

    from minivae.kernels import threads
    seen = np.zeros(64, int)

    def mark(begin, end):
        seen[begin:end] += 1

    threads.run_chunks(mark, 64, 2)
    # the helpers' polling ends after SPIN_SECONDS; OpenBLAS's own threads, if an earlier test ran a
    # product on them, poll for up to ~0.1 s after their last work: wait for both
    time.sleep(max(20 * threads.SPIN_SECONDS, 0.5))
    start = time.process_time()
    time.sleep(0.3)
    assert time.process_time() - start < 0.05  # CPU time of every thread of the process, asleep
    assert np.all(seen == 1)
    if not hasattr(os, "fork"):
        return
    pid = os.fork()
    if pid == 0:  # the child: split once more, exit 0 if every row was done once
        try:
            seen[:] = 0
            threads.run_chunks(mark, 64, 2)
            os._exit(0 if np.all(seen == 1) else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


@pytest.mark.parametrize("name", ["matmul", "matmul_nt", "matmul_tn"])
def test_blas_products_split_on_threads_match_one_thread(name, monkeypatch):
    from minivae.kernels import threads
    rng = np.random.default_rng(11)
    M, K_, N = 100, 33, 21
    x = random(rng, (M, K_) if name != "matmul_tn" else (K_, M), np.float32)
    w = random(rng, (K_, N) if name == "matmul" else (N, K_) if name == "matmul_nt" else (K_, N), np.float32)
    monkeypatch.setattr(K.gemm, "GEMM_ROUTE", "blas")
    monkeypatch.setattr(threads, "THREADS", 1)
    one = getattr(K, name)(x, w)
    monkeypatch.setattr(threads, "THREADS", 2)
    monkeypatch.setattr(threads, "PARALLEL_MIN_FLOPS", 1)
    monkeypatch.setattr(K.gemm, "BLAS_MIN_ROWS", 12)
    if not threads.blas_can_split():
        pytest.skip("BLAS's thread count cannot be set per thread here: products are not split")
    calls = []
    run_chunks = threads.run_chunks
    monkeypatch.setattr(threads, "run_chunks", lambda f, n, k, **o: (calls.append(n), run_chunks(f, n, k, **o)))
    two = getattr(K, name)(x, w)
    out = np.ones_like(two)
    getattr(K, name)(x, w, out=out, accumulate=True)
    assert len(calls) == 2
    np.testing.assert_array_equal(two, one)  # each row is the same product, split or not
    np.testing.assert_allclose(out, one + 1, rtol=1e-6, atol=1e-5)


def test_categorical_rejects_values_out_of_range():
    with pytest.raises(ValueError, match=r"x_int must lie in \[0, 4\)"):
        K.categorical_log_prob(np.zeros((1, 8)), np.array([[0, 4]]))
    with pytest.raises(ValueError, match="logits must have shape"):
        K.categorical_log_prob(np.zeros((1, 7)), np.array([[0, 1]]))


# --------------------------------------------------------------------------------------------------
# Optimizers
# --------------------------------------------------------------------------------------------------

ADAM_HYPER = dict(lr=0.01, beta1=0.8, beta2=0.9, eps=1e-6)
OPTIMIZERS = {  # kernel, reference, number of state arrays, hyperparameters
    "sgd": (K.sgd_update, ops.sgd_update, 1, dict(lr=0.1, momentum=0.9)),
    "adam": (K.adam_update, ops.adam_update, 2, ADAM_HYPER),
    "adamax": (K.adamax_update, ops.adamax_update, 2, ADAM_HYPER),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_steps_match_ops(name, dtype):
    kernel, twin, n_states, hyper = OPTIMIZERS[name]
    rng = np.random.default_rng(11)
    p = random(rng, (3, 5), dtype)
    p_ref = p.copy()
    states = [np.zeros_like(p) for _ in range(n_states)]
    states_ref = [np.zeros_like(p) for _ in range(n_states)]
    for t in range(1, 6):
        g = random(rng, (5, 3), dtype).T  # a non-contiguous gradient
        extra = {} if name == "sgd" else dict(t=t)
        kernel(p, g, *states, **hyper, **extra)
        twin(p_ref, g, *states_ref, **hyper, **extra)
    assert p.dtype == dtype
    # after 5 steps of size ~lr the parameters agree to rtol of their size
    assert_within(p, p_ref, np.abs(p_ref) + 1, 10 * RTOL[dtype])
    for s, s_ref in zip(states, states_ref):
        assert_within(s, s_ref, np.abs(s_ref) + 1e-3, 10 * RTOL[dtype])


def test_optimizer_first_steps_follow_pytorch_semantics():
    g = np.array([0.5, -2.0, 3.0])
    # Adam and Adamax: the first bias-corrected step moves every parameter by about lr * sign(g)
    for update in (K.adam_update, K.adamax_update, ops.adam_update, ops.adamax_update):
        p = np.zeros(3)
        update(p, g, np.zeros(3), np.zeros(3), lr=0.1, beta1=0.9, beta2=0.999, eps=1e-12, t=1)
        np.testing.assert_allclose(p, -0.1 * np.sign(g), rtol=1e-9)
    # SGD with momentum: v1 = g, v2 = momentum * g + g
    p, v = np.zeros(3), np.zeros(3)
    for _ in range(2):
        K.sgd_update(p, g, v, lr=0.1, momentum=0.5)
    np.testing.assert_allclose(p, -0.1 * (g + 1.5 * g), rtol=1e-15)
    # plain SGD needs no velocity
    p = np.ones(3)
    K.sgd_update(p, g, lr=0.1)
    np.testing.assert_allclose(p, 1 - 0.1 * g, rtol=1e-15)


def test_optimizers_refuse_arrays_they_cannot_update_in_place():
    p = np.zeros((4, 3)).T  # not C-contiguous: a flat view would be a copy
    with pytest.raises(ValueError, match="p must be C-contiguous"):
        K.adam_update(p, np.zeros((3, 4)), np.zeros((3, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="m must be a C-contiguous float64 array"):
        K.adam_update(np.zeros(3), np.zeros(3), np.zeros(4), np.zeros(3))
    with pytest.raises(ValueError, match="t must count steps from 1"):
        K.adamax_update(np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3), t=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ema_update_matches_ops(dtype):
    rng = np.random.default_rng(10)
    average, p = random(rng, (4, 5), dtype), random(rng, (4, 5), dtype)
    average_ref = average.copy()
    for decay in (0.0, 0.5, 0.999, 1.0):
        K.ema_update(average, p, decay)
        ops.ema_update(average_ref, p, decay)
        assert average.dtype == dtype
        assert_within(average, average_ref, np.abs(average_ref) + np.abs(p), 10 * RTOL[dtype])
    K.ema_update(average, p, 0.0)  # decay 0: the average becomes the parameter
    np.testing.assert_array_equal(average, p)
    with pytest.raises(ValueError, match="average must be C-contiguous"):
        K.ema_update(np.zeros((4, 3)).T, np.zeros((3, 4)), 0.5)
    with pytest.raises(ValueError, match="decay must be in"):
        K.ema_update(np.zeros(3), np.zeros(3), 1.5)


# --------------------------------------------------------------------------------------------------
# The route of each product: the kernel or BLAS, measured once per machine and shape
# --------------------------------------------------------------------------------------------------

@pytest.fixture
def fresh_routes(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(K.gemm, "_routes", None)
    monkeypatch.setattr(K.gemm, "GEMM_ROUTE", "auto")
    return tmp_path


def test_routes_are_measured_once_cached_on_disk_and_give_the_same_products(fresh_routes, monkeypatch):
    measured = []
    original = K.gemm.measure_route

    def counting(*args):
        measured.append(args)
        return original(*args)

    monkeypatch.setattr(K.gemm, "measure_route", counting)
    rng = np.random.default_rng(0)
    x, W = random(rng, (64, 40), np.float64), random(rng, (40, 24), np.float64)
    for _ in range(3):
        assert_within(K.matmul(x, W), x @ W, np.abs(x) @ np.abs(W), 1e-12)
    K.matmul(x[:50], W)  # 50 rows round up to the same 64-row decision
    assert len(measured) == 1
    path = K.gemm.routes_path()
    assert path.startswith(str(fresh_routes))
    saved = json.loads(open(path).read())
    assert saved == {K.gemm.route_key(False, False, 64, 40, 24, np.float64): K.gemm.product_route(
        False, False, 64, 40, 24, np.float64)}
    # a new process (here: a cleared memory) reads the file and measures nothing
    monkeypatch.setattr(K.gemm, "_routes", None)
    K.matmul(x, W)
    assert len(measured) == 1


@pytest.mark.parametrize("faster", ["kernel", "blas"])
def test_the_faster_route_is_chosen(fresh_routes, monkeypatch, faster):
    slow = {"kernel": K.gemm._kernel_product, "blas": K.gemm._blas_product}

    def slowed(function):
        def run(*args):
            time.sleep(0.002)
            return function(*args)
        return run

    other = "blas" if faster == "kernel" else "kernel"
    monkeypatch.setattr(K.gemm, f"_{other}_product", slowed(slow[other]))
    assert K.gemm.measure_route(False, True, K.gemm.route_key(False, True, 8, 8, 8, np.float32), np.float32) == faster


@pytest.mark.parametrize("route", ["kernel", "blas"])
def test_every_route_computes_the_same_products(route, monkeypatch):
    monkeypatch.setattr(K.gemm, "GEMM_ROUTE", route)
    rng = np.random.default_rng(5)
    for name, (kernel, reference, scale) in PRODUCTS.items():
        a, b = operands(name, 13, 9, 7, np.float64, rng)
        assert_within(kernel(a, b), reference(a, b), scale(a, b), 1e-12)
        out = random(rng, (13, 7), np.float64)
        start = out.copy()
        kernel(a, b, out=out, accumulate=True)
        assert_within(out, start + reference(a, b), np.abs(start) + scale(a, b), 1e-12)
    monkeypatch.setattr(K.gemm, "GEMM_ROUTE", "fastest")
    with pytest.raises(ValueError, match="must be 'auto', 'kernel' or 'blas'; got 'fastest'"):
        K.matmul(np.ones((2, 2)), np.ones((2, 2)))


def test_blas_runs_on_one_thread_in_every_chunk_and_is_set_back_after():
    """BLAS's thread count is global in OpenBLAS: a split product sets it to 1 for the whole split (in
    every chunk, on every thread), then back; with BLAS's own threads some chunks were cut at other
    rows, and the training of a fresh install was not reproducible."""
    from minivae.kernels import threads
    if not threads.blas_can_split():
        pytest.skip("BLAS's thread count cannot be read and set here: products are not split")
    set_threads, get_threads = threads._blas_functions()
    before = get_threads()
    seen = []
    threads.run_chunks_blas_single_threaded(lambda begin, end: seen.append(get_threads()), 8, 2)
    assert seen and set(seen) == {1}
    assert get_threads() == before

"""Tests for minivae.kernels: every numba kernel against its NumPy twin, in float64 and float32.

The first run compiles the kernels (about 8 s); numba caches the machine code in
minivae/__pycache__, so later runs take about a second. To keep compilation cheap the tests use
few dtypes and layouts, and cross block boundaries by shrinking the blocking parameters (they are
plain arguments of the kernels, so this compiles nothing new).
"""

import subprocess
import sys

import numpy as np
import pytest

from minivae import kernels as K

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
    "matmul": (K.matmul, K.matmul_numpy, lambda x, W: np.abs(x) @ np.abs(W)),
    "matmul_nt": (K.matmul_nt, K.matmul_nt_numpy, lambda g, W: np.abs(g) @ np.abs(W).T),
    "matmul_tn": (K.matmul_tn, K.matmul_tn_numpy, lambda x, g: np.abs(x).T @ np.abs(g)),
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
    return 2 * K.VECTOR_BYTES // np.dtype(dtype).itemsize


@pytest.mark.parametrize("name", PRODUCTS)
def test_products_cross_every_block_boundary(name, monkeypatch):
    """Tiny blocks (k-blocks of 8, row blocks of 8) on products with several whole tiles and a
    ragged border in every dimension; for g @ W.T both ways of transposing (W, or g and C)."""
    monkeypatch.setattr(K, "GEMM_B_PANEL_BYTES", 8 * 2 * K.VECTOR_BYTES)
    monkeypatch.setattr(K, "GEMM_MC", 8)
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
    monkeypatch.setattr(K, "GEMM_THREADS", 3)
    monkeypatch.setattr(K, "GEMM_PARALLEL_MIN_FLOPS", 0)
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
    assert_within(K.exp(x), K.exp_numpy(x), np.exp(x), 5e-16)  # within about 2 ulp
    special = np.array([-np.inf, np.inf, np.nan, -800.0, 710.0])
    np.testing.assert_array_equal(K.exp(special), [0.0, np.inf, np.nan, 0.0, np.inf])
    x32 = np.linspace(-87, 88, 1001, dtype=np.float32)  # normal float32 results
    assert K.exp(x32).dtype == np.float32
    np.testing.assert_allclose(K.exp(x32), np.exp(x32.astype(np.float64)), rtol=1e-7, atol=0)


# --------------------------------------------------------------------------------------------------
# Dense layer
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", list(K.ACTIVATION_CODES))
def test_dense_forward_and_backward_match_numpy(activation, dtype):
    rng = np.random.default_rng(5)
    rtol = RTOL[dtype]
    x, W, b = random(rng, (7, 65), dtype), random(rng, (65, 9), dtype, 0.3), random(rng, 9, dtype)
    a, cache = K.dense_forward(x, W, b, activation)
    a_ref, _ = K.dense_forward_numpy(x, W, b, activation)
    assert a.dtype == dtype and cache is a
    # every activation is 1-Lipschitz, so the error of h = x W + b bounds that of a
    assert_within(a, a_ref, np.abs(x) @ np.abs(W) + np.abs(b), rtol)

    da = random(rng, a.shape, dtype)
    dx, dW, db = K.dense_backward(da, x, a_ref, W, activation)
    dx_ref, dW_ref, db_ref = K.dense_backward_numpy(da, x, a_ref, W, activation)
    g = np.abs(da)  # |act'| <= 1
    assert dx.dtype == dW.dtype == db.dtype == dtype
    assert_within(dx, dx_ref, g @ np.abs(W).T, rtol)
    assert_within(dW, dW_ref, np.abs(x).T @ g, rtol)
    assert_within(db, db_ref, g.sum(axis=0), rtol)


def test_dense_backward_accumulates_and_skips_dx():
    rng = np.random.default_rng(6)
    x, W, b = (random(rng, shape, np.float64) for shape in [(5, 6), (6, 4), 4])
    a, cache = K.dense_forward(x, W, b, "leaky_relu", out=np.empty((5, 4)))
    da = random(rng, (5, 4), np.float64)
    dW0, db0 = random(rng, (6, 4), np.float64), random(rng, 4, np.float64)
    dW, db = dW0.copy(), db0.copy()
    dx, dW_out, db_out = K.dense_backward(da, x, cache, W, "leaky_relu", dW_out=dW, db_out=db,
                                          need_dx=False, accumulate=True)
    assert dx is None and dW_out is dW and db_out is db
    _, dW_ref, db_ref = K.dense_backward_numpy(da, x, cache, W, "leaky_relu")
    assert_within(dW, dW0 + dW_ref, np.abs(dW0) + np.abs(x).T @ np.abs(da), 1e-12)
    assert_within(db, db0 + db_ref, np.abs(db0) + np.abs(da).sum(axis=0), 1e-12)


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
def test_categorical_matches_numpy_including_extreme_logits(dtype):
    rng = np.random.default_rng(7)
    B, D, L = 3, 5, 17
    logits = random(rng, (B, D * L), dtype, 3.0)
    logits[0, :L] = rng.choice([-1e3, 1e3], L)  # one pixel of ±1000
    logits[1, L:2 * L] = -1e3  # all equal and very negative
    logits[2, 2 * L] = 1e3  # one huge logit
    x_int = rng.integers(0, L, (B, D))
    weight = random(rng, B, dtype)
    logp, dlogits = K.categorical_loglik_and_grad(logits, x_int, weight)
    logp_ref, dlogits_ref = K.categorical_loglik_and_grad_numpy(logits, x_int, weight)
    assert logp.dtype == dlogits.dtype == dtype and dlogits.shape == logits.shape
    assert np.all(np.isfinite(logp)) and np.all(np.isfinite(dlogits))
    rtol = RTOL[dtype]
    assert_within(logp, logp_ref, np.abs(logits).reshape(B, D, L).max(axis=2).sum(axis=1) + D, rtol)
    assert_within(dlogits, dlogits_ref, np.abs(weight)[:, None] * np.ones(D * L), rtol)
    # the gradient of each pixel sums to zero (softmax sums to one)
    pixel_sums = dlogits.reshape(B, D, L).sum(axis=2)
    assert_within(pixel_sums, np.zeros((B, D)), np.ones((B, D)), 10 * rtol)


def test_categorical_gradient_is_the_derivative_of_logp():
    """Central differences of logp against dlogits / weight, in float64, in the (B, D, L) layout."""
    rng = np.random.default_rng(8)
    logits = rng.standard_normal((2, 3, 4))
    x_int = rng.integers(0, 4, (2, 3))
    out = np.empty_like(logits)
    logp, dlogits = K.categorical_loglik_and_grad(logits, x_int, out=out)
    assert dlogits is out
    h = 1e-5
    for index in [(0, 0, 0), (0, 1, x_int[0, 1]), (1, 2, 3)]:
        up, down = logits.copy(), logits.copy()
        up[index] += h
        down[index] -= h
        numeric = (K.categorical_loglik_and_grad(up, x_int)[0][index[0]]
                   - K.categorical_loglik_and_grad(down, x_int)[0][index[0]]) / (2 * h)
        assert abs(numeric - dlogits[index]) < 1e-8


@pytest.mark.parametrize("dtype", DTYPES)
def test_categorical_loglik_alone_is_the_logp_of_the_fused_kernel(dtype):
    rng = np.random.default_rng(9)
    B, D, L = 4, 6, 17
    logits = random(rng, (B, D, L), dtype, 3.0)
    x_int = rng.integers(0, L, (B, D))
    logp = K.categorical_loglik(logits, x_int)
    assert logp.dtype == dtype and logp.shape == (B,)
    np.testing.assert_array_equal(logp, K.categorical_loglik_and_grad(logits, x_int)[0])
    assert_within(logp, K.categorical_loglik_numpy(logits, x_int),
                  np.abs(logits).max(axis=2).sum(axis=1) + D, RTOL[dtype])
    with pytest.raises(ValueError, match=r"x_int must lie in \[0, 17\)"):
        K.categorical_loglik(logits, x_int + L)


def test_categorical_rejects_values_out_of_range():
    with pytest.raises(ValueError, match=r"x_int must lie in \[0, 4\)"):
        K.categorical_loglik_and_grad(np.zeros((1, 8)), np.array([[0, 4]]))
    with pytest.raises(ValueError, match="logits must have shape"):
        K.categorical_loglik_and_grad(np.zeros((1, 7)), np.array([[0, 1]]))


# --------------------------------------------------------------------------------------------------
# Reparameterisation and KL
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_reparameterize_kl_and_backward_match_numpy(dtype):
    rng = np.random.default_rng(9)
    mu, logvar, eps, dz = (random(rng, (7, 5), dtype) for _ in range(4))
    dkl = random(rng, 7, dtype)
    rtol = RTOL[dtype]
    z, kl = K.reparameterize_kl(mu, logvar, eps)
    z_ref, kl_ref = K.reparameterize_kl_numpy(mu, logvar, eps)
    std = np.exp(0.5 * logvar.astype(np.float64))
    assert z.dtype == kl.dtype == dtype
    assert_within(z, z_ref, np.abs(mu) + std * np.abs(eps), rtol)
    assert_within(kl, kl_ref, 0.5 * (mu ** 2 + std ** 2 + 1 + np.abs(logvar)).sum(axis=1), rtol)
    dmu, dlogvar = K.reparameterize_kl_backward(dz, mu, logvar, eps, dkl)
    dmu_ref, dlogvar_ref = K.reparameterize_kl_backward_numpy(dz, mu, logvar, eps, dkl)
    assert_within(dmu, dmu_ref, np.abs(dz) + np.abs(dkl[:, None] * mu), rtol)
    dlogvar_scale = np.abs(dz * eps) * std + np.abs(dkl)[:, None] * (std ** 2 + 1)
    assert_within(dlogvar, dlogvar_ref, dlogvar_scale, rtol)


def test_reparameterize_kl_backward_is_the_derivative_of_the_forward():
    """L = Σ dz·z + Σ dkl·kl, differentiated numerically in one mu and one logvar, in float64."""
    rng = np.random.default_rng(10)
    mu, logvar, eps, dz = (rng.standard_normal((3, 2)) for _ in range(4))
    dkl = rng.standard_normal(3)

    def loss(mu, logvar):
        z, kl = K.reparameterize_kl(mu, logvar, eps)
        return np.sum(dz * z) + np.sum(dkl * kl)

    dmu, dlogvar = K.reparameterize_kl_backward(dz, mu, logvar, eps, dkl)
    h = 1e-6
    step = np.zeros_like(mu)
    step[1, 0] = h
    assert abs((loss(mu + step, logvar) - loss(mu - step, logvar)) / (2 * h) - dmu[1, 0]) < 1e-7
    assert abs((loss(mu, logvar + step) - loss(mu, logvar - step)) / (2 * h) - dlogvar[1, 0]) < 1e-7


def test_reparameterize_kl_rejects_mismatched_arrays():
    with pytest.raises(ValueError, match="eps must match mu"):
        K.reparameterize_kl(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((3, 2)))


# --------------------------------------------------------------------------------------------------
# Optimizers
# --------------------------------------------------------------------------------------------------

ADAM_HYPER = dict(lr=0.01, beta1=0.8, beta2=0.9, eps=1e-6)
OPTIMIZERS = {  # kernel, twin, number of state arrays, hyperparameters
    "sgd": (K.sgd_update, K.sgd_update_numpy, 1, dict(lr=0.1, momentum=0.9)),
    "adam": (K.adam_update, K.adam_update_numpy, 2, ADAM_HYPER),
    "adamax": (K.adamax_update, K.adamax_update_numpy, 2, ADAM_HYPER),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_steps_match_numpy(name, dtype):
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
    for update in (K.adam_update, K.adamax_update):
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
def test_ema_update_matches_numpy(dtype):
    rng = np.random.default_rng(10)
    average, p = random(rng, (4, 5), dtype), random(rng, (4, 5), dtype)
    average_ref = average.copy()
    for decay in (0.0, 0.5, 0.999, 1.0):
        K.ema_update(average, p, decay)
        K.ema_update_numpy(average_ref, p, decay)
        assert average.dtype == dtype
        assert_within(average, average_ref, np.abs(average_ref) + np.abs(p), 10 * RTOL[dtype])
    K.ema_update(average, p, 0.0)  # decay 0: the average becomes the parameter
    np.testing.assert_array_equal(average, p)
    with pytest.raises(ValueError, match="average must be C-contiguous"):
        K.ema_update(np.zeros((4, 3)).T, np.zeros((3, 4)), 0.5)
    with pytest.raises(ValueError, match="decay must be in"):
        K.ema_update(np.zeros(3), np.zeros(3), 1.5)

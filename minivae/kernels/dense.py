"""The dense layer a = f(x @ W + b) and its backward, with the bias and the activation fused into one pass.

Leaf operations :func:`minivae.ops.dense_forward` and :func:`minivae.ops.dense_backward`, with the
same arguments and the same cache (x, W, a): one matrix product (:mod:`minivae.kernels.gemm`), then
one pass over its output for the bias and the activation (NumPy makes three); when the product is
split over threads, each thread makes the pass over its own chunk of rows as soon as it has computed
them (the product's epilogue). The backward reads the activation's derivative off the output a,
fuses it with the bias gradient into one pass, then makes the two products, at once on two threads.
"""

import numpy as np
from numba import njit

from ..ops import LEAKY_RELU_SLOPE
from . import threads
from .exp import ELEMENTWISE, exp_scalar
from .gemm import check_float_array, check_out, gemm, gemm_concurrent

ACTIVATION_CODES = {"identity": 0, "relu": 1, "leaky_relu": 2, "tanh": 3, "sigmoid": 4}
_IDENTITY, _RELU, _LEAKY_RELU, _TANH, _SIGMOID = range(5)


def _activation_code(activation):
    if activation not in ACTIVATION_CODES:
        raise ValueError(f"activation must be one of {sorted(ACTIVATION_CODES)}; "
                         f"got {activation!r}")
    return ACTIVATION_CODES[activation]


@njit(**ELEMENTWISE, nogil=True)
def _bias_activation(h, b, act, slope, i_begin, i_end):
    """h[i, :] = act(h[i, :] + b) in place for the rows i_begin:i_end, one pass.

    The branch on the activation sits outside the loop over columns, so each inner loop is a plain
    elementwise loop that LLVM vectorises. tanh is left to the caller (NumPy's tanh is vectorised;
    a scalar tanh here would cost ~10 ns an element). Rows are independent: disjoint row ranges
    may run on threads at once (``nogil``), with the numbers of one call.
    """
    N = h.shape[1]
    for i in range(i_begin, i_end):
        row = h[i]
        if act == _RELU:
            for j in range(N):
                v = row[j] + b[j]
                row[j] = v if v > 0 else 0  # as np.where(v > 0, v, 0): NaN -> 0 like minivae.layers
        elif act == _LEAKY_RELU:
            for j in range(N):
                v = row[j] + b[j]
                row[j] = v if v > 0 else slope * v
        elif act == _SIGMOID:
            for j in range(N):
                v = row[j] + b[j]
                e = exp_scalar(-abs(np.float64(v)))  # exp of -|v| only: never overflows
                row[j] = 1.0 / (1.0 + e) if v >= 0 else e / (1.0 + e)
        else:  # identity, and tanh before np.tanh
            for j in range(N):
                row[j] = row[j] + b[j]


def dense_forward(x, W, b, activation="identity", slope=LEAKY_RELU_SLOPE):
    """a = f(x @ W + b): one matrix product, then bias and activation in one pass over its output.

    The compiled :func:`minivae.ops.dense_forward`: same arguments, same result, same cache.

    Parameters
    ----------
    x : (M, K) float32 or float64 array
    W : (K, N) array of the same dtype
    b : (N,) array of the same dtype
    activation : "identity", "relu", "leaky_relu", "tanh" or "sigmoid"
    slope : float ≥ 0, the leaky ReLU's slope

    Returns
    -------
    a : (M, N) array, the activation
    cache : (x, W, a): every supported activation has a derivative that is a function of its output
        (relu and leaky_relu: a > 0 iff the pre-activation is; tanh: 1 - a²; sigmoid: a (1 - a)),
        so no pre-activation is stored. Do not overwrite a before the backward.
    """
    act = _activation_code(activation)
    check_float_array("x", x, 2)
    check_float_array("W", W, 2)
    check_float_array("b", b, 1)
    if b.shape != (W.shape[1],) or b.dtype != W.dtype:
        raise ValueError(f"b must be a {W.dtype} array of shape ({W.shape[1]},) to match W; "
                         f"got {b.dtype} of shape {b.shape}")
    b = np.ascontiguousarray(b)
    slope = float(slope)
    M, N = x.shape[0], W.shape[1]

    def bias_activation(begin, end):
        """The pass over rows begin:end of a: on each chunk of a product split over threads, by its
        thread; over all rows of a product that was not split, split on its own from
        threads.PARALLEL_MIN_PASS numbers on."""
        if (begin, end) == (0, M):
            threads.run_chunks(lambda i, j: _bias_activation(a, b, act, slope, i, j), M,
                               threads.threads_for(M * N, threads.PARALLEL_MIN_PASS))
        else:
            _bias_activation(a, b, act, slope, begin, end)

    a = np.empty((M, N), x.dtype)
    gemm(x, False, W, False, a, False, ("x", "W"), epilogue=bias_activation)
    if act == _TANH:
        np.tanh(a, out=a)
    return a, (x, W, a)


@njit(**ELEMENTWISE)
def _activation_grad(da, a, act, slope, g, db, accumulate):
    """g = da * act'(a) and db (+)= Σ_rows g, in one pass over the rows.

    act' comes from the output a. db is a row of N numbers that stays in L1 while rows stream by.
    """
    M, N = da.shape
    if not accumulate:
        for j in range(N):
            db[j] = 0
    for i in range(M):
        d = da[i]
        y = a[i]
        gi = g[i]
        if act == _RELU:
            for j in range(N):
                gi[j] = d[j] if y[j] > 0 else 0
        elif act == _LEAKY_RELU:
            for j in range(N):
                gi[j] = d[j] if y[j] > 0 else slope * d[j]
        elif act == _TANH:
            for j in range(N):
                gi[j] = d[j] * (1 - y[j] * y[j])
        elif act == _SIGMOID:
            for j in range(N):
                gi[j] = d[j] * (y[j] * (1 - y[j]))
        else:
            for j in range(N):
                gi[j] = d[j]
        for j in range(N):
            db[j] += gi[j]


@njit(**ELEMENTWISE)
def _column_sums(g, db):
    """db[j] = Σ_i g[i, j], the rows added in their order, as NumPy's ``g.sum(axis=0)`` adds them (the
    same numbers, bit for bit) in half its time or less (0.29 against 0.44 ms at 3200 x 1088 float32)."""
    M, N = g.shape
    for j in range(N):
        db[j] = 0
    for i in range(M):
        gi = g[i]
        for j in range(N):
            db[j] += gi[j]


def dense_backward(da, cache, activation="identity", slope=LEAKY_RELU_SLOPE, need_dx=True):
    """Gradients of a = f(x @ W + b), with f' and the bias gradient fused into one pass.

    The compiled :func:`minivae.ops.dense_backward`. With h = x W + b and g = dL/dh = da · f'(h):
    dL/db = Σ_n g[n],  dL/dW = xᵀ g,  dL/dx = g Wᵀ.

    Parameters
    ----------
    da : (M, N) array, dL/da
    cache : (x, W, a) from :func:`dense_forward`
    activation, slope : as given to the forward
    need_dx : bool; False skips the product g Wᵀ (the first layer needs no dL/dx)

    Returns
    -------
    dx : (M, K) array, or None when need_dx is False
    dW : (K, N) array
    db : (N,) array
    """
    x, W, a = cache
    act = _activation_code(activation)
    check_float_array("da", da, 2)
    check_float_array("a", a, 2)
    if da.shape != a.shape or da.dtype != a.dtype:
        raise ValueError(f"da and a must have the same shape and dtype; got {da.shape} {da.dtype} "
                         f"and {a.shape} {a.dtype}")
    M, N = da.shape
    db = np.empty(N, da.dtype)
    if act == _IDENTITY and da.flags.c_contiguous:
        g = da  # f' = 1: g is da, only the bias sum remains
        _column_sums(g, db)
    else:
        g = np.empty((M, N), da.dtype)
        _activation_grad(np.ascontiguousarray(da), np.ascontiguousarray(a), act, float(slope), g, db, False)
    if not need_dx:
        return None, gemm(x, True, g, False, None, False, ("x", "da")), db
    # the two products are independent: on two threads, one computes xᵀ g while the other takes g Wᵀ
    dW, dx = gemm_concurrent([(x, True, g, False, ("x", "da")), (g, False, W, True, ("da", "W"))])
    return dx, dW, db

"""The categorical log-likelihood of integer data and its gradient, in one pass over the logits.

The compiled :func:`minivae.ops.categorical_log_prob`, with the same arguments and the same cache
(the unweighted gradient onehot(x) - softmax(l)). It is where a training step of the reference model
spends much of its time outside the matrix products (70 000 exps a step) and where an evaluation
spends most of its time.
"""

import numpy as np
from numba import njit, types
from numba.extending import overload

from . import threads
from .exp import ELEMENTWISE, exp_scalar, exp_scalar32
from .gemm import check_float_array


_PRODUCT_RESTART = 1e250  # a product of numbers in [1, L] is logged and restarted above this (L < 1e58)


def _exp_of(x):
    """exp(x) in the arithmetic of x (compiled code only: see its overload below)."""
    raise NotImplementedError


@overload(_exp_of)
def _exp_of_overload(x):
    """exp in the arithmetic of x: float32 logits take the float32 exp (8 SIMD lanes with AVX2), the
    others the float64 one."""
    if x == types.float32:
        return lambda x: exp_scalar32(x)
    return lambda x: exp_scalar(np.float64(x))


@njit(**ELEMENTWISE, nogil=True)
def _categorical_rows(logits, x_int, logp, dlogits, need_grad, b_begin, b_end):
    """logp and dlogits of rows b_begin:b_end of logits (B, D, L); see :func:`categorical_log_prob`.

    For each pixel (b, d), with z = logits[b, d] (L numbers), m = max z and s = Σ_l exp(z[l] - m):
    log softmax(z) = z - m - log s, and dlogits[b, d] = onehot(x[b, d]) - exp(z - m) / s.

    Loop order. A loop over the L = 17 values of one pixel is too short for LLVM's SIMD loops (they
    need 32 to 64 iterations, so a per-pixel loop ran one scalar exp at a time). So the block of one
    image, D x L, is copied transposed into t (L x D, in the dtype of the logits, the max taken on
    the way: one pass), and the exp runs along the D pixels (the second pass, in L1). The gradient is
    written once, transposed back. Arithmetic is in the dtype of the logits: float32 logits take the
    float32 exp, twice as many lanes as float64.

    Threads: no state is shared between rows, so disjoint row ranges can run at the same time
    (``nogil``: the threads of :func:`categorical_log_prob` call this on chunks of rows).
    """
    B, D, L = logits.shape
    zero = logits.dtype.type(0.0)
    one = logits.dtype.type(1.0)
    t = np.empty((L, D), logits.dtype)  # t[l, d] = logits[b, d, l], then exp(logits[b, d, l] - m[d])
    m = np.empty(D, logits.dtype)  # max_l logits[b, d, l]
    s = np.empty(D, logits.dtype)  # Σ_l exp(logits[b, d, l] - m[d]), then -1 / s
    for b in range(b_begin, b_end):
        z = logits[b]
        for d in range(D):
            zd = z[d]
            v = zd[0]
            t[0, d] = v
            md = v
            for l in range(1, L):
                v = zd[l]
                t[l, d] = v
                # never selects a NaN, but a NaN in a row still makes that row NaN through its exp
                md = v if v > md else md
            m[d] = md
            s[d] = zero
        for l in range(L):
            tl = t[l]
            for d in range(D):
                e = _exp_of(tl[d] - m[d])
                tl[d] = e
                s[d] += e
        # Σ_d log s[d] as the log of a product: one log per row instead of D (a scalar log costs
        # as much as twenty vectorised exps). Each s[d] lies in [1, L], so the float64 product is
        # only taken to its log and restarted when it passes _PRODUCT_RESTART, long before overflow.
        total = 0.0  # float64: a sum over D pixels
        product = 1.0
        for d in range(D):
            total += np.float64(z[d, x_int[b, d]] - m[d])
            product *= np.float64(s[d])
            if product > _PRODUCT_RESTART:
                total -= np.log(product)
                product = 1.0
            s[d] = -one / s[d]
        logp[b] = total - np.log(product)
        if not need_grad:  # log p only (need_grad False): dlogits is not written
            continue
        grad = dlogits[b]
        for d in range(D):
            gd = grad[d]
            sd = s[d]
            for l in range(L):
                gd[l] = t[l, d] * sd
            gd[x_int[b, d]] += one


def categorical_log_prob(logits, x_int, need_grad=True):
    """log p(x | logits) of integer data, one categorical per dimension, and its gradient, in one pass.

    Parameters
    ----------
    logits : (B, D * L) float32 or float64 array, L values per dimension
    x_int : (B, D) integer array, values in [0, L)
    need_grad : bool; False computes log p only (for evaluation): the gradient is not written

    Large batches (at least ``threads.PARALLEL_MIN_ELEMENTS`` logits, an IWAE decoder's 3200 rows)
    are split into chunks of rows on :func:`minivae.kernels.threads.thread_count` threads; the
    numbers do not depend on the split.

    Returns
    -------
    logp : (B,) array of the dtype of logits, Σ_d log softmax(logits[b, d])[x[b, d]]
    cache : (B, D * L) array onehot(x[b, d]) - softmax(logits[b, d]), or None when need_grad is False
    """
    logits, x_int, (B, D, L) = _check_categorical(logits, x_int)
    logp = np.empty(B, logits.dtype)
    grad = np.empty(logits.shape, logits.dtype) if need_grad else np.empty((0, D * L), logits.dtype)
    logits3, grad3 = np.ascontiguousarray(logits).reshape(B, D, L), grad.reshape(-1, D, L)
    n_threads = threads.threads_for(logits.size, threads.PARALLEL_MIN_ELEMENTS)
    threads.run_chunks(lambda begin, end: _categorical_rows(logits3, x_int, logp, grad3, need_grad, begin, end),
                       B, n_threads)
    return logp, grad if need_grad else None


@njit(**ELEMENTWISE, nogil=True)
def _scale_rows(grad, weight, b_begin, b_end):
    """grad[b] *= weight[b] for the rows b_begin:b_end, in place (disjoint row ranges may run on
    threads at once)."""
    for b in range(b_begin, b_end):
        w = weight[b]
        row = grad[b]
        for j in range(row.shape[0]):
            row[j] *= w


def categorical_log_prob_backward(dlogp, cache):
    """The compiled :func:`minivae.ops.categorical_log_prob_backward`: dL/dl = dL/dlogp · cache, the
    cache scaled in place and returned (call it once per forward).

    The same numbers as NumPy's ``cache *= dlogp.astype(cache.dtype)[:, None]``: dlogp is cast to the
    cache's dtype first, then each number is one multiplication. Big caches (at least
    ``threads.PARALLEL_MIN_PASS`` numbers, an IWAE(50) decoder's 3200 rows) are scaled in chunks of
    rows on :func:`minivae.kernels.threads.thread_count` threads.
    """
    grad = cache
    check_float_array("cache", grad, 2)
    weight = np.ascontiguousarray(np.asarray(dlogp).astype(grad.dtype, copy=False))
    if weight.shape != (grad.shape[0],):
        raise ValueError(f"dlogp must have shape ({grad.shape[0]},), one number per row of the cache; "
                         f"got {weight.shape}")
    if not grad.flags.c_contiguous:  # not a cache of categorical_log_prob: scale it as NumPy does
        grad *= weight[:, None]
        return grad
    n_threads = threads.threads_for(grad.size, threads.PARALLEL_MIN_PASS)
    threads.run_chunks(lambda begin, end: _scale_rows(grad, weight, begin, end), grad.shape[0], n_threads)
    return grad


def _check_categorical(logits, x_int):
    """logits and x_int (as a C-contiguous int64 array) checked, and (B, D, L)."""
    check_float_array("logits", logits, logits.ndim)
    x_int = np.asarray(x_int)
    if x_int.ndim != 2 or not np.issubdtype(x_int.dtype, np.integer):
        raise ValueError(f"x_int must be a 2-D integer array (B, D); got {x_int.dtype} of shape "
                         f"{x_int.shape}")
    B, D = x_int.shape
    if logits.ndim == 3:
        ok = logits.shape[:2] == (B, D)
        L = logits.shape[2]
    else:
        ok = logits.ndim == 2 and logits.shape[0] == B and D > 0 and logits.shape[1] % D == 0
        L = logits.shape[1] // D if ok else 0
    if not ok or L < 1:
        raise ValueError(f"logits must have shape (B, D * L) or (B, D, L) with (B, D) = "
                         f"{x_int.shape}, the shape of x_int; got {logits.shape}")
    if x_int.size and (x_int.min() < 0 or x_int.max() >= L):
        raise ValueError(f"x_int must lie in [0, {L}); "
                         f"got values in [{x_int.min()}, {x_int.max()}]")
    return logits, np.ascontiguousarray(x_int, dtype=np.int64), (B, D, L)

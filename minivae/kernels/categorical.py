"""The categorical log-likelihood of integer data and its gradient, in one pass over the logits.

The compiled :func:`minivae.ops.categorical_log_prob`, with the same arguments and the same cache
(the unweighted gradient onehot(x) - softmax(l)). It is where a training step of the reference model
spends much of its time outside the matrix products (70 000 exps a step) and where an evaluation
spends most of its time.
"""

import numpy as np
from numba import njit

from .exp import ELEMENTWISE, exp_scalar
from .gemm import check_float_array

@njit(**ELEMENTWISE)
def _categorical_kernel(logits, x_int, weight, logp, dlogits, need_grad):
    """logp and dlogits for logits (B, D, L); see :func:`categorical_log_prob`.

    For each pixel (b, d), with z = logits[b, d] (L numbers), m = max z and s = Σ_l exp(z[l] - m):
    log softmax(z) = z - m - log s, and dlogits[b, d] = w[b] (onehot(x[b, d]) - exp(z - m) / s).

    Loop order. A loop over the L = 17 values of one pixel is too short for LLVM's SIMD loops (they
    need 32 to 64 iterations, so a per-pixel loop ran one scalar exp at a time, 3x slower). So the
    block of one image, D x L, is first copied transposed into t (L x D, float64), and every loop
    that does arithmetic runs along the D pixels. The block sits in L1 for the whole image; the
    gradient is written once, transposed back.
    """
    B, D, L = logits.shape
    t = np.empty((L, D))  # t[l, d] = logits[b, d, l], then exp(logits[b, d, l] - m[d])
    m = np.empty(D)  # max_l logits[b, d, l]
    s = np.empty(D)  # Σ_l exp(logits[b, d, l] - m[d]), then -w / s
    for b in range(B):
        z = logits[b]
        w = np.float64(weight[b])
        for l in range(L):
            tl = t[l]
            for d in range(D):
                tl[d] = z[d, l]
        for d in range(D):
            m[d] = t[0, d]
            s[d] = 0.0
        for l in range(1, L):
            tl = t[l]
            for d in range(D):
                # never selects a NaN, but a NaN in a row still makes that row NaN through its exp
                m[d] = tl[d] if tl[d] > m[d] else m[d]
        for l in range(L):
            tl = t[l]
            for d in range(D):
                e = exp_scalar(tl[d] - m[d])
                tl[d] = e
                s[d] += e
        total = 0.0
        for d in range(D):
            total += (z[d, x_int[b, d]] - m[d]) - np.log(s[d])
            s[d] = -w / s[d]
        logp[b] = total
        if not need_grad:  # log p only (need_grad False): dlogits is not written
            continue
        grad = dlogits[b]
        for d in range(D):
            gd = grad[d]
            for l in range(L):
                gd[l] = t[l, d] * s[d]
            gd[x_int[b, d]] += w

def categorical_log_prob(logits, x_int, need_grad=True):
    """log p(x | logits) of integer data, one categorical per dimension, and its gradient, in one pass.

    Parameters
    ----------
    logits : (B, D * L) float32 or float64 array, L values per dimension
    x_int : (B, D) integer array, values in [0, L)
    need_grad : bool; False computes log p only (for evaluation): the gradient is not written

    Returns
    -------
    logp : (B,) array of the dtype of logits, Σ_d log softmax(logits[b, d])[x[b, d]]
    cache : (B, D * L) array onehot(x[b, d]) - softmax(logits[b, d]), or None when need_grad is False
    """
    logits, x_int, (B, D, L) = _check_categorical(logits, x_int)
    logp = np.empty(B, logits.dtype)
    grad = np.empty(logits.shape, logits.dtype) if need_grad else np.empty((0, D * L), logits.dtype)
    _categorical_kernel(np.ascontiguousarray(logits).reshape(B, D, L), x_int, np.ones(B, logits.dtype), logp,
                        grad.reshape(-1, D, L), need_grad)
    return logp, grad if need_grad else None


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

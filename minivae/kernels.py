"""Compiled CPU kernels (numba) for the hot loops of an MLP VAE, each with a plain NumPy twin.

This module is optional: ``import minivae`` never imports it, because importing numba takes time and
the library must stay usable with NumPy alone. The model imports it lazily behind a backend switch.

Every kernel here is a plain function on arrays. Next to it sits its NumPy twin (the same name with
``_numpy``), which is the reference the tests compare it with and the thing to read first: the
kernel computes the same numbers, only in fewer passes over memory.

What is here
------------
The products a linear layer ``y = x @ W + b`` needs, from one blocked, register-tiled routine:

* :func:`matmul`     ``x @ W``      (forward)
* :func:`matmul_nt`  ``g @ W.T``    (backward to the input)
* :func:`matmul_tn`  ``x.T @ g``    (backward to the weights)

Fused kernels (one pass where NumPy needs several):

* :func:`dense_forward` / :func:`dense_backward`  ``a = act(x @ W + b)`` and its gradients
* :func:`categorical_loglik_and_grad`  log-softmax likelihood of integer pixels and dL/dlogits
* :func:`reparameterize_kl` / :func:`reparameterize_kl_backward`  ``z = mu + std * eps``, KL term
* :func:`sgd_update`, :func:`adam_update`, :func:`adamax_update`  optimizer steps in place

Compilation is lazy: the first call with a new dtype compiles (seconds), and ``cache=True`` keeps
the machine code on disk for the next process. Every kernel accepts float32 and float64; all
arrays of one call share a dtype. Everything runs on one thread unless ``GEMM_THREADS`` says
otherwise (see there).
"""

import math

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

# --------------------------------------------------------------------------------------------------
# Matrix products
# --------------------------------------------------------------------------------------------------
#
# All three products are one routine, C (+)= op(A) @ op(B), where op(A) is ``a`` or ``a.T`` and
# op(B) is ``b`` or ``b.T`` (the ``transa``/``transb`` flags of BLAS). It is organised like
# GotoBLAS/BLIS, with twists that suit a compiler we can only steer from Python:
#
# * Micro-kernel: a 4 x 4 tile of C is sixteen *dot products* held in sixteen local scalars. The
#   loop over k runs along a row of op(A) and a column of op(B), both contiguous in memory, so LLVM
#   turns it into SIMD loads and fused multiply-adds with sixteen vector accumulators (it may
#   reorder the sum: see _GEMM_FASTMATH). Per step it loads 8 vectors and does 16 FMAs, which keeps
#   the FMA units busy. A BLAS micro-kernel instead keeps a tile of C in vector registers and
#   broadcasts elements of A; numba has no vector type, and a small local array is not promoted to
#   registers, so the dot-product form is the one LLVM compiles well from plain Python loops.
# * Its weak spot is a short k: each dot product ends with a sum across SIMD lanes. For short k and
#   long rows of C (``x.T @ g`` over a batch of 64, a layer with 16 inputs) an outer-product form
#   runs instead: 4 x 4 elements of op(A) in scalars, and a SIMD loop along a row of C.
# * Packing: the dot-product form needs rows of op(A) and columns of op(B) contiguous. Those that
#   are not (op(B) = W in ``x @ W``; both operands of ``x.T @ g``) are transposed block by block
#   into a small buffer first ("packing"): O(size of the operand) work against O(M N K) for the
#   product. Operands that already have the right layout are read in place.
# * Blocking over k: the sum over k is cut into blocks of ``kc`` so that a 4-row panel of A and a
#   4-column panel of B (4 * kc elements each, 8 KiB) sit in the L1 cache while they are used, and a
#   block of ``mc`` rows of A (mc * kc elements, 512 KiB) stays in the L2 cache while all column
#   panels of B stream past it.
# * Threads: the columns of C are split into one chunk per thread; each thread runs the serial
#   routine on its chunk (packing its own panels), so threads never write the same memory.

# Reassociation lets LLVM split each dot product over SIMD lanes (a different summation order than
# the textbook loop, as in any BLAS); contraction lets it fuse a*b + c into one FMA (one rounding
# instead of two). The rest of fastmath (no-NaN/no-inf assumptions) stays off: NaN and inf
# propagate.
_GEMM_FASTMATH = {"reassoc", "contract"}

# Blocking parameters, tuned on an AMD Zen 5 (48 KiB L1d, 1 MiB L2 per core). They are read at each
# call and passed to the kernels as plain arguments: the tests shrink them to cross every block
# boundary on tiny shapes without compiling anything new.
GEMM_KC_BYTES = 2048  # a k-block spans 2 KiB of a row: kc = 512 in float32, 256 in float64
GEMM_MC = 256  # rows of A per block: 256 * 2 KiB = 512 KiB, half the L2 cache
GEMM_NB_BYTES = 8192  # outer-product form: a 4 x nb block of C (<= 32 KiB) stays in L1
GEMM_K_OUTER = 64  # the outer-product form is used when k <= GEMM_K_OUTER ...
GEMM_N_OUTER = 128  # ... and the columns (per thread) number at least GEMM_N_OUTER
# Threads. Products of at least GEMM_PARALLEL_MIN_FLOPS flops (2 M N K) run on GEMM_THREADS threads
# (None: numba.get_num_threads()). The default is one thread: on the 2-core machine this was tuned
# on, whose cores were busy with other work, every parallel region waited ~12 ms for a descheduled
# thread (a 64 x 256 x 1088 product took 12 ms instead of 0.26 ms). Opt in on a quiet machine.
GEMM_THREADS = 1
GEMM_PARALLEL_MIN_FLOPS = 4_000_000  # thread launch costs ~10 us: not worth it below this


@njit(cache=True, fastmath=_GEMM_FASTMATH)
def _micro_4x4(a_rows, ia, ka, b_rows, jb, kb, kn, c, ci, cj, overwrite):
    """C[ci:ci+4, cj:cj+4] (+)= a_rows[ia:ia+4, ka:ka+kn] @ b_rows[jb:jb+4, kb:kb+kn].T.

    Sixteen dot products of length kn, the 4 x 4 register tile. Both row arrays are C-contiguous, so
    the loop over p reads eight unit-stride streams.
    """
    # Slicing first lets the loop index p start at 0: numba then knows it is never negative and
    # emits plain loads (no wraparound test), which LLVM can vectorise.
    a0 = a_rows[ia, ka:ka + kn]
    a1 = a_rows[ia + 1, ka:ka + kn]
    a2 = a_rows[ia + 2, ka:ka + kn]
    a3 = a_rows[ia + 3, ka:ka + kn]
    b0 = b_rows[jb, kb:kb + kn]
    b1 = b_rows[jb + 1, kb:kb + kn]
    b2 = b_rows[jb + 2, kb:kb + kn]
    b3 = b_rows[jb + 3, kb:kb + kn]
    zero = c.dtype.type(0.0)  # typed zero: a bare 0.0 would make float32 accumulators float64
    c00 = c01 = c02 = c03 = zero
    c10 = c11 = c12 = c13 = zero
    c20 = c21 = c22 = c23 = zero
    c30 = c31 = c32 = c33 = zero
    for p in range(kn):
        x0 = a0[p]
        x1 = a1[p]
        x2 = a2[p]
        x3 = a3[p]
        y0 = b0[p]
        y1 = b1[p]
        y2 = b2[p]
        y3 = b3[p]
        c00 += x0 * y0
        c01 += x0 * y1
        c02 += x0 * y2
        c03 += x0 * y3
        c10 += x1 * y0
        c11 += x1 * y1
        c12 += x1 * y2
        c13 += x1 * y3
        c20 += x2 * y0
        c21 += x2 * y1
        c22 += x2 * y2
        c23 += x2 * y3
        c30 += x3 * y0
        c31 += x3 * y1
        c32 += x3 * y2
        c33 += x3 * y3
    r0 = c[ci]
    r1 = c[ci + 1]
    r2 = c[ci + 2]
    r3 = c[ci + 3]
    if not overwrite:
        c00 += r0[cj]
        c01 += r0[cj + 1]
        c02 += r0[cj + 2]
        c03 += r0[cj + 3]
        c10 += r1[cj]
        c11 += r1[cj + 1]
        c12 += r1[cj + 2]
        c13 += r1[cj + 3]
        c20 += r2[cj]
        c21 += r2[cj + 1]
        c22 += r2[cj + 2]
        c23 += r2[cj + 3]
        c30 += r3[cj]
        c31 += r3[cj + 1]
        c32 += r3[cj + 2]
        c33 += r3[cj + 3]
    r0[cj] = c00
    r0[cj + 1] = c01
    r0[cj + 2] = c02
    r0[cj + 3] = c03
    r1[cj] = c10
    r1[cj + 1] = c11
    r1[cj + 2] = c12
    r1[cj + 3] = c13
    r2[cj] = c20
    r2[cj + 1] = c21
    r2[cj + 2] = c22
    r2[cj + 3] = c23
    r3[cj] = c30
    r3[cj + 1] = c31
    r3[cj + 2] = c32
    r3[cj + 3] = c33


@njit(cache=True, fastmath=_GEMM_FASTMATH)
def _edge_tile(a_rows, ia, ka, mi, b_rows, jb, kb, nj, kn, c, ci, cj, overwrite):
    """The same product for a ragged tile of mi x nj (< 4 x 4) at the border of C, dot by dot."""
    zero = c.dtype.type(0.0)
    for i in range(mi):
        a = a_rows[ia + i, ka:ka + kn]
        for j in range(nj):
            b = b_rows[jb + j, kb:kb + kn]
            s = zero
            for p in range(kn):
                s += a[p] * b[p]
            if overwrite:
                c[ci + i, cj + j] = s
            else:
                c[ci + i, cj + j] += s


@njit(cache=True)
def _transpose_block(src, r0, nr, c0, nc, dst):
    """dst[:nc, :nr] = src[r0:r0+nr, c0:c0+nc].T  (packing).

    Eight rows of src at a time: eight unit-stride read streams, and each row of dst receives eight
    consecutive elements (32 or 64 bytes) per visit. This measured 3-4x faster than 16 x 16 tiles
    with the same loop written element by element, and than one row at a time (strided writes).
    """
    r = 0
    while r + 8 <= nr:
        s0 = src[r0 + r, c0:c0 + nc]
        s1 = src[r0 + r + 1, c0:c0 + nc]
        s2 = src[r0 + r + 2, c0:c0 + nc]
        s3 = src[r0 + r + 3, c0:c0 + nc]
        s4 = src[r0 + r + 4, c0:c0 + nc]
        s5 = src[r0 + r + 5, c0:c0 + nc]
        s6 = src[r0 + r + 6, c0:c0 + nc]
        s7 = src[r0 + r + 7, c0:c0 + nc]
        for col in range(nc):
            d = dst[col, r:r + 8]
            d[0] = s0[col]
            d[1] = s1[col]
            d[2] = s2[col]
            d[3] = s3[col]
            d[4] = s4[col]
            d[5] = s5[col]
            d[6] = s6[col]
            d[7] = s7[col]
        r += 8
    for rr in range(r, nr):  # the last nr % 8 rows
        s = src[r0 + rr, c0:c0 + nc]
        for col in range(nc):
            dst[col, rr] = s[col]


@njit(cache=True)
def _gemm_dot(a, a_trans, b, b_trans, c, accumulate, j_begin, j_end, kc, mc):
    """Columns j_begin:j_end of C (+)= op(A) @ op(B), on one thread, in the dot-product form.

    a : (M, K) C-contiguous, or (K, M) if a_trans;  b : (K, N), or (N, K) if b_trans;  c : (M, N).
    Loop order, outermost first: k-blocks (pc), row blocks of A (ic), 4-column panels of B (jr),
    4-row panels of A (ir), then the micro-kernel's loop over k. A panel of B is reused for all the
    row panels of a block; the block of A is reused for all the column panels.
    """
    M = c.shape[0]
    K = a.shape[0] if a_trans else a.shape[1]
    nj_total = j_end - j_begin
    # Balance the k-blocks (K = 1088 with kc = 512 gives 3 blocks of ~363, not 512, 512, 64: a short
    # block pays the final sums over SIMD lanes for few multiply-adds), rounded up to 16 elements.
    n_kblocks = (K + kc - 1) // kc
    kc = min(K, ((K + n_kblocks - 1) // n_kblocks + 15) // 16 * 16)
    mc = min(mc, M)
    # Packing buffers: rows of op(A) and columns of op(B), each contiguous along k, sized to the
    # block actually used (rows padded to a longer kc measured up to 1.5x slower).
    a_pack = np.empty((mc if a_trans else 0, kc), c.dtype)
    b_pack = np.empty((nj_total if not b_trans else 0, kc), c.dtype)
    for pc in range(0, K, kc):
        kn = min(kc, K - pc)
        overwrite = pc == 0 and not accumulate
        if b_trans:  # op(B) = b.T: its columns are the rows of b, already contiguous
            b_rows, b_shift, kb = b, 0, pc
        else:  # op(B) = b: copy b[pc:pc+kn, j_begin:j_end] transposed
            _transpose_block(b, pc, kn, j_begin, nj_total, b_pack)
            b_rows, b_shift, kb = b_pack, j_begin, 0
        for ic in range(0, M, mc):
            mn = min(mc, M - ic)
            if a_trans:  # op(A) = a.T: copy a[pc:pc+kn, ic:ic+mn] transposed
                _transpose_block(a, pc, kn, ic, mn, a_pack)
                a_rows, a_shift, ka = a_pack, ic, 0
            else:
                a_rows, a_shift, ka = a, 0, pc
            for jr in range(j_begin, j_end, 4):
                nj = min(4, j_end - jr)
                for ir in range(ic, ic + mn, 4):
                    mi = min(4, ic + mn - ir)
                    if mi == 4 and nj == 4:
                        _micro_4x4(a_rows, ir - a_shift, ka, b_rows, jr - b_shift, kb, kn,
                                   c, ir, jr, overwrite)
                    else:
                        _edge_tile(a_rows, ir - a_shift, ka, mi, b_rows, jr - b_shift, kb, nj, kn,
                                   c, ir, jr, overwrite)


@njit(cache=True)
def _op_elem(a, trans, i, p):
    """op(A)[i, p]: the element of ``a`` or of ``a.T``."""
    return a[p, i] if trans else a[i, p]


@njit(cache=True, fastmath={"contract"})
def _outer_4x4(a, a_trans, i0, p0, b_rows, bj, c, cj, n):
    """C[i0:i0+4, cj:cj+n] += op(A)[i0:i0+4, p0:p0+4] @ b_rows[p0:p0+4, bj:bj+n]  (outer product).

    The 4 x 4 block of op(A) sits in sixteen scalars (broadcast to vector registers); the loop over
    j streams four rows of B and four rows of C with unit stride, and each element of C takes four
    multiply-adds per load and store. Only contraction is needed here: no sum is reordered.
    """
    a00 = _op_elem(a, a_trans, i0, p0)
    a01 = _op_elem(a, a_trans, i0, p0 + 1)
    a02 = _op_elem(a, a_trans, i0, p0 + 2)
    a03 = _op_elem(a, a_trans, i0, p0 + 3)
    a10 = _op_elem(a, a_trans, i0 + 1, p0)
    a11 = _op_elem(a, a_trans, i0 + 1, p0 + 1)
    a12 = _op_elem(a, a_trans, i0 + 1, p0 + 2)
    a13 = _op_elem(a, a_trans, i0 + 1, p0 + 3)
    a20 = _op_elem(a, a_trans, i0 + 2, p0)
    a21 = _op_elem(a, a_trans, i0 + 2, p0 + 1)
    a22 = _op_elem(a, a_trans, i0 + 2, p0 + 2)
    a23 = _op_elem(a, a_trans, i0 + 2, p0 + 3)
    a30 = _op_elem(a, a_trans, i0 + 3, p0)
    a31 = _op_elem(a, a_trans, i0 + 3, p0 + 1)
    a32 = _op_elem(a, a_trans, i0 + 3, p0 + 2)
    a33 = _op_elem(a, a_trans, i0 + 3, p0 + 3)
    b0 = b_rows[p0, bj:bj + n]
    b1 = b_rows[p0 + 1, bj:bj + n]
    b2 = b_rows[p0 + 2, bj:bj + n]
    b3 = b_rows[p0 + 3, bj:bj + n]
    c0 = c[i0, cj:cj + n]
    c1 = c[i0 + 1, cj:cj + n]
    c2 = c[i0 + 2, cj:cj + n]
    c3 = c[i0 + 3, cj:cj + n]
    for j in range(n):
        y0 = b0[j]
        y1 = b1[j]
        y2 = b2[j]
        y3 = b3[j]
        # Written as one chain starting from c so that it compiles to four FMAs.
        c0[j] = c0[j] + a00 * y0 + a01 * y1 + a02 * y2 + a03 * y3
        c1[j] = c1[j] + a10 * y0 + a11 * y1 + a12 * y2 + a13 * y3
        c2[j] = c2[j] + a20 * y0 + a21 * y1 + a22 * y2 + a23 * y3
        c3[j] = c3[j] + a30 * y0 + a31 * y1 + a32 * y2 + a33 * y3


@njit(cache=True, fastmath={"contract"})
def _outer_edge(a, a_trans, i0, mi, p0, kn, b_rows, bj, c, cj, n):
    """The same update for a ragged block of mi rows and kn steps of k (mi < 4 or kn < 4)."""
    for i in range(mi):
        ci = c[i0 + i, cj:cj + n]
        for q in range(kn):
            aiq = _op_elem(a, a_trans, i0 + i, p0 + q)
            bq = b_rows[p0 + q, bj:bj + n]
            for j in range(n):
                ci[j] += aiq * bq[j]


@njit(cache=True)
def _gemm_outer(a, a_trans, b, b_trans, c, accumulate, j_begin, j_end, nb):
    """Columns j_begin:j_end of C (+)= op(A) @ op(B), on one thread, in the outer-product form.

    For short k (the batch in ``x.T @ g``, a narrow layer in ``x @ W``) where dot products are too
    short to amortise their final sums over SIMD lanes. Needs rows of op(B) contiguous: when op(B)
    is ``b.T`` it is packed first. Loop order: column blocks of nb (a 4 x nb block of C stays in L1
    and a k x nb block of B in L2), 4-row panels of C, steps of 4 along k.
    """
    M = c.shape[0]
    K = a.shape[0] if a_trans else a.shape[1]
    n_jblocks = (j_end - j_begin + nb - 1) // nb
    nb = (j_end - j_begin + n_jblocks - 1) // n_jblocks  # balanced column blocks
    if b_trans:  # op(B) = b.T with b (N, K): pack rows of op(B) for our columns
        b_rows = np.empty((K, j_end - j_begin), c.dtype)
        _transpose_block(b, j_begin, j_end - j_begin, 0, K, b_rows)
        b_shift = j_begin
    else:
        b_rows = b
        b_shift = 0
    for jb in range(j_begin, j_end, nb):
        je = min(jb + nb, j_end)
        if not accumulate:
            for i in range(M):
                c[i, jb:je] = 0
        for ic in range(0, M, 4):
            mi = min(4, M - ic)
            for pc in range(0, K, 4):
                kn = min(4, K - pc)
                if mi == 4 and kn == 4:
                    _outer_4x4(a, a_trans, ic, pc, b_rows, jb - b_shift, c, jb, je - jb)
                else:
                    _outer_edge(a, a_trans, ic, mi, pc, kn, b_rows, jb - b_shift, c, jb, je - jb)


@njit(cache=True, parallel=True)
def _gemm_parallel(a, a_trans, b, b_trans, c, accumulate, use_outer, kc, mc, nb, n_chunks):
    """C (+)= op(A) @ op(B) with the columns of C split into n_chunks chunks, one per thread."""
    N = c.shape[1]
    n_panels = (N + 3) // 4
    for t in prange(n_chunks):
        j_begin = 4 * (t * n_panels // n_chunks)
        j_end = min(N, 4 * ((t + 1) * n_panels // n_chunks))
        if j_end > j_begin and use_outer:
            _gemm_outer(a, a_trans, b, b_trans, c, accumulate, j_begin, j_end, nb)
        elif j_end > j_begin:
            _gemm_dot(a, a_trans, b, b_trans, c, accumulate, j_begin, j_end, kc, mc)


_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _check_float_array(name, arr, ndim):
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy array; got {type(arr).__name__}")
    if arr.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64; got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D; got shape {arr.shape}")


def _check_out(out, shape, dtype, name="out"):
    if out is None:
        return
    if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != dtype:
        got = (out.shape, out.dtype) if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"{name} must be a {dtype} array of shape {shape}; got {got}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (kernels write it row by row)")


def _as_rows(arr, trans):
    """A C-contiguous array and a flag that describe the same operand: an F-contiguous array (such
    as a transposed view) becomes its C-contiguous transpose with the flag flipped; any other
    layout (strided slices) is copied."""
    if arr.flags.c_contiguous:
        return arr, trans
    if arr.flags.f_contiguous:
        return arr.T, not trans
    return np.ascontiguousarray(arr), trans


def _gemm(a, a_trans, b, b_trans, out, accumulate, names):
    """Check arguments, then C (+)= op(a) @ op(b) with the serial or the threaded kernel."""
    name_a, name_b = names
    _check_float_array(name_a, a, 2)
    _check_float_array(name_b, b, 2)
    if a.dtype != b.dtype:
        raise TypeError(f"{name_a} and {name_b} must have the same dtype; "
                        f"got {a.dtype} and {b.dtype}")
    M, K = a.shape[::-1] if a_trans else a.shape
    K_b, N = b.shape[::-1] if b_trans else b.shape
    if K != K_b:
        raise ValueError(f"inner dimensions differ: {name_a} gives {K}, {name_b} gives {K_b} "
                         f"(shapes {a.shape} and {b.shape})")
    if accumulate and out is None:
        raise ValueError("accumulate=True needs out= (the array to add the product into)")
    _check_out(out, (M, N), a.dtype)
    if out is not None and (np.may_share_memory(out, a) or np.may_share_memory(out, b)):
        raise ValueError("out must not overlap the operands (it is written while they are read)")
    c = np.empty((M, N), a.dtype) if out is None else out
    if M == 0 or N == 0:
        return c
    if K == 0:
        if not accumulate:
            c[...] = 0
        return c
    a, a_trans = _as_rows(a, a_trans)
    b, b_trans = _as_rows(b, b_trans)
    kc = GEMM_KC_BYTES // a.itemsize
    nb = GEMM_NB_BYTES // a.itemsize
    n_threads = numba.get_num_threads() if GEMM_THREADS is None else GEMM_THREADS
    n_chunks = n_threads if 2 * M * N * K >= GEMM_PARALLEL_MIN_FLOPS and N > 4 else 1
    # Each form's SIMD loop runs along one dimension: the dot-product form along k, the
    # outer-product form along the columns. The outer form wins when k is short and rows are long.
    use_outer = K <= GEMM_K_OUTER and N // n_chunks >= GEMM_N_OUTER
    if n_chunks > 1:
        _gemm_parallel(a, a_trans, b, b_trans, c, accumulate, use_outer, kc, GEMM_MC, nb, n_chunks)
    elif use_outer:
        _gemm_outer(a, a_trans, b, b_trans, c, accumulate, 0, N, nb)
    else:
        _gemm_dot(a, a_trans, b, b_trans, c, accumulate, 0, N, kc, GEMM_MC)
    return c


def matmul(x, W, out=None, accumulate=False):
    """Matrix product ``x @ W`` (the forward of a linear layer).

    Parameters
    ----------
    x : (M, K) float32 or float64 array, any strides
    W : (K, N) array of the same dtype, any strides
    out : (M, N) C-contiguous array of the same dtype, optional; written in place and returned
    accumulate : bool
        If True, add the product into ``out`` (``out += x @ W``) instead of overwriting it.

    Returns
    -------
    out : (M, N) array
    """
    return _gemm(x, False, W, False, out, accumulate, ("x", "W"))


def matmul_nt(g, W, out=None, accumulate=False):
    """Matrix product ``g @ W.T`` (the backward of a linear layer to its input).

    Parameters
    ----------
    g : (M, N) float32 or float64 array, dL/dy
    W : (K, N) array of the same dtype
    out : (M, K) C-contiguous array, optional;  accumulate : bool, add into ``out``

    Returns
    -------
    out : (M, K) array
    """
    return _gemm(g, False, W, True, out, accumulate, ("g", "W"))


def matmul_tn(x, g, out=None, accumulate=False):
    """Matrix product ``x.T @ g`` (the backward of a linear layer to its weights).

    Parameters
    ----------
    x : (M, K) float32 or float64 array
    g : (M, N) array of the same dtype
    out : (K, N) C-contiguous array, optional;  accumulate : bool, add into ``out``

    Returns
    -------
    out : (K, N) array
    """
    return _gemm(x, True, g, False, out, accumulate, ("x", "g"))


def matmul_numpy(x, W, out=None, accumulate=False):
    """NumPy twin of :func:`matmul`."""
    return _numpy_product(x @ W, out, accumulate)


def matmul_nt_numpy(g, W, out=None, accumulate=False):
    """NumPy twin of :func:`matmul_nt`."""
    return _numpy_product(g @ W.T, out, accumulate)


def matmul_tn_numpy(x, g, out=None, accumulate=False):
    """NumPy twin of :func:`matmul_tn`."""
    return _numpy_product(x.T @ g, out, accumulate)


def _numpy_product(product, out, accumulate):
    if out is None:
        return product
    if accumulate:
        out += product
    else:
        out[...] = product
    return out


# --------------------------------------------------------------------------------------------------
# A vectorisable exp
# --------------------------------------------------------------------------------------------------
#
# numba compiles np.exp on a scalar to a call into the C math library, one element at a time
# (~1.7 ns in float32, ~3.5 ns in float64 here), which LLVM cannot vectorise; NumPy's own exp is
# SIMD (~0.3-0.5 ns). The softmax of the categorical likelihood takes 70 000 exps per training
# step, so we write exp from arithmetic that LLVM vectorises (~0.45 ns an element, 1 ulp):
#
#     exp(x) = 2**n * exp(r),   n = round(x / ln 2),   r = x - n ln 2,   |r| <= ln(2) / 2,
#
# exp(r) by its Taylor series to degree 13 (truncation error < 5e-18 on that interval), and 2**n
# built directly from its IEEE-754 bits. float32 inputs are computed in float64 and rounded once.

_LOG2_E = 1.4426950408889634  # 1 / ln 2
_LN2_HI = 6.93147180369123816490e-01  # ln 2, last 32 mantissa bits zero: n * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10  # ln 2 - _LN2_HI (Cody-Waite splitting keeps r accurate)
_EXP_X_MIN = -745.2  # exp(x) < 2**-1075 below this: rounds to 0.0
_EXP_X_MAX = 709.79  # exp(x) > the largest float64 above this: inf
_EXP_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(14))  # 1 / k!
_FLOAT64_EXPONENT_BIAS = 1023
_FLOAT64_MANTISSA_BITS = 52

# Options of the elementwise kernels below. Contraction lets a*b + c become one FMA. error_model
# "numpy" makes x / 0 give inf or nan as in NumPy instead of raising ZeroDivisionError: without it
# numba tests every divisor, and a loop with a division no longer vectorises (Adam ran 5x slower).
_ELEMENTWISE = dict(cache=True, fastmath={"contract"}, error_model="numpy")


@intrinsic
def _float64_from_bits(typingctx, bits):
    """The float64 whose IEEE-754 bit pattern is the int64 ``bits`` (C's memcpy between the two).

    numba has no scalar bit-cast, so we ask LLVM for its ``bitcast``: no instruction at all.
    """
    if bits != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return types.float64(types.int64), codegen


@njit(**_ELEMENTWISE)
def _pow2(n):
    """2.0**n for an integral float64 n in [-1022, 1023], from its bits: exponent field n + 1023."""
    return _float64_from_bits((np.int64(n) + _FLOAT64_EXPONENT_BIAS) << _FLOAT64_MANTISSA_BITS)


@njit(**_ELEMENTWISE)
def _exp(x):
    """exp(x) in float64 for a float64 x, to about 1 ulp, written so that loops over it vectorise.

    NaN gives NaN, -inf gives 0 and +inf gives inf, like np.exp.
    """
    if x < _EXP_X_MIN:  # comparisons with NaN are False, so NaN passes through both clamps
        x = _EXP_X_MIN
    if x > _EXP_X_MAX:
        x = _EXP_X_MAX
    n = np.floor(x * _LOG2_E + 0.5)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = _EXP_TAYLOR[13]
    p = p * r + _EXP_TAYLOR[12]
    p = p * r + _EXP_TAYLOR[11]
    p = p * r + _EXP_TAYLOR[10]
    p = p * r + _EXP_TAYLOR[9]
    p = p * r + _EXP_TAYLOR[8]
    p = p * r + _EXP_TAYLOR[7]
    p = p * r + _EXP_TAYLOR[6]
    p = p * r + _EXP_TAYLOR[5]
    p = p * r + _EXP_TAYLOR[4]
    p = p * r + _EXP_TAYLOR[3]
    p = p * r + _EXP_TAYLOR[2]
    p = p * r + _EXP_TAYLOR[1]
    p = p * r + _EXP_TAYLOR[0]
    # n lies in [-1075, 1024]; 2**n is applied as two halves so that each is a normal float64:
    # results that are subnormal, or just below overflow, are rounded once, correctly.
    n_half = np.floor(0.5 * n)
    return (p * _pow2(n_half)) * _pow2(n - n_half)


def exp_numpy(x):
    """NumPy twin of the compiled exp (used in tests): ``np.exp`` in float64."""
    return np.exp(np.asarray(x, dtype=np.float64))


@njit(**_ELEMENTWISE)
def _exp_array(x, out):
    for i in range(x.size):
        out[i] = _exp(np.float64(x[i]))


def exp(x):
    """The compiled, vectorised exp applied to an array (for tests and benchmarks).

    Parameters
    ----------
    x : array, float32 or float64

    Returns
    -------
    array of the same shape and dtype
    """
    x = np.ascontiguousarray(x)
    _check_float_array("x", x, x.ndim)
    out = np.empty_like(x)
    _exp_array(x.reshape(-1), out.reshape(-1))
    return out


# --------------------------------------------------------------------------------------------------
# Dense layer: a = act(x @ W + b) and its backward, with the activation fused into one pass
# --------------------------------------------------------------------------------------------------

LEAKY_RELU_SLOPE = 0.01  # the slope for x < 0, PyTorch's default (as in minivae.layers)
ACTIVATION_CODES = {"identity": 0, "relu": 1, "leaky_relu": 2, "tanh": 3, "sigmoid": 4}
_IDENTITY, _RELU, _LEAKY_RELU, _TANH, _SIGMOID = range(5)


def _activation_code(activation):
    if activation not in ACTIVATION_CODES:
        raise ValueError(f"activation must be one of {sorted(ACTIVATION_CODES)}; "
                         f"got {activation!r}")
    return ACTIVATION_CODES[activation]


@njit(**_ELEMENTWISE)
def _bias_activation(h, b, act, slope):
    """h[i, :] = act(h[i, :] + b) in place, one pass.

    The branch on the activation sits outside the loop over columns, so each inner loop is a plain
    elementwise loop that LLVM vectorises. tanh is left to the caller (NumPy's tanh is vectorised;
    a scalar tanh here would cost ~10 ns an element).
    """
    M, N = h.shape
    for i in range(M):
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
                e = _exp(-abs(np.float64(v)))  # exp of -|v| only: never overflows
                row[j] = 1.0 / (1.0 + e) if v >= 0 else e / (1.0 + e)
        else:  # identity, and tanh before np.tanh
            for j in range(N):
                row[j] = row[j] + b[j]


def dense_forward(x, W, b, activation="identity", out=None):
    """a = act(x @ W + b): one matrix product, then bias and activation in one pass over its output.

    Parameters
    ----------
    x : (M, K) float32 or float64 array
    W : (K, N) array of the same dtype
    b : (N,) array of the same dtype
    activation : "identity", "relu", "leaky_relu" (slope 0.01), "tanh" or "sigmoid"
    out : (M, N) C-contiguous array, optional; receives a

    Returns
    -------
    a : (M, N) array, the activation
    cache : (M, N) array, what :func:`dense_backward` needs: ``a`` itself, not a copy. Every
        supported activation has a derivative that is a function of its output (relu and
        leaky_relu: a > 0 iff the pre-activation is; tanh: 1 - a²; sigmoid: a (1 - a)), so no
        pre-activation is stored. Do not overwrite ``a`` before the backward.
    """
    act = _activation_code(activation)
    _check_float_array("W", W, 2)
    _check_float_array("b", b, 1)
    if b.shape != (W.shape[1],) or b.dtype != W.dtype:
        raise ValueError(f"b must be a {W.dtype} array of shape ({W.shape[1]},) to match W; "
                         f"got {b.dtype} of shape {b.shape}")
    b = np.ascontiguousarray(b)
    a = _gemm(x, False, W, False, out, False, ("x", "W"))
    _bias_activation(a, b, act, LEAKY_RELU_SLOPE)
    if act == _TANH:
        np.tanh(a, out=a)
    return a, a


def dense_forward_numpy(x, W, b, activation="identity", out=None):
    """NumPy twin of :func:`dense_forward`, in the notation of :mod:`minivae.layers`."""
    _activation_code(activation)
    h = x @ W + b
    if activation == "relu":
        a = np.where(h > 0, h, 0)
    elif activation == "leaky_relu":
        a = np.where(h > 0, h, LEAKY_RELU_SLOPE * h)
    elif activation == "tanh":
        a = np.tanh(h)
    elif activation == "sigmoid":
        e = np.exp(-np.abs(h))
        a = np.where(h >= 0, 1 / (1 + e), e / (1 + e))
    else:
        a = h
    a = a.astype(x.dtype, copy=False)
    if out is not None:
        out[...] = a
        a = out
    return a, a


@njit(**_ELEMENTWISE)
def _activation_grad(da, a, act, slope, g, db, accumulate):
    """g = da * act'(a) and db (+)= Σ_rows g, in one pass over the rows.

    act' comes from the output a. db is a row of N numbers that stays in L1 while rows stream by.
    """
    M, N = da.shape
    if not accumulate:
        db[:] = 0
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


def dense_backward(da, x, a, W, activation="identity", dW_out=None, db_out=None, need_dx=True,
                   accumulate=False):
    """Gradients of a = act(x @ W + b), with act' and the bias gradient fused into one pass.

    With h = x W + b and g = dL/dh = da * act'(h):  dL/db = Σ_n g[n],  dL/dW = xᵀ g,  dL/dx = g Wᵀ.

    Parameters
    ----------
    da : (M, N) array, dL/da
    x : (M, K) array, the input of the forward
    a : (M, N) array, the cache returned by :func:`dense_forward` (its output)
    W : (K, N) array
    activation : the activation of the forward
    dW_out : (K, N) C-contiguous array, optional; receives dL/dW (or has it added, see accumulate)
    db_out : (N,) array, optional; receives dL/db
    need_dx : bool; False skips the product g Wᵀ (the first layer needs no dL/dx)
    accumulate : bool; add into dW_out and db_out instead of overwriting them

    Returns
    -------
    dx : (M, K) array, or None when need_dx is False
    dW : (K, N) array (dW_out if given)
    db : (N,) array (db_out if given)
    """
    act = _activation_code(activation)
    _check_float_array("da", da, 2)
    _check_float_array("a", a, 2)
    if da.shape != a.shape or da.dtype != a.dtype:
        raise ValueError(f"da and a must have the same shape and dtype; got {da.shape} {da.dtype} "
                         f"and {a.shape} {a.dtype}")
    M, N = da.shape
    if accumulate and (dW_out is None or db_out is None):
        raise ValueError("accumulate=True needs dW_out= and db_out= (the arrays to add into)")
    _check_out(db_out, (N,), da.dtype, "db_out")
    db = np.empty(N, da.dtype) if db_out is None else db_out
    if act == _IDENTITY and da.flags.c_contiguous:
        g = da  # act' = 1: g is da, only the bias sum remains
        if accumulate:
            db += da.sum(axis=0)
        else:
            np.sum(da, axis=0, out=db)
    else:
        g = np.empty((M, N), da.dtype)
        _activation_grad(np.ascontiguousarray(da), np.ascontiguousarray(a), act, LEAKY_RELU_SLOPE,
                         g, db, accumulate)
    dW = _gemm(x, True, g, False, dW_out, accumulate, ("x", "da"))
    dx = _gemm(g, False, W, True, None, False, ("da", "W")) if need_dx else None
    return dx, dW, db


def dense_backward_numpy(da, x, a, W, activation="identity", dW_out=None, db_out=None, need_dx=True,
                         accumulate=False):
    """NumPy twin of :func:`dense_backward`."""
    _activation_code(activation)
    if activation == "relu":
        g = np.where(a > 0, da, 0)
    elif activation == "leaky_relu":
        g = np.where(a > 0, da, LEAKY_RELU_SLOPE * da)
    elif activation == "tanh":
        g = da * (1 - a * a)
    elif activation == "sigmoid":
        g = da * (a * (1 - a))
    else:
        g = da
    g = g.astype(da.dtype, copy=False)
    dW = _numpy_product(x.T @ g, dW_out, accumulate)
    db = _numpy_product(g.sum(axis=0), db_out, accumulate)
    dx = g @ W.T if need_dx else None
    return dx, dW, db


# --------------------------------------------------------------------------------------------------
# Categorical likelihood of integer pixels: log-softmax and its gradient in one pass per pixel
# --------------------------------------------------------------------------------------------------

@njit(**_ELEMENTWISE)
def _categorical_kernel(logits, x_int, weight, logp, dlogits):
    """logp and dlogits for logits (B, D, L); see :func:`categorical_loglik_and_grad`.

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
        grad = dlogits[b]
        w = np.float64(weight[b])
        for l in range(L):
            tl = t[l]
            for d in range(D):
                tl[d] = z[d, l]
        m[:] = t[0]
        for l in range(1, L):
            tl = t[l]
            for d in range(D):
                # never selects a NaN, but a NaN in a row still makes that row NaN through its exp
                m[d] = tl[d] if tl[d] > m[d] else m[d]
        s[:] = 0.0
        for l in range(L):
            tl = t[l]
            for d in range(D):
                e = _exp(tl[d] - m[d])
                tl[d] = e
                s[d] += e
        total = 0.0
        for d in range(D):
            total += (z[d, x_int[b, d]] - m[d]) - np.log(s[d])
            s[d] = -w / s[d]
        for d in range(D):
            gd = grad[d]
            for l in range(L):
                gd[l] = t[l, d] * s[d]
            gd[x_int[b, d]] += w
        logp[b] = total


def categorical_loglik_and_grad(logits, x_int, weight=None, out=None):
    """log p(x | logits) of integer pixels, one categorical per pixel, and w · d log p / d logits.

    Parameters
    ----------
    logits : (B, D * L) or (B, D, L) float32 or float64 array, L values per pixel
    x_int : (B, D) integer array, values in [0, L)
    weight : (B,) array, optional (default 1); the gradient of row b is scaled by weight[b]
        (e.g. -1/B for the gradient of a mean negative log-likelihood)
    out : array like logits, optional; receives dlogits

    Returns
    -------
    logp : (B,) array of the dtype of logits, Σ_d log softmax(logits[b, d])[x[b, d]]
    dlogits : array of the shape of logits, weight[b] * (onehot(x[b, d]) - softmax(logits[b, d]))
    """
    _check_float_array("logits", logits, logits.ndim)
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
    if weight is None:
        weight = np.ones(B, logits.dtype)
    weight = np.ascontiguousarray(weight, dtype=logits.dtype)
    if weight.shape != (B,):
        raise ValueError(f"weight must have shape ({B},); got {weight.shape}")
    _check_out(out, logits.shape, logits.dtype)
    dlogits = np.empty(logits.shape, logits.dtype) if out is None else out
    logp = np.empty(B, logits.dtype)
    _categorical_kernel(np.ascontiguousarray(logits).reshape(B, D, L),
                        np.ascontiguousarray(x_int, dtype=np.int64), weight, logp,
                        dlogits.reshape(B, D, L))
    return logp, dlogits


def categorical_loglik_and_grad_numpy(logits, x_int, weight=None, out=None):
    """NumPy twin of :func:`categorical_loglik_and_grad`."""
    B, D = x_int.shape
    z = logits.reshape(B, D, -1)
    L = z.shape[2]
    shifted = z - z.max(axis=2, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=2, keepdims=True))
    logp = np.take_along_axis(log_softmax, x_int[:, :, None], axis=2)[:, :, 0].sum(axis=1)
    onehot = np.arange(L) == x_int[:, :, None]
    w = np.ones(B, logits.dtype) if weight is None else weight
    dlogits = (w[:, None, None] * (onehot - np.exp(log_softmax))).astype(logits.dtype, copy=False)
    if out is not None:
        out[...] = dlogits.reshape(logits.shape)
        return logp, out
    return logp, dlogits.reshape(logits.shape)


# --------------------------------------------------------------------------------------------------
# Reparameterisation and the KL term against N(0, I)
# --------------------------------------------------------------------------------------------------

@njit(**_ELEMENTWISE)
def _reparameterize_kl_kernel(mu, logvar, eps, z, kl):
    """z = mu + exp(logvar / 2) eps and kl[b] = ½ Σ_j (mu² + exp(logvar) - 1 - logvar), all (B, J).

    One SIMD loop over all B * J numbers (J = 16 latent dimensions is too short a loop to
    vectorise on its own), then a short loop adds up each row's KL terms.
    """
    B, J = mu.shape
    mu_flat, logvar_flat = mu.reshape(-1), logvar.reshape(-1)
    eps_flat, z_flat = eps.reshape(-1), z.reshape(-1)
    terms = np.empty(B * J)
    for i in range(B * J):
        lv = np.float64(logvar_flat[i])
        m = np.float64(mu_flat[i])
        std = _exp(0.5 * lv)
        z_flat[i] = m + std * eps_flat[i]
        terms[i] = m * m + std * std - 1.0 - lv  # std * std = exp(logvar)
    for b in range(B):
        total = 0.0
        for j in range(J):
            total += terms[b * J + j]
        kl[b] = 0.5 * total


def reparameterize_kl(mu, logvar, eps):
    """z = mu + exp(logvar / 2) * eps and KL(N(mu, diag exp(logvar)) || N(0, I)) per row: one pass.

    Parameters
    ----------
    mu, logvar, eps : (B, J) arrays of one float dtype

    Returns
    -------
    z : (B, J) array
    kl : (B,) array, ½ Σ_j (mu² + exp(logvar) - 1 - logvar)
    """
    mu, logvar, eps = _same_float_arrays(("mu", mu), ("logvar", logvar), ("eps", eps))
    z = np.empty_like(mu)
    kl = np.empty(mu.shape[0], mu.dtype)
    _reparameterize_kl_kernel(mu, logvar, eps, z, kl)
    return z, kl


def reparameterize_kl_numpy(mu, logvar, eps):
    """NumPy twin of :func:`reparameterize_kl`."""
    z = mu + np.exp(0.5 * logvar) * eps
    kl = 0.5 * np.sum(mu * mu + np.exp(logvar) - 1 - logvar, axis=1)
    return z, kl


@njit(**_ELEMENTWISE)
def _reparameterize_kl_backward_kernel(dz, mu, logvar, eps, dkl, dmu, dlogvar):
    B, J = mu.shape
    for b in range(B):
        k = np.float64(dkl[b])
        for j in range(J):
            lv = np.float64(logvar[b, j])
            half_std = 0.5 * _exp(0.5 * lv)
            dmu[b, j] = dz[b, j] + k * mu[b, j]
            dlogvar[b, j] = dz[b, j] * eps[b, j] * half_std + k * (2.0 * half_std * half_std - 0.5)


def reparameterize_kl_backward(dz, mu, logvar, eps, dkl):
    """Backward of :func:`reparameterize_kl` for L with dL/dz = dz and dL/dkl[b] = dkl[b].

    dL/dmu = dz + dkl · mu;   dL/dlogvar = dz · eps · ½ exp(logvar / 2) + dkl · ½ (exp(logvar) - 1).

    Parameters
    ----------
    dz, mu, logvar, eps : (B, J) arrays of one float dtype
    dkl : (B,) array

    Returns
    -------
    dmu, dlogvar : (B, J) arrays
    """
    dz, mu, logvar, eps = _same_float_arrays(("dz", dz), ("mu", mu), ("logvar", logvar),
                                             ("eps", eps))
    dkl = np.ascontiguousarray(dkl, dtype=mu.dtype)
    if dkl.shape != (mu.shape[0],):
        raise ValueError(f"dkl must have shape ({mu.shape[0]},); got {dkl.shape}")
    dmu = np.empty_like(mu)
    dlogvar = np.empty_like(mu)
    _reparameterize_kl_backward_kernel(dz, mu, logvar, eps, dkl, dmu, dlogvar)
    return dmu, dlogvar


def reparameterize_kl_backward_numpy(dz, mu, logvar, eps, dkl):
    """NumPy twin of :func:`reparameterize_kl_backward`."""
    k = dkl[:, None]
    dmu = dz + k * mu
    dlogvar = dz * eps * 0.5 * np.exp(0.5 * logvar) + k * 0.5 * (np.exp(logvar) - 1)
    return dmu, dlogvar


def _same_float_arrays(*named):
    """C-contiguous versions of (name, array) pairs that must share a 2-D shape and float dtype."""
    name0, first = named[0]
    _check_float_array(name0, first, 2)
    out = []
    for name, arr in named:
        _check_float_array(name, arr, 2)
        if arr.shape != first.shape or arr.dtype != first.dtype:
            raise ValueError(f"{name} must match {name0}: {first.dtype} of shape {first.shape}; "
                             f"got {arr.dtype} of shape {arr.shape}")
        out.append(np.ascontiguousarray(arr))
    return out


# --------------------------------------------------------------------------------------------------
# Optimizer steps, in place, one pass over each parameter (PyTorch's conventions)
# --------------------------------------------------------------------------------------------------
#
# The kernels work on flat views of the arrays. Each element is read and written once: NumPy needs
# five to eight passes (and temporaries) for the same update. Scalars are converted to the dtype of
# the parameter so that float32 parameters are updated in float32, as NumPy and PyTorch do.

@njit(**_ELEMENTWISE)
def _sgd_kernel(p, g, velocity, lr, momentum, use_momentum):
    lr = p.dtype.type(lr)
    momentum = p.dtype.type(momentum)
    if use_momentum:
        for i in range(p.size):
            v = momentum * velocity[i] + g[i]
            velocity[i] = v
            p[i] -= lr * v
    else:
        for i in range(p.size):
            p[i] -= lr * g[i]


@njit(**_ELEMENTWISE)
def _adam_kernel(p, g, m, v, step_size, beta1, beta2, eps, sqrt_bias_correction2):
    dt = p.dtype.type
    step_size, beta1, beta2 = dt(step_size), dt(beta1), dt(beta2)
    eps, c2 = dt(eps), dt(sqrt_bias_correction2)
    one = dt(1.0)
    for i in range(p.size):
        gi = g[i]
        mi = beta1 * m[i] + (one - beta1) * gi
        vi = beta2 * v[i] + (one - beta2) * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] -= step_size * mi / (np.sqrt(vi) / c2 + eps)


@njit(**_ELEMENTWISE)
def _adamax_kernel(p, g, m, u, step_size, beta1, beta2, eps):
    dt = p.dtype.type
    step_size, beta1, beta2, eps = dt(step_size), dt(beta1), dt(beta2), dt(eps)
    one = dt(1.0)
    for i in range(p.size):
        gi = g[i]
        mi = beta1 * m[i] + (one - beta1) * gi
        ui = max(beta2 * u[i], abs(gi) + eps)
        m[i] = mi
        u[i] = ui
        p[i] -= step_size * mi / ui


def _flat_state(p, g, states):
    """Flat views of p and the optimizer states (which must be C-contiguous to be updated in place)
    and a flat, contiguous g."""
    _check_float_array("p", p, p.ndim)
    if not p.flags.c_contiguous:
        raise ValueError("p must be C-contiguous: the update is written into it in place")
    g = np.asarray(g)
    if g.shape != p.shape:
        raise ValueError(f"g must have the shape of p {p.shape}; got {g.shape}")
    flats = []
    for name, s in states:
        if not isinstance(s, np.ndarray) or s.shape != p.shape or s.dtype != p.dtype \
                or not s.flags.c_contiguous:
            got = (s.dtype, s.shape) if isinstance(s, np.ndarray) else type(s).__name__
            raise ValueError(f"{name} must be a C-contiguous {p.dtype} array of shape {p.shape}; "
                             f"got {got}")
        flats.append(s.reshape(-1))
    return p.reshape(-1), np.ascontiguousarray(g, dtype=p.dtype).reshape(-1), flats


def sgd_update(p, g, velocity=None, lr=1e-2, momentum=0.0):
    """SGD with momentum, in place (PyTorch's convention): v = momentum v + g;  p -= lr v.

    Parameters
    ----------
    p : array of any shape, float32 or float64, C-contiguous; updated in place
    g : array of the shape of p, dL/dp
    velocity : array like p, the momentum buffer (zeros at the start), updated in place; may be None
        when momentum == 0
    lr, momentum : float
    """
    use_momentum = momentum != 0
    if use_momentum and velocity is None:
        raise ValueError("momentum != 0 needs velocity= (a zero-initialised array like p)")
    p_flat, g_flat, states = _flat_state(p, g, [("velocity", velocity)] if use_momentum else [])
    v_flat = states[0] if use_momentum else p_flat
    _sgd_kernel(p_flat, g_flat, v_flat, float(lr), float(momentum), use_momentum)


def sgd_update_numpy(p, g, velocity=None, lr=1e-2, momentum=0.0):
    """NumPy twin of :func:`sgd_update`."""
    if momentum != 0:
        velocity *= momentum
        velocity += g
        p -= lr * velocity
    else:
        p -= lr * g


def adam_update(p, g, m, v, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, t=1):
    """One Adam step in place, PyTorch's semantics.

    m = β1 m + (1 - β1) g;  v = β2 v + (1 - β2) g²;  p -= lr m̂ / (√v̂ + eps) with bias-corrected
    m̂ = m / (1 - β1ᵗ) and v̂ = v / (1 - β2ᵗ), evaluated as PyTorch does:
    p -= (lr / (1 - β1ᵗ)) m / (√v / √(1 - β2ᵗ) + eps).

    Parameters
    ----------
    p : array of any shape, float32 or float64, C-contiguous; updated in place
    g : array of the shape of p
    m, v : arrays like p, first and second moments (zeros at the start), updated in place
    lr, beta1, beta2, eps : float
    t : int >= 1, the number of this step
    """
    if t < 1:
        raise ValueError(f"t must count steps from 1; got {t}")
    p_flat, g_flat, (m_flat, v_flat) = _flat_state(p, g, [("m", m), ("v", v)])
    step_size = lr / (1 - beta1 ** t)
    _adam_kernel(p_flat, g_flat, m_flat, v_flat, float(step_size), float(beta1), float(beta2),
                 float(eps), float(np.sqrt(1 - beta2 ** t)))


def adam_update_numpy(p, g, m, v, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, t=1):
    """NumPy twin of :func:`adam_update`."""
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    step_size = lr / (1 - beta1 ** t)
    p -= step_size * m / (np.sqrt(v) / np.sqrt(1 - beta2 ** t) + eps)


def adamax_update(p, g, m, u, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, t=1):
    """One Adamax step in place, PyTorch's semantics.

    m = β1 m + (1 - β1) g;  u = max(β2 u, |g| + eps);  p -= lr / (1 - β1ᵗ) · m / u.

    Parameters
    ----------
    p : array of any shape, float32 or float64, C-contiguous; updated in place
    g : array of the shape of p
    m, u : arrays like p, first moment and infinity norm (zeros at the start), updated in place
    lr, beta1, beta2, eps : float
    t : int >= 1, the number of this step
    """
    if t < 1:
        raise ValueError(f"t must count steps from 1; got {t}")
    p_flat, g_flat, (m_flat, u_flat) = _flat_state(p, g, [("m", m), ("u", u)])
    _adamax_kernel(p_flat, g_flat, m_flat, u_flat, float(lr / (1 - beta1 ** t)), float(beta1),
                   float(beta2), float(eps))


def adamax_update_numpy(p, g, m, u, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, t=1):
    """NumPy twin of :func:`adamax_update`."""
    m *= beta1
    m += (1 - beta1) * g
    np.maximum(beta2 * u, np.abs(g) + eps, out=u)
    p -= (lr / (1 - beta1 ** t)) * m / u

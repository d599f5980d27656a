"""Compiled CPU kernels (numba) for the hot loops of an MLP VAE, each with a plain NumPy twin.

This module is optional: ``import minivae`` never imports it, because importing numba takes time and
the library must stay usable with NumPy alone. The model imports it lazily behind a backend switch.

Every kernel here is a plain function on arrays. Next to it sits its NumPy twin (the same name with
``_numpy``), which is the reference the tests compare it with and the thing to read first: the
kernel computes the same numbers, only in fewer passes over memory.

What is here
------------
The products a linear layer ``y = x @ W + b`` needs, from one blocked, register-tiled routine
written with explicit SIMD vectors (see "Matrix products" below):

* :func:`matmul`     ``x @ W``      (forward)
* :func:`matmul_nt`  ``g @ W.T``    (backward to the input)
* :func:`matmul_tn`  ``x.T @ g``    (backward to the weights)

Fused kernels (one pass where NumPy needs several):

* :func:`dense_forward` / :func:`dense_backward`  ``a = act(x @ W + b)`` and its gradients
* :func:`categorical_loglik_and_grad`  log-softmax likelihood of integer pixels and dL/dlogits
  (:func:`categorical_loglik`: the likelihood alone, for evaluation)
* :func:`reparameterize_kl` / :func:`reparameterize_kl_backward`  ``z = mu + std * eps``, KL term
* :func:`sgd_update`, :func:`adam_update`, :func:`adamax_update`  optimizer steps in place
* :func:`ema_update`  a moving average of the parameters (Polyak averaging) in place

Compilation is lazy: the first call with a new dtype compiles (seconds), and ``cache=True`` keeps
the machine code on disk for the next process. Every kernel accepts float32 and float64; all
arrays of one call share a dtype. Everything runs on one thread unless ``GEMM_THREADS`` says
otherwise (see there).
"""

import math

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

# --------------------------------------------------------------------------------------------------
# Matrix products
# --------------------------------------------------------------------------------------------------
#
# All three products compute C (+)= op(A) @ op(B), where op(A) is ``a`` or ``a.T`` and op(B) is
# ``b`` or ``b.T`` (the ``transa``/``transb`` flags of BLAS), with one routine organised like the
# micro-kernels of GotoBLAS/BLIS ("broadcast form"):
#
# * Micro-kernel: an 8 x 2v tile of C (v = SIMD lanes: 16 float32 or 8 float64 with AVX-512) lives
#   in sixteen vector registers for a whole k-block. Each step p loads two vectors of row p of
#   op(B), broadcasts the 8 numbers of column p of op(A) and does sixteen fused multiply-adds:
#   16 FMAs for 10 loads, and no sum across SIMD lanes at the end. numba has no vector type, and
#   LLVM does not keep a tile of C in registers when it is written as plain loops (a small array
#   lives in memory; sixteen scalar dot products, the other classic form, each end with a sum
#   across lanes that costs as much as the products when k is 64). So the vectors are spelled
#   out: a numba type for an LLVM vector and five one-line intrinsics (load, store, broadcast,
#   zero, fma); see :class:`_Vector`.
# * Operands in place: the form needs the rows of op(B) contiguous, which they are in ``x @ W``
#   and ``x.T @ g``; the 8 numbers of column p of op(A) are 8 scalar loads, and each row of ``a``
#   (or of ``a.T``, one row of ``a``) is read with unit stride as p advances. BLAS copies B into
#   contiguous panels first ("packing"); with a batch of 64 rows that copy measured slower than
#   reading W in place. ``g @ W.T`` transposes the smaller side first: W when it is small, else
#   g (the batch) and computes C.T = W @ g.T, then transposes C.T (a few percent of the product).
# * Blocking over k: the sum over k is cut into blocks so that the k x 2v panel of op(B) that the
#   tiles of one column panel share stays in the L1 cache while they use it; and over rows, so
#   that a block of op(A) stays in the L2 cache while the column panels stream past it.
# * Threads: the columns of C are split into one chunk per thread; each thread runs the serial
#   routine on its chunk, so threads never write the same memory.

# Blocking parameters, tuned on an AMD Zen 5 (48 KiB L1d, 1 MiB L2 per core). They are read at each
# call and passed to the kernels as plain arguments: the tests shrink them to cross every block
# boundary on tiny shapes without compiling anything new.
GEMM_B_PANEL_BYTES = 32768  # a k x 2v panel of op(B) (128 bytes a row) of <= 32 KiB stays in L1: kc = 256
GEMM_MC = 256  # rows of op(A) per block: 256 x 256 x 4 bytes = 256 KiB (512 KiB in float64), in L2
# Threads. Products of at least GEMM_PARALLEL_MIN_FLOPS flops (2 M N K) run on GEMM_THREADS threads
# (None: numba.get_num_threads()). The default is one thread: on the 2-core machine this was tuned
# on, whose cores were busy with other work, every parallel region waited ~12 ms for a descheduled
# thread (a 64 x 256 x 1088 product took 12 ms instead of 0.26 ms). Opt in on a quiet machine.
GEMM_THREADS = 1
GEMM_PARALLEL_MIN_FLOPS = 4_000_000  # thread launch costs ~10 us: not worth it below this


def _host_vector_bytes():
    """Width of the SIMD registers LLVM will use: 64 bytes with AVX-512, else 32 (AVX2, or two
    16-byte NEON/SSE registers per vector, which LLVM splits for us)."""
    try:
        import llvmlite.binding as llvm
        return 64 if llvm.get_host_cpu_features().get("avx512f", False) else 32
    except Exception:  # feature detection is not available on every platform
        return 32


VECTOR_BYTES = _host_vector_bytes()
_TILE_ROWS = 8  # rows of the broadcast micro-kernel's tile of C (8 x 2 vectors: 16 registers)


# --------------------------------------------------------------------------------------------------
# SIMD vectors for the micro-kernel
# --------------------------------------------------------------------------------------------------
#
# A numba ``@intrinsic`` is a function whose body is LLVM code written at compile time; each one
# here emits one or two LLVM instructions on the vector type ``<v x float>`` (or ``double``), which
# LLVM maps to one SIMD register and one instruction (vmovups, vbroadcastss, vfmadd231ps). The
# micro-kernel below is then ordinary numba code on sixteen such values.

class _Vector(types.Type):
    """A numba type for an LLVM vector ``<lanes x float>``: what one SIMD register holds."""

    def __init__(self, dtype, lanes):
        self.dtype, self.lanes = dtype, lanes
        super().__init__(name=f"Vector({dtype}, {lanes})")


@register_model(_Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def _vector_type(dtype):
    return _Vector(dtype, VECTOR_BYTES * 8 // dtype.bitwidth)


def _element_pointer(context, builder, signature, args):
    """Pointer to element i of a C-contiguous array counted in memory order (arr.flat[i])."""
    array = context.make_array(signature.args[0])(context, builder, args[0])
    index = context.cast(builder, args[1], signature.args[1], types.intp)
    return builder.gep(array.data, [index])


@intrinsic
def _vlanes(typingctx, arr):
    """The number of lanes of a vector of arr's dtype, as a constant."""
    lanes = _vector_type(arr.dtype).lanes

    def codegen(context, builder, signature, args):
        return context.get_constant(types.intp, lanes)

    return types.intp(arr), codegen


@intrinsic
def _vload(typingctx, arr, i):
    """The vector arr.flat[i:i + lanes] (arr C-contiguous; no alignment needed)."""
    vector = _vector_type(arr.dtype)

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature, args)
        pointer = builder.bitcast(pointer, context.get_value_type(vector).as_pointer())
        return builder.load(pointer, align=arr.dtype.bitwidth // 8)

    return vector(arr, i), codegen


@intrinsic
def _vstore(typingctx, arr, i, value):
    """arr.flat[i:i + lanes] = value."""
    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature, args)
        pointer = builder.bitcast(pointer, context.get_value_type(signature.args[2]).as_pointer())
        builder.store(args[2], pointer, align=arr.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(arr, i, value), codegen


@intrinsic
def _vsplat(typingctx, arr, i):
    """A vector whose every lane is arr.flat[i] (one broadcast load)."""
    vector = _vector_type(arr.dtype)

    def codegen(context, builder, signature, args):
        x = builder.load(_element_pointer(context, builder, signature, args))
        vector_ir = context.get_value_type(vector)
        undefined = ir.Constant(vector_ir, ir.Undefined)
        first = builder.insert_element(undefined, x, ir.Constant(ir.IntType(32), 0))
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), vector.lanes), [0] * vector.lanes)
        return builder.shuffle_vector(first, undefined, zeros)

    return vector(arr, i), codegen


@intrinsic
def _vzero(typingctx, arr):
    """A vector of zeros of arr's dtype."""
    vector = _vector_type(arr.dtype)

    def codegen(context, builder, signature, args):
        return ir.Constant(context.get_value_type(vector), None)

    return vector(arr), codegen


@intrinsic
def _vfma(typingctx, x, y, z):
    """x * y + z lane by lane, one rounding (LLVM's fma, a single instruction with FMA units)."""
    if not isinstance(x, _Vector) or y != x or z != x:
        return None

    def codegen(context, builder, signature, args):
        vector_ir = context.get_value_type(x)
        name = f"llvm.fma.v{x.lanes}f{x.dtype.bitwidth}"
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector_ir, [vector_ir] * 3),
                                                  name)
        return builder.call(function, args)

    return x(x, y, z), codegen


@njit(cache=True)
def _transpose_block(src, r0, nr, c0, nc, dst):
    """dst[:nc, :nr] = src[r0:r0+nr, c0:c0+nc].T  (the transposes of ``g @ W.T``).

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
def _micro_8xv2(a, ia, a_row_step, a_k_step, b, ib, ldb, kn, c, ic, ldc, load_c):
    """C[8 rows, 2 vectors] (+)= op(A)[8 rows, kn] @ op(B)[kn, 2 vectors], the tile in registers.

    Flat offsets into C-contiguous arrays: op(A)[r, p] is a.flat[ia + r a_row_step + p a_k_step],
    op(B)[p, :] starts at b.flat[ib + p ldb], and row r of the tile of C at c.flat[ic + r ldc].
    With load_c the tile starts from C (adding to it), otherwise from zero.
    """
    v = _vlanes(c)
    r1, r2, r3 = a_row_step, 2 * a_row_step, 3 * a_row_step
    r4, r5, r6, r7 = 4 * a_row_step, 5 * a_row_step, 6 * a_row_step, 7 * a_row_step
    if load_c:
        c00, c01 = _vload(c, ic), _vload(c, ic + v)
        c10, c11 = _vload(c, ic + ldc), _vload(c, ic + ldc + v)
        c20, c21 = _vload(c, ic + 2 * ldc), _vload(c, ic + 2 * ldc + v)
        c30, c31 = _vload(c, ic + 3 * ldc), _vload(c, ic + 3 * ldc + v)
        c40, c41 = _vload(c, ic + 4 * ldc), _vload(c, ic + 4 * ldc + v)
        c50, c51 = _vload(c, ic + 5 * ldc), _vload(c, ic + 5 * ldc + v)
        c60, c61 = _vload(c, ic + 6 * ldc), _vload(c, ic + 6 * ldc + v)
        c70, c71 = _vload(c, ic + 7 * ldc), _vload(c, ic + 7 * ldc + v)
    else:
        zero = _vzero(c)
        c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = zero
        c40 = c41 = c50 = c51 = c60 = c61 = c70 = c71 = zero
    for _ in range(kn):
        y0 = _vload(b, ib)
        y1 = _vload(b, ib + v)
        x = _vsplat(a, ia)
        c00, c01 = _vfma(x, y0, c00), _vfma(x, y1, c01)
        x = _vsplat(a, ia + r1)
        c10, c11 = _vfma(x, y0, c10), _vfma(x, y1, c11)
        x = _vsplat(a, ia + r2)
        c20, c21 = _vfma(x, y0, c20), _vfma(x, y1, c21)
        x = _vsplat(a, ia + r3)
        c30, c31 = _vfma(x, y0, c30), _vfma(x, y1, c31)
        x = _vsplat(a, ia + r4)
        c40, c41 = _vfma(x, y0, c40), _vfma(x, y1, c41)
        x = _vsplat(a, ia + r5)
        c50, c51 = _vfma(x, y0, c50), _vfma(x, y1, c51)
        x = _vsplat(a, ia + r6)
        c60, c61 = _vfma(x, y0, c60), _vfma(x, y1, c61)
        x = _vsplat(a, ia + r7)
        c70, c71 = _vfma(x, y0, c70), _vfma(x, y1, c71)
        ia += a_k_step
        ib += ldb
    _vstore(c, ic, c00)
    _vstore(c, ic + v, c01)
    _vstore(c, ic + ldc, c10)
    _vstore(c, ic + ldc + v, c11)
    _vstore(c, ic + 2 * ldc, c20)
    _vstore(c, ic + 2 * ldc + v, c21)
    _vstore(c, ic + 3 * ldc, c30)
    _vstore(c, ic + 3 * ldc + v, c31)
    _vstore(c, ic + 4 * ldc, c40)
    _vstore(c, ic + 4 * ldc + v, c41)
    _vstore(c, ic + 5 * ldc, c50)
    _vstore(c, ic + 5 * ldc + v, c51)
    _vstore(c, ic + 6 * ldc, c60)
    _vstore(c, ic + 6 * ldc + v, c61)
    _vstore(c, ic + 7 * ldc, c70)
    _vstore(c, ic + 7 * ldc + v, c71)


@njit(cache=True, fastmath={"contract"})
def _broadcast_edge(a_flat, a_row_step, a_k_step, b, c, m_tiles, j_begin, j_tiles, j_end, p_begin, kn,
                    load_c):
    """The ragged border of C that whole tiles do not cover: columns j_tiles:j_end of rows
    0:m_tiles, and columns j_begin:j_end of the rows after m_tiles. C (+)= op(A) @ b there over
    the k-block p_begin:p_begin+kn, one row of C at a time, the loop over columns innermost."""
    for i in range(c.shape[0]):
        j0 = j_tiles if i < m_tiles else j_begin
        row = c[i, j0:j_end]
        if not load_c:
            for j in range(j_end - j0):
                row[j] = 0
        for p in range(p_begin, p_begin + kn):
            x = a_flat[i * a_row_step + p * a_k_step]
            b_row = b[p, j0:j_end]
            for j in range(j_end - j0):
                row[j] += x * b_row[j]


@njit(cache=True)
def _gemm_broadcast(a, a_trans, b, c, accumulate, j_begin, j_end, kc, mc):
    """Columns j_begin:j_end of C (+)= op(A) @ b, on one thread, in the broadcast form.

    a : (M, K) C-contiguous, or (K, M) if a_trans;  b : (K, N) C-contiguous;  c : (M, N).
    Loop order, outermost first: k-blocks of kc (pc), row blocks of mc (ic), column panels of 2v
    (jr), 8-row tiles (ir), then the micro-kernel's loop over k. The k x 2v panel of b is reused by
    every tile of its column panel from L1; the mc x kc block of op(A) is reused from L2.
    """
    M, N = c.shape
    K = b.shape[0]
    a_flat = a.reshape(-1)
    # op(A)[i, p] = a_flat[i * a_row_step + p * a_k_step]
    a_row_step, a_k_step = (1, M) if a_trans else (K, 1)
    width = 2 * _vlanes(c)
    n_kblocks = (K + kc - 1) // kc
    kc = (K + n_kblocks - 1) // n_kblocks  # balanced k-blocks
    mc = max(_TILE_ROWS, mc // _TILE_ROWS * _TILE_ROWS)
    m_tiles = M // _TILE_ROWS * _TILE_ROWS  # rows covered by whole tiles
    j_tiles = j_begin + (j_end - j_begin) // width * width  # columns covered by whole tiles
    for pc in range(0, K, kc):
        kn = min(kc, K - pc)
        load_c = accumulate or pc > 0
        for ic in range(0, m_tiles, mc):
            for jr in range(j_begin, j_tiles, width):
                for ir in range(ic, min(ic + mc, m_tiles), _TILE_ROWS):
                    _micro_8xv2(a_flat, ir * a_row_step + pc * a_k_step, a_row_step, a_k_step,
                                b, pc * N + jr, N, kn, c, ir * N + jr, N, load_c)
        _broadcast_edge(a_flat, a_row_step, a_k_step, b, c, m_tiles, j_begin, j_tiles, j_end, pc, kn,
                        load_c)


@njit(cache=True, parallel=True)
def _gemm_parallel(a, a_trans, b, c, accumulate, kc, mc, n_chunks):
    """C (+)= op(A) @ b with the columns of C split into n_chunks chunks, one per thread."""
    N = c.shape[1]
    width = 2 * _vlanes(c)  # chunks of whole column panels
    n_panels = (N + width - 1) // width
    for t in prange(n_chunks):
        j_begin = width * (t * n_panels // n_chunks)
        j_end = min(N, width * ((t + 1) * n_panels // n_chunks))
        if j_end > j_begin:
            _gemm_broadcast(a, a_trans, b, c, accumulate, j_begin, j_end, kc, mc)


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
    n_threads = numba.get_num_threads() if GEMM_THREADS is None else GEMM_THREADS
    n_chunks = n_threads if 2 * M * N * K >= GEMM_PARALLEL_MIN_FLOPS and N > 4 else 1
    if not b_trans:
        _broadcast_product(a, a_trans, b, c, accumulate, n_chunks)
    elif K * N <= K * M + M * N and not N < 2 * _vector_lanes(c) <= M:
        # The broadcast form needs the rows of op(B) = b.T contiguous: transpose b first (unless
        # C is narrower than a tile and C.T is not: then C.T below runs in whole tiles).
        _broadcast_product(a, a_trans, _transpose(b), c, accumulate, n_chunks)
    else:
        # Cheaper when b is the larger operand (g @ W.T with a batch of 64 rows): compute
        # C.T = b @ op(A).T, which needs op(A).T row by row (a itself if a_trans), then transpose.
        c_t = np.empty((N, M), c.dtype)
        _broadcast_product(b, False, a if a_trans else _transpose(a), c_t, False, n_chunks)
        if accumulate:
            c += c_t.T
        else:
            _transpose_block(c_t, 0, N, 0, M, c)
    return c


def _vector_lanes(a):
    """v, the numbers of a's dtype in one SIMD vector."""
    return VECTOR_BYTES // a.itemsize


def _transpose(a):
    """a.T as a new C-contiguous array, copied block by block (see _transpose_block)."""
    a_t = np.empty(a.shape[::-1], a.dtype)
    _transpose_block(a, 0, a.shape[0], 0, a.shape[1], a_t)
    return a_t


def _broadcast_product(a, a_trans, b, c, accumulate, n_chunks):
    """C (+)= op(A) @ b in the broadcast form, on n_chunks threads."""
    kc = max(1, GEMM_B_PANEL_BYTES // (2 * VECTOR_BYTES))  # a k x 2v panel of b
    if n_chunks > 1:
        _gemm_parallel(a, a_trans, b, c, accumulate, kc, GEMM_MC, n_chunks)
    else:
        _gemm_broadcast(a, a_trans, b, c, accumulate, 0, c.shape[1], kc, GEMM_MC)


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
# Compile time. Every kernel here fills arrays with explicit loops, never with slice assignments
# (``s[:] = 0``, ``m[:] = t[0]``): numba compiles each of those through its general broadcasting
# machinery, and two of them took the first compile of the categorical kernel from 0.5 s to 2.4 s.


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
def _categorical_kernel(logits, x_int, weight, logp, dlogits, need_grad):
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
                e = _exp(tl[d] - m[d])
                tl[d] = e
                s[d] += e
        total = 0.0
        for d in range(D):
            total += (z[d, x_int[b, d]] - m[d]) - np.log(s[d])
            s[d] = -w / s[d]
        logp[b] = total
        if not need_grad:  # log p only (categorical_loglik): dlogits is not written
            continue
        grad = dlogits[b]
        for d in range(D):
            gd = grad[d]
            for l in range(L):
                gd[l] = t[l, d] * s[d]
            gd[x_int[b, d]] += w


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
    logits, x_int, (B, D, L) = _check_categorical(logits, x_int)
    if weight is None:
        weight = np.ones(B, logits.dtype)
    weight = np.ascontiguousarray(weight, dtype=logits.dtype)
    if weight.shape != (B,):
        raise ValueError(f"weight must have shape ({B},); got {weight.shape}")
    _check_out(out, logits.shape, logits.dtype)
    dlogits = np.empty(logits.shape, logits.dtype) if out is None else out
    logp = np.empty(B, logits.dtype)
    _categorical_kernel(np.ascontiguousarray(logits).reshape(B, D, L), x_int, weight, logp,
                        dlogits.reshape(B, D, L), True)
    return logp, dlogits


def categorical_loglik(logits, x_int):
    """log p(x | logits) of integer pixels, one categorical per pixel, without the gradient.

    The same pass as :func:`categorical_loglik_and_grad` without writing dlogits: for evaluation
    (the validation -ELBO, importance-weighted log-likelihoods), where it replaces NumPy's
    log-softmax over every value of every pixel.

    Parameters
    ----------
    logits : (B, D * L) or (B, D, L) float32 or float64 array, L values per pixel
    x_int : (B, D) integer array, values in [0, L)

    Returns
    -------
    logp : (B,) array of the dtype of logits, Σ_d log softmax(logits[b, d])[x[b, d]]
    """
    logits, x_int, (B, D, L) = _check_categorical(logits, x_int)
    logp = np.empty(B, logits.dtype)
    _categorical_kernel(np.ascontiguousarray(logits).reshape(B, D, L), x_int, np.ones(B, logits.dtype),
                        logp, np.empty((0, D, L), logits.dtype), False)
    return logp


def categorical_loglik_numpy(logits, x_int):
    """NumPy twin of :func:`categorical_loglik`."""
    return categorical_loglik_and_grad_numpy(logits, x_int)[0]


def _check_categorical(logits, x_int):
    """logits and x_int (as a C-contiguous int64 array) checked, and (B, D, L)."""
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
    return logits, np.ascontiguousarray(x_int, dtype=np.int64), (B, D, L)


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


@njit(**_ELEMENTWISE)
def _ema_kernel(average, p, decay):
    decay = p.dtype.type(decay)
    keep = p.dtype.type(1.0) - decay
    for i in range(p.size):
        average[i] = decay * average[i] + keep * p[i]


def ema_update(average, p, decay):
    """Exponential moving average of a parameter, in place: average = decay average + (1 - decay) p.

    One pass (NumPy's ``average *= decay; average += (1 - decay) * p`` makes three and a temporary).

    Parameters
    ----------
    average : array of any shape, float32 or float64, C-contiguous; updated in place
    p : array of the shape of average, the current parameter
    decay : float in [0, 1]
    """
    _check_float_array("average", average, average.ndim)
    if not average.flags.c_contiguous:
        raise ValueError("average must be C-contiguous: it is updated in place")
    p = np.asarray(p)
    if p.shape != average.shape:
        raise ValueError(f"p must have the shape of average {average.shape}; got {p.shape}")
    if not 0 <= decay <= 1:
        raise ValueError(f"decay must be in [0, 1]; got {decay!r}")
    _ema_kernel(average.reshape(-1), np.ascontiguousarray(p, dtype=average.dtype).reshape(-1), float(decay))


def ema_update_numpy(average, p, decay):
    """NumPy twin of :func:`ema_update`."""
    average *= decay
    average += (1 - decay) * p

"""Matrix products for a linear layer: C (+)= op(A) @ op(B), blocked and register-tiled with SIMD vectors.

* :func:`matmul`     ``x @ W``      (forward)
* :func:`matmul_nt`  ``g @ W.T``    (backward to the input)
* :func:`matmul_tn`  ``x.T @ g``    (backward to the weights)

The reference is NumPy's ``@`` (BLAS); the tests compare these with it on odd and strided shapes.
"""

import hashlib
import json
import os
import platform
import time

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from . import threads

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
# The BLAS route splits big products into chunks of rows on a few threads instead (see _blas_product
# and minivae.kernels.threads); a chunk has at least this many rows, for BLAS to run at full speed.
BLAS_MIN_ROWS = 24
# Chunks start at multiples of this many rows. BLAS computes the rows of a partial tile of C in
# another order, so a split inside a tile changes float32 products in the last bit (seen: a split at
# row 17). Measured with NumPy 2.4's OpenBLAS on a Zen 3: float32 products split at any multiple of 12
# rows, float64 ones at any multiple of 2, are bit for bit those of the whole product.
BLAS_ROW_ALIGN = 12
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


def check_float_array(name, arr, ndim):
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy array; got {type(arr).__name__}")
    if arr.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64; got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D; got shape {arr.shape}")


def check_out(out, shape, dtype, name="out"):
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


def gemm(a, a_trans, b, b_trans, out, accumulate, names, epilogue=None):
    """Check arguments, then C (+)= op(a) @ op(b): the hand-written kernel or BLAS, whichever
    :func:`product_route` says is faster for this shape on this machine.

    ``epilogue(begin, end)``, if given, is called on rows begin:end of C once they are computed (a
    layer's bias and activation): on each chunk of a product split over threads, by the thread that
    computed it while the rows are in its cache, else once on all rows, ``(0, M)``.
    """
    M, K, N = _check_product(a, a_trans, b, b_trans, out, accumulate, names)
    c = np.empty((M, N), a.dtype) if out is None else out
    if M == 0 or N == 0:
        pass
    elif K == 0:
        if not accumulate:
            c[...] = 0
    elif product_route(a_trans, b_trans, M, K, N, a.dtype) == "blas":
        return _blas_product(a, a_trans, b, b_trans, c, accumulate, epilogue)
    else:
        _kernel_product(a, a_trans, b, b_trans, c, accumulate)
    if epilogue is not None:
        epilogue(0, M)
    return c


def _check_product(a, a_trans, b, b_trans, out, accumulate, names):
    """(M, K, N) of C = op(a) @ op(b), after checking the operands and ``out``."""
    name_a, name_b = names
    check_float_array(name_a, a, 2)
    check_float_array(name_b, b, 2)
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
    check_out(out, (M, N), a.dtype)
    if out is not None and (np.may_share_memory(out, a) or np.may_share_memory(out, b)):
        raise ValueError("out must not overlap the operands (it is written while they are read)")
    return M, K, N


def gemm_concurrent(products):
    """C = op(a) @ op(b) for independent products at once (a backward's xᵀ g and g Wᵀ): a list of C.

    ``products`` is a list of ``(a, a_trans, b, b_trans, names)``, as :func:`gemm` takes them (new
    outputs, nothing accumulated). On one thread, or when a product is small or does not run on BLAS,
    they run one after the other through :func:`gemm`. Otherwise every product is a task for the
    threads of :func:`threads.run_tasks`: the first whole, the others cut into chunks of rows as
    :func:`_blas_product` cuts them. One thread computes the first product while the others take the
    chunks, and whoever is free takes the next chunk. The first product is the one to give whole: a
    weight gradient xᵀ g split by rows makes every chunk copy ("pack") all of g, 14 MB in an IWAE(50)
    decoder, where g Wᵀ's chunks each read only their rows of g.

    Every C has the numbers :func:`gemm` gives it alone, at any thread count: each is computed by BLAS
    on one thread, whole or in chunks of rows cut at multiples of ``BLAS_ROW_ALIGN``.
    """
    shapes = [_check_product(a, a_trans, b, b_trans, None, False, names)
              for a, a_trans, b, b_trans, names in products]
    n_threads = threads.threads_for(sum(2 * M * K * N for M, K, N in shapes), threads.PARALLEL_MIN_FLOPS)
    if (n_threads == 1 or len(products) < 2 or min(M * K * N for M, K, N in shapes) == 0
            or not threads.blas_can_split()
            or any(product_route(a_trans, b_trans, M, K, N, a.dtype) != "blas"
                   for (a, a_trans, b, b_trans, _), (M, K, N) in zip(products, shapes))):
        return [gemm(a, a_trans, b, b_trans, None, False, names) for a, a_trans, b, b_trans, names in products]
    outputs, tasks = [], []
    for i, ((a, a_trans, b, b_trans, _), (M, K, N)) in enumerate(zip(products, shapes)):
        op_a, op_b = (a.T if a_trans else a), (b.T if b_trans else b)
        c = np.empty((M, N), a.dtype)
        outputs.append(c)
        bounds = [(0, M)] if i == 0 else \
            threads.chunk_bounds(M, n_threads, min_rows=BLAS_MIN_ROWS, align=BLAS_ROW_ALIGN)
        tasks += [lambda op_a=op_a, op_b=op_b, c=c, begin=begin, end=end:
                  np.matmul(op_a[begin:end], op_b, out=c[begin:end]) for begin, end in bounds]
    with threads.blas_on_one_thread():
        threads.run_tasks(tasks, n_threads)
    return outputs


def _blas_product(a, a_trans, b, b_trans, c, accumulate, epilogue=None):
    """C (+)= op(a) @ op(b) by NumPy's matmul (BLAS); transposes are views, BLAS reads them in place.

    BLAS runs on one thread (its thread count is set to 1 for the product, then back): the products
    of a model this size are too small for BLAS's threads, which on a machine busy with other work
    made a 0.4 ms product wait up to 37 ms for a descheduled thread. A product of at least
    ``threads.PARALLEL_MIN_FLOPS`` is split into chunks of rows of C instead, run on
    :func:`threads.thread_count` threads that take chunks as they come (see :mod:`.threads`); each
    row of C is the same product of the same numbers, split or not.
    """
    op_a, op_b = (a.T if a_trans else a), (b.T if b_trans else b)
    M, K = op_a.shape
    N = op_b.shape[1]

    def rows(begin, end):
        if accumulate:
            c[begin:end] += np.matmul(op_a[begin:end], op_b)
        else:
            np.matmul(op_a[begin:end], op_b, out=c[begin:end])
        if epilogue is not None:
            epilogue(begin, end)

    if not threads.blas_can_split():  # BLAS's threads cannot be set here: leave the product to BLAS
        rows(0, M)
        return c
    n_threads = threads.threads_for(2 * M * N * K, threads.PARALLEL_MIN_FLOPS) if M >= 2 * BLAS_MIN_ROWS else 1
    threads.run_chunks_blas_single_threaded(rows, M, n_threads, min_rows=BLAS_MIN_ROWS, align=BLAS_ROW_ALIGN)
    return c


def _kernel_product(a, a_trans, b, b_trans, c, accumulate):
    """C (+)= op(a) @ op(b) with the hand-written kernel, serial or threaded."""
    M, N = c.shape
    K = a.shape[0] if a_trans else a.shape[1]
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
    return gemm(x, False, W, False, out, accumulate, ("x", "W"))


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
    return gemm(g, False, W, True, out, accumulate, ("g", "W"))


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
    return gemm(x, True, g, False, out, accumulate, ("x", "g"))


# --------------------------------------------------------------------------------------------------
# The route of each product: the hand-written kernel or BLAS, whichever is faster here
# --------------------------------------------------------------------------------------------------
#
# The kernel above was tuned on an AMD Zen 5, where it beat OpenBLAS's AVX2 kernels on the model's
# shapes by 1.2-2.6x. It does not everywhere: on a Zen 3 (measured: 64 x 256 x 1088 float32 in
# 0.64 ms against BLAS's 0.42 ms, and 1.5-2x behind BLAS at 3200 rows) or on an Intel AVX-512
# machine, whose OpenBLAS runs its SkylakeX kernels, BLAS wins. With "auto" each product shape is
# timed once per machine, both ways, and runs the faster way from then on. The decisions are kept in
# a small JSON file beside numba's cache, named after the CPU, NumPy and numba, so a later process
# (or a test run) does not measure again.
#
# The default is "blas", not "auto": the two routes round differently, and timings taken on a busy
# machine pick differently (seen: a fresh install measured while another job ran sent five of the
# reference model's shapes to the kernel, and its test NLL came out 92.83 instead of 92.84). A
# course's numbers must not depend on the load when the package was first used.
#
# ``GEMM_ROUTE`` (start value: the environment variable MINIVAE_GEMM) chooses: "blas" (the default),
# "kernel" (the tests of the kernel itself, tutorial 08), or "auto" (measured, as above).

GEMM_ROUTE = os.environ.get("MINIVAE_GEMM", "blas")
ROUTE_MARGIN = 1.05  # the kernel takes a shape only when it is at least 5% faster: BLAS is the safe default
ROUTE_REPEATS = 3  # timings of each candidate per decision (the minimum counts), after one warm-up call
ROUTE_MIN_ROWS = 8  # row counts are rounded up to a power of two, from 8: a few decisions cover any batch
_routes = None  # key -> "kernel" | "blas", loaded from the cache file on first use
_route_memo = {}  # (a_trans, b_trans, M, K, N, dtype) -> route, for the products seen since _routes was loaded


def route_key(a_trans, b_trans, M, K, N, dtype):
    """The key of a product's route: transposes, the row count rounded up to a power of two, K, N, dtype."""
    rows = max(ROUTE_MIN_ROWS, 1 << (max(M, 1) - 1).bit_length())
    return f"{'T' if a_trans else 'N'}{'T' if b_trans else 'N'}:{rows}x{K}x{N}:{np.dtype(dtype).name}"


def product_route(a_trans, b_trans, M, K, N, dtype):
    """ "kernel" or "blas": how C = op(A) @ op(B) of this shape and dtype runs (see the comment above)."""
    if GEMM_ROUTE in ("kernel", "blas"):
        return GEMM_ROUTE
    if GEMM_ROUTE != "auto":
        raise ValueError(f"GEMM_ROUTE (MINIVAE_GEMM) must be 'auto', 'kernel' or 'blas'; got {GEMM_ROUTE!r}")
    exact = (a_trans, b_trans, M, K, N, dtype)
    route = _route_memo.get(exact) if _routes is not None else None
    if route is None:  # the hot path above looks up a tuple; building the key costs about 5 µs
        routes = _load_routes()
        key = route_key(a_trans, b_trans, M, K, N, dtype)
        if key not in routes:
            routes[key] = measure_route(a_trans, b_trans, key, dtype)
            _save_routes(routes)
        route = _route_memo[exact] = routes[key]
    return route


def measure_route(a_trans, b_trans, key, dtype):
    """Time the kernel and BLAS on random operands of the shape ``key`` names; the faster one's name."""
    rows, K, N = (int(n) for n in key.split(":")[1].split("x"))
    rng = np.random.default_rng(0)
    a = rng.standard_normal((K, rows) if a_trans else (rows, K)).astype(dtype)
    b = rng.standard_normal((N, K) if b_trans else (K, N)).astype(dtype)
    c = np.empty((rows, N), dtype)
    seconds = {}
    for name, product in (("kernel", _kernel_product), ("blas", _blas_product)):
        product(a, a_trans, b, b_trans, c, False)  # warm-up: compiles or loads the kernel
        best = float("inf")
        for _ in range(ROUTE_REPEATS):
            start = time.perf_counter()
            product(a, a_trans, b, b_trans, c, False)
            best = min(best, time.perf_counter() - start)
        seconds[name] = best
    return "kernel" if seconds["kernel"] * ROUTE_MARGIN < seconds["blas"] else "blas"


def routes_path():
    """The JSON file of this machine's routes: beside numba's cache, named after CPU, NumPy and numba."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            cpu = next((line.split(":", 1)[1].strip() for line in file if line.startswith("model name")), cpu)
    except OSError:
        pass
    fingerprint = f"{cpu}|{VECTOR_BYTES}|{os.cpu_count()}|numpy {np.__version__}|numba {numba.__version__}"
    digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
    folder = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(os.path.dirname(__file__), "__pycache__")
    return os.path.join(folder, f"minivae-gemm-routes-{digest}.json")


def _load_routes():
    global _routes
    if _routes is None:
        _route_memo.clear()
        try:
            with open(routes_path()) as file:
                loaded = json.load(file)
            _routes = {key: value for key, value in loaded.items() if value in ("kernel", "blas")}
        except (OSError, ValueError):
            _routes = {}
    return _routes


def _save_routes(routes):
    """Write the routes atomically; a read-only installation keeps them in memory only."""
    path = routes_path()
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(temporary, "w") as file:
            json.dump(routes, file, indent=0, sort_keys=True)
        os.replace(temporary, path)
    except OSError:
        try:
            os.remove(temporary)
        except OSError:
            pass

"""A vectorisable exp for the elementwise kernels, and the options those kernels compile with.

The reference is ``numpy.exp``; the tests compare :func:`exp` with it to 1 ulp.
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .gemm import check_float_array

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
ELEMENTWISE = dict(cache=True, fastmath={"contract"}, error_model="numpy")
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


@njit(**ELEMENTWISE)
def _pow2(n):
    """2.0**n for an integral float64 n in [-1022, 1023], from its bits: exponent field n + 1023."""
    return _float64_from_bits((np.int64(n) + _FLOAT64_EXPONENT_BIAS) << _FLOAT64_MANTISSA_BITS)


@njit(**ELEMENTWISE)
def exp_scalar(x):
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


# float32: the same method in float32 arithmetic (8 lanes per AVX2 vector instead of 4, and a
# polynomial of degree 7 instead of 13), about 1 ulp of float32. The categorical likelihood uses it
# when its logits are float32. The constants are Cephes's expf: ln 2 split into 0.693359375 (few
# mantissa bits, so n * _LN2_HI32 is exact) and a correction, and its minimax polynomial for
# (exp(r) - 1 - r) / r**2 on |r| <= ln(2) / 2.
_EXP32_X_MIN = -104.0  # exp(x) < 2**-150 below this: rounds to 0.0
_EXP32_X_MAX = 88.8  # exp(x) > the largest float32 above this: inf
_LN2_HI32 = 0.693359375
_LN2_LO32 = -2.12194440e-4
_EXP32_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
               5.0000001201e-1)
_FLOAT32_EXPONENT_BIAS = 127
_FLOAT32_MANTISSA_BITS = 23


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bit pattern is the low 32 bits of the integer ``bits``."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0]
        return builder.bitcast(low, context.get_value_type(types.float32))

    return types.float32(bits), codegen


@njit(**ELEMENTWISE)
def _pow2_32(n):
    """2.0**n as a float32, for an integral float32 n in [-126, 127], from its bits."""
    return _float32_from_bits((np.int32(n) + _FLOAT32_EXPONENT_BIAS) << _FLOAT32_MANTISSA_BITS)


@njit(**ELEMENTWISE)
def exp_scalar32(x):
    """exp(x) in float32 arithmetic for a float32 x, to about 1 ulp of float32; loops over it vectorise.

    NaN gives NaN, -inf gives 0 and +inf gives inf, like np.exp.
    """
    f = np.float32
    if x < f(_EXP32_X_MIN):
        x = f(_EXP32_X_MIN)
    if x > f(_EXP32_X_MAX):
        x = f(_EXP32_X_MAX)
    n = np.floor(x * f(_LOG2_E) + f(0.5))
    r = (x - n * f(_LN2_HI32)) - n * f(_LN2_LO32)
    p = f(_EXP32_POLY[0])
    p = p * r + f(_EXP32_POLY[1])
    p = p * r + f(_EXP32_POLY[2])
    p = p * r + f(_EXP32_POLY[3])
    p = p * r + f(_EXP32_POLY[4])
    p = p * r + f(_EXP32_POLY[5])
    p = p * (r * r) + r + f(1.0)
    n_half = np.floor(f(0.5) * n)  # n in [-150, 128]: two halves, each a normal float32
    return (p * _pow2_32(n_half)) * _pow2_32(n - n_half)


@njit(**ELEMENTWISE)
def _exp32_array(x, out):
    for i in range(x.size):
        out[i] = exp_scalar32(x[i])


def exp32(x):
    """The compiled, vectorised float32 exp applied to a float32 array (for tests and benchmarks).

    Parameters
    ----------
    x : float32 array

    Returns
    -------
    float32 array of the same shape
    """
    x = np.ascontiguousarray(x)
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise TypeError(f"x must be a float32 array; got {getattr(x, 'dtype', type(x).__name__)}")
    out = np.empty_like(x)
    _exp32_array(x.reshape(-1), out.reshape(-1))
    return out


@njit(**ELEMENTWISE)
def _exp_array(x, out):
    for i in range(x.size):
        out[i] = exp_scalar(np.float64(x[i]))


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
    check_float_array("x", x, x.ndim)
    out = np.empty_like(x)
    _exp_array(x.reshape(-1), out.reshape(-1))
    return out



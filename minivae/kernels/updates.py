"""Optimizer steps and the weight average, in place, one pass over each parameter (PyTorch's conventions).

The compiled :func:`minivae.ops.sgd_update`, :func:`~minivae.ops.adam_update`,
:func:`~minivae.ops.adamax_update` and :func:`~minivae.ops.ema_update`, with the same arguments.
"""

import numpy as np
from numba import njit

from .exp import ELEMENTWISE
from .gemm import check_float_array

# The kernels work on flat views of the arrays. Each element is read and written once: NumPy needs
# five to eight passes (and temporaries) for the same update. Scalars are converted to the dtype of
# the parameter so that float32 parameters are updated in float32, as NumPy and PyTorch do.

@njit(**ELEMENTWISE)
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


@njit(**ELEMENTWISE)
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


@njit(**ELEMENTWISE)
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
    check_float_array("p", p, p.ndim)
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
    scalars = _adam_scalars(lr, beta1, beta2, eps, t)
    p_flat, g_flat, (m_flat, v_flat) = _flat_state(p, g, [("m", m), ("v", v)])
    _adam_kernel(p_flat, g_flat, m_flat, v_flat, *scalars)


def _adam_scalars(lr, beta1, beta2, eps, t):
    """The Adam kernel's scalars: step size lr / (1 - β1ᵗ), β1, β2, eps and √(1 - β2ᵗ) (t checked)."""
    if t < 1:
        raise ValueError(f"t must count steps from 1; got {t}")
    return float(lr / (1 - beta1 ** t)), float(beta1), float(beta2), float(eps), float(np.sqrt(1 - beta2 ** t))



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
    scalars = _adamax_scalars(lr, beta1, beta2, eps, t)
    p_flat, g_flat, (m_flat, u_flat) = _flat_state(p, g, [("m", m), ("u", u)])
    _adamax_kernel(p_flat, g_flat, m_flat, u_flat, *scalars)


def _adamax_scalars(lr, beta1, beta2, eps, t):
    """The Adamax kernel's scalars: step size lr / (1 - β1ᵗ), β1, β2 and eps (t checked)."""
    if t < 1:
        raise ValueError(f"t must count steps from 1; got {t}")
    return float(lr / (1 - beta1 ** t)), float(beta1), float(beta2), float(eps)



@njit(**ELEMENTWISE)
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
    check_float_array("average", average, average.ndim)
    if not average.flags.c_contiguous:
        raise ValueError("average must be C-contiguous: it is updated in place")
    p = np.asarray(p)
    if p.shape != average.shape:
        raise ValueError(f"p must have the shape of average {average.shape}; got {p.shape}")
    if not 0 <= decay <= 1:
        raise ValueError(f"decay must be in [0, 1]; got {decay!r}")
    _ema_kernel(average.reshape(-1), np.ascontiguousarray(p, dtype=average.dtype).reshape(-1), float(decay))


# --------------------------------------------------------------------------------------------------
# Every parameter in one call
# --------------------------------------------------------------------------------------------------
#
# An optimizer step of the reference model updates 12 arrays; calling the kernel above once per array
# costs ~10-20 µs of Python each (checks, flat views, dispatch), about as much as the update of all
# 440 000 numbers. The functions below take tuples of flat arrays and update them all in one compiled
# call (numba compiles one version per number of arrays, cached on disk). Each array is still read
# and written once, by the loop of its one-array kernel: the numbers are the same.

@njit(**ELEMENTWISE)
def _adam_many(ps, gs, ms, vs, step_size, beta1, beta2, eps, sqrt_bias_correction2):
    for k in range(len(ps)):
        _adam_kernel(ps[k], gs[k], ms[k], vs[k], step_size, beta1, beta2, eps, sqrt_bias_correction2)


@njit(**ELEMENTWISE)
def _adamax_many(ps, gs, ms, us, step_size, beta1, beta2, eps):
    for k in range(len(ps)):
        _adamax_kernel(ps[k], gs[k], ms[k], us[k], step_size, beta1, beta2, eps)


def _flat_tuples(ps, gs, named_states):
    """Tuples of flat views (p, g and each state, checked as the one-array functions check them), or
    None when the arrays do not share one dtype (the caller then updates them one by one)."""
    if not ps or len({p.dtype for p in ps}) != 1:
        return None
    flats = [_flat_state(p, g, [(name, states[i]) for name, states in named_states])
             for i, (p, g) in enumerate(zip(ps, gs))]
    return (tuple(f[0] for f in flats), tuple(f[1] for f in flats),
            *(tuple(f[2][j] for f in flats) for j in range(len(named_states))))


def _update_many(many_kernel, update_one, ps, gs, named_states, scalars, arguments):
    """``many_kernel(*flat tuples, *scalars)`` over every parameter in one compiled call, or, when the
    parameters do not share a dtype, ``update_one(p, g, *its states, *arguments)`` of each."""
    flat = _flat_tuples(ps, gs, named_states)
    if flat is None:
        for p, g, *states in zip(ps, gs, *(states for _, states in named_states)):
            update_one(p, g, *states, *arguments)
        return
    many_kernel(*flat, *scalars)


def adam_update_many(ps, gs, ms, vs, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, t=1):
    """:func:`adam_update` of every (p, g, m, v) of the lists, in one compiled call.

    Parameters
    ----------
    ps, gs, ms, vs : lists of arrays, as the arguments of :func:`adam_update`, one entry per parameter
    lr, beta1, beta2, eps, t : as for :func:`adam_update`
    """
    _update_many(_adam_many, adam_update, ps, gs, [("m", ms), ("v", vs)], _adam_scalars(lr, beta1, beta2, eps, t),
                 (lr, beta1, beta2, eps, t))


def adamax_update_many(ps, gs, ms, us, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, t=1):
    """:func:`adamax_update` of every (p, g, m, u) of the lists, in one compiled call.

    Parameters
    ----------
    ps, gs, ms, us : lists of arrays, as the arguments of :func:`adamax_update`, one entry per parameter
    lr, beta1, beta2, eps, t : as for :func:`adamax_update`
    """
    _update_many(_adamax_many, adamax_update, ps, gs, [("m", ms), ("u", us)],
                 _adamax_scalars(lr, beta1, beta2, eps, t), (lr, beta1, beta2, eps, t))


@njit(**ELEMENTWISE)
def _count_non_finite(arrays):
    """The number of NaNs and infinities in a tuple of flat arrays. x - x is 0 for a finite x and NaN
    otherwise; counting in integers lets the loop vectorise without reordering a float sum."""
    bad = 0
    for k in range(len(arrays)):
        a = arrays[k]
        for i in range(a.size):
            bad += (a[i] - a[i]) != 0
    return bad


def all_finite(arrays):
    """True if no array of ``arrays`` (an iterable of float arrays) holds a NaN or an infinity; one
    compiled pass over all of them (``np.isfinite`` of each makes a boolean array per parameter)."""
    arrays = [np.asarray(a) for a in arrays]
    if not arrays:
        return True
    if len({a.dtype for a in arrays}) != 1 or arrays[0].dtype not in (np.float32, np.float64):
        return all(bool(np.isfinite(a).all()) for a in arrays)
    return _count_non_finite(tuple(np.ascontiguousarray(a).reshape(-1) for a in arrays)) == 0

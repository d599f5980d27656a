"""Gradient checking: compare a hand-written gradient with centered finite differences.

The numerical gradient of f at x in direction i is the centered difference

    df/dx_i ≈ (f(x + h e_i) - f(x - h e_i)) / (2h),

whose error is O(h²) from truncation plus O(ε_machine · |f| / h) from round-off. In float64
(ε ≈ 1e-16) with h = 1e-5 both are around 1e-10, so a correct gradient agrees to a relative error
below about 1e-7; in float32 (ε ≈ 1e-7) the round-off alone is about 1e-2, which hides real bugs.
Check in float64.

Two gradients are compared with the relative error of CS231n,

    rel_error(a, b) = max_i |a_i - b_i| / max(1e-8, |a_i| + |b_i|).

Example, on any function of an array::

    x = np.random.default_rng(0).standard_normal((3, 4))
    f = lambda x: np.sum(np.tanh(x) ** 2)
    analytic = 2 * np.tanh(x) * (1 - np.tanh(x) ** 2)
    assert rel_error(analytic, numerical_gradient(f, x)) < 1e-7
"""

import warnings

import numpy as np

DEFAULT_STEP = 1e-5  # h: balances truncation error h² against round-off ε/h in float64
REL_ERROR_FLOOR = 1e-8  # denominators below this count as this, so that 0 vs 1e-12 is not an "error" of 1


def rel_error(a, b):
    """Largest elementwise relative error between two arrays (CS231n):
    max |a - b| / max(1e-8, |a| + |b|).

    Parameters
    ----------
    a, b : arrays of the same shape (or scalars)

    Returns
    -------
    float
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape; got {a.shape} and {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(REL_ERROR_FLOOR, np.abs(a) + np.abs(b))))


def numerical_gradient(f, x, h=DEFAULT_STEP):
    """Centered finite-difference gradient of a scalar function.

    ``x`` is changed in place, one entry at a time, and restored; so ``f`` may also ignore its
    argument and read an array it shares with x (a model parameter, for instance).

    Parameters
    ----------
    f : callable, f(x) -> float
    x : float array of any shape, ideally float64
    h : float, the step

    Returns
    -------
    grad : array of x's shape, df/dx
    """
    return numerical_gradient_array(lambda x: np.asarray(f(x), dtype=np.float64), x, 1.0, h)


def numerical_gradient_array(f, x, dout, h=DEFAULT_STEP):
    """Centered finite-difference gradient of Σ f(x) * dout, for an array-valued f.

    This is what a layer's backward computes: given dout = dL/df, return dL/dx.

    Parameters
    ----------
    f : callable, f(x) -> array
    x : float array of any shape, ideally float64
    dout : array of f(x)'s shape (or a scalar)
    h : float, the step

    Returns
    -------
    grad : array of x's shape
    """
    x = _check_float_array(x, "x")
    grad = np.zeros(x.shape, dtype=np.float64)
    flat = x.reshape(-1)  # a view: writing into it writes into x
    if not np.shares_memory(flat, x):
        raise ValueError("x must be contiguous so that it can be perturbed in place")
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        f_plus = np.sum(np.asarray(f(x), dtype=np.float64) * dout)
        flat[i] = old - h
        f_minus = np.sum(np.asarray(f(x), dtype=np.float64) * dout)
        flat[i] = old
        grad.reshape(-1)[i] = (f_plus - f_minus) / (2 * h)
    return grad


def check_gradient(f, x, analytic, h=DEFAULT_STEP):
    """Relative error between an analytic gradient and the numerical gradient of scalar f at x.

    Returns
    -------
    float, :func:`rel_error`
    """
    return rel_error(analytic, numerical_gradient(f, x, h))


def check_model_gradients(model, x, eps, keys=None, h=DEFAULT_STEP, objective=None):
    """Check every gradient of a model's loss against finite differences.

    The loss is ``model.loss_and_grads(x, eps)`` (the model's own ELBO), or, given ``objective``,
    ``objective.loss_and_grads(model, x, eps)`` (any objective of :mod:`minivae.objectives`). It is
    deterministic given eps, so each parameter can be perturbed in place and the loss recomputed.
    Use a model built with ``dtype=np.float64`` and small sizes: the cost is two loss evaluations per
    scalar parameter.

    Parameters
    ----------
    model : object with ``params`` (dict of arrays) and ``loss_and_grads(x, eps=...)``
    x : (N, input_dim) array
    eps : the noise: (N, latent_dim) standard normal draws for the ELBO, or what
        ``objective.draw_noise`` returns ((k, N, latent_dim) for IWAE)
    keys : iterable of parameter names (default: all)
    h : float, the step
    objective : None (the model's own loss) or an objective

    Returns
    -------
    dict name -> relative error
    """
    if objective is None:
        def loss_and_grads():
            return model.loss_and_grads(x, eps=eps)
    else:
        x_checked = model.check_x(x) if hasattr(model, "check_x") else x

        def loss_and_grads():
            return objective.loss_and_grads(model, x_checked, eps)[:2]
    _, grads = loss_and_grads()
    errors = {}
    for key in (model.params if keys is None else keys):
        numerical = numerical_gradient(lambda _: loss_and_grads()[0], model.params[key], h)
        errors[key] = rel_error(grads[key], numerical)
    return errors


def _check_float_array(x, name):
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point numpy array (perturbed in place); "
                        f"got {type(x).__name__}" + (f" of dtype {x.dtype}" if hasattr(x, "dtype") else ""))
    if x.dtype != np.float64:
        warnings.warn(f"{name} is {x.dtype}: finite differences in single precision are accurate to about "
                      f"1e-2 only; use float64 for gradient checks", stacklevel=3)
    return x

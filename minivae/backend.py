"""Which implementation of the leaf operations runs: "numpy" or "numba".

A backend chooses only *leaf operations* (a dense layer, the categorical log-likelihood, an
optimizer update, ...), never the model: every model, objective and optimizer is written once, over
the functions that :func:`leaf_ops` returns.

* ``"numpy"``: the readable reference, :mod:`minivae.ops`, every forward beside its backward; read
  and step through this one.
* ``"numba"`` (the default): the same operations, where :mod:`minivae.kernels` has a compiled kernel
  of the same name (with the same arguments and the same cache), run by the kernel; the others run
  the NumPy code of :mod:`minivae.ops`. The kernels fuse passes NumPy makes separately (bias and
  activation, softmax and its gradient, the optimizer update): the same losses and gradients up to
  floating-point rounding, about twice as fast. They compile on first use and are cached on disk.

Choose it for everything with :func:`set_backend`, for a block with :func:`use_backend`, or for one
model or optimizer with its ``backend=`` argument (which wins over the global choice). The
environment variable ``MINIVAE_BACKEND`` sets the starting value.
"""

import contextlib
import os
import types
import warnings

from . import ops

BACKENDS = ("numpy", "numba")
_current = os.environ.get("MINIVAE_BACKEND", "numba")
if _current not in BACKENDS:
    raise ValueError(f"MINIVAE_BACKEND must be one of {BACKENDS}; got {_current!r}")
_chosen = "MINIVAE_BACKEND" in os.environ  # False while "numba" is only the default (see leaf_ops)


def check_backend(name):
    """``name`` if it is a backend, else a ValueError naming the choices."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {name!r}")
    return name


def get_backend():
    """The backend in use where none is given: "numpy" or "numba"."""
    return _current


def set_backend(name):
    """Use backend ``name`` ("numpy" or "numba") from now on, where no ``backend=`` says otherwise."""
    global _current, _chosen
    _current, _chosen = check_backend(name), True


@contextlib.contextmanager
def use_backend(name):
    """Use backend ``name`` inside a ``with`` block, then restore the previous one."""
    previous = _current
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def resolve(name=None):
    """The backend to run with: ``name`` if given, else the current one."""
    return _current if name is None else check_backend(name)


_compiled_ops = None


def leaf_ops(name=None):
    """The leaf operations of backend ``name`` (None: the current backend).

    Returns
    -------
    :mod:`minivae.ops` for "numpy"; for "numba", a namespace with every function of :mod:`minivae.ops`,
    in which those that :mod:`minivae.kernels` implements (``kernels.LEAF_OPS``) are the kernels, and
    the kernels' operations over all parameters at once (``kernels.MANY_OPS``, which :mod:`minivae.ops`
    does not have: callers check with ``getattr``).
    The kernels are imported on first use (importing numba takes a moment). Where numba cannot be
    imported and "numba" is only the default (not set by ``MINIVAE_BACKEND``, :func:`set_backend` or
    a ``backend=`` argument), minivae warns once and runs on NumPy; asked for by name, it raises.
    """
    if resolve(name) == "numpy":
        return ops
    global _compiled_ops, _current
    if _compiled_ops is None:
        try:
            from . import kernels
        except ImportError as error:  # numba (or llvmlite) is not installed
            if name is None and not _chosen:  # "numba" was only the default: run on NumPy, and say so
                warnings.warn(f"numba cannot be imported ({error}), so minivae runs on its NumPy backend; "
                              f"`pip install numba` for the compiled kernels (MINIVAE_BACKEND=numpy "
                              f"silences this)", stacklevel=2)
                _current = "numpy"
                return ops
            raise ImportError(f"the numba backend needs numba, which cannot be imported ({error}): "
                              f"`pip install numba`, or use the NumPy backend (backend='numpy', "
                              f"MINIVAE_BACKEND=numpy)") from error
        functions = {key: value for key, value in vars(ops).items() if not key.startswith("_")}
        functions.update({key: getattr(kernels, key) for key in kernels.LEAF_OPS + kernels.MANY_OPS})
        _compiled_ops = types.SimpleNamespace(**functions)
    return _compiled_ops

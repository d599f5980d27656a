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

from . import ops

BACKENDS = ("numpy", "numba")
_current = os.environ.get("MINIVAE_BACKEND", "numba")
if _current not in BACKENDS:
    raise ValueError(f"MINIVAE_BACKEND must be one of {BACKENDS}; got {_current!r}")


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
    global _current
    _current = check_backend(name)


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
    in which those that :mod:`minivae.kernels` implements (``kernels.LEAF_OPS``) are the kernels.
    The kernels are imported on first use (importing numba takes a moment).
    """
    if resolve(name) == "numpy":
        return ops
    global _compiled_ops
    if _compiled_ops is None:
        from . import kernels
        functions = {key: value for key, value in vars(ops).items() if not key.startswith("_")}
        functions.update({key: getattr(kernels, key) for key in kernels.LEAF_OPS})
        _compiled_ops = types.SimpleNamespace(**functions)
    return _compiled_ops

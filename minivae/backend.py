"""Which implementation runs the arithmetic: "numpy" or "numba".

* ``"numpy"``: the readable reference. Every forward and backward is the NumPy code written beside
  its maths in :mod:`minivae.layers`, :mod:`minivae.distributions` and :mod:`minivae.optim`; read and
  step through this one.
* ``"numba"`` (the default): the same computations through the compiled kernels of
  :mod:`minivae.kernels`, which fuse the passes NumPy makes separately (bias and activation, softmax
  and its gradient, the optimizer update). Same losses and gradients up to floating-point rounding;
  about twice as fast. Kernels compile on first use and are cached on disk.

Choose it for everything with :func:`set_backend`, for a block with :func:`use_backend`, or for one
model or optimizer with its ``backend=`` argument (which wins over the global choice). The
environment variable ``MINIVAE_BACKEND`` sets the starting value.
"""

import contextlib
import os

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


_kernels = None


def kernels():
    """The compiled kernels module, imported on first use (importing numba takes a moment)."""
    global _kernels
    if _kernels is None:
        from . import kernels as module
        _kernels = module
    return _kernels

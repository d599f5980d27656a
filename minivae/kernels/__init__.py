"""Compiled CPU kernels (numba) for the hot leaf operations of an MLP VAE.

This package is optional: ``import minivae`` never imports it, because importing numba takes time and
the library must stay usable with NumPy alone. :func:`minivae.backend.leaf_ops` imports it on first
use under the "numba" backend.

Every kernel that is a leaf operation has the name, the arguments, the result and the cache of its
reference in :mod:`minivae.ops`, which is the thing to read first (and what the tests compare each
kernel with): the kernel computes the same numbers, only in fewer passes over memory.

What is here
------------
* :mod:`~minivae.kernels.gemm`: the products a linear layer needs, from one blocked,
  register-tiled routine written with explicit SIMD vectors: :func:`matmul` (``x @ W``),
  :func:`matmul_nt` (``g @ W.T``), :func:`matmul_tn` (``x.T @ g``); the reference is NumPy's ``@``.
* :mod:`~minivae.kernels.dense`: ``dense_forward`` / ``dense_backward``, a = f(x @ W + b) with the
  bias and the activation fused into one pass over the product.
* :mod:`~minivae.kernels.categorical`: ``categorical_log_prob``, the log-softmax likelihood of
  integer data and its gradient in one pass; ``categorical_log_prob_backward``, its scaling.
* :mod:`~minivae.kernels.updates`: ``sgd_update``, ``adam_update``, ``adamax_update``,
  ``ema_update``, in place, one pass over each parameter; ``adam_update_many``,
  ``adamax_update_many`` and ``all_finite``, every parameter in one compiled call.
* :mod:`~minivae.kernels.threads`: big operations split into chunks of rows on a few threads.
* :mod:`~minivae.kernels.exp`: a vectorisable exp the elementwise kernels share.
* :mod:`~minivae.kernels.memory`: glibc's malloc told to keep freed memory, so the big arrays of a
  step do not page-fault every step (importing this package sets it; ``MINIVAE_KEEP_MEMORY=0`` not).

Compilation is lazy: the first call with a new dtype compiles (seconds), and ``cache=True`` keeps
the machine code on disk for the next process. Every kernel accepts float32 and float64; all
arrays of one call share a dtype. The categorical likelihood of a large batch, its backward's
scaling and the bias-and-activation pass of a big layer, and the BLAS products of at least 30 MFLOP
run on ``threads.thread_count()`` threads (NUMBA_NUM_THREADS, else every core; see
:mod:`~minivae.kernels.threads`); the hand-written products on one thread unless
``gemm.GEMM_THREADS`` says otherwise.
"""

from . import gemm, memory
from .categorical import categorical_log_prob, categorical_log_prob_backward
from .dense import ACTIVATION_CODES, dense_backward, dense_forward
from .exp import exp
from .gemm import matmul, matmul_nt, matmul_tn
from .updates import adam_update, adam_update_many, adamax_update, adamax_update_many, all_finite, ema_update, sgd_update

memory.keep_freed_memory()  # the numba backend's big arrays reuse freed memory (see kernels.memory)

# The leaf operations of minivae.ops that have a kernel here: minivae.backend.leaf_ops runs these
# under the "numba" backend, and minivae.ops's own function for every other operation.
LEAF_OPS = ("dense_forward", "dense_backward", "categorical_log_prob", "categorical_log_prob_backward",
            "sgd_update", "adam_update", "adamax_update", "ema_update")
# Operations over all the parameters at once, with no twin in minivae.ops: the numba backend's
# namespace has them, and their callers (minivae.optim, the trainer's finiteness check) loop over the
# one-array leaf operations where they are missing. They compute the numbers of that loop.
MANY_OPS = ("adam_update_many", "adamax_update_many", "all_finite")

__all__ = ["LEAF_OPS", "MANY_OPS", "ACTIVATION_CODES", "gemm", "matmul", "matmul_nt", "matmul_tn", "exp", *LEAF_OPS,
           *MANY_OPS]

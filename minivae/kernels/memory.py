"""Freed memory kept for the next step: big arrays that do not page-fault on every step.

A training step allocates the same arrays every time, and an IWAE(50) step's are big (the decoder's
3200 x 1088 logits and their gradient, 14 MB each in float32). glibc's malloc hands an allocation
above its mmap threshold (128 KiB at start, raised as such blocks are freed) to the kernel as fresh
pages and unmaps them when the array is freed; the next step touches fresh pages again, and each
first touch is a page fault that zeroes 4 KiB. Measured on the IWAE(50) step of ``minivae variants``
(float32, 2 threads, AMD Zen 3): 5 500 minor page faults a step and 93 ms a step; with the settings
below, no page fault and 58 ms (``ru_minflt`` of ``resource.getrusage`` around ten steps). The page
faults also serialise the threads of a split product (the kernel zeroes the pages of a chunk while
the other thread waits on the same address space). The reference model's arrays are small enough
that malloc's own threshold already keeps them: its step does not change.

:func:`keep_freed_memory` sets two of glibc's ``mallopt`` parameters for the process:
``M_MMAP_THRESHOLD`` = 32 MiB (glibc's largest; blocks below it come from the heap, which keeps
freed blocks for reuse) and ``M_TRIM_THRESHOLD`` = 256 MiB (the heap returns its free top to the
system only beyond this). The cost: up to 256 MiB that a step freed stay mapped for the next one
(the peak resident memory does not grow: it is the same arrays). The numba backend calls it once,
when :mod:`minivae.kernels` is imported; ``MINIVAE_KEEP_MEMORY=0`` leaves malloc alone. Elsewhere
than glibc (macOS, musl, Windows) it does nothing: their allocators keep or release memory by their
own rules.
"""

import ctypes
import os
import platform

MMAP_THRESHOLD = 32 * 2**20  # bytes; glibc accepts at most 32 MiB on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 256 * 2**20  # bytes of free heap top kept mapped
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (glibc's malloc.h)

_kept = None  # None: not tried yet; then True (set) or False (not glibc, or switched off)


def keep_freed_memory():
    """Tune glibc's malloc to keep freed memory for reuse (once per process); True if it is set.

    Does nothing and returns False when ``MINIVAE_KEEP_MEMORY`` is "0", off Linux, or when the C
    library is not glibc (no ``gnu_get_libc_version``).
    """
    global _kept
    if _kept is None:
        _kept = False
        if os.environ.get("MINIVAE_KEEP_MEMORY", "1") != "0" and platform.system() == "Linux":
            try:
                libc = ctypes.CDLL(None)
                is_glibc = hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")
            except OSError:
                is_glibc = False
            if is_glibc:
                libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                _kept = (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                         and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    return _kept

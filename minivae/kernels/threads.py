"""A second core for the big operations: chunks of rows shared by a few threads, taken as they come.

The kernels of this package and BLAS release the GIL (numba's ``nogil=True``, NumPy's matmul), so
plain Python threads run them in parallel. :func:`run_chunks` cuts rows 0:n into chunks and the
calling thread and ``n_threads - 1`` helper threads take chunks one by one until none is left.

Why not numba's ``prange`` or BLAS's own threads: both split the work into one fixed piece per
thread, and the caller waits for the slowest piece. On a machine whose cores also run other work, a
descheduled thread made a parallel region wait ~12 ms for a product of 0.3 ms. Here the caller
never waits for a helper that has not started: it takes every chunk the helpers have not taken, and
waits at most for chunks that are already running (each a fraction of the operation).

``THREADS`` sets the number of threads (the caller included); None, the default, takes numba's
``numba.get_num_threads()`` (the ``NUMBA_NUM_THREADS`` environment variable, else the cores).
Only operations of at least ``PARALLEL_MIN_FLOPS`` (products), ``PARALLEL_MIN_ELEMENTS``
(the categorical likelihood) or ``PARALLEL_MIN_PASS`` (a pass of a few operations a number) are
split: a helper starts working ~0.1 ms after the caller (median of 200 splits, measured here: the
thread's wake-up and the GIL), so only what takes longer gains from it. Splitting rows never
changes a result: each row is computed by the same code in the same order.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

THREADS = None  # threads of a split operation, the caller included (None: numba.get_num_threads())
CHUNKS_PER_THREAD = 2  # more chunks: less waiting for a late thread, but more calls
PARALLEL_MIN_FLOPS = 50_000_000  # products (2 M N K flops) below this run on the calling thread
PARALLEL_MIN_ELEMENTS = 200_000  # categorical likelihoods with fewer logits run on the calling thread
# Passes of a few operations a number (bias and activation, a scaling) with fewer numbers run on the
# calling thread. Measured (float32, 2 threads, Zen 3): the bias and leaky ReLU over 3200 x 1088
# numbers 1.18 -> 0.60 ms, over 3200 x 256 0.24 -> 0.25 ms (a helper starts ~0.1 ms late).
PARALLEL_MIN_PASS = 1_000_000

_pool = None
_pool_lock = threading.Lock()


def thread_count():
    """The threads a split operation may use: ``THREADS``, or numba's thread count."""
    if THREADS is not None:
        return max(1, int(THREADS))
    import numba

    return numba.get_num_threads()


def _helpers(n):
    """The shared pool of helper threads, grown to at least n workers."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < n:
            old, _pool = _pool, ThreadPoolExecutor(max_workers=n, thread_name_prefix="minivae")
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def run_chunks(function, n_rows, n_threads, min_rows=1, align=1):
    """``function(begin, end)`` over chunks that cover rows 0:n_rows, on up to n_threads threads.

    Parameters
    ----------
    function : callable(begin, end), works on rows begin:end; it should release the GIL (a nogil numba
        kernel, a BLAS product), or the threads take turns
    n_rows : int
    n_threads : int, threads to use, the caller included; 1 calls ``function(0, n_rows)`` here
    min_rows : int, the fewest rows of a chunk (fewer rows: BLAS runs less efficiently)
    align : int, every chunk but the last starts and ends at a multiple of this
    """
    n_chunks = max(1, min(n_threads * CHUNKS_PER_THREAD, n_rows // max(1, min_rows, align)))
    if n_threads <= 1 or n_chunks <= 1:
        function(0, n_rows)
        return
    cuts = sorted({0, n_rows, *(min(n_rows, round(i * n_rows / n_chunks / align) * align)
                                for i in range(1, n_chunks))})
    bounds = list(zip(cuts[:-1], cuts[1:]))
    n_chunks = len(bounds)
    state = {"next": 0, "done": 0, "error": None}
    lock = threading.Lock()
    all_done = threading.Event()

    def work():
        while True:
            with lock:
                i = state["next"]
                if i >= n_chunks:
                    return
                state["next"] = i + 1
            try:
                function(*bounds[i])
            except BaseException as error:  # re-raised by the caller
                state["error"] = error
            with lock:
                state["done"] += 1
                if state["done"] == n_chunks:
                    all_done.set()

    pool = _helpers(n_threads - 1)
    for _ in range(min(n_threads, n_chunks) - 1):
        pool.submit(work)
    work()
    all_done.wait()  # only for chunks already running on a helper: the caller took all the others
    if state["error"] is not None:
        raise state["error"]


# --------------------------------------------------------------------------------------------------
# BLAS on one thread while a product is split
# --------------------------------------------------------------------------------------------------
#
# A product split into chunks must run each chunk on one BLAS thread: BLAS's own threads and ours
# would fight over the cores, and OpenBLAS cuts a product among its threads at rows that are not
# multiples of its tile, which changes the last bits of the result, differently depending on which
# thread ran which chunk. So the caller sets OpenBLAS's thread count to 1 for the time of the split
# and restores it after (OpenBLAS's setting is global: ``openblas_set_num_threads_local`` of NumPy
# 2.4's OpenBLAS changed it for every thread, so it cannot be set per chunk). NumPy's wheels bundle
# OpenBLAS with its symbols renamed (``scipy_openblas_..._64_``); we look for the library among
# those the process has loaded (/proc/self/maps, Linux). Without it, a product is split only if
# BLAS runs on one thread anyway. Another thread of the program calling BLAS during a split runs on
# one thread too.

_blas = None  # (set_num_threads or None, get_num_threads or None), found on first use


def _find_blas():
    import ctypes

    set_threads = get_threads = None
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
    except OSError:
        paths = []
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                     "openblas_set_num_threads64_", "openblas_set_num_threads"):
            if set_threads is None and hasattr(library, name):
                set_threads = getattr(library, name)
                set_threads.argtypes, set_threads.restype = [ctypes.c_int], None
        for name in ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
                     "openblas_get_num_threads64_", "openblas_get_num_threads"):
            if get_threads is None and hasattr(library, name):
                get_threads = getattr(library, name)
                get_threads.argtypes, get_threads.restype = [], ctypes.c_int
    return set_threads, get_threads


def _blas_functions():
    global _blas
    if _blas is None:
        import numpy  # noqa: F401  (loads BLAS)

        _blas = _find_blas()
    return _blas


def blas_can_split():
    """True if a product may be split into chunks: BLAS can be set to (or already runs on) one thread."""
    set_threads, get_threads = _blas_functions()
    return get_threads is not None and (set_threads is not None or get_threads() == 1)


def run_chunks_blas_single_threaded(function, n_rows, n_threads, **options):
    """:func:`run_chunks` with OpenBLAS on one thread until every chunk is done (then set back; the
    two calls cost about a microsecond)."""
    set_threads, get_threads = _blas_functions()
    previous = get_threads()
    if previous != 1:
        set_threads(1)
    try:
        run_chunks(function, n_rows, n_threads, **options)
    finally:
        if previous != 1:
            set_threads(previous)

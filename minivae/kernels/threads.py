"""A second core for the big operations: chunks of rows shared by a few threads, taken as they come.

The kernels of this package and BLAS release the GIL (numba's ``nogil=True``, NumPy's matmul), so
plain Python threads run them in parallel. :func:`run_chunks` cuts rows 0:n into chunks and the
calling thread and ``n_threads - 1`` helper threads take chunks one by one until none is left;
:func:`run_tasks` does the same with a list of independent pieces of work (a dense layer's two
backward products, one whole and the other in chunks: :func:`minivae.kernels.gemm.gemm_concurrent`).

Why not numba's ``prange`` or BLAS's own threads: both split the work into one fixed piece per
thread, and the caller waits for the slowest piece. On a machine whose cores also run other work, a
descheduled thread made a parallel region wait ~12 ms for a product of 0.3 ms. Here the caller
never waits for a helper that has not started: it takes every chunk the helpers have not taken, and
waits at most for chunks that are already running (each a fraction of the operation).

``THREADS`` sets the number of threads (the caller included); None, the default, takes numba's
``numba.get_num_threads()`` (the ``NUMBA_NUM_THREADS`` environment variable, else the cores).
Only operations of at least ``PARALLEL_MIN_FLOPS`` (products), ``PARALLEL_MIN_ELEMENTS``
(the categorical likelihood) or ``PARALLEL_MIN_PASS`` (a pass of a few operations a number) are
split: a helper starts ~40 µs after the caller even when it is awake (median of 200 splits here: it
must take the GIL from the caller, which the system hands over by waking a thread), and ~0.1 ms
when it slept, so only what takes longer gains from it. Helpers stay awake for ``SPIN_SECONDS``
after their last work (see "Helpers that are awake when the work comes" below). Splitting rows
never changes a result: each row is computed by the same code in the same order.
"""

import contextlib
import os
import threading
import time

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

THREADS = None  # threads of a split operation, the caller included (None: numba.get_num_threads())
CHUNKS_PER_THREAD = 2  # more chunks: less waiting for a late thread, but more calls
# Products (2 M N K flops) below this run on the calling thread. 30 MFLOP splits the reference model's
# three largest (64 x 256 x 1088 and its two backward products, 36 MFLOP, ~0.4 ms each): its step at
# 2 threads went from 3.04-3.14 to 2.76-2.93 ms (four paired rounds, numba 0.68, Zen 3). With helpers
# that sleep between splits (the earlier design) the same split made the step slower.
PARALLEL_MIN_FLOPS = 30_000_000
PARALLEL_MIN_ELEMENTS = 200_000  # categorical likelihoods with fewer logits run on the calling thread
# Passes of a few operations a number (bias and activation, a scaling) with fewer numbers run on the
# calling thread. Measured (float32, 2 threads, Zen 3): the bias and leaky ReLU over 3200 x 1088
# numbers 1.18 -> 0.60 ms, over 3200 x 256 0.24 -> 0.25 ms.
PARALLEL_MIN_PASS = 1_000_000
SPIN_SECONDS = 0.002  # a helper polls for new work this long after its last, then sleeps


def thread_count():
    """The threads a split operation may use: ``THREADS``, or numba's thread count."""
    if THREADS is not None:
        return max(1, int(THREADS))
    import numba

    return numba.get_num_threads()


def threads_for(size, minimum):
    """The threads for an operation of ``size`` (numbers, or flops): :func:`thread_count` from
    ``minimum`` on (one of the ``PARALLEL_MIN_*`` thresholds above), else 1 (the calling thread)."""
    return thread_count() if size >= minimum else 1


# --------------------------------------------------------------------------------------------------
# Helpers that are awake when the work comes
# --------------------------------------------------------------------------------------------------
#
# A helper asleep on a lock takes ~0.1 ms to start (the system wakes the thread, then it takes the
# GIL): the whole of a 64 x 256 x 1088 product's gain (0.42 ms on one thread). So a helper that has
# finished its work polls a counter for SPIN_SECONDS before it sleeps: a training step's next split
# comes within that time, and the helper starts on it at once. It polls outside the GIL, in a compiled
# loop (an atomic read of the counter, ~0.5 ns); after SPIN_SECONDS without work it sleeps on a
# condition (no CPU at all). The caller, once its own chunks are done, polls the same way for the
# helpers' last chunks before it sleeps on an event.


@intrinsic
def _load_acquire(typingctx, cells):
    """cells[0] of an int64 array, read from memory each time (an atomic load, acquire ordering: a
    plain read in a loop may be read once and kept in a register)."""
    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.load_atomic(array.data, "acquire", 8)
    return types.int64(cells), codegen


@njit(nogil=True, cache=True)
def _wait_while_equal(cell, value, polls):
    """Poll cell[0] until it differs from value (True) or polls run out (False)."""
    for _ in range(polls):
        if _load_acquire(cell) != value:
            return True
    return False


@njit(nogil=True, cache=True)
def _wait_until_equal(cell, value, polls):
    """Poll cell[0] until it equals value (True) or polls run out (False)."""
    for _ in range(polls):
        if _load_acquire(cell) == value:
            return True
    return False


class _Helpers:
    """``n`` helper threads that run each posted job (a function that takes chunks until none is left)."""

    def __init__(self, n):
        self.n = n
        self.pid = os.getpid()
        self.posted = np.zeros(1, np.int64)  # the number of jobs posted: helpers poll it
        self.job = None
        self.condition = threading.Condition()
        self.spin_polls = self._calibrate()
        for i in range(n):
            threading.Thread(target=self._run, name=f"minivae-{i}", daemon=True).start()

    @staticmethod
    def _calibrate():
        """Polls in SPIN_SECONDS on this machine (best of three timings of 100 000 polls)."""
        cell = np.zeros(1, np.int64)
        _wait_while_equal(cell, 0, 1)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            _wait_while_equal(cell, 0, 100_000)
            times.append(time.perf_counter() - start)
        return max(1, int(SPIN_SECONDS / max(min(times) / 100_000, 1e-10)))

    def post(self, job):
        with self.condition:
            self.job = job
            self.posted[0] += 1
            self.condition.notify_all()

    def _run(self):
        seen = 0
        while True:
            if not _wait_while_equal(self.posted, seen, self.spin_polls):
                with self.condition:  # nothing came while polling: sleep until a job is posted
                    self.condition.wait_for(lambda: self.posted[0] != seen)
            seen = int(self.posted[0])
            job = self.job
            if job is not None:
                job()


_helpers_of_process = None
_helpers_lock = threading.Lock()


def _helpers(n):
    """The process's helper threads, at least n of them (started again in a forked child)."""
    global _helpers_of_process
    with _helpers_lock:
        helpers = _helpers_of_process
        if helpers is None or helpers.n < n or helpers.pid != os.getpid():
            helpers = _helpers_of_process = _Helpers(n)
        return helpers


def chunk_bounds(n_rows, n_threads, min_rows=1, align=1):
    """The chunks :func:`run_chunks` cuts rows 0:n_rows into: a list of (begin, end), in order.

    ``n_threads * CHUNKS_PER_THREAD`` chunks of about equal size (fewer if a chunk would have fewer than
    ``min_rows`` rows), every cut at a multiple of ``align``; one chunk (0, n_rows) for one thread.
    """
    n_chunks = max(1, min(n_threads * CHUNKS_PER_THREAD, n_rows // max(1, min_rows, align)))
    if n_threads <= 1 or n_chunks <= 1:
        return [(0, n_rows)]
    cuts = sorted({0, n_rows, *(min(n_rows, round(i * n_rows / n_chunks / align) * align)
                                for i in range(1, n_chunks))})
    return list(zip(cuts[:-1], cuts[1:]))


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
    bounds = chunk_bounds(n_rows, n_threads, min_rows, align)
    if len(bounds) == 1:
        function(0, n_rows)
        return
    run_tasks([lambda begin=begin, end=end: function(begin, end) for begin, end in bounds], n_threads)


def run_tasks(tasks, n_threads):
    """Call every function of ``tasks`` (no arguments) once, on up to n_threads threads (the caller
    included), each thread taking the next task in the list when it is free; return when all are done.

    A task's exception is raised here (the last one, if several raise), after every task has run.
    """
    n_tasks = len(tasks)
    if n_threads <= 1 or n_tasks <= 1:
        for task in tasks:
            task()
        return
    state = {"next": 0, "error": None}
    done = np.zeros(1, np.int64)  # tasks finished: the caller polls it
    lock = threading.Lock()
    all_done = threading.Event()

    def work():
        while True:
            with lock:
                i = state["next"]
                if i >= n_tasks:
                    return
                state["next"] = i + 1
            try:
                tasks[i]()
            except BaseException as error:  # re-raised by the caller
                state["error"] = error
            with lock:
                done[0] += 1
                if done[0] == n_tasks:
                    all_done.set()

    helpers = _helpers(n_threads - 1)
    helpers.post(work)
    work()
    # Only tasks already running on a helper are left (the caller took all the others): poll for
    # them, then sleep on the event if they take longer.
    if not _wait_until_equal(done, n_tasks, helpers.spin_polls):
        all_done.wait()
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


@contextlib.contextmanager
def blas_on_one_thread():
    """OpenBLAS on one thread inside the block, then set back (the two calls cost about a microsecond)."""
    set_threads, get_threads = _blas_functions()
    previous = get_threads()
    if previous != 1:
        set_threads(1)
    try:
        yield
    finally:
        if previous != 1:
            set_threads(previous)


def run_chunks_blas_single_threaded(function, n_rows, n_threads, **options):
    """:func:`run_chunks` with OpenBLAS on one thread until every chunk is done."""
    with blas_on_one_thread():
        run_chunks(function, n_rows, n_threads, **options)

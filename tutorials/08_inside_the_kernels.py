# %% [markdown]
# # 8. Inside the kernels
#
# Every tutorial so far ran on minivae's default backend, "numba": the same forward and backward
# passes as the NumPy code of tutorial 2, compiled to machine code by numba. This tutorial opens
# that backend. Nearly all the arithmetic of a training step is in matrix products, so most of it
# is about one question: why is a matrix product written as three loops so slow, and what does it
# take to make it fast? We write the textbook loop ourselves, reorder it, compare it with minivae's
# blocked kernel and with the BLAS library NumPy calls, check a kernel against its NumPy reference, and
# end with a whole training step on both backends, measured live on this machine.
#
# **What you will learn**
#
# - why the speed of a matrix product is set by memory traffic, not by the arithmetic: loop
#   order, cache lines, SIMD instructions, blocking and register tiles;
# - how fast the textbook loop, a reordered loop, minivae's kernel and BLAS are, in GFLOP/s, on
#   square matrices and on the model's own shapes;
# - how to check a kernel against its NumPy reference, and why a float32 tolerance must grow with the
#   length of the sums;
# - what fusing passes buys (a dense layer, the categorical likelihood, the optimizer step), and
#   where the time of a whole training step goes.
#
# **Prerequisites.** Tutorial 2 (a linear layer needs `x @ W` forward, `g @ Wᵀ` and `xᵀ @ g`
# backward) and the reference model of tutorial 4. No numba knowledge is needed: `@numba.njit`
# compiles a Python function made of loops over NumPy arrays, and that is all we use.
#
# **Run time.** Under a minute in full (22 to 33 s measured on a two-core machine shared with other
# jobs, load average 3 to 4.6; the timings themselves suffer from such sharing, see below); a few
# seconds with `MINIVAE_QUICK=1` (smaller matrices, fewer repeats: its numbers are rougher).
# Every number here is measured as the file runs, so it depends on the machine and on what else
# is running on it; the prose says what to expect, the printed numbers and the figures say what
# happened.
#
# ## One thread against one thread
#
# minivae's hand-written matrix products run on one thread (unless `kernels.gemm.GEMM_THREADS` says
# otherwise). In training, where products go to BLAS by default, each product runs on one BLAS
# thread, and only products of at least 30 MFLOP are split into chunks of rows over
# `kernels.threads.thread_count()` threads (see the README's section on threads).
# The BLAS library behind NumPy's `@` may split a product over every core, and it fixes its
# number of threads once, when it is loaded, from environment variables. To compare like with
# like, this tutorial limits BLAS to one thread before NumPy is imported; the figure of square
# products also runs BLAS on every core, in a separate process, to show what threads add. (In a
# notebook whose kernel has already imported NumPy, the setting below has no effect: restart the
# kernel first, or set `OPENBLAS_NUM_THREADS=1` in the shell.) The setting lives in this process
# only: the rest of the course, and your own programs, keep their defaults.

# %%
import os

BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
for variable in BLAS_THREAD_VARIABLES:  # OpenBLAS, Intel MKL, Apple Accelerate
    os.environ.setdefault(variable, "1")

# %%
import json
import subprocess
import sys
import time

import numba
import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

import minivae
from minivae import course, kernels, ops, plots

TUTORIAL = "08_inside_the_kernels"
rng = np.random.default_rng(8)
DTYPE = np.float32  # the model's dtype: every product below is in float32 unless it says otherwise

# minivae's numba backend runs its products on BLAS by default (MINIVAE_GEMM=auto picks the faster
# of BLAS and the hand-written kernel for each shape; see minivae/kernels/gemm.py). This tutorial is
# about the hand-written kernel itself, so it sends every product there.
kernels.gemm.GEMM_ROUTE = "kernel"

# Live timings on a busy machine mean little: say so when the load is above the number of cores.
load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
if load > (os.cpu_count() or 1):
    print(f"WARNING: the machine is busy (load average {load:.1f} on {os.cpu_count()} cores): the timings "
          f"below are slower and noisier than this machine can do; run again when it is quiet")

blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
gemm_threads = kernels.gemm.GEMM_THREADS or numba.get_num_threads()
print(f"cores: {os.cpu_count()}; NumPy's BLAS: {blas['name']} {blas.get('version', '')}, "
      f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
print(f"threads of minivae's hand-written products: {gemm_threads}")

# %% [markdown]
# ## Timing honestly
#
# A timing is a measurement with noise, and the noise only ever adds time (another program takes
# the core, the cache is cold). So we take the *best* of several runs, and we take them
# round-robin, each function once per round, so that a burst of load hits every contestant rather
# than one. A fast function is called several times per measurement, so that the timer's
# resolution and the call itself do not dominate.

# %%
MIN_MEASUREMENT_SECONDS = 2e-4  # a measurement repeats a fast function until it lasts this long
BUDGET_SECONDS = 2.0  # a function stops being re-measured once it has used this much time
REPEATS = course.size(7, 3)  # rounds of measurements


def best_times(functions, repeats=REPEATS, budget=BUDGET_SECONDS):
    """Best-of-`repeats` time of one call of each function, in seconds, measured round-robin.

    functions : dict name -> function of no arguments. Each is called once to warm up (a first call
    may compile), then once more to size its loop; a slow second call counts as a measurement.
    """
    number, best, spent = {}, {}, {}
    for name, f in functions.items():
        f()
        start = time.perf_counter()
        f()
        elapsed = time.perf_counter() - start
        number[name] = max(1, int(MIN_MEASUREMENT_SECONDS / max(elapsed, 1e-9)))
        best[name] = elapsed if number[name] == 1 else np.inf
        spent[name] = elapsed
    for _ in range(repeats):
        for name, f in functions.items():
            if spent[name] > budget:
                continue
            start = time.perf_counter()
            for _ in range(number[name]):
                f()
            elapsed = time.perf_counter() - start
            best[name] = min(best[name], elapsed / number[name])
            spent[name] += elapsed
    return best


def gflops(flops, seconds):
    """Speed in GFLOP/s (10⁹ floating-point operations per second)."""
    return flops / seconds / 1e9


# %% [markdown]
# ## The textbook loop
#
# `C = A B` with `A: (M, K)`, `B: (K, N)` is `C[i, j] = Σ_p A[i, p] B[p, j]`: `M N K`
# multiply-adds, `2 M N K` floating-point operations (FLOPs). Written the way the formula reads,
# it is three lines. `@numba.njit` compiles it for the types of the arguments it is first called
# with.


# %%
@numba.njit
def matmul_ijk(A, B, C):
    """C += A @ B, loops in the order of the formula: i, j, then the sum over p."""
    for i in range(A.shape[0]):
        for j in range(B.shape[1]):
            for p in range(A.shape[1]):
                C[i, j] += A[i, p] * B[p, j]


# %% [markdown]
# ### The first call compiles
#
# numba compiles a function the first time it sees a new combination of argument types (here,
# three 2-D float32 arrays): the first call includes the compiler's time, every later call with
# the same types runs the machine code directly. The function above is compiled anew in every
# process. minivae's kernels are declared with `cache=True`: the first process that uses them
# compiles them (seconds to tens of seconds for the whole set) and writes the machine code to disk next to
# the source, and every later process only loads it, in a fraction of a second. float64 arguments
# are a new set of types, compiled (and cached) separately.

# %%
tiny = np.ones((4, 4), DTYPE)
for name, call in {"matmul_ijk (this file)": lambda: matmul_ijk(tiny, tiny, np.zeros_like(tiny)),
                   "kernels.matmul (minivae)": lambda: kernels.matmul(tiny, tiny)}.items():
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    start = time.perf_counter()
    call()
    second = time.perf_counter() - start
    print(f"{name:26s} first call {first * 1e3:8.1f} ms, second call {second * 1e6:6.1f} µs")

# %% [markdown]
# The first call of `matmul_ijk` costs a large fraction of a second, the second only microseconds.
# For `kernels.matmul` the first call either loaded cached machine code (milliseconds to a few
# hundred) or, on a fresh install or after the source changed, compiled it (seconds). Either way it is paid
# once per process, and `best_times` above always makes a first call before it measures anything.
#
# ## One swap: loop order ikj
#
# Swap the two inner loops and nothing changes in the arithmetic: the same multiply-adds, in a
# different order.


# %%
@numba.njit
def matmul_ikj(A, B, C):
    """C += A @ B with the two inner loops swapped: the innermost loop runs along a row of C."""
    for i in range(A.shape[0]):
        for p in range(A.shape[1]):
            for j in range(B.shape[1]):
                C[i, j] += A[i, p] * B[p, j]


A = rng.standard_normal((70, 50)).astype(DTYPE)
B = rng.standard_normal((50, 30)).astype(DTYPE)
for f in (matmul_ijk, matmul_ikj):
    C = np.zeros((70, 30), DTYPE)
    f(A, B, C)
    print(f"{f.__name__}: largest difference from A @ B {np.max(np.abs(C - A @ B)):.1e}")

# %% [markdown]
# Both are right (up to float32 rounding, which the section on checking takes seriously). The
# difference is in how they walk through memory. A NumPy array is stored row by row (C order): the
# elements of a row are neighbours in memory, the elements of a column are `N` elements apart. The
# processor never fetches one number from memory: it fetches a *cache line* of 64 bytes, sixteen
# float32 neighbours in a row, and keeps recently used lines in its caches (L1: tens of KiB,
# about 4 cycles away; L2: a MiB or so; main memory: about a hundred times slower than L1). And
# one SIMD instruction can multiply-add a whole vector of 8 or 16 neighbouring float32 at once.
#
# The figure shows what the innermost loop of each version touches: dark blue, the numbers one
# step reads; light blue, what the rest of the loop goes on to read (the arrow shows the
# direction); orange, the entries of C it adds into. The third row is the idea at the heart of
# minivae's kernel and of every BLAS, a register tile.
#
# - **ijk** walks a row of A, fine, but a *column* of B: every element comes from a different
#   cache line, and for large `N` the lines of one column are evicted before the next column could
#   reuse them. Worse, the loop is one running sum, which the compiler may not reorder (that would
#   change the rounding): each multiply-add waits for the previous one to finish, and no SIMD is
#   possible.
# - **ikj** walks a row of B and a row of C: contiguous, and the elements of C are independent, so
#   the compiler turns the loop into SIMD multiply-adds. But every multiply-add needs two loads
#   and a store (C[i, j] is read and written each time), and all of B is read again for every row
#   of C: memory traffic, not arithmetic, sets its speed.
# - **A register tile** keeps a small block of C, say 4 x 4, in sixteen registers for a whole
#   block of the sum. Each step `p` reads four numbers of A (column `p` of the tile's rows) and
#   four of B (row `p` of the tile's columns) and does all sixteen multiply-adds between them;
#   nothing is stored until the block is done. An `r x c` tile does `r c` multiply-adds per
#   `r + c` loads, its *arithmetic intensity*: 2 for a 4 x 4 tile, against 1/2 for ikj (one
#   multiply-add per two loads, plus a store), and more for bigger tiles, up to the number of registers. In
#   minivae each row of the tile is a few whole SIMD vectors wide, so one step is a handful of
#   vector loads feeding a dozen or more vector multiply-adds. Around the tile, *blocking* cuts
#   the sum over k and the rows of A into blocks sized so that the panels being reused stay in
#   the L1 and L2 caches; BLAS also *packs* (copies) each panel into a contiguous buffer first.
#   The comment at the top of `minivae/kernels/gemm.py` gives the tile's shape and the block sizes of
#   minivae's kernel, and why each was chosen.

# %%
GRID = 8  # each matrix drawn as 8 x 8 cells
STEP_COLOR, LOOP_COLOR, WRITE_COLOR = to_rgb("C0"), 0.35 * np.array(to_rgb("C0")) + 0.65, to_rgb("C1")


def draw_matrix(ax, name, step=(), loop=(), written=(), arrow=None):
    """A GRID x GRID picture of a matrix. step: the (row, col) cells one step of the innermost
    loop reads; loop: the cells the rest of that loop reads; written: the cells it adds into;
    arrow: ((row, col), (row, col)), where the loop starts and where it ends."""
    image = np.ones((GRID, GRID, 3))
    for cells, color in ((loop, LOOP_COLOR), (step, STEP_COLOR), (written, WRITE_COLOR)):
        for cell in cells:
            image[cell] = color
    ax.imshow(image, extent=(0, GRID, GRID, 0))
    ax.set_xticks(np.arange(GRID + 1), labels=[])
    ax.set_yticks(np.arange(GRID + 1), labels=[])
    ax.tick_params(length=0)
    ax.grid(True, color="0.6", linewidth=0.6)
    ax.set_title(name, fontsize="medium")
    if arrow is not None:
        (r0, c0), (r1, c1) = arrow
        ax.annotate("", xy=(c1 + 0.5, r1 + 0.5), xytext=(c0 + 0.5, r0 + 0.5),
                    arrowprops=dict(arrowstyle="-|>", color="black", linewidth=1.8))


every = range(GRID)
i, j, p = 2, 5, 3  # where the loops are: the innermost loop's current step
tile_rows, tile_cols = range(4, 8), range(0, 4)
patterns = {
    "ijk: innermost loop over p, one running sum": (
        dict(step=[(i, p)], loop=[(i, q) for q in every], arrow=((i, 0), (i, GRID - 1))),
        dict(step=[(p, j)], loop=[(q, j) for q in every], arrow=((0, j), (GRID - 1, j))),
        dict(written=[(i, j)]),
        "down a column of B: a new cache line for every number; each multiply-add waits for the "
        "last; no SIMD"),
    "ikj: innermost loop over j": (
        dict(step=[(i, p)]),
        dict(step=[(p, j)], loop=[(p, q) for q in every], arrow=((p, 0), (p, GRID - 1))),
        dict(written=[(i, q) for q in every], arrow=((i, 0), (i, GRID - 1))),
        "along rows only: contiguous, SIMD; but 2 loads and a store per multiply-add, "
        "and B is read again for every row of C"),
    "a 4 x 4 register tile: innermost loop over p": (
        dict(step=[(r, p) for r in tile_rows], loop=[(r, q) for r in tile_rows for q in every],
             arrow=((tile_rows[0], 0), (tile_rows[0], GRID - 1))),
        dict(step=[(p, c) for c in tile_cols], loop=[(q, c) for q in every for c in tile_cols],
             arrow=((0, tile_cols[0]), (GRID - 1, tile_cols[0]))),
        dict(written=[(r, c) for r in tile_rows for c in tile_cols]),
        "16 sums held in registers: each step loads 4 + 4 numbers and does 16 multiply-adds"),
}
fig = Figure(figsize=(8.0, 8.4), layout="constrained")
for subfig, (title, (a_cells, b_cells, c_cells, caption)) in zip(fig.subfigures(3, 1), patterns.items()):
    axes = subfig.subplots(1, 3)
    draw_matrix(axes[0], "A  (M x K)", **a_cells)
    draw_matrix(axes[1], "B  (K x N)", **b_cells)
    draw_matrix(axes[2], "C += A B  (M x N)", **c_cells)
    subfig.suptitle(title, fontsize="medium", fontweight="bold")
    subfig.supxlabel(caption, fontsize="small")
fig.suptitle("What the innermost loop touches (each row is contiguous in memory)")
plots.save_figure(fig, course.figure_path(TUTORIAL, "loop_orders.png"))
course.show(fig)

# %% [markdown]
# ## Four ways to multiply, measured
#
# Now the speeds: square float32 products `n x n` for growing `n`, in GFLOP/s, for the two loops
# above, minivae's `kernels.matmul` and NumPy's `A @ B`, which calls a BLAS library.
#
# BLAS runs twice: here, on one thread like the others, and in a separate Python process started
# without the thread limit, on every core.

# %%
sizes = course.size([32, 64, 128, 256, 512, 1024], [32, 64, 128])
BLAS_TIMING = """
import json, sys, time
import numpy as np
sizes, repeats = json.loads(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
best = []
for n in sizes:
    A, B = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    A @ B  # warm up
    number = max(1, 2 ** 24 // n ** 3)  # calls per measurement, so that small ones are not too short
    times = []
    while len(times) < repeats and sum(times) * number < 2.0:  # at most about 2 s per size
        start = time.perf_counter()
        for _ in range(number):
            A @ B
        times.append((time.perf_counter() - start) / number)
    best.append(min(times))
print(json.dumps(best))
"""
all_cores = {key: value for key, value in os.environ.items() if key not in BLAS_THREAD_VARIABLES}
separate_process = subprocess.run([sys.executable, "-c", BLAS_TIMING, json.dumps(sizes), str(REPEATS)],
                                  env=all_cores, capture_output=True, text=True, check=True)
blas_all_cores = json.loads(separate_process.stdout)

methods = {  # name -> function(A, B, C) computing C = A @ B
    "NumPy A @ B (BLAS, one thread)": lambda A, B, C: np.matmul(A, B, out=C),
    "minivae kernels.matmul (one thread)": lambda A, B, C: kernels.matmul(A, B, out=C),
    "loop order ikj": matmul_ikj,
    "textbook loop ijk": matmul_ijk,
}
square = {name: [] for name in methods}
for n in sizes:
    A = rng.standard_normal((n, n)).astype(DTYPE)
    B = rng.standard_normal((n, n)).astype(DTYPE)
    C = np.zeros((n, n), DTYPE)
    times = best_times({name: (lambda f=f: f(A, B, C)) for name, f in methods.items()})
    for name in methods:
        square[name].append(gflops(2 * n ** 3, times[name]))
square[f"NumPy A @ B (BLAS, all {os.cpu_count()} cores)"] = [
    gflops(2 * n ** 3, seconds) for n, seconds in zip(sizes, blas_all_cores)]
for index, n in enumerate(sizes):
    print(f"n = {n:4d}: " + ", ".join(f"{name} {values[index]:.1f}" for name, values in square.items())
          + "  GFLOP/s")

styles = {  # name -> (color, line style): one color per implementation, as in the figures below
    "NumPy A @ B (BLAS, one thread)": ("C0", "-"),
    f"NumPy A @ B (BLAS, all {os.cpu_count()} cores)": ("C0", ":"),
    "minivae kernels.matmul (one thread)": ("C1", "-"),
    "loop order ikj": ("C2", "-"),
    "textbook loop ijk": ("C3", "-"),
}
fig = plots.plot_lines({name: (sizes, square[name]) for name in styles},
                       xlabel="matrix size n (C = A B, all n x n, float32)", ylabel="GFLOP/s (log scale)",
                       title="Speed of a matrix product, measured on this machine", logx=True)
ax = fig.axes[0]
ax.set_yscale("log")
for line, (color, linestyle) in zip(ax.lines, styles.values()):
    line.set_color(color)
    line.set_linestyle(linestyle)
ax.get_legend().remove()
fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize="small")
plots.save_figure(fig, course.figure_path(TUTORIAL, "square_products.png"))
course.show(fig)

# %% [markdown]
# Read the gaps as factors (the y axis is logarithmic). Expect four bands on one thread, and a
# fifth curve:
#
# - **ijk** is the slowest, a few GFLOP/s at best, and it *falls* as `n` grows: once a column of B
#   spans more cache lines than the L1 cache holds, every element of B comes from further away.
# - **ikj**, the same three lines with two swapped, is several times faster and roughly flat: SIMD
#   works, and memory traffic caps it.
# - **minivae's kernel** is several times faster again once `n` reaches a hundred or so; below
#   that, there is too little work per call to pay for the call itself and the ragged edges.
# - **BLAS on one thread** is in the same band as minivae's kernel, ahead or behind by up to a
#   factor of about two depending on the processor: a BLAS picks a micro-kernel written in
#   assembly for each processor family, and on a processor newer than the library it may not use
#   the widest SIMD instructions, whereas numba compiles for the processor it runs on.
# - **BLAS on every core** (dotted) should be faster still for large `n` on an idle machine, up
#   to the number of cores. On a busy one it can collapse instead: a thread that waits for a
#   partner the operating system has descheduled wastes milliseconds, far more than a small
#   product takes. A dotted curve far below the solid blue one is this effect, not BLAS being
#   slow; it is why minivae's products, and this tutorial, use one thread.
#
# Between the textbook loop and the best of the others there are one to two orders of magnitude,
# for the same arithmetic. None of it comes from doing less work; all of it comes from doing the
# work in an order that the memory and the vector units can keep up with.
#
# ## On the model's shapes
#
# Square matrices of size 1024 are not what a VAE computes. minivae's reference model (tutorial 4)
# has an encoder 64 → 256 → 256 → 32 (means and log-variances of 16 latent dimensions) and a
# decoder 16 → 256 → 256 → 1088 (17 logits for each of 64 pixels), trained on minibatches of 64.
# Each linear layer `(in → out)` needs three products per training step, each `2 · 64 · in · out`
# FLOPs: `x @ W` forward, and backward `xᵀ @ g` (the weight gradient, `kernels.matmul_tn`) and
# `g @ Wᵀ` (the gradient sent to the layer below, `kernels.matmul_nt`). The figure measures all
# eighteen, minivae's kernel against the NumPy expression (BLAS, one thread).
#
# These are small products (from 0.5 to 36 million FLOPs), some with a very short side (a sum of
# length 16 into the decoder, 32 columns out of the encoder, a sum of length 64 over the batch in
# `xᵀ @ g`): expect both implementations to run below their speed on large squares, the
# products with a short side the slowest, and the gap between the two to be about what it was on
# squares of a similar size.

# %%
BATCH = 64
model = minivae.VAE(input_dim=64, latent_dim=16)  # the reference model of tutorial 4
layers = [(key.removesuffix(".W"), *W.shape) for key, W in model.params.items() if key.endswith(".W")]
layer_labels = [f"{name}: {n_in} → {n_out}" for name, n_in, n_out in layers]
products = {  # name -> (NumPy expression, minivae kernel), each a function of (x, W, g)
    "forward  x @ W": (lambda x, W, g: x @ W, lambda x, W, g: kernels.matmul(x, W)),
    "weights  xᵀ @ g": (lambda x, W, g: x.T @ g, lambda x, W, g: kernels.matmul_tn(x, g)),
    "input  g @ Wᵀ": (lambda x, W, g: g @ W.T, lambda x, W, g: kernels.matmul_nt(g, W)),
}
implementations = ("NumPy (BLAS, one thread)", "minivae (numba)")
product_seconds = {(product, impl): [] for product in products for impl in implementations}
for name, n_in, n_out in layers:
    x = rng.standard_normal((BATCH, n_in)).astype(DTYPE)
    W = rng.standard_normal((n_in, n_out)).astype(DTYPE)
    g = rng.standard_normal((BATCH, n_out)).astype(DTYPE)
    contestants = {(product, impl): (lambda f=f: f(x, W, g))
                   for product, pair in products.items() for impl, f in zip(implementations, pair)}
    for key, seconds in best_times(contestants).items():
        product_seconds[key].append(seconds)
flops = np.array([2 * BATCH * n_in * n_out for _, n_in, n_out in layers])

fig = Figure(figsize=(11, 3.8), layout="constrained")
axes = fig.subplots(1, len(products), sharey=True)
positions = np.arange(len(layers))
for ax, product in zip(axes, products):
    for offset, impl, color in zip((-0.2, 0.2), implementations, ("C0", "C1")):
        speed = gflops(flops, np.array(product_seconds[product, impl]))
        ax.barh(positions + offset, speed, height=0.4, color=color, alpha=0.85, label=impl)
    ax.set_title(product, fontsize="medium")
    ax.set_xlabel("GFLOP/s")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_axisbelow(True)
axes[0].set_yticks(positions, layer_labels)
axes[0].invert_yaxis()
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2)
fig.suptitle(f"The 18 products of a training step (batch {BATCH}, float32; higher is faster)")
plots.save_figure(fig, course.figure_path(TUTORIAL, "model_products.png"))
for impl in implementations:
    total = sum(sum(product_seconds[product, impl]) for product in products)
    print(f"{impl:24s} all 18 products: {total * 1e3:.3f} ms "
          f"({gflops(3 * flops.sum(), total):.1f} GFLOP/s overall)")
course.show(fig)

# %% [markdown]
# ## Checking a kernel against its reference
#
# A fast kernel is worth nothing if it is wrong, and a kernel is easy to get subtly wrong (an edge
# tile, a block boundary, an index off by one). Every kernel in `minivae/kernels/` has a reference:
# the leaf operation of the same name in `minivae/ops.py` (for the products, NumPy's own `x @ W`),
# and `tests/test_kernels.py` compares the two. But compare *how*? In float32 the two will not agree
# exactly: both round after every addition, and they add in different orders (SIMD lanes, blocks
# of k, fused multiply-adds that round once instead of twice).
#
# How far apart may they be? The classical bound (Higham, *Accuracy and Stability of Numerical
# Algorithms*, ch. 3) for a sum of `k` products, added in any order, is
#
# $$|\hat c_{ij} - c_{ij}| \le \gamma_k \sum_p |a_{ip}|\,|b_{pj}|, \qquad \gamma_k \approx k u,$$
#
# with `u = 2⁻²⁴ ≈ 6e-8` the unit roundoff of float32. Two things follow. The error is relative to
# `|A| |B|`, not to `C`: an entry of C that is nearly zero through cancellation carries a rounding
# error as large as its neighbours', so its *relative* error can be anything. And the bound grows
# with `k`: a tolerance that suits short sums is too tight for long ones.
#
# The figure measures it: float32 products against an exact float64 reference as `k` grows. The
# entries of A and B are drawn from [0, 1), all positive, so `|A| |B| = C` and nothing cancels:
# the partial sums only grow, each addition rounds a larger number, and the errors accumulate.
# They accumulate more slowly than the worst case, because roundings go up and down at random: a
# random-walk estimate, `√k · u`, describes one long running sum better.

# %%
u = np.finfo(np.float32).eps / 2  # unit roundoff of float32, 2**-24


def ijk_product(A, B):
    """A @ B by the textbook loop."""
    C = np.zeros((A.shape[0], B.shape[1]), A.dtype)
    matmul_ijk(A, B, C)
    return C


k_values = course.size([16, 64, 256, 1024, 4096, 16384], [16, 64, 256, 1024])
error_methods = {
    "NumPy A @ B (BLAS)": lambda A, B: A @ B,
    "minivae kernels.matmul": lambda A, B: kernels.matmul(A, B),
    "textbook loop ijk": lambda A, B: ijk_product(A, B),
}
errors = {name: [] for name in error_methods}
for k in k_values:
    A = rng.random((64, k)).astype(DTYPE)
    B = rng.random((k, 64)).astype(DTYPE)
    exact = A.astype(np.float64) @ B.astype(np.float64)  # its own rounding is ~1e-9 times smaller
    for name, f in error_methods.items():
        errors[name].append(np.max(np.abs(f(A, B) - exact) / exact))  # exact = |A| |B| here
curves = {name: (k_values, values) for name, values in errors.items()}
k_grid = np.array(k_values, dtype=float)
curves["worst-case bound k·u"] = (k_grid, k_grid * u)
curves["random-walk estimate √k·u"] = (k_grid, np.sqrt(k_grid) * u)
fig = plots.plot_lines(curves, xlabel="length of each sum k  (C = A B, A: 64 x k, B: k x 64)",
                       ylabel="largest |error| / (|A| |B|)  (log scale)",
                       title="float32 rounding error against the length of the sums", logx=True)
ax = fig.axes[0]
ax.set_yscale("log")
textbook = ax.lines[2]  # drawn wide and pale, so that a curve on top of it stays visible
textbook.set(color="C3", linewidth=5, alpha=0.4, zorder=1)
for line in ax.lines[len(error_methods):]:
    line.set_linestyle("--")
    line.set_color("0.3" if "bound" in line.get_label() else "0.6")
    line.set_marker("")
ax.legend(loc="upper left", fontsize="small")
plots.save_figure(fig, course.figure_path(TUTORIAL, "float32_error.png"))
for name, values in errors.items():
    print(f"{name:24s} k = {k_values[-1]}: error / (|A||B|) = {values[-1]:.1e}  "
          f"(√k·u = {np.sqrt(k_values[-1]) * u:.1e}, k·u = {k_values[-1] * u:.1e})")
worst_ratio = max(float(np.max(np.asarray(values) / (np.asarray(k_values) * u))) for values in errors.values())
course.claim(worst_ratio < 1,
             f"every curve stays below the worst-case line k·u (at most {worst_ratio:.2f} of it)")
course.show(fig)

# %% [markdown]
# Every curve stays below the worst-case line, with room to spare. The textbook loop is one
# running sum per entry of C, and it follows the random-walk line. A product that adds up each
# block of k on its own and then adds the block sums together splits one long sum into short
# ones, and its error hardly grows with `k` (BLAS libraries usually work this way: a flat curve
# is that). Which of the two behaviours minivae's kernel shows depends on whether its register
# tile starts each block of k from zero or carries on from the previous block; the figure says.
# Either way the summation order is a property of the kernel, and the test must allow for it.
#
# So a test of a float32 product scales the difference by `|A| |B|` and allows a tolerance that
# grows with `k`. Here is the check, on entries of both signs this time (so that some entries of
# C come out near zero), after a naive fixed relative tolerance: NumPy's `assert_allclose`
# requires `|actual - desired| ≤ rtol · |desired|`, entry by entry.

# %%
k = k_values[-1]
A = rng.standard_normal((64, k)).astype(DTYPE)
B = rng.standard_normal((k, 64)).astype(DTYPE)
C_kernel, C_twin = kernels.matmul(A, B), A @ B
try:
    np.testing.assert_allclose(C_kernel, C_twin, rtol=1e-5)
    print("a fixed rtol=1e-5 passed this time (no entry of C happened to be near zero)")
except AssertionError as failure:
    summary = [line.strip() for line in str(failure).splitlines() if "relative" in line.lower()]
    print("a fixed rtol=1e-5 fails:", "; ".join(summary))

scale = np.abs(A).astype(np.float64) @ np.abs(B).astype(np.float64)
# each result is within k·u·|A||B| of the exact product, so the two are within twice that
np.testing.assert_allclose(C_kernel / scale, C_twin / scale, rtol=0, atol=2 * k * u)
print(f"scaled check passes: largest |kernel - twin| / (|A||B|) = "
      f"{np.max(np.abs(C_kernel - C_twin) / scale):.1e} ≤ 2·k·u = {2 * k * u:.1e}")

# %% [markdown]
# The fixed tolerance fails on entries of C that came out near zero, where the relative error is
# large although the kernel is right. The scaled check passes with a wide margin: the bound is a
# guarantee, and guarantees are loose. At large `k`, too loose to catch every bug: one term
# missing from a sum changes an entry by about `|A| |B| / k`, which for `k` above a few thousand is
# below `2 k u |A| |B|`. So the tests that hunt for bugs run in float64, whose `u ≈ 1.1e-16` is
# half a billion times smaller, on small shapes that cross every edge and block boundary: sizes
# that are not multiples of the tile, a single element, short and long sums, all three products.
# (`tests/test_kernels.py` also shrinks the block sizes, so that tiny shapes cross every block
# boundary.) The float32 check then only confirms that the float32 kernels round as expected.

# %%
u64 = np.finfo(np.float64).eps / 2
checks = {  # name -> (kernel, reference, operand shapes given (M, K, N), scale of the result)
    "matmul": (kernels.matmul, lambda a, b: a @ b,
               lambda M, K, N: [(M, K), (K, N)], lambda a, b: np.abs(a) @ np.abs(b)),
    "matmul_nt": (kernels.matmul_nt, lambda g, W: g @ W.T,
                  lambda M, K, N: [(M, N), (K, N)], lambda g, W: np.abs(g) @ np.abs(W).T),
    "matmul_tn": (kernels.matmul_tn, lambda x, g: x.T @ g,
                  lambda M, K, N: [(M, K), (M, N)], lambda x, g: np.abs(x).T @ np.abs(g)),
}
awkward_shapes = [(1, 1, 1), (7, 5, 3), (65, 7, 130), (9, 300, 6), (64, 256, 1088)]
worst = 0.0
for name, (kernel, twin, shapes, scale_of) in checks.items():
    for M, K, N in awkward_shapes:
        a, b = (rng.standard_normal(shape) for shape in shapes(M, K, N))
        result, expected, scale = kernel(a, b), twin(a, b), scale_of(a, b)
        length = a.shape[0] if name == "matmul_tn" else a.shape[1]  # the length of each sum
        np.testing.assert_allclose(result / scale, expected / scale, rtol=0, atol=2 * length * u64)
        worst = max(worst, np.max(np.abs(result - expected) / scale) / (length * u64))
print(f"float64: 3 products x {len(awkward_shapes)} shapes pass; the worst error is "
      f"{worst:.2f} · k·u·|A||B|")

# %% [markdown]
# ## Fusion: fewer passes over memory
#
# The other kernels in `minivae/kernels/` are not about products: they *fuse* passes. NumPy
# evaluates `np.where(v > 0, v, 0.01 * v)` after `v = x @ W + b` as separate whole-array
# operations, each one reading its inputs from memory and writing a fresh temporary: `+ b`,
# `v > 0`, `0.01 * v`, `where`. A fused kernel reads each number once and does all of it while
# the number is in a register. That pays most where there is much elementwise work and little
# arithmetic:
#
# - `kernels.dense_forward` is `act(x @ W + b)`: the product, then one pass for bias and
#   activation; `dense_backward` computes `g = dL/da · act'` and the bias gradient `Σ_n g` in one
#   pass, then the two products.
# - `kernels.categorical_log_prob` is the decoder's likelihood: for each of the 64 × 64
#   pixels of a batch a log-softmax over 17 values, the log-probability of the observed value and
#   the gradient `onehot − softmax`. Its reference in `minivae.ops` makes about ten passes over the
#   64 × 1088 logits; the kernel makes one pass per image, inside the L1 cache. (The backward then
#   scales that gradient by `dL/dlog p` of each row, one pass, the same code on both backends.)
# - `kernels.adamax_update` reads each parameter, its gradient and its two moments once and writes
#   three of them once, where NumPy makes about eight passes (and temporaries) over arrays of the
#   size of the whole model.
#
# The latent code (64 × 16 numbers: the sample, the KL and their backward) has no kernel: at that
# size the fixed cost of a call is most of the time, and both backends run the NumPy code of
# `minivae.ops`.
#
# The figure times each kernel against its reference on the reference model's shapes (log scale, the
# speed-up written beside each pair). Expect the categorical likelihood and the optimizer step to
# gain a lot: they are all elementwise work. A dense layer's time is mostly its product, so its
# speed-up is mostly the gap between the two products of the previous figure; the printed lines
# subtract each product, timed alone, to show the elementwise part, which fusion shrinks. On tiny
# arrays (the latent code) the time is mostly the fixed cost of each call, NumPy's per operation
# and the kernel's checks of its arguments, so fusion saves calls rather than memory traffic.

# %%
def dense_layer(n_in, n_out, activation):
    """Forward and backward of one layer of the reference model, each a function of the
    implementation to call (the kernel or its reference in minivae.ops)."""
    x = rng.standard_normal((BATCH, n_in)).astype(DTYPE)
    W = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(DTYPE)
    b = rng.standard_normal(n_out).astype(DTYPE)
    _, cache = ops.dense_forward(x, W, b, activation)
    da = rng.standard_normal((BATCH, n_out)).astype(DTYPE)
    return (lambda dense_forward: dense_forward(x, W, b, activation),
            lambda dense_backward: dense_backward(da, cache, activation))


hidden_forward, hidden_backward = dense_layer(256, 256, "leaky_relu")
output_forward, output_backward = dense_layer(256, 1088, "identity")
x_digits, _ = minivae.datasets.load_digits("train")
x_int = x_digits[:BATCH].astype(np.int64)
logits = rng.standard_normal((BATCH, 64 * 17)).astype(DTYPE)
weight = np.full(BATCH, -1 / BATCH, DTYPE)  # dloss/dlog p(x|z) of each example
adamax_arrays = [(p.copy(), 1e-3 * np.ones_like(p), np.zeros_like(p), np.zeros_like(p))
                 for p in model.params.values()]  # p, g, m, u of every parameter


def adamax_all(update):
    for p, g, m, u_state in adamax_arrays:
        update(p, g, m, u_state, lr=2e-3, t=1)


K = kernels
fused = {  # label -> (NumPy reference of minivae.ops, numba kernel), functions of no arguments
    "dense forward 256 → 256, leaky ReLU": (
        lambda: hidden_forward(ops.dense_forward), lambda: hidden_forward(K.dense_forward)),
    "dense backward 256 → 256, leaky ReLU": (
        lambda: hidden_backward(ops.dense_backward), lambda: hidden_backward(K.dense_backward)),
    "dense forward 256 → 1088 (decoder output)": (
        lambda: output_forward(ops.dense_forward), lambda: output_forward(K.dense_forward)),
    "dense backward 256 → 1088 (decoder output)": (
        lambda: output_backward(ops.dense_backward), lambda: output_backward(K.dense_backward)),
    "categorical log p(x|z) and its gradient": (
        lambda: ops.categorical_log_prob(logits, x_int), lambda: K.categorical_log_prob(logits, x_int)),
    f"Adamax step, all {len(adamax_arrays)} parameter arrays": (
        lambda: adamax_all(ops.adamax_update), lambda: adamax_all(K.adamax_update)),
}
fused_seconds = {}
for label, (twin, kernel) in fused.items():
    times = best_times({"twin": twin, "kernel": kernel})
    fused_seconds[label] = (times["twin"], times["kernel"])
    print(f"{label:44s} NumPy reference {times['twin'] * 1e6:7.1f} µs, kernel {times['kernel'] * 1e6:7.1f} µs")

# A dense layer is a product plus elementwise work: subtract each implementation's product, timed
# alone in the previous section, to see the elementwise part (a difference of two noisy timings:
# a rough estimate)
layer_index = {(n_in, n_out): k for k, (_, n_in, n_out) in enumerate(layers)}
for label, shape in (("dense forward 256 → 256, leaky ReLU", (256, 256)),
                     ("dense forward 256 → 1088 (decoder output)", (256, 1088))):
    elementwise = [seconds - product_seconds["forward  x @ W", impl][layer_index[shape]]
                   for seconds, impl in zip(fused_seconds[label], implementations)]
    print(f"{label}: bias and activation take about {max(elementwise[0], 0) * 1e6:.0f} µs in the "
          f"twin, {max(elementwise[1], 0) * 1e6:.0f} µs fused")

labels = list(fused_seconds)
fig = Figure(figsize=(8.0, 4.4), layout="constrained")
ax = fig.add_subplot()
positions = np.arange(len(labels))
for offset, column, name, color in ((-0.2, 0, "NumPy reference", "C0"), (0.2, 1, "numba kernel", "C1")):
    ax.barh(positions + offset, [fused_seconds[label][column] * 1e6 for label in labels],
            height=0.4, color=color, alpha=0.85, label=name)
for position, label in zip(positions, labels):
    twin_seconds, kernel_seconds = fused_seconds[label]
    ax.annotate(f"× {twin_seconds / kernel_seconds:.1f}",
                (max(twin_seconds, kernel_seconds) * 1e6, position),
                xytext=(5, 0), textcoords="offset points", va="center", fontsize="small")
ax.set_yticks(positions, labels)
ax.invert_yaxis()
ax.set_xscale("log")
ax.set_xlim(right=ax.get_xlim()[1] * 2.5)  # room for the speed-ups
ax.set_xlabel("time per call, µs (log scale);  × n: the kernel is n times as fast as its reference")
ax.set_title(f"Fused kernels against their NumPy references (batch {BATCH}, float32)")
ax.grid(True, axis="x", alpha=0.3)
ax.set_axisbelow(True)
fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2)
plots.save_figure(fig, course.figure_path(TUTORIAL, "fusion.png"))
course.show(fig)

# %% [markdown]
# ## A whole training step, both backends
#
# Finally the number that matters: one step of training, `model.loss_and_grads` on a minibatch of
# 64 digits and one Adamax update, with the "numpy" backend (the reference code of tutorial 2,
# its products done by BLAS) and the "numba" backend (the kernels above). Both compute the same
# loss and gradients up to rounding; we check that first.

# %%
batch = x_digits[:BATCH]
eps = rng.standard_normal((BATCH, 16)).astype(DTYPE)
steps = {backend: (minivae.VAE(input_dim=64, latent_dim=16, seed=0, backend=backend),
                   minivae.Adamax(lr=2e-3, backend=backend)) for backend in ("numpy", "numba")}
(loss_numpy, grads_numpy), (loss_numba, grads_numba) = (
    step_model.loss_and_grads(batch, eps) for step_model, _ in steps.values())
worst_gradient = max(np.max(np.abs(grads_numba[key] - grads_numpy[key])) / np.max(np.abs(grads_numpy[key]))
                     for key in grads_numpy)
print(f"loss: numpy {loss_numpy:.5f}, numba {loss_numba:.5f}; largest gradient difference "
      f"{worst_gradient:.1e} of the largest gradient entry")
course.claim(abs(loss_numpy - loss_numba) < 1e-5 * abs(loss_numpy) and worst_gradient < 1e-4,
             f"both backends compute the same loss and gradients, to float32 rounding "
             f"({abs(loss_numpy - loss_numba):.1e} nats, {worst_gradient:.1e})")

# %% [markdown]
# How much arithmetic is in a step? Nearly all of it is in the products: each layer's three
# products cost `2 · 64 · in · out` FLOPs each, except that the encoder's first layer needs no
# gradient with respect to the data (both backends skip that product). That is about 166 million FLOPs. Everything else (activations, biases,
# the softmax over 64 × 1088 logits, the KL, the optimizer's update of about 440 000 parameters)
# is elementwise work, a few million operations: a few percent of the arithmetic.
#
# FLOPs are not time, though. The figure splits each backend's step into its products (the
# eighteen measured above less the one both backends skip), the likelihood (log-softmax and its gradient),
# the optimizer step, each timed on its own, and the rest (activations, biases, the KL, and the
# Python that calls them all). Expect the products to be the largest single part, but well short
# of "nearly all": elementwise work does little arithmetic per number it reads and writes, so its
# cost is memory traffic and the fixed cost of each call (the optimizer alone reads four arrays
# the size of the whole model and writes three). That is the part fusion attacks.

# %%
def training_step(step_model, optimizer):
    _, grads = step_model.loss_and_grads(batch, eps)
    optimizer.step(step_model.params, grads)


likelihood = steps["numpy"][0].likelihood  # minivae.likelihoods' categorical


def likelihood_on(backend):
    log_px, cache = likelihood.forward(batch, logits, {}, backend)
    likelihood.backward(weight, cache, {})


optimizer_params = {backend: {key: p.copy() for key, p in steps[backend][0].params.items()}
                    for backend in steps}
optimizers = {backend: minivae.Adamax(lr=2e-3, backend=backend) for backend in steps}
parts = {
    ("numpy", "step"): lambda: training_step(*steps["numpy"]),
    ("numba", "step"): lambda: training_step(*steps["numba"]),
    ("numpy", "likelihood"): lambda: likelihood_on("numpy"),
    ("numba", "likelihood"): lambda: likelihood_on("numba"),
    ("numpy", "optimizer"): lambda: optimizers["numpy"].step(optimizer_params["numpy"], grads_numpy),
    ("numba", "optimizer"): lambda: optimizers["numba"].step(optimizer_params["numba"], grads_numba),
}
part_seconds = best_times(parts, repeats=course.size(30, 5))

step_flops = 3 * flops.sum() - 2 * BATCH * layers[0][1] * layers[0][2]  # no dx for the data
breakdown = {}  # backend -> {part: seconds}
for backend, impl in zip(("numpy", "numba"), implementations):
    in_products = sum(sum(product_seconds[product, impl]) for product in products)
    in_products -= product_seconds["input  g @ Wᵀ", impl][0]  # both backends skip the first layer's g @ Wᵀ
    step = part_seconds[backend, "step"]
    breakdown[backend] = {"matrix products": in_products,
                          "likelihood (softmax)": part_seconds[backend, "likelihood"],
                          "optimizer (Adamax)": part_seconds[backend, "optimizer"]}
    # timed alone, the parts can add up to more than the step: the rest is then shown as zero
    breakdown[backend]["everything else"] = max(step - sum(breakdown[backend].values()), 0.0)
    print(f"{backend:5s} backend: step {step * 1e3:.2f} ms = " + " + ".join(
        f"{part} {seconds * 1e3:.2f}" for part, seconds in breakdown[backend].items())
        + f" ms; {gflops(step_flops, step):.0f} GFLOP/s over the step, "
        f"{gflops(step_flops, in_products):.0f} GFLOP/s in the products alone")
print(f"{step_flops / 1e6:.0f} MFLOP in the products of a step; the numba step is "
      f"{part_seconds['numpy', 'step'] / part_seconds['numba', 'step']:.1f} times as fast as the numpy step")

fig = Figure(figsize=(8.0, 3.0), layout="constrained")
ax = fig.add_subplot()
names = [f'"{backend}" backend' for backend in breakdown]
left = np.zeros(len(names))
colors = {"matrix products": "C5", "likelihood (softmax)": "C2", "optimizer (Adamax)": "C4",
          "everything else": "0.75"}
for part, color in colors.items():
    widths = np.array([breakdown[backend][part] for backend in breakdown]) * 1e3
    ax.barh(names, widths, left=left, color=color, alpha=0.9, label=part)
    left += widths
for position, backend in enumerate(breakdown):
    step = part_seconds[backend, "step"]
    ax.annotate(f"{step * 1e3:.2f} ms\n{gflops(step_flops, step):.0f} GFLOP/s", (left[position], position),
                xytext=(5, 0), textcoords="offset points", va="center", fontsize="small")
ax.invert_yaxis()
ax.set_xlim(0, 1.25 * left.max())
ax.set_xlabel("time of one training step, ms (batch 64: loss_and_grads, then an Adamax step)")
ax.set_title("Where the time of a training step goes")
ax.grid(True, axis="x", alpha=0.3)
ax.set_axisbelow(True)
fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize="small")
plots.save_figure(fig, course.figure_path(TUTORIAL, "training_step.png"))
course.show(fig)

# %% [markdown]
# Read the two bars part by part. The products cost what the previous sections measured for each
# implementation. The likelihood and the optimizer shrink several times over with the numba
# backend, as in the fusion figure, and so does the rest, where each layer's bias, activation
# and their gradients become one pass instead of several. The numba step should come out faster
# than the NumPy one by a modest factor, well short of the factors between the loops in the
# first figures: BLAS already does the products well, and the products are about half the step.
# (The parts are timed on their own, so the split is an estimate: inside a step their inputs may
# no longer be in the cache.)
#
# The GFLOP/s of a whole step is the number to compare with the square products: a step of this
# small model runs at a fraction of what the same kernels reach on large matrices, because its
# products are small and short-sided and because of everything around them. Larger batches make
# every product bigger, the same elementwise work per example a smaller share, and raise it; that
# is one reason large models train closer to a processor's peak than small ones.
#
# ## What to take away
#
# - A matrix product's speed is set by memory traffic, not arithmetic. The textbook loop and BLAS
#   do the same multiply-adds; their speeds differ by one to two orders of magnitude. Walking
#   along rows, SIMD, a register tile (many multiply-adds per number loaded) and cache blocking
#   close the gap, and minivae's kernel does each of these in plain numba.
# - Compare like with like: one thread against one thread, best of several runs taken
#   round-robin with `time.perf_counter`, after a first call. numba compiles on the first call
#   with new argument types; `cache=True` keeps the machine code on disk for the next process.
# - Check a kernel against its plain NumPy reference. In float32, divide the difference by `|A| |B|`
#   and let the tolerance grow with the length `k` of the sums (`γ_k ≈ k u`): a fixed relative
#   tolerance fails on entries near zero. Hunt for bugs in float64, on awkward shapes that cross
#   every edge and block boundary.
# - Fusion pays where the work is elementwise (the softmax, the optimizer step, bias and
#   activation): one pass over memory instead of several. Where a product dominates, its speed
#   decides; on tiny arrays, the fixed cost of each call does.
# - In a training step of the reference model the products hold nearly all the FLOPs but only
#   about half the time; the numba backend is faster by fusing the rest, and by as much as its
#   products beat BLAS's on the machine at hand.

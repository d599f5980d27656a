"""``minivae bench``: how fast the kernels and a training step run on this machine, side by side.

    minivae bench                   # about a minute: the table below, printed
    minivae bench --json out.json   # the same, also written as JSON
    minivae bench --train           # and the wall time of whole training runs (a few minutes)
    minivae bench --quick           # tiny settings that run in seconds (for tests)
    minivae bench --short           # every part, fewer repeats (about half the time)

What it measures, each part in a fresh subprocess whose thread counts are fixed through the
environment (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS, NUMBA_NUM_THREADS, and
``torch.set_num_threads``) before NumPy, numba or PyTorch start their thread pools:

* **Matrix products.** GFLOP/s (2 M N K flops over the best time) of the hand-written products of
  :mod:`minivae.kernels` (``matmul`` x @ W, ``matmul_tn`` x.T @ g, ``matmul_nt`` g @ W.T) and of
  NumPy's BLAS (``np.matmul`` into a preallocated ``out``) on the three products of every linear
  layer of the reference model (batch 64) and at 1024 x 1024 x 1024, float32 and float64, one thread;
  1024³ also with all cores. The "winner" column says which is faster for that shape.
* **Fused layers.** ``kernels.dense_forward`` / ``dense_backward`` against their NumPy references in ``minivae.ops``
  (``act(x @ W + b)`` and its backward), on the reference model's layers, float32, one thread.
* **Training steps per second** of the reference model (VAE(64, 16), hidden (256, 256) LeakyReLU,
  categorical likelihood with 17 values, Adamax 1e-3, batch 64, float32): one step is what
  :func:`minivae.fit` does per minibatch (draw eps, loss and gradients, optimizer step), for the
  numpy and numba backends and, when they are installed (never dependencies), the same model in
  PyTorch eager, with ``torch.compile``, and in JAX with the whole step under ``jax.jit``; with one
  thread and with all cores. Each step's matrix products are counted (:func:`step_flops`) and their
  rate is given as a fraction of the machine's peak, the best float32 product rate measured in the
  same run with as many threads.
* **An MNIST-sized step** (784 inputs, hidden 512-256, Bernoulli, batch 128): numba against
  PyTorch eager, one thread and all cores.
* **Memory.** Peak resident memory (ru_maxrss) of a process that trains the reference model for a
  few epochs, next to that of a process that only imports minivae and NumPy.
* **Compile time.** A process that runs one float32 training step with the numba backend, timed
  with an empty numba cache (``NUMBA_CACHE_DIR`` a fresh temporary folder: everything compiles) and
  again with that cache filled (everything loads from disk).
* **Whole training runs** (``--train``, off by default): wall time of ``minivae train --out DIR``
  (the defaults, figures included) with one thread and with all cores, cold and warm numba cache,
  and of the PyTorch reference trained in the same setting (see :func:`_torch_train_worker`).

Every time is the best of several repeats: the minimum is the least disturbed by other work on the
machine. The load average before and after is recorded: numbers taken under load are slower.

Only the standard library is imported here at module level, so that ``minivae --help`` stays fast.
PyTorch is never a dependency: the PyTorch rows say "not installed" when it is missing.
"""

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

from .reference import REFERENCE

# The reference model (the setting of ``minivae train``), read from minivae.reference.
INPUT_DIM = REFERENCE.input_dim
LATENT_DIM = REFERENCE.latent_dim
HIDDEN = REFERENCE.hidden
NUM_VALUES = REFERENCE.num_values
BATCH_SIZE = REFERENCE.batch_size
LEARNING_RATE = REFERENCE.lr
LEAKY_RELU_SLOPE = REFERENCE.leaky_relu_slope
GEMM_BIG = 1024  # the 1024 x 1024 x 1024 product
FAMILY_STEPS = ("iwae50", "vamp50")
MNIST_ROWS, MNIST_INPUT_DIM, MNIST_HIDDEN, MNIST_BATCH_SIZE = 60000, 784, (512, 256), 128  # an MNIST-sized run
BUSY_SPREAD = 1.25  # repeats of one measurement whose slowest is 25% above the fastest: the machine was busy  # the model family's most expensive steps (see minivae.variants)

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
WORKER_TIMEOUT_SECONDS = 900  # one subprocess; a whole --train run of PyTorch takes about a minute

# Repeats and the shortest time of one repeat. The minimum over repeats is reported.
SETTINGS = {
    "full": dict(repeats=7, min_seconds=0.02, big_repeats=3, step_repeats=5, step_count=100,
                 memory_epochs=5, big=True, torch=True, all_cores=True, cold_compile=True),
    "quick": dict(repeats=2, min_seconds=0.002, big_repeats=1, step_repeats=2, step_count=5,
                  memory_epochs=1, big=False, torch=False, all_cores=False, cold_compile=False),
    # every part of "full" (PyTorch, JAX, all cores), with fewer repeats: about half the time
    "short": dict(repeats=3, min_seconds=0.01, big_repeats=2, step_repeats=3, step_count=40,
                  memory_epochs=2, big=True, torch=True, all_cores=True, cold_compile=False),
}
# The other programs a step is compared with, each when it is installed (never a dependency):
# PyTorch eager, PyTorch with torch.compile (TorchInductor; compiling takes about a minute), JAX jit.
OTHER_STEP_BACKENDS = ("torch", "torch-compile", "jax")


def reference_layers():
    """The linear layers of the reference model, (name, in_dim, out_dim, activation), in the order
    they run forward: the encoder 64 -> 256 -> 256 -> 2 * 16, the decoder 16 -> 256 -> 256 -> 64 * 17."""
    encoder = [INPUT_DIM, *HIDDEN, 2 * LATENT_DIM]
    decoder = [LATENT_DIM, *HIDDEN[::-1], INPUT_DIM * NUM_VALUES]
    layers = []
    for name, sizes in (("encoder", encoder), ("decoder", decoder)):
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            activation = "leaky_relu" if i < len(sizes) - 2 else "identity"
            layers.append((f"{name}.{i}", n_in, n_out, activation))
    return layers


def product_shapes(batch=BATCH_SIZE):
    """The matrix products of a training step: (op, M, K, N) for each layer's x @ W, x.T @ g, g @ W.T.

    C is (M, N) and K is the summed dimension. Layers of the same shape appear once.
    """
    shapes = []
    for _, n_in, n_out, _ in reference_layers():
        for shape in (("matmul", batch, n_in, n_out), ("matmul_tn", n_in, batch, n_out),
                      ("matmul_nt", batch, n_out, n_in)):
            if shape not in shapes:
                shapes.append(shape)
    return shapes


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------

def best_seconds(fn, repeats, min_seconds):
    """The best time of one call of ``fn``, in seconds.

    One call warms up and calibrates n, the calls per repeat, so that a repeat lasts at least
    ``min_seconds``; the result is the smallest mean over ``repeats`` repeats of n calls.
    """
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    n = max(1, math.ceil(min_seconds / max(first, 1e-9)))
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best


# --------------------------------------------------------------------------------------------------
# Workers: each runs in its own process, reads its options, prints one JSON line
# --------------------------------------------------------------------------------------------------

def _gemm_worker(options):
    """GFLOP/s of the kernels and of np.matmul on the given shapes and dtypes."""
    import numpy as np

    from . import kernels

    kernels.gemm.GEMM_ROUTE = "kernel"  # time the hand-written kernel itself; the route it would take is reported
    if options.get("threaded_kernels"):
        kernels.gemm.GEMM_THREADS = None  # the kernels' opt-in threading: numba.get_num_threads()
    rng = np.random.default_rng(0)
    records = []
    for op, M, K, N in options["shapes"]:
        for dtype_name in options["dtypes"]:
            dtype = np.dtype(dtype_name)
            if op == "matmul":  # C = A @ B
                a, b = rng.standard_normal((M, K)), rng.standard_normal((K, N))
            elif op == "matmul_tn":  # C = A.T @ B
                a, b = rng.standard_normal((K, M)), rng.standard_normal((K, N))
            else:  # C = A @ B.T
                a, b = rng.standard_normal((M, K)), rng.standard_normal((N, K))
            a, b = a.astype(dtype), b.astype(dtype)
            out = np.empty((M, N), dtype)
            a_op = a.T if op == "matmul_tn" else a
            b_op = b.T if op == "matmul_nt" else b
            kernel = getattr(kernels, op)
            seconds = {
                "kernel": best_seconds(lambda: kernel(a, b, out=out), options["repeats"],
                                       options["min_seconds"]),
                "blas": best_seconds(lambda: np.matmul(a_op, b_op, out=out), options["repeats"],
                                     options["min_seconds"]),
            }
            flops = 2.0 * M * N * K
            records.append({
                "op": op, "M": M, "K": K, "N": N, "dtype": dtype_name,
                "kernel_gflops": flops / seconds["kernel"] / 1e9,
                "blas_gflops": flops / seconds["blas"] / 1e9,
                "kernel_us": seconds["kernel"] * 1e6, "blas_us": seconds["blas"] * 1e6,
                "winner": min(seconds, key=seconds.get),
            })
    return {"records": records}


def _dense_worker(options):
    """Microseconds of the fused layer kernels and of their NumPy references on the reference layers."""
    import numpy as np

    from . import kernels, ops

    rng = np.random.default_rng(0)
    dtype = np.dtype(options["dtype"])
    records = []
    for name, n_in, n_out, activation in reference_layers():
        x = rng.standard_normal((BATCH_SIZE, n_in)).astype(dtype)
        W = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(dtype)
        b = rng.standard_normal(n_out).astype(dtype)
        da = rng.standard_normal((BATCH_SIZE, n_out)).astype(dtype)
        _, cache = ops.dense_forward(x, W, b, activation, LEAKY_RELU_SLOPE)
        need_dx = name != "encoder.0"  # as in training: the data needs no gradient
        row = {"layer": name, "in": n_in, "out": n_out, "activation": activation}
        for part, fused, reference in (
                ("forward", lambda: kernels.dense_forward(x, W, b, activation, LEAKY_RELU_SLOPE),
                 lambda: ops.dense_forward(x, W, b, activation, LEAKY_RELU_SLOPE)),
                ("backward", lambda: kernels.dense_backward(da, cache, activation, LEAKY_RELU_SLOPE, need_dx),
                 lambda: ops.dense_backward(da, cache, activation, LEAKY_RELU_SLOPE, need_dx))):
            row[f"{part}_fused_us"] = best_seconds(fused, options["repeats"], options["min_seconds"]) * 1e6
            row[f"{part}_numpy_us"] = best_seconds(reference, options["repeats"], options["min_seconds"]) * 1e6
        records.append(row)
    return {"records": records}


def _reference_batches():
    """The training digits as float32 and a fixed shuffled order of full minibatches."""
    import numpy as np

    from . import datasets

    x, _ = datasets.load_digits("train")
    x = x.astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    n_batches = len(x) // BATCH_SIZE
    return [np.ascontiguousarray(x[order[i * BATCH_SIZE:(i + 1) * BATCH_SIZE]]) for i in range(n_batches)]


def _step_worker(options):
    """Milliseconds per training step of the reference model (or of ``options["variant"]``, a member of
    the model family of :mod:`minivae.variants`, or "mnist", the MNIST-sized model) with one backend:
    "numpy", "numba", "torch" (eager), "torch-compile" or "jax" (``jax.jit``)."""
    if options["backend"] in ("torch", "torch-compile"):
        return _torch_step_worker(options)
    if options["backend"] == "jax":
        return _jax_step_worker(options)
    import numpy as np

    from .optim import Adamax
    from .vae import VAE

    backend = options["backend"]
    if backend == "numba-threaded":  # the numba backend with its opt-in threaded matrix products
        from . import kernels
        kernels.gemm.GEMM_THREADS = None
        backend = "numba"
    variant = options.get("variant", "standard")
    batches = _mnist_batches() if variant == "mnist" else _reference_batches()
    batch_size = len(batches[0])
    if variant == "mnist":
        model = VAE(MNIST_INPUT_DIM, LATENT_DIM, hidden=MNIST_HIDDEN, likelihood="bernoulli", dtype=np.float32,
                    backend=backend)
        objective = model.objective()
    elif variant == "standard":
        model = VAE(INPUT_DIM, LATENT_DIM, hidden=HIDDEN, num_values=NUM_VALUES, dtype=np.float32,
                    backend=backend)
        objective = model.objective()
    else:  # a member of the model family, built as ``minivae variants`` builds it
        from .variants import build_variant
        model, objective = build_variant(variant, np.concatenate(batches))
        model.backend = backend
    optimizer = Adamax(lr=LEARNING_RATE, backend=backend)
    rng = np.random.default_rng(0)
    state = {"i": 0}

    def step():  # what fit() does for one minibatch (the weight average aside)
        batch = batches[state["i"] % len(batches)]
        state["i"] += 1
        eps = objective.draw_noise(model, batch_size, rng)
        loss, grads, _ = objective.loss_and_grads(model, batch, eps)
        optimizer.step(model.params, grads)

    return _time_steps(step, options)


def _mnist_batches(n_batches=20):
    """Minibatches of an MNIST-sized problem: random binary images of 784 pixels (about 13% ones, as
    MNIST binarised), MNIST_BATCH_SIZE of them per batch. A step's time does not depend on the values."""
    import numpy as np

    rng = np.random.default_rng(0)
    return [(rng.random((MNIST_BATCH_SIZE, MNIST_INPUT_DIM)) < 0.13).astype(np.float32) for _ in range(n_batches)]


def step_flops(variant="standard"):
    """Floating-point operations of the matrix products of one training step (2 M N K each): the
    forward x @ W of every dense layer, and its backward x.T @ g and g @ W.T (the first encoder layer
    needs no g @ W.T, except for a VampPrior, whose pseudo-inputs are learned through the encoder).
    Elementwise work (activations, likelihood, optimizer) is not counted: this is the least work a
    step must do, to compare its time with the machine's peak rate of products."""
    if variant == "mnist":
        encoder, decoder, rows = [MNIST_INPUT_DIM, *MNIST_HIDDEN, 2 * LATENT_DIM], \
            [LATENT_DIM, *MNIST_HIDDEN[::-1], MNIST_INPUT_DIM], MNIST_BATCH_SIZE
        encoder_rows = decoder_rows = rows
    else:
        encoder = [INPUT_DIM, *HIDDEN, 2 * LATENT_DIM]
        decoder = [LATENT_DIM, *HIDDEN[::-1], INPUT_DIM * NUM_VALUES]
        encoder_rows = BATCH_SIZE + (50 if variant == "vamp50" else 0)
        decoder_rows = BATCH_SIZE * (50 if variant == "iwae50" else 5 if variant == "iwae5" else 1)
    flops = 0
    for sizes, rows, first_needs_dx in ((encoder, encoder_rows, variant == "vamp50"), (decoder, decoder_rows, True)):
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            products = 3 if (i > 0 or first_needs_dx) else 2
            flops += products * 2 * rows * n_in * n_out
    return flops


def _time_steps(step, options):
    for _ in range(options["step_count"]):  # warm up: compile or load kernels, fill caches
        step()
    repeats = []
    for _ in range(options["step_repeats"]):
        start = time.perf_counter()
        for _ in range(options["step_count"]):
            step()
        repeats.append((time.perf_counter() - start) / options["step_count"])
    best = min(repeats)
    # the spread of the repeats, slowest over fastest: on a quiet machine a few percent
    return {"ms_per_step": best * 1e3, "steps_per_second": 1 / best, "spread": max(repeats) / best}


def _torch_mlp(torch, sizes):
    """nn.Linear layers of the given widths with LeakyReLU between them, as minivae's MLP."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(torch.nn.LeakyReLU(LEAKY_RELU_SLOPE))
    return torch.nn.Sequential(*layers)


def _torch_reference(torch, seed=0):
    """The reference model in PyTorch: nn.Linear layers and LeakyReLU, as minivae builds it.

    Returns encoder, decoder and a function loss(x_int, eps) -> per-example -ELBO (N,), with the
    categorical log-softmax likelihood summed over pixels and the analytic KL against N(0, I).
    """
    torch.manual_seed(seed)
    encoder = _torch_mlp(torch, [INPUT_DIM, *HIDDEN, 2 * LATENT_DIM])
    decoder = _torch_mlp(torch, [LATENT_DIM, *HIDDEN[::-1], INPUT_DIM * NUM_VALUES])

    def negative_elbo(x_int, eps):
        h = encoder(x_int.float())
        mu, logvar = h[:, :LATENT_DIM], h[:, LATENT_DIM:]
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = decoder(z).view(-1, INPUT_DIM, NUM_VALUES)
        log_px = torch.log_softmax(logits, dim=-1).gather(-1, x_int[:, :, None])[:, :, 0].sum(-1)
        kl = 0.5 * (mu * mu + torch.exp(logvar) - 1 - logvar).sum(-1)
        return kl - log_px

    return encoder, decoder, negative_elbo


def _torch_mnist(torch, seed=0):
    """The MNIST-sized model in PyTorch (784 -> 512 -> 256 -> 2 x 16, and back, LeakyReLU, Bernoulli
    likelihood from logits, analytic KL): encoder, decoder and loss(x, eps) -> per-example -ELBO."""
    torch.manual_seed(seed)
    encoder = _torch_mlp(torch, [MNIST_INPUT_DIM, *MNIST_HIDDEN, 2 * LATENT_DIM])
    decoder = _torch_mlp(torch, [LATENT_DIM, *MNIST_HIDDEN[::-1], MNIST_INPUT_DIM])

    def negative_elbo(x, eps):
        h = encoder(x)
        mu, logvar = h[:, :LATENT_DIM], h[:, LATENT_DIM:]
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = decoder(z)
        log_px = -torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        kl = 0.5 * (mu * mu + torch.exp(logvar) - 1 - logvar).sum(-1)
        return kl - log_px

    return encoder, decoder, negative_elbo


def _jax_step_worker(options):
    """Milliseconds per training step of the reference model in JAX, the whole step (loss, gradients
    by jax.value_and_grad, Adamax) compiled by ``jax.jit``. One thread: XLA's CPU thread pool off
    and the process pinned to one core."""
    threads = options["threads"]
    if threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return {"status": "not installed"}
    import numpy as np

    jax.config.update("jax_platforms", "cpu")
    rng = np.random.default_rng(0)
    encoder = [INPUT_DIM, *HIDDEN, 2 * LATENT_DIM]
    decoder = [LATENT_DIM, *HIDDEN[::-1], INPUT_DIM * NUM_VALUES]

    def init(sizes):  # nn.Linear's initialisation; the time does not depend on it
        return [(jnp.asarray(rng.uniform(-1, 1, (n_in, n_out)) / np.sqrt(n_in), jnp.float32),
                 jnp.asarray(rng.uniform(-1, 1, n_out) / np.sqrt(n_in), jnp.float32))
                for n_in, n_out in zip(sizes[:-1], sizes[1:])]

    def mlp(layers, h):
        for i, (W, b) in enumerate(layers):
            h = h @ W + b
            if i < len(layers) - 1:
                h = jnp.where(h > 0, h, LEAKY_RELU_SLOPE * h)
        return h

    def loss(params, x_int, eps):
        h = mlp(params[0], x_int.astype(jnp.float32))
        mu, logvar = h[:, :LATENT_DIM], h[:, LATENT_DIM:]
        z = mu + jnp.exp(0.5 * logvar) * eps
        logits = mlp(params[1], z).reshape(-1, INPUT_DIM, NUM_VALUES)
        log_softmax = jax.nn.log_softmax(logits, axis=-1)
        log_px = jnp.take_along_axis(log_softmax, x_int[:, :, None], axis=-1)[:, :, 0].sum(-1)
        kl = 0.5 * (mu * mu + jnp.exp(logvar) - 1 - logvar).sum(-1)
        return (kl - log_px).mean()

    beta1, beta2, adam_eps = 0.9, 0.999, 1e-8

    @jax.jit
    def step(params, m, u, t, x_int, key):
        key, sub = jax.random.split(key)
        eps = jax.random.normal(sub, (x_int.shape[0], LATENT_DIM), jnp.float32)
        value, grads = jax.value_and_grad(loss)(params, x_int, eps)
        m = jax.tree_util.tree_map(lambda m_, g: beta1 * m_ + (1 - beta1) * g, m, grads)
        u = jax.tree_util.tree_map(lambda u_, g: jnp.maximum(beta2 * u_, jnp.abs(g) + adam_eps), u, grads)
        step_size = LEARNING_RATE / (1 - beta1 ** t)
        params = jax.tree_util.tree_map(lambda p, m_, u_: p - step_size * m_ / u_, params, m, u)
        return params, m, u, key, value

    params = [init(encoder), init(decoder)]
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = {"params": params, "m": zeros, "u": zeros, "t": 0, "i": 0, "key": jax.random.PRNGKey(0)}
    batches = [jnp.asarray(b.astype(np.int32)) for b in _reference_batches()]

    def one_step():
        state["t"] += 1
        batch = batches[state["i"] % len(batches)]
        state["i"] += 1
        state["params"], state["m"], state["u"], state["key"], value = step(
            state["params"], state["m"], state["u"], jnp.float32(state["t"]), batch, state["key"])
        value.block_until_ready()

    result = _time_steps(one_step, options)
    result["version"] = jax.__version__
    return result


def _torch_family_loss(torch, encoder, decoder, variant, parameters, generator):
    """The PyTorch twin of a model-family step's loss, as minivae.variants builds it: a function
    loss(x_int) -> scalar. Autograd differentiates it; minivae's hand-written gradients are the same."""
    log_2pi = math.log(2 * math.pi)

    def log_px_of(z, x_int):
        logits = decoder(z.reshape(-1, LATENT_DIM)).view(*z.shape[:-1], INPUT_DIM, NUM_VALUES)
        index = x_int.expand(*z.shape[:-1], INPUT_DIM)[..., None]
        return torch.log_softmax(logits, dim=-1).gather(-1, index)[..., 0].sum(-1)

    if variant.startswith("iwae"):  # "iwae5", "iwae50": IWAE(k) as minivae.variants builds it
        k = int(variant[len("iwae"):])

        def loss(x_int):
            h = encoder(x_int.float())
            mu, logvar = h[:, :LATENT_DIM], h[:, LATENT_DIM:]
            eps = torch.randn(k, *mu.shape, generator=generator)
            z = mu + torch.exp(0.5 * logvar) * eps
            log_pz = -0.5 * (log_2pi + z * z).sum(-1)
            log_qz = -0.5 * (log_2pi + logvar + eps * eps).sum(-1)
            log_w = log_px_of(z, x_int) + log_pz - log_qz
            return -(torch.logsumexp(log_w, 0) - math.log(k)).mean()
        return loss
    if variant == "vamp50":
        pseudo = torch.nn.Parameter(torch.randn(50, INPUT_DIM, generator=generator))
        parameters.append(pseudo)

        def loss(x_int):
            h = encoder(x_int.float())
            mu, logvar = h[:, :LATENT_DIM], h[:, LATENT_DIM:]
            eps = torch.randn(mu.shape, generator=generator)
            z = mu + torch.exp(0.5 * logvar) * eps
            hu = encoder((NUM_VALUES - 1) * torch.sigmoid(pseudo))
            mu_k, logvar_k = hu[:, :LATENT_DIM], hu[:, LATENT_DIM:]
            diff = z[:, None, :] - mu_k[None]
            log_components = -0.5 * (log_2pi + logvar_k + diff * diff * torch.exp(-logvar_k)).sum(-1)
            log_pz = torch.logsumexp(log_components, 1) - math.log(50)
            log_qz = -0.5 * (log_2pi + logvar + eps * eps).sum(-1)
            return (log_qz - log_pz - log_px_of(z, x_int)).mean()
        return loss
    raise ValueError(f"no PyTorch twin of variant {variant!r}")


def _torch_loss(torch, variant, encoder, decoder, negative_elbo, parameters, generator):
    """loss(batch) -> scalar, what a PyTorch twin's step minimises: the mean -ELBO, eps drawn from
    ``generator`` ("standard", "mnist"), or a member of the model family (:func:`_torch_family_loss`)."""
    if variant not in ("standard", "mnist"):
        return _torch_family_loss(torch, encoder, decoder, variant, parameters, generator)

    def loss_of(batch):
        eps = torch.randn(len(batch), LATENT_DIM, generator=generator)
        return negative_elbo(batch, eps).mean()
    return loss_of


def _torch_step_worker(options):
    try:
        import torch
    except ImportError:
        return {"status": "not installed"}
    import numpy as np

    torch.set_num_threads(options["threads"])
    variant = options.get("variant", "standard")
    generator = torch.Generator().manual_seed(0)
    if variant == "mnist":
        encoder, decoder, negative_elbo = _torch_mnist(torch)
        batches = [torch.from_numpy(b) for b in _mnist_batches()]
    else:
        encoder, decoder, negative_elbo = _torch_reference(torch)
        batches = [torch.from_numpy(b.astype(np.int64)) for b in _reference_batches()]
    parameters = list(encoder.parameters()) + list(decoder.parameters())
    if variant in ("standard", "mnist") and options["backend"] == "torch-compile":
        negative_elbo = torch.compile(negative_elbo)  # forward and backward compiled by TorchInductor
    loss_of = _torch_loss(torch, variant, encoder, decoder, negative_elbo, parameters, generator)
    optimizer = torch.optim.Adamax(parameters, lr=LEARNING_RATE)
    state = {"i": 0}

    def step():
        batch = batches[state["i"] % len(batches)]
        state["i"] += 1
        loss = loss_of(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    result = _time_steps(step, options)
    result["version"] = torch.__version__
    return result


def _baseline_memory_worker(options):
    """Peak memory of a process that imports minivae and NumPy (and, with options["kernels"], the
    compiled kernels: numba and LLVM), and runs nothing."""
    import numpy  # noqa: F401

    import minivae  # noqa: F401
    if options.get("kernels"):
        from . import kernels  # noqa: F401
    return {"maxrss_mib": _maxrss_mib()}


def _memory_worker(options):
    """Peak memory of a process that trains the reference model (numba backend) for a few epochs."""
    import numpy as np

    from . import datasets
    from .training import fit
    from .vae import VAE

    if options.get("mnist_sized"):
        # MNIST's size: 60000 binary images of 784 pixels (random here: memory does not depend on the
        # values), a Bernoulli decoder, hidden 512-256, batch 128, validated on 10000 images
        rng = np.random.default_rng(0)
        rows = options.get("rows", MNIST_ROWS)
        x_train = (rng.random((rows, MNIST_INPUT_DIM)) < 0.13).astype(np.float32)
        x_val = (rng.random((rows // 6, MNIST_INPUT_DIM)) < 0.13).astype(np.float32)
        model = VAE(MNIST_INPUT_DIM, LATENT_DIM, hidden=MNIST_HIDDEN, likelihood="bernoulli", dtype=np.float32,
                    backend="numba")
        batch_size = MNIST_BATCH_SIZE
    else:
        x_train, _ = datasets.load_digits("train")
        x_val, _ = datasets.load_digits("val")
        model = VAE(INPUT_DIM, LATENT_DIM, hidden=HIDDEN, num_values=NUM_VALUES, dtype=np.float32,
                    backend="numba")
        batch_size = BATCH_SIZE
    history = fit(model, x_train, x_val, epochs=options["epochs"], batch_size=batch_size, patience=None,
                  verbose=False, rng=np.random.default_rng(0))
    return {"maxrss_mib": _maxrss_mib(), "epochs": history.epochs, "steps": history.steps,
            "rows": len(x_train), "n_params": model.n_params}


def _maxrss_mib():
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux (bytes on macOS)
    return kib / (1024 * 1024) if sys.platform == "darwin" else kib / 1024


def _compile_worker(options):
    """Seconds of the first float32 training step with the numba backend: it imports numba and
    compiles (or loads from the cache) every kernel a training step needs."""
    import numpy as np

    from .optim import Adamax
    from .vae import VAE
    model = VAE(INPUT_DIM, LATENT_DIM, hidden=HIDDEN, num_values=NUM_VALUES, dtype=np.float32,
                backend="numba")
    optimizer = Adamax(lr=LEARNING_RATE, backend="numba")
    batch = _reference_batches()[0]
    eps = np.random.default_rng(0).standard_normal((BATCH_SIZE, LATENT_DIM)).astype(np.float32)
    built = time.perf_counter()
    loss, grads, _ = model.objective().loss_and_grads(model, batch, eps)
    optimizer.step(model.params, grads)
    done = time.perf_counter()
    return {"first_step_seconds": done - built}


def _torch_train_worker(options):
    """Wall time of training the reference model in PyTorch, as ``minivae train`` trains it (or, with
    ``options["variant"]`` "iwae5", "iwae50" or "vamp50", that member of the model family as
    ``minivae variants`` trains it).

    Every epoch shuffles the 1000 training digits, takes one Adamax step (lr 1e-3) per minibatch of
    64 (the last one smaller), then measures the validation loss: the -ELBO with one sample of z per
    example (IWAE(k): -L_k with one draw of k samples, as minivae's ``fit`` validates it); training
    stops when it has not improved for ``options["patience"]`` epochs (at most
    ``options["max_epochs"]``), and the test loss of the best parameters is evaluated. No moving
    average of the weights. The time starts after ``import torch``.
    """
    try:
        import torch
    except ImportError:
        return {"status": "not installed"}
    import numpy as np

    from . import datasets

    start = time.perf_counter()
    torch.set_num_threads(options["threads"])
    variant = options.get("variant", "standard")
    encoder, decoder, negative_elbo = _torch_reference(torch, options.get("seed", 0))
    parameters = list(encoder.parameters()) + list(decoder.parameters())
    generator = torch.Generator().manual_seed(options.get("seed", 0))
    loss_of = _torch_loss(torch, variant, encoder, decoder, negative_elbo, parameters, generator)
    optimizer = torch.optim.Adamax(parameters, lr=LEARNING_RATE)
    x = {split: torch.from_numpy(datasets.load_digits(split)[0].astype(np.int64))
         for split in ("train", "val", "test")}
    best, best_epoch, best_state, epoch = math.inf, 0, None, 0
    for epoch in range(options["max_epochs"]):
        order = torch.randperm(len(x["train"]), generator=generator)
        for i in range(0, len(order), BATCH_SIZE):
            loss = loss_of(x["train"][order[i:i + BATCH_SIZE]])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            val = float(loss_of(x["val"]))
        if val < best:
            best, best_epoch = val, epoch
            best_state = [p.detach().clone() for p in parameters]
        elif epoch - best_epoch >= options["patience"]:
            break
    with torch.no_grad():
        for p, kept in zip(parameters, best_state):
            p.copy_(kept)
        test = float(loss_of(x["test"]))
    result = {"seconds": time.perf_counter() - start, "epochs": epoch + 1, "best_epoch": best_epoch + 1,
              "variant": variant, "val_loss": best, "test_loss": test, "version": torch.__version__}
    if not variant.startswith("iwae"):  # the loss is the -ELBO (else -L_k)
        result.update(val_nelbo=best, test_nelbo=test)
    return result


WORKERS = {
    "gemm": _gemm_worker, "dense": _dense_worker, "step": _step_worker,
    "baseline_memory": _baseline_memory_worker, "memory": _memory_worker,
    "compile": _compile_worker, "torch_train": _torch_train_worker,
}


def worker_main(argv):
    """``python -m minivae.bench --worker NAME OPTIONS_JSON``: run one worker, print its JSON."""
    if len(argv) != 3 or argv[0] != "--worker" or argv[1] not in WORKERS:
        raise SystemExit(f"usage: python -m minivae.bench --worker {{{','.join(WORKERS)}}} OPTIONS_JSON")
    result = WORKERS[argv[1]](json.loads(argv[2]))
    print(json.dumps(result))
    return 0


def run_worker(name, options, threads, env=None, timeout=WORKER_TIMEOUT_SECONDS):
    """Run worker ``name`` in a subprocess with ``threads`` threads everywhere; its result dict.

    A worker that fails gives ``{"status": "error: ..."}`` instead of stopping the benchmark.
    """
    environment = dict(os.environ)
    environment.update({variable: str(threads) for variable in THREAD_VARIABLES})
    environment.update(env or {})
    options = dict(options, threads=threads)
    command = [sys.executable, "-m", "minivae.bench", "--worker", name, json.dumps(options)]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=environment,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"error: timed out after {timeout} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": f"error: {last}"}
    result = json.loads(lines[-1])
    result.setdefault("status", "ok")
    result["process_seconds"] = time.perf_counter() - start  # the whole subprocess, Python start-up included
    return result


def _timed_command(command, threads, env=None):
    """Wall seconds of a command run with ``threads`` threads everywhere, and its exit status."""
    environment = dict(os.environ)
    environment.update({variable: str(threads) for variable in THREAD_VARIABLES})
    environment.update(env or {})
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=environment,
                          timeout=WORKER_TIMEOUT_SECONDS)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": f"error: {last}", "seconds": seconds}
    return {"status": "ok", "seconds": seconds}


# --------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------

def machine_description():
    """CPU, core count, versions and BLAS: what the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    description = {"cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(),
                   "python": platform.python_version()}
    import numpy as np
    description["numpy"] = np.__version__
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        description["blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # the layout of show_config is not a stable API
        description["blas"] = "unknown"
    try:
        from importlib import metadata
        description["numba"] = metadata.version("numba")
    except Exception:
        description["numba"] = "not installed"
    for package in ("torch", "jax"):
        try:
            from importlib import metadata
            description[package] = metadata.version(package)
        except Exception:
            description[package] = "not installed"
    return description


def run_benchmark(quick=False, train=False, log=print, short=False):
    """Run every part of the benchmark; the results as a JSON-serialisable dict.

    Parameters
    ----------
    quick : bool, tiny settings (seconds, for tests); the numbers are then rough
    short : bool, every part of the full run with fewer repeats (ignored with ``quick``)
    train : bool, also time whole training runs (minivae train and the PyTorch reference)
    log : callable(str), progress messages

    Returns
    -------
    dict with keys "machine", "settings", "load_before", "load_after", "gemm", "dense", "steps",
    "memory", "compile", "train" (None without ``train``) and "seconds"
    """
    settings = SETTINGS["quick" if quick else "short" if short else "full"]
    cores = os.cpu_count() or 1
    thread_counts = [1, cores] if settings["all_cores"] and cores > 1 else [1]
    start = time.perf_counter()
    results = {"machine": machine_description(), "settings": dict(settings, quick=quick, short=short and not quick),
               "load_before": _load_average()}
    timing = {key: settings[key] for key in ("repeats", "min_seconds")}

    log("matrix products ...")
    shapes = product_shapes()
    gemm = run_worker("gemm", dict(timing, shapes=shapes, dtypes=["float32", "float64"]), 1)
    records = [dict(r, threads=1) for r in gemm.get("records", [])]
    if settings["big"]:
        big = [(op, GEMM_BIG, GEMM_BIG, GEMM_BIG) for op in ("matmul", "matmul_tn", "matmul_nt")]
        big_timing = dict(repeats=settings["big_repeats"], min_seconds=0.0)
        for threads in thread_counts:
            part = run_worker("gemm", dict(big_timing, shapes=big, dtypes=["float32", "float64"],
                                           threaded_kernels=threads > 1), threads)
            records += [dict(r, threads=threads) for r in part.get("records", [])]
    results["gemm"] = records

    log("fused layers ...")
    results["dense"] = run_worker("dense", dict(timing, dtype="float32"), 1).get("records", [])

    log("training steps ...")
    steps = []
    step_options = {key: settings[key] for key in ("step_repeats", "step_count")}
    for threads in thread_counts:
        for backend in ("numpy", "numba") + OTHER_STEP_BACKENDS:
            if backend in OTHER_STEP_BACKENDS and not settings["torch"]:
                result = {"status": "skipped (--quick)"}
            else:
                result = run_worker("step", dict(step_options, backend=backend), threads)
            steps.append(dict(result, backend=backend, threads=threads, gflop=step_flops() / 1e9))
    results["steps"] = steps

    log("MNIST-sized training steps ...")
    mnist = []
    for threads in thread_counts:
        for backend in ("numba", "torch"):
            if backend == "torch" and not settings["torch"]:
                result = {"status": "skipped (--quick)"}
            else:
                result = run_worker("step", dict(step_options, backend=backend, variant="mnist",
                                                 step_count=max(1, step_options["step_count"] // 5)), threads)
            mnist.append(dict(result, backend=backend, threads=threads, gflop=step_flops("mnist") / 1e9))
    results["mnist_steps"] = mnist

    log("training steps of the model family ...")
    family = []
    for threads in thread_counts:
        for variant in FAMILY_STEPS:
            for backend in ("numpy", "numba", "torch"):
                if backend == "torch" and not settings["torch"]:
                    family.append({"status": "skipped (--quick)", "variant": variant, "backend": backend,
                                   "threads": threads, "gflop": step_flops(variant) / 1e9})
                    continue
                result = run_worker("step", dict(step_options, backend=backend, variant=variant,
                                                 step_count=max(1, step_options["step_count"] // 10)), threads)
                family.append(dict(result, variant=variant, backend=backend, threads=threads,
                                   gflop=step_flops(variant) / 1e9))
    results["family_steps"] = family

    log("memory ...")
    results["memory"] = {
        "baseline_mib": run_worker("baseline_memory", {}, 1).get("maxrss_mib"),
        "baseline_kernels_mib": run_worker("baseline_memory", {"kernels": True}, 1).get("maxrss_mib"),
        "training": run_worker("memory", {"epochs": settings["memory_epochs"]}, 1),
        "mnist_training": run_worker("memory", {"epochs": 1, "mnist_sized": True,
                                                "rows": MNIST_ROWS if not quick else 600}, 1),
    }

    log("compile time ...")
    results["compile"] = _measure_compile(settings["cold_compile"])

    results["train"] = _measure_training(thread_counts, log) if train else None
    results["load_after"] = _load_average()
    results["seconds"] = time.perf_counter() - start
    results["peak_gflops"] = {str(threads): peak_gflops(results, threads) for threads in thread_counts}
    results["busy"] = busy_reasons(results)
    return results


def peak_gflops(results, threads):
    """The machine's measured peak rate of products with ``threads`` threads: the best GFLOP/s of any
    product of this run (kernel or BLAS, float32) with that many threads, or None if none was timed."""
    rates = [max(r["kernel_gflops"], r["blas_gflops"]) for r in results.get("gemm", [])
             if r["threads"] == threads and r["dtype"] == "float32"]
    return max(rates) if rates else None


def _rate(step, results):
    """GFLOP/s of a step's products and their fraction of the peak measured with as many threads."""
    if "ms_per_step" not in step or "gflop" not in step:
        return "", ""
    rate = step["gflop"] / (step["ms_per_step"] / 1e3)
    peak = (results.get("peak_gflops") or {}).get(str(step["threads"]))
    return f"{rate:.1f}", (f"{rate / peak:.0%}" if peak else "")


def busy_reasons(results):
    """Why the measurements of ``results`` should not be trusted, as sentences (empty: none found).

    A load average above the number of cores, before or after, means other work competed for them;
    step timings whose repeats spread by more than ``BUSY_SPREAD`` mean the same, seen from inside.
    """
    reasons = []
    cores = results["machine"].get("cpu_count") or os.cpu_count() or 1
    for when in ("load_before", "load_after"):
        load = results.get(when)
        if load is not None and load[0] > cores:
            reasons.append(f"the load average {when.split('_')[1]} the run was {load[0]:.1f} on {cores} cores")
    spread = [s for s in results.get("steps", []) + results.get("family_steps", []) + results.get("mnist_steps", [])
              if s.get("spread", 1.0) > BUSY_SPREAD]
    if spread:
        worst = max(spread, key=lambda s: s["spread"])
        reasons.append(f"{len(spread)} step timings disagree between repeats by more than "
                       f"{BUSY_SPREAD - 1:.0%} (worst: {worst['backend']}, {worst['threads']} thread(s), "
                       f"{worst['spread'] - 1:.0%})")
    return reasons


def _measure_compile(cold):
    """The first training step with an empty numba cache (cold) and with that cache filled (warm).

    Without ``cold`` only the warm run is made, with the default cache (which compiles if it is
    empty)."""
    if not cold:
        warm = run_worker("compile", {}, 1)
        return {"cold": None, "warm": warm}
    with tempfile.TemporaryDirectory(prefix="minivae-numba-cache-") as cache:
        env = {"NUMBA_CACHE_DIR": cache}
        cold_result = run_worker("compile", {}, 1, env=env)
        warm_result = run_worker("compile", {}, 1, env=env)
    return {"cold": cold_result, "warm": warm_result}


def _measure_training(thread_counts, log):
    """Wall times of ``minivae train`` (cold and warm numba cache) and of the PyTorch reference."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="minivae-bench-train-") as folder:
        for threads in thread_counts:
            cache = os.path.join(folder, f"numba-cache-{threads}")
            for cache_state in ("cold", "warm"):
                log(f"minivae train, {threads} thread(s), {cache_state} cache ...")
                out = os.path.join(folder, f"run-{threads}-{cache_state}")
                result = _timed_command([sys.executable, "-m", "minivae", "train", "--out", out, "--quiet"],
                                        threads, env={"NUMBA_CACHE_DIR": cache})
                summary_path = os.path.join(out, "summary.json")
                if os.path.exists(summary_path):
                    with open(summary_path) as file:
                        summary = json.load(file)
                    result.update(epochs=summary["epochs"], test_nelbo=summary["test_nelbo"],
                                  train_seconds=summary["seconds"])
                runs.append(dict(result, program="minivae train", threads=threads, cache=cache_state))
            log(f"PyTorch reference, {threads} thread(s) ...")
            torch_result = run_worker("torch_train", {"max_epochs": 1000, "patience": 20}, threads)
            runs.append(dict(torch_result, program="pytorch reference", threads=threads, cache=None))
    return runs


def _load_average():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


# --------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------

def format_results(results):
    """The benchmark results as a plain-text report (what ``minivae bench`` prints)."""
    m = results["machine"]
    lines = [f"minivae bench on {m['cpu']} ({m['cpu_count']} cores), Python {m['python']}, "
             f"NumPy {m['numpy']} ({m['blas']}), numba {m['numba']}, torch {m['torch']}, jax {m.get('jax', 'n/a')}",
             "load average before / after: " + " / ".join(
                 "n/a" if load is None else f"{load[0]:.2f}"
                 for load in (results["load_before"], results["load_after"])), ""]

    lines += ["Matrix products, GFLOP/s (2MNK / best time): hand-written kernel vs NumPy's BLAS",
              f"  {'product':<10} {'M x K x N':>16} {'dtype':>8} {'threads':>7} {'kernel':>8} "
              f"{'BLAS':>8} {'kernel/BLAS':>11}  faster"]
    for r in results["gemm"]:
        lines.append(f"  {_product_formula(r['op']):<10} {r['M']:>5}x{r['K']:>4}x{r['N']:>5} "
                     f"{r['dtype']:>8} {r['threads']:>7} {r['kernel_gflops']:>8.1f} "
                     f"{r['blas_gflops']:>8.1f} {r['kernel_gflops'] / r['blas_gflops']:>11.2f}  "
                     f"{'kernel' if r['winner'] == 'kernel' else 'BLAS'}")

    lines += ["", "Fused layers, float32, batch 64, 1 thread, µs: kernels.dense_* vs NumPy "
                  "act(x @ W + b) and its backward",
              f"  {'layer':<10} {'in -> out':>12} {'activation':>11} {'fwd fused':>10} {'fwd NumPy':>10} "
              f"{'bwd fused':>10} {'bwd NumPy':>10}"]
    for r in results["dense"]:
        lines.append(f"  {r['layer']:<10} {r['in']:>5} -> {r['out']:<4} {r['activation']:>11} "
                     f"{r['forward_fused_us']:>10.1f} {r['forward_numpy_us']:>10.1f} "
                     f"{r['backward_fused_us']:>10.1f} {r['backward_numpy_us']:>10.1f}")

    peaks = results.get("peak_gflops") or {}
    if peaks:
        lines += ["", "Peak rate of products measured in this run (best float32 GFLOP/s of the products above): "
                  + ", ".join(f"{threads} thread(s) {peak:.1f}" for threads, peak in peaks.items() if peak)]
    lines += ["", "Training step of the reference model (VAE(64, 16), hidden 256-256, categorical, "
                  f"Adamax, batch 64, float32; {step_flops() / 1e6:.0f} MFLOP of products)",
              f"  {'backend':<15} {'threads':>7} {'ms/step':>8} {'steps/s':>8} {'vs numpy':>9} "
              f"{'vs torch':>9} {'GFLOP/s':>8} {'of peak':>8}"]
    reference = {}
    for s in results["steps"]:
        if "ms_per_step" in s and s["backend"] in ("numpy", "torch"):
            reference[s["backend"], s["threads"]] = s["ms_per_step"]
    for s in results["steps"]:
        if "ms_per_step" in s:
            ratios = []
            for other in ("numpy", "torch"):
                ms = reference.get((other, s["threads"]))
                ratios.append(f"{ms / s['ms_per_step']:.2f}x" if ms else "")
            rate, fraction = _rate(s, results)
            lines.append(f"  {s['backend']:<15} {s['threads']:>7} {s['ms_per_step']:>8.3f} "
                         f"{s['steps_per_second']:>8.0f} {ratios[0]:>9} {ratios[1]:>9} {rate:>8} {fraction:>8}")
        else:
            lines.append(f"  {s['backend']:<15} {s['threads']:>7}  {s['status']}")
    lines.append("  (torch: PyTorch eager; torch-compile: its loss compiled by torch.compile; jax: the whole step "
                 "under jax.jit)")

    if results.get("mnist_steps"):
        lines += ["", f"MNIST-sized training step (VAE(784, 16), hidden 512-256, Bernoulli, Adamax, batch "
                      f"{MNIST_BATCH_SIZE}, float32; {step_flops('mnist') / 1e6:.0f} MFLOP of products)",
                  f"  {'backend':<8} {'threads':>7} {'ms/step':>9} {'vs torch':>9} {'GFLOP/s':>8} {'of peak':>8}"]
        torch_ms = {s["threads"]: s["ms_per_step"] for s in results["mnist_steps"]
                    if s["backend"] == "torch" and "ms_per_step" in s}
        for s in results["mnist_steps"]:
            if "ms_per_step" not in s:
                lines.append(f"  {s['backend']:<8} {s['threads']:>7}  {s['status']}")
                continue
            ms = torch_ms.get(s["threads"])
            ratio = f"{ms / s['ms_per_step']:.2f}x" if ms else ""
            rate, fraction = _rate(s, results)
            lines.append(f"  {s['backend']:<8} {s['threads']:>7} {s['ms_per_step']:>9.2f} {ratio:>9} "
                         f"{rate:>8} {fraction:>8}")
    if any(s["backend"] == "numba-threaded" for s in results["steps"]):
        lines.append("  (numba-threaded: the numba backend with kernels.gemm.GEMM_THREADS = None, its opt-in "
                     "threaded products)")

    if results.get("family_steps"):
        lines += ["", "Training steps of the model family (as `minivae variants` builds them; float32, batch 64)",
                  f"  {'variant':<10} {'backend':<8} {'threads':>7} {'ms/step':>9} {'vs torch':>9} {'GFLOP/s':>8} "
                  f"{'of peak':>8}"]
        torch_ms = {(s["variant"], s["threads"]): s["ms_per_step"] for s in results["family_steps"]
                    if s["backend"] == "torch" and "ms_per_step" in s}
        for s in results["family_steps"]:
            if "ms_per_step" not in s:
                lines.append(f"  {s['variant']:<10} {s['backend']:<8} {s['threads']:>7}  {s['status']}")
                continue
            ms = torch_ms.get((s["variant"], s["threads"]))
            ratio = f"{ms / s['ms_per_step']:.2f}x" if ms else ""
            rate, fraction = _rate(s, results)
            lines.append(f"  {s['variant']:<10} {s['backend']:<8} {s['threads']:>7} {s['ms_per_step']:>9.2f} {ratio:>9} "
                         f"{rate:>8} {fraction:>8}")

    if results.get("busy"):
        lines[2:2] = ["WARNING: the machine was busy, so the times and ratios below mean little: "
                      + "; ".join(results["busy"]) + ". Measure again on a quiet machine.", ""]

    memory = results["memory"]
    training = memory["training"]
    lines += ["", "Memory (peak resident set, ru_maxrss)",
              f"  import minivae, numpy: {_mib(memory['baseline_mib'])}; and minivae.kernels (numba, "
              f"LLVM): {_mib(memory['baseline_kernels_mib'])}",
              f"  training {training.get('epochs', '?')} epochs (numba backend): "
              f"{_mib(training.get('maxrss_mib'))}"]
    mnist = memory.get("mnist_training") or {}
    if "maxrss_mib" in mnist:
        lines.append(f"  an MNIST-sized run ({mnist['rows']} binary images of {MNIST_INPUT_DIM} pixels, hidden "
                     f"{'-'.join(map(str, MNIST_HIDDEN))}, Bernoulli, batch {MNIST_BATCH_SIZE}, {mnist['n_params']} "
                     f"parameters), one epoch: {_mib(mnist['maxrss_mib'])}")
    elif mnist:
        lines.append(f"  an MNIST-sized run: {mnist.get('status')}")

    compile_ = results["compile"]
    lines += ["", "First float32 training step, numba backend (compile or load from the cache)"]
    for label, key in (("empty cache (compiles)", "cold"), ("filled cache (loads)", "warm")):
        r = compile_[key]
        if r is None:
            lines.append(f"  {label}: not measured (--quick, --short)")
        elif "first_step_seconds" in r:
            lines.append(f"  {label}: {r['first_step_seconds']:.2f} s "
                         f"(the whole process, Python start-up included: {r['process_seconds']:.2f} s)")
        else:
            lines.append(f"  {label}: {r['status']}")

    if results["train"]:
        lines += ["", "Whole training runs (wall time of the process, defaults, early stopping patience 20)"]
        for r in results["train"]:
            cache = f", {r['cache']} cache" if r["cache"] else ""
            if r.get("status") == "ok" and "seconds" in r:
                extra = f"{r['epochs']} epochs" if "epochs" in r else ""
                if "test_nelbo" in r:
                    extra += f", test -ELBO {r['test_nelbo']:.2f}"
                if "process_seconds" in r:  # the PyTorch worker times itself after `import torch`
                    extra += f"; {r['seconds']:.1f} s after import torch"
                seconds = r.get("process_seconds", r["seconds"])
                lines.append(f"  {r['program']}, {r['threads']} thread(s){cache}: {seconds:.1f} s "
                             f"({extra})")
            else:
                lines.append(f"  {r['program']}, {r['threads']} thread(s){cache}: {r.get('status')}")
    lines += ["", f"({results['seconds']:.0f} s)"]
    return "\n".join(lines)


def _product_formula(op):
    return {"matmul": "x @ W", "matmul_tn": "x.T @ g", "matmul_nt": "g @ W.T"}[op]


def _mib(value):
    return "n/a" if value is None else f"{value:.0f} MiB"


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def add_parser(subcommands):
    """Add the ``bench`` subcommand to the ``argparse`` subparsers of :mod:`minivae.cli`."""
    parser = subcommands.add_parser(
        "bench", help="time the kernels, BLAS, training steps (numpy, numba, PyTorch), memory, compile",
        description="Measure on this machine, side by side: GFLOP/s of the hand-written matrix products "
                    "and of NumPy's BLAS; fused layers against NumPy; training steps per second of the "
                    "reference model for the numpy and numba backends and PyTorch (if installed), with one "
                    "thread and all cores; peak memory of a training run; the first-run compile time.")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--quick", action="store_true", help="tiny settings that run in seconds (for tests)")
    parser.add_argument("--short", action="store_true",
                        help="every part (PyTorch, JAX, all cores) with fewer repeats: about half the time")
    parser.add_argument("--train", action="store_true",
                        help="also time whole training runs: minivae train (cold and warm cache) and the "
                             "PyTorch reference (a few minutes)")
    parser.set_defaults(run=run_bench)
    return parser


def run_bench(args):
    """Run ``minivae bench`` from parsed arguments: print the table, write --json."""
    results = run_benchmark(quick=args.quick, train=args.train, short=getattr(args, "short", False),
                            log=lambda message: print(message, file=sys.stderr, flush=True))
    print(format_results(results))
    if args.json:
        from .files import write_text

        write_text(args.json, json.dumps(results, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))

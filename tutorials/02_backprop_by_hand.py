# %% [markdown]
# # 2. Layers and backpropagation by hand
#
# A VAE is trained by gradient descent, and every gradient in minivae is written by hand: no
# autograd. This tutorial opens the two building blocks, a linear layer and an activation, derives
# their backward passes, chains them into a small network, and then checks the result the way every
# hand-written gradient should be checked: against finite differences, in float64.
#
# **What you will learn**
#
# - the forward/backward contract of minivae's layers: `forward` returns `(out, cache)`, `backward`
#   takes `(dout, cache)` with `dout = dL/dout` and returns `dL/dinput`;
# - the backward of `out = x W + b` and of an elementwise activation, derived from the chain rule;
# - a gradient check done step by step: one entry by hand, then all of them;
# - what the relative error measures, and why the check must run in float64 (a float32 check
#   cannot tell a subtle bug from round-off).
#
# **Prerequisites.** NumPy and the chain rule. No VAE knowledge is needed until the last section.
#
# **Run time.** Under half a minute (3 to 16 s measured on a two-core machine shared with other
# jobs, load average 1.6 to 3.3); about the same in quick mode, `MINIVAE_QUICK=1`.

# %%
import warnings

import numpy as np
from matplotlib.figure import Figure

import minivae
from minivae import course, gradcheck, layers, plots

TUTORIAL = "02_backprop_by_hand"
rng = np.random.default_rng(2)

# %% [markdown]
# ## A linear layer
#
# The linear (affine) layer maps a batch of `N` inputs of width `D` to width `M`:
#
# $$\text{out} = x W + b, \qquad x: (N, D),\; W: (D, M),\; b: (M,),\; \text{out}: (N, M).$$
#
# `layers.linear_forward` computes it and returns a *cache*: what the backward pass will need.

# %%
N, D, M = 4, 3, 2
x = rng.standard_normal((N, D))
W = rng.standard_normal((D, M))
b = rng.standard_normal(M)

out, cache = layers.linear_forward(x, W, b)
print("out shape", out.shape, "(N, M)")

# %% [markdown]
# ## Its backward, derived
#
# Backpropagation never needs the loss `L` itself, only `dout = dL/dout`, an array shaped like
# `out` that the layers above have already computed. Write one output entry out:
# `out[n, j] = sum_i x[n, i] W[i, j] + b[j]`. Then, by the chain rule,
#
# $$\frac{\partial L}{\partial W_{ij}} = \sum_n \frac{\partial L}{\partial \text{out}_{nj}}
#   \frac{\partial \text{out}_{nj}}{\partial W_{ij}} = \sum_n x_{ni}\, \text{dout}_{nj}
#   \quad\Rightarrow\quad dW = x^\top \text{dout} \;\; (D, M)$$
#
# $$dx = \text{dout}\, W^\top \;\; (N, D), \qquad db = \textstyle\sum_n \text{dout}_n \;\; (M,).$$
#
# A handy check that needs no calculus: every gradient has the shape of the thing it is the
# gradient of, and there is only one way to multiply the arrays to get that shape.

# %%
dout = rng.standard_normal(out.shape)  # pretend the layers above sent this
dx, dW, db = layers.linear_backward(dout, cache)
print("dx", dx.shape, " dW", dW.shape, " db", db.shape)

# %% [markdown]
# ## Activations
#
# An activation `f` acts elementwise, so its backward is elementwise too: `dL/dx = dout * f'(x)`.
# minivae's activations keep in the cache what makes `f'` cheap: for tanh the output
# (`f' = 1 - tanh(x)^2`), for (leaky) ReLU the mask `x > 0`.
#
# With `dout = 1` the backward returns `f'(x)` itself. The figure draws each activation (solid),
# its derivative from `backward` (dashed), and a centered finite difference of `forward` at a few
# points (dots). The dots land on the dashed lines: the backward passes are right, except exactly
# at the kink of ReLU, where `f` has no derivative (minivae uses 0 there).

# %%
grid = np.linspace(-3, 3, 601)
probe = np.linspace(-2.75, 2.75, 12)
names = ["tanh", "sigmoid", "relu", "leaky_relu"]

fig = Figure(figsize=(10, 2.8), layout="constrained")
for k, name in enumerate(names):
    activation = layers.get_activation(name)
    f, activation_cache = activation.forward(grid)
    derivative = activation.backward(np.ones_like(grid), activation_cache)
    # f acts elementwise, so the gradient of sum(f(t)) with respect to t is f'(t) entry by entry
    numerical = gradcheck.numerical_gradient(lambda t: activation.forward(t)[0].sum(), probe.copy())
    ax = fig.add_subplot(1, len(names), k + 1)
    ax.plot(grid, f, color="C0", label="f(x)")
    ax.plot(grid, derivative, color="C1", linestyle="--", label="f'(x), backward")
    ax.plot(probe, numerical, "o", color="C3", markersize=4, label="finite difference")
    ax.set_title(name)
    ax.set_xlabel("x")
    ax.grid(True, alpha=0.3)
fig.axes[0].legend(loc="upper left", fontsize="small")
plots.save_figure(fig, course.figure_path(TUTORIAL, "activations.png"))
course.show(fig)

# %% [markdown]
# ## A small network, forward then backward
#
# Chain the pieces: a linear layer, tanh, another linear layer, and a squared-error loss,
#
# $$v = x W_1 + b_1,\quad a = \tanh(v),\quad \text{out} = a W_2 + b_2,\quad
#   L = \tfrac{1}{2} \textstyle\sum (\text{out} - y)^2 .$$
#
# The forward pass stores each cache; the backward pass walks the same steps in reverse, starting
# from `dL/dout = out - y`. Each line of `backward` below is one application of the chain rule,
# and each calls the backward written next to its forward in `minivae.layers`. (The hidden layer is
# `v` before its activation and `a` after it; `h` is kept for the finite-difference step below, as
# in the course's notation table, `tutorials/README.md`.)

# %%
tanh = layers.Tanh()


def forward(params, x, y):
    """L and the caches of each step."""
    v, cache1 = layers.linear_forward(x, params["W1"], params["b1"])
    a, cache_tanh = tanh.forward(v)
    out, cache2 = layers.linear_forward(a, params["W2"], params["b2"])
    loss = 0.5 * np.sum((out - y) ** 2)
    return loss, (cache1, cache_tanh, cache2, out, y)


def backward(caches, tanh_backward=tanh.backward):
    """dL/dparam for every parameter, in the reverse order of the forward pass."""
    cache1, cache_tanh, cache2, out, y = caches
    dout = out - y                                        # dL/dout
    da, dW2, db2 = layers.linear_backward(dout, cache2)   # through out = a W2 + b2
    dv = tanh_backward(da, cache_tanh)                    # through a = tanh(v)
    _, dW1, db1 = layers.linear_backward(dv, cache1)      # through v = x W1 + b1
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def make_problem(dtype, seed=0, n=5, d_in=4, d_hidden=6, d_out=3, input_scale=0.05):
    """Inputs, targets and parameters of the little network, in the given float dtype."""
    g = np.random.default_rng(seed)
    x = (input_scale * g.standard_normal((n, d_in))).astype(dtype)
    y = g.standard_normal((n, d_out)).astype(dtype)
    params = {"W1": g.standard_normal((d_in, d_hidden)), "b1": 0.1 * g.standard_normal(d_hidden),
              "W2": g.standard_normal((d_hidden, d_out)), "b2": 0.1 * g.standard_normal(d_out)}
    return x, y, {key: value.astype(dtype) for key, value in params.items()}


x, y, params = make_problem(np.float64)
loss, caches = forward(params, x, y)
grads = backward(caches)
print(f"L = {loss:.6f}")
for key in params:
    print(f"  d{key}: shape {grads[key].shape} (same as {key}: {params[key].shape})")

# %% [markdown]
# ## A gradient check, step by step
#
# Is `backward` right? The derivative is a limit, and the centered difference approximates it:
#
# $$\frac{\partial L}{\partial \theta} \approx \frac{L(\theta + h) - L(\theta - h)}{2h}.$$
#
# Its error is of order `h^2` (the first-order error terms cancel, which is why it is *centered*).
# Take one entry, `W1[0, 1]`: nudge it up, evaluate the loss, nudge it down, evaluate again, put it
# back.

# %%
h = 1e-5
original = params["W1"][0, 1]
params["W1"][0, 1] = original + h
loss_plus, _ = forward(params, x, y)
params["W1"][0, 1] = original - h
loss_minus, _ = forward(params, x, y)
params["W1"][0, 1] = original  # always restore
numerical_entry = (loss_plus - loss_minus) / (2 * h)
analytic_entry = grads["W1"][0, 1]
print(f"dL/dW1[0, 1]: analytic {analytic_entry:.10f}, numerical {numerical_entry:.10f}")

# %% [markdown]
# `gradcheck.numerical_gradient(f, array)` does exactly this for every entry of an array
# (perturbing it in place, so `f` may ignore its argument and read the parameter dict). It gives the
# same number for `W1[0, 1]`, and the whole array for the comparison that follows.

# %%
numerical = {key: gradcheck.numerical_gradient(lambda _: forward(params, x, y)[0], params[key])
             for key in params}
print(f"numerical_gradient's W1[0, 1]: {numerical['W1'][0, 1]:.10f}")

# %% [markdown]
# ## What the relative error means
#
# Two gradients are compared entry by entry with the relative error (CS231n's definition):
#
# $$\mathrm{rel\_error}(a, b) = \max_i \frac{|a_i - b_i|}{\max(10^{-8},\, |a_i| + |b_i|)}.$$
#
# Relative, so that it reads the same whether the gradient is of size 1e-3 or 1e3; the worst entry,
# so that one wrong entry cannot hide among correct ones; with a floor, so that two tiny numbers
# like 1e-12 and 0 do not count as an error of 1. Rough guide in float64: below 1e-7 the gradient
# is right; around 1e-4 be suspicious (a kink, as in ReLU, can cause it); 1e-2 and above, a bug.

# %%
for key in params:
    print(f"rel_error d{key}: {gradcheck.rel_error(grads[key], numerical[key]):.1e}")

# %% [markdown]
# ## Why float64
#
# The centered difference has two errors pulling in opposite directions: truncation, of order
# `h^2`, shrinks with `h`; round-off, of order `eps * |L| / h` (`eps` the machine precision),
# grows as `h` shrinks, because `L(θ+h) - L(θ-h)` subtracts two nearly equal numbers. In float64
# `eps ≈ 2.2e-16`: at `h = 1e-5` both are around 1e-10. In float32 `eps ≈ 1.2e-7`: round-off alone
# is then about 1e-2, and below `h ≈ eps |θ|` the nudge vanishes altogether (`θ + h == θ`).
#
# The figure measures it: the same network and the same check, all arrays in float64 or all in
# float32, over a range of steps `h`. Read the float64 curve from the right: the error falls as
# `h^2` (truncation, slope 2 on the log-log plot), bottoms out near the default `h = 1e-5` at a few
# 1e-9, then climbs again as `1/h` (round-off). Float32 is a different story: the error is 1, the
# worst possible, at almost every `h` up to 1e-4 (never better than a few tenths there), and the
# best it ever does is a few 1e-3, at `h ≈ 1e-2`.

# %%
steps = np.logspace(-10, -1, course.size(28, 10))
curves = {}
for dtype in (np.float64, np.float32):
    x_t, y_t, params_t = make_problem(dtype)
    grads_t = backward(forward(params_t, x_t, y_t)[1])
    errors = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numerical_gradient warns about float32: that is the point
        for step in steps:
            numerical_t = {key: gradcheck.numerical_gradient(
                lambda _: forward(params_t, x_t, y_t)[0], params_t[key], h=float(step)) for key in params_t}
            errors.append(max(gradcheck.rel_error(grads_t[key], numerical_t[key]) for key in params_t))
    curves[np.dtype(dtype).name] = (steps, np.array(errors))

fig = plots.plot_lines(curves, xlabel="finite-difference step h", ylabel="largest relative error",
                       title="Gradient check of the small network", logx=True)
ax = fig.axes[0]
ax.set_yscale("log")
ax.axvline(gradcheck.DEFAULT_STEP, color="0.5", linestyle=":", linewidth=1)
ax.text(gradcheck.DEFAULT_STEP, 0.5, " default h", color="0.4", fontsize="small",
        transform=ax.get_xaxis_transform())
plots.save_figure(fig, course.figure_path(TUTORIAL, "step_size.png"))
best = {name: float(np.min(err)) for name, (_, err) in curves.items()}
best_step = {name: float(h[np.argmin(err)]) for name, (h, err) in curves.items()}
for name in curves:
    print(f"{name}: best relative error {best[name]:.1e}, at h = {best_step[name]:.1e}")
errors64, errors32 = curves["float64"][1], curves["float32"][1]
course.claim(1e-6 <= best_step["float64"] <= 1e-4 and 1e-9 <= best["float64"] < 1e-8,
             f"float64 bottoms out near the default h = 1e-5 at a few 1e-9 "
             f"(at h = {best_step['float64']:.1e}: {best['float64']:.1e})")
small = errors32[steps <= 1e-4]
course.claim(np.mean(small > 0.99) > 0.9 and small.min() > 0.3,
             f"float32's error is 1 at almost every h up to 1e-4 ({np.mean(small > 0.99):.0%} of "
             f"them) and never better than a few tenths there (at least {small.min():.2f})")
course.claim(1e-3 <= best["float32"] < 1e-2 and 3e-3 <= best_step["float32"] <= 3e-2,
             f"float32's best is a few 1e-3, at h ≈ 1e-2 "
             f"({best['float32']:.1e} at h = {best_step['float32']:.1e})")
course.show(fig)

# %% [markdown]
# ## Float32 cannot see a subtle bug
#
# Here is a realistic slip: computing tanh's derivative as `1 - v^2` from the *input* `v`
# instead of `1 - tanh(v)^2`. For small `v` the two nearly agree (`tanh(v) ≈ v`), so the gradient
# is only slightly wrong. The figure checks the correct and the buggy backward, each in float64
# (with the default step `h = 1e-5`) and in float32 (with float32's best step in the figure above,
# printed there; at `h = 1e-5` float32 scores 1, the worst possible). In float64 about six orders
# of magnitude separate right from wrong; in float32 the correct gradient fails the check by as
# much as the buggy one, and the check tells nothing.


# %%
def buggy_tanh_backward(dout, cache):
    out = cache
    v = np.arctanh(out)       # the input, as a student might have cached it
    return dout * (1 - v * v)  # BUG: should be 1 - tanh(v)^2 = 1 - out^2


def worst_error(dtype, tanh_backward, step):
    x_t, y_t, params_t = make_problem(dtype)
    grads_t = backward(forward(params_t, x_t, y_t)[1], tanh_backward)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return max(gradcheck.rel_error(grads_t[key], gradcheck.numerical_gradient(
            lambda _: forward(params_t, x_t, y_t)[0], params_t[key], h=step)) for key in params_t)


FLOAT32_STEP = float(f"{best_step['float32']:.0e}")  # float32's best step above, rounded
cases = {
    "correct, float64": worst_error(np.float64, tanh.backward, gradcheck.DEFAULT_STEP),
    "bug, float64": worst_error(np.float64, buggy_tanh_backward, gradcheck.DEFAULT_STEP),
    f"correct, float32, h={FLOAT32_STEP:g}": worst_error(np.float32, tanh.backward, FLOAT32_STEP),
    f"bug, float32, h={FLOAT32_STEP:g}": worst_error(np.float32, buggy_tanh_backward, FLOAT32_STEP),
}
for name, value in cases.items():
    print(f"{name:26s} rel_error {value:.1e}")
correct64, bug64, correct32, bug32 = cases.values()
course.claim(1e5 <= bug64 / correct64 <= 1e7,
             f"in float64 about six orders of magnitude separate right from wrong "
             f"({bug64:.1e} against {correct64:.1e})")
course.claim(correct32 > 1e-3 and correct32 > bug32 / 3,
             f"in float32 the correct gradient fails the check by as much as the buggy one "
             f"({correct32:.1e} against {bug32:.1e})")

fig = Figure(figsize=(6.4, 2.8), layout="constrained")
ax = fig.add_subplot()
colors = ["C2", "C3", "C2", "C3"]
ax.barh(range(len(cases)), list(cases.values()), color=colors, alpha=0.85)
ax.set_yticks(range(len(cases)), list(cases.keys()))
ax.invert_yaxis()
ax.set_xscale("log")
ax.axvline(1e-7, color="0.3", linestyle="--", linewidth=1)
ax.text(1e-7, 0.02, " pass below 1e-7", fontsize="small", va="bottom",
        transform=ax.get_xaxis_transform())
ax.set_xlabel("largest relative error (log scale)")
ax.set_title("Correct and buggy tanh backward, checked in float64 and float32")
ax.grid(True, axis="x", alpha=0.3)
plots.save_figure(fig, course.figure_path(TUTORIAL, "bug_detection.png"))
course.show(fig)

# %% [markdown]
# ## The whole VAE, every parameter
#
# minivae's VAE is built from exactly these pieces (plus the reparameterization trick and the KL of
# tutorial 3). Its `loss_and_grads(x, eps)` returns the loss and a gradient for every entry of
# `model.params`; given `eps`, the loss is a deterministic function of the parameters, so
# `minivae.check_model_gradients` can perturb each parameter in place exactly as above. A tiny
# model in float64 passes, below 1e-7 for every parameter (most far below); the same model in
# float32 fails the same check, although its backward is the same code.
#
# The model is built with `backend="numpy"`, so that every leaf operation it runs is the NumPy code
# of `minivae.ops` that this tutorial has just taken apart (`dense_forward` is `linear_forward`
# then the activation). On the default "numba" backend the same chain runs with compiled kernels for
# some leaves; `tests/test_backends.py` shows that both give the same losses and gradients.

# %%
x_digits, _ = minivae.datasets.load_digits("train")
x_small = x_digits[:5, 20:26] // 6  # 5 examples, 6 pixels, values 0..2
eps = rng.standard_normal((5, 2))
errors_by_dtype = {}
for dtype in (np.float64, np.float32):
    model = minivae.VAE(6, 2, hidden=(5,), activation="tanh", likelihood="categorical", num_values=3,
                        seed=1, dtype=dtype, backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        errors_by_dtype[np.dtype(dtype).name] = minivae.check_model_gradients(model, x_small, eps)
keys = list(errors_by_dtype["float64"])
for key in keys:
    print(f"{key:12s} float64 {errors_by_dtype['float64'][key]:.1e}   "
          f"float32 {errors_by_dtype['float32'][key]:.1e}")
worst64 = max(errors_by_dtype["float64"].values())
worst32 = max(errors_by_dtype["float32"].values())
course.claim(worst64 < 1e-7 and worst32 > 1e-7,
             f"float64 passes below 1e-7 for every parameter (worst {worst64:.1e}); float32 fails "
             f"(worst {worst32:.1e})")

fig = Figure(figsize=(6.4, 3.4), layout="constrained")
ax = fig.add_subplot()
positions = np.arange(len(keys))
for offset, (name, color) in zip((-0.2, 0.2), (("float64", "C0"), ("float32", "C1"))):
    ax.barh(positions + offset, [errors_by_dtype[name][key] for key in keys], height=0.4,
            color=color, alpha=0.85, label=name)
ax.set_yticks(positions, keys)
ax.invert_yaxis()
ax.set_xscale("log")
ax.axvline(1e-7, color="0.3", linestyle="--", linewidth=1)
ax.set_xlabel("relative error against finite differences (log scale)")
ax.set_title("Gradient check of a tiny VAE, every parameter")
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
ax.grid(True, axis="x", alpha=0.3)
plots.save_figure(fig, course.figure_path(TUTORIAL, "vae_gradcheck.png"))
course.show(fig)

# %% [markdown]
# ## What to take away
#
# - Every layer is a pair: `forward` returns `(out, cache)`, `backward` takes `dout = dL/dout` and
#   the cache and returns the gradients. For `out = x W + b`: `dx = dout Wᵀ`, `dW = xᵀ dout`,
#   `db = Σ_n dout_n`; for an activation, `dx = dout * f'(x)`. The shapes alone almost force the
#   formulas.
# - Backpropagation is these backward calls in reverse order of the forward pass; nothing more.
# - Check every hand-written gradient against a centered difference, with the relative error
#   `max |a - b| / max(1e-8, |a| + |b|)`. In float64 a correct gradient scores about 1e-7 or
#   better; a bug scores far worse.
# - Check in float64. In float32, round-off in the finite difference is as large as a subtle bug,
#   so a passing check means nothing. (Training in float32 is fine; checking is not.)
#
# Next: tutorial 3 adds the one step a VAE needs beyond layers, sampling `z` in a way gradients can
# flow through.

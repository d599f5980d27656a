# %% [markdown]
# # 6. Estimating the marginal likelihood
#
# The number a VAE is judged by is its log-likelihood `log p(x)` on test data, and `log p(x)` has
# no closed form: it is an integral over the latent space, `p(x) = ∫ p(x|z) p(z) dz`. It has to be
# *estimated* by sampling, and an estimate has a bias and a spread. This tutorial measures both, for
# three ways of sampling and for every sample size `K` from 1 to 512: first on a probabilistic PCA,
# where the exact value is known and every error can be seen, then on the trained digits model,
# where it is not.
#
# **What you will learn**
#
# - the three estimators: sampling the prior, importance sampling with the encoder `q(z|x)`, and
#   the importance-weighted bound `L_K`, which is the logarithm of the second;
# - why an unbiased estimate of `p(x)` gives an estimate of `log p(x)` that is too low, and how its
#   bias and spread shrink with `K`;
# - how the proposal matters: an exact posterior gives the answer with one sample; a proposal that
#   is too narrow has a *smaller* ELBO gap than one that is too wide, yet needs *many more* samples.
#   Two different KL divergences are at work;
# - what the test NLL with `K = 512` means on a real model, and how far it is from the ELBO.
#
# **Prerequisites.** Tutorial 1 (pPCA and the naive Monte Carlo estimate), tutorial 3 (the ELBO and
# `log p(x) = ELBO + KL(q(z|x) || p(z|x))`) and tutorial 4 (the reference model on the digits).
#
# **Run time.** About a minute in full (64 to 73 s measured on a two-core machine shared with
# other jobs, load average 3.8, with the model read from the cache): mostly about 20 000 decoder passes
# for each of 100 test images. The digits model is tutorial 4's, read from the cache (trained here,
# once, if tutorial 4 has not run). About 5 seconds with `MINIVAE_QUICK=1`, whose numbers mean
# little (its digits model is trained for 2 epochs).

# %%
import numpy as np
from matplotlib.figure import Figure
from scipy.special import logsumexp

import minivae
from minivae import course, plots
from minivae.ops import diagonal_gaussian_log_prob
from minivae.linear_vae import linear_vae_exact, linear_vae_from_ppca
from minivae.ppca import PPCA

TUTORIAL = "06_estimating_the_marginal_likelihood"
rng = np.random.default_rng(6)

IMAGE_SHAPE = minivae.datasets.DIGITS_IMAGE_SHAPE
VMAX = 16.0  # intensity 16 drawn black

K_VALUES = course.size([1, 2, 4, 8, 16, 32, 64, 128, 256, 512], [1, 8, 64])
REPEATS = course.size(10, 3)        # independent estimates per image and K, for the spread
N_IMAGES = course.size(100, 10)     # test images the curves are averaged over

# %% [markdown]
# ## Three estimators of one integral
#
# **Sampling the prior.** `p(x)` is an expectation under the prior, so average the likelihood of
# `K` prior draws (tutorial 1):
#
# $$\hat p_K(x) = \frac{1}{K} \sum_{k=1}^K p(x | z_k), \qquad z_k \sim p(z).$$
#
# **Importance sampling with q.** Draw from a proposal that looks at `x`, the encoder's
# `q(z|x)`, and correct each draw by its *importance weight*:
#
# $$\hat p_K(x) = \frac{1}{K} \sum_{k=1}^K w_k, \qquad
#   w_k = \frac{p(x | z_k)\, p(z_k)}{q(z_k | x)}, \qquad z_k \sim q(z|x).$$
#
# Both are *unbiased* for `p(x)`: `E[w] = ∫ q(z|x) p(x,z)/q(z|x) dz = p(x)`, for any `q(z|x)` that is
# positive wherever the posterior is. (Sampling the prior is the special case `q(z|x) = p(z)`.)
#
# **The importance-weighted bound.** We want `log p(x)`, and the logarithm of an unbiased
# estimate is not unbiased. The log is concave, so by Jensen's inequality
#
# $$L_K = E\big[\log \hat p_K(x)\big] \le \log E\big[\hat p_K(x)\big] = \log p(x).$$
#
# With the encoder as proposal, `L_K` is the importance-weighted bound of Burda et al. (2016):
# `L_1` is the ELBO, `L_K` never decreases with `K`, and it reaches `log p(x)` as `K → ∞`. So the
# importance-sampling estimate of `log p(x)` and the importance-weighted bound are the same
# number seen two ways: one draw of `log p̂_K(x)` is an estimate, its expectation is the bound, and
# the difference between the bound and `log p(x)` is the estimate's bias. For large `K` a Taylor
# expansion of the log around `p(x)` gives
#
# $$\text{bias} \approx -\frac{\mathrm{Var}[w]}{2 K\, p(x)^2}, \qquad
#   \text{spread (standard deviation)} \approx \frac{\sqrt{\mathrm{Var}[w]}}{\sqrt{K}\, p(x)},$$
#
# so, once `K` is large enough for the expansion to hold, the bias falls like `1/K` and the spread
# like `1/√K`. `VAE.log_likelihood(x, n_samples=K)` computes `log p̂_K(x)` with the encoder as
# proposal. The prior-sampling estimator is not in the library (nobody should use it); here it is,
# for any minivae model. One set of prior draws serves every image, since they do not depend on `x`,
# and that is precisely the estimator's weakness.


# %%
def prior_sampling_log_likelihood(model, x, n_samples, rng):
    """log (1/K) Σ_k p(x|z_k) with z_k ~ p(z), for each row of x.

    Parameters
    ----------
    model : minivae.VAE
    x : (N, input_dim) array
    n_samples : int, K
    rng : numpy.random.Generator

    Returns
    -------
    (N,) array, nats
    """
    z = model.prior.sample(n_samples, model.latent_dim, model.params, rng, model.dtype)   # (K, latent_dim)
    out, _ = model.decoder.forward(model.params, z)                         # (K, decoder outputs)
    estimates = np.empty(x.shape[0])
    for n, x_n in enumerate(x):
        x_repeated = np.broadcast_to(x_n.astype(model.dtype), (n_samples, x.shape[1]))
        log_px_given_z = model.likelihood.log_prob(x_repeated, out, model.params)  # (K,)
        estimates[n] = logsumexp(log_px_given_z) - np.log(n_samples)  # in log space: p(x|z) ~ e^-150
    return estimates


def repeated_estimates(estimator, x, k_values, repeats, rng):
    """``estimator(x, K, rng)`` for every K, ``repeats`` times: a (len(k_values), repeats, N) array."""
    return np.array([[estimator(x, K, rng) for _ in range(repeats)] for K in k_values])


# %% [markdown]
# ## On pPCA, where the answer is known
#
# As in tutorials 1 and 3: dequantize the digits, fit a pPCA, here with `q = 8` latent
# dimensions, and turn it into a linear VAE with a Gaussian decoder. `linear_vae_from_ppca` sets its
# encoder to the exact posterior (diagonal, because pPCA's `W` has orthogonal columns), so the ELBO
# of that model *is* `log p(x)`.
#
# To see what a less perfect proposal does, we make two deliberately wrong encoders. The encoder is
# linear, `y = x W + b`, and `logvar` is the second half of `y`; adding `2 log f` to the last `q`
# entries of `b` (`q = 8`, the latent size) multiplies every posterior standard deviation by `f`
# and leaves the mean exact.
# With `f = 2` the proposal is too wide, with `f = 1/2` too narrow.

# %%
Q = 8
x_train_int, _ = minivae.datasets.load_digits("train")
x_test_int, _ = minivae.datasets.load_digits("test")
x_train_continuous = minivae.datasets.dequantize(x_train_int, rng)
x_eval_continuous = minivae.datasets.dequantize(x_test_int[:N_IMAGES], rng)

ppca = PPCA(Q).fit(x_train_continuous)
exact = ppca.log_likelihood(x_eval_continuous)                 # (N,), exact log p(x)


def linear_vae_with_posterior_scaled_by(factor):
    """pPCA's linear VAE whose q(z|x) has the exact mean and `factor` times the exact std."""
    model = linear_vae_from_ppca(ppca)
    model.params["encoder.0.b"][Q:] += 2 * np.log(factor)
    return model


proposals = {"exact posterior": linear_vae_from_ppca(ppca),
             "q 2x too wide": linear_vae_with_posterior_scaled_by(2.0),
             "q 2x too narrow": linear_vae_with_posterior_scaled_by(0.5)}
for name, model in proposals.items():
    elbo = linear_vae_exact(model, x_eval_continuous).elbo  # closed form, no sampling
    print(f"{name:16s} ELBO - log p(x) = {np.mean(elbo - exact):7.3f} nats (exact, mean over images)")
print(f"exact mean log p(x) = {exact.mean():.2f} nats per image")

# %% [markdown]
# Now every estimator, `REPEATS` times for each image and each `K`. The quantity to look at is the
# error `log p̂_K(x) - log p(x)`, exact for once.

# %%
estimators = {
    "sampling the prior": lambda x, K, rng: prior_sampling_log_likelihood(
        proposals["exact posterior"], x, K, rng),
    **{f"IS, {name}": (lambda x, K, rng, model=model: model.log_likelihood(x, n_samples=K, rng=rng))
       for name, model in proposals.items()},
}
ppca_errors = {name: repeated_estimates(estimator, x_eval_continuous, K_VALUES, REPEATS, rng) - exact
               for name, estimator in estimators.items()}


def bias_and_spread(errors):
    """Mean error and typical standard deviation across repeats, per K.

    Parameters
    ----------
    errors : (n_K, repeats, N) array, estimate minus the true value (or the estimates themselves)

    Returns
    -------
    bias : (n_K,) array, the mean over repeats and images
    spread : (n_K,) array, the standard deviation over repeats of one image's estimate, as a root
        mean square over the images
    """
    bias = errors.mean(axis=(1, 2))
    spread = np.sqrt(np.mean(errors.var(axis=1, ddof=1), axis=1))
    return bias, spread


print(f"{'K':>4s} " + "".join(f"{name:>30s}" for name in ppca_errors))
for i, K in enumerate(K_VALUES):
    cells = []
    for errors in ppca_errors.values():
        bias, spread = bias_and_spread(errors[i:i + 1])
        cells.append(f"{bias[0]:+10.3f} ± {spread[0]:6.3f}")
    print(f"{K:4d} " + "".join(f"{cell:>30s}" for cell in cells))

# %% [markdown]
# The table gives, for each `K`, the bias ± the spread of `log p̂_K(x) - log p(x)` in nats. The
# figure draws the same thing: the line is the bias, the band one spread on either side, so the
# band is where a single estimate typically lands. The left panel shows all four estimators; the
# right panel zooms in on the three that sample from an encoder.
#
# - **Sampling the prior** (left) starts about a hundred nats too low and is still a few nats short
#   at `K = 512`: in 8 dimensions the prior rarely lands where the posterior is (tutorial 1).
# - **The exact posterior** gives the exact answer with `K = 1` and no spread at all: the weight
#   `p(x,z)/p(z|x)` equals `p(x)` for *every* `z`. The better `q(z|x)` matches the posterior, the more
#   nearly constant the weights, and the fewer samples are needed.
# - **Too wide** starts lower (its ELBO gap is larger) but climbs fast and is within a few
#   hundredths of a nat by `K = 512`.
# - **Too narrow** starts closer (its ELBO gap is smaller) but climbs slowly, and is overtaken by
#   the wide proposal after a handful of samples.

# %%
COLORS = {"sampling the prior": "C3", "IS, exact posterior": "k", "IS, q 2x too wide": "C0",
          "IS, q 2x too narrow": "C1"}


def draw_bands(ax, k_values, results, reference=None):
    """Bias line and ±1 spread band of each estimator against K, on a log-x axes."""
    for name, values in results.items():
        bias, spread = bias_and_spread(values)
        color = COLORS[name]
        ax.fill_between(k_values, bias - spread, bias + spread, color=color, alpha=0.2, linewidth=0)
        ax.plot(k_values, bias, "o-", color=color, markersize=3, label=name)
    if reference is not None:
        ax.axhline(reference, color="0.3", linewidth=1, linestyle="--")
    ax.set_xscale("log", base=2)
    ax.set_xticks(k_values, [str(K) for K in k_values])
    ax.set_xlabel("samples K")
    ax.grid(True, alpha=0.3)


fig = Figure(figsize=(12, 4.6), layout="constrained")
ax = fig.add_subplot(1, 2, 1)
draw_bands(ax, K_VALUES, ppca_errors, reference=0.0)
ax.set_ylabel("log p̂_K(x) − log p(x)   (nats)")
ax.set_title(f"pPCA, q = {Q}: all four estimators")
ax.legend(loc="lower right")
ax = fig.add_subplot(1, 2, 2)
encoder_errors = {name: errors for name, errors in ppca_errors.items() if name.startswith("IS")}
draw_bands(ax, K_VALUES, encoder_errors, reference=0.0)
low = min(bias_and_spread(errors)[0][0] - bias_and_spread(errors)[1][0]
          for errors in encoder_errors.values())
ax.set_ylim(1.1 * low, 0.1 * abs(low))
ax.set_ylabel("log p̂_K(x) − log p(x)   (nats)")
ax.set_title("Zoom: importance sampling with an encoder")
plots.save_figure(fig, course.figure_path(TUTORIAL, "ppca_bias_and_spread.png"))
course.show(fig)

# %% [markdown]
# ## Why too narrow is worse than too wide: two KL divergences
#
# Tutorial 3 showed that the ELBO gap is `KL(q(z|x) || p(z|x))`: the ELBO penalises a `q(z|x)` that puts
# mass where the posterior has little, and is lenient with a `q(z|x)` that misses part of the
# posterior. Importance sampling has the opposite worry. Its weights `p(z|x) p(x) / q(z|x)` are huge
# where `q(z|x)` is small and the posterior is not, and those rare, huge weights are what the estimate
# waits for. The number of samples it needs is about `exp(KL(p(z|x) || q(z|x)))`, the KL the
# *other* way round (Chatterjee & Diaconis, 2018). A narrow `q(z|x)` misses the tails of the posterior:
# a small ELBO gap, a large `KL(p || q)`.
#
# For Gaussians that differ only in their standard deviation by a factor `f`, each latent dimension
# contributes `(f² - 1 - 2 log f) / 2` to `KL(q || p)` and `(1/f² - 1 + 2 log f) / 2` to
# `KL(p || q)`. The two swap when `f` becomes `1/f`, and so do the roles of our two proposals. We
# compute both for our encoders, the posterior coming from `ppca.posterior`.


# %%
def kl_diagonal_gaussians(mu_a, var_a, mu_b, var_b):
    """KL(N(mu_a, diag(var_a)) || N(mu_b, diag(var_b))), summed over the last axis.

    KL = 1/2 Σ_j [var_a / var_b + (mu_a - mu_b)² / var_b - 1 + log var_b - log var_a]
    """
    return 0.5 * np.sum(var_a / var_b + (mu_a - mu_b) ** 2 / var_b - 1 + np.log(var_b / var_a), axis=-1)


posterior_mean, posterior_cov = ppca.posterior(x_eval_continuous)
posterior_var = np.broadcast_to(np.diag(posterior_cov), posterior_mean.shape)
samples_needed = {}
print(f"{'proposal':16s} {'KL(q || p(z|x))':>16s} {'KL(p(z|x) || q)':>16s} {'exp KL(p || q)':>15s}")
for name, model in proposals.items():
    mu, logvar = model.encode(x_eval_continuous)
    gap = np.mean(kl_diagonal_gaussians(mu, np.exp(logvar), posterior_mean, posterior_var))
    reverse = np.mean(kl_diagonal_gaussians(posterior_mean, posterior_var, mu, np.exp(logvar)))
    samples_needed[f"IS, {name}"] = np.exp(reverse)
    print(f"{name:16s} {gap:16.3f} {reverse:16.3f} {np.exp(reverse):15.1f}")

# %% [markdown]
# The too-wide proposal needs about a dozen samples, the too-narrow one several hundred. On a
# log-log scale this becomes visible: below, the size of the bias and the spread against `K`, with
# the `1/K` and `1/√K` slopes of the Taylor expansion for comparison (grey) and `exp(KL(p || q))`
# as a dotted line in each proposal's colour. The wide proposal follows both slopes from about
# that line on. The narrow one never does: its bias falls much more slowly than `1/K` and its spread
# hardly falls at all. It is an extreme case, but not an exotic one. A Gaussian `q(z|x)` narrower than a
# Gaussian posterior by more than a factor `√2` makes `Var[w] = ∫ p(z|x)² p(x)² / q(z|x) dz - p(x)²`
# infinite (the integrand's tails grow), the expansion above does not apply, and the estimate
# creeps up as `K` grows, driven by ever rarer and larger weights. Ours is narrower by a factor 2.

# %%
fig = Figure(figsize=(12, 4.2), layout="constrained")
for column, (title, which) in enumerate((("bias: how far below log p(x), on average", 0),
                                         ("spread: standard deviation of one estimate", 1))):
    ax = fig.add_subplot(1, 2, column + 1)
    for name in ("sampling the prior", "IS, q 2x too wide", "IS, q 2x too narrow"):
        values = np.abs(bias_and_spread(ppca_errors[name])[which])
        ax.plot(K_VALUES, values, "o-", color=COLORS[name], markersize=3, label=name)
        if name in samples_needed:
            ax.axvline(samples_needed[name], color=COLORS[name], linestyle=":", linewidth=2,
                       label=f"exp KL(p || q) = {samples_needed[name]:.0f}")
    slope = 1.0 if which == 0 else 0.5
    anchor = np.abs(bias_and_spread(ppca_errors["IS, q 2x too wide"])[which])[-1]
    reference = anchor * (np.asarray(K_VALUES, dtype=float) / K_VALUES[-1]) ** -slope
    ax.plot(K_VALUES, reference, color="0.6", linewidth=4, alpha=0.5, zorder=0,
            label="slope 1/K" if which == 0 else "slope 1/√K")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(K_VALUES, [str(K) for K in K_VALUES])
    ax.set_xlabel("samples K")
    ax.set_ylabel("nats")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
plots.save_figure(fig, course.figure_path(TUTORIAL, "ppca_rates.png"))
course.show(fig)

# %% [markdown]
# ## The weights themselves
#
# Everything above is decided by the distribution of the importance weights. For one test image,
# draw many `z` from each proposal and look at `log w - log p(x)`, the log of each weight relative
# to its mean (`E[w] = p(x)`). Written out, `log w = log p(x|z) + log p(z) - log q(z|x)`:


# %%
def log_importance_weights(model, x_one, n_samples, rng, proposal="encoder"):
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k) for one example.

    Parameters
    ----------
    model : minivae.VAE
    x_one : (input_dim,) array, one example
    n_samples : int, K
    rng : numpy.random.Generator
    proposal : "encoder" (z_k ~ q(z|x), the encoder) or "prior" (z_k ~ p(z), so log w = log p(x|z))

    Returns
    -------
    (K,) array
    """
    x_one = np.asarray(x_one, dtype=model.dtype)[None, :]
    if proposal == "prior":
        z = model.prior.sample(n_samples, model.latent_dim, model.params, rng, model.dtype)
        log_q = model.prior.log_prob(z)[0]
    else:
        mu, logvar = model.encode(x_one)                                   # (1, latent_dim) each
        eps = rng.standard_normal((n_samples, model.latent_dim)).astype(model.dtype)
        z = mu + np.exp(0.5 * logvar) * eps                                # (K, latent_dim)
        log_q = diagonal_gaussian_log_prob(z, mu, logvar)[0]
    out, _ = model.decoder.forward(model.params, z)
    log_px_given_z = model.likelihood.log_prob(np.broadcast_to(x_one, (n_samples, x_one.shape[1])),
                                               out, model.params)
    return log_px_given_z + model.prior.log_prob(z)[0] - log_q


def effective_sample_size(log_w):
    """(Σ w)² / Σ w², between 1 (one weight dominates) and K (all weights equal)."""
    return float(np.exp(2 * logsumexp(log_w) - logsumexp(2 * log_w)))


N_WEIGHTS = course.size(20_000, 2_000)
x_one, exact_one = x_eval_continuous[0], exact[0]
weights = {"sampling the prior": log_importance_weights(proposals["exact posterior"], x_one,
                                                        N_WEIGHTS, rng, proposal="prior")}
weights.update({f"IS, {name}": log_importance_weights(model, x_one, N_WEIGHTS, rng)
                for name, model in proposals.items()})

fig = Figure(figsize=(13, 3.6), layout="constrained")
axes = fig.subplots(1, 4)
for ax, (name, log_w) in zip(axes, weights.items()):
    relative = log_w - exact_one
    ess = effective_sample_size(log_w)
    largest = np.exp(log_w.max() - logsumexp(log_w))
    if np.ptp(relative) < 1e-6:  # the exact posterior: every weight is p(x)
        ax.bar([0.0], [N_WEIGHTS], width=0.05, color=COLORS[name])
        ax.set_xlim(-1, 1)
    else:
        ax.hist(relative, bins=60, color=COLORS[name], alpha=0.8)
    ax.axvline(0.0, color="0.3", linestyle="--", linewidth=1)
    ax.set_yscale("log")
    ax.set_ylim(0.7, 2 * N_WEIGHTS)
    ax.set_title(f"{name}\nESS {ess:,.0f} of {N_WEIGHTS:,}; largest weight {100 * largest:.3g}%",
                 fontsize="medium")
    ax.set_xlabel("log w − log p(x)")
    print(f"{name:26s} effective sample size {ess:9.1f} of {N_WEIGHTS}; "
          f"log w - log p(x) in [{relative.min():.1f}, {relative.max():.2f}]")
axes[0].set_ylabel("samples (log scale)")
plots.save_figure(fig, course.figure_path(TUTORIAL, "ppca_weights.png"))
course.show(fig)

# %% [markdown]
# The dashed line is `log w = log p(x)`: a weight equal to the mean. The counts are on a log
# scale, so that the rare samples in the tails show. The *effective sample size* (ESS),
# `(Σ w)² / Σ w²`, says how many equally weighted samples the weighted ones are worth; the title
# also gives the share of the whole sum that the single largest weight carries.
#
# - Sampling the prior: almost every weight is tens to hundreds of nats below the mean. The sum is
#   made by one or two lucky draws, so the ESS is a handful out of tens of thousands.
# - Exact posterior: every weight is exactly `p(x)` (a single bar at 0) and the ESS is `K`.
# - Too wide: many draws land far out in the posterior's tails and get tiny weights (the long left
#   tail), but no weight can be far *above* the mean: `w / p(x) = p(z|x) / q(z|x)` is at most
#   `f^q = 2^8` (`q = 8` latent dimensions), about 5.5 nats. Bounded weights have a finite variance, and the estimate converges
#   at the `1/√K` rate.
# - Too narrow: most weights sit a few nats below the mean, and a thin right tail of rare, large
#   weights, from draws in the posterior's tails where `q(z|x)` is thin, carries the mean. A small sample
#   rarely reaches that tail, so its estimate is too low; this is the infinite-variance case above.
#
# ## On the trained digits model
#
# Now the real thing: the reference VAE of tutorial 4 (categorical decoder over the 17 intensities,
# 16 latent dimensions, hidden layers of 256), the very same model: `course.reference_model()`
# reads it from the figures folder, where tutorial 4 left it (and trains it, once, if tutorial 4
# has not run yet). Quick mode uses a small model trained for 2 epochs.

# %%
x_train, _ = minivae.datasets.load_digits("train")
x_val, _ = minivae.datasets.load_digits("val")
x_test, _ = minivae.datasets.load_digits("test")
x_eval = x_test[:N_IMAGES]

digits_model, history, trained = course.reference_model()   # tutorial 4's model, from the cache
print(f"{digits_model}\n{'trained' if trained else 'read back'}: {history.epochs} epochs, kept epoch "
      f"{history.best_epoch}, validation -ELBO {history.best_val_loss:.2f} nats")

# %% [markdown]
# There is no exact `log p(x)` now, so we look at the estimates themselves, against `K`, averaged
# over the same `N_IMAGES` test images: importance sampling with the encoder, and sampling the
# prior. The dashed line is the ELBO, computed with 100 samples of `z` for its reconstruction
# term. (The cell takes most of this tutorial's run time: about 20 000 decoder passes per image.)

# %%
elbo = digits_model.elbo(x_eval, n_samples=100, rng=rng)
digits_estimates = {
    "IS, encoder q(z|x)": repeated_estimates(
        lambda x, K, rng: digits_model.log_likelihood(x, n_samples=K, rng=rng),
        x_eval, K_VALUES, REPEATS, rng),
    "sampling the prior": repeated_estimates(
        lambda x, K, rng: prior_sampling_log_likelihood(digits_model, x, K, rng),
        x_eval, K_VALUES, REPEATS, rng),
}
print(f"ELBO (100 samples) {elbo.mean():8.2f} nats; rate KL(q(z|x) || p(z)) "
      f"{digits_model.kl(x_eval).mean():.2f} nats")
for i, K in enumerate(K_VALUES):
    cells = []
    for estimates in digits_estimates.values():
        mean, spread = bias_and_spread(estimates[i:i + 1])
        cells.append(f"{mean[0]:9.2f} ± {spread[0]:5.2f}")
    print(f"K = {K:3d}: " + "   ".join(f"{name} {cell}"
                                      for name, cell in zip(digits_estimates, cells)))
digits_rate = float(digits_model.kl(x_eval).mean())
is_mean, is_spread = bias_and_spread(digits_estimates["IS, encoder q(z|x)"])
prior_mean, prior_spread = bias_and_spread(digits_estimates["sampling the prior"])
course.claim(7 < digits_rate < 9 and is_mean[-1] - prior_mean[-1] > 1
             and 2 < prior_spread[-1] / is_spread[-1] < 4.5 and is_mean[-1] > is_mean[-2]
             and abs(is_mean[0] - elbo.mean()) < 0.5,
             f"the rate is about 8 nats ({digits_rate:.2f}); at K = {K_VALUES[-1]} sampling the prior is "
             f"more than a nat lower than importance sampling ({is_mean[-1] - prior_mean[-1]:.2f}) and "
             f"two to four times as spread out ({prior_spread[-1] / is_spread[-1]:.1f}); the encoder's "
             f"estimate starts on the ELBO ({is_mean[0]:.2f} against {elbo.mean():.2f}) and is still "
             f"rising at the last K")

COLORS["IS, encoder q(z|x)"] = "C2"
fig = Figure(figsize=(12, 4.6), layout="constrained")
ax = fig.add_subplot(1, 2, 1)
draw_bands(ax, K_VALUES, digits_estimates, reference=elbo.mean())
ax.set_ylabel("log p̂_K(x), mean over test images   (nats)")
ax.set_title("Digits VAE: both estimators (dashed: the ELBO)")
ax.legend(loc="lower right")
ax = fig.add_subplot(1, 2, 2)
draw_bands(ax, K_VALUES, {"IS, encoder q(z|x)": digits_estimates["IS, encoder q(z|x)"]},
           reference=elbo.mean())
mean_is, spread_is = bias_and_spread(digits_estimates["IS, encoder q(z|x)"])
ax.annotate(f"ELBO {elbo.mean():.2f}", (K_VALUES[-1], elbo.mean()), xytext=(0, -12),
            textcoords="offset points", ha="right", fontsize="small", color="0.3")
ax.annotate(f"K = {K_VALUES[-1]}: {mean_is[-1]:.2f} ± {spread_is[-1]:.2f}",
            (K_VALUES[-1], mean_is[-1]), xytext=(0, 10), textcoords="offset points", ha="right",
            fontsize="small", color=COLORS["IS, encoder q(z|x)"])
ax.set_ylabel("log p̂_K(x), mean over test images   (nats)")
ax.set_title("Zoom: importance sampling with the encoder")
plots.save_figure(fig, course.figure_path(TUTORIAL, "digits_bias_and_spread.png"))
course.show(fig)

# %% [markdown]
# The estimate with the encoder starts on the ELBO at `K = 1`, as it must (`L_1` is the ELBO), rises
# with `K`, and its band narrows, as on pPCA. The curve flattens but has not quite stopped rising at
# `K = 512`, so even the reported number is, on average, a little below the true `log p(x)`.
#
# Sampling the prior does much better here than on the 8-dimensional pPCA, despite 16 latent
# dimensions: what counts is not the number of dimensions but how far the posterior is from the
# prior, `KL(p(z|x) || p(z))`, and this model's rate `KL(q(z|x) || p(z))`, a stand-in for it, is only
# about 8 nats (printed above). The rule of thumb then asks for about `e^8 ≈ 3000` prior samples:
# at `K = 512` the estimate is close, but still more than a nat lower than importance sampling and
# two to four times as spread out. Tutorial 7 shows why this model's rate is so small.
#
# ## The number to report
#
# The test NLL is `-log p̂_512(x)` averaged over the whole test set; the test −ELBO is the bound the
# model was trained on. Their difference is a lower bound on the average ELBO gap
# `KL(q(z|x) || p(z|x))`, the price of the approximate posterior. The gap is not the same for every
# image: the histogram shows its spread over the test set, and the rows below show the test images
# with the smallest and the largest gap.

# %%
K_REPORT = K_VALUES[-1]
reconstruction, rate = digits_model.elbo_parts(x_test, n_samples=100, rng=rng)
test_elbo = reconstruction - rate
test_log_px = digits_model.log_likelihood(x_test, n_samples=K_REPORT, rng=rng)
gap = test_log_px - test_elbo
print(f"test -ELBO {-test_elbo.mean():.2f} nats (distortion {-reconstruction.mean():.2f} + "
      f"rate {rate.mean():.2f})")
print(f"test NLL (K = {K_REPORT}) {-test_log_px.mean():.2f} nats; "
      f"log p̂ - ELBO {gap.mean():.2f} nats on average, from {gap.min():.2f} to {gap.max():.2f}")

order = np.argsort(gap)
correlation = np.corrcoef(np.argsort(np.argsort(gap)), np.argsort(np.argsort(-test_log_px)))[0, 1]
print(f"rank correlation between an image's gap and its NLL: {correlation:.2f}")
course.claim(abs(-test_log_px.mean() - 93) < 1 and abs(-test_elbo.mean() - 96) < 1 and gap.mean() > 3
             and gap.min() < 1 and gap.max() > 10 and 0.25 < correlation < 0.55,
             f"the test NLL is about 93 nats ({-test_log_px.mean():.2f}) against a test -ELBO of about 96 "
             f"({-test_elbo.mean():.2f}), at least 3 nats apart on average ({gap.mean():.2f}); per image "
             f"the gap ranges from under one nat ({gap.min():.2f}) to more than ten ({gap.max():.2f}); "
             f"rank correlation with the NLL about 0.4 ({correlation:.2f})")

n_show = 12  # images in each group, in two rows
fig = Figure(figsize=(12, 4.4), layout="constrained")
left, right = fig.subfigures(1, 2, width_ratios=[1.1, 1])
ax = left.add_subplot()
ax.hist(gap, bins=40, color="C2", alpha=0.8)
ax.axvline(gap.mean(), color="k", linestyle="--", linewidth=1.2, label=f"mean {gap.mean():.2f}")
ax.set_xlabel(f"log p̂_{K_REPORT}(x) − ELBO(x)   (nats)")
ax.set_ylabel("test images")
ax.set_title("The ELBO's gap, per test image")
ax.legend()
top, bottom = right.subplots(2, 1)
plots.image_grid(x_test[order[:n_show]], IMAGE_SHAPE, ncols=n_show // 2, ax=top, vmin=0, vmax=VMAX)
top.set_title(f"smallest gap ({gap[order[0]]:.2f} to {gap[order[n_show - 1]]:.2f} nats)")
plots.image_grid(x_test[order[-n_show:]], IMAGE_SHAPE, ncols=n_show // 2, ax=bottom, vmin=0,
                 vmax=VMAX)
bottom.set_title(f"largest gap ({gap[order[-n_show]]:.2f} to {gap[order[-1]]:.2f} nats)")
plots.save_figure(fig, course.figure_path(TUTORIAL, "digits_gap.png"))
course.show(fig)

# %% [markdown]
# In our run the test NLL is about 93 nats against a test −ELBO of about 96: the ELBO
# underestimates `log p(x)` by at least 3 nats per image on average (printed above). Per image, the gap ranges
# from under one nat to more than ten, and it tends to be larger for images the model finds less
# probable (the rank correlation printed above, about 0.4): on unusual digits, bold, slanted or
# oddly shaped, the true posterior is further from anything a diagonal Gaussian can match, and
# the ELBO is looser.
#
# Recall from the pPCA experiment that the ELBO, by minimising `KL(q || p(z|x))`, rewards an
# encoder that errs on the narrow side, and a narrow proposal is the slow case for importance
# sampling. That is one more reason to report `K = 512` rather than a handful, and to read the
# curve against `K`, not a single number.
#
# ## What to take away
#
# - `log p(x)` of a VAE is estimated by importance sampling: `log (1/K) Σ_k p(x, z_k) / q(z_k|x)`
#   with `z_k ~ q(z|x)`. The average of the weights is unbiased for `p(x)`; its logarithm is too low
#   on average. Its expectation is the importance-weighted bound `L_K`: `L_1` is the ELBO, and `L_K`
#   rises to `log p(x)` as `K` grows. Bias falls like `1/K` and spread like `1/√K` once `K` is large
#   enough.
# - The proposal decides how large "enough" is: about `exp(KL(p(z|x) || q(z|x)))` samples. The exact
#   posterior needs one; the prior needs `exp(KL(p(z|x) || p(z)))`, astronomically many as soon as
#   the data say much about `z`.
# - The ELBO and importance sampling penalise opposite mistakes. The ELBO's gap is `KL(q || p(z|x))`
#   and prefers a `q(z|x)` that is too narrow; importance sampling needs `KL(p(z|x) || q)` small and
#   prefers one that is too wide. A narrow `q(z|x)` can have a small ELBO gap and still need hundreds of
#   samples.
# - On a real model there is no exact value: report the test NLL with `K = 512` (`VAE.log_likelihood`)
#   next to the test −ELBO. Watch the curve against `K` flatten and its spread shrink, and remember
#   that even `K = 512` is a lower bound on `log p(x)` in expectation, so the reported NLL is slightly
#   pessimistic.
#
# Next: tutorial 7 looks at what goes wrong in VAEs, starting from the rate `KL(q(z|x) || p(z))`
# that made sampling the prior nearly work here.

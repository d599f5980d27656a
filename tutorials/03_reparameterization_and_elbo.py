# %% [markdown]
# # 3. The reparameterization trick and the ELBO
#
# Tutorial 1 ended with a problem: `log p(x)` cannot be estimated by sampling the prior, and it has
# no closed form once the decoder is a neural network. A VAE gets around it with an *encoder*
# `q(z|x)`, an approximation of the posterior, and trains on a lower bound of `log p(x)`, the ELBO.
# Training needs gradients of expectations under `q(z|x)`, and this tutorial is about getting them
# cheaply and with little noise.
#
# Everything here runs on a VAE whose log-likelihood is known exactly: the linear VAE with a
# Gaussian decoder that a probabilistic PCA *is*. Its decoder is `p(x|z) = N(W z + μ, σ² I)` and
# its encoder outputs `mu` and `logvar` of `q(z|x) = N(mu, diag(exp(logvar)))`. With it, every
# estimate can be checked against the truth.
#
# **What you will learn**
#
# - the two estimators of the gradient of `E_q[f(z)]`, score function (REINFORCE) and
#   reparameterization, and why a VAE uses the second: their variance against the number of
#   samples;
# - the analytic KL between Gaussians against its Monte Carlo estimate;
# - the ELBO as reconstruction minus rate, and the identity
#   `log p(x) = ELBO + KL(q(z|x) || p(z|x))`, shown exactly.
#
# **Prerequisites.** Tutorial 1 (pPCA, posterior, marginal likelihood) and tutorial 2 (the
# forward/backward contract).
#
# **Run time.** Seconds: 6 to 10 s measured on a two-core machine shared with other jobs (load
# average 1.5 to 3.4); a few seconds with `MINIVAE_QUICK=1`.

# %%
import numpy as np
from matplotlib.figure import Figure

import minivae
from minivae import course, plots
from minivae.linear_vae import linear_vae_arrays, linear_vae_exact, linear_vae_from_ppca, set_optimal_encoder
from minivae.ops import reparameterize, reparameterize_backward, reparameterized_log_prob
from minivae.ppca import PPCA, linear_gaussian_elbo, linear_gaussian_log_marginal, linear_gaussian_posterior_gap

TUTORIAL = "03_reparameterization_and_elbo"
rng = np.random.default_rng(3)

# %% [markdown]
# ## A VAE with an exact answer
#
# Fit a pPCA with `q = 16` latent dimensions to the (dequantized) training digits, as in tutorial 1,
# and turn it into a `minivae.VAE` with `hidden=()` (one linear layer each way) and a Gaussian
# decoder: `linear_vae_from_ppca` sets the decoder to pPCA's `W`, `μ`, `σ²` and the encoder to the
# best linear one, whose `q(z|x)` is the exact posterior.

# %%
x_train, _ = minivae.datasets.load_digits("train")
x_test, _ = minivae.datasets.load_digits("test")
x_train = minivae.datasets.dequantize(x_train, rng)
x_test = minivae.datasets.dequantize(x_test, rng)

Q = 16
model = linear_vae_from_ppca(PPCA(Q).fit(x_train))  # float64, so that exact comparisons are exact
print(model)

# %% [markdown]
# ## Two ways to differentiate an expectation
#
# The ELBO contains `E_{q(z|x)}[log p(x|z)]`, and training needs its gradient with respect to the
# encoder's outputs `mu` and `logvar`. The trouble is that they appear in the *distribution* the
# samples come from, not in the function being averaged. Write `f(z) = log p(x|z)`. Two identities
# turn the gradient into an expectation that can be sampled:
#
# **Score function (REINFORCE).** Differentiate the density, using `∇q = q ∇log q`:
#
# $$\nabla_{\mu} E_q[f(z)] = E_q\big[f(z)\, \nabla_{\mu} \log q(z)\big]
#   = E_q\Big[f(z)\, \frac{z - \mu}{\sigma^2}\Big].$$
#
# It needs only values of `f`, never its gradient, so it works for any `f`, even a discrete one.
#
# **Reparameterization.** Draw `ε ~ N(0, I)` and set `z = μ + σ ε`; now the randomness no longer
# depends on `μ`, and the gradient moves inside:
#
# $$\nabla_{\mu} E_q[f(z)] = E_{\varepsilon}\big[\nabla_z f(\mu + \sigma \varepsilon)\big].$$
#
# It uses the gradient of `f`, which backpropagation through the decoder provides. In minivae this
# is `ops.reparameterize` and its backward, `reparameterize_backward`: `dL/dmu = dL/dz`,
# `dL/dlogvar = dL/dz * eps * std / 2`.
#
# Both are unbiased. The question is their variance. Below, `f_and_grad` computes `f(z)` and
# `∇_z f(z)` for a batch of codes, with the model's own decoder and likelihood, forward then
# backward.


# %%
def f_and_grad(z, x):
    """f(z) = log p(x|z) per row, (N,), and its gradient with respect to z, (N, q)."""
    out, decoder_cache = model.decoder.forward(model.params, z)
    log_px, likelihood_cache = model.likelihood.forward(x, out, model.params)
    dout = model.likelihood.backward(np.ones_like(log_px), likelihood_cache, {})  # d log p / d out
    dz = model.decoder.backward(dout, decoder_cache, {})                          # d log p / d z
    return log_px, dz


n_images = course.size(8, 4)
n_draws = course.size(2 ** 14, 2 ** 10)  # single-sample estimates per image
x = x_test[:n_images]
mu, logvar = model.encode(x)
std = np.exp(0.5 * logvar)

eps = rng.standard_normal((n_draws, n_images, Q))
rows = (n_draws * n_images, Q)  # one row per (draw, image): each draw is its own estimate
z, cache = reparameterize(np.broadcast_to(mu, eps.shape).reshape(rows),
                          np.broadcast_to(logvar, eps.shape).reshape(rows), eps.reshape(rows))
x_repeated = np.broadcast_to(x, (n_draws,) + x.shape).reshape(-1, x.shape[1])
log_px, dz = f_and_grad(z, x_repeated)
dmu, _ = reparameterize_backward(dz, cache)                 # ∇_z f(z), routed to mu, one row per draw
z = z.reshape(eps.shape)                                    # (draws, images, q)
log_px, reparameterized = log_px.reshape(n_draws, n_images), dmu.reshape(eps.shape)

score = log_px[..., None] * eps / std                   # f(z) (z - mu) / σ², one estimate per draw

# %% [markdown]
# The exact gradient is known here: the decoder is linear, so `∇_z f` is linear in `z` and its
# average over `q(z|x)` is its value at the mean, `∇_z f(mu)`. A third estimator is worth adding. The
# score function's weakness is that `f(z)` is large (about -150 nats) while its variations are
# small, so every estimate is a big number times mean-zero noise. Subtracting a constant `b` from
# `f` leaves the estimator unbiased (`E[∇ log q] = 0`) and can cut its variance: the *baseline*.
# We use the natural choice, `b = E_q[log p(x|z)]` itself, estimated with `elbo_parts`. It is not
# the best constant: for coordinate `j`, with the score `s_j = ε_j / σ_j`, the variance of
# `(f - b) s_j` is smallest at `b*_j = E[f s_j²] / E[s_j²]`, which differs from `E[f]` because `f`
# is larger where `ε` is small. The printout compares the two; `E[f]` comes close, needs no
# per-coordinate estimate, and is what a baseline usually is in practice.

# %%
exact = f_and_grad(mu, x)[1]
reconstruction, _ = model.elbo_parts(x, n_samples=1000, rng=rng)   # E_q[log p(x|z)] per image
score_baseline = (log_px - reconstruction)[..., None] * eps / std
estimators = {"score function": score, "score function with baseline": score_baseline,
              "reparameterization": reparameterized}
for name, single in estimators.items():
    bias = np.abs(single.mean(axis=0) - exact).max()
    print(f"{name:30s} average of {n_draws} draws is off the exact gradient by at most {bias:.3g}")

# The variance-optimal constant per image and coordinate, b*_j = E[f s_j²] / E[s_j²], from the same draws.
score_j = eps / std                                                       # s = ε / σ, (draws, images, q)
optimal_b = np.mean(log_px[..., None] * score_j ** 2, axis=0) / np.mean(score_j ** 2, axis=0)
score_optimal = (log_px[..., None] - optimal_b) * score_j
variance_mean_b = float(np.mean(np.sum((score_baseline - exact) ** 2, axis=-1)))
variance_optimal_b = float(np.mean(np.sum((score_optimal - exact) ** 2, axis=-1)))
print(f"baseline b = E[f]:  {reconstruction.mean():9.3f} nats (mean over images); single-draw variance "
      f"{variance_mean_b:.4g}")
print(f"baseline b*_j:      {optimal_b.mean():9.3f} nats (mean over images and j); single-draw variance "
      f"{variance_optimal_b:.4g}")
course.claim(variance_optimal_b < variance_mean_b and np.abs(optimal_b - reconstruction[:, None]).max() > 0.01,
             f"the variance-optimal constants b*_j differ from E[f] (by up to "
             f"{np.abs(optimal_b - reconstruction[:, None]).max():.2f} nats) and give less variance "
             f"({variance_optimal_b:.4g} against {variance_mean_b:.4g})")

# %% [markdown]
# First, one coordinate of the gradient for one image, a single draw at a time: the histograms of
# the three estimators on a shared axis, with the exact value in black. The score function
# scatters over hundreds of units around a gradient of order one; the baseline narrows it; the
# reparameterized estimate is, on this scale, a spike at the true value. (Its spread, a few units,
# is still larger than the gradient itself: one sample is noisy, which is one reason training
# averages gradients over a minibatch.)

# %%
fig = Figure(figsize=(7.5, 5.2), layout="constrained")
axes = fig.subplots(3, 1, sharex=True)
limit = np.quantile(np.abs(score[:, 0, 0] - exact[0, 0]), 0.99)  # the axis shows 99% of the draws
bins = np.linspace(exact[0, 0] - limit, exact[0, 0] + limit, 121)
for ax, (name, single), color in zip(axes, estimators.items(), ("C3", "C1", "C0")):
    ax.hist(single[:, 0, 0], bins=bins, color=color, alpha=0.85)
    ax.axvline(exact[0, 0], color="black", linewidth=1.2)
    ax.set_ylabel("draws")
    ax.set_title(f"{name}: standard deviation {single[:, 0, 0].std():.3g}", fontsize="medium")
axes[-1].set_xlabel("single-draw estimate of d E_q[log p(x|z)] / d mu_1 (black: exact value)")
spread = {name: float(single[:, 0, 0].std()) for name, single in estimators.items()}
course.claim(spread["score function"] > 100 and abs(exact[0, 0]) < 10
             and spread["score function with baseline"] < spread["score function"]
             and abs(exact[0, 0]) < spread["reparameterization"] < 10,
             f"the score function scatters over hundreds of units (standard deviation "
             f"{spread['score function']:.0f}) around a gradient of order one ({exact[0, 0]:.2f}); the "
             f"baseline narrows it ({spread['score function with baseline']:.0f}); the reparameterized "
             f"spread, a few units ({spread['reparameterization']:.2f}), is larger than the gradient itself")
plots.save_figure(fig, course.figure_path(TUTORIAL, "gradient_histograms.png"))
course.show(fig)

# %% [markdown]
# Averaging `S` draws divides the variance by `S`, whatever the estimator: on a log-log plot the
# three curves are parallel lines of slope -1. What differs is their height, and the figure
# shows by how much. The vertical distance between two lines is how many times more samples one
# estimator needs to match the other. This is why VAEs use the reparameterization trick whenever
# `z` is continuous: one reparameterized sample is worth thousands of score-function samples.

# %%
sample_sizes = 2 ** np.arange(0, int(np.log2(n_draws)) - 5)  # at least 64 averages per size
variance = {}
for name, single in estimators.items():
    variance[name] = []
    for S in sample_sizes:
        averages = single.reshape(n_draws // S, S, n_images, Q).mean(axis=1)
        variance[name].append(float(np.mean(np.sum((averages - exact) ** 2, axis=-1))))
fig = plots.plot_lines({name: (sample_sizes, values) for name, values in variance.items()},
                       xlabel="samples S averaged per estimate",
                       ylabel="mean squared error, summed over the 16 coordinates",
                       title="Variance of gradient estimates of E_q[log p(x|z)] w.r.t. mu", logx=True)
fig.axes[0].set_yscale("log")
plots.save_figure(fig, course.figure_path(TUTORIAL, "gradient_variance.png"))
for name, values in variance.items():
    print(f"{name:30s} variance with one sample {values[0]:10.3g}  "
          f"({values[0] / variance['reparameterization'][0]:8.1f} times the reparameterized one)")
ratio = {name: values[0] / variance["reparameterization"][0] for name, values in variance.items()}
slopes = {name: np.polyfit(np.log(sample_sizes), np.log(values), 1)[0] for name, values in variance.items()}
course.claim(1000 <= ratio["score function"] and 1 < ratio["score function with baseline"] < ratio["score function"]
             and all(abs(slope + 1) < 0.15 for slope in slopes.values()),
             f"the curves are lines of slope -1 ({', '.join(f'{v:.2f}' for v in slopes.values())}); one "
             f"reparameterized sample is worth thousands of score-function samples "
             f"({ratio['score function']:.0f}); a baseline helps but does not close the gap "
             f"({ratio['score function with baseline']:.1f})")
course.show(fig)

# %% [markdown]
# ## The KL term: analytic or Monte Carlo
#
# The ELBO's second term is `KL(q(z|x) || p(z))`. Between two Gaussians it has a closed form,
# `StandardNormal.kl`:
#
# $$\text{KL}\big(N(\mu, \text{diag}\,\sigma^2) \,\|\, N(0, I)\big)
#   = \tfrac{1}{2} \textstyle\sum_j \big(\mu_j^2 + \sigma_j^2 - 1 - \log \sigma_j^2\big).$$
#
# It can also be estimated like the other term, from the sampled `z`:
# `log q(z|x) - log p(z)` has expectation KL under `q(z|x)` (`ops.reparameterized_log_prob` minus `prior.log_prob`). The
# left panel shows single-sample estimates for one image against the analytic value (black); the
# right panel the error of the average of `S` estimates over the test images. The Monte Carlo KL
# is unbiased but noisy (for an image whose KL is small, a single estimate can even be negative,
# which a KL never is; not for this one, whose KL is 18 nats); the analytic one has no noise at all. minivae uses the analytic KL by default (`VAE(kl="analytic")`); the
# Monte Carlo one is there for priors or posteriors without a closed form.

# %%
analytic_kl = model.prior.kl(mu, logvar)[0]                       # (images,)
single_kl = reparameterized_log_prob(eps, logvar)[0] - model.prior.log_prob(z)[0]  # (draws, images), same z
kl_error = [float(np.sqrt(np.mean((single_kl.reshape(n_draws // S, S, n_images).mean(axis=1)
                                   - analytic_kl) ** 2))) for S in sample_sizes]

fig = Figure(figsize=(10, 3.6), layout="constrained")
ax = fig.add_subplot(1, 2, 1)
ax.hist(single_kl[:, 0], bins=80, color="C0", alpha=0.85)
ax.axvline(analytic_kl[0], color="black", linewidth=1.5, label=f"analytic KL = {analytic_kl[0]:.2f}")
ax.set_xlabel("single-sample estimate log q(z|x) - log p(z), nats")
ax.set_ylabel("draws")
ax.set_title("Monte Carlo KL for one image")
ax.legend()
ax = fig.add_subplot(1, 2, 2)
ax.loglog(sample_sizes, kl_error, "o-", color="C0", label="Monte Carlo, average of S samples")
ax.set_xlabel("samples S")
ax.set_ylabel("root mean squared error, nats")
ax.set_title("Error of the Monte Carlo KL (analytic: 0)")
ax.grid(True, alpha=0.3, which="both")
ax.legend()
plots.save_figure(fig, course.figure_path(TUTORIAL, "kl_estimates.png"))
print(f"analytic KL, first image: {analytic_kl[0]:.3f} nats; single-sample Monte Carlo: mean "
      f"{single_kl[:, 0].mean():.3f}, standard deviation {single_kl[:, 0].std():.3f}")
course.claim(abs(single_kl[:, 0].mean() - analytic_kl[0]) < 0.1 and round(analytic_kl[0]) == 18,
             f"the Monte Carlo KL is unbiased (mean {single_kl[:, 0].mean():.3f} against the analytic "
             f"{analytic_kl[0]:.3f}, 18 nats)")
course.show(fig)

# %% [markdown]
# ## The ELBO: reconstruction minus rate
#
# For any `q(z|x)`, Jensen's inequality gives a lower bound on `log p(x)`, the evidence lower
# bound:
#
# $$\text{ELBO}(x) = \underbrace{E_{q(z|x)}[\log p(x|z)]}_{\text{reconstruction}}
#   - \underbrace{\text{KL}(q(z|x) \,\|\, p(z))}_{\text{rate}} \;\le\; \log p(x).$$
#
# The reconstruction term rewards codes that let the decoder redraw `x`; the rate, the number of
# nats the code carries about `x` beyond the prior, penalises codes that are too specific.
# `VAE.elbo_parts` returns the two terms (by sampling `z` for the first), `VAE.elbo` their
# difference. How loose is the bound? Exactly by the KL from `q(z|x)` to the *true* posterior:
#
# $$\log p(x) = \text{ELBO}(x) + \text{KL}\big(q(z|x) \,\|\, p(z|x)\big).$$
#
# For this linear model all three numbers are available in closed form (`minivae.ppca`), each
# computed on its own, so the identity can be checked rather than assumed. With the encoder set to
# the exact posterior, the gap is zero and the ELBO *is* `log p(x)`; the sampled ELBO of `elbo_parts`
# agrees within its Monte Carlo error.

# %%
x_eval = x_test[:course.size(447, 100)]
exact_values = linear_vae_exact(model, x_eval)
reconstruction, rate = model.elbo_parts(x_eval, n_samples=course.size(200, 20), rng=rng)
print(f"reconstruction {reconstruction.mean():9.3f}  rate {rate.mean():7.3f}  "
      f"sampled ELBO {np.mean(reconstruction - rate):9.3f} nats")
print(f"exact ELBO     {exact_values.elbo.mean():9.3f}  log p(x) {exact_values.log_px.mean():9.3f}  "
      f"gap KL(q || p(z|x)) {exact_values.gap.mean():.2e}")

# %% [markdown]
# ## A gap that no diagonal Gaussian can close
#
# Now rotate the latent space: replace the decoder weight `W_dec` by `R W_dec` with `R` a random
# rotation. The marginal `p(x) = N(μ, W Wᵀ + σ² I)` does not change (`R Rᵀ = I`), but the true
# posterior does: its covariance `Σ = σ² M⁻¹` (with `M = W_dec W_decᵀ + σ² I`) is no longer
# diagonal, the latent coordinates are correlated. minivae's `q(z|x)` is a diagonal Gaussian, so
# no encoder can match the posterior any more.
#
# What is the best diagonal Gaussian? Its mean is the posterior mean (`set_optimal_encoder` sets
# the encoder's mean to exactly that). For its variances, the tempting answer is the posterior's
# own variances `Σ_jj`. The ELBO disagrees: minimising `KL(q || p(z|x))` over diagonal Gaussians
# gives the variances `1 / (Σ⁻¹)_jj`, one over the diagonal of the posterior *precision*, which are
# smaller. A mean-field approximation is narrower than the posterior it approximates, because
# `KL(q || p)` punishes `q(z|x)` for putting mass where `p` has little (Bishop, *Pattern Recognition and
# Machine Learning*, section 10.1.2). Both are two lines given `M`:

# %%
rotation, _ = np.linalg.qr(rng.standard_normal((Q, Q)))
model.params["decoder.0.W"][...] = rotation @ model.params["decoder.0.W"]
set_optimal_encoder(model)                                     # encoder mean = exact posterior mean
W_enc, b_enc, W_dec, b_dec, sigma2 = linear_vae_arrays(model)
mu_post = (x_eval @ W_enc + b_enc)[:, :Q]
M = W_dec @ W_dec.T + sigma2 * np.eye(Q)                       # Σ = σ² M⁻¹, Σ⁻¹ = M / σ²
logvar_marginal = np.broadcast_to(np.log(np.diag(sigma2 * np.linalg.inv(M))), mu_post.shape)  # Σ_jj
logvar_meanfield = np.broadcast_to(np.log(sigma2 / np.diag(M)), mu_post.shape)           # 1 / (Σ⁻¹)_jj

log_marginal = linear_gaussian_log_marginal(x_eval, W_dec, b_dec, sigma2)
print(f"log p(x) before the rotation {exact_values.log_px.mean():.6f}, after {log_marginal.mean():.6f}")
for name, logvar_q in (("posterior variances Σ_jj", logvar_marginal),
                       ("mean-field 1 / (Σ⁻¹)_jj", logvar_meanfield)):
    elbo_q = linear_gaussian_elbo(x_eval, mu_post, logvar_q, W_dec, b_dec, sigma2)
    gap_q = linear_gaussian_posterior_gap(x_eval, mu_post, logvar_q, W_dec, b_dec, sigma2)
    print(f"q with {name}: ELBO {elbo_q.mean():9.3f}, gap {gap_q.mean():6.3f} nats; "
          f"|log p(x) - ELBO - gap| at most {np.abs(log_marginal - elbo_q - gap_q).max():.1e}")

# %% [markdown]
# The figure sweeps a family of encoders: the posterior mean, with the mean-field standard
# deviations multiplied by a factor `s` (`logvar + 2 log s`). Left: `log p(x)` is flat (it does not
# depend on the encoder); the ELBO peaks at `s = 1`, the mean-field solution, and even there stays
# below `log p(x)` by the mean-field gap; ELBO + KL(q || p(z|x)), the dots, lands on `log p(x)` for
# every encoder. Right: the two terms of the ELBO, in nats, as costs (the distortion
# `-E_q[log p(x|z)]` and the rate `KL(q || p(z))`). A narrow `q(z|x)` (small `s`) reconstructs well but
# pays a large rate; widening it lowers the rate but blurs the reconstructions, and the distortion
# climbs. The best ELBO balances the two.

# %%
scales = np.logspace(-1, 0.5, course.size(31, 7))  # s from 0.1 to 3.2; s = 1 is on the grid
elbo_curve, gap_curve, distortion_curve, rate_curve = [], [], [], []
for s in scales:
    logvar_s = logvar_meanfield + 2 * np.log(s)
    elbo_s = linear_gaussian_elbo(x_eval, mu_post, logvar_s, W_dec, b_dec, sigma2)
    rate_s = model.prior.kl(mu_post, logvar_s)[0]
    elbo_curve.append(elbo_s.mean())
    gap_curve.append(linear_gaussian_posterior_gap(x_eval, mu_post, logvar_s, W_dec, b_dec, sigma2).mean())
    rate_curve.append(rate_s.mean())
    distortion_curve.append(-(elbo_s + rate_s).mean())
elbo_curve, gap_curve = np.array(elbo_curve), np.array(gap_curve)
log_marginal = log_marginal.mean()

fig = Figure(figsize=(11, 4), layout="constrained")
ax = fig.add_subplot(1, 2, 1)
ax.axhline(log_marginal, color="black", linewidth=2, label="log p(x), exact")
ax.plot(scales, elbo_curve, color="C0", linewidth=2, label="ELBO")
ax.fill_between(scales, elbo_curve, elbo_curve + gap_curve, color="C1", alpha=0.25,
                label="KL(q(z|x) || p(z|x))")
ax.plot(scales, elbo_curve + gap_curve, "o", color="C1", markersize=4, label="ELBO + KL(q || p(z|x))")
ax.set_xscale("log")
ax.set_ylim(log_marginal - 4 * (log_marginal - elbo_curve.max()) - 5, log_marginal + 5)
ax.set_xlabel("scale s of the encoder's standard deviations")
ax.set_ylabel("nats per image (mean over test images)")
ax.set_title("log p(x) = ELBO + KL(q || true posterior)")
ax.grid(True, alpha=0.3)
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)
ax = fig.add_subplot(1, 2, 2)
ax.plot(scales, distortion_curve, color="C2", linewidth=2, label="distortion  -E_q[log p(x|z)]")
ax.plot(scales, rate_curve, color="C4", linewidth=2, label="rate  KL(q(z|x) || p(z))")
ax.plot(scales, -elbo_curve, color="C0", linestyle="--", label="-ELBO = distortion + rate")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("scale s of the encoder's standard deviations")
ax.set_ylabel("nats per image")
ax.set_title("Reconstruction against rate")
ax.grid(True, alpha=0.3, which="both")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)
plots.save_figure(fig, course.figure_path(TUTORIAL, "elbo_identity.png"))
best = int(np.argmax(elbo_curve))
print(f"best scale s = {scales[best]:.2f}: ELBO {elbo_curve[best]:.3f}, log p(x) {log_marginal:.3f}, "
      f"gap {gap_curve[best]:.3f} nats")
course.claim(abs(scales[best] - 1) < 1e-9 and np.allclose(np.array(elbo_curve) + np.array(gap_curve), log_marginal),
             f"the ELBO peaks at s = 1 (at s = {scales[best]:.2f}) and ELBO + KL(q || p(z|x)) = log p(x) "
             f"for every encoder")
course.show(fig)

# %% [markdown]
# ## What to take away
#
# - A VAE needs gradients of expectations under its own encoder, `∇ E_q[f(z)]`. The score function
#   `E[f(z) ∇ log q(z)]` works for any `f` but its variance is enormous, here thousands of times
#   that of the reparameterized estimate `E[∇_z f(μ + σ ε)]`; a baseline helps but does not close
#   the gap. With continuous `z`, reparameterize: `z = mu + exp(logvar / 2) * eps`, and
#   backpropagate through it.
# - Use the analytic KL when there is one: it is exact and noise-free. The Monte Carlo KL is
#   unbiased but adds noise (and, when the KL is small, a single sample can be negative).
# - The ELBO is reconstruction minus rate, `E_q[log p(x|z)] - KL(q(z|x) || p(z))`, and it falls short
#   of `log p(x)` by exactly `KL(q(z|x) || p(z|x))`. Raising the ELBO therefore does one of two
#   things: improves the model, or improves the posterior approximation. It cannot tell you which.
# - A diagonal Gaussian `q(z|x)` cannot represent a correlated posterior; the gap it leaves is real and
#   measurable, here a couple of nats per image even for the best such encoder, and that best
#   encoder is *narrower* than the true posterior (variances `1 / (Σ⁻¹)_jj`, not `Σ_jj`).
#
# Next: tutorial 4 trains a full VAE on the digits with exactly these pieces.

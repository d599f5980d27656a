# %% [markdown]
# # 9. Learnable priors and the holes in the aggregate posterior
#
# Tutorial 7 found *holes*: regions where the prior `p(z) = N(0, I)` puts probability but no
# image is encoded, so that samples drawn from there decode to images the model never learned to
# make. The ELBO itself points at the cure. Averaged over the data, its rate term splits as
#
# $$E_x\,KL(q(z|x)\,\|\,p(z)) = I(x; z) + KL(q(z)\,\|\,p(z)), \qquad q(z) = \frac{1}{N}\sum_n q(z|x_n),$$
#
# a mutual information the code must pay for, plus the distance between the *aggregate posterior*
# `q(z)` and the prior. A fixed `N(0, I)` can only ask the encoder to squeeze the codes into its
# shape; a *learnable* prior can move towards `q(z)` instead. This tutorial trains three VAEs with a
# two-dimensional latent space, so that everything can be seen: the standard prior, a mixture of
# Gaussians (`MixtureOfGaussians`), and the VampPrior of Tomczak & Welling (2018), a mixture of the
# model's own posteriors at learned *pseudo-inputs*, `p(z) = (1/K) Σ_k q(z|u_k)`.
#
# **What you will learn**
#
# - a prior as a piece of the model with parameters of its own, trained with the rest through a
#   Monte Carlo KL, `log q(z|x) − log p(z)` at the sampled `z`;
# - how to measure the holes: the share of prior draws where `q(z)` is below a tenth of `p(z)`, and
#   `KL(q(z) || p(z))` by Monte Carlo;
# - what a mixture and a VampPrior change there, and what they change (little) in the test NLL of a
#   model trained on 1000 images.
#
# **Prerequisites.** Tutorial 7 (the aggregate posterior, holes), tutorial 6 (the importance-weighted
# NLL).
#
# **Run time.** Two to four minutes in full on a two-core machine shared with other jobs (three
# models with early stopping); `MINIVAE_SIZE=lab` caps training at 40 epochs; seconds with
# `MINIVAE_QUICK=1`, whose barely trained models make figures without meaning.

# %%
import numpy as np
from matplotlib.figure import Figure
from scipy.special import logsumexp

import minivae
from minivae import course, plots
from minivae.ops import diagonal_gaussian_log_prob
from minivae.priors import MixtureOfGaussians, StandardNormal, VampPrior
from minivae.reference import REFERENCE

TUTORIAL = "09_learnable_priors"
rng = np.random.default_rng(9)

IMAGE_SHAPE = minivae.datasets.DIGITS_IMAGE_SHAPE
VMAX = 16.0

x_train, _ = minivae.datasets.load_digits("train")
x_val, _ = minivae.datasets.load_digits("val")
x_test, y_test = minivae.datasets.load_digits("test")

# %% [markdown]
# ## Three priors, one architecture
#
# Each model is the reference architecture with a latent space of two dimensions, trained with
# `minivae.fit`'s defaults (the reference setting: Adamax, batch 64, early stopping with patience
# 20, weight averaging). Only the prior differs:
#
# - `StandardNormal()`: `N(0, I)`, with the analytic KL;
# - `MixtureOfGaussians(10)`: `p(z) = Σ_k π_k N(z; m_k, diag(e^{ρ_k}))` with learned means,
#   log-variances and weights; its log-density is a log-sum-exp over components of a sum over the
#   latent dimensions (the sum inside: each component is a Gaussian over the whole of `z`);
# - `VampPrior(50, data=x_train)`: 50 pseudo-inputs, 64 numbers each, started at training images
#   and kept in the pixels' range [0, 16]; the prior runs the model's own encoder on them, so its
#   gradient flows back through a second pass of the encoder.
#
# Neither mixture has a KL to a Gaussian in closed form, so the ELBO uses the single-sample Monte
# Carlo KL for them (`minivae.ELBO` picks it); its gradient is written by hand in
# `minivae.priors` and checked by finite differences in `tests/test_priors.py`.

# %%
LATENT_DIM = 2
HIDDEN = course.size(REFERENCE.hidden, (32,))
MAX_EPOCHS = course.size(300, 2, lab=40)
NLL_SAMPLES = course.size(1000, 16)

priors = {"N(0, I)": StandardNormal(), "mixture of 10": MixtureOfGaussians(10),
          "VampPrior, 50": VampPrior(50, data=x_train)}
models, histories = {}, {}
for name, prior in priors.items():
    model = minivae.VAE(64, LATENT_DIM, hidden=HIDDEN, prior=prior, seed=0)
    histories[name] = minivae.fit(model, x_train, x_val, epochs=MAX_EPOCHS, verbose=False)
    models[name] = model
    print(f"{name:14s} trained {histories[name].epochs} epochs in {histories[name].seconds:.0f} s; "
          f"{model.n_params} parameters, {sum(v.size for k, v in model.params.items() if k.startswith('prior.'))} "
          f"of them the prior's")

# %% [markdown]
# ## Where the codes are, and where the prior is
#
# The figure draws each model's prior density `p(z)` as shades of grey, with the posterior means of
# the test images on top, coloured by digit (each panel framed on its own codes: nothing keeps the
# codes of a model with a learned prior near the origin). For `N(0, I)` the prior is the same round hill whatever
# the data; the codes crowd into some of it and leave the rest empty. A mixture can put its
# components where the codes are; the VampPrior is, by construction, made of the posteriors of a few
# images, so its density looks like the code clusters.

# %%
n_grid = course.size(121, 31)
fig = Figure(figsize=(12, 4.2), layout="constrained")
axes = fig.subplots(1, 3)
for ax, (name, model) in zip(axes, models.items()):
    mu, _ = model.encode(x_test)
    # each panel frames its own codes: a learned prior need not keep them near the origin
    center = np.median(mu, axis=0)
    half = max(4.0, 1.15 * float(np.max(np.abs(mu - center))))
    z1, z2 = np.meshgrid(np.linspace(center[0] - half, center[0] + half, n_grid),
                         np.linspace(center[1] - half, center[1] + half, n_grid))
    z_grid = np.column_stack([z1.ravel(), z2.ravel()])
    log_p = model.prior.log_prob(z_grid.astype(model.dtype), model.params)[0].reshape(z1.shape)
    ax.contourf(z1, z2, np.exp(log_p), levels=12, cmap="Greys")
    points = ax.scatter(mu[:, 0], mu[:, 1], c=y_test, cmap="tab10", s=6, vmin=-0.5, vmax=9.5)
    ax.set_xlim(center[0] - half, center[0] + half)
    ax.set_ylim(center[1] - half, center[1] + half)
    ax.set_aspect("equal")
    ax.set_title(f"prior: {name}")
    ax.set_xlabel("z₁")
axes[0].set_ylabel("z₂")
fig.colorbar(points, ax=axes, label="digit", ticks=range(10), shrink=0.8)
fig.suptitle("Prior density (grey) and the posterior means of the test images")
plots.save_figure(fig, course.figure_path(TUTORIAL, "priors_and_codes.png"))
course.show(fig)

# %% [markdown]
# ## Measuring the holes
#
# The aggregate posterior of the training set, `q(z) = (1/N) Σ_n q(z|x_n)`, is a mixture of 1000
# Gaussians and can be evaluated exactly at any `z` (a log-sum-exp over the images). Two numbers
# say how well the prior covers it:
#
# - the share of prior draws `z ~ p(z)` that fall *in a hole*, where `q(z) < p(z) / 10`: the draws
#   that sampling from the model would decode from places no image was encoded;
# - `KL(q(z) || p(z)) = E_{q(z)}[log q(z) − log p(z)]`, by Monte Carlo with `z ~ q(z)` (an image at
#   random, then `z ~ q(z|x)`): the part of the rate that is not information about `x`.

# %%
def log_aggregate_posterior(z, mu, logvar, chunk=1000):
    """log q(z) = log (1/N) Σ_n N(z; mu_n, diag(exp(logvar_n))) for each row of z, (M,)."""
    result = np.empty(z.shape[0])
    for start in range(0, z.shape[0], chunk):
        log_components = diagonal_gaussian_log_prob(z[start:start + chunk, None, :], mu[None], logvar[None])[0]
        result[start:start + chunk] = logsumexp(log_components, axis=1) - np.log(mu.shape[0])
    return result


n_draws = course.size(20_000, 1_000)
HOLE = np.log(10)  # a hole: q(z) below a tenth of p(z)
results = {}
for name, model in models.items():
    mu, logvar = (a.astype(np.float64) for a in model.encode(x_train))
    z_prior = model.prior.sample(n_draws, LATENT_DIM, model.params, rng, np.float64)
    log_ratio = (log_aggregate_posterior(z_prior, mu, logvar)
                 - model.prior.log_prob(z_prior.astype(model.dtype), model.params)[0])
    pick = rng.integers(0, len(mu), n_draws)
    z_q = mu[pick] + np.exp(0.5 * logvar[pick]) * rng.standard_normal((n_draws, LATENT_DIM))
    kl_aggregate = np.mean(log_aggregate_posterior(z_q, mu, logvar)
                           - model.prior.log_prob(z_q.astype(model.dtype), model.params)[0])
    reconstruction, rate = model.elbo_parts(x_test, n_samples=course.size(100, 4), rng=np.random.default_rng(1))
    nll = -model.log_likelihood(x_test, n_samples=NLL_SAMPLES, rng=np.random.default_rng(2))
    results[name] = dict(holes=float(np.mean(log_ratio < -HOLE)), kl_aggregate=float(kl_aggregate),
                         nelbo=float(np.mean(rate - reconstruction)), rate=float(np.mean(rate)),
                         nll=float(np.mean(nll)), z_prior=z_prior, log_ratio=log_ratio)
    print(f"{name:14s} prior draws in holes {results[name]['holes']:6.1%}   KL(q(z) || p(z)) "
          f"{kl_aggregate:5.2f} nats   rate {results[name]['rate']:5.2f}   test -ELBO "
          f"{results[name]['nelbo']:6.2f}   test NLL (K={NLL_SAMPLES}) {results[name]['nll']:6.2f}")

standard, mixture, vamp = (results[name] for name in priors)
if course.full():
    course.claim(mixture["holes"] < standard["holes"] and vamp["holes"] < standard["holes"],
                 f"both learned priors leave fewer prior draws in holes than N(0, I) "
                 f"({mixture['holes']:.1%} and {vamp['holes']:.1%} against {standard['holes']:.1%})")
    course.claim(vamp["kl_aggregate"] < 0.5 * min(standard["kl_aggregate"], mixture["kl_aggregate"]),
                 f"the VampPrior, made of posteriors, sits closest to the aggregate posterior: its "
                 f"KL(q(z) || p(z)) is less than half the others' ({vamp['kl_aggregate']:.2f} against "
                 f"{standard['kl_aggregate']:.2f} and {mixture['kl_aggregate']:.2f} nats)")
    course.claim(max(abs(r["nll"] - standard["nll"]) for r in (mixture, vamp)) < 3.0,
                 "the test NLLs of the three models lie within 3 nats of each other: the holes cost "
                 "samples much more than they cost likelihood")

# %% [markdown]
# ## What samples from a hole look like
#
# Sampling from a VAE draws `z ~ p(z)` and decodes it. The figure decodes, for each model, eight
# prior draws from its holes (top row; blank where a prior has none to show) and eight from where
# `q(z)` is at least as large as `p(z)` (bottom row). For `N(0, I)` the first row is where the
# smudges come from: the decoder was never trained there.

# %%
rows, titles = [], []
for name, model in models.items():
    r = results[name]
    for label, mask in (("in holes", r["log_ratio"] < -HOLE), ("covered", r["log_ratio"] >= 0)):
        chosen = r["z_prior"][mask][:8]
        images = np.zeros((8, 64))
        if len(chosen):
            images[:len(chosen)] = model.decode(chosen.astype(model.dtype), mean=True)
        rows.append(images)
        titles.append(f"{name}: prior draws {label}")
fig = Figure(figsize=(8, 7.5), layout="constrained")
axes = fig.subplots(len(rows), 1)
for ax, images, title in zip(axes, rows, titles):
    plots.image_grid(images, IMAGE_SHAPE, ncols=8, ax=ax, vmin=0, vmax=VMAX)
    ax.set_title(title, fontsize="medium")
fig.suptitle("Decoded prior draws: from the holes, and from where q(z) covers p(z)")
plots.save_figure(fig, course.figure_path(TUTORIAL, "samples_from_holes.png"))
course.show(fig)

# %% [markdown]
# ## What to take away
#
# - A prior is a piece with parameters of its own. Without a closed-form KL the ELBO takes the
#   Monte Carlo KL, and the prior's gradient (and the VampPrior's second pass through the encoder)
#   is one more backward written beside its forward.
# - The holes are measurable: the share of prior draws where `q(z) < p(z)/10`, and
#   `KL(q(z) || p(z))`, the part of the rate that carries no information about the image. A
#   learned prior moves towards the aggregate posterior: both learned priors leave fewer holes, and
#   the VampPrior, itself a mixture of posteriors, all but closes the gap `KL(q(z) || p(z))`.
# - On 1000 training images the test NLL barely moves: the holes spoil *samples* far more than they
#   spoil the likelihood of test images, which the encoder places where the codes are anyway.
#   `minivae variants` measures the same at latent 16; there the VampPrior's 50 pseudo-inputs, each
#   64 free numbers, overfit the small training set.

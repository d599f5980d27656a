# %% [markdown]
# # 7. When VAEs go wrong
#
# A VAE can reach a good ELBO and still fail at what it was built for. Two failures are classic.
# In *posterior collapse* the encoder stops carrying information: `q(z|x)` becomes the prior for
# every `x`, the latent code is ignored, and the decoder models the data on its own. In the *hole
# problem* the codes of the data do not fill the prior: there are regions that `p(z)` says are
# likely but where no image is encoded, and samples drawn from there decode to images the model
# never learned to make. This tutorial produces both on the digits, shows how to recognise them in
# the numbers (rate, distortion, active units, the aggregate posterior) and in the images, and
# connects them through the trade-off between rate and distortion that the weight β controls.
#
# **What you will learn**
#
# - the ELBO as distortion plus rate, and the β-VAE objective that weighs them differently;
# - posterior collapse as it shows in the rate of each latent dimension and in the number of
#   active units, and why a decoder that can do without `z` invites it;
# - the rate–distortion plane, and β as the exchange rate between nats of rate and nats of
#   distortion;
# - the aggregate posterior `q(z) = (1/N) Σ_n q(z|x_n)` against the prior: where the holes are,
#   and what samples from them look like.
#
# **Prerequisites.** Tutorial 3 (the ELBO as reconstruction minus rate) and tutorial 4 (the
# reference model and how it is trained); tutorial 6 for the link between the rate and sampling.
#
# **Run time.** About two and a half minutes in full (149 to 162 s measured on a two-core machine
# shared with other jobs, load average 4 to 4.7; less on an idle one): eleven models, each trained for a fixed, small
# number of epochs (see below). `MINIVAE_SIZE=lab` trains them for a third of the epochs (85 s
# measured at load average 6), and its numbers differ from the ones quoted here; about 5 seconds with `MINIVAE_QUICK=1`, whose small,
# barely trained models make figures without meaning.

# %%
import numpy as np
from matplotlib.figure import Figure
from scipy.special import logsumexp

import minivae
from minivae import course, plots
from minivae.ops import diagonal_gaussian_log_prob
from minivae.reference import REFERENCE

TUTORIAL = "07_when_vaes_go_wrong"
rng = np.random.default_rng(7)

IMAGE_SHAPE = minivae.datasets.DIGITS_IMAGE_SHAPE
NUM_VALUES = minivae.datasets.DIGITS_NUM_VALUES  # 17 intensities per pixel
VMAX = 16.0  # intensity 16 drawn black

x_train, _ = minivae.datasets.load_digits("train")
x_test, _ = minivae.datasets.load_digits("test")

# %% [markdown]
# ## Rate, distortion and β
#
# Tutorial 3 split the negative ELBO of an image into two costs, both in nats:
#
# $$-\text{ELBO}(x) = \underbrace{E_{q(z|x)}[-\log p(x|z)]}_{\text{distortion } D}
#   + \underbrace{KL(q(z|x)\,\|\,p(z))}_{\text{rate } R}.$$
#
# The distortion is how badly the image is reconstructed from its code; the rate is how much the
# code says about the image, the number of nats it takes to transmit `z` when the receiver knows
# only the prior. A β-VAE (Higgins et al., 2017) trains on `D + β R` instead: with `β > 1` every nat
# of rate must buy more than one nat of distortion, with `β < 1` information is cheap. In minivae,
# `VAE(..., beta=β)` sets the weight in the training loss; `elbo`, `elbo_parts` and
# `log_likelihood` always measure the true ELBO (`β = 1`).
#
# We train the reference architecture (16 latent dimensions, hidden layers of 256, categorical
# decoder) with seven values of β. To fit the time budget each model gets a fixed 60 epochs without
# early stopping, about half of what the reference needs to reach its best validation −ELBO in
# tutorial 4, so the β = 1 model is a little worse than the reference; the trends do not depend on
# it. Same seed for all, so that β is the only difference. Quick mode trains small models for 2
# epochs.

# %%
BETAS = course.size([0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 8.0], [0.5, 1.0, 4.0])
LATENT_DIM = course.size(16, 4)
HIDDEN = course.size((256, 256), (32,))
EPOCHS = course.size(60, 2, lab=20)

beta_models = {}
for beta in BETAS:
    model = minivae.VAE(64, LATENT_DIM, hidden=HIDDEN, likelihood="categorical",
                        num_values=NUM_VALUES, beta=beta, seed=0)
    history = minivae.fit(model, x_train, epochs=EPOCHS, batch_size=REFERENCE.batch_size,
                          optimizer=minivae.Adamax(lr=REFERENCE.lr), ema=REFERENCE.ema,
                          rng=np.random.default_rng(REFERENCE.seed), verbose=False)
    beta_models[beta] = model
    print(f"β = {beta:4.2f}: {history.epochs} epochs in {history.seconds:5.1f} s, "
          f"final training loss D + βR {history.train_loss[-1]:7.2f} nats")

# %% [markdown]
# ## Rate, dimension by dimension
#
# The prior and the posterior are both diagonal, so the rate is a sum over latent dimensions,
# `R = Σ_j KL_j` with `KL_j = (mu_j² + σ_j² - 1 - log σ_j²) / 2` (σ_j² = `exp(logvar_j)`). A dimension
# whose `KL_j` is 0 for every image has `q(z_j|x) = N(0, 1) = p(z_j)`: it carries nothing about `x`,
# it has *collapsed*. The usual count of the dimensions still in use is the number of *active units*
# (Burda et al., 2016): dimension `j` is active when its posterior mean moves with the data,
# `Var_x(E_q[z_j|x]) > 0.01`; `VAE.active_units` counts them.


# %%
def rate_per_dimension(model, x):
    """The mean over the rows of x of KL(q(z_j|x) || N(0, 1)) for each latent dimension j.

    Parameters
    ----------
    model : minivae.VAE
    x : (N, input_dim) array

    Returns
    -------
    (latent_dim,) array, nats; its sum is the mean rate
    """
    mu, logvar = model.encode(x)
    mu, logvar = mu.astype(np.float64), logvar.astype(np.float64)
    return np.mean(0.5 * (mu ** 2 + np.exp(logvar) - 1 - logvar), axis=0)


summary = {}
for beta, model in beta_models.items():
    reconstruction, rate = model.elbo_parts(x_test, n_samples=10, rng=rng)
    summary[beta] = dict(distortion=-reconstruction.mean(), rate=rate.mean(),
                         per_dimension=rate_per_dimension(model, x_test),
                         active=model.active_units(x_test))
    print(f"β = {beta:4.2f}: test distortion {summary[beta]['distortion']:7.2f}, "
          f"rate {summary[beta]['rate']:6.2f}, -ELBO {summary[beta]['distortion'] + summary[beta]['rate']:7.2f}"
          f" nats; active units {summary[beta]['active']:2d} of {LATENT_DIM}")
if course.full():  # the claims name β values of the full run
    per_dim = {beta: summary[beta]["per_dimension"] for beta in BETAS}
    course.claim(per_dim[0.25].min() >= 0.3,
                 f"with β = 1/4 every dimension carries a third of a nat or more (least {per_dim[0.25].min():.2f})")
    course.claim(LATENT_DIM / 3 <= np.sum(per_dim[1.0] < 0.1) <= 2 * LATENT_DIM / 3,
                 f"at β = 1 about half the dimensions carry less than a tenth of a nat "
                 f"({np.sum(per_dim[1.0] < 0.1)} of {LATENT_DIM})")
    course.claim(all(per_dim[beta].max() < 0.01 for beta in (4.0, 8.0)),
                 f"from β = 4 on the rate is zero in every dimension to within a few thousandths "
                 f"(largest {max(per_dim[beta].max() for beta in (4.0, 8.0)):.3f})")
    course.claim(all(summary[beta]["active"] >= LATENT_DIM / 3 and np.sum(per_dim[beta] < 0.1) > LATENT_DIM / 2
                     for beta in (2.0, 3.0)),
                 f"at β = 2 and 3 many dimensions still count as active ({summary[2.0]['active']}, "
                 f"{summary[3.0]['active']} of {LATENT_DIM}) although most carry less than a tenth of a nat "
                 f"({np.sum(per_dim[2.0] < 0.1)}, {np.sum(per_dim[3.0] < 0.1)})")

# %% [markdown]
# The figure shows each model's test rate per dimension, sorted from the most to the least used
# (the dimensions are exchangeable, so their order means nothing), with the number of active units
# on the right.
#
# - With β = 1/4 every dimension carries a third of a nat or more. As β grows, dimensions switch off one
#   after another: the rate concentrates in a few dimensions and the rest fall to zero.
# - Already at β = 1, the plain ELBO, about half the dimensions carry less than a tenth of a
#   nat. That is
#   not a bug: a dimension costs rate, and the ELBO switches off those that do not pay for
#   themselves in distortion.
# - From β = 4 on the collapse is complete: the rate is zero in every dimension (to within a few
#   thousandths of a nat). The encoder outputs the prior whatever the input, and the decoder
#   receives noise.
# - The active-unit count lags behind. At β = 2 and 3 it still reports many dimensions as active
#   (about half or more), although most of them carry only hundredths of a nat: the threshold on
#   `Var_x(E[z_j|x])` is lenient, and a dimension whose mean wiggles by ±0.1 while its variance
#   stays near 1 passes it without carrying anything worth having. Look at the rates, not only at
#   the count.

# %%
rates = np.array([np.sort(summary[beta]["per_dimension"])[::-1] for beta in BETAS])
fig = Figure(figsize=(11, 0.55 * len(BETAS) + 1.6), layout="constrained")
ax = fig.add_subplot()
image = ax.imshow(rates, cmap="magma_r", aspect="auto", vmin=0)
for i in range(rates.shape[0]):
    for j in range(rates.shape[1]):
        ax.text(j, i, f"{rates[i, j]:.2f}", ha="center", va="center", fontsize="x-small",
                color="white" if rates[i, j] > 0.6 * rates.max() else "black")
ax.set_yticks(range(len(BETAS)), [f"β = {beta:g}" for beta in BETAS])
ax.set_xticks(range(LATENT_DIM), [str(j + 1) for j in range(LATENT_DIM)])
ax.set_xlabel("latent dimensions, sorted by their rate")
right = ax.secondary_yaxis("right")
right.set_yticks(range(len(BETAS)), [f"{summary[beta]['active']} active" for beta in BETAS])
fig.colorbar(image, ax=ax, label="rate KL_j (nats per image)", pad=0.02)
ax.set_title("Rate of each latent dimension on the test set")
plots.save_figure(fig, course.figure_path(TUTORIAL, "rate_per_dimension.png"))
course.show(fig)

# %% [markdown]
# What does a collapsed dimension look like from the inside? The active-unit test looks at how much
# the posterior *mean* varies across images; the other half of the story is the posterior
# *variance*. Below, every latent dimension of every model is one point: across, how much its mean
# moves with the data, `Var_x(mu_j)`; up, its average variance `E_x[σ_j²]`. Used dimensions sit in
# the lower right: a mean that depends on the image and a small variance, a precise code.
# Collapsed ones pile up at the upper left, at variance 1 and a mean that does not move: exactly
# the prior. The dashed line is the active-unit threshold.
#
# The points also lie close to a curve, `Var_x(μ_j) + E_x[σ_j²] = 1` (grey). The left side is the
# variance of `z_j` over all images and all posterior draws (the law of total variance). Why 1?
# The decoder's first layer is linear in `z`: multiplying `z_j` by a factor `c` and the matching
# column of that layer's weights by `1/c` changes no reconstruction, and neither does shifting
# `z_j` and compensating in the bias. Only the KL term changes, so at a stationary point of
# training its derivative along these two moves is zero, which gives `E_x[μ_j] = 0` and
# `E_x[μ_j²] + E_x[σ_j²] = 1`, exactly and for every β (β only scales the KL). So a dimension can
# only trade one for the other: collapse moves it along the curve to the upper left. The
# dimensions of the β = 1/4 model lie to the right of the curve, their codes spread wider than the
# prior, so that model is not at a stationary point. Nor is it on its way to one: trained four
# times longer, the same model lies *further* to the right (the cell below measures it). The
# scaling move leaves the reconstruction unchanged, so only the KL, weighted by β, pulls the codes
# back along it, and with β = 1/4 that pull is weak next to the noise of the minibatch gradients,
# which, along a direction the reconstruction does not see, tends to spread the codes out rather
# than average to zero. The overshoot is a property of stochastic training with a small β, not of
# the ELBO's optimum. This spread of the codes over the whole data set returns below, as the
# *aggregate posterior*.

# %%
fig = Figure(figsize=(6.6, 4.6), layout="constrained")
ax = fig.add_subplot()
colors = {beta: f"C{i}" for i, beta in enumerate(BETAS)}
for beta, model in beta_models.items():
    mu, logvar = model.encode(x_test)
    ax.scatter(np.var(mu.astype(np.float64), axis=0), np.mean(np.exp(logvar.astype(np.float64)), axis=0),
               s=30, color=colors[beta], alpha=0.8, label=f"β = {beta:g}")
ax.axvline(minivae.vae.ACTIVE_UNIT_THRESHOLD, color="0.3", linestyle="--", linewidth=1,
           label="active-unit threshold")
guide = np.logspace(-3, 0, 100)
ax.plot(guide, 1 - guide, color="0.6", linewidth=3, alpha=0.5, zorder=0,
        label="Var_x(mu_j) + E_x[σ_j²] = 1")
ax.set_xscale("log")
ax.set_xlabel("Var_x(mu_j): how much the posterior mean moves with x")
ax.set_ylabel("E_x[σ_j²]: average posterior variance")
ax.set_title("Each latent dimension of each model")
ax.grid(True, alpha=0.3)
ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
plots.save_figure(fig, course.figure_path(TUTORIAL, "collapse_diagnostic.png"))
course.show(fig)

# %%
# The stationarity conditions, dimension by dimension: E_x[μ_j] = 0 and E_x[μ_j²] + E_x[σ_j²] = 1.
total_variance = {}
for beta, model in beta_models.items():
    mu, logvar = (a.astype(np.float64) for a in model.encode(x_test))
    total_variance[beta] = np.mean(mu ** 2, axis=0) + np.mean(np.exp(logvar), axis=0)
    print(f"β = {beta:4.2f}: E_x[μ_j²] + E_x[σ_j²] from {total_variance[beta].min():.2f} to "
          f"{total_variance[beta].max():.2f}, mean {total_variance[beta].mean():.2f}; "
          f"largest |E_x[μ_j]| {np.abs(mu.mean(axis=0)).max():.2f}")
if course.full():
    course.claim(total_variance[0.25].mean() > 1.1
                 and total_variance[0.25].mean() - 1 > 2 * abs(total_variance[1.0].mean() - 1),
                 f"the β = 1/4 model overshoots the curve (mean {total_variance[0.25].mean():.2f}), "
                 f"much more than the β = 1 model (mean {total_variance[1.0].mean():.2f})")

# %%
# The β = 1/4 model again, trained four times as long: closer to the curve, or further away?
longer = minivae.VAE(64, LATENT_DIM, hidden=HIDDEN, likelihood="categorical", num_values=NUM_VALUES,
                     beta=BETAS[0], seed=0)
minivae.fit(longer, x_train, epochs=4 * EPOCHS, batch_size=REFERENCE.batch_size,
            optimizer=minivae.Adamax(lr=REFERENCE.lr), ema=REFERENCE.ema,
            rng=np.random.default_rng(REFERENCE.seed), verbose=False)
for name, model in ((f"{EPOCHS} epochs", beta_models[BETAS[0]]), (f"{4 * EPOCHS} epochs", longer)):
    mu, logvar = (a.astype(np.float64) for a in model.encode(x_train))
    print(f"β = {BETAS[0]:g}, {name:>10s}: E_x[μ_j²] + E_x[σ_j²] on the training set, mean over j "
          f"{np.mean(mu ** 2 + np.exp(logvar)):.2f}")
if course.full():
    mu, logvar = (a.astype(np.float64) for a in longer.encode(x_test))
    longer_total = float(np.mean(mu ** 2 + np.exp(logvar)))
    course.claim(longer_total > total_variance[0.25].mean(),
                 f"trained four times longer, the β = 1/4 model lies further from the curve "
                 f"({longer_total:.2f} against {total_variance[0.25].mean():.2f} on the test set)")

# %% [markdown]
# ## Why collapse comes so easily here: a decoder that can do without z
#
# Collapse is the ELBO's optimum whenever the decoder can model the data about as well without `z`
# as with it: then the rate is a cost with no return. The famous cases have very powerful
# decoders. An autoregressive decoder (a PixelCNN over pixels, an LSTM over words) predicts each
# pixel or word from the previous ones, can model the whole image without any code, and VAEs built
# on one collapse even at β = 1 unless something stops them (Bowman et al., 2016; Chen et al.,
# 2017).
#
# minivae's decoders are not autoregressive: given `z`, the 64 pixels are independent. What can
# such a decoder do without `z`? Output the same distribution for every image, and the best choice
# is each pixel's marginal distribution over the training set. That model needs no training at
# all: count how often each pixel takes each of its 17 values.

# %%
counts = np.stack([(x_train == value).sum(axis=0) for value in range(NUM_VALUES)], axis=-1)  # (64, 17)
pixel_log_probs = np.log((counts + 1) / (counts + 1).sum(axis=-1, keepdims=True))  # add-one smoothing
no_code_distortion = -np.mean(np.sum(pixel_log_probs[np.arange(64), x_test], axis=1))
print(f"per-pixel marginals, no z at all: {no_code_distortion:.2f} nats per test image")
print(f"β = 1 model: distortion + rate = {summary[1.0]['distortion'] + summary[1.0]['rate']:.2f} nats")
if course.full():
    one = summary[1.0]
    course.claim(all(abs(summary[beta]["distortion"] - no_code_distortion) < 0.15 for beta in (4.0, 8.0))
                 and 7 < no_code_distortion - one["distortion"] - one["rate"] < 11
                 and 12 < no_code_distortion - one["distortion"] < 18 and 4 < one["rate"] < 8,
                 f"the collapsed models' distortion is the marginals' to within a tenth of a nat "
                 f"({summary[4.0]['distortion']:.2f}, {summary[8.0]['distortion']:.2f} against "
                 f"{no_code_distortion:.2f}); the β = 1 model's -ELBO is about 9 nats better "
                 f"({no_code_distortion - one['distortion'] - one['rate']:.1f}), with about 15 nats less "
                 f"distortion ({no_code_distortion - one['distortion']:.1f}) for about 6 nats of rate "
                 f"({one['rate']:.1f})")

# %% [markdown]
# The collapsed models' distortion is this number, to within a tenth of a nat: with nothing from
# `z`, their decoders learned the per-pixel marginals. And it is not far from the β = 1 model,
# whose −ELBO is only about 9 nats better: it buys about 15 nats less distortion with about 6 nats
# of rate. With 17 probabilities per pixel, the categorical decoder already models how uncertain
# each pixel is; the code only has to add the rough shape of the digit, and on this small data set
# that is worth little. That is why the β = 1 model's rate is small, why sampling the prior nearly
# worked on it in tutorial 6, and why a modest β > 1 tips it into full collapse.
#
# ## The rate–distortion plane
#
# Every model is a point `(R, D)`. Lines of constant `D + R` (dashed) are lines of constant ELBO,
# so the best ELBO is the point on the lowest of them. The star is the model without `z` at
# `R = 0`. The points trace a curve, the best distortion reachable at each rate with this
# architecture (Alemi et al., 2018), and β picks a point on it: minimising `D + β R` lands where the
# curve's slope is `-β`, where one more nat of rate saves β nats of distortion. The short segments
# through the points that are not collapsed have slope `-β`, and follow the curve.
#
# Near `R = 0` the curve falls by only about 3.5 to 4 nats of distortion per nat of rate. A β
# larger than that finds no point on the curve steep enough, and the optimum is its end, `R = 0`:
# that is the collapse at β = 4 and 8, and the near-collapse at β = 3. At the other end, small β
# buys low distortion with a lot of rate that the ELBO does not find worth its price: the β = 1/4
# model reconstructs best of all, and its ELBO is as poor as that of the collapsed models.

# %%
rate_values = np.array([summary[beta]["rate"] for beta in BETAS])
distortion_values = np.array([summary[beta]["distortion"] for beta in BETAS])
fig = Figure(figsize=(7.2, 5.0), layout="constrained")
ax = fig.add_subplot()
best = int(np.argmin(rate_values + distortion_values))
best_value = (rate_values + distortion_values)[best]
span = np.array([-1.0, 1.1 * max(rate_values.max(), 1.0)])
for k, offset in enumerate((0.0, 5.0, 10.0, 15.0)):
    ax.plot(span, best_value + offset - span, color="0.7", linestyle="--", linewidth=1, zorder=0,
            label="constant −ELBO, 5 nats apart" if k == 0 else None)
ax.plot(rate_values, distortion_values, "-", color="0.6", zorder=1)
for i, beta in enumerate(BETAS):
    ax.scatter(rate_values[i], distortion_values[i], s=60, color=colors[beta], zorder=3,
               edgecolor="k" if i == best else "none",
               label=f"β = {beta:g}" + (f" (best −ELBO, {best_value:.1f})" if i == best else "")
               + (" (collapsed: under the star)" if rate_values[i] < 0.1 else ""))
    if rate_values[i] > 0.5:  # slope -β through the models that are not collapsed
        half = 0.9 / np.sqrt(1 + beta ** 2)  # the same length on the page for every slope
        ax.plot([rate_values[i] - half, rate_values[i] + half],
                [distortion_values[i] + beta * half, distortion_values[i] - beta * half],
                color=colors[beta], linewidth=2.5, zorder=2)
ax.scatter([0.0], [no_code_distortion], marker="*", s=250, color="k", zorder=4,
           label=f"no z: per-pixel marginals ({no_code_distortion:.1f})")
ax.set_xlim(span)
ax.set_ylim(distortion_values.min() - 4, max(distortion_values.max(), no_code_distortion) + 4)
ax.set_xlabel("rate R = KL(q(z|x) || p(z))   (nats per test image)")
ax.set_ylabel("distortion D = E_q[−log p(x|z)]   (nats)")
ax.set_title("Rate against distortion, one point per β")
ax.grid(True, alpha=0.3)
ax.legend(loc="upper right", fontsize="small")
plots.save_figure(fig, course.figure_path(TUTORIAL, "rate_distortion.png"))
course.show(fig)
if course.full():
    i2, i3 = BETAS.index(2.0), BETAS.index(3.0)
    slope_near_zero = ((distortion_values[i3] - distortion_values[i2]) / (rate_values[i2] - rate_values[i3]),
                       (no_code_distortion - distortion_values[i3]) / rate_values[i3])
    course.claim(all(3 <= value <= 4.5 for value in slope_near_zero),
                 f"near R = 0 the curve falls by about 3.5 to 4 nats of distortion per nat of rate "
                 f"({slope_near_zero[0]:.1f} between β = 2 and 3, {slope_near_zero[1]:.1f} from β = 3 to R = 0)")

# %% [markdown]
# What the points mean in images: the top row holds test digits, each row below their
# reconstructions (the decoder's mean at `z = μ(x)`) by one model; on the right, the decoder's
# mean for the *same* ten draws from the prior under every model. Low β reconstructs well; as β
# grows, reconstructions blur towards an average digit of the right rough shape, and past the
# collapse every row is the same grey blob, the mean of the per-pixel marginals, whatever the input.
# Samples tell a different story. The β = 1/4 model reconstructs almost perfectly, yet its samples
# are no better than those of β = 1, with several smudges among them; at β = 2 they are simpler and
# smoother, but more often recognisable. Reconstructions use the codes of real images; samples use
# codes from the prior, and at small β the two are far apart: the hole problem, next.

# %%
n_show = 10
x_show = x_test[:n_show]
sample_rng_seed = 11  # the same z for every model
fig = Figure(figsize=(12, 0.62 * (len(BETAS) + 1) + 0.6), layout="constrained")
left, right = fig.subfigures(1, 2, wspace=0.04)
left_axes = left.subplots(len(BETAS) + 1, 1)
right_axes = right.subplots(len(BETAS) + 1, 1)
plots.image_grid(x_show, IMAGE_SHAPE, ncols=n_show, ax=left_axes[0], vmin=0, vmax=VMAX)
left_axes[0].set_ylabel("data", rotation=0, ha="right", va="center")
right_axes[0].set_visible(False)
for row, (beta, model) in enumerate(beta_models.items(), start=1):
    plots.image_grid(model.reconstruct(x_show), IMAGE_SHAPE, ncols=n_show, ax=left_axes[row],
                     vmin=0, vmax=VMAX)
    samples = model.sample(n_show, rng=np.random.default_rng(sample_rng_seed), mean=True)
    plots.image_grid(samples, IMAGE_SHAPE, ncols=n_show, ax=right_axes[row], vmin=0, vmax=VMAX)
    for ax in (left_axes[row], right_axes[row]):
        ax.set_ylabel(f"β = {beta:g}", rotation=0, ha="right", va="center")
left.suptitle("Reconstructions of test digits")
right.suptitle("Decoder means of the same prior draws")
plots.save_figure(fig, course.figure_path(TUTORIAL, "beta_reconstructions_and_samples.png"))
course.show(fig)

# %% [markdown]
# ## The hole problem
#
# The prior says which codes are likely, and sampling uses it: `z ~ p(z)`, then decode. But the
# decoder is trained only on codes drawn from the encoder, `z ~ q(z|x_n)` for training images
# `x_n`. Over the whole training set those codes follow the *aggregate posterior*
#
# $$q(z) = \frac{1}{N} \sum_{n=1}^{N} q(z | x_n),$$
#
# a mixture of `N` Gaussians. Nothing forces `q(z)` to equal `p(z)`. In fact the average rate
# splits exactly into two parts (Hoffman & Johnson, 2016):
#
# $$\frac{1}{N} \sum_n KL(q(z|x_n)\,\|\,p(z)) = I_q(x; z) + KL(q(z)\,\|\,p(z)),$$
#
# the information the codes carry about the images (at most `log N`), and how far the aggregate
# posterior is from the prior. Where `p(z)` is high but `q(z)` is low there is a *hole*: the prior
# sends samples there, but the decoder has hardly ever been trained there.
#
# To see the holes we need to see the latent space, so we train models with `latent_dim = 2`
# (otherwise the reference architecture, 100 epochs), for three values of β: the rate–distortion
# trade-off has a say in the holes too.

# %%
HOLE_BETAS = course.size([0.25, 1.0, 2.0], [0.25, 1.0])
models_2d = {}
for beta in HOLE_BETAS:
    model = minivae.VAE(64, 2, hidden=HIDDEN, likelihood="categorical", num_values=NUM_VALUES,
                        beta=beta, seed=0)
    history = minivae.fit(model, x_train, epochs=course.size(100, 3, lab=35), batch_size=REFERENCE.batch_size,
                          optimizer=minivae.Adamax(lr=REFERENCE.lr), ema=REFERENCE.ema,
                          rng=np.random.default_rng(REFERENCE.seed), verbose=False)
    models_2d[beta] = model
    reconstruction, rate = model.elbo_parts(x_test, n_samples=10, rng=rng)
    print(f"latent_dim = 2, β = {beta:4.2f}: {history.epochs} epochs in {history.seconds:4.1f} s; "
          f"test distortion {-reconstruction.mean():7.2f}, rate {rate.mean():5.2f} nats")


def log_aggregate_posterior(z, mu, logvar, chunk=2000):
    """log q(z) = log (1/N) Σ_n N(z | mu_n, diag(exp(logvar_n))), the aggregate posterior.

    Parameters
    ----------
    z : (M, latent_dim) array, where to evaluate
    mu, logvar : (N, latent_dim) arrays, the encoder's output on the N training images
    chunk : int, rows of z per step (memory is chunk * N numbers)

    Returns
    -------
    (M,) array
    """
    result = np.empty(z.shape[0])
    for start in range(0, z.shape[0], chunk):
        z_chunk = z[start:start + chunk, None, :]                            # (m, 1, latent_dim)
        log_components = diagonal_gaussian_log_prob(z_chunk, mu[None], logvar[None])[0]  # (m, N)
        result[start:start + chunk] = logsumexp(log_components, axis=1) - np.log(mu.shape[0])
    return result


# %% [markdown]
# For each model we evaluate `log q(z)` on a grid and at prior draws, and split the rate by Monte
# Carlo: `KL(q(z) || p(z)) = E_{q(z)}[log q(z) - log p(z)]`, with `z ~ q(z)` drawn by picking a
# training image at random, then `z ~ q(z|x)`. A prior draw is *in a hole* when `q(z) < p(z) / 10`.

# %%
LIMIT = 4.0
HOLE_LOG10_RATIO = -1.0  # a hole: the aggregate posterior below a tenth of the prior
n_grid = course.size(161, 41)
axis = np.linspace(-LIMIT, LIMIT, n_grid)
z1, z2 = np.meshgrid(axis, axis)
z_grid = np.column_stack([z1.ravel(), z2.ravel()])
n_draws = course.size(20_000, 2_000)
z_prior = rng.standard_normal((n_draws, 2))                      # the draws sampling would make

holes = {}
for beta, model in models_2d.items():
    mu_train, logvar_train = (a.astype(np.float64) for a in model.encode(x_train))
    log_q_grid = log_aggregate_posterior(z_grid, mu_train, logvar_train).reshape(z1.shape)
    log_p_grid = model.prior.log_prob(z_grid)[0].reshape(z1.shape)
    log10_ratio_prior = (log_aggregate_posterior(z_prior, mu_train, logvar_train)
                         - model.prior.log_prob(z_prior)[0]) / np.log(10)
    pick = rng.integers(0, x_train.shape[0], n_draws)            # z ~ q(z): an image, then q(z|x)
    z_aggregate = mu_train[pick] + np.exp(0.5 * logvar_train[pick]) * rng.standard_normal((n_draws, 2))
    kl_aggregate = float(np.mean(log_aggregate_posterior(z_aggregate, mu_train, logvar_train)
                                 - model.prior.log_prob(z_aggregate)[0]))
    mean_rate = float(np.mean(model.kl(x_train)))
    holes[beta] = dict(log_q_grid=log_q_grid, log10_ratio_grid=(log_q_grid - log_p_grid) / np.log(10),
                       log10_ratio_prior=log10_ratio_prior, kl_aggregate=kl_aggregate,
                       share_in_holes=float(np.mean(log10_ratio_prior < HOLE_LOG10_RATIO)))
    print(f"β = {beta:4.2f}: prior draws in holes {100 * holes[beta]['share_in_holes']:5.1f}%; "
          f"mean rate {mean_rate:5.2f} nats = I(x; z) {mean_rate - kl_aggregate:5.2f} "
          f"+ KL(q(z) || p(z)) {kl_aggregate:5.2f}")
print(f"(I(x; z) ≤ log N = {np.log(x_train.shape[0]):.2f} nats)")
if course.full():
    shares = [holes[beta]["share_in_holes"] for beta in HOLE_BETAS]
    kls = [holes[beta]["kl_aggregate"] for beta in HOLE_BETAS]
    course.claim(shares == sorted(shares, reverse=True) and kls == sorted(kls, reverse=True),
                 f"lower β makes the holes bigger: share of prior draws in holes "
                 f"{', '.join(f'{100 * v:.1f}%' for v in shares)} and KL(q(z) || p(z)) "
                 f"{', '.join(f'{v:.2f}' for v in kls)} for β = {HOLE_BETAS}")

# %% [markdown]
# Top row: the density of the aggregate posterior (darker is denser), with the prior's 1σ, 2σ and
# 3σ circles (the 3σ circle holds 99% of the prior's mass). Bottom row: their ratio,
# `log10 q(z)/p(z)`, blue where the data under-fill the prior, red where they over-fill it, with
# the holes outlined in black.
#
# - The codes form clusters, roughly one per digit, with thinner regions between them: `q(z)` is
#   lumpy where `p(z)` is smooth. At β = 1 the under-filled (blue) regions between the clusters
#   reach into the 2σ circle, though deep holes are rare there, and mass the prior does not expect
#   spills out past the 3σ circle (red).
# - Lower β makes the holes bigger. Information is cheap, so the encoder makes precise codes
#   (small posterior variances) and spreads the clusters apart; `KL(q(z) || p(z))` grows and the
#   share of prior draws that land in a hole with it. Higher β does the opposite, at the price in
#   distortion seen before. The KL term is what keeps `q(z)` close to `p(z)`, and it only does so
#   on average.

# %%
prior_levels = [np.exp(-0.5 * r ** 2) for r in (3, 2, 1)]  # density relative to the mode, increasing
prior_density = np.exp(-0.5 * (z1 ** 2 + z2 ** 2))
extent = (-LIMIT, LIMIT, -LIMIT, LIMIT)
fig = Figure(figsize=(4.3 * len(HOLE_BETAS) + 1.2, 8.4), layout="constrained")
axes = fig.subplots(2, len(HOLE_BETAS), squeeze=False)
for column, (beta, result) in enumerate(holes.items()):
    ax = axes[0, column]
    log_q = result["log_q_grid"]
    density_image = ax.imshow(np.maximum(log_q, log_q.max() - 12), origin="lower", extent=extent,
                              cmap="Greys")
    ax.set_title(f"β = {beta:g}: aggregate posterior log q(z)\n"
                 f"KL(q(z) || p(z)) = {result['kl_aggregate']:.2f} nats")
    ax = axes[1, column]
    ratio_image = ax.imshow(np.clip(result["log10_ratio_grid"], -3, 3), origin="lower",
                            extent=extent, cmap="RdBu_r", vmin=-3, vmax=3)
    ax.contour(z1, z2, result["log10_ratio_grid"], levels=[HOLE_LOG10_RATIO], colors="k",
               linewidths=1.2, linestyles="solid")
    ax.set_title(f"β = {beta:g}: log10 q(z)/p(z)\n"
                 f"{100 * result['share_in_holes']:.1f}% of prior draws in holes")
    for ax in axes[:, column]:
        ax.contour(z1, z2, prior_density, levels=prior_levels, colors="C2", linewidths=1.2)
        ax.set_xlabel("z₁")
        ax.set_ylabel("z₂")
fig.colorbar(density_image, ax=axes[0, -1], label="log q(z) (floored 12 below the maximum)", shrink=0.9)
fig.colorbar(ratio_image, ax=axes[1, -1], label="log10 q(z)/p(z) (clipped at ±3)", shrink=0.9)
plots.save_figure(fig, course.figure_path(TUTORIAL, "aggregate_posterior.png"))
course.show(fig)

# %% [markdown]
# ## What the holes look like
#
# Take the model with the biggest holes, β = 1/4, and prior draws, the way sampling does. Pick 20 at
# random among those that land in a hole and 20 among those where the data are at least as dense as
# the prior (`q(z) ≥ p(z)`), and decode them (the decoder's mean). The left panel shows where they
# lie.
#
# The draws on the data mostly decode to digits, since they are next to the codes of real training
# images. The draws from the holes decode to the shapes *between* clusters: blends of two digits
# (a 9 turning into a 7, a 3 into a 5), blurrier and more often of no digit in particular. The
# decoder is a smooth function, so it does not produce noise there, but it was never asked to make
# a digit there either. The printed distances put a number on it: an image decoded from a hole is on
# average further from the closest training digit than one decoded from where the data are. The
# difference is visible but modest in this small 2-D model; it grows with the rate, and in higher
# dimensions the holes are harder to see and easier to fall into. The model's samples are only as
# good as the decoder is in the places the prior sends them, and reconstructions, which use the
# data's own codes, never show this.

# %%
beta_holes = HOLE_BETAS[0]
model_holes, result = models_2d[beta_holes], holes[beta_holes]
n_examples = 20
ratio_order = np.argsort(result["log10_ratio_prior"])
in_hole = np.flatnonzero(result["log10_ratio_prior"] < HOLE_LOG10_RATIO)
covered = np.flatnonzero(result["log10_ratio_prior"] >= 0)
if in_hole.size < n_examples or covered.size < n_examples:  # a tiny or untrained model: the extremes
    in_hole, covered = ratio_order[:n_examples], ratio_order[-n_examples:]
hole_z = z_prior[rng.choice(in_hole, size=n_examples, replace=False)]
covered_z = z_prior[rng.choice(covered, size=n_examples, replace=False)]
values = np.arange(NUM_VALUES)


def decoded_means(model, z):
    """The decoder's mean image E[x|z] at each row of z, (M, 64)."""
    return model.decode(z).astype(np.float64) @ values


def distance_to_nearest_training_image(images):
    """For each image, the Euclidean distance (in intensity units) to the closest training image, (M,)."""
    differences = images[:, None, :] - x_train[None, :, :].astype(np.float64)  # (M, N, 64)
    return np.sqrt(np.min(np.sum(differences ** 2, axis=-1), axis=1))


mean_distance = {}
for name, z_group in (("holes", z_prior[in_hole[:500]]), ("data's codes", z_prior[covered[:500]])):
    distances = distance_to_nearest_training_image(decoded_means(model_holes, z_group))
    mean_distance[name] = float(distances.mean())
    print(f"decoded from the {name:12s}: distance to the nearest training digit {distances.mean():5.2f} "
          f"on average ({len(z_group)} prior draws)")
from_holes, from_data = mean_distance["holes"], mean_distance["data's codes"]
course.claim(from_holes > from_data,
             f"an image decoded from a hole is on average further from the closest training digit "
             f"({from_holes:.2f}) than one decoded from where the data are ({from_data:.2f})")

fig = Figure(figsize=(12, 4.8), layout="constrained")
left, right = fig.subfigures(1, 2, width_ratios=[1, 1.3])
ax = left.add_subplot()
ax.imshow(np.clip(result["log10_ratio_grid"], -3, 3), origin="lower", extent=extent, cmap="RdBu_r",
          vmin=-3, vmax=3, alpha=0.6)
ax.contour(z1, z2, result["log10_ratio_grid"], levels=[HOLE_LOG10_RATIO], colors="k", linewidths=1,
           linestyles="solid")
ax.contour(z1, z2, prior_density, levels=prior_levels, colors="C2", linewidths=1)
ax.scatter(hole_z[:, 0], hole_z[:, 1], marker="x", s=40, color="k", label="draws in holes")
ax.scatter(covered_z[:, 0], covered_z[:, 1], marker="o", s=30, facecolor="none", edgecolor="k",
           label="draws where q(z) ≥ p(z)")
ax.set_xlim(-LIMIT, LIMIT)
ax.set_ylim(-LIMIT, LIMIT)
ax.set_xlabel("z₁")
ax.set_ylabel("z₂")
ax.legend(loc="lower left", fontsize="small")
ax.set_title(f"β = {beta_holes:g}: prior draws over log10 q(z)/p(z)")
top, bottom = right.subplots(2, 1)
plots.image_grid(decoded_means(model_holes, hole_z), IMAGE_SHAPE, ncols=n_examples // 2, ax=top,
                 vmin=0, vmax=VMAX)
top.set_title("decoded from the holes")
plots.image_grid(decoded_means(model_holes, covered_z), IMAGE_SHAPE, ncols=n_examples // 2,
                 ax=bottom, vmin=0, vmax=VMAX)
bottom.set_title("decoded from where the data are")
plots.save_figure(fig, course.figure_path(TUTORIAL, "holes.png"))
course.show(fig)

# %% [markdown]
# The whole picture at once: the decoder's mean on a regular grid of codes over the prior's likely
# region, with the hole outlines of the same model drawn over it in red. Each cell is the image the
# decoder makes at that `z`. Inside each cluster it makes one digit, and the clusters are arranged
# around the centre; the holes sit along the borders between them, and across a border the images
# morph from one digit into another through shapes that are neither (look at the centre, where
# 7, 9, 3 and 5 meet, inside the prior's 1σ circle).

# %%
n_cells = course.size(17, 9)
LATENT_MAP_LIMIT = 3.0
cells = np.linspace(-LATENT_MAP_LIMIT, LATENT_MAP_LIMIT, n_cells)
z_cells = np.array([[c1, c2] for c2 in cells[::-1] for c1 in cells])  # mosaic row 0 is the top: largest z2
half_cell = LATENT_MAP_LIMIT / (n_cells - 1)
edge = LATENT_MAP_LIMIT + half_cell
fig = Figure(figsize=(8, 8), layout="constrained")
ax = fig.add_subplot()
image = plots.image_grid(decoded_means(model_holes, z_cells), IMAGE_SHAPE, ncols=n_cells, ax=ax,
                         vmin=0, vmax=VMAX)
image.set_extent((-edge, edge, -edge, edge))
ax.contour(z1, z2, result["log10_ratio_grid"], levels=[HOLE_LOG10_RATIO], colors="C3",
           linewidths=2.5, linestyles="solid")
ax.contour(z1, z2, prior_density, levels=prior_levels[1:], colors="C2", linewidths=1.5,
           linestyles="dashed")
ax.set_xlim(-edge, edge)
ax.set_ylim(-edge, edge)
ax.set_title(f"β = {beta_holes:g}: the decoder over the latent plane\n"
             "(red: holes, green dashed: the prior's 1σ and 2σ circles)")
plots.save_figure(fig, course.figure_path(TUTORIAL, "latent_map.png"))
course.show(fig)

# %% [markdown]
# ## What to take away
#
# - The negative ELBO is distortion plus rate, `D + R`. A β-VAE trains on `D + βR`; β is the
#   exchange rate between the two and picks the point on the rate–distortion curve where the slope
#   is `-β`. Plot `(R, D)` for several models to see the trade-off, with lines of constant ELBO.
# - **Posterior collapse** is `q(z|x) = p(z)`: zero rate. Recognise it in the rate of each latent
#   dimension (zero) and in the posterior moments (mean fixed at 0, variance at 1), not only in the
#   active-unit count, which is lenient. Some collapsed dimensions are normal at β = 1: the ELBO
#   switches off what does not pay for itself.
# - Full collapse happens when the decoder does nearly as well without `z` as with it. With an
#   autoregressive decoder that is always the case; with minivae's factorised categorical decoder
#   the per-pixel marginals come within about ten nats of the β = 1 model, so a β of 4 is enough to
#   make the code worthless. Compare your model's distortion with such a "no z" baseline.
# - **Holes**: the aggregate posterior `q(z)`, the mixture of the encoder's posteriors over the
#   data, need not match the prior. The average rate is `I(x; z) + KL(q(z) || p(z))`. Where `p(z)`
#   is high and `q(z)` low, the decoder was never trained, and prior samples from there decode to
#   blends and smudges. Visualise `q(z)` against `p(z)` (in 2-D, or by projection), and do not judge
#   a VAE by its reconstructions alone: its samples come from the prior, not from the codes of data.

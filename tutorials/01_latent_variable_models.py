# %% [markdown]
# # 1. Latent variable models and probabilistic PCA
#
# A variational autoencoder is a *latent variable model*: it explains each image `x` by a hidden
# code `z` that we never observe. Before any neural network, this tutorial looks at the one latent
# variable model where every quantity has a closed form, probabilistic PCA (pPCA), fits it to the
# digits that ship with minivae, and uses its exact answers to show why a VAE is needed at all:
# the obvious way to compute the likelihood `p(x)` stops working as the latent space grows.
#
# **What you will learn**
#
# - the generative story `z ~ p(z)`, `x ~ p(x|z)`, and what the marginal `p(x)` and the posterior
#   `p(z|x)` are;
# - pPCA's marginal and posterior in closed form, on the digits: its directions, samples,
#   reconstructions and latent space;
# - the naive Monte Carlo estimate of `log p(x)` from samples of the prior, and why it fails as
#   the latent dimension grows, measured against the exact value.
#
# **Prerequisites.** Gaussian distributions (mean, covariance, density), NumPy.
#
# **Run time.** Under a minute in full (25 to 50 s measured on a two-core machine shared with other
# jobs, load average 1.6 to 3.3; most of it the Monte Carlo experiment at the end); a few seconds
# with `MINIVAE_QUICK=1`.

# %%
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse
from scipy.special import logsumexp

import minivae
from minivae import course, plots
from minivae.likelihoods import GaussianLikelihood
from minivae.priors import StandardNormal
from minivae.ppca import PPCA

TUTORIAL = "01_latent_variable_models"
rng = np.random.default_rng(1)

# %% [markdown]
# ## The data
#
# 1797 handwritten digits of 8x8 pixels, each pixel an integer intensity from 0 to 16, split into
# 1000 training, 350 validation and 447 test images (the split published results use). pPCA is a
# density for *continuous* `x`; fitted to integers it could pile up density on them. We
# *dequantize*, adding uniform noise `u ~ U[0, 1)` to every pixel: averaged over the noise, the
# log-density of `x + u` is then a lower bound on the log-probability of the integer image (Theis
# et al., 2016), so the numbers below are honest.

# %%
x_train_int, y_train = minivae.datasets.load_digits("train")
x_test_int, y_test = minivae.datasets.load_digits("test")
x_train = minivae.datasets.dequantize(x_train_int, rng)
x_test = minivae.datasets.dequantize(x_test_int, rng)
print(f"train {x_train.shape}, test {x_test.shape}, pixel values in [0, 17)")

IMAGE_SHAPE = minivae.datasets.DIGITS_IMAGE_SHAPE
VMAX = 16.0  # draw intensity 16 black, 0 white
fig = plots.plot_samples(x_train_int[:40], IMAGE_SHAPE, course.figure_path(TUTORIAL, "data.png"),
                         title="Training digits", vmax=VMAX)
course.show(fig)

# %% [markdown]
# ## The generative story
#
# A latent variable model says how the data could have been made, in two steps:
#
# 1. draw a code from the prior, `z ~ p(z) = N(0, I_q)`, with `q` (the latent dimension) much
#    smaller than the number of pixels `d = 64`;
# 2. draw the image from the likelihood `p(x|z)`.
#
# In probabilistic PCA (Tipping & Bishop, 1999) the second step is linear plus Gaussian noise:
#
# $$x = W z + \mu + \sigma \epsilon, \qquad W: (d, q),\; \epsilon \sim N(0, I_d),
#   \qquad\text{so}\qquad p(x|z) = N(W z + \mu,\; \sigma^2 I_d).$$
#
# Two questions follow. How probable is an image under the model? That is the *marginal
# likelihood* `p(x) = ∫ p(x|z) p(z) dz`, what training maximises. Which codes could have made a
# given image? That is the *posterior* `p(z|x) = p(x|z) p(z) / p(x)`. For pPCA both are Gaussian:
#
# $$p(x) = N(\mu,\; W W^\top + \sigma^2 I_d), \qquad
#   p(z|x) = N\big(M^{-1} W^\top (x - \mu),\; \sigma^2 M^{-1}\big),\quad M = W^\top W + \sigma^2 I_q,$$
#
# and the maximum-likelihood `W`, `μ`, `σ²` come from an eigen-decomposition of the data covariance:
# `W` spans the top `q` principal directions and `σ²` is the variance left in the others.
# `minivae.ppca.PPCA` computes all of this exactly. We fit `q = 16`, the latent size of the VAE in
# tutorial 4.

# %%
Q = 16
ppca = PPCA(Q).fit(x_train)
print(f"q = {Q}: noise variance sigma^2 = {ppca.noise_variance_:.2f} (per pixel), "
      f"test log p(x) = {ppca.mean_log_likelihood(x_test):.2f} nats per image")

# %% [markdown]
# ## What the latent dimensions do
#
# Moving `z_j` by one unit moves the image by the column `W[:, j]`. The figure shows the mean image
# `μ` and the 16 columns of `W`, red where a column adds ink and blue where it removes it. The first
# columns, the directions of largest variance, are strong, structured strokes that trade ink in one
# part of the digit against another; the later ones are weaker and patchier. Each image of the
# model is `μ` plus a weighted sum of these columns, plus noise.

# %%
fig = Figure(figsize=(10, 2.6), layout="constrained")
left, right = fig.subfigures(1, 2, width_ratios=[1, 4.2])
ax = left.add_subplot()
plots.image_grid(ppca.mean_[None, :], IMAGE_SHAPE, ax=ax, vmin=0, vmax=VMAX)
ax.set_title("mean μ")
ax = right.add_subplot()
limit = np.abs(ppca.W_).max()
plots.image_grid(ppca.W_.T, IMAGE_SHAPE, ncols=8, ax=ax, vmin=-limit, vmax=limit, cmap="RdBu_r")
ax.set_title("columns of W, largest variance first (red: more ink, blue: less)")
plots.save_figure(fig, course.figure_path(TUTORIAL, "directions.png"))
course.show(fig)

# %% [markdown]
# ## Samples
#
# Running the generative story forward gives new images. The top rows show the noise-free part
# `W z + μ`, the bottom rows the full draw with the pixel noise `σ ε` added (`σ ≈ 1.9` intensity
# levels here). The means look like blurry digits, some of them ambiguous blends: a linear model
# spreads probability over every combination of strokes, including ones no one writes. The noise,
# independent from pixel to pixel, is what pPCA uses to account for everything the 16 directions
# miss, and it is why a pPCA sample looks grainy. A VAE replaces `W z + μ` by a neural network so
# that the codes can map to sharper, more digit-like images.

# %%
x_sampled, z_sampled = ppca.sample(20, rng, return_latent=True)
means = z_sampled @ ppca.W_.T + ppca.mean_  # the generative story without its noise
fig = Figure(figsize=(7.5, 3.6), layout="constrained")
top, bottom = fig.subfigures(2, 1)
for subfig, images, title in ((top, means, "W z + μ (noise-free)"),
                              (bottom, x_sampled, "x = W z + μ + σε (a full draw)")):
    ax = subfig.add_subplot()
    plots.image_grid(images, IMAGE_SHAPE, ncols=10, ax=ax, vmin=0, vmax=VMAX)
    ax.set_title(title)
plots.save_figure(fig, course.figure_path(TUTORIAL, "samples.png"))
course.show(fig)

# %% [markdown]
# ## The posterior, and what it looks like in two dimensions
#
# To see a latent space we need `q = 2`. For every test image the posterior `p(z|x)` is a Gaussian;
# the dots are their means, coloured by the digit the image shows (the model never saw the
# labels). Digits that are written alike land near each other: zeros on one side, ones on the
# other, with the rest in between and overlapping, because two linear directions cannot separate
# ten classes. The circles, drawn for one image of each of five digits, enclose two standard
# deviations of the posterior: an image does not pin down its code, it leaves a region of codes
# about as wide as a whole class. They all have the same shape (here nearly round): in pPCA the
# posterior covariance `σ² M⁻¹` does not depend on `x`, only its mean does. That is one more thing
# a VAE's encoder will relax.

# %%
ppca_2d = PPCA(2).fit(x_train)
posterior_mean, posterior_cov = ppca_2d.posterior(x_test)
fig = plots.plot_latent(posterior_mean, y_test, title="pPCA with q = 2: posterior means of the test set")
ax = fig.axes[0]
eigenvalues, eigenvectors = np.linalg.eigh(posterior_cov)
angle = np.degrees(np.arctan2(eigenvectors[1, -1], eigenvectors[0, -1]))
for digit in (0, 1, 4, 6, 7):
    centre = posterior_mean[np.flatnonzero(y_test == digit)[0]]
    ax.add_patch(Ellipse(centre, *(2 * 2 * np.sqrt(eigenvalues[::-1])), angle=angle, fill=False,
                         edgecolor="black", linewidth=1.2))
    ax.plot(*centre, "k+", markersize=8)
plots.save_figure(fig, course.figure_path(TUTORIAL, "posterior_2d.png"))
print(f"posterior standard deviations (q = 2): {np.sqrt(eigenvalues[::-1]).round(3)}")
course.claim(abs(np.sqrt(ppca.noise_variance_) - 1.9) < 0.1 and eigenvalues.max() / eigenvalues.min() < 1.2,
             f"σ ≈ 1.9 intensity levels for q = {Q} ({np.sqrt(ppca.noise_variance_):.2f}); the posterior "
             f"of the q = 2 model is nearly round (standard deviations {np.sqrt(eigenvalues[::-1]).round(3)})")
course.show(fig)

# %% [markdown]
# ## Reconstructions
#
# Encode then decode: map `x` to its posterior mean `E[z|x]` and back to `W E[z|x] + μ`. The
# figure shows test images (top row) and their reconstructions with 2, 8 and 32 latent dimensions.
# With two the model only knows the broad shape; with 32 it keeps most of the strokes, though
# still blurred.

# %%
rows = [x_test_int[:10]]
labels = ["data"]
for q in (2, 8, 32):
    rows.append(PPCA(q).fit(x_train).reconstruct(x_test[:10]))
    labels.append(f"q = {q}")
image = plots.image_grid(np.concatenate(rows), IMAGE_SHAPE, ncols=10, vmin=0, vmax=VMAX)
ax = image.axes
height = IMAGE_SHAPE[0] + plots.GAP_PIXELS
ax.set_yticks([(IMAGE_SHAPE[0] - 1) / 2 + k * height for k in range(len(rows))], labels)
ax.tick_params(axis="y", length=0)
ax.set_title("Test images and their pPCA reconstructions")
fig = ax.figure
fig.set_figwidth(fig.get_figwidth() + 0.8)  # room for the row labels
plots.save_figure(fig, course.figure_path(TUTORIAL, "reconstructions.png"))
course.show(fig)

# %% [markdown]
# ## How many latent dimensions?
#
# Because `log p(x)` is exact, we can simply measure it. The figure shows the average log-likelihood
# of training and test images, in nats per image, as `q` grows. More dimensions always help on
# the training set (the model nests the smaller ones); on the test set the gain is smaller over the
# whole range (not at every step), and the gap between the curves is the part of the improvement
# that does not generalise. The curves
# steepen at large `q` for a mundane reason: once the main strokes are modelled, the remaining
# directions are the nearly blank border pixels (only the dequantization noise, variance 1/12), and
# a small `σ²` that fits them tightly pays many nats.

# %%
latent_sizes = course.size([1, 2, 4, 8, 16, 24, 32, 48], [1, 2, 4, 8, 16])
train_ll, test_ll = [], []
for q in latent_sizes:
    model_q = PPCA(q).fit(x_train)
    train_ll.append(model_q.max_log_likelihood())
    test_ll.append(model_q.mean_log_likelihood(x_test))
fig = plots.plot_lines({"training images": (latent_sizes, train_ll), "test images": (latent_sizes, test_ll)},
                       xlabel="latent dimension q", ylabel="log p(x), nats per image",
                       title="Exact pPCA log-likelihood", logx=True)
plots.save_figure(fig, course.figure_path(TUTORIAL, "loglik_vs_q.png"))
for q, train_value, test_value in zip(latent_sizes, train_ll, test_ll):
    print(f"q = {q:2d}: train {train_value:8.2f}, test {test_value:8.2f} nats")
train_gain, test_gain = np.diff(train_ll), np.diff(test_ll)
course.claim(np.all(train_gain > 0) and test_ll[-1] - test_ll[0] < train_ll[-1] - train_ll[0],
             "more dimensions always help on the training set (gains "
             f"{np.round(train_gain, 1).tolist()}); over the whole range the test set gains less "
             f"({test_ll[-1] - test_ll[0]:.1f} against {train_ll[-1] - train_ll[0]:.1f} nats)")
course.show(fig)

# %% [markdown]
# ## Estimating log p(x) without a closed form
#
# For a VAE, `p(x|z)` is a neural network and the integral `p(x) = ∫ p(x|z) p(z) dz` has no closed
# form. The first idea is Monte Carlo: `p(x)` is an expectation under the prior,
# `p(x) = E_{z ~ p(z)}[p(x|z)]`, so average over `S` draws,
#
# $$\log p(x) \approx \log \frac{1}{S} \sum_{s=1}^S p(x | z_s), \qquad z_s \sim p(z).$$
#
# Let us build it step by step for one test image, on the pPCA where the exact answer is known.
# The sum is done in log space with `logsumexp` (the `p(x|z_s)` are around `e^-150`, far below
# the smallest float64).

# %%
likelihood = GaussianLikelihood(variance=ppca.noise_variance_)  # p(x|z) = N(x | mean, σ² I)
x_one = x_test[0]
S = 1000

z = rng.standard_normal((S, Q))                          # z_s ~ p(z), (S, q)
mean = z @ ppca.W_.T + ppca.mean_                        # W z_s + μ, (S, d)
log_px_given_z = likelihood.log_prob(np.broadcast_to(x_one, mean.shape), mean, {})  # log p(x|z_s), (S,)
estimate = logsumexp(log_px_given_z) - np.log(S)         # log (1/S) Σ_s p(x|z_s)

exact_one = ppca.log_likelihood(x_one[None, :])[0]
largest_share = np.exp(log_px_given_z.max() - logsumexp(log_px_given_z))
print(f"S = {S}: naive estimate {estimate:.2f}, exact {exact_one:.2f} nats; "
      f"the largest of the {S} terms carries {100 * largest_share:.0f}% of the sum")

# %% [markdown]
# The same steps as a function of many images, to try more samples.


# %%
def naive_log_px(model, x, n_samples, rng):
    """log (1/S) Σ_s p(x|z_s) with z_s ~ N(0, I), for each row of x: an (n,) array."""
    likelihood = GaussianLikelihood(variance=model.noise_variance_)
    estimates = np.empty(len(x))
    for i, x_i in enumerate(x):
        z = rng.standard_normal((n_samples, model.n_components))
        mean = z @ model.W_.T + model.mean_
        log_px_given_z = likelihood.log_prob(np.broadcast_to(x_i, mean.shape), mean, {})
        estimates[i] = logsumexp(log_px_given_z) - np.log(n_samples)
    return estimates


for S in (10, 1000, course.size(100_000, 10_000)):
    print(f"S = {S:6d}: naive estimate {naive_log_px(ppca, x_one[None, :], S, rng)[0]:8.2f}   "
          f"exact {exact_one:8.2f} nats")

# %% [markdown]
# With a thousand samples the estimate is tens of nats too low, and a single term carries most of
# the sum. More samples make it erratic rather than steadily better: with 100 000 it may land close,
# or even above the exact value, depending on one or two lucky draws. Why? Almost every `z_s` drawn
# from the prior produces an image unlike `x` and contributes nothing; the sum is carried by the
# rare draws that land where the posterior `p(z|x)` lives. How rare they are is measured by
# `KL(p(z|x) || p(z))`: importance sampling needs on the order of `exp(KL)` draws before the
# estimate settles (Chatterjee & Diaconis, 2018). The KL adds up over latent dimensions, so the
# number of samples needed grows *exponentially* with `q`.
#
# The experiment below makes this concrete. For each latent size it fits a pPCA, computes the
# exact mean `log p(x)` over test images and the naive estimate with three sample sizes `S`, and
# the average `KL(p(z|x) || p(z))` (the pPCA posterior has a diagonal covariance here, because the
# fitted `W` has orthogonal columns, so the diagonal-Gaussian KL of `minivae.priors`
# applies).
#
# The left panel: with one or two latent dimensions even 10 samples are close; by `q = 8`
# thousands are not enough; at `q = 32` even 100 000 samples are off by a hundred nats or more, an
# error of a factor `e^100` in `p(x)`. The right panel explains it: `log10 exp(KL)`, the number of
# digits of the samples needed, against the sample sizes tried (dashed). Each estimate breaks down
# where the curve crosses its line.

# %%
naive_sizes = course.size([1, 2, 4, 8, 16, 32], [1, 2, 4, 8])
sample_sizes = course.size([10, 1000, 100_000], [10, 100, 1000])
n_images = course.size(30, 8)
x_eval = x_test[:n_images]

exact, kl_posterior = [], []
naive = {S: [] for S in sample_sizes}
for q in naive_sizes:
    model_q = PPCA(q).fit(x_train)
    exact.append(model_q.mean_log_likelihood(x_eval))
    mean_q, cov_q = model_q.posterior(x_eval)
    logvar_q = np.broadcast_to(np.log(np.diag(cov_q)), mean_q.shape)
    kl_posterior.append(float(np.mean(StandardNormal().kl(mean_q, logvar_q)[0])))
    for S in sample_sizes:
        naive[S].append(float(np.mean(naive_log_px(model_q, x_eval, S, rng))))
    print(f"q = {q:2d}: exact {exact[-1]:8.2f}, naive "
          + ", ".join(f"S={S}: {naive[S][-1]:8.2f}" for S in sample_sizes)
          + f", KL(posterior || prior) {kl_posterior[-1]:6.2f} nats")

fig = Figure(figsize=(11, 4), layout="constrained")
ax = fig.add_subplot(1, 2, 1)
ax.plot(naive_sizes, exact, "k-", linewidth=2.5, label="exact log p(x)")
for k, S in enumerate(sample_sizes):
    ax.plot(naive_sizes, naive[S], "o--", color=f"C{k}", label=f"naive Monte Carlo, S = {S:,}")
ax.set_xscale("log", base=2)
ax.set_xticks(naive_sizes, [str(q) for q in naive_sizes])
ax.set_xlabel("latent dimension q")
ax.set_ylabel("mean log p(x) over test images (nats)")
ax.set_title("Naive estimate against the exact value")
ax.grid(True, alpha=0.3)
ax.legend(loc="lower left")
ax = fig.add_subplot(1, 2, 2)
ax.plot(naive_sizes, np.array(kl_posterior) / np.log(10), "ko-", linewidth=2,
        label="log10 of exp(KL(p(z|x) || p(z))), samples needed")
for k, S in enumerate(sample_sizes):
    ax.axhline(np.log10(S), color=f"C{k}", linestyle="--", label=f"log10 of S = {S:,} samples")
ax.set_xscale("log", base=2)
ax.set_xticks(naive_sizes, [str(q) for q in naive_sizes])
ax.set_xlabel("latent dimension q")
ax.set_ylabel("digits of the sample size")
ax.set_title("Samples needed grow exponentially with q")
ax.grid(True, alpha=0.3)
ax.legend(loc="upper left")
plots.save_figure(fig, course.figure_path(TUTORIAL, "naive_monte_carlo.png"))
course.show(fig)
if course.full():
    error = {S: np.abs(np.array(naive[S]) - np.array(exact)) for S in sample_sizes}
    at = {q: i for i, q in enumerate(naive_sizes)}
    course.claim(error[10][at[1]] < 3 and error[10][at[2]] < 3 and error[1000][at[8]] > 1
                 and error[100_000][at[32]] >= 100,
                 f"with one or two latent dimensions 10 samples are close (off by {error[10][at[1]]:.2f}, "
                 f"{error[10][at[2]]:.2f}); at q = 8 a thousand are not enough (off by {error[1000][at[8]]:.2f}); "
                 f"at q = 32 even 100 000 are off by a hundred nats or more ({error[100_000][at[32]]:.0f})")

# %% [markdown]
# ## What to take away
#
# - A latent variable model is a generative story, `z ~ p(z)` then `x ~ p(x|z)`. Its two hard
#   questions are the marginal likelihood `p(x) = ∫ p(x|z) p(z) dz` and the posterior `p(z|x)`.
# - Probabilistic PCA answers both in closed form: `p(x) = N(μ, W Wᵀ + σ² I)`,
#   `p(z|x) = N(M⁻¹ Wᵀ (x - μ), σ² M⁻¹)`. That makes it the yardstick for everything later in the
#   course: an exact number to compare estimates and bounds against.
# - Its limits show what a VAE adds: a linear decoder gives blurry samples and latent classes that
#   overlap, and a posterior whose shape is the same for every image.
# - Estimating `log p(x)` by sampling `z` from the prior fails as the latent dimension grows: the
#   samples that matter are those near the posterior, and finding them by chance needs about
#   `exp(KL(p(z|x) || p(z)))` draws, exponential in `q`. The remedy, sampling from an approximate
#   posterior `q(z|x)` instead, is the idea behind the VAE's encoder and the ELBO (tutorial 3) and
#   behind importance-weighted estimates of `log p(x)` (tutorial 6).

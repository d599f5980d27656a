# %% [markdown]
# # 4. Training a VAE on the digits
#
# Tutorials 1 to 3 took the pieces apart; this one puts them together and trains minivae's
# reference VAE end to end on the 8x8 digits, then looks at what it learned from every side a VAE
# text looks at: reconstructions, samples from the prior, the training curves, the latent space,
# interpolations, and finally the two numbers that summarise a VAE, its test −ELBO and its test
# negative log-likelihood.
#
# **What you will learn**
#
# - the reference setting: what the model, the likelihood and the training procedure are, and why;
# - how to read the training and validation curves, and what early stopping does;
# - what reconstructions, prior samples, the latent space and interpolations tell about a VAE;
# - the difference between the test −ELBO (a bound) and the importance-weighted test NLL with
#   K = 512 (an estimate), and how one approaches the other as K grows.
#
# **Prerequisites.** Tutorials 1–3: the generative story, the reparameterization trick and the
# ELBO.
#
# **Run time.** Training the reference model (130 epochs) took 16 to 25 s on a two-core machine
# shared with other jobs (load average 2 to 4), and it happens once: the trained model is cached in
# the figures folder, and later runs of this tutorial and of tutorial 6 read it back. The whole
# tutorial took 27 to 51 s with the training and about half that without, most of the rest being
# the K = 512 importance sampling.
# With `MINIVAE_QUICK=1` everything takes seconds, but the model is a small one trained for 2
# epochs: its figures then show an untrained model, and its numbers mean nothing.

# %%
import numpy as np
from matplotlib.figure import Figure

import minivae
from minivae import course, plots
from minivae.reference import REFERENCE

TUTORIAL = "04_training_on_digits"
rng = np.random.default_rng(4)

IMAGE_SHAPE = minivae.datasets.DIGITS_IMAGE_SHAPE
VMAX = 16.0  # intensity 16 drawn black

# %% [markdown]
# ## The data
#
# The same digits as before, this time used as they are: 64 pixels, each an integer from 0 to 16.
# The training set (1000 images) fits the parameters, the validation set (350) decides when to
# stop, and the test set (447) is only looked at once, at the end.

# %%
x_train, y_train = minivae.datasets.load_digits("train")
x_val, _ = minivae.datasets.load_digits("val")
x_test, y_test = minivae.datasets.load_digits("test")
print(f"train {x_train.shape}, validation {x_val.shape}, test {x_test.shape}")
fig = plots.plot_samples(x_test[:40], IMAGE_SHAPE, course.figure_path(TUTORIAL, "data.png"),
                         title="Test digits", vmax=VMAX)
course.show(fig)

# %% [markdown]
# ## The reference model
#
# The reference setting is stated once, in `minivae.reference.REFERENCE`, and everything in minivae
# that trains "the reference model" reads it from there: `minivae train`, `minivae compare` and
# these tutorials.
#
# - **Encoder** `q(z|x) = N(μ(x), diag σ²(x))`: an MLP 64 → 256 → 256 → 2·16 with LeakyReLU (slope
#   0.01), whose output is split into `μ` and `log σ²` (`mu`, `logvar` in the code).
# - **Prior** `p(z) = N(0, I_16)`.
# - **Decoder** `p(x|z)`: the mirror MLP 16 → 256 → 256 → 64·17, read as 17 logits per pixel. Each
#   pixel is a *categorical* variable over its 17 possible intensities, so `log p(x|z)` is an exact
#   log-probability of the integer image (no dequantization, no Gaussian on integers).
# - **Training**: minimise the −ELBO (reconstruction term with one reparameterized sample, analytic
#   KL) with Adamax, learning rate 1e-3, minibatches of 64. After every step the trainer also
#   updates a running average of the weights (Polyak averaging, decay 0.999): the average is less
#   noisy than the weights themselves, and it is the average that is validated and kept. After
#   every epoch it measures the validation −ELBO (one sample of `z` per image) and stops when that
#   has not improved for 20 epochs, keeping the best epoch's averaged parameters.
#
# In code, with `settings = REFERENCE`, training is one call of `minivae.fit`:
#
# ```python
# model = minivae.VAE(64, settings.latent_dim, hidden=settings.hidden, likelihood="categorical",
#                     num_values=settings.num_values, seed=settings.seed)
# history = minivae.fit(model, x_train, x_val, epochs=settings.max_epochs,
#                       batch_size=settings.batch_size, optimizer=minivae.Adamax(lr=settings.lr),
#                       patience=settings.patience, val_samples=settings.val_samples,
#                       ema=settings.ema, rng=np.random.default_rng(settings.seed))
# ```
#
# which is exactly what `minivae train` does with its defaults. These are also `minivae.fit`'s
# defaults, so `minivae.fit(model, x_train, x_val)` trains the same way (its default generator is
# seeded with the model's seed, 0). Tutorial 6 uses the same model, so
# `course.reference_model()` makes that call once and caches the trained model with its settings
# in the figures folder (`reference-model/`); a later run, of this tutorial or another, reads it
# back instead of training again, and trains again only if the settings, or minivae's training
# code, have changed. The callback below prints a line every 10 epochs while it trains. Quick mode
# trains a much smaller model for 2 epochs.

# %%
print(REFERENCE)


def report(epoch, history):
    """Print every 10th epoch; never stop training early from here."""
    if (epoch + 1) % 10 == 0 or epoch == 0:
        print(f"epoch {epoch + 1:4d}: train -ELBO {history.train_loss[-1]:7.2f}, "
              f"validation -ELBO {history.val_loss[-1]:7.2f} (best {history.best_val_loss:.2f}, "
              f"epoch {history.best_epoch})", flush=True)
    return False


model, history, trained = course.reference_model(callback=report)
best_epoch = history.best_epoch  # epochs are counted from 1, as in the printout and the figure
print(model)
print(f"{history.epochs} epochs ({history.steps} steps)"
      + (f" in {history.seconds:.0f} s" if trained else "")
      + f"; kept epoch {best_epoch}, validation -ELBO {history.best_val_loss:.2f} nats")

# %% [markdown]
# ## The training curves
#
# The figure every VAE text shows: the −ELBO, in nats per image, on the training set (averaged over
# the minibatches of each epoch, with the weights as they were at each step) and on the validation
# set (after each epoch, with the averaged weights), with the best validation epoch marked. Both
# fall, after a short plateau in the first epochs. Then they part: the training −ELBO keeps
# falling, because a model with 440 000 parameters can always fit 1000 images better, while the
# validation −ELBO flattens out (near 100 nats in the full run, within a nat of its best from
# about epoch 85 on): from there on, what the model learns about its training images no longer
# carries over to new ones. That is overfitting, and the validation curve is the only one that
# shows it. Early stopping keeps the parameters of the marked epoch and gives up 20 epochs later.
# (The first training value is above the validation one because it averages over an epoch during
# which the model was improving fast.)

# %%
val_loss = np.asarray(history.val_loss)
flat_from = int(np.argmax(val_loss <= history.best_val_loss + 1.0)) + 1  # 1-based epoch
course.claim(abs(model.n_params - 440_000) < 1000 and 99 <= history.best_val_loss <= 101
             and 75 <= flat_from <= 95 and history.train_loss[0] > val_loss[0]
             and history.train_loss[-1] < val_loss[-1] - 10,
             f"{model.n_params} parameters; the validation -ELBO flattens near 100 nats "
             f"(best {history.best_val_loss:.2f}), within a nat of its best from epoch {flat_from} "
             f"on; the first training value is above the first validation value "
             f"({history.train_loss[0]:.1f} > {val_loss[0]:.1f}); at the end the training -ELBO is far "
             f"below the validation one ({history.train_loss[-1]:.1f} against {val_loss[-1]:.1f})")
fig = plots.plot_history(history, course.figure_path(TUTORIAL, "curves.png"),
                         title="Training and validation −ELBO")
course.show(fig)

# %% [markdown]
# ## Reconstructions
#
# Top row: test images the model never trained on. Bottom row: their reconstructions, the mean of
# `p(x|z)` (the expected intensity of every pixel) at the posterior mean `z = μ(x)`. Most
# reconstructions keep the digit, its slant and its thickness, and lose only fine detail: 16
# numbers describe an 8x8 digit well. Now and then an unusual digit comes back as a more typical
# neighbour (a sloppy 5 turning into a 6): the decoder redraws what it has learned digits look
# like. Compare with pPCA's blurrier reconstructions in tutorial 1.

# %%
fig = plots.plot_reconstructions(x_test[:12], model.reconstruct(x_test[:12]), IMAGE_SHAPE,
                                 course.figure_path(TUTORIAL, "reconstructions.png"), n=12, vmax=VMAX)
course.show(fig)

# %% [markdown]
# ## Samples from the prior
#
# The generative story run forward: `z ~ N(0, I)`, then the decoder. Top: the decoder's mean image
# for 30 codes; bottom: one draw of `x` from `p(x|z)` for the same codes (in the same places),
# every pixel sampled from its own categorical distribution. Most means are recognisable digits;
# some are blends, because the prior also covers the regions of latent space between the classes.
# The draws are grainier: the pixels are sampled independently given `z`, so all the correlation
# between pixels has to come from `z`. Samples from the prior are a harder test than
# reconstructions: the decoder must make sense of codes no image was encoded to.

# %%
SAMPLE_SEED = 40  # the same seed draws the same codes z, so the two rows of images match
mean_images = model.sample(30, rng=np.random.default_rng(SAMPLE_SEED), mean=True)  # E[x|z]
draws = model.sample(30, rng=np.random.default_rng(SAMPLE_SEED))                    # x ~ p(x|z)
fig = Figure(figsize=(9.5, 3.6), layout="constrained")
top, bottom = fig.subfigures(2, 1)
for subfig, images, title in ((top, mean_images, "decoder means E[x|z], z ~ p(z)"),
                              (bottom, draws, "draws x ~ p(x|z) for the same z")):
    ax = subfig.add_subplot()
    plots.image_grid(images, IMAGE_SHAPE, ncols=15, ax=ax, vmin=0, vmax=VMAX)
    ax.set_title(title)
plots.save_figure(fig, course.figure_path(TUTORIAL, "samples.png"))
course.show(fig)

# %% [markdown]
# ## The latent space, coloured by digit
#
# Every test image encoded to its posterior mean `μ(x)`, a point in 16 dimensions, shown on the
# first two principal components of those points, coloured by the digit (which the model never
# saw). Images of the same digit gather together: the VAE has organised its latent space by what
# the digits look like, without labels. Classes that overlap in this 2-D view may still be apart
# in the other 14 dimensions.

# %%
mu_test, _ = model.encode(x_test)
fig = plots.plot_latent(mu_test, y_test, course.figure_path(TUTORIAL, "latent.png"),
                        title="Posterior means of the test set, by digit")
print(f"active units: {model.active_units(x_test)} of {model.latent_dim} latent dimensions "
      f"(Var_x E[z_j|x] > 0.01)")
course.show(fig)

# %% [markdown]
# ## Interpolating between two digits
#
# Encode two test images of different digits, walk in a straight line from one code to the other,
# and decode each point. Each row starts and ends with the real images (outer columns); between
# them are the decoder means along the path. The images change gradually, passing through shapes
# that are plausible in between, because nearby codes decode to similar images: the decoder is a
# smooth function, and the KL term has packed the codes closely enough that the path between two
# codes stays in the region the decoder was trained on.

# %%
pairs = [(0, 6), (1, 7), (3, 8), (4, 9)]
steps = np.linspace(0, 1, 10)
rows = []
for a, b in pairs:
    x_a = x_test[np.flatnonzero(y_test == a)[0]]
    x_b = x_test[np.flatnonzero(y_test == b)[0]]
    mu_ab, _ = model.encode(np.stack([x_a, x_b]))
    path = (1 - steps[:, None]) * mu_ab[0] + steps[:, None] * mu_ab[1]   # (10, latent_dim)
    decoded = model.decode(path, mean=True)   # E[x|z]: the expected grey level of each pixel
    rows.append(np.concatenate([x_a[None, :], decoded, x_b[None, :]]))
image = plots.image_grid(np.concatenate(rows), IMAGE_SHAPE, ncols=len(steps) + 2, vmin=0, vmax=VMAX)
image.axes.set_title("Straight lines in latent space between two test digits (real images at the ends)")
fig = image.axes.figure
plots.save_figure(fig, course.figure_path(TUTORIAL, "interpolation.png"))
course.show(fig)

# %% [markdown]
# ## Test −ELBO against test NLL
#
# Two numbers summarise a trained VAE, in nats per test image:
#
# - the **test −ELBO**, `E_q[-log p(x|z)] + KL(q(z|x) || p(z))`, the training objective measured on
#   test images (with 100 samples of `z` for the first term). It is an *upper bound* on
#   `-log p(x)`, loose by `KL(q(z|x) || p(z|x))` (tutorial 3);
# - the **test NLL**, `-log p(x)` estimated by importance sampling with `K` samples from `q(z|x)`:
#
# $$\log p(x) \approx \log \frac{1}{K} \sum_{k=1}^{K} \frac{p(x|z_k)\, p(z_k)}{q(z_k|x)},
#   \qquad z_k \sim q(z|x).$$
#
# This is tutorial 1's naive estimator with the encoder in place of the prior: the samples now
# come from where the posterior is, so a few hundred suffice where the prior needed astronomically
# many. With `K = 1` its expectation is the ELBO; as `K` grows it rises towards `log p(x)`
# (Burda et al., 2016). `K = 512` is the number to report (`VAE.log_likelihood`).
#
# The figure shows the estimate against `K`, with the −ELBO as a dashed line: the gap between
# them is a lower bound on how much the ELBO underestimates `log p(x)`.

# %%
# The two reported numbers, computed as `minivae train` computes them (same seeds, same order), so
# that they are the numbers in its summary.json; then the estimate for smaller K.
rng_test = np.random.default_rng([REFERENCE.seed, 1])
reconstruction, rate = model.elbo_parts(x_test, n_samples=REFERENCE.elbo_samples, rng=rng_test)
test_nelbo = float(np.mean(rate - reconstruction))
test_nll = float(np.mean(-model.log_likelihood(x_test, n_samples=REFERENCE.test_samples, rng=rng_test)))
K_values = course.size([1, 4, 16, 64], [1, 2, 8])
nll = [float(-np.mean(model.log_likelihood(x_test, n_samples=K, rng=rng))) for K in K_values]
K_values, nll = K_values + [REFERENCE.test_samples], nll + [test_nll]
print(f"test -ELBO {test_nelbo:.2f} nats (distortion {-reconstruction.mean():.2f} + rate {rate.mean():.2f}, "
      f"{REFERENCE.elbo_samples} samples of z per image)")
for K, value in zip(K_values, nll):
    print(f"test NLL, K = {K:3d}: {value:.2f} nats")
print(f"test NLL (K = {K_values[-1]}) in bits per pixel: {nll[-1] / (64 * np.log(2)):.3f}")
course.claim(np.all(np.diff(nll) < 0) and test_nll < test_nelbo,
             f"the estimate falls as K grows ({', '.join(f'{v:.2f}' for v in nll)}) and stays below "
             f"the test -ELBO ({test_nelbo:.2f})")

fig = plots.plot_lines({"importance-weighted NLL estimate": (K_values, nll)},
                       xlabel="importance samples K", ylabel="nats per test image",
                       hlines={"test −ELBO": test_nelbo},
                       title="Test −ELBO against the test NLL as K grows", logx=True)
plots.save_figure(fig, course.figure_path(TUTORIAL, "elbo_vs_nll.png"))
course.show(fig)

# %% [markdown]
# ## What to take away
#
# - The reference VAE on the digits is two MLPs, a Gaussian encoder and a categorical decoder,
#   trained on the −ELBO by Adamax with Polyak averaging and early stopping on the validation
#   −ELBO, every setting read from `minivae.reference.REFERENCE`. `minivae.fit` runs it in one call;
#   `minivae train`, with its defaults, trains the same model the same way and reports the same
#   test −ELBO and test NLL as the last cell.
# - Watch the validation curve, not the training curve: the training −ELBO always improves, the
#   validation −ELBO tells when the model starts to memorise. Early stopping keeps the best epoch.
# - A trained VAE reconstructs test images well, samples digits from the prior (some blends),
#   organises its latent space by digit without labels, and interpolates smoothly between codes.
# - Report the test NLL with `K = 512` importance samples, not the −ELBO as a likelihood: the
#   −ELBO is a bound, and its gap to the NLL is the price of the approximate posterior.
#
# Next: tutorial 5 measures that gap exactly, against a model whose likelihood is known.

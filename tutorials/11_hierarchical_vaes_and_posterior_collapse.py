# %% [markdown]
# # 11. Hierarchical VAEs and posterior collapse
#
# Tutorial 7 showed latent dimensions switching off: a dimension whose posterior `q(z_j|x)` is the
# prior for every image costs no rate and carries nothing. This tutorial looks at the same effect
# from two sides. First, a VAE with *two* levels of latent variables, `z1` near the data and `z2`
# above it, where the upper level switches off most of its units, and the ELBO says why. Then the
# single-level VAE again, with the two classic cures for collapse, *KL warm-up* and *free bits*,
# watched epoch by epoch, and what they change (and cost) on 1000 training images.
#
# **What you will learn**
#
# - the ELBO of a two-level VAE, `p(z2) p(z1|z2) p(x|z1)` with `q(z1|x) q(z2|z1)`, as a distortion
#   and one rate per level;
# - why the top level is used only as far as the codes `z1` need a better prior than a Gaussian,
#   and how to measure that (active units and rate per level);
# - what warm-up (`β` from 0 to 1 over `E` epochs) and free bits (`λ` nats per dimension) do to the
#   rate, the distortion and the active units during training, and what they do to the test NLL.
#
# **Prerequisites.** Tutorial 7 (rate, distortion, active units, collapse), tutorial 6 (the
# importance-weighted NLL).
#
# **Run time.** 42 to 90 s in full, measured on a two-core machine shared with other jobs (load
# average 1.4 to 2.3; several times longer when the machine is busier), of which 8 s or more train
# the reference model of tutorial 4 (a later run reads it from its cache); three more models are
# trained with early stopping, one of them with two levels. `MINIVAE_SIZE=lab` caps their training
# at 60 epochs and the warm-up at 30 (its numbers differ from the ones quoted here); seconds with
# `MINIVAE_QUICK=1`, whose barely trained models make figures without meaning.

# %%
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

import minivae
from minivae import course, plots
from minivae.hierarchical import TwoLevelVAE
from minivae.objectives import ELBO
from minivae.reference import REFERENCE
from minivae.variants import FREE_BITS, TWO_LEVEL_LATENTS, WARMUP_EPOCHS

TUTORIAL = "11_hierarchical_vaes_and_posterior_collapse"
x_train, _ = minivae.datasets.load_digits("train")
x_val, _ = minivae.datasets.load_digits("val")
x_test, _ = minivae.datasets.load_digits("test")

HIDDEN = course.size(REFERENCE.hidden, (32,))
MAX_EPOCHS = course.size(REFERENCE.max_epochs, 2, lab=60)
NLL_SAMPLES = course.size(REFERENCE.test_samples, 16)      # K of the test NLL, 512 as in tutorial 4
ELBO_SAMPLES = course.size(REFERENCE.elbo_samples, 4)      # samples of z in a test -ELBO, rate, distortion

# %% [markdown]
# ## Two levels of latent variables
#
# A two-level VAE (`minivae.TwoLevelVAE`, after Sønderby et al. 2016 and Burda et al. 2016) draws an
# image in three steps, `z2 ~ p(z2) = N(0, I)`, `z1 ~ p(z1|z2)`, `x ~ p(x|z1)`, where `p(z1|z2)` is
# a diagonal Gaussian whose mean and log-variance come from a second decoder network. Its encoder
# goes the other way, `q(z1|x) q(z2|z1)`, both diagonal Gaussians from MLPs. The ELBO splits into a
# distortion and one rate per level:
#
# $$\text{ELBO}(x) = -\underbrace{E_q[-\log p(x|z_1)]}_{D}
#   - \underbrace{E_q[\log q(z_1|x) - \log p(z_1|z_2)]}_{R_1}
#   - \underbrace{E_{q(z_1|x)}[KL(q(z_2|z_1)\,\|\,p(z_2))]}_{R_2}.$$
#
# `R_2` is the usual KL to a standard normal, in closed form; `R_1` compares two Gaussians in `z1`
# whose second one depends on the sampled `z2`, so it is estimated at the samples.
#
# Why would the upper level be used at all? Suppose `z2` carried nothing: `q(z2|z1) = N(0, I)` for
# every `z1`, so `R_2 = 0`. Then `z2` is noise that says nothing about `z1`, and the best
# `p(z1|z2)` the second decoder can offer is one Gaussian whatever `z2` is: a single-level VAE with
# a *learned* diagonal Gaussian prior on `z1`. Every nat of `R_2` must therefore buy at least a nat
# of `R_1` by making `p(z1|z2)` a better prior for the codes of the images than one Gaussian could
# be (the top level is a learned prior, as in tutorial 9, but one with a rate of its own). A unit of
# `z2` is only paid for if the codes `z1` have structure, clusters or curved shapes, that a
# Gaussian misses.
#
# We train the two-level VAE with `z1` of 16 and `z2` of 8 dimensions (`minivae variants`'
# `two_level`, read from `minivae.variants.TWO_LEVEL_LATENTS`), the reference architecture at both
# levels, with `minivae.fit`'s defaults (the reference setting: Adamax, batch 64, early stopping
# with patience 20, weight averaging) and seed 0. Beside it stands the single-level VAE with 16
# latent dimensions trained the same way: tutorial 4's reference model, read from its cache
# (`course.reference_model()`; trained here if tutorial 4 has not run).

# %%
def test_numbers(model):
    """The test distortion D, rate R, -ELBO (ELBO_SAMPLES samples of z) and NLL (K = NLL_SAMPLES)."""
    rng = np.random.default_rng(11)
    reconstruction, rate = model.elbo_parts(x_test, n_samples=ELBO_SAMPLES, rng=rng)
    nll = -model.log_likelihood(x_test, n_samples=NLL_SAMPLES, rng=rng)
    return dict(distortion=-float(np.mean(reconstruction)), rate=float(np.mean(rate)),
                nelbo=float(np.mean(rate - reconstruction)), nll=float(np.mean(nll)))


def report(name):
    r, h = results[name], histories[name]
    print(f"{name:10s} {h.epochs} epochs (best {h.best_epoch}); test D {r['distortion']:.2f} + R {r['rate']:.2f} "
          f"= -ELBO {r['nelbo']:.2f}, NLL (K={NLL_SAMPLES}) {r['nll']:.2f}, active units "
          f"{models[name].active_units(x_test)}")


models, histories, results = {}, {}, {}
# the single-level VAE is the reference model of tutorial 4, read from its cache (or trained once)
models["standard"], histories["standard"], _ = course.reference_model()
two_level = TwoLevelVAE(64, TWO_LEVEL_LATENTS, hidden=HIDDEN, seed=0)
histories["two levels"] = minivae.fit(two_level, x_train, x_val, epochs=MAX_EPOCHS, verbose=False)
models["two levels"] = two_level
for name in models:
    results[name] = test_numbers(models[name])
    report(name)

# %% [markdown]
# ## Active units and rate per level
#
# `TwoLevelVAE.active_units` counts the active units of each level (tutorial 7's test,
# `Var_x(E[z_j|x]) > 0.01`, on the posterior means `μ1(x)` and `μ2(μ1(x))`). The rate of the upper
# level splits over its dimensions in closed form, `R_2 = Σ_j E[KL_j(q(z2_j|z1) ‖ N(0, 1))]`, which
# we average over samples `z1 ~ q(z1|x)` of the test images; `R_1` is the rest of the test rate.
# `fit` recorded the active units of both levels after every epoch (on the validation images).

# %%
L1, L2 = two_level.latent_dims
mu1, logvar1 = two_level.encode(x_test)
rng = np.random.default_rng(12)
rate2_per_dim = np.zeros(L2)
for _ in range(ELBO_SAMPLES):
    z1 = (mu1 + np.exp(0.5 * logvar1) * rng.standard_normal(mu1.shape)).astype(two_level.dtype)
    h2, _ = two_level.encoder2.forward(two_level.params, z1, two_level.backend)
    kl2, _ = two_level.prior.kl_per_dimension(h2[:, :L2].astype(np.float64), h2[:, L2:].astype(np.float64))
    rate2_per_dim += kl2.mean(axis=0) / ELBO_SAMPLES
rate2 = float(rate2_per_dim.sum())
rate1 = results["two levels"]["rate"] - rate2
active1, active2 = two_level.active_units(x_test)
print(f"two levels: R_1 = {rate1:.2f} nats, R_2 = {rate2:.2f} nats; active units {active1} of {L1} "
      f"and {active2} of {L2}")
print("rate of each z2 dimension, nats:", np.array2string(np.sort(rate2_per_dim)[::-1], precision=3))

history = histories["two levels"]
per_epoch = np.array(history.active_units)                    # (epochs, 2)
epochs = np.arange(1, len(per_epoch) + 1)
fig = Figure(figsize=(11, 3.8), layout="constrained")
left, right = fig.subplots(1, 2, width_ratios=(3, 2))
left.step(epochs, per_epoch[:, 0], where="mid", label=f"level 1 (z1, {L1} units)")
left.step(epochs, per_epoch[:, 1], where="mid", label=f"level 2 (z2, {L2} units)")
left.axvline(history.best_epoch, color="0.6", linestyle=":", label=f"best epoch ({history.best_epoch})")
left.set_ylim(-0.5, L1 + 0.5)
left.set_xlabel("epoch")
left.set_ylabel("active units (validation)")
left.set_title("Active units of each level during training")
left.legend(loc="center right")
right.bar(np.arange(1, L2 + 1), np.sort(rate2_per_dim)[::-1], color="C1")
right.set_xticks(np.arange(1, L2 + 1))
right.set_xlabel("z2 dimensions, most used first")
right.set_ylabel("rate, nats per test image")
right.set_title(f"Upper level: R₂ = {rate2:.2f} of R = {results['two levels']['rate']:.2f} nats")
plots.save_figure(fig, course.figure_path(TUTORIAL, "two_level_units.png"))
course.show(fig)

standard = results["standard"]
if course.full():
    course.claim(active1 == L1, f"every unit of the lower level is active ({active1} of {L1})")
    course.claim(active2 <= L2 // 2,
                 f"the upper level keeps at most half of its units active ({active2} of {L2})")
    course.claim(np.sum(rate2_per_dim > 0.05) < active2,
                 f"fewer still carry more than a twentieth of a nat ({np.sum(rate2_per_dim > 0.05)})")
    course.claim(rate2 < 0.1 * rate1,
                 f"the upper level's rate is less than a tenth of the lower level's ({rate2:.2f} against "
                 f"{rate1:.2f} nats)")
    first_active = int(np.argmax(per_epoch[:, 1] > 0)) + 1 if np.any(per_epoch[:, 1] > 0) else None
    course.claim(first_active is not None and first_active > 20,
                 f"no unit of the upper level is active in the first 20 epochs (the first one switches on at "
                 f"epoch {first_active}, and at most {per_epoch[:, 1].max()} are active at once)")
    course.claim(0.3 < results["two levels"]["nll"] - standard["nll"] < 2.5,
                 f"the two-level VAE's test NLL is worse than the single-level one's by about a nat "
                 f"({results['two levels']['nll']:.2f} against {standard['nll']:.2f})")

# %% [markdown]
# The figure and the numbers printed above say:
#
# - Every one of the 16 units of `z1` is active, as in the single-level VAE: the lower level does
#   the work of a code.
# - The upper level switches most of its 8 units off. For more than the first 20 epochs none of
#   them is active at all: while the codes `z1` are still rough, one Gaussian is as good a prior for
#   them as anything, and `z2` would only cost rate. Then a few units switch on, as the codes
#   settle into a shape one Gaussian describes less well, and some of them switch off again later;
#   at the end no more than half are active on the test images, and fewer still carry more than a
#   twentieth of a nat (the bars).
# - The upper level's rate is less than a tenth of the lower level's: the codes of 1000 images need
#   little more than a Gaussian prior.
# - The test NLL is worse than the single-level VAE's, by about a nat. On these data the second
#   level is a more expensive way to learn a prior for `z1`, and it does not pay for itself.
#   Hierarchies earn their keep on larger images and data sets, where the codes have more
#   structure than a Gaussian can hold (Sønderby et al. 2016; Vahdat & Kautz 2020).
#
# ## Posterior collapse in one level, and two cures
#
# Collapse starts early. At the first epochs the decoder is poor, so a nat of rate buys little
# distortion, and the KL term pulls `q(z_j|x)` towards the prior; a dimension that has reached the
# prior gets little gradient from the decoder to pull it back (the decoder learns to ignore a
# dimension that is noise), and it may stay there for good. The two classic cures act exactly there:
#
# - **KL warm-up** (Bowman et al. 2016; Sønderby et al. 2016): train on `D + β_e R` with the weight
#   rising linearly from 0 at the first epoch to 1 at epoch `E + 1`,
#   `β_e = min(1, (e − 1)/E)`, so that the code is learned before the rate is charged in full
#   (`ELBO(warmup=E)`);
# - **free bits** (Kingma et al. 2016): charge each dimension's rate, averaged over the minibatch,
#   only above a floor of `λ` nats, `D + Σ_j max(λ, R̄_j)`: below the floor a dimension gets no
#   gradient from the KL, so nothing pushes it to the prior (`ELBO(free_bits=λ)`).
#
# Both change the loss, not the model: every number below is the true ELBO's, `β = 1` and no floor.
# We use the settings of `minivae variants`, `E = 50` epochs and `λ = 0.25` nats (read from
# `minivae.variants`), and train two more single-level VAEs of the same seed. The patience of early
# stopping counts from the first epoch, as for the standard VAE.

# %%
WARMUP = course.size(WARMUP_EPOCHS, 1, lab=min(WARMUP_EPOCHS, 30))
if course.full():
    course.claim((WARMUP, FREE_BITS, tuple(TWO_LEVEL_LATENTS)) == (50, 0.25, (16, 8)),
                 f"minivae.variants sets E = {WARMUP} epochs, λ = {FREE_BITS} nats and the levels "
                 f"{tuple(TWO_LEVEL_LATENTS)}, the numbers this tutorial's prose quotes")
cures = {"warm-up": ELBO(warmup=WARMUP), "free bits": ELBO(free_bits=FREE_BITS)}
for name, objective in cures.items():
    model = minivae.VAE(64, REFERENCE.latent_dim, hidden=HIDDEN, seed=0)
    histories[name] = minivae.fit(model, x_train, x_val, objective=objective, epochs=MAX_EPOCHS, verbose=False)
    models[name], results[name] = model, test_numbers(model)
    report(name)

# %% [markdown]
# ## Epoch by epoch
#
# `fit` records, after every epoch, the mean rate and distortion of the training minibatches (the
# true ones, whatever the loss weighted) and the active units on the validation images. The
# figure draws them for the three single-level models, with the end of the warm-up dashed and each
# model's best epoch, the one it keeps, marked by a dot. The last panel is the outcome: the test
# rate of each latent dimension, `KL_j = ½ (μ_j² + σ_j² − 1 − log σ_j²)` averaged over the test
# images, sorted from the most to the least used.

# %%
single = ("standard", "warm-up", "free bits")
colors = dict(zip(single, ("C0", "C1", "C2")))
rate_per_dim = {}
for name in single:
    mu, logvar = (a.astype(np.float64) for a in models[name].encode(x_test))
    rate_per_dim[name] = np.sort(models[name].prior.kl_per_dimension(mu, logvar)[0].mean(axis=0))[::-1]

fig = Figure(figsize=(11, 7.5), layout="constrained")
axes = fig.subplots(2, 2)
panels = (("train_rate", "rate R, nats (training batches)"),
          ("train_distortion", "distortion D, nats (training batches)"),
          ("active_units", "active units (validation)"))
for ax, (field, label) in zip(axes.flat, panels):
    for name in single:
        h = histories[name]
        values = np.asarray(getattr(h, field), dtype=float)
        ax.plot(np.arange(1, len(values) + 1), values, color=colors[name], label=name)
        ax.plot(h.best_epoch, values[h.best_epoch - 1], "o", color=colors[name])
    ax.axvline(WARMUP + 1, color="C1", linestyle="--", linewidth=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
axes[0, 0].set_yscale("log")  # the warm-up starts at ~100 nats, the standard VAE dips below 1
axes[0, 0].yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # ticks 0.2, 0.5, 1, 2, 5, ...
axes[0, 0].yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
axes[0, 0].yaxis.set_minor_formatter(NullFormatter())
axes[0, 0].set_title("The rate: what the code carries")
axes[0, 1].set_title("The distortion: what it costs to reconstruct")
axes[1, 0].set_title("Active units")
axes[1, 0].set_ylim(-0.5, REFERENCE.latent_dim + 0.5)
# the distortion falls from ~150 nats at the first epoch: show the part where the models differ
late = [v for name in single for v in histories[name].train_distortion[5:]]
if late:
    axes[0, 1].set_ylim(min(late) - 2, max(late) + 2)
axes[0, 0].legend(title=f"(dashed: end of warm-up, epoch {WARMUP + 1})")
right = axes[1, 1]
dims = np.arange(1, REFERENCE.latent_dim + 1)
for offset, name in zip((-0.27, 0, 0.27), single):
    right.bar(dims + offset, rate_per_dim[name], width=0.27, color=colors[name], label=name)
right.axhline(FREE_BITS, color="C2", linestyle=":", linewidth=1, label=f"λ = {FREE_BITS} nats")
right.set_xlabel("latent dimensions, most used first")
right.set_ylabel("rate, nats per test image")
right.set_title("Rate of each dimension at the end")
right.legend()
plots.save_figure(fig, course.figure_path(TUTORIAL, "collapse_and_cures.png"))
course.show(fig)

print(f"{'':10s} {'test D':>8s} {'test R':>8s} {'-ELBO':>8s} {'NLL':>8s}  dims under 0.1 nats")
for name in single:
    r = results[name]
    print(f"{name:10s} {r['distortion']:8.2f} {r['rate']:8.2f} {r['nelbo']:8.2f} {r['nll']:8.2f}  "
          f"{int(np.sum(rate_per_dim[name] < 0.1))}")

std, warm, free = (results[name] for name in single)
h_std, h_warm, h_free = (histories[name] for name in single)
if course.full():
    course.claim(min(h_std.train_rate[:30]) < 1.0,
                 f"in its first 30 epochs the standard VAE's rate falls below 1 nat "
                 f"(to {min(h_std.train_rate[:30]):.2f} nats)")
    course.claim(h_std.train_distortion[14] > h_free.train_distortion[14] + 5 > h_warm.train_distortion[14] + 5,
                 f"at epoch 15 its distortion is more than 5 nats above both cures', and the warm-up's is "
                 f"the lowest "
                 f"({h_std.train_distortion[14]:.1f} against {h_warm.train_distortion[14]:.1f} with warm-up and "
                 f"{h_free.train_distortion[14]:.1f} with free bits)")
    course.claim(min(h_free.train_rate) > min(h_std.train_rate),
                 f"the free-bits model's rate never falls as low as the standard VAE's (at least "
                 f"{min(h_free.train_rate):.2f} against {min(h_std.train_rate):.2f} nats)")
    course.claim(min(h_std.active_units) >= REFERENCE.latent_dim - 2,
                 f"meanwhile its active-unit count hardly moves (never below {min(h_std.active_units)} of "
                 f"{REFERENCE.latent_dim})")
    course.claim(h_warm.train_rate[0] > 50,
                 f"with the KL's weight at 0, the warm-up's first epoch has a rate above 50 nats "
                 f"({h_warm.train_rate[0]:.0f})")
    course.claim(np.sum(rate_per_dim["standard"] < 0.1) >= 3
                 and all(np.sum(rate_per_dim[name] < 0.1) == 0 for name in ("warm-up", "free bits")),
                 f"at the end the standard VAE leaves {np.sum(rate_per_dim['standard'] < 0.1)} dimensions under a "
                 f"tenth of a nat; both cures leave none")
    course.claim(min(warm["rate"], free["rate"]) > std["rate"] + 0.5,
                 f"both cures end with a test rate more than half a nat higher ({warm['rate']:.2f} and "
                 f"{free['rate']:.2f} against {std['rate']:.2f} nats)")
    course.claim(min(warm["nelbo"], free["nelbo"]) > std["nelbo"] + 0.5,
                 f"both cures end with a test -ELBO more than half a nat worse ({warm['nelbo']:.2f} and "
                 f"{free['nelbo']:.2f} against {std['nelbo']:.2f})")
    course.claim(max(r["nll"] for r in (std, warm, free)) - min(r["nll"] for r in (std, warm, free)) < 0.5,
                 f"the three test NLLs lie within half a nat ({std['nll']:.2f}, {warm['nll']:.2f}, "
                 f"{free['nll']:.2f})")
    course.claim(min(warm["nelbo"] - warm["nll"], free["nelbo"] - free["nll"]) > std["nelbo"] - std["nll"],
                 f"the gap between -ELBO and NLL is larger with both cures ({warm['nelbo'] - warm['nll']:.2f} and "
                 f"{free['nelbo'] - free['nll']:.2f} against {std['nelbo'] - std['nll']:.2f} nats)")
    course.claim(max(h_warm.best_epoch, h_free.best_epoch) < h_std.best_epoch,
                 f"both cures reach their best epoch sooner (epochs {h_warm.best_epoch} and {h_free.best_epoch} "
                 f"against {h_std.best_epoch})")

# %% [markdown]
# What the curves show, from the start:
#
# - **The standard VAE collapses, then recovers.** In its first epochs its rate falls below a nat,
#   nearly the prior for every image, and its distortion stalls: the decoder is learning the
#   average image and ignores the code. Only later does the rate climb back, and with it the
#   distortion falls. With a decoder that models each pixel on its own, as here,
#   the code is too useful to be given up for good; with a decoder that can model the image without
#   it (an autoregressive one, or a text model, where Bowman et al. met the problem) collapse stays.
#   The active-unit count hardly moves through all this: a dimension whose mean wiggles a little
#   passes its test while it carries nothing worth having (tutorial 7 warned about that).
# - **Warm-up** lets the rate run free at first (with the KL's weight at 0 the first epoch's rate is
#   over 50 nats), then charges it more and more: the code is learned first, and the distortion
#   falls fastest of the three.
# - **Free bits** never lets the rate fall as low; its distortion falls sooner than the standard
#   VAE's, if not as fast as the warm-up's.
# - **At the end** the standard VAE has left a few dimensions under a tenth of a nat (the last
#   bars); both cures use all sixteen.
#
# And what they cost, on the test images (the table above): both cures end with more rate, about a
# nat or two, and a *worse* test −ELBO, by about a nat: the extra information in the code is not
# bought back in distortion. Yet the test NLLs of the three models lie within half a nat of each
# other: the cures change how the model uses its code, and how loose its bound is (the gap between
# the −ELBO and the NLL grows), not how well it models the digits. Both reach their best epoch
# sooner, which is a saving in training time. On 1000 training images, then, neither cure beats
# the standard VAE in likelihood, and that is not a bug: the collapse they cure is temporary here,
# and the dimensions the standard VAE leaves nearly empty are ones the ELBO found not worth their
# rate. Warm-up and free bits matter where collapse is permanent; here they show what they do.

# %% [markdown]
# ## What to take away
#
# - A two-level VAE has one rate per level, and its upper level is a learned prior for the lower
#   one: a unit of `z2` is paid for only if the codes `z1` need a better prior than a Gaussian. On
#   the digits few do; most of `z2` switches off, and the second level does not improve the NLL.
# - Count active units per level, but read the rates too: a unit can pass the active-unit test
#   while carrying almost nothing, and the count can miss a collapse that the rate shows plainly.
# - Posterior collapse is a training dynamic: early on, the code costs more than the young decoder
#   can use. KL warm-up (`ELBO(warmup=E)`) and free bits (`ELBO(free_bits=λ)`) keep the code alive
#   through that phase; both change the loss, so judge them with the true ELBO and the NLL.
# - On small data with a decoder that needs its code, the cures buy a busier code and a looser
#   bound, not a better likelihood. That is a result, not a failure: measure before you cure.

# %% [markdown]
# # 12. Out-of-distribution inputs: does the model know what it does not know?
#
# A VAE estimates `log p(x)`. It is tempting to use that number as a detector: an input the model
# finds unlikely must be unlike its training data. Nalisnick et al. (2019), "Do deep generative
# models know what they don't know?", found that this can fail badly: flows, VAEs and PixelCNNs
# trained on FashionMNIST gave *higher* likelihood to MNIST digits they had never seen, and models
# trained on CIFAR-10 preferred the house numbers of SVHN. Their analysis, and later work (Serrà et
# al. 2020, "Input complexity and out-of-distribution detection"), point at low-level statistics:
# the likelihood of an image depends much on how plain it is (how many pixels are background, how
# smooth it is), and simple images can be more likely under a model than the typical images it was
# trained on.
#
# This tutorial asks the question of minivae's models on the digits. It builds inputs that are not
# digits, or not the digits the model was trained on, and looks at where the importance-weighted
# NLL ranks them against the test digits, for three priors, and at what the ELBO's two parts, the
# rate and the distortion, say on their own.
#
# **What you will learn**
#
# - how to build out-of-distribution (OOD) test sets from a data set: inverted images, shuffled
#   pixels, constant images, noise, and a class held out of training;
# - the AUROC of a score, computed from ranks with NumPy alone, and what 0.5, 1 and below 0.5 mean;
# - where the NLL succeeds and where it struggles as a detector, whether a learned prior changes
#   that, and why the rate and the distortion can disagree.
#
# **Prerequisites.** Tutorial 6 (the importance-weighted NLL), tutorial 7 (rate and distortion),
# tutorial 9 (the mixture and the VampPrior).
#
# **Run time.** 43 to 58 s in full, measured on a two-core machine shared with other jobs (load
# average 1.7 to 2.1; several times longer when the machine is busier): three models of hidden width 128
# trained with early stopping, then importance sampling on about 1700 images each.
# `MINIVAE_SIZE=lab` caps training at 60 epochs; seconds with `MINIVAE_QUICK=1`, whose barely
# trained models make figures without meaning.

# %%
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

import minivae
from minivae import course, plots
from minivae.priors import MixtureOfGaussians, StandardNormal, VampPrior
from minivae.reference import REFERENCE

TUTORIAL = "12_out_of_distribution_inputs"
IMAGE_SHAPE = minivae.datasets.DIGITS_IMAGE_SHAPE
VMAX = 16  # the digits' pixels take the values 0..16

x_train, y_train = minivae.datasets.load_digits("train")
x_val, y_val = minivae.datasets.load_digits("val")
x_test, y_test = minivae.datasets.load_digits("test")

# %% [markdown]
# ## The sets
#
# One class is held out of training altogether: the models are trained on the digits other than 7
# (the choice is arbitrary; change `HELD_OUT` to try another class, though the claims checked below
# are about the 7s). The *in-distribution* test set is
# the test digits of the nine other classes. From them we build the OOD sets:
#
# - **held-out 7s**: the test images of the class no model saw, real digits but a new shape;
# - **inverted**: `16 − x`: the ink becomes background and the background ink;
# - **shuffled**: the 64 pixels of each image put in one fixed random order: the same values, the
#   same histogram of each image, no shape;
# - **constant**: the 17 images whose pixels all take one value `c = 0, 1, …, 16`; `c = 0` is the
#   blank image;
# - **noise**: every pixel uniform on 0..16, independently.
#
# The first is the hard, realistic case; the others are easy for a person to spot.

# %%
HELD_OUT = 7
rng = np.random.default_rng(12)
keep_train, keep_val, keep_test = y_train != HELD_OUT, y_val != HELD_OUT, y_test != HELD_OUT
x_fit, x_stop = x_train[keep_train], x_val[keep_val]
x_in = x_test[keep_test]
permutation = rng.permutation(64)
sets = {
    "test digits": x_in,
    f"held-out {HELD_OUT}s": x_test[~keep_test],
    "inverted": VMAX - x_in,
    "shuffled": x_in[:, permutation],
    "constant": np.repeat(np.arange(VMAX + 1)[:, None], 64, axis=1),
    "noise": rng.integers(0, VMAX + 1, size=x_in.shape),
}
for name, x in sets.items():
    print(f"{name:14s} {len(x):4d} images")


def plain_log_axis(axis):
    """A logarithmic axis with ticks at 1, 2 and 5 times the powers of ten, labelled 100, 200, 500."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())

print(f"training on {len(x_fit)} images (validation {len(x_stop)}), no {HELD_OUT}s")

fig = Figure(figsize=(8, 6.2), layout="constrained")
axes = fig.subplots(len(sets), 1)
for ax, (name, x) in zip(axes, sets.items()):
    shown = x[np.linspace(0, len(x) - 1, 10).astype(int)]  # ten images spread over the set
    plots.image_grid(shown, IMAGE_SHAPE, ncols=10, ax=ax, vmin=0, vmax=VMAX)
    ax.set_title(name, fontsize="medium")
fig.suptitle("The test digits and five out-of-distribution sets")
plots.save_figure(fig, course.figure_path(TUTORIAL, "sets.png"))
course.show(fig)

# %% [markdown]
# ## Three priors
#
# The three priors of tutorial 9, now with the reference latent size of 16: `N(0, I)`, a mixture of
# 16 Gaussians and a VampPrior with 50 pseudo-inputs (started at training images), as in
# `minivae variants`. To keep the tutorial to a few minutes the networks are narrower than the
# reference, two hidden layers of 128 units (`hidden=(128, 128)`); everything else is
# `minivae.fit`'s reference setting, with early stopping on the validation digits (no 7s either).

# %%
HIDDEN = course.size((128, 128), (32,))
MAX_EPOCHS = course.size(REFERENCE.max_epochs, 2, lab=60)
NLL_SAMPLES = course.size(256, 8)      # K of the importance-weighted NLL
PART_SAMPLES = course.size(20, 2)      # samples of z for the -ELBO, rate and distortion

priors = {"N(0, I)": StandardNormal(), "mixture of 16": MixtureOfGaussians(16),
          "VampPrior, 50": VampPrior(50, data=x_fit)}
models = {}
for name, prior in priors.items():
    model = minivae.VAE(64, REFERENCE.latent_dim, hidden=HIDDEN, prior=prior, seed=0)
    history = minivae.fit(model, x_fit, x_stop, epochs=MAX_EPOCHS, verbose=False)
    models[name] = model
    print(f"{name:14s} trained {history.epochs} epochs (best {history.best_epoch}) in {history.seconds:.0f} s")

# %% [markdown]
# ## Scores for every image
#
# For every image of every set, and every model: the NLL `−log p̂_K(x)` with `K = 256` importance
# samples, and the two parts of the ELBO, the distortion `D = E_q[−log p(x|z)]` and the rate
# `R = E_q[log q(z|x) − log p(z)]` (Monte Carlo, for all three priors alike), so that
# `−ELBO = D + R`. A high score should mean "out of distribution".
#
# The NLL of an input the encoder has never seen deserves a word of caution: `−log p̂_K` is an upper
# bound on `−log p(x)` in expectation, tight only if `q(z|x)` is a good proposal, and for a strange
# input it may not be. What a detector can use, though, is exactly this number.

# %%
scores = {}
for name, model in models.items():
    scores[name] = {}
    for set_name, x in sets.items():
        evaluation = np.random.default_rng(13)
        nll = -model.log_likelihood(x, n_samples=NLL_SAMPLES, rng=evaluation)
        reconstruction, rate = model.elbo_parts(x, n_samples=PART_SAMPLES, rng=evaluation, kl="monte_carlo")
        scores[name][set_name] = {"NLL": nll, "-ELBO": rate - reconstruction, "distortion": -reconstruction,
                                  "rate": rate}

# %% [markdown]
# ## The AUROC, from ranks
#
# How well does a score separate an OOD set from the test digits? Take the detector "OOD if the
# score exceeds `t`" and move `t`: the ROC curve traces its true positive rate against its false
# positive rate, and the area under it, the AUROC, is the probability that a random OOD image
# scores higher than a random test digit (ties count half). 1 is a perfect detector, 0.5 a coin,
# and *below 0.5* the score points the wrong way: the OOD images look *more* typical than the
# data.
#
# No ROC curve is needed to compute it. Rank all `n_in + n_out` scores together (ties get the mean
# of their ranks); the OOD images' ranks sum to `U + n_out (n_out + 1) / 2`, where `U` counts the
# pairs (test digit, OOD image) in which the OOD image scores higher (the Mann–Whitney statistic),
# so `AUROC = U / (n_in n_out)`. This is what `sklearn.metrics.roc_auc_score` computes; here it is in
# NumPy, checked against the count over all pairs.

# %%
def ranks(values):
    """The ranks 1..n of values (n,), ties given the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ranked = np.empty(len(values))
    ranked[order] = np.arange(1, len(values) + 1)
    _, group, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.bincount(group, weights=ranked) / counts)[group]


def auroc(score_in, score_out):
    """P(score_out > score_in) + ½ P(equal) over all pairs, from the ranks (the Mann–Whitney U)."""
    n_in, n_out = len(score_in), len(score_out)
    ranked = ranks(np.concatenate([score_in, score_out]))
    return (ranked[n_in:].sum() - n_out * (n_out + 1) / 2) / (n_in * n_out)


def auroc_by_pairs(score_in, score_out):
    """The same, by comparing every pair: O(n_in · n_out) memory, the definition."""
    difference = score_out[:, None] - score_in[None, :]
    return np.mean(difference > 0) + 0.5 * np.mean(difference == 0)


check = scores["N(0, I)"]
for set_name in sets:
    a, b = check["test digits"]["NLL"], check[set_name]["NLL"]
    assert abs(auroc(a, b) - auroc_by_pairs(a, b)) < 1e-12, set_name
assert auroc(np.array([1.0, 2.0]), np.array([2.0, 3.0])) == 0.875  # 3 pairs higher, 1 tie of 4

ood_sets = [name for name in sets if name != "test digits"]
measures = ("NLL", "-ELBO", "distortion", "rate")
table = {(prior, set_name, measure): auroc(scores[prior]["test digits"][measure], scores[prior][set_name][measure])
         for prior in models for set_name in ood_sets for measure in measures}
for prior in models:
    print(f"\n{prior}: mean per set, and the AUROC of each score against the test digits")
    print(f"{'':14s} {'NLL':>8s} {'-ELBO':>8s} {'D':>8s} {'R':>7s}   AUROC: "
          f"{'NLL':>6s} {'-ELBO':>6s} {'D':>6s} {'R':>6s}")
    for set_name in sets:
        s = scores[prior][set_name]
        line = (f"{set_name:14s} {np.mean(s['NLL']):8.2f} {np.mean(s['-ELBO']):8.2f} "
                f"{np.mean(s['distortion']):8.2f} {np.mean(s['rate']):7.2f}   ")
        if set_name != "test digits":
            line += "       " + " ".join(f"{table[prior, set_name, m]:6.3f}" for m in measures)
        print(line)

# %% [markdown]
# ## Where the NLL puts each set
#
# The histograms show, for each prior, the NLL of every image of every set (as shares, each set's
# bars adding up to 1, so that sets of different sizes compare; on a logarithmic axis, because the
# sets lie tens to hundreds of nats apart). The blank image is marked on its own. The AUROC of the
# NLL is in the legend.

# %%
BLANK = 0  # the row of the blank image in sets["constant"]
all_nll = np.concatenate([scores[p][s]["NLL"] for p in models for s in sets])
bins = np.geomspace(all_nll.min() * 0.95, all_nll.max() * 1.05, 60)
fig = Figure(figsize=(12, 4.2), layout="constrained")
axes = fig.subplots(1, len(models), sharey=True)
for ax, prior in zip(axes, models):
    for color, set_name in zip(("k", "C0", "C1", "C2", "C3", "C4"), sets):
        label = set_name if set_name == "test digits" else f"{set_name} ({table[prior, set_name, 'NLL']:.2f})"
        values = scores[prior][set_name]["NLL"]
        ax.hist(values, bins=bins, weights=np.full(len(values), 1 / len(values)), histtype="step", color=color,
                linewidth=2 if set_name == "test digits" else 1.2, label=label)
    ax.axvline(scores[prior]["constant"]["NLL"][BLANK], color="C3", linestyle=":", label="the blank image")
    ax.set_xscale("log")
    plain_log_axis(ax.xaxis)
    ax.set_xlabel("NLL, nats per image")
    ax.set_title(f"prior: {prior}")
    ax.legend(fontsize="small", title="set (AUROC of the NLL)", title_fontsize="small")
axes[0].set_ylabel("share of the set")
fig.suptitle(f"The NLL (K = {NLL_SAMPLES}) of the test digits and of the out-of-distribution sets")
plots.save_figure(fig, course.figure_path(TUTORIAL, "nll_histograms.png"))
course.show(fig)

standard = scores["N(0, I)"]
blank = {prior: float(scores[prior]["constant"]["NLL"][BLANK]) for prior in models}
held = f"held-out {HELD_OUT}s"
for prior in models:
    print(f"{prior:14s} the blank image: NLL {blank[prior]:.1f}; test digits less likely than it: "
          f"{np.mean(scores[prior]['test digits']['NLL'] > blank[prior]):.1%}; held-out {HELD_OUT}s less likely: "
          f"{np.mean(scores[prior][held]['NLL'] > blank[prior]):.1%}")
if course.full():
    easy = [(p, s) for p in models for s in ("inverted", "shuffled", "noise")]
    distance = min(np.mean(scores[p][s]["NLL"]) - np.mean(scores[p]["test digits"]["NLL"]) for p, s in easy)
    course.claim(distance > 80, f"inverted, shuffled and noise images lie at least 80 nats above the test digits "
                                f"on average, under every prior (the closest {distance:.1f} nats)")
    course.claim(min(table[p, s, "NLL"] for p, s in easy) > 0.99,
                 f"inverted, shuffled and noise images are told apart almost perfectly by the NLL under "
                 f"every prior (AUROC above 0.99, the lowest {min(table[p, s, 'NLL'] for p, s in easy):.3f})")
    course.claim(all(0.75 < table[p, held, "NLL"] < 0.98 for p in models),
                 f"the held-out {HELD_OUT}s are the hardest set: AUROC between 0.75 and 0.98 for every prior ("
                 + ", ".join(f"{table[p, held, 'NLL']:.2f}" for p in models) + ")")
    spread = max(max(table[p, s, "NLL"] for p in models) - min(table[p, s, "NLL"] for p in models)
                 for s in ood_sets)
    course.claim(spread < 0.1, f"the prior changes no set's AUROC by as much as 0.1 (largest spread {spread:.3f})")
    course.claim(all(np.mean(scores[p]["constant"]["NLL"]) > np.mean(scores[p]["test digits"]["NLL"]) + 50
                     for p in models),
                 "on average the constant images get a far lower likelihood than the test digits (mean NLL more "
                 "than 50 nats higher under every prior)")
    zero_share = float(np.mean(x_fit == 0))
    course.claim(0.4 < zero_share < 0.6 and np.argmax(np.bincount(x_fit.ravel())) == 0,
                 f"0 is by far the most common pixel value of the training digits, about half of them "
                 f"({zero_share:.1%})")
    course.claim(all(blank[p] == scores[p]["constant"]["NLL"].min() for p in models),
                 "of the constant images, the blank one is the most likely under every prior")
    below = {p: float(np.mean(scores[p]["test digits"]["NLL"] > blank[p])) for p in models}
    for p, (low, high), share in (("N(0, I)", (0.1, 0.3), "a fifth"),
                                  ("mixture of 16", (0.3, 0.55), "two fifths")):
        course.claim(low < below[p] < high and blank[p] < np.median(scores[p][held]["NLL"]),
                     f"under {p} the blank image is more likely than most held-out {HELD_OUT}s (NLL "
                     f"{blank[p]:.1f}; the 7s' median {np.median(scores[p][held]['NLL']):.1f}) and than about "
                     f"{share} of the test digits ({below[p]:.1%})")
    p = "VampPrior, 50"
    course.claim(blank[p] > np.max(scores[p]["test digits"]["NLL"]) and blank[p] > np.max(scores[p][held]["NLL"]),
                 f"under the VampPrior the blank image is less likely than every test digit and every held-out "
                 f"{HELD_OUT} (NLL {blank[p]:.1f})")

# %% [markdown]
# What the histograms and the numbers printed above say:
#
# - **The easy sets are easy.** Inverted, shuffled and noise images lie at least 80 nats above the
#   test digits on average, under every prior, and the NLL separates them perfectly (AUROC 1.00 to
#   two decimals). A categorical decoder that has learned, pixel by pixel, that the border of a digit is
#   blank and its strokes are bright gives an image with ink in the wrong places a tiny probability.
# - **The held-out 7s are the hard set**: real handwriting, a shape no model saw. Their NLLs overlap
#   the upper tail of the test digits', and the AUROC is only between 0.75 and 0.98: a threshold
#   that flags most 7s flags many ordinary digits with them.
# - **The constant images** are, on average, far less likely than the digits. But not all of them:
#   the blank image is by far the most likely of the 17, and under `N(0, I)` and the mixture it is
#   more likely than most of the held-out 7s, and than a fifth (`N(0, I)`) or two fifths (the
#   mixture) of the test digits themselves. That is the effect of
#   Nalisnick et al. in miniature: an image with nothing in it is simple, all its 64 pixels take the
#   value 0, by far the most common value of a digit's pixels (about half of them), and the
#   likelihood rewards that. Under the
#   VampPrior, though, the blank image is less likely than every test digit; the next section shows
#   why.
# - **The prior hardly changes the ranking**: for every set the AUROCs of the three models differ
#   by less than 0.1.

# %% [markdown]
# ## What the rate and the distortion say separately
#
# The `−ELBO = D + R` is the NLL's looser neighbour (a few nats above it on the digits), and both of
# its parts can be used on their own as scores. The
# distortion asks "can the decoder rebuild this image from its code?", the rate "how far is this
# image's code from what the prior expects?". The left panel places every image of every set in the
# rate–distortion plane of the `N(0, I)` model; the right one plots the NLL of each test digit and
# held-out 7 against its number of inked pixels (pixels above 0), with the blank image at 0.

# %%
ink = {set_name: np.sum(sets[set_name] > 0, axis=1) for set_name in sets}
fig = Figure(figsize=(11, 4.4), layout="constrained")
left, right = fig.subplots(1, 2)
for color, set_name in zip(("k", "C0", "C1", "C2", "C3", "C4"), sets):
    s = standard[set_name]
    left.scatter(s["rate"], s["distortion"], s=18 if set_name == "constant" else 6, color=color, alpha=0.5,
                 label=set_name)
left.set_xscale("log")
left.set_yscale("log")
plain_log_axis(left.xaxis)
plain_log_axis(left.yaxis)
left.set_xlabel("rate R, nats")
left.set_ylabel("distortion D, nats")
left.set_title("Prior N(0, I): each image in the rate–distortion plane")
left.legend(fontsize="small", markerscale=2)
for color, set_name in (("k", "test digits"), ("C0", held)):
    right.scatter(ink[set_name], standard[set_name]["NLL"], s=8, color=color, alpha=0.6, label=set_name)
right.scatter([0], [blank["N(0, I)"]], s=40, color="C3", marker="*", label="the blank image")
right.set_xlabel("inked pixels (of 64)")
right.set_ylabel("NLL, nats")
right.set_title("Prior N(0, I): more ink, more nats (loosely)")
right.legend(fontsize="small")
plots.save_figure(fig, course.figure_path(TUTORIAL, "rate_distortion_and_ink.png"))
course.show(fig)

ink_correlation = float(np.corrcoef(ink["test digits"], standard["test digits"]["NLL"])[0, 1])
print(f"correlation of the NLL with the inked pixels over the test digits: {ink_correlation:.2f}")
for prior in models:
    print(f"{prior:14s} AUROC of the rate alone: "
          + ", ".join(f"{s} {table[prior, s, 'rate']:.2f}" for s in ood_sets))
gap = {(p, set_name): float(np.mean(scores[p][set_name]["-ELBO"] - scores[p][set_name]["NLL"]))
       for p in models for set_name in sets}
for p in models:
    print(f"{p:14s} mean gap -ELBO - NLL: " + ", ".join(f"{set_name} {gap[p, set_name]:.1f}" for set_name in sets))
synthetic = ("inverted", "shuffled", "constant", "noise")
for p in models:
    print(f"{p:14s} the blank image: rate {scores[p]['constant']['rate'][BLANK]:.2f} nats, distortion "
          f"{scores[p]['constant']['distortion'][BLANK]:.1f} nats")
if course.full():
    course.claim(all(table[p, held, "distortion"] > 0.8
                     and abs(table[p, held, "distortion"] - table[p, held, "NLL"]) < 0.05 for p in models),
                 f"the distortion alone detects the held-out {HELD_OUT}s about as well as the NLL (AUROC "
                 + ", ".join(f"{table[p, held, 'distortion']:.2f} against {table[p, held, 'NLL']:.2f}"
                             for p in models) + ")")
    d_distance = min(np.mean(scores[p][s]["distortion"]) - np.mean(scores[p]["test digits"]["distortion"])
                     for p in models for s in synthetic)
    course.claim(d_distance > 80, f"the synthetic sets' mean distortion lies at least 80 nats above the test "
                                  f"digits' under every prior (the closest {d_distance:.1f} nats)")
    course.claim(table["N(0, I)", held, "rate"] < 0.5,
                 f"under N(0, I) the rate points the wrong way for the held-out {HELD_OUT}s (AUROC "
                 f"{table['N(0, I)', held, 'rate']:.2f})")
    course.claim(standard["constant"]["rate"][BLANK] < 1.0,
                 f"under N(0, I) the blank image's code costs less than a nat "
                 f"({standard['constant']['rate'][BLANK]:.2f})")
    course.claim(table["VampPrior, 50", "constant", "rate"] > 0.95
                 and all(table[p, "constant", "rate"] < 0.85 for p in ("N(0, I)", "mixture of 16")),
                 f"the VampPrior's rate alone detects the constant images (AUROC above 0.95: "
                 f"{table['VampPrior, 50', 'constant', 'rate']:.3f}); the rate of the other two priors does not "
                 f"(below 0.85: " + ", ".join(f"{table[p, 'constant', 'rate']:.2f}" for p in ("N(0, I)", "mixture of 16"))
                 + ")")
    course.claim(all(0 < gap[p, "test digits"] < 5 for p in models),
                 "on the test digits the -ELBO lies a few nats above the NLL (" + ", ".join(
                     f"{gap[p, 'test digits']:.1f}" for p in models) + " nats)")
    blank_rate = {p: float(scores[p]["constant"]["rate"][BLANK]) for p in models}
    blank_distortion = {p: float(scores[p]["constant"]["distortion"][BLANK]) for p in models}
    course.claim(blank_rate["VampPrior, 50"] > 20 and blank_rate["N(0, I)"] < 1
                 and abs(blank_distortion["VampPrior, 50"] - blank_distortion["N(0, I)"]) < 15,
                 f"the blank image's code costs more than 20 nats under the VampPrior against less than one under "
                 f"N(0, I) ({blank_rate['VampPrior, 50']:.2f} against {blank_rate['N(0, I)']:.2f}), while the two "
                 f"distortions differ by less than 15 nats ({blank_distortion['VampPrior, 50']:.1f} and "
                 f"{blank_distortion['N(0, I)']:.1f})")
    course.claim(all(gap[p, s] > 5 * gap[p, "test digits"] for p in models for s in synthetic),
                 "the gap -ELBO - NLL is more than five times larger on every synthetic set than on the test "
                 "digits, "
                 "under every prior")
    course.claim(min(table[p, s, "-ELBO"] - table[p, s, "NLL"] for p in models for s in ood_sets) > -0.02,
                 "the -ELBO detects every set as well as the NLL (its AUROC never more than 0.02 lower)")
    course.claim(0.3 < ink_correlation < 0.7,
                 f"over the test digits the NLL grows with the number of inked pixels, loosely (correlation "
                 f"{ink_correlation:.2f})")

# %% [markdown]
# What the parts say:
#
# - **The distortion does most of the work.** In the rate–distortion plane the sets lie apart along
#   the distortion: the digits and the held-out 7s near a hundred nats, the synthetic sets at least
#   80 nats above them on average. Alone, the distortion detects the held-out 7s about as
#   well as the NLL.
# - **The rate can point the wrong way.** Under `N(0, I)` the held-out 7s get *cheaper* codes than
#   the test digits (the AUROC of the rate is below 0.5): the encoder has little to say about a
#   shape it never learned, so it says little, and the decoder pays for it in distortion. The
#   blank image costs almost no rate at all under `N(0, I)` (the point at the far left).
# - **The VampPrior makes the rate informative.** Its prior is a mixture of the posteriors of 50
#   digit-like pseudo-inputs, so a code that no digit would get is expensive: its rate alone
#   detects the constant images almost perfectly, where the rate of the other two priors does not.
#   (The shuffled images it ranks less well by the rate alone: see the table printed above.) The blank image's code is one of those: it costs more than 20 nats under the
#   VampPrior against less than one under `N(0, I)`, while the two models' distortions of it differ
#   by less than 15 nats (printed above). The rate is why the blank image is unlikely under the
#   VampPrior and likely under `N(0, I)`.
# - **The bound is looser out of distribution.** The gap between the −ELBO and the NLL is a few
#   nats on the test digits and five or more times larger on every synthetic set: the encoder is a
#   proposal trained on digits, poor for anything else, so the ELBO overstates how unlikely such
#   inputs are (and the NLL with `K = 256` may still). As a detector, the −ELBO does as well as the
#   NLL here: its error points the right way.
# - **Ink costs nats.** Over the test digits the NLL grows with the number of inked pixels,
#   loosely (the correlation printed above): part of what the likelihood measures is how much
#   there is to draw, not whether it is a digit.
#
# ## What to take away
#
# - Define the out-of-distribution sets by what you need to detect, and test several: inverted,
#   shuffled and noise images are caught by the NLL, the −ELBO and the distortion alike; a class
#   held out of training only in part.
# - The AUROC is a rank statistic: the probability that an OOD input scores higher than an
#   in-distribution one, computed from the ranks in a few lines of NumPy. 0.5 is a coin; below 0.5
#   the score points the wrong way.
# - A likelihood is not a verdict on membership. The blank image is more likely than most unseen
#   7s under two of the three models, and than a good share of the test digits they were trained
#   to model: simple inputs can be likely inputs (Nalisnick et al. 2019). Not every plain input,
#   though: the other constant images are found very unlikely.
# - Look at the parts. The distortion carries most of the detection; the rate can point the wrong
#   way, unless the prior knows where the data's codes are, as the VampPrior does; and the ELBO's
#   gap grows out of distribution.

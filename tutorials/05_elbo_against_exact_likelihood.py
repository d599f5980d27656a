# %% [markdown]
# # 5. The ELBO against an exact likelihood
#
# A VAE is trained on the ELBO, a lower bound of `log p(x)`, and for almost every VAE neither
# `log p(x)` nor the distance between the two can be computed: they can only be estimated
# (tutorial 6). There is one exception, met in tutorials 1 and 3. A VAE whose encoder and decoder
# are linear and whose decoder is Gaussian *is* a probabilistic PCA: its `log p(x)`, its ELBO and
# the gap between them, `KL(q(z|x) || p(z|x))`, all have closed forms, and the best such model is
# known too, pPCA's maximum-likelihood solution.
#
# So here is a VAE trained exactly as any other (single-sample reparameterized gradients, Adam,
# minibatches), on the dequantized digits, with every quantity of interest computed exactly at
# every stage of training.
#
# **What you will learn**
#
# - a linear VAE trained by stochastic gradients climbs to the pPCA maximum, and no further;
# - how far its ELBO is from that maximum, split exactly into *the decoder is not optimal yet* and
#   *the approximate posterior is not exact*, the gap `KL(q(z|x) || p(z|x))`; and the gap split
#   again into *the encoder lags behind its decoder* and *no diagonal Gaussian can do better*;
# - where the slow directions of training come from, in the eigenvalue spectrum of the data: why
#   the directions whose eigenvalues sit nearest the noise variance `σ²` are found last, and why the
#   last fraction of a nat needs a decaying learning rate (or larger batches);
# - what changes with a nonlinear decoder: a better likelihood, and a gap that can no longer be
#   computed, only estimated.
#
# **Prerequisites.** Tutorial 1 (pPCA, its marginal and posterior), tutorial 3 (the ELBO and
# `log p(x) = ELBO + KL(q(z|x) || p(z|x))` on a linear-Gaussian VAE), tutorial 4 (training with
# `minivae.fit`). The importance-weighted estimate of `log p(x)` used at the end is the subject of
# tutorial 6; here it is used as `VAE.log_likelihood`.
#
# **Run time.** One and a half to three minutes in full (85 to 171 s measured on a two-core
# machine shared with other jobs, load average 2.5 to 4.2; expect less on an idle one): three linear VAEs of 30 000 Adam steps each
# (half the steps `minivae compare` takes, enough here to end a few hundredths of a nat from the
# maximum) and one nonlinear VAE. With `MINIVAE_SIZE=lab` the linear VAEs take 10 000 steps and end
# about a nat from the maximum, not hundredths (100 s in all, measured at load average 5). A few seconds with `MINIVAE_QUICK=1`,
# whose numbers mean little: `q = 4`, 600 steps, a tiny nonlinear model trained for 3 epochs.

# %%
import copy

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

import minivae
from minivae import compare, course, linear_vae, plots
from minivae.linear_vae import linear_vae_exact, set_optimal_encoder
from minivae.ppca import PPCA
from minivae.reference import LINEAR_SCHEDULE, REFERENCE

TUTORIAL = "05_elbo_against_exact_likelihood"
SEED = 5

Q = course.size(16, 4)                   # latent dimensions
STEPS = course.size(30_000, 600, lab=10_000)  # Adam steps of each linear VAE
TIME_BUDGET = 600.0                      # seconds per linear VAE; generous, so that STEPS decides
SNAPSHOTS = course.size(120, 30)         # looks at the weights during training, geometrically spaced
NONLINEAR_HIDDEN = course.size((256, 256), (32,))
NONLINEAR_EPOCHS = course.size(500, 3)   # the most; early stopping usually ends it sooner
K_VALUES = course.size([1, 4, 16, 64, 256, 512], [1, 4, 16])

# %% [markdown]
# ## The target: pPCA's maximum
#
# The model is continuous, `p(x|z) = N(W z + μ, σ² I)`, and the digits are integers from 0 to 16,
# so, as in tutorials 1 and 3, the models see them *dequantized*: `x + u` with `u ~ U[0, 1)^64`.
# `compare.load_dequantized_digits` gives the standard split dequantized with a seeded generator,
# the same data that `minivae compare` uses.
#
# pPCA's maximum-likelihood solution comes from the eigenvalues `λ_1 ≥ ... ≥ λ_64` and
# eigenvectors `u_j` of the data covariance `S`. It keeps the top `q` directions and gives each one
# its full variance `λ_j`, split as `λ_j - σ²` through the latent variable and `σ²` of noise;
# every other direction gets only the noise, whose variance is the average of the discarded
# eigenvalues:
#
# $$W = U_q (\Lambda_q - \sigma^2 I)^{1/2}, \qquad \sigma^2 = \frac{1}{d - q} \sum_{j > q} \lambda_j .$$
#
# Its mean training log-likelihood is the largest that any linear VAE with a Gaussian decoder can
# reach, whatever its encoder, because the ELBO is never above `log p(x)`.

# %%
_, data = compare.load_dequantized_digits(SEED)
x_train, x_val, x_test = data["train"], data["val"], data["test"]
print(f"dequantized digits: {len(x_train)} train, {len(x_val)} validation, {len(x_test)} test, "
      f"{x_train.shape[1]} pixels")

ppca = PPCA(Q).fit(x_train)
ppca_max = ppca.max_log_likelihood()
ppca_test = ppca.mean_log_likelihood(x_test)
eigenvalues, sigma2 = ppca.eigenvalues_, ppca.noise_variance_
start_variance = float(np.mean(np.var(x_train, axis=0)))   # where training starts σ², tr(S) / d
print(f"pPCA, q = {Q}: maximum training log-likelihood {ppca_max:.3f} nats per example, "
      f"test {ppca_test:.3f}")
print(f"σ² = {sigma2:.2f};  λ_1 = {eigenvalues[0]:.1f},  λ_{Q} = {eigenvalues[Q - 1]:.2f},  "
      f"λ_{Q + 1} = {eigenvalues[Q]:.2f};  average variance per pixel tr(S)/d = {start_variance:.2f}")
below_start = np.flatnonzero(eigenvalues[:Q] < start_variance) + 1   # directions j, 1-based
print(f"kept eigenvalues below tr(S)/d: {len(below_start)} of {Q}, directions {below_start.tolist()}")
course.claim(2 < eigenvalues[Q - 1] / sigma2 < 6 and 0.5 < eigenvalues[Q - 1] - eigenvalues[Q] < 1.5
             and (eigenvalues[0] - sigma2) > 10 * (eigenvalues[Q - 1] - sigma2)
             and below_start.tolist() == [Q - 2, Q - 1, Q],
             f"the last kept eigenvalue is a few times σ² ({eigenvalues[Q - 1] / sigma2:.1f} times); "
             f"λ_q − λ_(q+1) is about one intensity² ({eigenvalues[Q - 1] - eigenvalues[Q]:.2f}); the top "
             f"direction stands more than ten times further above σ² than the q-th "
             f"({(eigenvalues[0] - sigma2) / (eigenvalues[Q - 1] - sigma2):.1f} times); the last three kept "
             f"eigenvalues, and only they, are below the dotted line (directions {below_start.tolist()})")

# %%
directions = np.arange(1, len(eigenvalues) + 1)
fig = Figure(figsize=(9, 4), layout="constrained")
ax = fig.add_subplot()
ax.axvspan(0.5, Q + 0.5, color="C0", alpha=0.08, label=f"the q = {Q} directions pPCA keeps")
ax.semilogy(directions, eigenvalues, "o", color="C0", markersize=4, label="eigenvalue λ_j of S")
ax.axhline(sigma2, color="C3", linestyle="--", label=f"σ² of pPCA = mean of the discarded λ_j ({sigma2:.2f})")
ax.axhline(start_variance, color="0.5", linestyle=":",
           label=f"σ² when training starts = tr(S)/d ({start_variance:.1f})")
ax.vlines(directions[:Q], sigma2, eigenvalues[:Q], color="C0", alpha=0.4,
          label="λ_j - σ²: the variance explained through z")
ax.set_xlabel("direction j (eigenvectors of the data covariance, largest first)")
ax.set_ylabel("variance (intensity²)")
ax.set_title("The spectrum of the dequantized training digits")
ax.set_xlim(0, len(eigenvalues) + 1)
ax.grid(True, which="both", alpha=0.3)
ax.legend(loc="lower left", fontsize="small")
plots.save_figure(fig, course.figure_path(TUTORIAL, "spectrum.png"))
course.show(fig)

# %% [markdown]
# The spectrum falls smoothly, with no clear edge where "signal" ends and "noise" begins: the
# choice of `q` is ours. Two features of it will matter below. The last kept eigenvalues are only a
# few times `σ²`, and the first discarded one, `λ_{q+1}`, is close to the last kept one, `λ_q`
# (printed above). And the last three kept eigenvalues (of 16) are *below* the dotted line, the
# average variance per pixel, which is where training starts its `σ²`; so are all the discarded
# ones.
#
# ## A linear VAE, trained like any other
#
# `minivae.VAE(..., hidden=(), likelihood="gaussian", learn_variance=True)` has one linear layer
# each way and learns `σ²`; it is a pPCA with an encoder. `linear_vae.train_linear_vae` trains it the
# ordinary way: each step draws one `ε` per example of a minibatch of 250, computes the
# single-sample −ELBO and its gradient with `model.loss_and_grads`, and takes an Adam step. Before
# the first step it sets the decoder's bias to the data mean and `σ²` to the average variance per
# pixel, where pPCA's EM would start; the rest is learned. Its learning rate is `1e-2` for the first
# half of training, then decays exponentially to `3e-5`; why it must decay is the subject of the
# section on slow directions.
#
# `train_linear_vae` records the exact training ELBO and `log p(x)` as it goes, but not the
# weights. To look at them too, the model below keeps a copy of its parameters whenever
# `loss_and_grads` is called at one of the chosen steps: the training loop calls it exactly once
# per step, so this is a look at the weights without touching the loop.


# %%
class WatchedVAE(minivae.VAE):
    """A VAE that keeps a copy of its parameters at chosen steps of training.

    Step k is the k-th call of :meth:`loss_and_grads`; the copy is taken before it, after k
    optimizer steps. ``snapshots`` is a list of (k, params) with params a dict of array copies.
    """

    def __init__(self, *args, watch_steps=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.watch_steps = set(int(step) for step in watch_steps)
        self.calls = 0
        self.snapshots = []

    def loss_and_grads(self, x, eps=None, rng=None):
        if self.calls in self.watch_steps:
            self.snapshots.append((self.calls, {key: value.copy() for key, value in self.params.items()}))
        self.calls += 1
        return super().loss_and_grads(x, eps=eps, rng=rng)


def train_watched(lr, final_lr, seed):
    """A linear Gaussian VAE trained by ``linear_vae.train_linear_vae``, with snapshots of its weights.

    Parameters
    ----------
    lr, final_lr : float, the learning rate of the first half and the end of the schedule
        (equal: a constant learning rate)
    seed : int, for the minibatches and every eps

    Returns
    -------
    model : WatchedVAE, trained, with its snapshots (the final parameters included)
    trace : dict returned by ``train_linear_vae``
    """
    watch = np.unique(np.geomspace(1, STEPS, SNAPSHOTS).astype(int))
    model = WatchedVAE(64, Q, hidden=(), likelihood="gaussian", learn_variance=True, seed=SEED,
                       dtype=np.float64, watch_steps=[0, *watch])
    trace = linear_vae.train_linear_vae(model, x_train, np.random.default_rng([SEED, seed]), steps=STEPS,
                                     seconds=TIME_BUDGET, lr=lr, final_lr=final_lr)
    model.snapshots.append((trace["steps"], {key: value.copy() for key, value in model.params.items()}))
    print(f"learning rate {lr:g} -> {final_lr:g}: {trace['steps']} steps ({trace['epochs']:.0f} epochs) "
          f"in {trace['seconds']:.1f} s" + (" (time budget reached)" if trace["stopped_by_time_budget"] else ""))
    return model, trace


schedule_model, schedule_trace = train_watched(LINEAR_SCHEDULE.lr, LINEAR_SCHEDULE.final_lr, seed=1)
final = linear_vae_exact(schedule_model, x_train)
print(f"after training: ELBO {final.elbo.mean():.3f}, log p(x) of its decoder {final.log_px.mean():.3f}, "
      f"pPCA maximum {ppca_max:.3f} nats per example")

# %%
trace_steps = np.asarray(schedule_trace["step"], dtype=float)
trace_elbo = np.asarray(schedule_trace["train_elbo"])
trace_log_px = np.asarray(schedule_trace["train_log_px"])
shown = trace_steps > 0   # the steps axis is logarithmic

fig = Figure(figsize=(12, 4.2), layout="constrained")
left, right = fig.subplots(1, 2)
left.plot(trace_steps[shown], trace_elbo[shown], color="C0", label="ELBO (closed form)")
left.plot(trace_steps[shown], trace_log_px[shown], color="C1", label="log p(x) of the decoder (exact)")
left.axhline(ppca_max, color="C2", linestyle="--", label=f"pPCA maximum ({ppca_max:.2f})")
left.set_ylim(ppca_max - 40, ppca_max + 4)
left.set_ylabel("mean training log-likelihood (nats per example)")
left.set_title("The ELBO climbs to the pPCA maximum")
left.legend(loc="lower right", fontsize="small")

right.plot(trace_steps[shown], (ppca_max - trace_elbo)[shown], color="C0", label="pPCA maximum − ELBO")
right.plot(trace_steps[shown], (ppca_max - trace_log_px)[shown], color="C1",
           label="pPCA maximum − log p(x)")
right.set_yscale("log")
right.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
right.set_ylabel("nats per example below the pPCA maximum")
right.set_title("The same distances on a log scale")
rate_axis = right.twinx()
rate_steps = np.geomspace(1, STEPS, 200)
rate_axis.plot(rate_steps, [linear_vae.learning_rate(step / STEPS) for step in rate_steps], color="0.6",
               linewidth=1, linestyle=":")
rate_axis.set_yscale("log")
rate_axis.set_ylabel("learning rate (dotted)", color="0.4")
right.legend(loc="lower left", fontsize="small")
for ax in (left, right):
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.set_xlabel("Adam steps")
    ax.grid(True, which="both", alpha=0.3)
plots.save_figure(fig, course.figure_path(TUTORIAL, "training.png"))
course.show(fig)

# %% [markdown]
# Both curves are exact, computed in closed form on the whole training set at each marked step;
# only the training itself is stochastic. On the left, the ELBO (blue) stays below the `log p(x)` of
# the same decoder (orange), as it must, and both rise to the pPCA maximum (dashed), which neither
# can cross: no linear Gaussian model has a higher likelihood. On the right the same distances on
# a log scale, with the learning rate dotted: most of the way is covered in the first few
# thousand steps; then the curves level off while the learning rate is constant, and fall again,
# by an order of magnitude or more, only once it decays.
#
# ## The distance to the maximum, taken apart
#
# At any stage the distance from the ELBO to the pPCA maximum is the sum of two parts, each exact
# here:
#
# $$\underbrace{\max \log p - \mathrm{ELBO}}_{\text{total}}
#   = \underbrace{\max \log p - \log p_\theta(x)}_{\text{decoder not optimal yet}}
#   + \underbrace{\log p_\theta(x) - \mathrm{ELBO}}_{\mathrm{KL}(q(z|x)\,\|\,p_\theta(z|x))} .$$
#
# The second part, the gap, splits again. For a given decoder the best linear encoder is known in
# closed form (`ppca.set_optimal_encoder`): its mean is the true posterior mean and its variances
# are the best a diagonal Gaussian can do. So
#
# - *the encoder lags behind its decoder*: ELBO of the best encoder − ELBO of the actual one;
# - *no diagonal Gaussian can do better*: `log p(x)` − ELBO of the best encoder. The true posterior
#   `N(M⁻¹Wᵀ(x−μ), σ² M⁻¹)`, with `M = WᵀW + σ² I`, has correlations whenever the columns of `W` are
#   not orthogonal, and a diagonal `q(z|x)` cannot represent them. pPCA's own `W` has orthogonal
#   columns, so this share vanishes at the maximum: the ELBO can reach it.
#
# The function below computes all three from one snapshot of the weights, with the library's
# `linear_vae_exact` and `set_optimal_encoder` on a scratch copy of the model.


# %%
def distance_parts(model, snapshots, x):
    """The three parts of (pPCA maximum − ELBO) at each snapshot, nats per example.

    Parameters
    ----------
    model : a linear Gaussian VAE of the same shape as the snapshots
    snapshots : list of (step, params)
    x : (n, 64) array, the training data

    Returns
    -------
    steps : (m,) array
    parts : dict "decoder not optimal yet", "encoder lags behind its decoder",
        "no diagonal Gaussian can do better" -> (m,) arrays; their sum is pPCA maximum − ELBO
    """
    scratch = copy.deepcopy(model)
    steps, decoder, encoder, diagonal = [], [], [], []
    for step, params in snapshots:
        scratch.set_params(params)
        actual = linear_vae_exact(scratch, x)
        best = linear_vae_exact(set_optimal_encoder(scratch), x)
        steps.append(step)
        decoder.append(ppca_max - actual.log_px.mean())
        encoder.append(best.elbo.mean() - actual.elbo.mean())
        diagonal.append(best.gap.mean())
    return np.asarray(steps), {"decoder not optimal yet": np.asarray(decoder),
                               "encoder lags behind its decoder": np.asarray(encoder),
                               "no diagonal Gaussian can do better": np.asarray(diagonal)}


PART_COLORS = {"decoder not optimal yet": "C1", "encoder lags behind its decoder": "C0",
               "no diagonal Gaussian can do better": "C4"}
snapshot_steps, schedule_parts = distance_parts(schedule_model, schedule_model.snapshots, x_train)
total = sum(schedule_parts.values())
recorded = dict(zip(schedule_trace["step"], schedule_trace["train_elbo"]))
assert all(abs(ppca_max - recorded[step] - value) < 1e-6
           for step, value in zip(snapshot_steps, total) if step in recorded), "snapshots and trace disagree"

print(f"at the end, {snapshot_steps[-1]} steps: pPCA maximum − ELBO = {total[-1]:.4f} nats per example")
for name, values in schedule_parts.items():
    print(f"  {name:36s} {values[-1]:.4f}")

# %%
LOG_FLOOR = 1e-4   # nats; smaller values are drawn at this height on the log scale
DECAY_STARTS = LINEAR_SCHEDULE.constant_fraction * STEPS   # the step where the learning rate starts to fall


def mark_decay(ax):
    """A vertical line where the learning rate starts to decay."""
    ax.axvline(DECAY_STARTS, color="0.5", linewidth=1, linestyle="-.")
    ax.annotate("learning rate\nstarts to decay", (DECAY_STARTS, 1.0), xycoords=("data", "axes fraction"),
                xytext=(-4, -4), textcoords="offset points", ha="right", va="top", fontsize="small",
                color="0.4")


fig = Figure(figsize=(10, 4.6), layout="constrained")
ax = fig.add_subplot()
shown = snapshot_steps > 0
ax.plot(snapshot_steps[shown], np.maximum(total, LOG_FLOOR)[shown], color="k", linewidth=2,
        label=f"total: pPCA maximum − ELBO (end: {total[-1]:.3f})")
for name, values in schedule_parts.items():
    ax.plot(snapshot_steps[shown], np.maximum(values, LOG_FLOOR)[shown], color=PART_COLORS[name],
            label=f"{name} (end: {values[-1]:.3f})")
mark_decay(ax)
ax.set_xscale("log")
ax.set_yscale("log")
ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
ax.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
ax.set_xlabel("Adam steps")
ax.set_ylabel("nats per example")
ax.set_title("The distance from the ELBO to the pPCA maximum, in three exact parts")
ax.grid(True, which="both", alpha=0.3)
ax.legend(loc="lower left", fontsize="small")
plots.save_figure(fig, course.figure_path(TUTORIAL, "distance_parts.png"))
course.show(fig)

# %% [markdown]
# At first the encoder's share (blue) is nearly everything: the encoder starts from random weights,
# its `q(z|x)` has nothing to do with the posterior, and the ELBO is thousands of nats below
# `log p(x)`. Most of that goes in the first few steps, since for a fixed decoder the best encoder
# is just a linear regression on `x`. The decoder's share (orange) starts at the tens of nats of an
# untrained decoder, barely moves for the first hundred steps, then falls steadily; why it is slow
# is the subject of the next section. From about a thousand steps on, as long
# as the learning rate stays high, the encoder's share is again the largest part, a few nats that
# jitter from one snapshot to the next; when the rate decays it falls by two orders of magnitude.
#
# The diagonal share (purple) is small throughout. It is nearly zero at the start, when `W` is
# small and `M ≈ σ² I` is diagonal anyway; it grows as the columns of `W` grow without being
# orthogonal, and falls again as the ELBO pushes them towards orthogonality, where a diagonal
# Gaussian is exact. At the end all three parts are hundredths of a nat or less (printed above).
#
# ## Where the slow directions come from
#
# Look at one direction of the spectrum at a time. Suppose a column of `W` points along the
# eigenvector `u_j` with length `a`. The model's variance along `u_j` is then `a² + σ²`, and the
# direction's share of the mean log-likelihood, and its derivative, are
#
# $$\ell_j(a) = -\frac12\Big[\log(a^2 + \sigma^2) + \frac{\lambda_j}{a^2 + \sigma^2}\Big],
#   \qquad
#   \frac{d\ell_j}{da} = \frac{a\,(\lambda_j - a^2 - \sigma^2)}{(a^2 + \sigma^2)^2} .$$
#
# It is largest at `a² = λ_j − σ²`, pPCA's solution. Three things make some directions slow, the
# last one from the way the gradient is estimated:
#
# - **The pull on a direction is proportional to `λ_j − σ²`.** Weights start small, and for small
#   `a` the derivative is about `a (λ_j − σ²) / σ⁴`: under plain gradient ascent the column would
#   grow exponentially, at a rate set by how far `λ_j` stands above `σ²`, and the top direction
#   stands more than ten times further above `σ²` than the 16th. (Adam rescales every parameter's
#   step, which blurs this, but a weak pull is still weak next to the noise.) Worse, training starts
#   with `σ²` at the average variance per pixel (the dotted line of the spectrum), above the last
#   three kept `λ_j` and every discarded one: those directions are *pushed down* until `σ²` has
#   come down below them.
# - **At the edge, the choice is between near-equals.** The last kept direction competes with the
#   first discarded one, and what decides between them is `λ_q − λ_{q+1}`, about one intensity²
#   here. Likewise within the subspace: `log p(x)` does not change at all when `W` is rotated
#   (`W R` has the same `W Wᵀ`), and the ELBO prefers the rotation with orthogonal columns only
#   weakly when two eigenvalues are close.
# - **The noise does not shrink with the signal.** Every step estimates the gradient from 250
#   examples and one `ε` each. Its noise comes from the sampled `z` and the residual
#   `x − W z − μ`, whose size is set by `σ²` and the data, not by how much a direction still has to
#   gain. Where the true gradient is small (near the optimum, between near-equal eigenvalues, along
#   the rotations the likelihood ignores) the step is mostly noise. Adam divides each step by a
#   running root-mean-square of the gradient, so where the gradient is mostly noise every
#   parameter moves by about the learning rate in a random direction, every step. The weights then
#   jitter around the optimum with a spread that grows with the learning rate, and away from the
#   optimum the ELBO is lower.
#
# The figure shows this on the trained model's snapshots. For each direction `u_j` it draws the
# variance the model gives it, `u_jᵀ (W Wᵀ + σ² I) u_j`, as a fraction of the data's `λ_j`. pPCA
# gives the kept directions all of it (1, the dashed line) and the others only `σ²`.


# %%
def variance_along_directions(snapshots, n_directions):
    """u_jᵀ (W Wᵀ + σ² I) u_j / λ_j for the first n_directions eigenvectors u_j of S, at each snapshot.

    Returns
    -------
    (m, n_directions) array
    """
    centred = x_train - x_train.mean(axis=0)
    _, U = np.linalg.eigh(centred.T @ centred / len(x_train))
    U = U[:, ::-1][:, :n_directions]                          # (64, n_directions), largest first
    fractions = []
    for _, params in snapshots:
        W_dec = params["decoder.0.W"]                           # (q, 64): the decoder's Wᵀ
        model_variance = np.sum((W_dec @ U) ** 2, axis=0) + np.exp(params["decoder.logvar"][0])
        fractions.append(model_variance / eigenvalues[:n_directions])
    return np.asarray(fractions)


N_DIRECTIONS = Q + 1
schedule_fractions = variance_along_directions(schedule_model.snapshots, N_DIRECTIONS)
print("variance given to u_j / λ_j at the end: "
      + " ".join(f"{value:.2f}" for value in schedule_fractions[-1]))
print(f"pPCA gives u_{Q + 1} the fraction σ²/λ_{Q + 1} = {sigma2 / eigenvalues[Q]:.2f}")
starts_above = np.flatnonzero(schedule_fractions[1] > 1) + 1      # after the first step, 1-based j
course.claim(starts_above.tolist() == below_start.tolist() + [Q + 1]
             and np.all(np.abs(schedule_fractions[-1, :Q] - 1) < 0.1),
             f"the directions that start above 1 are those below the dotted line and u_(q+1) "
             f"({starts_above.tolist()}); at the end every kept direction is within 10% of pPCA's value "
             f"({schedule_fractions[-1, :Q].min():.2f} to {schedule_fractions[-1, :Q].max():.2f})")


# %%
def draw_directions(ax, steps, fractions, title, decay=True):
    """Lines of ``fractions[:, j]`` against steps, coloured by j; the (q+1)-th dashed red."""
    colors = colormaps["viridis"](np.linspace(0.0, 1.0, Q))
    shown = steps > 0
    for j in range(Q):
        ax.plot(steps[shown], fractions[shown, j], color=colors[j], linewidth=1.2)
    ax.plot(steps[shown], fractions[shown, Q], color="C3", linewidth=1.2, linestyle="--",
            label=f"u_{Q + 1}, the first direction pPCA discards")
    ax.axhline(1.0, color="k", linestyle="--", linewidth=1)
    ax.axhline(sigma2 / eigenvalues[Q], color="C3", linestyle=":", linewidth=1)
    if decay:
        mark_decay(ax)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.set_ylim(0, 1.6)
    ax.set_xlabel("Adam steps")
    ax.set_ylabel("model variance along u_j / λ_j")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")


fig = Figure(figsize=(10, 4.4), layout="constrained")
ax = fig.add_subplot()
draw_directions(ax, snapshot_steps, schedule_fractions, "Each direction of the spectrum, over training")
fig.colorbar(ScalarMappable(Normalize(1, Q), "viridis"), ax=ax, label="direction j")
plots.save_figure(fig, course.figure_path(TUTORIAL, "directions.png"))
course.show(fig)

# %% [markdown]
# Read the figure from the left.
#
# - The top directions (dark) start lowest, with small random weights and `σ²` far below their
#   `λ_j`, and are the first to climb, within the first thousand steps.
# - The last three kept directions (yellow), and the first discarded one, start *above* 1: training
#   starts `σ²` at the average variance per pixel, which is larger than their `λ_j` (the dotted line
#   of the spectrum), so the model first gives them too much variance, and pushes them *down* until
#   `σ²` has come down.
# - At the edge, the 16th direction and the 17th (red, dashed) trade places. In our run the model
#   gave `u_17` more variance than pPCA does for thousands of steps while `u_16` was left far below 1;
#   the difference that decides between them is `λ_16 − λ_17`, small next to the noise of a step.
# - While the learning rate is constant, every direction hovers below 1 and jitters, and the top
#   ones, found first, sit furthest below. The decoder is trained through an encoder that jitters
#   too. A random error in the encoder's mean acts like a wider `q(z|x)`, and it hurts most where the
#   posterior is narrowest, in the top directions (the posterior variance along a kept direction is
#   `σ²/λ_j`). The ELBO's best decoder for such an encoder shortens those columns and puts more into
#   `σ²` (printed below: `σ²` is too large before the decay). Only when the learning rate decays
#   does every direction settle at pPCA's value.

# %%
half = np.searchsorted(snapshot_steps, DECAY_STARTS)
sigma2_before = float(np.exp(schedule_model.snapshots[half][1]["decoder.logvar"][0]))
sigma2_end = float(np.exp(schedule_model.params["decoder.logvar"][0]))
print(f"σ² before the decay (step {snapshot_steps[half]}): {sigma2_before:.3f};  at the end: "
      f"{sigma2_end:.3f};  pPCA: {sigma2:.3f}")
course.claim(sigma2_before > sigma2_end and abs(sigma2_end - sigma2) < 0.05,
             f"σ² is too large before the decay ({sigma2_before:.3f}) and settles at pPCA's at the end "
             f"({sigma2_end:.3f} against {sigma2:.3f})")

# %% [markdown]
# ## A constant learning rate, or a decaying one
#
# The schedule is a compromise between two needs. A large learning rate travels fast but jitters
# far; a small one jitters less but needs many more steps to get anywhere, most of all in the slow
# directions. Here are two constant learning rates next to the schedule, with the same number of
# steps, the same minibatches and the same `ε` (the first half of the constant `1e-2` run *is* the
# first half of the schedule).

# %%
runs = {}
for lr in (LINEAR_SCHEDULE.lr, LINEAR_SCHEDULE.lr / 10):
    model, _ = train_watched(lr, lr, seed=1)
    runs[f"constant {lr:g}"] = (model, distance_parts(model, model.snapshots, x_train)[1])
runs[f"schedule {LINEAR_SCHEDULE.lr:g} → {LINEAR_SCHEDULE.final_lr:g}"] = (schedule_model, schedule_parts)
RUN_COLORS = dict(zip(runs, ("C3", "C9", "k")))

for name, (model, parts) in runs.items():
    print(f"{name:24s} pPCA maximum − ELBO at the end: {sum(parts.values())[-1]:.3f} nats  ("
          + ", ".join(f"{part} {values[-1]:.3f}" for part, values in parts.items()) + ")")
end = {name: {part: values[-1] for part, values in parts.items()} for name, (_, parts) in runs.items()}
total_end = {name: sum(parts.values()) for name, parts in end.items()}
fast, slow, schedule = runs  # constant 1e-2, constant 1e-3, the schedule
course.claim(1 < total_end[fast] < 10 and end[fast]["encoder lags behind its decoder"] > total_end[fast] / 2
             and total_end[schedule] < total_end[slow] < total_end[fast]
             and 0.01 < total_end[schedule] < 0.1 and max(end[schedule].values()) < 0.05,
             f"the constant rate {fast.split()[-1]} stays a few nats below the maximum "
             f"({total_end[fast]:.2f}), most of it the encoder's share "
             f"({end[fast]['encoder lags behind its decoder']:.2f}); the smaller constant rate ends "
             f"between it and the schedule ({total_end[slow]:.2f}); the schedule ends a few hundredths "
             f"of a nat from the maximum ({total_end[schedule]:.3f}), every part hundredths or less")

# %%
fig = Figure(figsize=(13, 4.4), layout="constrained")
left, middle, right = fig.subplots(1, 3, width_ratios=[1.2, 1.2, 1])
for name, (model, parts) in runs.items():
    steps = np.asarray([step for step, _ in model.snapshots])
    shown = steps > 0
    left.plot(steps[shown], sum(parts.values())[shown], color=RUN_COLORS[name], label=name,
              linewidth=2 if name.startswith("schedule") else 1.2)
left.set_yscale("log")
left.set_ylim(LOG_FLOOR * 30, 1e4)
left.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
left.set_ylabel("pPCA maximum − ELBO (nats per example)")
left.set_title("The distance to the maximum")
left.legend(loc="lower left", fontsize="small")
mark_decay(left)   # of the schedule; the constant 1e-2 run follows the same path until there

constant_model = runs[f"constant {LINEAR_SCHEDULE.lr:g}"][0]
draw_directions(middle, snapshot_steps, variance_along_directions(constant_model.snapshots, N_DIRECTIONS),
                f"Each direction, constant learning rate {LINEAR_SCHEDULE.lr:g}", decay=False)
for ax in (left, middle):
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.set_xlabel("Adam steps")
    ax.grid(True, which="both", alpha=0.3)

names = list(runs)
width = 0.27
for i, part in enumerate(PART_COLORS):
    values = [max(runs[name][1][part][-1], LOG_FLOOR) for name in names]
    right.bar(np.arange(len(names)) + (i - 1) * width, values, width=width, color=PART_COLORS[part],
              label=part)
right.set_yscale("log")
right.set_ylim(top=30 * max(sum(parts.values())[-1] for _, parts in runs.values()))
right.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
right.set_xticks(np.arange(len(names)), [name.replace(" ", "\n", 1) for name in names], fontsize="small")
right.set_ylabel("nats per example")
right.set_title(f"The three parts after {STEPS} steps")
right.grid(True, axis="y", which="both", alpha=0.3)
right.legend(loc="upper left", fontsize="x-small")
plots.save_figure(fig, course.figure_path(TUTORIAL, "constant_or_decaying.png"))
course.show(fig)

# %% [markdown]
# With the constant rate `1e-2` (red, hidden under the black curve of the schedule until the
# decay) the distance stops falling after a few thousand steps and stays at a few nats, jittering.
# In the middle panel its directions do get sorted out (in our run, `u_16` in and `u_17` out), but
# they never settle: they hover below 1 to the end. Most of its distance is the encoder's share (right panel).
# The encoder's outputs are sums over 64 pixels of raw intensities, up to 16, times weights, so a
# random step of about the learning rate in every weight moves them by a good fraction of the
# posterior's width, which is narrow (the data pin `z` down well): its `q(z|x)` is never quite where
# its own decoder would want it. Ten times smaller (cyan), the jitter is smaller, but the run is
# much slower to get going and is still travelling at the end. The schedule has both: it travels
# at the large rate, then shrinks the jitter step by step, slowly enough for the weights to follow.
#
# A larger minibatch is the other remedy: the noise of the average of `B` gradients falls like
# `1/√B`, so the same learning rate jitters less, at `B` times the cost per step. `minivae compare`
# uses both, minibatches of 250 and this schedule.
#
# ## A nonlinear decoder
#
# The linear VAE can only ever reach pPCA's likelihood: a Gaussian with a low-rank-plus-noise
# covariance. Give the encoder and decoder hidden layers and the decoder can bend its
# `q`-dimensional surface through the data, so it can do better. But then nothing is exact any
# more: `log p(x)` is an integral with no closed form, and neither is the gap. All that is left is
# the ELBO (a lower bound, estimated by sampling `z`) and the importance-weighted estimate
# `log p̂_K(x)` of tutorial 6, which is also a lower bound on average and rises towards `log p(x)` as
# `K` grows.
#
# The model: the reference architecture of tutorial 4 (two hidden layers of 256, LeakyReLU), a
# Gaussian decoder whose `σ²` is learned, starting at the average variance per pixel, trained with
# `minivae.fit` in the reference setting (`REFERENCE`: Adamax, learning rate `1e-3`, minibatches of
# 64, Polyak averaging, early stopping on the validation −ELBO). For comparison, the linear VAE above gets the same importance-weighted estimates, which
# for it can be checked against the exact value.

# %%
nonlinear = minivae.VAE(64, Q, hidden=NONLINEAR_HIDDEN, likelihood="gaussian", variance=start_variance,
                        learn_variance=True, seed=SEED)
history = minivae.fit(nonlinear, x_train, x_val, epochs=NONLINEAR_EPOCHS, batch_size=REFERENCE.batch_size,
                      optimizer=minivae.Adamax(lr=REFERENCE.lr), patience=REFERENCE.patience,
                      val_samples=REFERENCE.val_samples, ema=REFERENCE.ema,
                      rng=np.random.default_rng([SEED, 2]), verbose=False)
print(f"{nonlinear}\ntrained {history.epochs} epochs in {history.seconds:.1f} s; kept epoch "
      f"{history.best_epoch}; learned σ² = {np.exp(nonlinear.params['decoder.logvar'][0]):.2f} "
      f"(pPCA: {sigma2:.2f})")

eval_rng = np.random.default_rng([SEED, 3])
linear_test = linear_vae_exact(schedule_model, x_test)
test = {"linear VAE": {"elbo": linear_test.elbo.mean(), "exact": linear_test.log_px.mean()},
        "nonlinear VAE": {"elbo": nonlinear.elbo(x_test, n_samples=100, rng=eval_rng).mean()}}
for name, model in (("linear VAE", schedule_model), ("nonlinear VAE", nonlinear)):
    test[name]["iw"] = [model.log_likelihood(x_test, n_samples=K, rng=eval_rng).mean() for K in K_VALUES]

print(f"test log-likelihood, nats per example (K = {K_VALUES[-1]} importance samples):")
print(f"  pPCA, exact                       {ppca_test:9.3f}")
print(f"  linear VAE: ELBO, exact           {test['linear VAE']['elbo']:9.3f}")
print(f"  linear VAE: log p(x), exact       {test['linear VAE']['exact']:9.3f}")
print(f"  linear VAE: log p̂_K(x)            {test['linear VAE']['iw'][-1]:9.3f}")
print(f"  nonlinear VAE: ELBO, 100 samples  {test['nonlinear VAE']['elbo']:9.3f}")
print(f"  nonlinear VAE: log p̂_K(x)         {test['nonlinear VAE']['iw'][-1]:9.3f}")
print(f"nonlinear VAE: log p̂_K(x) − ELBO = {test['nonlinear VAE']['iw'][-1] - test['nonlinear VAE']['elbo']:.2f}"
      f" nats, a lower bound on its average gap KL(q(z|x) || p(z|x)) (on average over K-sample draws)")
linear_iw, nonlinear_iw = test["linear VAE"]["iw"], test["nonlinear VAE"]["iw"]
course.claim(abs(linear_iw[-1] - test["linear VAE"]["exact"]) < 0.05
             and abs(test["linear VAE"]["exact"] - ppca_test) < 0.1
             and 1 < test["nonlinear VAE"]["elbo"] - ppca_test < 10
             and nonlinear_iw[-1] - test["nonlinear VAE"]["elbo"] > test["nonlinear VAE"]["elbo"] - ppca_test
             and nonlinear_iw[-1] > nonlinear_iw[-2],
             f"the linear VAE's estimate reaches its exact log p(x) ({linear_iw[-1]:.3f} against "
             f"{test['linear VAE']['exact']:.3f}), which is pPCA's ({ppca_test:.3f}) to a small fraction of "
             f"a nat; the nonlinear VAE is better by a few nats in the ELBO "
             f"({test['nonlinear VAE']['elbo'] - ppca_test:.2f}) and by more in log p̂_K "
             f"({nonlinear_iw[-1] - ppca_test:.2f}), and its estimate still rises at the last K")

# %%
fig = Figure(figsize=(12, 4.4), layout="constrained")
left, right = fig.subplots(1, 2, width_ratios=[1.3, 1])
for name, color in (("linear VAE", "C0"), ("nonlinear VAE", "C2")):
    left.plot(K_VALUES, test[name]["iw"], "o-", color=color, markersize=4, label=f"{name}: log p̂_K(x)")
    left.axhline(test[name]["elbo"], color=color, linestyle=":", linewidth=1.2, label=f"{name}: ELBO")
left.axhline(test["linear VAE"]["exact"], color="C0", linestyle="--", linewidth=1.5,
             label="linear VAE: exact log p(x)")
left.set_xscale("log", base=2)
left.set_xticks(K_VALUES, [str(K) for K in K_VALUES])
left.set_xlabel("importance samples K")
left.set_ylabel("mean test log-likelihood (nats per example)")
left.set_title("Exact for the linear VAE, only estimated for the nonlinear one")
left.grid(True, alpha=0.3)
left.legend(loc="center right", fontsize="small")

rows = [("pPCA: log p(x), exact", ppca_test, "C1", "s"),
        ("linear VAE: ELBO, exact", test["linear VAE"]["elbo"], "C0", "o"),
        ("linear VAE: log p(x), exact", test["linear VAE"]["exact"], "C0", "s"),
        ("nonlinear VAE: ELBO, 100 samples", test["nonlinear VAE"]["elbo"], "C2", "o"),
        (f"nonlinear VAE: log p̂_K(x), K = {K_VALUES[-1]}", test["nonlinear VAE"]["iw"][-1], "C2", "D")]
for i, (label, value, color, marker) in enumerate(rows):
    right.plot([value], [i], marker=marker, color=color, markersize=9, linestyle="none")
    right.annotate(f"{value:.2f}", (value, i), xytext=(0, 8), textcoords="offset points", ha="center",
                   fontsize="small")
right.set_yticks(range(len(rows)), [label for label, *_ in rows], fontsize="small")
right.set_ylim(len(rows) - 0.5, -0.7)
values = [value for _, value, *_ in rows]
right.set_xlim(min(values) - 1.5, max(values) + 1.5)
right.set_xlabel("mean test log-likelihood or ELBO (nats per example, higher is better)")
right.set_title("Test numbers")
right.grid(True, axis="x", alpha=0.3)
plots.save_figure(fig, course.figure_path(TUTORIAL, "nonlinear.png"))
course.show(fig)

# %% [markdown]
# For the linear VAE the picture is complete: its importance-weighted estimate starts at its ELBO
# for `K = 1` and reaches the exact `log p(x)` (dashed) within a few samples, because its encoder is
# nearly the exact posterior: the gap is almost zero and the weights are almost constant. Its test
# `log p(x)` is pPCA's, to a small fraction of a nat: the two are the same model.
#
# The nonlinear VAE does better on both counts, in our run by a few nats in the ELBO and more in
# `log p̂_K` (printed above). It also has a much larger gap: its estimate keeps rising with `K`, well
# above its ELBO, and has not obviously stopped at `K = 512`. How large the gap really is cannot be
# known: `log p̂_K − ELBO` is only a lower bound on it (on average), and the true `log p(x)` lies
# somewhere above the last point. That is the price of the nonlinear decoder: better models, judged
# by estimates instead of exact values.
#
# ## What to take away
#
# - A linear VAE with a Gaussian decoder is a pPCA with an encoder. Trained by single-sample
#   reparameterized gradients, its ELBO climbs to pPCA's maximum likelihood, and can get as close
#   to it as the optimisation allows: a diagonal `q(z|x)` is exact for pPCA's `W`, whose columns are
#   orthogonal.
# - The distance from the ELBO to the maximum splits exactly into *decoder not optimal yet*
#   (`max log p − log p_θ(x)`) and the gap `KL(q(z|x) || p_θ(z|x))`, and the gap into *encoder lags
#   behind its decoder* and *no diagonal Gaussian can do better*. Early on the gap dominates; at a
#   constant learning rate the encoder's jitter does.
# - The slow directions come from the spectrum: a direction grows at a rate set by `λ_j − σ²`, the
#   last kept direction competes with the first discarded one on the difference of their
#   eigenvalues, and the likelihood does not care about rotations at all. There the true gradient is
#   smaller than the noise of a single-sample minibatch gradient.
# - So a constant learning rate leaves the weights jittering, nats below the maximum. A decaying
#   learning rate (or larger batches) averages the noise away; `linear_vae.train_linear_vae` keeps
#   `1e-2` for half of training, then decays it exponentially.
# - A nonlinear decoder reaches a better likelihood, but its `log p(x)` and its gap are no longer
#   computable: report the ELBO next to the importance-weighted estimate with `K = 512`, and read
#   their difference as a lower bound on the gap.
#
# Next: tutorial 6 studies that estimate, its bias and its spread, against `K`.

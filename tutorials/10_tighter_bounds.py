# %% [markdown]
# # 10. Tighter bounds: the importance-weighted ELBO
#
# Tutorial 6 estimated `log p(x)` by importance sampling with `K` samples from the encoder,
#
# $$\mathcal{L}_k(x) = E\Big[\log \frac{1}{k}\sum_{i=1}^{k} w_i\Big], \qquad
#   w_i = \frac{p(x|z_i)\,p(z_i)}{q(z_i|x)}, \quad z_i \sim q(z|x),$$
#
# and Burda, Grosse & Salakhutdinov (2016) showed that this is a lower bound for every `k`, that
# `L_1` is the ELBO, and that it rises with `k`: `L_1 ≤ L_2 ≤ … ≤ log p(x)`. So it can be *trained*,
# like the ELBO: the *importance-weighted autoencoder* (IWAE) maximises `L_k` instead of `L_1`. Its
# gradient is a weighted average of the `k` samples' gradients, with the normalised weights
# `w̃_i = w_i / Σ_j w_j` (the log-sum-exp's backward), written out in `minivae.objectives.IWAE`.
#
# **What you will learn**
#
# - `L_k` as a function of `k` on a trained model, and the *effective sample size* of the weights,
#   `1 / Σ_i w̃_i²`, which says how many of the `k` samples really count;
# - what training on `L_5` instead of `L_1` does: a looser ELBO, a broader encoder, and (here)
#   little change in the test NLL.
#
# **Prerequisites.** Tutorial 6 (importance sampling, the test NLL); tutorial 4 (the reference
# model, read from the cache here).
#
# **Run time.** One to three minutes in full on a shared two-core machine (two models trained, one of
# them on five samples per image); the reference model comes from the cache of tutorial 4, or is
# trained once (a minute). Seconds with `MINIVAE_QUICK=1`.

# %%
import numpy as np
from matplotlib.figure import Figure

import minivae
from minivae import course, plots
from minivae.objectives import ELBO, IWAE
from minivae.reference import REFERENCE

TUTORIAL = "10_tighter_bounds"
x_train, _ = minivae.datasets.load_digits("train")
x_val, _ = minivae.datasets.load_digits("val")
x_test, _ = minivae.datasets.load_digits("test")

# %% [markdown]
# ## `L_k` rises with `k`
#
# On the reference model (tutorial 4's), for each `k` we draw `k` samples per test image, compute the
# log-weights `log w_i = log p(x|z_i) − (log q(z_i|x) − log p(z_i))` with the model's own
# `elbo_terms` (the same numbers the objectives use), and average `log (1/k) Σ w_i` over the images.
# `k = 1` is a single-sample ELBO.

# %%
model, history, _ = course.reference_model()
KS = course.size([1, 2, 5, 10, 50, 200, 1000, 5000], [1, 5, 50])
x_eval = model.check_x(x_test[:course.size(447, 64)])
rng = np.random.default_rng(10)

bounds, errors, ess = [], [], []
for k in KS:
    per_image, sizes = [], []
    for start in range(0, len(x_eval), max(1, 4096 // k)):  # keep k · rows near 4096 per pass
        xb = x_eval[start:start + max(1, 4096 // k)]
        log_px, kl, _ = model.elbo_terms(xb, model.draw_noise(len(xb), rng, samples=k), "monte_carlo",
                                         need_grad=False)
        log_w = (log_px - kl).astype(np.float64)                                  # (k, images)
        top = log_w.max(axis=0)
        weights = np.exp(log_w - top)
        per_image.append(top + np.log(weights.mean(axis=0)))
        normalised = weights / weights.sum(axis=0)
        sizes.append(1 / np.sum(normalised ** 2, axis=0))
    per_image, sizes = np.concatenate(per_image), np.concatenate(sizes)
    bounds.append(per_image.mean())
    errors.append(per_image.std(ddof=1) / np.sqrt(len(per_image)))
    ess.append(sizes.mean())
    print(f"k = {k:5d}: L_k = {bounds[-1]:8.3f} ± {errors[-1]:.3f} nats, effective sample size "
          f"{ess[-1]:8.1f} of {k} ({ess[-1] / k:.1%})")

fig = Figure(figsize=(10, 3.8), layout="constrained")
left, right = fig.subplots(1, 2)
left.errorbar(KS, bounds, yerr=errors, marker="o", capsize=3)
left.set_xscale("log")
left.set_xlabel("k, samples per image")
left.set_ylabel("L_k, nats per image (± s.e. over images)")
left.set_title("The importance-weighted bound rises with k")
right.plot(KS, np.array(ess) / np.array(KS), marker="o", color="C1")
right.set_xscale("log")
right.set_yscale("log")
right.set_xlabel("k")
right.set_ylabel("effective sample size / k")
right.set_title("Few of the k samples carry the weight")
plots.save_figure(fig, course.figure_path(TUTORIAL, "bound_and_ess.png"))
course.show(fig)

if course.full():
    course.claim(all(b2 > b1 - 2 * max(e1, e2) for b1, b2, e1, e2 in zip(bounds, bounds[1:], errors, errors[1:])),
                 "L_k does not fall as k grows, within two standard errors")
    course.claim(bounds[-1] - bounds[0] > 2.0,
                 f"L_5000 is more than 2 nats above the single-sample ELBO ({bounds[-1] - bounds[0]:.2f} nats)")
    course.claim(ess[-1] / KS[-1] < 0.2,
                 f"at k = 5000 the effective sample size is below a fifth of k ({ess[-1] / KS[-1]:.1%})")

# %% [markdown]
# Most of the rise comes from the first few dozen samples, and most of the `k` samples barely count:
# the weights are dominated by the few `z` that explain the image best, because `q(z|x)` is a
# diagonal Gaussian and the true posterior is not. An effective sample size far below `k` is also
# the warning sign of an estimate that has not converged.
#
# ## Training on `L_5`
#
# Now train two models of the reference architecture from the same initial weights, one on the
# ELBO and one with `objective=IWAE(5)`, and compare them on the test set: the ELBO, the NLL with
# `K = 1000`, the average posterior variance `E[exp(logvar)]` of the encoder and the active units.
# An IWAE step decodes five samples per image, so it costs about three times an ELBO step here.

# %%
MAX_EPOCHS = course.size(REFERENCE.max_epochs, 2, lab=40)
HIDDEN = course.size(REFERENCE.hidden, (32,))
trained = {}
for name, objective in (("ELBO", ELBO()), ("IWAE, k = 5", IWAE(5))):
    candidate = minivae.VAE(64, REFERENCE.latent_dim, hidden=HIDDEN, seed=0)
    fitted = minivae.fit(candidate, x_train, x_val, objective=objective, epochs=MAX_EPOCHS, verbose=False)
    mu, logvar = candidate.encode(x_test)
    evaluation = np.random.default_rng(11)
    trained[name] = dict(
        nelbo=-float(np.mean(candidate.elbo(x_test, n_samples=course.size(100, 4), rng=evaluation))),
        nll=-float(np.mean(candidate.log_likelihood(x_test, n_samples=course.size(1000, 16), rng=evaluation))),
        variance=float(np.mean(np.exp(logvar.astype(np.float64)))),
        active=candidate.active_units(x_test), epochs=fitted.epochs, seconds=fitted.seconds)
    r = trained[name]
    print(f"{name:12s} test -ELBO {r['nelbo']:7.2f}, test NLL {r['nll']:7.2f}, mean posterior variance "
          f"{r['variance']:.4f}, active units {r['active']}, {r['epochs']} epochs in {r['seconds']:.0f} s")

elbo_model, iwae_model = trained["ELBO"], trained["IWAE, k = 5"]
if course.full():
    course.claim(iwae_model["nelbo"] > elbo_model["nelbo"],
                 f"the IWAE-trained model has the worse ELBO ({iwae_model['nelbo']:.2f} against "
                 f"{elbo_model['nelbo']:.2f}): it was not trained on it")
    course.claim(abs(iwae_model["nll"] - elbo_model["nll"]) < 1.5,
                 f"the two test NLLs are within 1.5 nats ({iwae_model['nll']:.2f} and {elbo_model['nll']:.2f})")

# %% [markdown]
# ## What to take away
#
# - `L_k` is a family of bounds between the ELBO (`k = 1`) and `log p(x)`; the test NLL minivae
#   reports is `−L_k` at a large `k` (512, or 5000 in `minivae variants`).
# - Training on `L_k` changes what the encoder has to be: the samples are reweighted, so `q(z|x)`
#   need not cover the posterior tightly and tends to come out broader (Burda et al. 2016; here the
#   mean posterior variance printed above, a few percent larger with `k = 5`). Its ELBO gets worse
#   although the model is as good or better: the ELBO is not a measure of the model.
# - The effective sample size tells how much of `k` is wasted; a proposal closer to the posterior
#   (a better encoder) raises it.

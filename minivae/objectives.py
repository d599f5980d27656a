"""Objectives: what training minimises, as a loss with its gradient with respect to every parameter.

An objective is a small object with one contract (written once for both backends):

* ``draw_noise(model, n, rng)``: the standard normal draws a minibatch of n examples needs;
* ``loss_and_grads(model, x, noise)`` returns ``(loss, grads, stats)``: the loss (a float, nats per
  example), ``grads`` with the keys and shapes of ``model.params``, and ``stats``, a dict of
  per-batch figures the trainer records (for the ELBO: the rate and the distortion).

Optionally, ``start_epoch(epoch)``: :func:`minivae.fit` calls it before each epoch (1-based), for
schedules such as the KL warm-up; and ``validation_loss(model, x, n_samples, rng)`` with a
``validation_name``: what :func:`minivae.fit` measures on the validation data after each epoch to
stop early (the -ELBO when an objective has none). Each objective here validates on its own bound,
without its training devices: the ELBO on the -ELBO (β = 1, no warm-up, no free bits), IWAE(k) on
-L_k. (Stopping an IWAE run on the single-sample -ELBO stops it too early: IWAE training tightens
L_k while the ELBO it does not optimise gets worse.)

An objective combines the terms a model computes per sample, log p(x|z) and the KL, with their
hand-written backward (:meth:`minivae.VAE.elbo_terms` and :meth:`~minivae.VAE.elbo_terms_backward`),
so that the same objective trains every model that offers them (the VAE and the two-level VAE).
:func:`minivae.fit` takes one as its ``objective``; write a new objective by following :class:`ELBO`.

* :class:`ELBO`: the negative ELBO with one sample of z, a weight β on the KL, an optional linear KL
  warm-up (β rising to its value over the first epochs) and optional free bits (a floor of λ nats
  per latent dimension on the batch-averaged KL), the two classic remedies for posterior collapse.
* :class:`IWAE`: the importance-weighted bound L_k of Burda et al. (2016) with k samples per example,
  its gradient through the normalised importance weights.
"""

import numpy as np

from . import ops

KL_METHODS = ("analytic", "monte_carlo")


class ELBO:
    """The negative ELBO of a minibatch, with one sample of z per example (the β-VAE loss for β ≠ 1).

    loss = 1/N Σ_n [-log p(x_n|z_n) + β KL_n],   z_n = mu_n + exp(½ logvar_n) · eps_n,

    where KL_n is the analytic KL(q(z|x_n) || p(z)) when the prior has one (``kl="analytic"``), or
    the single-sample Monte Carlo KL, log q(z_n|x_n) - log p(z_n), otherwise (``kl="monte_carlo"``,
    which any prior supports).

    KL warm-up: with ``warmup=E``, the weight on the KL rises linearly from ``warmup_start`` at the
    first epoch to β at epoch E + 1 and stays there: β_e = β · min(1, s + (1 - s)(e - 1) / E).

    Free bits (Kingma et al. 2016): with ``free_bits=λ``, the KL term of the loss is
    Σ_j max(λ, KL̄_j), KL̄_j the batch average of dimension j's KL: a dimension whose average rate is
    below λ nats gets no gradient from the KL (it is free to carry that much information). It needs
    a prior whose KL splits over dimensions in closed form (the standard normal). The loss then is
    not the ELBO; ``stats["rate"]`` still reports the true mean KL.

    Parameters
    ----------
    beta : float ≥ 0, the weight of the KL (1: the ELBO)
    kl : "analytic", "monte_carlo", or None (analytic when the prior has a closed form, else Monte Carlo)
    warmup : int ≥ 1 or None, the number of epochs over which the KL's weight rises to beta
    warmup_start : float in [0, 1], the fraction of beta at the first epoch
    free_bits : float ≥ 0 or None, λ in nats per latent dimension
    """

    def __init__(self, beta=1.0, kl=None, warmup=None, warmup_start=0.0, free_bits=None):
        if isinstance(beta, bool) or not np.isscalar(beta) or not np.isfinite(beta) or beta < 0:
            raise ValueError(f"beta must be a number ≥ 0; got {beta!r}")
        if kl is not None and kl not in KL_METHODS:
            raise ValueError(f"kl must be one of {KL_METHODS} or None; got {kl!r}")
        if warmup is not None and (isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer))
                                   or warmup < 1):
            raise ValueError(f"warmup must be a number of epochs ≥ 1 or None; got {warmup!r}")
        if isinstance(warmup_start, bool) or not np.isscalar(warmup_start) or not 0 <= warmup_start <= 1:
            raise ValueError(f"warmup_start must be a fraction in [0, 1]; got {warmup_start!r}")
        if free_bits is not None and (isinstance(free_bits, bool) or not np.isscalar(free_bits)
                                      or not np.isfinite(free_bits) or free_bits < 0):
            raise ValueError(f"free_bits must be a number of nats ≥ 0 or None; got {free_bits!r}")
        if free_bits is not None and kl == "monte_carlo":
            raise ValueError("free_bits needs the analytic KL per dimension; got kl='monte_carlo'")
        self.beta = float(beta)
        self.kl = kl
        self.warmup = None if warmup is None else int(warmup)
        self.warmup_start = float(warmup_start)
        self.free_bits = None if free_bits is None else float(free_bits)
        self.epoch = 1

    def start_epoch(self, epoch):
        """Called by :func:`minivae.fit` before epoch ``epoch`` (1-based): moves the warm-up along."""
        self.epoch = int(epoch)

    validation_name = "-ELBO"

    def validation_loss(self, model, x, n_samples=1, rng=None):
        """The -ELBO of x per example (``n_samples`` draws of z each): what :func:`minivae.fit` stops on.

        The plain ELBO, whatever β, warm-up and free bits do to the training loss: they are devices of
        training, and the ELBO is the bound on log p(x) that the stopping should compare across epochs.
        """
        return -float(np.mean(model.elbo(x, n_samples=n_samples, rng=rng)))

    def kl_weight(self):
        """The weight on the KL now: β, or its warmed-up fraction at the current epoch."""
        if self.warmup is None:
            return self.beta
        s = self.warmup_start
        return self.beta * min(1.0, s + (1 - s) * (self.epoch - 1) / self.warmup)

    def kl_method(self, model):
        """"analytic" or "monte_carlo", for this model's prior."""
        if self.kl == "analytic" and not model.prior.analytic_kl:
            raise ValueError(f"the {model.prior.name} prior has no analytic KL; use kl='monte_carlo'")
        if self.kl is None:
            return "analytic" if model.prior.analytic_kl else "monte_carlo"
        return self.kl

    def draw_noise(self, model, n, rng):
        """The model's noise for n examples, one sample each: eps (n, latent_dim) for a :class:`minivae.VAE`."""
        return model.draw_noise(n, rng)

    def loss_and_grads(self, model, x, eps):
        """The loss of a minibatch, its gradient, and the batch's rate and distortion.

        loss = 1/N Σ_n [β KL_n - log p(x_n|z_n)]: the model's :meth:`~minivae.VAE.elbo_terms`
        combined, and their backward with dloss/dlog p(x|z) = -1/N and dloss/dKL = β/N per example.

        Parameters
        ----------
        model : :class:`minivae.VAE` (anything with ``elbo_terms`` and ``elbo_terms_backward``)
        x : (N, input_dim) array, checked (see :meth:`minivae.VAE.check_x`)
        eps : from :meth:`draw_noise`

        Returns
        -------
        loss : float, nats per example
        grads : dict with the keys and shapes of ``model.params``
        stats : dict: ``"rate"`` (mean KL) and ``"distortion"`` (mean -log p(x|z)), nats per example
        """
        N, beta = x.shape[0], self.kl_weight()
        if self.free_bits is None:
            # BEGIN SOLUTION
            log_px, kl, cache = model.elbo_terms(x, eps, self.kl_method(model))
            loss = float(np.mean(beta * kl - log_px))
            dkl = np.full(N, beta / N)
            rate = float(np.mean(kl))
            # END SOLUTION
        else:
            if not hasattr(model.prior, "kl_per_dimension"):
                raise ValueError(f"free_bits needs a prior whose KL splits over dimensions in closed form; the "
                                 f"{model.prior.name} prior has none")
            log_px, kl, cache = model.elbo_terms(x, eps, "per_dimension")  # kl: (N, latent_dim)
            kl_mean = kl.mean(axis=0)                                          # KL̄_j
            loss = float(beta * np.sum(np.maximum(self.free_bits, kl_mean)) - np.mean(log_px))
            # d max(λ, KL̄_j) / d KL_nj = [KL̄_j > λ] / N: the floor stops the gradient of a dimension
            dkl = np.broadcast_to((beta / N) * (kl_mean > self.free_bits), kl.shape)
            rate = float(np.sum(kl_mean))
        # BEGIN SOLUTION
        grads = model.elbo_terms_backward(np.full(N, -1 / N), dkl, cache)
        # END SOLUTION
        return loss, grads, {"rate": rate, "distortion": -float(np.mean(log_px))}

    def __repr__(self):
        options = "".join(f", {name}={getattr(self, name)!r}" for name in ("warmup", "free_bits")
                          if getattr(self, name) is not None)
        return f"ELBO(beta={self.beta}, kl={self.kl!r}{options})"


class IWAE:
    """The importance-weighted bound of Burda et al. (2016), with k samples of z per example.

    L_k(x) = log 1/k Σ_i w_i,   log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x),   z_i ~ q(z|x),

    a lower bound on log p(x) that rises with k (L_1 is the ELBO with the Monte Carlo KL). The loss is
    -1/N Σ_n L_k(x_n), and its value is the bound itself. The gradient goes through the normalised
    weights w̃_i = w_i / Σ_j w_j (the log-sum-exp's backward): dL_k/dθ = Σ_i w̃_i d log w_i / dθ, each
    log w_i differentiated through its reparameterized z_i. The encoder runs on the N examples, the
    decoder on the k · N samples.

    ``stats``: ``"bound"`` (the mean L_k), ``"ess"`` (the mean effective sample size of the weights,
    1 / Σ_i w̃_i², between 1 and k), and the rate and distortion of the samples (means of
    log q - log p(z) and of -log p(x|z)).

    Parameters
    ----------
    k : int ≥ 1, the samples per example
    """

    def __init__(self, k=5):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer (samples per example); got {k!r}")
        self.k = int(k)

    @property
    def validation_name(self):
        return f"-L_{self.k}"

    def validation_loss(self, model, x, n_samples=1, rng=None):
        """-L_k of x per example, averaged over ``n_samples`` independent draws of the k samples.

        The bound this objective trains, on the validation data (k decoder rows per example and
        draw, forward only): :func:`minivae.fit` stops when it no longer rises.
        """
        # L_k is the importance-weighted estimate of log p(x) with K = k
        return -float(np.mean([np.mean(model.log_likelihood(x, n_samples=self.k, rng=rng))
                               for _ in range(n_samples)]))

    def draw_noise(self, model, n, rng):
        """The model's noise for k samples of each of n examples: eps (k, n, latent_dim) for a :class:`minivae.VAE`."""
        return model.draw_noise(n, rng, samples=self.k)

    def loss_and_grads(self, model, x, eps):
        """-mean L_k of a minibatch, its gradient, and the batch's bound, ESS, rate and distortion.

        log w = log p(x|z) - (log q(z|x) - log p(z)): the model's :meth:`~minivae.VAE.elbo_terms`
        with the Monte Carlo KL, for k samples; dloss/dlog w_i = -w̃_i / N reaches both terms.

        Parameters
        ----------
        model : :class:`minivae.VAE` (anything with ``elbo_terms`` and ``elbo_terms_backward``)
        x : (N, input_dim) array, checked
        eps : (k, N, ...) array, from :meth:`draw_noise`

        Returns
        -------
        loss : float, -mean L_k, nats per example
        grads : dict with the keys and shapes of ``model.params``
        stats : dict with "bound", "ess", "rate", "distortion"
        """
        N, k = x.shape[0], eps.shape[0]
        # BEGIN SOLUTION
        log_px, kl, cache = model.elbo_terms(x, eps, "monte_carlo")                      # (k, N) each
        log_w = log_px - kl
        log_sum, logsumexp_cache = ops.logsumexp(log_w, axis=0)                          # (N,)
        bound = log_sum - np.log(k)
        loss = -float(np.mean(bound))
        dlog_w = ops.logsumexp_backward(np.full(N, -1 / N), logsumexp_cache)              # -w̃ / N
        grads = model.elbo_terms_backward(dlog_w, -dlog_w, cache)
        # END SOLUTION
        weights = np.exp(log_w - log_sum)                                                 # w̃, (k, N)
        stats = {"bound": float(np.mean(bound)), "ess": float(np.mean(1 / np.sum(weights * weights, axis=0))),
                 "rate": float(np.mean(kl)), "distortion": -float(np.mean(log_px))}
        return loss, grads, stats

    def __repr__(self):
        return f"IWAE(k={self.k})"


OBJECTIVES = ("elbo", "iwae")


def make_objective(spec, beta=1.0, warmup=None, free_bits=None):
    """The objective described by ``spec``: "elbo" or "iwae:K" (with its options), or an object as given."""
    if not isinstance(spec, str):
        return spec
    name, _, count = spec.partition(":")
    if name == "elbo" and not count:
        return ELBO(beta=beta, warmup=warmup, free_bits=free_bits)
    if name == "iwae":
        try:
            k = int(count) if count else 5
        except ValueError:
            raise ValueError(f"objective {spec!r}: the number of samples after ':' must be an integer") from None
        if warmup is not None or free_bits is not None or beta != 1.0:
            raise ValueError("warm-up, free bits and beta belong to the ELBO objective, not to IWAE")
        return IWAE(k)
    raise ValueError(f"objective must be 'elbo' or 'iwae:K'; got {spec!r}")

"""Objectives: what training minimises, as a loss with its gradient with respect to every parameter.

An objective is a small object with one contract (written once for both backends):

* ``draw_noise(model, n, rng)``: the standard normal draws a minibatch of n examples needs;
* ``loss_and_grads(model, x, noise)`` returns ``(loss, grads, stats)``: the loss (a float, nats per
  example), ``grads`` with the keys and shapes of ``model.params``, and ``stats``, a dict of
  per-batch figures the trainer records (for the ELBO: the rate and the distortion).

Optionally, ``start_epoch(epoch)``: :func:`minivae.fit` calls it before each epoch (1-based), for
schedules such as the KL warm-up.

It uses only the model's public pieces: ``model.encoder``, ``model.decoder`` (:class:`minivae.layers.MLP`),
``model.likelihood``, ``model.prior``, ``model.params``, ``model.latent_dim`` and ``model.backend``.
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
        """eps ~ N(0, I), (n, latent_dim), in the model's dtype."""
        return rng.standard_normal((n, model.latent_dim)).astype(model.dtype)

    def loss_and_grads(self, model, x, eps):
        """The loss of a minibatch, its gradient, and the batch's rate and distortion.

        Parameters
        ----------
        model : :class:`minivae.VAE`
        x : (N, input_dim) array, checked (see :meth:`minivae.VAE.check_x`)
        eps : (N, latent_dim) array, from :meth:`draw_noise`

        Returns
        -------
        loss : float, nats per example
        grads : dict with the keys and shapes of ``model.params``
        stats : dict: ``"rate"`` (mean KL) and ``"distortion"`` (mean -log p(x|z)), nats per example
        """
        params, backend, L, N = model.params, model.backend, model.latent_dim, x.shape[0]
        analytic = self.kl_method(model) == "analytic"
        beta = self.kl_weight()
        if self.free_bits is not None and not hasattr(model.prior, "kl_per_dimension"):
            raise ValueError(f"free_bits needs a prior whose KL splits over dimensions in closed form; the "
                             f"{model.prior.name} prior has none")

        # forward: x -> (mu, logvar) -> z -> decoder output -> log p(x|z); and the KL
        h, encoder_cache = model.encoder.forward(params, x, backend)
        mu, logvar = h[:, :L], h[:, L:]
        z, reparameterize_cache = ops.reparameterize(mu, logvar, eps)
        out, decoder_cache = model.decoder.forward(params, z, backend)
        log_px, likelihood_cache = model.likelihood.forward(x, out, params, backend)
        if self.free_bits is not None:
            kl_terms, kl_cache = model.prior.kl_per_dimension(mu, logvar, params)  # (N, L)
            kl = kl_terms.sum(axis=1)
            kl_mean = kl_terms.mean(axis=0)                                          # KL̄_j
            kl_loss = float(np.sum(np.maximum(self.free_bits, kl_mean)))
        elif analytic:
            kl, kl_cache = model.prior.kl(mu, logvar, params)
        else:
            log_qz, q_cache = ops.reparameterized_log_prob(eps, logvar)
            log_pz, prior_cache = model.prior.log_prob(z, params)
            kl = log_qz - log_pz
        if self.free_bits is None:
            loss = float(np.mean(beta * kl - log_px))
        else:
            loss = float(beta * kl_loss - np.mean(log_px))

        # backward: dloss/dlog p(x|z) = -1/N and dloss/dKL = β/N for every example
        grads = {}
        dlog_px = np.full(N, -1 / N, dtype=model.dtype)
        dkl = np.full(N, beta / N, dtype=model.dtype)
        dout = model.likelihood.backward(dlog_px, likelihood_cache, grads)
        dz = model.decoder.backward(dout, decoder_cache, grads, backend=backend)
        if self.free_bits is not None:
            # d max(λ, KL̄_j) / d KL_nj = [KL̄_j > λ] / N: the floor stops the gradient of a dimension
            dkl_terms = np.broadcast_to((beta / N) * (kl_mean > self.free_bits), (N, L)).astype(model.dtype)
            dmu_kl, dlogvar_kl = model.prior.kl_per_dimension_backward(dkl_terms, kl_cache, grads)
        elif analytic:
            dmu_kl, dlogvar_kl = model.prior.kl_backward(dkl, kl_cache, grads)
        else:
            # KL = log q(z|x) - log p(z): -log p(z) reaches z (then mu and logvar through the
            # sample); log q at its own sample depends on logvar alone (see ops.reparameterized_log_prob)
            dz = dz + model.prior.log_prob_backward(-dkl, prior_cache, grads)
            dmu_kl, dlogvar_kl = ops.reparameterized_log_prob_backward(dkl, q_cache)
        dmu, dlogvar = ops.reparameterize_backward(dz, reparameterize_cache)
        dh = np.concatenate([dmu + dmu_kl, dlogvar + dlogvar_kl], axis=1)
        model.encoder.backward(dh, encoder_cache, grads, need_dx=False, backend=backend)
        stats = {"rate": float(np.mean(kl)), "distortion": -float(np.mean(log_px))}
        return loss, complete_grads(grads, params), stats

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

    def draw_noise(self, model, n, rng):
        """eps ~ N(0, I), (k, n, latent_dim), in the model's dtype."""
        return rng.standard_normal((self.k, n, model.latent_dim)).astype(model.dtype)

    def loss_and_grads(self, model, x, eps):
        """-mean L_k of a minibatch, its gradient, and the batch's bound, ESS, rate and distortion.

        Parameters
        ----------
        model : :class:`minivae.VAE`
        x : (N, input_dim) array, checked
        eps : (k, N, latent_dim) array, from :meth:`draw_noise`

        Returns
        -------
        loss : float, -mean L_k, nats per example
        grads : dict with the keys and shapes of ``model.params``
        stats : dict with "bound", "ess", "rate", "distortion"
        """
        params, backend, L, N = model.params, model.backend, model.latent_dim, x.shape[0]
        k = eps.shape[0]

        # forward: one encoder pass, k samples per example, one decoder pass over all k · N of them
        h, encoder_cache = model.encoder.forward(params, x, backend)
        mu, logvar = h[:, :L], h[:, L:]
        z, reparameterize_cache = ops.reparameterize(mu, logvar, eps)                     # (k, N, L)
        out, decoder_cache = model.decoder.forward(params, z.reshape(k * N, L), backend)
        x_repeated = np.broadcast_to(x, (k,) + x.shape).reshape(k * N, -1)
        log_px, likelihood_cache = model.likelihood.forward(x_repeated, out, params, backend)
        log_px = log_px.reshape(k, N)
        log_pz, prior_cache = model.prior.log_prob(z, params)                             # (k, N)
        log_qz, q_cache = ops.reparameterized_log_prob(eps, logvar)                       # (k, N)
        log_w = log_px + log_pz - log_qz
        bound, logsumexp_cache = ops.logsumexp(log_w, axis=0)                             # (N,)
        bound = bound - np.log(k)
        loss = -float(np.mean(bound))

        # backward: dloss/dlog w_i = -w̃_i / N, shared by the three terms of log w
        grads = {}
        dlog_w = ops.logsumexp_backward(np.full(N, -1 / N, dtype=model.dtype), logsumexp_cache)
        dlog_w = dlog_w.astype(model.dtype, copy=False)
        dout = model.likelihood.backward(dlog_w.reshape(k * N), likelihood_cache, grads)
        dz = model.decoder.backward(dout, decoder_cache, grads, backend=backend).reshape(k, N, L)
        dz = dz + model.prior.log_prob_backward(dlog_w, prior_cache, grads)
        dmu_q, dlogvar_q = ops.reparameterized_log_prob_backward(-dlog_w, q_cache)
        dmu, dlogvar = ops.reparameterize_backward(dz, reparameterize_cache)               # summed over k
        dh = np.concatenate([dmu + dmu_q, dlogvar + dlogvar_q], axis=1)
        model.encoder.backward(dh, encoder_cache, grads, need_dx=False, backend=backend)

        weights = np.exp(log_w - (bound + np.log(k)))                                       # w̃, (k, N)
        stats = {"bound": float(np.mean(bound)), "ess": float(np.mean(1 / np.sum(weights * weights, axis=0))),
                 "rate": float(np.mean(log_qz - log_pz)), "distortion": -float(np.mean(log_px))}
        return loss, complete_grads(grads, params), stats

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


def complete_grads(grads, params):
    """``grads`` in the order of ``params``, with zeros for parameters the loss does not depend on."""
    return {key: grads[key] if key in grads else np.zeros_like(value) for key, value in params.items()}

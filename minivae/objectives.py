"""Objectives: what training minimises, as a loss with its gradient with respect to every parameter.

An objective is a small object with one contract (written once for both backends):

* ``draw_noise(model, n, rng)``: the standard normal draws a minibatch of n examples needs;
* ``loss_and_grads(model, x, noise)`` returns ``(loss, grads, stats)``: the loss (a float, nats per
  example), ``grads`` with the keys and shapes of ``model.params``, and ``stats``, a dict of
  per-batch figures the trainer records (for the ELBO: the rate and the distortion).

It uses only the model's public pieces: ``model.encoder``, ``model.decoder`` (:class:`minivae.layers.MLP`),
``model.likelihood``, ``model.prior``, ``model.params``, ``model.latent_dim`` and ``model.backend``.
:func:`minivae.fit` takes one as its ``objective``; write a new objective by following :class:`ELBO`.
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

    Parameters
    ----------
    beta : float ≥ 0, the weight of the KL (1: the ELBO)
    kl : "analytic", "monte_carlo", or None (analytic when the prior has a closed form, else Monte Carlo)
    """

    def __init__(self, beta=1.0, kl=None):
        if isinstance(beta, bool) or not np.isscalar(beta) or not np.isfinite(beta) or beta < 0:
            raise ValueError(f"beta must be a number ≥ 0; got {beta!r}")
        if kl is not None and kl not in KL_METHODS:
            raise ValueError(f"kl must be one of {KL_METHODS} or None; got {kl!r}")
        self.beta = float(beta)
        self.kl = kl

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

        # forward: x -> (mu, logvar) -> z -> decoder output -> log p(x|z); and the KL
        h, encoder_cache = model.encoder.forward(params, x, backend)
        mu, logvar = h[:, :L], h[:, L:]
        z, reparameterize_cache = ops.reparameterize(mu, logvar, eps)
        out, decoder_cache = model.decoder.forward(params, z, backend)
        log_px, likelihood_cache = model.likelihood.forward(x, out, params, backend)
        if analytic:
            kl, kl_cache = model.prior.kl(mu, logvar, params)
        else:
            log_qz, q_cache = ops.reparameterized_log_prob(eps, logvar)
            log_pz, prior_cache = model.prior.log_prob(z, params)
            kl = log_qz - log_pz
        loss = float(np.mean(self.beta * kl - log_px))

        # backward: dloss/dlog p(x|z) = -1/N and dloss/dKL = β/N for every example
        grads = {}
        dlog_px = np.full(N, -1 / N, dtype=model.dtype)
        dkl = np.full(N, self.beta / N, dtype=model.dtype)
        dout = model.likelihood.backward(dlog_px, likelihood_cache, grads)
        dz = model.decoder.backward(dout, decoder_cache, grads, backend=backend)
        if analytic:
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
        return f"ELBO(beta={self.beta}, kl={self.kl!r})"


def complete_grads(grads, params):
    """``grads`` in the order of ``params``, with zeros for parameters the loss does not depend on."""
    return {key: grads[key] if key in grads else np.zeros_like(value) for key, value in params.items()}

"""Evaluating a trained VAE: the ELBO and its parts, the importance-weighted log p(x), active units.

Every function here processes the examples (and the samples of z) in chunks, so that memory stays
bounded whatever the number of rows: at most ``EVAL_CHUNK_ELEMENTS`` numbers in one decoder
activation. They are also :class:`minivae.VAE`'s methods (``model.elbo(x)``, ``model.log_likelihood(x)``),
which check their arguments and call these.
"""

import math

import numpy as np


ACTIVE_UNIT_THRESHOLD = 0.01  # a latent dimension is active when Var_x(E_q[z_j]) exceeds this (Burda et al. 2016)
EVAL_CHUNK_ELEMENTS = 2 ** 22  # at most this many numbers in one decoder activation while evaluating (~16 MB in float32)


def chunk_rows(model):
    """How many rows one evaluation pass may hold: EVAL_CHUNK_ELEMENTS / the model's widest layer."""
    return max(1, EVAL_CHUNK_ELEMENTS // model.widest_layer())


def elbo_parts(model, x, n_samples=1, rng=None, kl="analytic"):
    """The two terms of the ELBO per example, on checked inputs (see :meth:`minivae.VAE.elbo_parts`).

    Parameters
    ----------
    model : :class:`minivae.VAE` (anything with ``elbo_terms`` and ``draw_noise``)
    x : (N, input_dim) array in the model's dtype
    n_samples : int, samples of z ~ q(z|x) averaged for E_q[log p(x|z)] (and a Monte Carlo KL)
    rng : numpy.random.Generator
    kl : "analytic" (the prior's closed form) or "monte_carlo" (log q(z|x) - log p(z), averaged)

    Returns
    -------
    reconstruction : (N,) float64 array, E_q[log p(x|z)]; its negative is the distortion
    kl : (N,) float64 array, KL(q(z|x) || p(z)), the rate
    """
    reconstruction = np.zeros(x.shape[0])
    kl_value = np.zeros(x.shape[0])
    rows = chunk_rows(model)
    for start in range(0, x.shape[0], rows):
        xb = x[start:start + rows]
        for _ in range(n_samples):
            log_px, kl_sample, _ = model.elbo_terms(xb, model.draw_noise(xb.shape[0], rng), kl, need_grad=False)
            reconstruction[start:start + xb.shape[0]] += log_px
            kl_value[start:start + xb.shape[0]] += kl_sample
    return reconstruction / n_samples, kl_value / n_samples


def log_likelihood(model, x, n_samples=512, rng=None):
    """Importance-weighted estimate of log p(x) per example (Burda et al. 2016), on checked inputs.

    log p(x) ≈ log 1/K Σ_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x),

    log w_k = log p(x|z_k) - (log q(z_k|x) - log p(z_k)), the model's :meth:`~minivae.VAE.elbo_terms`
    with the Monte Carlo KL, and a running log-sum-exp (the running max subtracted) over chunks of
    draws. A lower bound in expectation that rises with K towards log p(x); K = 1 is the ELBO.

    Parameters
    ----------
    model : :class:`minivae.VAE` (anything with ``elbo_terms`` and ``draw_noise``)
    x : (N, input_dim) array in the model's dtype
    n_samples : int, K
    rng : numpy.random.Generator

    Returns
    -------
    (N,) float64 array, nats
    """
    K = n_samples
    rows = chunk_rows(model)  # decoder rows in one pass
    n_examples = min(x.shape[0], rows)
    n_draws = max(1, rows // n_examples)
    result = np.empty(x.shape[0])
    for start in range(0, x.shape[0], n_examples):
        xb = x[start:start + n_examples]
        running_max = np.full(xb.shape[0], -np.inf)
        running_sum = np.zeros(xb.shape[0])  # Σ_k exp(log w_k - running_max)
        for k0 in range(0, K, n_draws):
            eps = model.draw_noise(xb.shape[0], rng, samples=min(n_draws, K - k0))
            log_px, kl, _ = model.elbo_terms(xb, eps, "monte_carlo", need_grad=False)   # (k, b) each
            log_w = (log_px - kl).astype(np.float64)
            new_max = np.maximum(running_max, log_w.max(axis=0))
            running_sum = running_sum * np.exp(running_max - new_max) + np.exp(log_w - new_max).sum(axis=0)
            running_max = new_max
        result[start:start + xb.shape[0]] = running_max + np.log(running_sum) - math.log(K)
    return result


def active_units(model, x, threshold=ACTIVE_UNIT_THRESHOLD):
    """The number of latent dimensions j with Var_x(E_q[z_j|x]) > threshold (Burda et al. 2016).

    Parameters
    ----------
    model : :class:`minivae.VAE`
    x : (N, input_dim) array in the model's dtype, N ≥ 2
    threshold : float

    Returns
    -------
    int
    """
    rows = chunk_rows(model)
    mu = np.concatenate([model.encode(x[start:start + rows], check=False)[0] for start in range(0, x.shape[0], rows)])
    return int(np.sum(np.var(mu.astype(np.float64), axis=0) > threshold))


def bits_per_dim(nats, input_dim):
    """Nats per example as bits per dimension: nats / (input_dim · ln 2)."""
    return nats / (input_dim * math.log(2))

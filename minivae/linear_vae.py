"""The linear Gaussian VAE, where the ELBO can be measured against the exact log-likelihood.

A VAE with ``hidden=()`` and ``likelihood="gaussian"`` has a decoder p(x|z) = N(z W + b, σ² I) with
p(z) = N(0, I): a probabilistic PCA. Its log p(x), its ELBO and the gap between them have closed
forms (:mod:`minivae.ppca`), so this is where an ELBO can be checked to the last digit. Here are the
adapters between a :class:`minivae.VAE` and that maths, and the training schedule that brings a
linear VAE to the pPCA maximum (used by ``minivae compare`` and tutorial 05).
"""

import time
from collections import namedtuple

import numpy as np

from .checks import check_rng, positive_int
from .optim import Adam
from .ppca import (PPCA, as_data_matrix, linear_gaussian_elbo, linear_gaussian_log_marginal,
                   linear_gaussian_posterior_gap, optimal_linear_encoder)
from .reference import LINEAR_SCHEDULE

INITIAL_VARIANCE_FLOOR = 1e-6  # the initial σ² for constant data, whose variance is 0


# --------------------------------------------------------------------------------------------------
# Exact quantities of a minivae.VAE with hidden=() and likelihood="gaussian"
# --------------------------------------------------------------------------------------------------

LinearVAEExact = namedtuple("LinearVAEExact", ["log_px", "elbo", "gap"])
LinearVAEExact.__doc__ = """Exact per-example quantities of a linear Gaussian VAE, float64 (n,) arrays, nats.

log_px : log p(x), the pPCA marginal of the decoder
elbo : the ELBO of the model's encoder, in closed form (no sampling)
gap : KL(q(z|x) || p(z|x)), computed on its own; log_px = elbo + gap up to round-off
"""


def linear_vae_arrays(model):
    """The weights of a linear Gaussian VAE as float64 arrays, or a ValueError saying why it is not one.

    Parameters
    ----------
    model : :class:`minivae.VAE` with ``hidden=()`` and ``likelihood="gaussian"``

    Returns
    -------
    W_enc : (d, 2q) array
    b_enc : (2q,) array
    W_dec : (q, d) array
    b_dec : (d,) array
    sigma2 : float, the decoder's variance: exp(params["decoder.logvar"]) when learned, else
        ``model.likelihood.variance``
    """
    if not all(hasattr(model, attribute) for attribute in ("params", "hidden", "likelihood")):
        raise TypeError(f"model must be a minivae.VAE; got {type(model).__name__}")
    hidden, likelihood = tuple(model.hidden), model.likelihood.name
    if hidden != ():
        raise ValueError(f"model must be a linear VAE, built with hidden=() (one linear layer each way); "
                         f"got hidden={hidden}")
    if likelihood != "gaussian":
        raise ValueError(f"model must have a Gaussian decoder, likelihood='gaussian'; got {likelihood!r}")
    params = model.params
    arrays = [np.asarray(params[key], dtype=np.float64) for key in
              ("encoder.0.W", "encoder.0.b", "decoder.0.W", "decoder.0.b")]
    sigma2 = float(np.exp(np.float64(model.likelihood.logvar(params))))
    return (*arrays, sigma2)


def linear_vae_exact(model, x):
    """log p(x), the ELBO and the gap KL(q(z|x) || p(z|x)) of a linear Gaussian VAE, exactly.

    The decoder p(x|z) = N(z @ W_dec + b_dec, sigma2 I) with p(z) = N(0, I) is a pPCA, so
    (see :func:`linear_gaussian_log_marginal`, :func:`linear_gaussian_elbo`,
    :func:`linear_gaussian_posterior_gap`)::

        log p(x) = log N(x | b_dec, W_decᵀ W_dec + sigma2 I)
        ELBO(x)  = E_q[log p(x|z)] - KL(q(z|x) || p(z))        in closed form
        gap(x)   = KL(q(z|x) || p(z|x))                        against the true posterior

    The three are computed separately, so ``log_px == elbo + gap`` is a check, not a definition.
    Everything is float64 whatever the model's dtype.

    Parameters
    ----------
    model : :class:`minivae.VAE` with ``hidden=()`` and ``likelihood="gaussian"``
    x : (n, d) array

    Returns
    -------
    LinearVAEExact(log_px, elbo, gap), each an (n,) float64 array, nats

    Raises
    ------
    ValueError
        if the model is not linear and Gaussian, or x does not have d finite columns
    """
    W_enc, b_enc, W_dec, b_dec, sigma2 = linear_vae_arrays(model)
    q, d = W_dec.shape
    x = as_data_matrix(x, "x")
    if x.shape[1] != d:
        raise ValueError(f"x has {x.shape[1]} columns; the model expects input_dim={d}")
    y = x @ W_enc + b_enc                                            # (n, 2q), the encoder in float64
    mu, logvar = y[:, :q], y[:, q:]
    return LinearVAEExact(
        log_px=linear_gaussian_log_marginal(x, W_dec, b_dec, sigma2),
        elbo=linear_gaussian_elbo(x, mu, logvar, W_dec, b_dec, sigma2),
        gap=linear_gaussian_posterior_gap(x, mu, logvar, W_dec, b_dec, sigma2),
    )


def set_optimal_encoder(model):
    """Overwrite the encoder of a linear Gaussian VAE with the best one for its current decoder.

    The encoder becomes :func:`optimal_linear_encoder` of (W_dec, b_dec, sigma2): its mean is the
    true posterior mean M⁻¹ W_dec (x - b_dec) and its variance the diagonal of sigma2 M⁻¹, with
    M = W_dec W_decᵀ + sigma2 I. This maximises the ELBO over linear encoders for the fixed
    decoder. The gap that remains is the price of a diagonal q(z|x); it is 0 exactly when
    W_dec W_decᵀ is diagonal. The parameter arrays are written in place (their dtype is kept).

    Parameters
    ----------
    model : :class:`minivae.VAE` with ``hidden=()`` and ``likelihood="gaussian"``

    Returns
    -------
    model, for chaining
    """
    _, _, W_dec, b_dec, sigma2 = linear_vae_arrays(model)
    W_enc, b_enc = optimal_linear_encoder(W_dec, b_dec, sigma2)
    model.params["encoder.0.W"][...] = W_enc
    model.params["encoder.0.b"][...] = b_enc
    return model


def linear_vae_from_ppca(ppca, learn_variance=False, dtype=np.float64, seed=0):
    """The linear Gaussian VAE that a fitted pPCA is, with the optimal encoder.

    Decoder ``W_dec = ppca.W_.T``, ``b_dec = ppca.mean_``, variance ``ppca.noise_variance_``;
    encoder from :func:`optimal_linear_encoder`. Because the columns of ``W_`` are orthogonal the
    encoder is the exact posterior: the ELBO equals ``ppca.log_likelihood`` (and after
    :meth:`PPCA.fit`, its training mean is ``ppca.max_log_likelihood()``).

    Parameters
    ----------
    ppca : :class:`PPCA`, fitted
    learn_variance : bool, whether the VAE's sigma2 is a trained parameter ("decoder.logvar")
    dtype : numpy.float64 (default, for exact comparisons) or numpy.float32
    seed : int, the VAE's seed (its own random generator ``model.rng``)

    Returns
    -------
    :class:`minivae.VAE` with ``hidden=()``, ``likelihood="gaussian"``
    """
    from .vae import VAE    # here, not at the top: the VAE imports the optimizers this module uses too

    if not isinstance(ppca, PPCA):
        raise TypeError(f"ppca must be a fitted minivae.ppca.PPCA; got {type(ppca).__name__}")
    params, sigma2 = ppca.to_linear_vae_params()
    model = VAE(ppca.n_features_in_, ppca.n_components, hidden=(), likelihood="gaussian",
                variance=sigma2, learn_variance=learn_variance, seed=seed, dtype=dtype)
    if learn_variance:
        params["decoder.logvar"] = np.full(1, np.log(sigma2))
    model.set_params(params)
    return model


# --------------------------------------------------------------------------------------------------
# Training with the ordinary loss, traced exactly
# --------------------------------------------------------------------------------------------------

def learning_rate(progress, lr=LINEAR_SCHEDULE.lr, final_lr=LINEAR_SCHEDULE.final_lr,
                  constant_fraction=LINEAR_SCHEDULE.constant_fraction):
    """The schedule of :func:`train_linear_vae`: constant, then exponential decay.

    lr(p) = lr                                           for p ≤ c
    lr(p) = lr · (final_lr / lr) ** ((p - c) / (1 - c))  for p > c

    Parameters
    ----------
    progress : float in [0, 1], the share of training done
    lr, final_lr : floats > 0
    constant_fraction : float in [0, 1), c

    Returns
    -------
    float
    """
    if progress <= constant_fraction:
        return lr
    decayed = (min(progress, 1.0) - constant_fraction) / (1.0 - constant_fraction)
    return lr * (final_lr / lr) ** decayed


def train_linear_vae(model, x_train, rng, steps=LINEAR_SCHEDULE.steps, seconds=LINEAR_SCHEDULE.seconds,
                     batch_size=LINEAR_SCHEDULE.batch_size, lr=LINEAR_SCHEDULE.lr, final_lr=LINEAR_SCHEDULE.final_lr,
                     trace_points=LINEAR_SCHEDULE.trace_points, callback=None):
    """Train a linear Gaussian VAE with the ordinary loss, and trace its exact training ELBO.

    Every step is one call of :meth:`minivae.VAE.loss_and_grads` on a minibatch (a single-sample,
    reparameterized estimate of the -ELBO gradient) and one :class:`minivae.optim.Adam` step. The
    learning rate follows :func:`learning_rate` of the progress ``max(step / steps, elapsed /
    seconds)``: on a fast machine the run is fixed by ``steps`` and reproducible from ``rng``; on a
    slow one the same schedule is compressed to end within ``seconds``.

    Before the first step the decoder starts where pPCA's EM does: its bias at the mean of
    ``x_train`` (the pPCA mean, and the first thing any Gaussian decoder learns) and, when learned,
    σ² at the average variance per dimension tr(S)/d. The steps then go to the interesting directions.

    The trace is exact: at about ``trace_points`` steps, geometrically spaced, the mean training ELBO
    and log p(x) are computed in closed form by :func:`minivae.ppca.linear_gaussian_elbo` and
    :func:`minivae.ppca.linear_gaussian_log_marginal` (no sampling).

    ``callback(step, model)``, if given, is called after every step (to snapshot weights, say).

    Parameters
    ----------
    model : :class:`minivae.VAE` with ``hidden=()`` and ``likelihood="gaussian"``, trained in place
    x_train : (n, d) array
    rng : numpy.random.Generator, for the minibatch order and every eps
    steps : int, the planned number of optimizer steps
    seconds : float > 0, the time budget
    batch_size : int
    lr, final_lr : floats, the schedule's start and end
    trace_points : int
    callback : callable(step, model) or None

    Returns
    -------
    dict with
        "step" : list of int, the steps at which the trace was taken (0 = before training)
        "train_elbo", "train_log_px" : lists of float, the closed-form mean training ELBO and exact
            mean log p(x) at those steps, nats per example
        "steps" : int, steps taken
        "epochs" : float, steps * batch_size / n
        "seconds" : float, wall-clock time of training and tracing
        "stopped_by_time_budget" : bool, whether the schedule was compressed to fit ``seconds``
    """
    linear_vae_arrays(model)                                        # a ValueError if not linear Gaussian
    check_rng(rng)
    steps = positive_int(steps, "steps")
    batch_size = positive_int(batch_size, "batch_size")
    if not (isinstance(seconds, (int, float)) and seconds > 0):
        raise ValueError(f"seconds must be a positive number; got {seconds!r}")
    x_train = model.check_x(x_train, "x_train")
    n = x_train.shape[0]
    batch_size = min(batch_size, n)
    trace_at = set(np.unique(np.geomspace(1, steps, max(2, trace_points)).astype(int)).tolist())

    model.params["decoder.0.b"][...] = x_train.mean(axis=0)
    if "decoder.logvar" in model.params:
        variance = max(float(np.mean(np.var(x_train, axis=0))), INITIAL_VARIANCE_FLOOR)
        model.params["decoder.logvar"][...] = np.log(variance)
    optimizer = Adam(lr=lr)
    trace = {"step": [], "train_elbo": [], "train_log_px": []}

    def record(step):
        W_enc, b_enc, W_dec, b_dec, sigma2 = linear_vae_arrays(model)
        q = W_dec.shape[0]
        y = x_train @ W_enc + b_enc
        elbo = linear_gaussian_elbo(x_train, y[:, :q], y[:, q:], W_dec, b_dec, sigma2)
        trace["step"].append(int(step))
        trace["train_elbo"].append(float(np.mean(elbo)))
        trace["train_log_px"].append(float(np.mean(linear_gaussian_log_marginal(x_train, W_dec, b_dec, sigma2))))

    start = time.perf_counter()
    record(0)
    step, by_time, order, position = 0, False, rng.permutation(n), 0
    while True:
        elapsed = time.perf_counter() - start
        progress = max(step / steps, elapsed / seconds)
        if progress >= 1.0:
            by_time = step < steps
            break
        if position + batch_size > n:                  # a new epoch (a last, partial batch is skipped)
            order, position = rng.permutation(n), 0
        batch = x_train[order[position:position + batch_size]]
        position += batch_size
        optimizer.lr = learning_rate(progress, lr, final_lr)
        _, grads = model.loss_and_grads(batch, rng=rng)
        optimizer.step(model.params, grads)
        step += 1
        if callback is not None:
            callback(step, model)
        if step in trace_at:
            record(step)
    if trace["step"][-1] != step:
        record(step)
    return dict(trace, steps=step, epochs=step * batch_size / n, seconds=time.perf_counter() - start,
                stopped_by_time_budget=by_time)

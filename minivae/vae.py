"""The variational autoencoder: an encoder, a prior, a decoder likelihood, and the ELBO that joins them.

    encoder      x ──MLP──> [mu, logvar]              q(z|x) = N(mu, diag(exp(logvar)))
    sample       z = mu + exp(0.5 logvar) * eps       eps ~ N(0, I)
    decoder      z ──MLP──> out                        p(x|z) from out (mean, logits)
    ELBO(x)    = E_q[log p(x|z)] - KL(q(z|x) || p(z))  ≤ log p(x)

:meth:`VAE.loss_and_grads` runs this forward and then backward by hand, one chain-rule step at a time,
each step calling the backward written beside its forward in :mod:`minivae.layers` and
:mod:`minivae.distributions`.
"""

import json

import numpy as np

from .distributions import LIKELIHOODS, LOG_2PI, StandardNormal, make_likelihood, reparameterize, \
    reparameterize_backward
from . import backend as backends
from .checks import check_rng, positive_int
from .layers import ACTIVATIONS, MLP

KL_METHODS = ("analytic", "monte_carlo")
ACTIVE_UNIT_THRESHOLD = 0.01  # a latent dimension is active when Var_x(E_q[z_j]) exceeds this (Burda et al. 2016)
EVAL_CHUNK_ELEMENTS = 2 ** 22  # at most this many numbers in one decoder activation while evaluating (~16 MB in float32)
CONFIG_KEY = "__config__"  # where a checkpoint keeps the model's settings, as a JSON string


class VAE:
    """A variational autoencoder with MLP encoder and decoder, every gradient written by hand.

    Parameters
    ----------
    input_dim : int, D, the number of data dimensions (64 for the 8x8 digits)
    latent_dim : int, the number of latent dimensions
    hidden : tuple of int, the hidden widths of the encoder; the decoder mirrors them. ``()`` gives a
        linear encoder and decoder
    activation : one of "leaky_relu" (slope 0.01), "relu", "tanh", "sigmoid"
    likelihood : "categorical" (num_values logits per dimension), "bernoulli" (logits) or "gaussian"
        (the decoder outputs the mean; σ² = ``variance``, learned when ``learn_variance``)
    num_values : int, the number of values per dimension for the categorical likelihood
    variance, learn_variance : the Gaussian likelihood's σ² (or its initial value) and whether it is learned
    kl : "analytic" (the exact KL to N(0, I)) or "monte_carlo" (log q(z|x) - log p(z) at the sampled z)
        in the training loss
    beta : float ≥ 0, the weight of the KL in the training loss (β-VAE; 1 is the ELBO)
    seed : int, seeds the initial weights and the model's own random generator ``model.rng``
    dtype : numpy.float32 (default, fast) or numpy.float64 (for gradient checks)
    backend : "numpy" (the readable reference), "numba" (compiled kernels) or None (the current
        backend, see :func:`minivae.set_backend`); the attribute ``model.backend`` can be changed later

    Attributes
    ----------
    params : dict name -> array, in order; the model's only state. Linear layer i of the encoder has
        ``"encoder.{i}.W"`` (in, out) and ``"encoder.{i}.b"`` (out,) with y = x @ W + b; likewise the
        decoder; ``"decoder.logvar"`` (1,) holds a learned Gaussian log σ²
    encoder, decoder : :class:`minivae.layers.MLP`
    prior : :class:`minivae.distributions.StandardNormal`
    likelihood : the decoder's distribution, from :mod:`minivae.distributions`
    rng : numpy.random.Generator used where a method is given no ``rng``

    Examples
    --------
    >>> import minivae
    >>> x_train, _ = minivae.datasets.load_digits("train")
    >>> model = minivae.VAE(input_dim=64, latent_dim=16)
    >>> loss, grads = model.loss_and_grads(x_train[:64])
    """

    def __init__(self, input_dim, latent_dim, hidden=(256, 256), activation="leaky_relu",
                 likelihood="categorical", num_values=17, variance=1.0, learn_variance=False,
                 kl="analytic", beta=1.0, seed=0, dtype=np.float32, backend=None):
        input_dim = positive_int(input_dim, "input_dim")
        latent_dim = positive_int(latent_dim, "latent_dim")
        if isinstance(hidden, (int, np.integer)):
            hidden = (hidden,)
        hidden = tuple(positive_int(h, "hidden") for h in hidden)
        if activation not in ACTIVATIONS or activation == "identity":
            raise ValueError(f"activation must be one of {sorted(set(ACTIVATIONS) - {'identity'})}; "
                             f"got {activation!r}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}; got {likelihood!r}")
        if kl not in KL_METHODS:
            raise ValueError(f"kl must be one of {KL_METHODS}; got {kl!r}")
        if not np.isscalar(beta) or not np.isfinite(beta) or beta < 0:
            raise ValueError(f"beta must be a number ≥ 0; got {beta!r}")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64; got {dtype}")

        self.config = dict(input_dim=input_dim, latent_dim=latent_dim, hidden=list(hidden),
                           activation=activation, likelihood=likelihood, num_values=int(num_values),
                           variance=float(variance), learn_variance=bool(learn_variance), kl=kl,
                           beta=float(beta), seed=int(seed), dtype=dtype.name)
        self.input_dim, self.latent_dim, self.hidden = input_dim, latent_dim, hidden
        self.kl_method, self.beta, self.dtype = kl, float(beta), dtype
        self.backend = None if backend is None else backends.check_backend(backend)
        self.likelihood = make_likelihood(likelihood, num_values, variance, learn_variance)
        self.prior = StandardNormal()
        self.encoder = MLP("encoder", [input_dim, *hidden, 2 * latent_dim], activation)
        self.decoder = MLP("decoder", [latent_dim, *hidden[::-1], self.likelihood.output_dim(input_dim)],
                           activation)

        init_seed, sampling_seed = np.random.SeedSequence(seed).spawn(2)
        init_rng = np.random.default_rng(init_seed)
        self.params = {}
        self.params.update(self.encoder.init_params(init_rng, dtype))
        self.params.update(self.decoder.init_params(init_rng, dtype))
        self.params.update(self.likelihood.init_params(dtype))
        self.rng = np.random.default_rng(sampling_seed)

    # ---------------------------------------------------------------------------------------------
    # Training loss: forward, then backward by hand
    # ---------------------------------------------------------------------------------------------

    def loss_and_grads(self, x, eps=None, rng=None):
        """The negative ELBO of a minibatch and its gradient with respect to every parameter.

        loss = 1/N Σ_n [-log p(x_n|z_n) + β KL(q(z|x_n) || p(z))],  z_n = mu_n + exp(logvar_n / 2) * eps_n,

        a single-sample estimate of the mean -ELBO (exact in the KL term when ``kl="analytic"``).

        Parameters
        ----------
        x : (N, input_dim) array
        eps : (N, latent_dim) array of standard normal draws; given, the loss is deterministic
        rng : numpy.random.Generator for eps when eps is None (default: ``self.rng``)

        Returns
        -------
        loss : float, nats per example
        grads : dict with the keys and shapes of ``params``, dloss/dparam
        """
        x = self._check_x(x)
        if eps is None:
            eps = self._rng(rng).standard_normal((x.shape[0], self.latent_dim)).astype(self.dtype)
        else:
            eps = self._check_eps(eps, x.shape[0])
        return self._loss_and_grads(x, eps)

    def _loss_and_grads(self, x, eps):
        """:meth:`loss_and_grads` on inputs already checked: the reference computation in NumPy."""
        if backends.resolve(self.backend) == "numba" and self.kl_method == "analytic":
            return self._loss_and_grads_numba(x, eps)
        params, N, L = self.params, x.shape[0], self.latent_dim

        # forward
        h, encoder_cache = self.encoder.forward(params, x, "numpy")
        mu, logvar = h[:, :L], h[:, L:]
        z, reparameterize_cache = reparameterize(mu, logvar, eps)
        out, decoder_cache = self.decoder.forward(params, z, "numpy")
        log_px, likelihood_cache = self.likelihood.forward(x, out, params)
        if self.kl_method == "analytic":
            kl = self.prior.kl(mu, logvar)
        else:
            kl = self.prior.kl_monte_carlo(z, mu, logvar)
        loss = float(np.mean(self.beta * kl - log_px))

        # backward: dloss/dlog p(x|z) = -1/N and dloss/dKL = β/N for every example
        grads = {}
        dlog_px = np.full(N, -1 / N, dtype=self.dtype)
        dkl = np.full(N, self.beta / N, dtype=self.dtype)
        dout = self.likelihood.backward(dlog_px, likelihood_cache, grads)
        dz = self.decoder.backward(dout, decoder_cache, grads)
        if self.kl_method == "analytic":
            dmu, dlogvar = reparameterize_backward(dz, reparameterize_cache)
            dmu_kl, dlogvar_kl = self.prior.kl_backward(dkl, mu, logvar)
            dmu, dlogvar = dmu + dmu_kl, dlogvar + dlogvar_kl
        else:
            # With z = mu + std * eps, log q(z|x) - log p(z) = 1/2 Σ_j (z_j² - logvar_j - eps_j²):
            # its gradient reaches z (then mu and logvar through the sample) and logvar directly.
            dmu, dlogvar = reparameterize_backward(dz + dkl[:, None] * z, reparameterize_cache)
            dlogvar = dlogvar - 0.5 * dkl[:, None]
        self.encoder.backward(np.concatenate([dmu, dlogvar], axis=1), encoder_cache, grads)
        return loss, {key: grads[key] for key in params}

    def _loss_and_grads_numba(self, x, eps):
        """The computation of :meth:`_loss_and_grads`, step for step, with the compiled kernels.

        Read :meth:`_loss_and_grads` first: here the layers run as fused kernels, the sample and
        the KL (and their backward) are one kernel each, and the categorical log-softmax computes
        log p(x|z) and its gradient in the same pass.
        """
        kernels = backends.kernels()
        params, N, L = self.params, x.shape[0], self.latent_dim
        grads = {}
        dlog_px = np.full(N, -1 / N, dtype=self.dtype)
        dkl = np.full(N, self.beta / N, dtype=self.dtype)

        h, encoder_cache = self.encoder.forward(params, x, "numba")
        mu, logvar = np.ascontiguousarray(h[:, :L]), np.ascontiguousarray(h[:, L:])
        z, kl = kernels.reparameterize_kl(mu, logvar, eps)
        out, decoder_cache = self.decoder.forward(params, z, "numba")
        if self.likelihood.name == "categorical":
            log_px, dout = kernels.categorical_loglik_and_grad(out, x.astype(np.int64), weight=dlog_px)
        else:
            log_px, likelihood_cache = self.likelihood.forward(x, out, params)
            dout = self.likelihood.backward(dlog_px, likelihood_cache, grads)
        loss = float(np.mean(self.beta * kl - log_px))

        dz = self.decoder.backward(dout, decoder_cache, grads)
        dmu, dlogvar = kernels.reparameterize_kl_backward(dz, mu, logvar, eps, dkl)
        self.encoder.backward(np.concatenate([dmu, dlogvar], axis=1), encoder_cache, grads, need_dx=False)
        return loss, {key: grads[key] for key in params}

    # ---------------------------------------------------------------------------------------------
    # Encoder, decoder, sampling
    # ---------------------------------------------------------------------------------------------

    def encode(self, x):
        """The posterior's parameters.

        Parameters
        ----------
        x : (N, input_dim) array

        Returns
        -------
        mu, logvar : (N, latent_dim) arrays, q(z|x) = N(mu, diag(exp(logvar)))
        """
        return self._encode(self._check_x(x))

    def _encode(self, x):
        h, _ = self.encoder.forward(self.params, x, self.backend)
        return h[:, :self.latent_dim], h[:, self.latent_dim:]

    def _log_px(self, x, out):
        """log p(x|z) per example from the decoder output ``out``, (N,): the likelihood's NumPy code, or
        under the numba backend the compiled categorical log-softmax (the bulk of an evaluation)."""
        if self.likelihood.name == "categorical" and backends.resolve(self.backend) == "numba":
            return backends.kernels().categorical_loglik(out, x.astype(np.int64))
        return self.likelihood.log_prob(x, out, self.params)

    def _decode(self, z):
        return self.decoder.forward(self.params, np.ascontiguousarray(z), self.backend)[0]

    def decode(self, z, mean=False):
        """The parameters of p(x|z), or its mean.

        Parameters
        ----------
        z : (N, latent_dim) array
        mean : bool; if True return E[x|z], (N, input_dim), an image for every likelihood

        Returns
        -------
        categorical: probabilities (N, input_dim, num_values); bernoulli: probabilities (N, input_dim);
        gaussian: the mean (N, input_dim)
        """
        z = self._check_array(z, "z", self.latent_dim, "latent_dim")
        out = self._decode(z)
        if mean:
            return self.likelihood.mean(out, self.params)
        return self.likelihood.distribution_params(out, self.params)

    def sample(self, n, rng=None, mean=False):
        """Draw from the model: z ~ p(z), then x ~ p(x|z).

        Parameters
        ----------
        n : int, the number of draws
        rng : numpy.random.Generator (default ``self.rng``)
        mean : bool; if True return E[x|z] instead of a draw of x (smoother images)

        Returns
        -------
        x : (n, input_dim) array
        """
        n = positive_int(n, "n")
        rng = self._rng(rng)
        out = self._decode(self.prior.sample(n, self.latent_dim, rng, self.dtype))
        if mean:
            return self.likelihood.mean(out, self.params)
        return self.likelihood.sample(out, self.params, rng)

    def reconstruct(self, x):
        """E[x | z = mu(x)]: the mean of the decoder at the posterior mean, (N, input_dim)."""
        mu, _ = self.encode(x)
        return self.likelihood.mean(self._decode(mu), self.params)

    # ---------------------------------------------------------------------------------------------
    # The ELBO, its parts, and the marginal likelihood
    # ---------------------------------------------------------------------------------------------

    def elbo_parts(self, x, n_samples=1, rng=None, kl="analytic"):
        """The two terms of the ELBO, per example.

        Parameters
        ----------
        x : (N, input_dim) array
        n_samples : int, samples of z ~ q(z|x) averaged for E_q[log p(x|z)] (and a Monte Carlo KL)
        rng : numpy.random.Generator (default ``self.rng``)
        kl : "analytic" or "monte_carlo"

        Returns
        -------
        reconstruction : (N,) array, E_q[log p(x|z)]; its negative is the distortion
        kl : (N,) array, KL(q(z|x) || p(z)), the rate
        """
        x = self._check_x(x)
        n_samples = positive_int(n_samples, "n_samples")
        if kl not in KL_METHODS:
            raise ValueError(f"kl must be one of {KL_METHODS}; got {kl!r}")
        rng = self._rng(rng)
        mu, logvar = self._encode(x)
        reconstruction = np.zeros(x.shape[0])
        kl_sum = np.zeros(x.shape[0])
        for _ in range(n_samples):
            eps = rng.standard_normal(mu.shape).astype(self.dtype)
            z, _ = reparameterize(mu, logvar, eps)
            reconstruction += self._log_px(x, self._decode(z))
            if kl == "monte_carlo":
                kl_sum += self.prior.kl_monte_carlo(z, mu, logvar)
        kl_value = kl_sum / n_samples if kl == "monte_carlo" else self.prior.kl(mu, logvar)
        return reconstruction / n_samples, np.asarray(kl_value, dtype=np.float64)

    def elbo(self, x, n_samples=1, rng=None):
        """The evidence lower bound per example, E_q[log p(x|z)] - KL(q(z|x) || p(z)) ≤ log p(x).

        With the analytic KL and ``n_samples`` draws of z for the reconstruction term. This is the
        bound, not an estimate of log p(x): for that use :meth:`log_likelihood`.

        Parameters
        ----------
        x : (N, input_dim) array
        n_samples : int
        rng : numpy.random.Generator (default ``self.rng``)

        Returns
        -------
        (N,) array, nats
        """
        reconstruction, kl = self.elbo_parts(x, n_samples, rng)
        return reconstruction - kl

    def kl(self, x, method="analytic", n_samples=1, rng=None):
        """KL(q(z|x) || p(z)) per example, analytic or averaged over ``n_samples`` Monte Carlo draws, (N,)."""
        return self.elbo_parts(x, n_samples, rng, kl=method)[1]

    def log_likelihood(self, x, n_samples=512, rng=None):
        """Importance-weighted estimate of log p(x) per example (Burda et al. 2016).

        log p(x) ≈ log 1/K Σ_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x),

        computed with a running logsumexp. It is a lower bound in expectation that rises with K towards
        log p(x); K = 1 is the ELBO. With K ≥ 512 it is the number to report as test NLL (negated).
        Examples and samples are processed in chunks, so memory stays bounded for any ``n_samples``.

        Parameters
        ----------
        x : (N, input_dim) array
        n_samples : int, K
        rng : numpy.random.Generator (default ``self.rng``)

        Returns
        -------
        (N,) float64 array, nats
        """
        x = self._check_x(x)
        K = positive_int(n_samples, "n_samples")
        rng = self._rng(rng)
        widest = max(self.decoder.sizes)
        rows = max(1, EVAL_CHUNK_ELEMENTS // widest)  # decoder rows in one pass
        n_examples = min(x.shape[0], rows)
        n_draws = max(1, rows // n_examples)
        result = np.empty(x.shape[0])
        for start in range(0, x.shape[0], n_examples):
            xb = x[start:start + n_examples]
            mu, logvar = self._encode(xb)
            running_max = np.full(xb.shape[0], -np.inf)
            running_sum = np.zeros(xb.shape[0])  # Σ_k exp(log w_k - running_max)
            for k0 in range(0, K, n_draws):
                k = min(n_draws, K - k0)
                eps = rng.standard_normal((k,) + mu.shape).astype(self.dtype)
                z, _ = reparameterize(mu, logvar, eps)  # (k, b, latent_dim)
                out = self._decode(z.reshape(-1, self.latent_dim))
                x_rep = np.broadcast_to(xb, (k,) + xb.shape).reshape(-1, xb.shape[1])
                log_px = self._log_px(x_rep, out).reshape(k, -1)
                log_w = (log_px + self.prior.log_prob(z)
                         - _diagonal_gaussian_log_prob_from_eps(eps, logvar)).astype(np.float64)
                new_max = np.maximum(running_max, log_w.max(axis=0))
                running_sum = (running_sum * np.exp(running_max - new_max)
                               + np.exp(log_w - new_max).sum(axis=0))
                running_max = new_max
            result[start:start + xb.shape[0]] = running_max + np.log(running_sum) - np.log(K)
        return result

    def active_units(self, x, threshold=ACTIVE_UNIT_THRESHOLD):
        """The number of latent dimensions j with Var_x(E_q[z_j|x]) > threshold (Burda et al. 2016).

        Parameters
        ----------
        x : (N, input_dim) array, N ≥ 2
        threshold : float

        Returns
        -------
        int
        """
        mu, _ = self.encode(x)
        return int(np.sum(np.var(mu.astype(np.float64), axis=0) > threshold))

    # ---------------------------------------------------------------------------------------------
    # Saving and loading (.npz, no pickle)
    # ---------------------------------------------------------------------------------------------

    def save(self, path):
        """Write the parameters and the settings to an ``.npz`` file that loads without pickle."""
        config = dict(self.config, beta=self.beta)  # beta is a public attribute that may have changed
        np.savez(path, **{CONFIG_KEY: np.array(json.dumps(config))}, **self.params)

    @classmethod
    def load(cls, path):
        """A model rebuilt from a file written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as archive:
            if CONFIG_KEY not in archive.files:
                raise ValueError(f"{path} holds no model settings ({CONFIG_KEY!r}); was it written by "
                                 f"VAE.save? Build the model and use model.load_params(path) instead")
            config = json.loads(str(archive[CONFIG_KEY]))
            arrays = {key: archive[key] for key in archive.files if key != CONFIG_KEY}
        config["hidden"] = tuple(config["hidden"])
        model = cls(**config)
        model.set_params(arrays)
        return model

    def load_params(self, path):
        """Read parameters written by :meth:`save` (or ``np.savez(path, **params)``) into this model."""
        with np.load(path, allow_pickle=False) as archive:
            self.set_params({key: archive[key] for key in archive.files if key != CONFIG_KEY})

    def set_params(self, arrays):
        """Copy ``arrays`` (name -> array) into ``params`` in place, after checking names and shapes."""
        missing = [key for key in self.params if key not in arrays]
        unexpected = [key for key in arrays if key not in self.params]
        if missing or unexpected:
            raise ValueError(f"the parameters do not match this model: missing {missing}, "
                             f"unexpected {unexpected}")
        for key, value in arrays.items():
            if value.shape != self.params[key].shape:
                raise ValueError(f"parameter {key!r} has shape {value.shape}; this model expects "
                                 f"{self.params[key].shape}")
        for key, value in arrays.items():
            self.params[key][...] = value

    @property
    def n_params(self):
        """The number of scalar parameters."""
        return sum(value.size for value in self.params.values())

    def __repr__(self):
        return (f"VAE(input_dim={self.input_dim}, latent_dim={self.latent_dim}, hidden={self.hidden}, "
                f"activation={self.config['activation']!r}, likelihood={self.config['likelihood']!r}, "
                f"dtype={self.dtype.name}, backend={backends.resolve(self.backend)!r}, n_params={self.n_params})")

    # ---------------------------------------------------------------------------------------------
    # Input checks
    # ---------------------------------------------------------------------------------------------

    def _rng(self, rng):
        return self.rng if rng is None else check_rng(rng)

    def _check_array(self, a, name, n_columns, what):
        if not isinstance(a, np.ndarray):
            a = np.asarray(a)
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be a numeric array; got dtype {a.dtype}")
        if a.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array (n_examples, {n_columns}); got shape {a.shape}"
                             + (f" (use {name}.reshape(1, -1) for one example)" if a.ndim == 1 else ""))
        if a.shape[1] != n_columns:
            raise ValueError(f"{name} has {a.shape[1]} columns; the model expects {what}={n_columns}")
        if a.shape[0] == 0:
            raise ValueError(f"{name} has no rows")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or infinite values")
        return a.astype(self.dtype, copy=False)

    def _check_x(self, x, name="x"):
        x = self._check_array(x, name, self.input_dim, "input_dim")
        self.likelihood.check_data(x, name)
        return x

    def _check_eps(self, eps, n):
        eps = self._check_array(eps, "eps", self.latent_dim, "latent_dim")
        if eps.shape[0] != n:
            raise ValueError(f"eps has {eps.shape[0]} rows; x has {n}")
        return np.ascontiguousarray(eps)


def _diagonal_gaussian_log_prob_from_eps(eps, logvar):
    """log q(z|x) at z = mu + std * eps, from eps: -1/2 Σ_j (log 2π + logvar_j + eps_j²).

    The same number as ``diagonal_gaussian_log_prob(z, mu, logvar)``, without dividing by a variance
    that may be tiny.
    """
    return -0.5 * np.sum(LOG_2PI + logvar + eps * eps, axis=-1)


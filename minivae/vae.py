"""The variational autoencoder: an encoder, a decoder, a likelihood and a prior, composed.

    encoder      x ──MLP──> [mu, logvar]              q(z|x) = N(mu, diag(exp(logvar)))
    sample       z = mu + exp(½ logvar) · eps          eps ~ N(0, I)
    decoder      z ──MLP──> out                        p(x|z) from out (mean, logits): the likelihood
    prior        p(z), N(0, I) by default              :mod:`minivae.priors`
    ELBO(x)    = E_q[log p(x|z)] - KL(q(z|x) || p(z))  ≤ log p(x)

The VAE holds the pieces and the parameters and offers encode, decode, sample, save and load, and
the two terms every ELBO-like objective is made of, per sample: :meth:`VAE.elbo_terms` computes
log p(x|z) and the KL as one chain of leaf operations (encoder, reparameterization, decoder,
likelihood, prior), and :meth:`VAE.elbo_terms_backward` runs the same chain backward by hand. It
computes no loss: the objectives of :mod:`minivae.objectives` combine the terms into one (the ELBO,
the IWAE bound), and :mod:`minivae.evaluate` into the measures (the ELBO's parts, the
importance-weighted log p(x)). :meth:`VAE.loss_and_grads`, :meth:`VAE.elbo` and
:meth:`VAE.log_likelihood` are thin calls into them.
"""

import json
import os
import types

import numpy as np

from . import backend as backends
from . import evaluate, ops
from .checks import check_rng, positive_int
from .files import atomic_path
from .layers import ACTIVATIONS, MLP, LeakyReLU
from .likelihoods import LIKELIHOODS, make_likelihood
from .objectives import ELBO, KL_METHODS
from .priors import PRIORS, Prior, make_prior
from .reference import REFERENCE

CONFIG_KEY = "__config__"  # where a checkpoint keeps the model's settings, as a JSON string
ACTIVE_UNIT_THRESHOLD = evaluate.ACTIVE_UNIT_THRESHOLD


class VAE:
    """A variational autoencoder with MLP encoder and decoder, every gradient written by hand.

    Parameters
    ----------
    input_dim : int, D, the number of data dimensions (64 for the 8x8 digits)
    latent_dim : int, the number of latent dimensions
    hidden : tuple of int, the hidden widths of the encoder; the decoder mirrors them. ``()`` gives a
        linear encoder and decoder
    activation : one of "leaky_relu", "relu", "tanh", "sigmoid"
    slope : float in [0, 1), the leaky ReLU's slope for negative inputs (default 0.01, PyTorch's)
    likelihood : "categorical" (num_values logits per dimension), "bernoulli" (logits) or "gaussian"
        (the decoder outputs the mean; σ² = ``variance``, learned when ``learn_variance``)
    num_values : int, the number of values per dimension for the categorical likelihood
    variance, learn_variance : the Gaussian likelihood's σ² (or its initial value) and whether it is learned
    prior : the prior p(z): None or "standard" (N(0, I)), or a :class:`minivae.priors.Prior`
    kl : "analytic" (the prior's closed-form KL), "monte_carlo" (log q(z|x) - log p(z) at the sampled
        z), or None (analytic when the prior has one) in the training loss of :meth:`loss_and_grads`
    beta : float ≥ 0, the weight of the KL in that loss (β-VAE; 1 is the ELBO)
    seed : int, seeds the initial weights and the model's own random generator ``model.rng``
    dtype : numpy.float32 (default, fast) or numpy.float64 (for gradient checks)
    backend : "numpy" (the readable reference), "numba" (compiled kernels) or None (the current
        backend, see :func:`minivae.set_backend`); the attribute ``model.backend`` can be changed later

    Attributes
    ----------
    params : dict name -> array, in order; the model's only state. Linear layer i of the encoder has
        ``"encoder.{i}.W"`` (in, out) and ``"encoder.{i}.b"`` (out,) with y = x @ W + b; likewise the
        decoder; ``"decoder.logvar"`` (1,) holds a learned Gaussian log σ²; a learnable prior's
        parameters start with ``"prior."``
    encoder, decoder : :class:`minivae.layers.MLP`
    likelihood : the decoder's distribution, from :mod:`minivae.likelihoods`
    prior : :class:`minivae.priors.Prior`
    rng : numpy.random.Generator used where a method is given no ``rng``

    Examples
    --------
    >>> import minivae
    >>> x_train, _ = minivae.datasets.load_digits("train")
    >>> model = minivae.VAE(input_dim=64, latent_dim=16)
    >>> loss, grads = model.loss_and_grads(x_train[:64])
    """

    def __init__(self, input_dim, latent_dim, hidden=REFERENCE.hidden, activation=REFERENCE.activation,
                 slope=REFERENCE.leaky_relu_slope, likelihood=REFERENCE.likelihood,
                 num_values=REFERENCE.num_values, variance=1.0, learn_variance=False, prior=None, kl=None,
                 beta=1.0, seed=0, dtype=np.float32, backend=None):
        config = self.checked_config(input_dim=input_dim, latent_dim=latent_dim, hidden=hidden,
                                     activation=activation, slope=slope, likelihood=likelihood,
                                     num_values=num_values, variance=variance, learn_variance=learn_variance,
                                     kl=kl, beta=beta, seed=seed, dtype=dtype)
        self.build(config, prior, backend)

    def build(self, config, prior, backend):
        """Set up the pieces and fresh parameters from checked settings (the constructor's work, shared
        with subclasses such as :class:`minivae.hierarchical.TwoLevelVAE`)."""
        self.config = config
        self.input_dim = config["input_dim"]
        self.latent_dim = config["latent_dim"] if "latent_dim" in config else config["latent_dims"][0]
        self.hidden = tuple(config["hidden"])
        self.kl_method, self.beta, self.dtype = config["kl"], config["beta"], np.dtype(config["dtype"])
        self.backend = None if backend is None else backends.check_backend(backend)
        self.prior = make_prior(prior)
        self.likelihood, networks = self.network_layout(config)
        for name, network in networks.items():
            setattr(self, name, network)
        self.prior.bind(self)
        if self.kl_method == "analytic" and not self.prior.analytic_kl:
            raise ValueError(f"kl='analytic' needs a prior with a closed-form KL; the {self.prior.name} prior "
                             f"has none: use kl='monte_carlo' (or None)")

        init_seed, sampling_seed = np.random.SeedSequence(config["seed"]).spawn(2)
        init_rng = np.random.default_rng(init_seed)
        self.params = {}
        for network in networks.values():
            self.params.update(network.init_params(init_rng, self.dtype))
        self.params.update(self.likelihood.init_params(self.dtype))
        self.params.update(self.prior.init_params(self.prior_dim(config), init_rng, self.dtype))
        self.rng = np.random.default_rng(sampling_seed)

    @classmethod
    def checked_config(cls, **settings):
        """The constructor's settings, checked, as the JSON-serialisable dict ``model.config``."""
        return checked_config(**settings)

    @classmethod
    def network_layout(cls, config):
        """The likelihood and the networks (name -> :class:`~minivae.layers.MLP`, in parameter order)
        that ``config`` describes, without parameters."""
        likelihood, encoder, decoder = build_networks(config)
        return likelihood, {"encoder": encoder, "decoder": decoder}

    @classmethod
    def prior_dim(cls, config):
        """The number of latent dimensions the prior is over."""
        return config["latent_dim"]

    # ---------------------------------------------------------------------------------------------
    # The training loss: the objective's, forward then backward by hand
    # ---------------------------------------------------------------------------------------------

    def objective(self):
        """The model's own training loss: :class:`minivae.objectives.ELBO` with its ``beta`` and ``kl``."""
        return ELBO(beta=self.beta, kl=self.kl_method)

    def loss_and_grads(self, x, eps=None, rng=None):
        """The negative ELBO of a minibatch and its gradient with respect to every parameter.

        loss = 1/N Σ_n [-log p(x_n|z_n) + β KL(q(z|x_n) || p(z))],  z_n = mu_n + exp(logvar_n / 2) * eps_n,

        a single-sample estimate of the mean -ELBO (exact in the KL term when it is analytic). The
        computation is :meth:`minivae.objectives.ELBO.loss_and_grads`, which combines the terms of
        :meth:`elbo_terms` and their backward :meth:`elbo_terms_backward`: step into them to follow the chain.

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
        x = self.check_x(x)
        objective = self.objective()
        if eps is None:
            eps = self.draw_noise(x.shape[0], self._rng(rng))
        else:
            eps = self._check_eps(eps, x.shape[0])
        loss, grads, _ = objective.loss_and_grads(self, x, eps)
        return loss, grads

    # ---------------------------------------------------------------------------------------------
    # The terms of the ELBO per sample, forward then backward by hand: what every objective combines
    # ---------------------------------------------------------------------------------------------

    @property
    def noise_dim(self):
        """The numbers of standard normal noise one sample takes (the last axis of :meth:`draw_noise`)."""
        return self.latent_dim

    def widest_layer(self):
        """The most numbers one row of x takes in any layer (what bounds an evaluation pass's memory)."""
        return max(max(self.encoder.sizes), max(self.decoder.sizes))

    def draw_noise(self, n, rng, samples=None):
        """eps ~ N(0, I) for n examples: (n, latent_dim), or (samples, n, latent_dim), in the model's dtype."""
        shape = (n, self.latent_dim) if samples is None else (samples, n, self.latent_dim)
        return rng.standard_normal(shape).astype(self.dtype)

    def elbo_terms(self, x, eps, kl="analytic", need_grad=True):
        """log p(x|z) and the KL term of each sample z = mu + exp(½ logvar) · eps: the ELBO is their difference.

        x -> encoder -> (mu, logvar) -> z -> decoder -> log p(x|z);  and the KL, either

        * "analytic": KL(q(z|x) || p(z)) in closed form (the prior's ``kl``), the same for every sample;
        * "monte_carlo": log q(z|x) - log p(z) at each sample (any prior);
        * "per_dimension": the closed-form KL of each latent dimension, (N, latent_dim) (free bits).

        Parameters
        ----------
        x : (N, input_dim) array, checked (:meth:`check_x`)
        eps : (N, latent_dim) array, or (S, N, latent_dim) for S samples per example
        kl : "analytic", "monte_carlo" or "per_dimension"
        need_grad : bool; False keeps no cache (evaluation)

        Returns
        -------
        log_px : (N,) or (S, N) array
        kl : array of log_px's shape ((N, latent_dim) for "per_dimension")
        cache : what :meth:`elbo_terms_backward` needs (None when need_grad is False)
        """
        params, backend, L, N = self.params, self.backend, self.latent_dim, x.shape[0]
        samples = eps.shape[:-2]  # () or (S,)
        h, encoder_cache = self.encoder.forward(params, x, backend)
        mu, logvar = h[:, :L], h[:, L:]
        z, reparameterize_cache = ops.reparameterize(mu, logvar, eps)
        out, decoder_cache = self.decoder.forward(params, np.ascontiguousarray(z.reshape(-1, L)), backend)
        x_rows = np.broadcast_to(x, samples + x.shape).reshape(-1, x.shape[1]) if samples else x
        if need_grad:
            log_px, likelihood_cache = self.likelihood.forward(x_rows, out, params, backend)
        else:
            log_px, likelihood_cache = self.likelihood.log_prob(x_rows, out, params, backend), None
        log_px = log_px.reshape(samples + (N,))
        if kl == "analytic":
            kl_value, kl_cache = self.prior.kl(mu, logvar, params)
            kl_value = np.broadcast_to(kl_value, samples + (N,))
        elif kl == "per_dimension":
            if samples:
                raise ValueError("kl='per_dimension' takes one sample per example, eps (N, latent_dim)")
            kl_value, kl_cache = self.prior.kl_per_dimension(mu, logvar, params)
        elif kl == "monte_carlo":
            log_qz, q_cache = ops.reparameterized_log_prob(eps, logvar)
            log_pz, prior_cache = self.prior.log_prob(z, params)
            kl_value, kl_cache = log_qz - log_pz, (q_cache, prior_cache)
        else:
            raise ValueError(f"kl must be 'analytic', 'monte_carlo' or 'per_dimension'; got {kl!r}")
        if not need_grad:
            return log_px, kl_value, None
        cache = (kl, encoder_cache, reparameterize_cache, decoder_cache, likelihood_cache, kl_cache, z.shape)
        return log_px, kl_value, cache

    def elbo_terms_backward(self, dlog_px, dkl, cache):
        """Backward of :meth:`elbo_terms`: the gradient of every parameter, given dL/dlog p(x|z) and dL/dKL.

        The chain rule, one step at a time, from the likelihood back to the encoder:
        likelihood -> decoder -> dL/dz; the KL's own gradient (analytic: to mu and logvar directly;
        Monte Carlo: -log p(z) reaches z, log q at its own sample reaches logvar alone); then
        z = mu + std · eps takes dL/dz to mu and logvar, and the encoder takes them to its weights.

        Parameters
        ----------
        dlog_px : array of log_px's shape, dL/dlog p(x|z)
        dkl : array of the KL's shape, dL/dKL
        cache : from :meth:`elbo_terms`

        Returns
        -------
        grads : dict with the keys, shapes and order of ``params``
        """
        kl, encoder_cache, reparameterize_cache, decoder_cache, likelihood_cache, kl_cache, z_shape = cache
        params, backend = self.params, self.backend
        # BEGIN SOLUTION
        grads = {}
        dlog_px = np.asarray(dlog_px, dtype=self.dtype)
        dkl = np.asarray(dkl, dtype=self.dtype)
        dout = self.likelihood.backward(dlog_px.reshape(-1), likelihood_cache, grads, backend)
        dz = self.decoder.backward(dout, decoder_cache, grads, backend=backend).reshape(z_shape)
        if kl == "analytic":
            dmu_kl, dlogvar_kl = self.prior.kl_backward(dkl.reshape(-1, dkl.shape[-1]).sum(axis=0), kl_cache, grads)
        elif kl == "per_dimension":
            dmu_kl, dlogvar_kl = self.prior.kl_per_dimension_backward(dkl, kl_cache, grads)
        else:
            # KL = log q(z|x) - log p(z): -log p(z) reaches z (then mu and logvar through the sample);
            # log q at its own sample depends on logvar alone (see ops.reparameterized_log_prob)
            q_cache, prior_cache = kl_cache
            dz = dz + self.prior.log_prob_backward(-dkl, prior_cache, grads)
            dmu_kl, dlogvar_kl = ops.reparameterized_log_prob_backward(dkl, q_cache)
        dmu, dlogvar = ops.reparameterize_backward(dz, reparameterize_cache)
        dh = np.concatenate([dmu + dmu_kl, dlogvar + dlogvar_kl], axis=1)
        self.encoder.backward(dh, encoder_cache, grads, need_dx=False, backend=backend)
        # END SOLUTION
        return ops.complete_grads(grads, params)

    # ---------------------------------------------------------------------------------------------
    # Encoder, decoder, sampling
    # ---------------------------------------------------------------------------------------------

    def encode(self, x, check=True):
        """The posterior's parameters.

        Parameters
        ----------
        x : (N, input_dim) array
        check : bool; False skips the checks of x (for callers that checked it, see :meth:`check_x`)

        Returns
        -------
        mu, logvar : (N, latent_dim) arrays, q(z|x) = N(mu, diag(exp(logvar)))
        """
        if check:
            x = self.check_x(x)
        h, _ = self.encoder.forward(self.params, x, self.backend)
        return h[:, :self.latent_dim], h[:, self.latent_dim:]

    def decode(self, z, mean=False, check=True):
        """The decoder's output, as the parameters of p(x|z) or its mean.

        Parameters
        ----------
        z : (N, latent_dim) array
        mean : bool; if True return E[x|z], (N, input_dim), an image for every likelihood
        check : bool; False skips the checks of z and returns the decoder's raw output (the mean of
            a Gaussian, logits otherwise), as the likelihood's ``forward`` takes it

        Returns
        -------
        categorical: probabilities (N, input_dim, num_values); bernoulli: probabilities (N, input_dim);
        gaussian: the mean (N, input_dim)
        """
        if not check:
            return self.decoder.forward(self.params, np.ascontiguousarray(z), self.backend)[0]
        out = self.decode(self._check_array(z, "z", self.latent_dim, "latent_dim"), check=False)
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
        out = self.decode(self.prior.sample(n, self.latent_dim, self.params, rng, self.dtype), check=False)
        if mean:
            return self.likelihood.mean(out, self.params)
        return self.likelihood.sample(out, self.params, rng)

    def reconstruct(self, x):
        """E[x | z = mu(x)]: the mean of the decoder at the posterior mean, (N, input_dim)."""
        mu, _ = self.encode(x)
        return self.likelihood.mean(self.decode(mu, check=False), self.params)

    # ---------------------------------------------------------------------------------------------
    # The ELBO, its parts, and the marginal likelihood: minivae.evaluate, in chunks
    # ---------------------------------------------------------------------------------------------

    def elbo_parts(self, x, n_samples=1, rng=None, kl="analytic"):
        """The two terms of the ELBO, per example (in chunks: memory stays bounded for any N).

        Parameters
        ----------
        x : (N, input_dim) array
        n_samples : int, samples of z ~ q(z|x) averaged for E_q[log p(x|z)] (and a Monte Carlo KL)
        rng : numpy.random.Generator (default ``self.rng``)
        kl : "analytic" or "monte_carlo" (a prior without a closed form always takes Monte Carlo)

        Returns
        -------
        reconstruction : (N,) array, E_q[log p(x|z)]; its negative is the distortion
        kl : (N,) array, KL(q(z|x) || p(z)), the rate
        """
        x = self.check_x(x)
        n_samples = positive_int(n_samples, "n_samples")
        if kl not in KL_METHODS:
            raise ValueError(f"kl must be one of {KL_METHODS}; got {kl!r}")
        if not self.prior.analytic_kl:
            kl = "monte_carlo"
        return evaluate.elbo_parts(self, x, n_samples, self._rng(rng), kl)

    def elbo(self, x, n_samples=1, rng=None):
        """The evidence lower bound per example, E_q[log p(x|z)] - KL(q(z|x) || p(z)) ≤ log p(x).

        With the analytic KL (where the prior has one) and ``n_samples`` draws of z for the
        reconstruction term. This is the bound, not an estimate of log p(x): for that use
        :meth:`log_likelihood`.

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

    def log_likelihood(self, x, n_samples=REFERENCE.test_samples, rng=None):
        """Importance-weighted estimate of log p(x) per example (Burda et al. 2016).

        log p(x) ≈ log 1/K Σ_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x),

        computed with a running logsumexp. It is a lower bound in expectation that rises with K towards
        log p(x); K = 1 is the ELBO. With K ≥ 512 it is the number to report as test NLL (negated).
        Examples and samples are processed in chunks, so memory stays bounded for any ``n_samples``.
        See :func:`minivae.evaluate.log_likelihood`.

        Parameters
        ----------
        x : (N, input_dim) array
        n_samples : int, K
        rng : numpy.random.Generator (default ``self.rng``)

        Returns
        -------
        (N,) float64 array, nats
        """
        x = self.check_x(x)
        return evaluate.log_likelihood(self, x, positive_int(n_samples, "n_samples"), self._rng(rng))

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
        return evaluate.active_units(self, self.check_x(x), threshold)

    # ---------------------------------------------------------------------------------------------
    # Saving and loading (.npz, no pickle)
    # ---------------------------------------------------------------------------------------------

    def save(self, path):
        """Write the parameters and the settings to an ``.npz`` file that loads without pickle.

        Atomic: the file is written under a temporary name beside ``path`` and renamed into place,
        so an interrupted or failed save leaves any earlier file at ``path`` whole.
        """
        config = dict(self.config, beta=self.beta, kl=self.kl_method,  # public attributes that may have changed
                      prior=dict(self.prior.config(), name=self.prior.name), model=type(self).__name__)
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"  # what np.savez would do; the rename needs the final name
        with atomic_path(path) as temporary:
            with open(temporary, "wb") as file:
                np.savez(file, **{CONFIG_KEY: np.array(json.dumps(config))}, **self.params)

    @classmethod
    def load(cls, path, prior=None):
        """A model rebuilt from a file written by :meth:`save`.

        Parameters
        ----------
        path : str or path-like
        prior : a :class:`minivae.priors.Prior` instance, needed only when the checkpoint's prior is
            not one of minivae's own (``minivae.priors.PRIORS``); it must carry the saved name

        The settings are checked against the stored arrays before any model is built, so a
        checkpoint whose settings do not match its arrays is refused without allocating anything.
        """
        with np.load(path, allow_pickle=False) as archive:
            if CONFIG_KEY not in archive.files:
                raise ValueError(f"{path} holds no model settings ({CONFIG_KEY!r}); was it written by "
                                 f"VAE.save? Build the model and use model.load_params(path) instead")
            try:
                config = json.loads(str(archive[CONFIG_KEY]))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: the model settings are not valid JSON ({error})") from None
            arrays = {key: archive[key] for key in archive.files if key != CONFIG_KEY}
        if not isinstance(config, dict):
            raise ValueError(f"{path}: the model settings are not a dict of settings")
        prior_spec = config.pop("prior", {"name": "standard"})
        if prior is not None:
            if not isinstance(prior, Prior) or prior.name != prior_spec.get("name"):
                raise ValueError(f"{path} holds a model with the {prior_spec.get('name')!r} prior; "
                                 f"prior= gives {prior!r}")
        elif not isinstance(prior_spec, dict) or prior_spec.get("name") not in PRIORS:
            raise ValueError(f"{path} holds a model with the prior {prior_spec!r}, which is not one of "
                             f"minivae's {sorted(PRIORS)}: pass the prior, VAE.load(path, prior=MyPrior(...))")
        else:
            prior = make_prior(prior_spec)
        kinds = {model_class.__name__: model_class for model_class in _model_classes()}
        kind = config.pop("model", "VAE")
        if kind not in kinds or not issubclass(kinds[kind], cls):
            raise ValueError(f"{path} holds a {kind!r} model; load it with {kind}.load")
        target = kinds[kind]
        try:
            config = target.checked_config(**config)
        except TypeError as error:
            raise ValueError(f"{path}: the model settings do not fit a {kind} ({error})") from None
        likelihood, networks = target.network_layout(config)
        prior.bind(types.SimpleNamespace(backend=None, **networks))  # for its shapes; the model binds it again
        expected = {key: shape for network in networks.values() for key, shape in network.param_shapes().items()}
        expected.update(likelihood.param_shapes())
        expected.update(prior.param_shapes(target.prior_dim(config)))
        check_shapes(arrays, expected, f"{path}: ", "its settings ask for")
        model = target(**config, prior=prior)
        model.set_params(arrays)
        return model

    def load_params(self, path):
        """Read parameters written by :meth:`save` (or ``np.savez(path, **params)``) into this model."""
        with np.load(path, allow_pickle=False) as archive:
            self.set_params({key: archive[key] for key in archive.files if key != CONFIG_KEY})

    def set_params(self, arrays):
        """Copy ``arrays`` (name -> array) into ``params`` in place, after checking names and shapes."""
        check_shapes(arrays, {key: value.shape for key, value in self.params.items()})
        for key, value in arrays.items():
            self.params[key][...] = value

    @property
    def n_params(self):
        """The number of scalar parameters."""
        return sum(value.size for value in self.params.values())

    def __repr__(self):
        return (f"VAE(input_dim={self.input_dim}, latent_dim={self.latent_dim}, hidden={self.hidden}, "
                f"activation={self.config['activation']!r}, likelihood={self.config['likelihood']!r}, "
                f"prior={self.prior!r}, dtype={self.dtype.name}, backend={backends.resolve(self.backend)!r}, "
                f"n_params={self.n_params})")

    # ---------------------------------------------------------------------------------------------
    # Input checks
    # ---------------------------------------------------------------------------------------------

    def check_x(self, x, name="x"):
        """x as an array of the model's dtype, after checking its shape, values and support.

        Raises a ValueError or TypeError naming ``name`` and what was expected. Every public method
        calls it; :func:`minivae.fit` calls it once for the whole data set.
        """
        x = self._check_array(x, name, self.input_dim, "input_dim")
        self.likelihood.check_data(x, name)
        return x

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
        with np.errstate(over="ignore"):
            converted = a.astype(self.dtype, copy=False)
        if converted is not a and not np.all(np.isfinite(converted)):
            raise ValueError(f"{name} holds values beyond the range of {self.dtype.name} "
                             f"(largest magnitude {np.max(np.abs(a)):g})")
        return converted

    def _check_eps(self, eps, n):
        eps = self._check_array(eps, "eps", self.noise_dim, "noise_dim")
        if eps.shape[0] != n:
            raise ValueError(f"eps has {eps.shape[0]} rows; x has {n}")
        return np.ascontiguousarray(eps)


def checked_config(input_dim, latent_dim, hidden, activation, slope=REFERENCE.leaky_relu_slope,
                    likelihood=REFERENCE.likelihood, num_values=REFERENCE.num_values, variance=1.0,
                    learn_variance=False, kl=None, beta=1.0, seed=0, dtype=np.float32):
    """The VAE's settings, checked, as the JSON-serialisable dict ``model.config``."""
    input_dim = positive_int(input_dim, "input_dim")
    latent_dim = positive_int(latent_dim, "latent_dim")
    if isinstance(hidden, (int, np.integer)):
        hidden = (hidden,)
    hidden = tuple(positive_int(h, "hidden") for h in hidden)
    if activation not in ACTIVATIONS or activation == "identity":
        raise ValueError(f"activation must be one of {sorted(set(ACTIVATIONS) - {'identity'})}; "
                         f"got {activation!r}")
    LeakyReLU(slope)  # checks the slope
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {tuple(LIKELIHOODS)}; got {likelihood!r}")
    if kl is not None and kl not in KL_METHODS:
        raise ValueError(f"kl must be one of {KL_METHODS} or None; got {kl!r}")
    if isinstance(beta, bool) or not np.isscalar(beta) or not np.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a number ≥ 0; got {beta!r}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64; got {dtype}")
    make_likelihood(likelihood, num_values, variance, learn_variance)  # checks its options
    check_network_size(input_dim, latent_dim, hidden, likelihood, num_values)
    return dict(input_dim=input_dim, latent_dim=latent_dim, hidden=list(hidden), activation=activation,
                slope=float(slope), likelihood=likelihood, num_values=int(num_values), variance=float(variance),
                learn_variance=bool(learn_variance), kl=kl, beta=float(beta), seed=int(seed), dtype=dtype.name)


def build_networks(config):
    """The likelihood, the encoder and the decoder that ``config`` describes (no parameters yet)."""
    likelihood = make_likelihood(config["likelihood"], config["num_values"], config["variance"],
                                 config["learn_variance"])
    activation = LeakyReLU(config["slope"]) if config["activation"] == "leaky_relu" else config["activation"]
    hidden, latent_dim = config["hidden"], config["latent_dim"]
    encoder = MLP("encoder", [config["input_dim"], *hidden, 2 * latent_dim], activation)
    decoder = MLP("decoder", [latent_dim, *hidden[::-1], likelihood.output_dim(config["input_dim"])], activation)
    return likelihood, encoder, decoder


def check_shapes(arrays, expected, where="", expects="this model expects"):
    """ValueError unless ``arrays`` has exactly the names of ``expected``, each with its shape."""
    missing = [key for key in expected if key not in arrays]
    unexpected = [key for key in arrays if key not in expected]
    if missing or unexpected:
        raise ValueError(f"{where}the parameters do not match this model: missing {missing}, "
                         f"unexpected {unexpected}")
    for key, value in arrays.items():
        if np.shape(value) != tuple(expected[key]):
            raise ValueError(f"{where}parameter {key!r} has shape {np.shape(value)}; {expects} "
                             f"{tuple(expected[key])}")


MAX_NETWORK_PARAMETERS = 2 ** 31  # ~8 GB of float32 weights: settings beyond this are a mistake, not a model


def network_size(input_dim, latent_dim, hidden, likelihood="gaussian", num_values=2):
    """The number of weights and biases of a VAE's encoder and decoder, computed without building them.

    The encoder maps input_dim -> hidden -> 2 latent_dim, the decoder latent_dim -> reversed hidden ->
    input_dim (times num_values for the categorical likelihood); a layer has in · out + out numbers.
    """
    output = input_dim * (num_values if likelihood == "categorical" else 1)
    widths = [input_dim, *hidden, 2 * latent_dim], [latent_dim, *hidden[::-1], output]
    return sum(a * b + b for sizes in widths for a, b in zip(sizes[:-1], sizes[1:]))


def check_network_size(input_dim, latent_dim, hidden, likelihood="gaussian", num_values=2):
    """ValueError when the settings ask for more than MAX_NETWORK_PARAMETERS weights, before any is made."""
    count = network_size(input_dim, latent_dim, hidden, likelihood, num_values)
    if count > MAX_NETWORK_PARAMETERS:
        raise ValueError(f"these settings ask for {count:,} weights (input_dim={input_dim}, latent_dim={latent_dim}, "
                         f"hidden={tuple(hidden)}, num_values={num_values}); more than {MAX_NETWORK_PARAMETERS:,} "
                         f"is not a model this library can hold")


def _model_classes():
    """VAE and every subclass of it, however deep."""
    found, todo = [], [VAE]
    while todo:
        model_class = todo.pop()
        found.append(model_class)
        todo.extend(model_class.__subclasses__())
    return found

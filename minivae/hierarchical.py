"""A VAE with two stochastic layers: z1 near the data, z2 above it.

    inference    q(z1|x) q(z2|z1)          x ──encoder──> z1 ──encoder2──> z2
    generative   p(z2) p(z1|z2) p(x|z1)    z2 ──decoder2──> z1 ──decoder──> x

    ELBO(x) = E_q[log p(x|z1)] - E_q[log q(z1|x) - log p(z1|z2)] - E_q[KL(q(z2|z1) || p(z2))]

Both conditionals on z1 are diagonal Gaussians from MLPs (q(z1|x) from the encoder, p(z1|z2) from
decoder2), as is q(z2|z1) (encoder2); p(z2) is any prior over z2 (N(0, I) by default); p(x|z1) any
likelihood. The middle term, the rate of the first level, is a Monte Carlo estimate at the sampled
z1 and z2 (the two Gaussians in z1 cannot be compared in closed form: z2 itself was drawn from z1);
the last, the rate of the second level, is analytic when the prior has a closed-form KL. Every
gradient is written out in :meth:`TwoLevelVAE.elbo_terms_backward`, one chain-rule step at a time.

The model offers the same ``elbo_terms`` and ``elbo_terms_backward`` as :class:`minivae.VAE`, so the
same objectives train it (:class:`~minivae.objectives.ELBO`, :class:`~minivae.objectives.IWAE`) and
the same estimators evaluate it: :meth:`log_likelihood` is importance-weighted over both levels.
"""

import numpy as np

from . import ops
from .checks import positive_int
from .layers import MLP
from .priors import make_prior
from .reference import REFERENCE
from .vae import VAE, build_networks, check_network_size, checked_config


class TwoLevelVAE(VAE):
    """A two-level VAE; see the module docstring.

    Parameters
    ----------
    input_dim : int
    latent_dims : (L1, L2), the sizes of z1 (near the data) and z2 (above it), e.g. (16, 8)
    hidden : the hidden widths of the encoder q(z1|x) (the decoder p(x|z1) mirrors them)
    hidden2 : the hidden widths of encoder2 q(z2|z1) (decoder2 p(z1|z2) mirrors them); default: hidden
    prior : the prior over z2 (None: N(0, I); "mog:K" a mixture; the VampPrior needs a one-level VAE)
    other parameters : as :class:`minivae.VAE`

    Attributes
    ----------
    encoder, decoder : the networks of q(z1|x) and p(x|z1), parameters "encoder.*" and "decoder.*"
    encoder2, decoder2 : the networks of q(z2|z1) and p(z1|z2), parameters "encoder2.*" and "decoder2.*"
    latent_dim : L1 (what ``encode`` returns and ``decode`` takes); latent_dims : (L1, L2)
    """

    def __init__(self, input_dim, latent_dims=(16, 8), hidden=REFERENCE.hidden, hidden2=None,
                 activation=REFERENCE.activation, slope=REFERENCE.leaky_relu_slope, likelihood=REFERENCE.likelihood,
                 num_values=REFERENCE.num_values, variance=1.0, learn_variance=False, prior=None, kl=None,
                 beta=1.0, seed=0, dtype=np.float32, backend=None):
        config = self.checked_config(input_dim=input_dim, latent_dims=latent_dims, hidden=hidden, hidden2=hidden2,
                                     activation=activation, slope=slope, likelihood=likelihood,
                                     num_values=num_values, variance=variance, learn_variance=learn_variance,
                                     kl=kl, beta=beta, seed=seed, dtype=dtype)
        prior = make_prior(prior)
        if prior.name == "vamp":
            raise ValueError("the VampPrior mixes posteriors of the data's encoder; over z2 of a two-level VAE it "
                             "is not defined here: use prior='standard' or 'mog:K'")
        self.latent_dims = tuple(config["latent_dims"])
        self.hidden2 = tuple(config["hidden2"])
        self.build(config, prior, backend)

    @classmethod
    def checked_config(cls, latent_dims=(16, 8), hidden2=None, **settings):
        """The settings, checked, as ``model.config``."""
        if isinstance(latent_dims, (int, np.integer)) or len(latent_dims) != 2:
            raise ValueError(f"latent_dims must be two sizes (L1, L2); got {latent_dims!r}")
        L1, L2 = (positive_int(size, "latent_dims") for size in latent_dims)
        config = checked_config(latent_dim=L1, **settings)
        hidden2 = tuple(config["hidden"]) if hidden2 is None else (
            (hidden2,) if isinstance(hidden2, (int, np.integer)) else tuple(hidden2))
        hidden2 = tuple(positive_int(h, "hidden2") for h in hidden2)
        check_network_size(L1, L2, hidden2, "gaussian", 2)
        config.pop("latent_dim")
        return dict(config, latent_dims=[L1, L2], hidden2=list(hidden2))

    @classmethod
    def network_layout(cls, config):
        likelihood, encoder, decoder = build_networks(dict(config, latent_dim=config["latent_dims"][0]))
        (L1, L2), hidden2, activation = config["latent_dims"], config["hidden2"], encoder.activation
        encoder2 = MLP("encoder2", [L1, *hidden2, 2 * L2], activation)
        decoder2 = MLP("decoder2", [L2, *hidden2[::-1], 2 * L1], activation)
        return likelihood, {"encoder": encoder, "decoder": decoder, "encoder2": encoder2, "decoder2": decoder2}

    @classmethod
    def prior_dim(cls, config):
        return config["latent_dims"][1]

    @property
    def noise_dim(self):
        """The numbers of noise per sample: L1 + L2 (eps1 and eps2 side by side)."""
        return sum(self.latent_dims)

    def widest_layer(self):
        return max(max(network.sizes) for network in (self.encoder, self.decoder, self.encoder2, self.decoder2))

    # ---------------------------------------------------------------------------------------------
    # The terms of the ELBO per sample, forward then backward by hand
    # ---------------------------------------------------------------------------------------------

    def draw_noise(self, n, rng, samples=None):
        """(eps1, eps2) side by side: an array (n, L1 + L2), or (samples, n, L1 + L2)."""
        L1, L2 = self.latent_dims
        shape = (n, L1 + L2) if samples is None else (samples, n, L1 + L2)
        return rng.standard_normal(shape).astype(self.dtype)

    def elbo_terms(self, x, eps, kl="analytic", need_grad=True):
        """log p(x|z1) and the rate of both levels for each sample of (z1, z2).

        z1 = mu1(x) + std1(x) · eps1,  z2 = mu2(z1) + std2(z1) · eps2,  and

        KL term = [log q(z1|x) - log p(z1|z2)] + rate of z2,

        the first at the samples, the second KL(q(z2|z1) || p(z2)) in closed form with ``kl="analytic"``
        (a prior that has one) or log q(z2|z1) - log p(z2) at the sample with ``kl="monte_carlo"``.

        Parameters
        ----------
        x : (N, input_dim) array, checked
        eps : (N, L1 + L2) or (S, N, L1 + L2) array, from :meth:`draw_noise`
        kl : "analytic" or "monte_carlo" (the second level's rate)
        need_grad : bool; False keeps no cache

        Returns
        -------
        log_px, kl : (N,) or (S, N) arrays
        cache : for :meth:`elbo_terms_backward`
        """
        if kl not in ("analytic", "monte_carlo"):
            raise ValueError(f"kl must be 'analytic' or 'monte_carlo' for a two-level VAE; got {kl!r}")
        params, backend, (L1, L2), N = self.params, self.backend, self.latent_dims, x.shape[0]
        samples = eps.shape[:-2]
        eps1, eps2 = eps[..., :L1], eps[..., L1:].reshape(-1, L2)

        # q(z1|x): one encoder pass, then the samples; all rows below are (S · N) samples
        h1, encoder_cache = self.encoder.forward(params, x, backend)
        mu1, logvar1 = h1[:, :L1], h1[:, L1:]
        z1, reparameterize1_cache = ops.reparameterize(mu1, logvar1, eps1)
        z1_rows = np.ascontiguousarray(z1.reshape(-1, L1))
        # q(z2|z1)
        h2, encoder2_cache = self.encoder2.forward(params, z1_rows, backend)
        mu2, logvar2 = h2[:, :L2], h2[:, L2:]
        z2, reparameterize2_cache = ops.reparameterize(mu2, logvar2, eps2)
        # p(z1|z2) and p(x|z1)
        g, decoder2_cache = self.decoder2.forward(params, np.ascontiguousarray(z2), backend)
        mu_p1, logvar_p1 = g[:, :L1], g[:, L1:]
        out, decoder_cache = self.decoder.forward(params, z1_rows, backend)
        x_rows = np.broadcast_to(x, samples + x.shape).reshape(-1, x.shape[1]) if samples else x
        if need_grad:
            log_px, likelihood_cache = self.likelihood.forward(x_rows, out, params, backend)
        else:
            log_px, likelihood_cache = self.likelihood.log_prob(x_rows, out, params, backend), None

        # the first level's rate at the samples: log q(z1|x) - log p(z1|z2)
        log_q1, q1_cache = ops.reparameterized_log_prob(eps1, logvar1)                      # (S, N)
        log_p1, p1_cache = ops.diagonal_gaussian_log_prob(z1_rows, mu_p1, logvar_p1)        # (S · N,)
        # the second level's rate
        if kl == "analytic":
            rate2, rate2_cache = self.prior.kl(mu2, logvar2, params)
        else:
            log_q2, q2_cache = ops.reparameterized_log_prob(eps2, logvar2)
            log_p2, prior_cache = self.prior.log_prob(z2, params)
            rate2, rate2_cache = log_q2 - log_p2, (q2_cache, prior_cache)
        shape = samples + (N,)
        kl_value = log_q1 - log_p1.reshape(shape) + rate2.reshape(shape)
        if not need_grad:
            return log_px.reshape(shape), kl_value, None
        cache = (kl, encoder_cache, reparameterize1_cache, z1.shape, encoder2_cache, reparameterize2_cache,
                 decoder2_cache, decoder_cache, likelihood_cache, q1_cache, p1_cache, rate2_cache)
        return log_px.reshape(shape), kl_value, cache

    def elbo_terms_backward(self, dlog_px, dkl, cache):
        """Backward of :meth:`elbo_terms`: every parameter's gradient, given dL/dlog p(x|z1) and dL/dKL.

        From the top: the likelihood and the decoder give dL/dz1; the first level's rate adds
        -dKL · d log p(z1|z2) to z1 and, through decoder2, reaches z2; the second level's rate
        reaches (mu2, logvar2) (analytic) or z2 and logvar2 (Monte Carlo); z2 = mu2 + std2 · eps2
        takes dL/dz2 to (mu2, logvar2), encoder2 takes those to z1, and z1 = mu1 + std1 · eps1 to
        (mu1, logvar1) with log q(z1|x) at its sample adding -½ dKL to logvar1; the encoder ends it.
        """
        (kl, encoder_cache, reparameterize1_cache, z1_shape, encoder2_cache, reparameterize2_cache,
         decoder2_cache, decoder_cache, likelihood_cache, q1_cache, p1_cache, rate2_cache) = cache
        params, backend, (L1, L2) = self.params, self.backend, self.latent_dims
        grads = {}
        dlog_px = np.asarray(dlog_px, dtype=self.dtype)
        dkl = np.asarray(dkl, dtype=self.dtype)
        dkl_rows = dkl.reshape(-1)

        dout = self.likelihood.backward(dlog_px.reshape(-1), likelihood_cache, grads, backend)
        dz1 = self.decoder.backward(dout, decoder_cache, grads, backend=backend)            # (S · N, L1)
        # -log p(z1|z2) in the KL term: to z1 and to p(z1|z2)'s mean and log-variance
        dz1_p, dmu_p1, dlogvar_p1 = ops.diagonal_gaussian_log_prob_backward(-dkl_rows, p1_cache)
        dz1 = dz1 + dz1_p
        dz2 = self.decoder2.backward(np.concatenate([dmu_p1, dlogvar_p1], axis=1), decoder2_cache, grads,
                                     backend=backend)
        # the second level's rate
        if kl == "analytic":
            dmu2_kl, dlogvar2_kl = self.prior.kl_backward(dkl_rows, rate2_cache, grads)
        else:
            q2_cache, prior_cache = rate2_cache
            dz2 = dz2 + self.prior.log_prob_backward(-dkl_rows, prior_cache, grads)
            dmu2_kl, dlogvar2_kl = ops.reparameterized_log_prob_backward(dkl_rows, q2_cache)
        dmu2, dlogvar2 = ops.reparameterize_backward(dz2, reparameterize2_cache)
        dh2 = np.concatenate([dmu2 + dmu2_kl, dlogvar2 + dlogvar2_kl], axis=1)
        dz1 = dz1 + self.encoder2.backward(dh2, encoder2_cache, grads, backend=backend)
        # log q(z1|x) at its sample: to logvar1 alone; then z1 = mu1 + std1 · eps1
        dmu1_q, dlogvar1_q = ops.reparameterized_log_prob_backward(dkl, q1_cache)
        dmu1, dlogvar1 = ops.reparameterize_backward(dz1.reshape(z1_shape), reparameterize1_cache)
        dh1 = np.concatenate([dmu1 + dmu1_q, dlogvar1 + dlogvar1_q], axis=1)
        self.encoder.backward(dh1, encoder_cache, grads, need_dx=False, backend=backend)
        return ops.complete_grads(grads, params)

    # ---------------------------------------------------------------------------------------------
    # Sampling and the levels
    # ---------------------------------------------------------------------------------------------

    def sample(self, n, rng=None, mean=False):
        """Draw from the model: z2 ~ p(z2), z1 ~ p(z1|z2), then x ~ p(x|z1) (or its mean)."""
        n = positive_int(n, "n")
        rng = self._rng(rng)
        L1, L2 = self.latent_dims
        z2 = self.prior.sample(n, L2, self.params, rng, self.dtype)
        g, _ = self.decoder2.forward(self.params, np.ascontiguousarray(z2), self.backend)
        z1 = g[:, :L1] + np.exp(0.5 * g[:, L1:]) * rng.standard_normal((n, L1)).astype(self.dtype)
        out = self.decode(z1, check=False)
        if mean:
            return self.likelihood.mean(out, self.params)
        return self.likelihood.sample(out, self.params, rng)

    def encode_levels(self, x):
        """The posterior means of both levels: mu1 = E[z1|x] (N, L1), and mu2 = E[z2|z1 = mu1] (N, L2)."""
        mu1, _ = self.encode(x)
        h2, _ = self.encoder2.forward(self.params, np.ascontiguousarray(mu1), self.backend)
        return mu1, h2[:, :self.latent_dims[1]]

    def active_units(self, x, threshold=None):
        """The active units of each level, (level 1, level 2): dimensions whose posterior mean varies
        over x by more than ``threshold`` (see :meth:`minivae.VAE.active_units`)."""
        from .evaluate import ACTIVE_UNIT_THRESHOLD

        threshold = ACTIVE_UNIT_THRESHOLD if threshold is None else threshold
        return tuple(int(np.sum(np.var(mu.astype(np.float64), axis=0) > threshold))
                     for mu in self.encode_levels(x))

    def __repr__(self):
        return (f"TwoLevelVAE(input_dim={self.input_dim}, latent_dims={self.latent_dims}, hidden={self.hidden}, "
                f"hidden2={self.hidden2}, likelihood={self.config['likelihood']!r}, prior={self.prior!r}, "
                f"dtype={self.dtype.name}, n_params={self.n_params})")

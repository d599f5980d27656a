"""The prior p(z) as a piece of its own, so that a learnable prior can take the standard one's place.

A prior is a small object (as in Tomczak's intro_dgm) with this contract:

* ``param_shapes(latent_dim)`` and ``init_params(latent_dim, rng, dtype)``: its own parameters, under
  names that start with ``"prior."`` (none for N(0, I));
* ``log_prob(z, params)`` returns ``(logp, cache)``, logp (...) = log p(z) for z (..., latent_dim);
  ``log_prob_backward(dlogp, cache, grads)`` returns dL/dz and adds dL/d(its parameters) to ``grads``;
* ``sample(n, latent_dim, params, rng, dtype)``: n draws;
* ``analytic_kl``: True when KL(q(z|x) || p(z)) has a closed form; then ``kl(mu, logvar, params)``
  returns ``(kl, cache)`` and ``kl_backward(dkl, cache, grads)`` returns (dL/dmu, dL/dlogvar).
  A prior without one is trained with the Monte Carlo KL, log q(z|x) - log p(z) at the sampled z
  (see :class:`minivae.objectives.ELBO`);
* ``name`` and ``config()``: what :meth:`minivae.VAE.save` writes, so that ``VAE.load`` can rebuild it;
* ``bind(model)``: called by the VAE before ``init_params``, for a prior that needs the model's own
  pieces (the VampPrior runs the model's encoder).

The priors here: :class:`StandardNormal` N(0, I); :class:`MixtureOfGaussians`, a learnable mixture of
K diagonal Gaussians; :class:`VampPrior`, the mixture of the model's own posteriors at K learnable
pseudo-inputs (Tomczak & Welling 2018). The last two have no closed-form KL to a Gaussian posterior,
so the ELBO takes the Monte Carlo KL with them.

Write a new prior by subclassing :class:`Prior`; the VAE, the objectives and the trainer use only
this contract.
"""

import numpy as np

from . import ops


class Prior:
    """Interface of a prior p(z); see the module docstring. Subclasses set ``name``."""

    name = None
    analytic_kl = False

    def param_shapes(self, latent_dim):
        """name -> shape of the prior's own parameters (names start with ``"prior."``)."""
        return {}

    def init_params(self, latent_dim, rng, dtype):
        """Fresh parameters, a dict name -> array with the shapes of :meth:`param_shapes`."""
        return {}

    def log_prob(self, z, params):
        """log p(z) over the last axis: returns (logp (...), cache) for z (..., latent_dim)."""
        raise NotImplementedError

    def log_prob_backward(self, dlogp, cache, grads):
        """dL/dz for dL/dlogp = ``dlogp``; adds the gradients of the prior's parameters to ``grads``."""
        raise NotImplementedError

    def sample(self, n, latent_dim, params, rng, dtype=np.float64):
        """n draws from p(z), a (n, latent_dim) array."""
        raise NotImplementedError

    def kl(self, mu, logvar, params):
        """Analytic KL(N(mu, diag exp(logvar)) || p) per example: (kl (N,), cache). Only if ``analytic_kl``."""
        raise NotImplementedError(f"the {self.name} prior has no analytic KL; use the Monte Carlo KL")

    def kl_backward(self, dkl, cache, grads):
        """Backward of :meth:`kl`: (dL/dmu, dL/dlogvar)."""
        raise NotImplementedError

    def config(self):
        """The constructor's arguments, JSON-serialisable (what a checkpoint stores)."""
        return {}

    def bind(self, model):
        """Called by the VAE before :meth:`init_params` with the model (``encoder``, ``backend``, ...)."""

    def __repr__(self):
        options = ", ".join(f"{key}={value!r}" for key, value in self.config().items())
        return f"{type(self).__name__}({options})"


class StandardNormal(Prior):
    """The prior p(z) = N(0, I), with the analytic KL of a diagonal Gaussian to it.

    log p(z) = -½ Σ_j (log 2π + z_j²);   KL(N(mu, diag exp(logvar)) || N(0, I)) = ½ Σ_j (mu² + exp(logvar) - 1 - logvar).
    """

    name = "standard"
    analytic_kl = True

    def log_prob(self, z, params=None):
        """log N(z | 0, I) = -½ Σ_j (log 2π + z_j²).

        Parameters
        ----------
        z : (..., latent_dim) array
        params : unused (the standard normal has no parameters)

        Returns
        -------
        logp : (...) array
        cache : z
        """
        return -0.5 * np.sum(ops.LOG_2PI + z * z, axis=-1), z

    def log_prob_backward(self, dlogp, cache, grads=None):
        """d log N(z | 0, I) / dz = -z, scaled by dL/dlogp: returns dL/dz, (..., latent_dim)."""
        z = cache
        return -dlogp[..., None] * z

    def sample(self, n, latent_dim, params=None, rng=None, dtype=np.float64):
        """n draws, a (n, latent_dim) array, from ``rng`` (a numpy.random.Generator)."""
        return rng.standard_normal((n, latent_dim)).astype(dtype, copy=False)

    def kl(self, mu, logvar, params=None):
        """Analytic KL per example: :func:`minivae.ops.kl_standard_normal`."""
        return ops.kl_standard_normal(mu, logvar)

    def kl_backward(self, dkl, cache, grads=None):
        """Backward of :meth:`kl`: :func:`minivae.ops.kl_standard_normal_backward`."""
        return ops.kl_standard_normal_backward(dkl, cache)


    def kl_per_dimension(self, mu, logvar, params=None):
        """The KL of each latent dimension, (N, latent_dim), and its cache: the terms that :meth:`kl`
        sums, ½ (mu² + exp(logvar) - 1 - logvar) (for free bits)."""
        var = np.exp(logvar)
        return 0.5 * (mu * mu + var - 1 - logvar), (mu, var)

    def kl_per_dimension_backward(self, dkl, cache, grads=None):
        """Backward of :meth:`kl_per_dimension`: dL/dmu = dkl · mu, dL/dlogvar = dkl · ½ (exp(logvar) - 1)."""
        mu, var = cache
        return dkl * mu, dkl * 0.5 * (var - 1)


class MixtureOfGaussians(Prior):
    """A learnable mixture of K diagonal Gaussians:  p(z) = Σ_k π_k N(z; m_k, diag(exp(ρ_k))).

    log p(z) = logsumexp_k [log π_k + Σ_j log N(z_j; m_kj, exp ρ_kj)],   π = softmax(logits),

    with the sum over the latent dimensions *inside* the logsumexp over components (each component is
    a Gaussian over the whole z; summing per-dimension logsumexps would make a different, factorised
    mixture).

    Parameters (in ``model.params``): ``"prior.means"`` (K, latent_dim), ``"prior.logvars"``
    (K, latent_dim), ``"prior.logits"`` (K,).

    Parameters
    ----------
    n_components : int K ≥ 1
    init_scale : float, the standard deviation of the initial means (log-variances start at 0, the
        mixture weights equal)
    """

    name = "mog"

    def __init__(self, n_components=16, init_scale=1.0):
        if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) or n_components < 1:
            raise ValueError(f"n_components must be a positive integer; got {n_components!r}")
        if isinstance(init_scale, bool) or not np.isscalar(init_scale) or not init_scale >= 0:
            raise ValueError(f"init_scale must be a number ≥ 0; got {init_scale!r}")
        self.n_components, self.init_scale = int(n_components), float(init_scale)

    def param_shapes(self, latent_dim):
        K = self.n_components
        return {"prior.means": (K, latent_dim), "prior.logvars": (K, latent_dim), "prior.logits": (K,)}

    def init_params(self, latent_dim, rng, dtype):
        K = self.n_components
        return {"prior.means": (self.init_scale * rng.standard_normal((K, latent_dim))).astype(dtype),
                "prior.logvars": np.zeros((K, latent_dim), dtype),
                "prior.logits": np.zeros(K, dtype)}

    def log_prob(self, z, params):
        """log p(z) for z (..., latent_dim): returns (logp (...), cache)."""
        # BEGIN SOLUTION
        log_weights = ops.log_softmax(params["prior.logits"])                             # (K,)
        log_components, gaussian_cache = ops.diagonal_gaussian_log_prob(
            z[..., None, :], params["prior.means"], params["prior.logvars"])               # (..., K)
        logp, logsumexp_cache = ops.logsumexp(log_weights + log_components, axis=-1)
        return logp, (log_weights, gaussian_cache, logsumexp_cache)
        # END SOLUTION

    def log_prob_backward(self, dlogp, cache, grads):
        """dL/dz; adds dL/d(means, logvars, logits) to ``grads``.

        With responsibilities r_k = softmax_k(log π_k + log N_k(z)) (the logsumexp's backward):
        dL/d log N_k = dlogp · r_k, which the Gaussian's backward takes to z (summed over k) and to
        m_k, ρ_k (summed over the examples); dL/d log π_k = Σ_examples dlogp · r_k, and through
        log π = log_softmax(logits):  dL/dlogits = dL/dlog π - π Σ_k dL/dlog π_k.
        """
        # BEGIN SOLUTION
        log_weights, gaussian_cache, logsumexp_cache = cache
        dcomponents = ops.logsumexp_backward(dlogp, logsumexp_cache)                        # (..., K)
        dz, dmeans, dlogvars = ops.diagonal_gaussian_log_prob_backward(dcomponents, gaussian_cache)
        dlog_weights = dcomponents.reshape(-1, self.n_components).sum(axis=0)
        ops.accumulate(grads, "prior.means", dmeans)
        ops.accumulate(grads, "prior.logvars", dlogvars)
        ops.accumulate(grads, "prior.logits", ops.log_softmax_backward(dlog_weights, log_weights))
        return dz.sum(axis=-2)
        # END SOLUTION

    def sample(self, n, latent_dim, params, rng, dtype=np.float64):
        """Pick a component k ~ Categorical(π), then z = m_k + exp(½ ρ_k) · ε (the ½: ρ is a log-variance)."""
        weights = np.exp(ops.log_softmax(params["prior.logits"].astype(np.float64)))
        k = rng.choice(self.n_components, size=n, p=weights / weights.sum())
        eps = rng.standard_normal((n, latent_dim))
        z = params["prior.means"][k] + np.exp(0.5 * params["prior.logvars"][k]) * eps
        return z.astype(dtype, copy=False)

    def config(self):
        return dict(n_components=self.n_components, init_scale=self.init_scale)


class VampPrior(Prior):
    """The VampPrior (Tomczak & Welling 2018): the mixture of the model's own posteriors at K
    learnable pseudo-inputs u_k,  p(z) = 1/K Σ_k q(z | u_k).

    log p(z) = logsumexp_k log N(z; mu(u_k), diag exp(logvar(u_k))) - log K, where (mu, logvar) is
    the model's encoder. The gradient flows back through a second pass of the encoder, on the
    pseudo-inputs, and adds to the encoder's own gradients.

    The pseudo-inputs stay in the data's range [low, high] by construction: the parameter is
    v = ``"prior.pseudo_inputs"`` (K, input_dim), and u = low + (high - low) · sigmoid(v).

    Parameters
    ----------
    n_components : int K ≥ 1
    data : (M, input_dim) array or None: the pseudo-inputs start at K rows of it drawn at random
        (and low, high default to its range); None starts them uniform in [low, high]
    low, high : floats, the range of the pseudo-inputs (default: the data's, else 0 and 1)
    """

    name = "vamp"
    # Initial pseudo-inputs at the range's ends start this fraction of the range inside it. Not closer:
    # at a fraction m from an end, d u / d v = (high - low) m (1 - m), and Adamax moves v by about lr
    # per step, so a pixel started at m = 1e-3 (v = -6.9) needs thousands of steps to leave the flat end
    # of the sigmoid: the blank pixels of the starting images stayed frozen. VampPrior(50) on the digits,
    # seeds 0 and 1, mean best validation -ELBO / test NLL (K = 5000): m = 1e-3 101.52 / 95.16,
    # 1e-2 101.54 / 94.74, 0.05 101.42 / 94.55, 0.2 101.43 / 94.55 (chosen on the validation numbers).
    SIGMOID_MARGIN = 0.05

    def __init__(self, n_components=50, data=None, low=None, high=None):
        if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) or n_components < 1:
            raise ValueError(f"n_components must be a positive integer; got {n_components!r}")
        self.n_components = int(n_components)
        self.data = None if data is None else np.asarray(data, dtype=np.float64)
        if self.data is not None and (self.data.ndim != 2 or len(self.data) == 0):
            raise ValueError(f"data must be a 2-D array of examples; got shape {self.data.shape}")
        low = (float(self.data.min()) if self.data is not None else 0.0) if low is None else float(low)
        high = (float(self.data.max()) if self.data is not None else 1.0) if high is None else float(high)
        if not high > low:
            raise ValueError(f"the pseudo-inputs' range must have high > low; got low={low}, high={high}")
        self.low, self.high = low, high
        self.model = None

    def bind(self, model):
        self.model = model

    def _input_dim(self):
        if self.model is None:
            raise RuntimeError("the VampPrior is not bound to a model: build the VAE with prior=VampPrior(...)")
        return self.model.encoder.sizes[0]

    def param_shapes(self, latent_dim):
        return {"prior.pseudo_inputs": (self.n_components, self._input_dim())}

    def init_params(self, latent_dim, rng, dtype):
        K, D = self.n_components, self._input_dim()
        if self.data is not None:
            if self.data.shape[1] != D:
                raise ValueError(f"data has {self.data.shape[1]} columns; the model expects input_dim={D}")
            u = self.data[rng.choice(len(self.data), size=K, replace=len(self.data) < K)]
        else:
            u = rng.uniform(self.low, self.high, size=(K, D))
        fraction = np.clip((u - self.low) / (self.high - self.low), self.SIGMOID_MARGIN, 1 - self.SIGMOID_MARGIN)
        return {"prior.pseudo_inputs": np.log(fraction / (1 - fraction)).astype(dtype)}

    def pseudo_inputs(self, params):
        """u = low + (high - low) · sigmoid(v), (K, input_dim): the pseudo-inputs, in the data's range."""
        return (self.low + (self.high - self.low) * ops.sigmoid(params["prior.pseudo_inputs"])).astype(
            params["prior.pseudo_inputs"].dtype, copy=False)

    def components(self, params):
        """The mixture's components (mu, logvar), each (K, latent_dim), and the encoder's cache."""
        model = self.model
        h, encoder_cache = model.encoder.forward(params, self.pseudo_inputs(params), model.backend)
        L = h.shape[1] // 2
        return h[:, :L], h[:, L:], encoder_cache

    def log_prob(self, z, params):
        """log p(z) for z (..., latent_dim): returns (logp (...), cache)."""
        # BEGIN SOLUTION
        mu, logvar, encoder_cache = self.components(params)
        log_components, gaussian_cache = ops.diagonal_gaussian_log_prob(z[..., None, :], mu, logvar)  # (..., K)
        logp, logsumexp_cache = ops.logsumexp(log_components, axis=-1)
        return logp - np.log(self.n_components), (encoder_cache, gaussian_cache, logsumexp_cache, params)
        # END SOLUTION

    def log_prob_backward(self, dlogp, cache, grads):
        """dL/dz; adds to ``grads`` the encoder's gradients from the second pass and dL/dv.

        dL/d log N_k = dlogp · r_k (the responsibilities); the Gaussian's backward takes it to z and
        to (mu_k, logvar_k), the encoder's backward to the pseudo-inputs u_k, and
        du/dv = (high - low) · s (1 - s) with s = sigmoid(v) to the parameter.
        """
        # BEGIN SOLUTION
        encoder_cache, gaussian_cache, logsumexp_cache, params = cache
        dcomponents = ops.logsumexp_backward(dlogp, logsumexp_cache)
        dz, dmu, dlogvar = ops.diagonal_gaussian_log_prob_backward(dcomponents, gaussian_cache)
        du = self.model.encoder.backward(np.concatenate([dmu, dlogvar], axis=1), encoder_cache, grads,
                                         backend=self.model.backend)
        s = ops.sigmoid(params["prior.pseudo_inputs"])
        ops.accumulate(grads, "prior.pseudo_inputs", (du * (self.high - self.low) * s * (1 - s)).astype(du.dtype))
        return dz.sum(axis=-2)
        # END SOLUTION

    def sample(self, n, latent_dim, params, rng, dtype=np.float64):
        """Pick a pseudo-input k uniformly, then z = mu_k + exp(½ logvar_k) · ε."""
        mu, logvar, _ = self.components(params)
        k = rng.integers(0, self.n_components, n)
        z = mu[k] + np.exp(0.5 * logvar[k]) * rng.standard_normal((n, latent_dim))
        return z.astype(dtype, copy=False)

    def config(self):
        return dict(n_components=self.n_components, low=self.low, high=self.high)


PRIORS = {cls.name: cls for cls in (StandardNormal, MixtureOfGaussians, VampPrior)}


def make_prior(spec=None):
    """The prior described by ``spec``.

    Parameters
    ----------
    spec : None or "standard" (N(0, I)), "mog:K" (a mixture of K Gaussians), "vamp:K" (a VampPrior
        with K pseudo-inputs, started uniform in [0, 1]: give a :class:`VampPrior` with ``data`` for
        more), a :class:`Prior` (returned as it is), or a dict ``{"name": NAME, **options}`` as
        :meth:`minivae.VAE.save` writes it

    Returns
    -------
    Prior
    """
    if spec is None:
        return StandardNormal()
    if isinstance(spec, Prior):
        return spec
    if isinstance(spec, str):
        name, _, count = spec.partition(":")
        if name in ("mog", "vamp") and count:
            try:
                components = int(count)
            except ValueError:
                raise ValueError(f"prior {spec!r}: the number of components after ':' must be an integer") from None
            if components < 1:
                raise ValueError(f"prior {spec!r}: the number of components must be at least 1; got {components}")
            spec = {"name": name, "n_components": components}
        else:
            spec = {"name": spec}
    if not isinstance(spec, dict) or spec.get("name") not in PRIORS:
        raise ValueError(f"prior must be a minivae.priors.Prior, 'standard', 'mog:K' or 'vamp:K'; got {spec!r}")
    options = {key: value for key, value in spec.items() if key != "name"}
    return PRIORS[spec["name"]](**options)

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
* ``name`` and ``config()``: what :meth:`minivae.VAE.save` writes, so that ``VAE.load`` can rebuild it.

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


PRIORS = {cls.name: cls for cls in (StandardNormal,)}


def make_prior(spec=None):
    """The prior described by ``spec``.

    Parameters
    ----------
    spec : None or "standard" (N(0, I)), a :class:`Prior` (returned as it is), or a dict
        ``{"name": NAME, **options}`` as :meth:`minivae.VAE.save` writes it

    Returns
    -------
    Prior
    """
    if spec is None:
        return StandardNormal()
    if isinstance(spec, Prior):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or spec.get("name") not in PRIORS:
        raise ValueError(f"prior must be a minivae.priors.Prior or one of {sorted(PRIORS)}; got {spec!r}")
    options = {key: value for key, value in spec.items() if key != "name"}
    return PRIORS[spec["name"]](**options)

"""The distributions of a VAE: the prior p(z), the posterior q(z|x), and the likelihoods p(x|z).

Everything a VAE's loss needs is a log-density and its gradient, written next to each other:

* prior ``p(z) = N(0, I)``: :class:`StandardNormal`, with the analytic KL of a diagonal Gaussian to it;
* posterior ``q(z|x) = N(mu, diag(exp(logvar)))``: :func:`reparameterize` and its backward,
  :func:`diagonal_gaussian_log_prob`;
* likelihoods ``p(x|z)`` given the decoder's output: :class:`GaussianLikelihood` (the output is the mean),
  :class:`BernoulliLikelihood` (the output are logits), :class:`CategoricalLikelihood` (the output are
  ``num_values`` logits per dimension).

Log-densities are summed over the data or latent dimensions and returned per example. Backward
functions take ``dlogp`` (dL/dlogp, one number per example) and return dL/d(their input).
"""

import numpy as np

from .layers import sigmoid

LOG_2PI = float(np.log(2 * np.pi))


# --------------------------------------------------------------------------------------------------
# Posterior q(z|x) = N(mu, diag(exp(logvar))): the reparameterization trick
# --------------------------------------------------------------------------------------------------

def reparameterize(mu, logvar, eps):
    """Draw z ~ N(mu, diag(exp(logvar))) as a differentiable function of (mu, logvar).

    z = mu + std * eps with std = exp(0.5 * logvar) and eps ~ N(0, I) drawn outside.

    Parameters
    ----------
    mu, logvar : (N, latent_dim) arrays
    eps : (N, latent_dim) array of standard normal draws (or (S, N, latent_dim): broadcasting applies)

    Returns
    -------
    z : array of eps's shape
    cache : (std, eps)
    """
    std = np.exp(0.5 * logvar)
    return mu + std * eps, (std, eps)


def reparameterize_backward(dz, cache):
    """Backward of :func:`reparameterize`: how dL/dz reaches mu and logvar.

    dz/dmu = 1 and dz/dlogvar = 0.5 * std * eps, so
    dL/dmu = dL/dz,  dL/dlogvar = dL/dz * eps * 0.5 * std.

    Parameters
    ----------
    dz : (N, latent_dim) array, dL/dz
    cache : from :func:`reparameterize`

    Returns
    -------
    dmu, dlogvar : (N, latent_dim) arrays
    """
    std, eps = cache
    return dz, dz * eps * (0.5 * std)


def diagonal_gaussian_log_prob(z, mu, logvar):
    """log N(z | mu, diag(exp(logvar))), summed over the last axis.

    log q(z) = -1/2 Σ_j [log 2π + logvar_j + (z_j - mu_j)² exp(-logvar_j)]

    Parameters
    ----------
    z : (..., latent_dim) array
    mu, logvar : arrays broadcastable to z

    Returns
    -------
    (...) array
    """
    return -0.5 * np.sum(LOG_2PI + logvar + (z - mu) ** 2 * np.exp(-logvar), axis=-1)


# --------------------------------------------------------------------------------------------------
# Prior p(z) = N(0, I), with the KL of q(z|x) to it
# --------------------------------------------------------------------------------------------------

class StandardNormal:
    """The prior p(z) = N(0, I) over ``latent_dim`` dimensions.

    It is an object of its own (as in Tomczak's intro_dgm) so that a learnable prior could take its
    place: anything with ``log_prob``, ``sample`` and a KL with its backward fits.
    """

    def log_prob(self, z):
        """log N(z | 0, I) = -1/2 Σ_j (log 2π + z_j²).

        Parameters
        ----------
        z : (..., latent_dim) array

        Returns
        -------
        (...) array
        """
        return -0.5 * np.sum(LOG_2PI + z * z, axis=-1)

    def sample(self, n, latent_dim, rng, dtype=np.float64):
        """n draws, a (n, latent_dim) array, from ``rng`` (a numpy.random.Generator)."""
        return rng.standard_normal((n, latent_dim)).astype(dtype, copy=False)

    def kl(self, mu, logvar):
        """Analytic KL(N(mu, diag(exp(logvar))) || N(0, I)) per example.

        KL = 1/2 Σ_j (mu_j² + exp(logvar_j) - 1 - logvar_j)

        Parameters
        ----------
        mu, logvar : (N, latent_dim) arrays

        Returns
        -------
        kl : (N,) array, in nats
        """
        return 0.5 * np.sum(mu * mu + np.exp(logvar) - 1 - logvar, axis=-1)

    def kl_backward(self, dkl, mu, logvar):
        """Backward of :meth:`kl`.

        dKL/dmu = mu,  dKL/dlogvar = 1/2 (exp(logvar) - 1), each scaled by dL/dKL of its example.

        Parameters
        ----------
        dkl : (N,) array, dL/dKL
        mu, logvar : (N, latent_dim) arrays

        Returns
        -------
        dmu, dlogvar : (N, latent_dim) arrays
        """
        dkl = dkl[:, None]
        return dkl * mu, dkl * 0.5 * (np.exp(logvar) - 1)

    def kl_monte_carlo(self, z, mu, logvar):
        """Single-sample estimate log q(z|x) - log p(z) of the KL, per example (unbiased, but noisy).

        Parameters
        ----------
        z : (..., N, latent_dim) samples from q
        mu, logvar : (N, latent_dim) arrays

        Returns
        -------
        (..., N) array
        """
        return diagonal_gaussian_log_prob(z, mu, logvar) - self.log_prob(z)


# --------------------------------------------------------------------------------------------------
# Likelihoods p(x|z), given the decoder's output
# --------------------------------------------------------------------------------------------------

class Likelihood:
    """Interface of a decoder distribution p(x | decoder output).

    ``forward(x, out, params)`` returns ``(logp, cache)`` with logp (N,) = Σ_d log p(x_d | out);
    ``backward(dlogp, cache, grads)`` returns dL/dout and adds the gradients of the likelihood's own
    parameters (if any) to ``grads``.
    """

    name = None

    def output_dim(self, input_dim):
        """Width of the decoder's last layer for data of ``input_dim`` dimensions."""
        return input_dim

    def init_params(self, dtype):
        """The likelihood's own parameters, a dict (empty unless something is learned)."""
        return {}

    def check_data(self, x, name="x"):
        """Raise ValueError unless x is in the likelihood's support."""

    def log_prob(self, x, out, params):
        """log p(x | out) per example: (N,) array."""
        return self.forward(x, out, params)[0]


class GaussianLikelihood(Likelihood):
    """p(x|z) = N(mean(z), σ² I): the decoder outputs the mean.

    log p(x|z) = -1/2 Σ_d [log 2π + log σ² + (x_d - mean_d)² / σ²]

    Parameters
    ----------
    variance : float, σ² (fixed, or the initial value when learned)
    learn_variance : bool; if True, log σ² is the parameter ``"decoder.logvar"`` of shape (1,),
        shared by all dimensions, and trained with the rest
    """

    name = "gaussian"
    key = "decoder.logvar"

    def __init__(self, variance=1.0, learn_variance=False):
        if not np.isscalar(variance) or not np.isfinite(variance) or variance <= 0:
            raise ValueError(f"variance must be a positive number; got {variance!r}")
        self.variance = float(variance)
        self.learn_variance = bool(learn_variance)

    def init_params(self, dtype):
        if self.learn_variance:
            return {self.key: np.full(1, np.log(self.variance), dtype=dtype)}
        return {}

    def logvar(self, params):
        """log σ²: the learned parameter, or the fixed value."""
        if self.learn_variance:
            return params[self.key][0]
        return np.log(self.variance)

    def check_data(self, x, name="x"):
        pass  # any finite real number; finiteness is checked for every likelihood by the model

    def forward(self, x, out, params):
        """
        Parameters
        ----------
        x : (N, D) data
        out : (N, D) decoder output, the mean
        params : the model's parameters (for a learned log σ²)

        Returns
        -------
        logp : (N,) array
        cache : what :meth:`backward` needs
        """
        logvar = self.logvar(params)
        inv_var = np.exp(-logvar)
        residual = x - out
        squared_error = np.sum(residual * residual, axis=-1)
        D = x.shape[-1]
        logp = -0.5 * (D * (LOG_2PI + logvar) + inv_var * squared_error)
        return logp, (residual, squared_error, inv_var, D)

    def backward(self, dlogp, cache, grads):
        """dL/dmean = dL/dlogp · (x - mean) / σ²;
        dL/dlog σ² = Σ_n dL/dlogp_n · 1/2 (‖x_n - mean_n‖² / σ² - D).

        Parameters
        ----------
        dlogp : (N,) array
        cache : from :meth:`forward`
        grads : dict; receives ``"decoder.logvar"`` when σ² is learned

        Returns
        -------
        dout : (N, D) array
        """
        residual, squared_error, inv_var, D = cache
        if self.learn_variance:
            dlogvar = np.sum(dlogp * 0.5 * (squared_error * inv_var - D))
            grads[self.key] = grads.get(self.key, 0) + np.full(1, dlogvar, dtype=residual.dtype)
        return (dlogp * inv_var)[..., None] * residual

    def mean(self, out, params):
        """E[x|z] = the decoder output, (N, D)."""
        return out

    def sample(self, out, params, rng):
        """x = mean + σ · noise, (N, D)."""
        std = np.exp(0.5 * self.logvar(params))
        return out + std * rng.standard_normal(out.shape).astype(out.dtype, copy=False)

    def distribution_params(self, out, params):
        """The mean (N, D)."""
        return out


class BernoulliLikelihood(Likelihood):
    """p(x|z) = Π_d Bernoulli(x_d | sigmoid(l_d)): the decoder outputs logits l.

    Computed from the logits, never from probabilities, so that nothing overflows or takes log 0:
    log p(x|l) = x l - softplus(l),  softplus(l) = log(1 + exp(l)) = max(l, 0) + log1p(exp(-|l|)).
    """

    name = "bernoulli"

    def check_data(self, x, name="x"):
        if not np.all((x == 0) | (x == 1)):
            bad = x[(x != 0) & (x != 1)]
            raise ValueError(
                f"{name} must hold only 0 and 1 for the Bernoulli likelihood; found values such as "
                f"{bad[:3].tolist()}. Use minivae.datasets.binarize(x) to binarize data in [0, 1].")

    def forward(self, x, out, params):
        """
        Parameters
        ----------
        x : (N, D) array of 0 and 1
        out : (N, D) logits

        Returns
        -------
        logp : (N,) array
        cache : (x, logits)
        """
        softplus = np.maximum(out, 0) + np.log1p(np.exp(-np.abs(out)))
        return np.sum(x * out - softplus, axis=-1), (x, out)

    def backward(self, dlogp, cache, grads):
        """dlogp/dl = x - sigmoid(l), scaled by dL/dlogp of each example; returns (N, D)."""
        x, logits = cache
        return dlogp[..., None] * (x - sigmoid(logits))

    def mean(self, out, params):
        """Probabilities sigmoid(l), (N, D)."""
        return sigmoid(out)

    def sample(self, out, params, rng):
        """0/1 draws, (N, D), in the decoder's dtype."""
        return (rng.random(out.shape) < self.mean(out, params)).astype(out.dtype)

    def distribution_params(self, out, params):
        """Probabilities (N, D)."""
        return self.mean(out, params)


class CategoricalLikelihood(Likelihood):
    """p(x|z) = Π_d Categorical(x_d | softmax(l_d)) over the values 0..num_values-1.

    The decoder outputs D * L logits (L = num_values), read as an array (N, D, L) in C order, so
    logits[n, d, :] belong to dimension d. With the log-softmax computed stably (max subtracted),
    log p(x|l) = Σ_d [l_{d, x_d} - logsumexp_k l_{d, k}].

    Parameters
    ----------
    num_values : int ≥ 2, the number of values L each dimension takes (17 for the 8x8 digits)
    """

    name = "categorical"

    def __init__(self, num_values):
        if not isinstance(num_values, (int, np.integer)) or num_values < 2:
            raise ValueError(f"num_values must be an integer ≥ 2; got {num_values!r}")
        self.num_values = int(num_values)

    def output_dim(self, input_dim):
        return input_dim * self.num_values

    def check_data(self, x, name="x"):
        L = self.num_values
        if not np.all((x == np.round(x)) & (x >= 0) & (x < L)):
            bad = x[(x != np.round(x)) | (x < 0) | (x >= L)]
            raise ValueError(
                f"{name} must hold integers in [0, {L}) for the categorical likelihood with "
                f"num_values={L}; found values such as {bad[:3].tolist()}")

    def log_softmax(self, out):
        """log softmax over each dimension's L logits, (N, D, L), with the max subtracted."""
        logits = out.reshape(out.shape[0], -1, self.num_values)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))

    def forward(self, x, out, params):
        """
        Parameters
        ----------
        x : (N, D) array of integer values in [0, L) (any numeric dtype)
        out : (N, D * L) logits

        Returns
        -------
        logp : (N,) array
        cache : (log-softmax (N, D, L), x as integer indices (N, D))
        """
        log_probs = self.log_softmax(out)
        index = x.astype(np.intp)
        picked = np.take_along_axis(log_probs, index[..., None], axis=-1)[..., 0]
        return picked.sum(axis=-1), (log_probs, index)

    def backward(self, dlogp, cache, grads):
        """dlogp/dl_{d,k} = [k = x_d] - softmax(l_d)_k, scaled by dL/dlogp of each example.

        Returns
        -------
        dout : (N, D * L) array
        """
        log_probs, index = cache
        onehot = np.zeros_like(log_probs)
        np.put_along_axis(onehot, index[..., None], 1, axis=-1)
        dlogits = (onehot - np.exp(log_probs)) * dlogp[:, None, None]
        return dlogits.reshape(dlogits.shape[0], -1)

    def distribution_params(self, out, params):
        """Probabilities (N, D, L)."""
        return np.exp(self.log_softmax(out))

    def mean(self, out, params):
        """E[x|z] = Σ_k k · p_k per dimension, (N, D), a grey-level image."""
        values = np.arange(self.num_values, dtype=out.dtype)
        return self.distribution_params(out, params) @ values

    def sample(self, out, params, rng):
        """Draws (N, D) by inverting each dimension's cumulative distribution at a uniform number."""
        probs = self.distribution_params(out, params)
        u = rng.random(probs.shape[:-1] + (1,))
        index = np.sum(np.cumsum(probs, axis=-1) < u, axis=-1)
        return np.minimum(index, self.num_values - 1).astype(out.dtype)


LIKELIHOODS = ("gaussian", "bernoulli", "categorical")


def make_likelihood(name, num_values=17, variance=1.0, learn_variance=False):
    """The likelihood called ``name`` (one of ``LIKELIHOODS``) with its options."""
    if name == "gaussian":
        return GaussianLikelihood(variance, learn_variance)
    if name == "bernoulli":
        return BernoulliLikelihood()
    if name == "categorical":
        return CategoricalLikelihood(num_values)
    raise ValueError(f"likelihood must be one of {LIKELIHOODS}; got {name!r}")

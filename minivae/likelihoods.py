"""The decoder's distribution p(x|z), given the decoder's output: Gaussian, Bernoulli, categorical.

Each likelihood is a small object with one contract:

* ``forward(x, out, params, backend=None)`` returns ``(logp, cache)``, logp (N,) = Σ_d log p(x_d | out);
* ``backward(dlogp, cache, grads, backend=None)`` returns dL/dout and adds the gradients of the
  likelihood's own parameters (a learned Gaussian variance) to ``grads``;
* ``log_prob(x, out, params, backend=None)`` is log p alone, for evaluation;
* ``init_params``, ``param_shapes``, ``mean``, ``sample``, ``distribution_params``, ``check_data``.

The arithmetic is in the leaf operations of :mod:`minivae.ops` (``gaussian_log_prob``,
``bernoulli_log_prob``, ``categorical_log_prob`` and their backwards); ``backend`` only chooses which
implementation of a leaf runs (see :mod:`minivae.backend`). The categorical likelihood is where an
evaluation spends its time, and its leaf has a fused kernel: log-softmax, log p and the gradient in
one pass (and a second for the backward's scaling, which splits a big cache over threads).
"""

import numpy as np

from . import backend as backends
from . import ops

MAX_NUM_VALUES = 65536  # a categorical decoder with more values per dimension is not what anyone meant


class Likelihood:
    """Interface of a decoder distribution p(x | decoder output); see the module docstring."""

    name = None

    def output_dim(self, input_dim):
        """Width of the decoder's last layer for data of ``input_dim`` dimensions."""
        return input_dim

    def param_shapes(self):
        """name -> shape of the likelihood's own parameters (empty unless something is learned)."""
        return {}

    def init_params(self, dtype):
        """The likelihood's own parameters, a dict (empty unless something is learned)."""
        return {}

    def check_data(self, x, name="x"):
        """Raise ValueError unless x is in the likelihood's support."""

    def log_prob(self, x, out, params, backend=None):
        """log p(x | out) per example, (N,) array."""
        return self.forward(x, out, params, backend)[0]

    def config(self):
        """The constructor's arguments, JSON-serialisable."""
        return {}


class GaussianLikelihood(Likelihood):
    """p(x|z) = N(mean(z), σ² I): the decoder outputs the mean.

    log p(x|z) = -½ Σ_d [log 2π + log σ² + (x_d - mean_d)² / σ²]

    Parameters
    ----------
    variance : float > 0, σ² (fixed, or the initial value when learned)
    learn_variance : bool; if True, log σ² is the parameter ``"decoder.logvar"`` of shape (1,),
        shared by all dimensions, and trained with the rest
    """

    name = "gaussian"
    key = "decoder.logvar"

    def __init__(self, variance=1.0, learn_variance=False):
        if isinstance(variance, bool) or not np.isscalar(variance) or not np.isfinite(variance) or variance <= 0:
            raise ValueError(f"variance must be a positive number; got {variance!r}")
        self.variance = float(variance)
        self.learn_variance = bool(learn_variance)

    def param_shapes(self):
        return {self.key: (1,)} if self.learn_variance else {}

    def init_params(self, dtype):
        if self.learn_variance:
            return {self.key: np.full(1, np.log(self.variance), dtype=dtype)}
        return {}

    def logvar(self, params):
        """log σ²: the learned parameter, or the fixed value."""
        if self.learn_variance:
            return params[self.key][0]
        return np.log(self.variance)

    def forward(self, x, out, params, backend=None):
        """
        Parameters
        ----------
        x : (N, D) data
        out : (N, D) decoder output, the mean
        params : the model's parameters (for a learned log σ²)
        backend : which implementation of the leaf operations runs

        Returns
        -------
        logp : (N,) array
        cache : what :meth:`backward` needs
        """
        return backends.leaf_ops(backend).gaussian_log_prob(x, out, self.logvar(params))

    def backward(self, dlogp, cache, grads, backend=None):
        """dL/dmean = dL/dlogp · (x - mean) / σ²;  with a learned σ², grads["decoder.logvar"] gets
        dL/dlog σ² = Σ_n dL/dlogp_n · ½ (‖x_n - mean_n‖² / σ² - D).

        Parameters
        ----------
        dlogp : (N,) array
        cache : from :meth:`forward`
        grads : dict; receives ``"decoder.logvar"`` when σ² is learned
        backend : "numpy", "numba" or None (the current backend), as for :meth:`forward`

        Returns
        -------
        dout : (N, D) array
        """
        dmean, dlogvar = backends.leaf_ops(backend).gaussian_log_prob_backward(dlogp, cache)
        if self.learn_variance:
            ops.accumulate(grads, self.key, np.full(1, dlogvar, dtype=dmean.dtype))
        return dmean

    def mean(self, out, params):
        """E[x|z] = the decoder output, (N, D)."""
        return out

    def sample(self, out, params, rng):
        """x = mean + σ · noise, (N, D)."""
        std = np.exp(0.5 * self.logvar(params)).astype(out.dtype)
        return out + std * rng.standard_normal(out.shape).astype(out.dtype, copy=False)

    def distribution_params(self, out, params):
        """The mean (N, D)."""
        return out

    def config(self):
        return dict(variance=self.variance, learn_variance=self.learn_variance)


class BernoulliLikelihood(Likelihood):
    """p(x|z) = Π_d Bernoulli(x_d | sigmoid(l_d)): the decoder outputs logits l.

    Computed from the logits, never from probabilities: log p(x|l) = Σ_d [x_d l_d - softplus(l_d)].
    """

    name = "bernoulli"

    def check_data(self, x, name="x"):
        if not np.all((x == 0) | (x == 1)):
            bad = x[(x != 0) & (x != 1)]
            raise ValueError(
                f"{name} must hold only 0 and 1 for the Bernoulli likelihood; found values such as "
                f"{bad[:3].tolist()}. Use minivae.datasets.binarize(x) to binarize data in [0, 1].")

    def forward(self, x, out, params, backend=None):
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
        return backends.leaf_ops(backend).bernoulli_log_prob(out, x)

    def backward(self, dlogp, cache, grads, backend=None):
        """dL/dl = dL/dlogp · (x - sigmoid(l)); returns (N, D)."""
        return backends.leaf_ops(backend).bernoulli_log_prob_backward(dlogp, cache)

    def mean(self, out, params):
        """Probabilities sigmoid(l), (N, D)."""
        return ops.sigmoid(out)

    def sample(self, out, params, rng):
        """0/1 draws, (N, D), in the decoder's dtype."""
        return (rng.random(out.shape) < self.mean(out, params)).astype(out.dtype)

    def distribution_params(self, out, params):
        """Probabilities (N, D)."""
        return self.mean(out, params)


class CategoricalLikelihood(Likelihood):
    """p(x|z) = Π_d Categorical(x_d | softmax(l_d)) over the values 0..num_values-1.

    The decoder outputs D · L logits (L = num_values), read as (N, D, L) in C order, so
    logits[n, d, :] belong to dimension d:  log p(x|l) = Σ_d [l_{d, x_d} - logsumexp_k l_{d, k}].

    Parameters
    ----------
    num_values : int in [2, MAX_NUM_VALUES], the number of values L each dimension takes (17 for
        the 8x8 digits)
    """

    name = "categorical"

    def __init__(self, num_values):
        if (isinstance(num_values, bool) or not isinstance(num_values, (int, np.integer))
                or not 2 <= num_values <= MAX_NUM_VALUES):
            raise ValueError(f"num_values must be an integer in [2, {MAX_NUM_VALUES}]; got {num_values!r}")
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

    def forward(self, x, out, params, backend=None):
        """
        Parameters
        ----------
        x : (N, D) array of integer values in [0, L) (any numeric dtype)
        out : (N, D · L) logits

        Returns
        -------
        logp : (N,) array
        cache : (N, D · L) array, onehot(x) - softmax(l) (the gradient of log p, computed in the same pass)
        """
        return backends.leaf_ops(backend).categorical_log_prob(out, _as_indices(x), True)

    def backward(self, dlogp, cache, grads, backend=None):
        """dL/dl_{d,k} = dL/dlogp · ([k = x_d] - softmax(l_d)_k); returns (N, D · L), the cache's
        memory (the numba backend scales a big cache on threads)."""
        return backends.leaf_ops(backend).categorical_log_prob_backward(dlogp, cache)

    def log_prob(self, x, out, params, backend=None):
        """log p(x | out) per example, without the gradient: (N,) array."""
        return backends.leaf_ops(backend).categorical_log_prob(out, _as_indices(x), False)[0]

    def distribution_params(self, out, params):
        """Probabilities (N, D, L)."""
        return np.exp(ops.log_softmax(out.reshape(out.shape[0], -1, self.num_values)))

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

    def config(self):
        return dict(num_values=self.num_values)


LIKELIHOODS = {cls.name: cls for cls in (GaussianLikelihood, BernoulliLikelihood, CategoricalLikelihood)}


def make_likelihood(name, num_values=17, variance=1.0, learn_variance=False):
    """The likelihood called ``name`` (one of ``LIKELIHOODS``) with its options."""
    if name == "gaussian":
        return GaussianLikelihood(variance, learn_variance)
    if name == "bernoulli":
        return BernoulliLikelihood()
    if name == "categorical":
        return CategoricalLikelihood(num_values)
    raise ValueError(f"likelihood must be one of {tuple(LIKELIHOODS)}; got {name!r}")


def _as_indices(x):
    """Integer data as a C-contiguous int64 array of indices."""
    return np.ascontiguousarray(x, dtype=np.int64)

"""The leaf operations of a VAE, each forward beside its backward: the NumPy reference.

Everything minivae computes is built from the functions here. Read them first: the networks
(:mod:`minivae.layers`), the likelihoods and priors (:mod:`minivae.likelihoods`,
:mod:`minivae.priors`), the VAE (:mod:`minivae.vae`) and the objectives (:mod:`minivae.objectives`)
only chain them together.

Conventions, as in CS231n: a forward returns ``(out, cache)``; its backward takes ``dout`` = dL/dout
for some scalar loss L and the cache, and returns dL/d(each input), applying the chain rule once.
Log-densities are summed over the last axis and returned per example; their backward takes
``dlogp``, one number per example.

Backends. The compiled kernels of :mod:`minivae.kernels` implement some of these operations again,
under the same names, with the same arguments and the same caches (fewer passes over memory, the
same numbers). :func:`minivae.backend.leaf_ops` chooses, per operation, the kernel or the function
here; nothing above the leaves knows which one runs. An operation without a kernel runs the NumPy
code below on every backend.
"""

import numpy as np

LOG_2PI = float(np.log(2 * np.pi))
LEAKY_RELU_SLOPE = 0.01  # the slope for x < 0, PyTorch's default for nn.LeakyReLU
ACTIVATIONS = ("identity", "relu", "leaky_relu", "tanh", "sigmoid")


# --------------------------------------------------------------------------------------------------
# Linear map: out = x @ W + b
# --------------------------------------------------------------------------------------------------

def linear_forward(x, W, b):
    """Affine map ``out = x @ W + b``.

    Parameters
    ----------
    x : (N, in_dim) array
    W : (in_dim, out_dim) array
    b : (out_dim,) array

    Returns
    -------
    out : (N, out_dim) array
    cache : (x, W), what the backward needs
    """
    return x @ W + b, (x, W)


def linear_backward(dout, cache, need_dx=True):
    """Backward of :func:`linear_forward`.

    With out = x W + b:  dL/dx = dout Wᵀ,  dL/dW = xᵀ dout,  dL/db = Σ_n dout[n].

    Parameters
    ----------
    dout : (N, out_dim) array, dL/dout
    cache : from :func:`linear_forward`
    need_dx : bool; False skips the product dout Wᵀ (a network's input needs no gradient)

    Returns
    -------
    dx : (N, in_dim) array, or None when need_dx is False
    dW : (in_dim, out_dim) array
    db : (out_dim,) array
    """
    x, W = cache
    dx = dout @ W.T if need_dx else None
    return dx, x.T @ dout, dout.sum(axis=0)


# --------------------------------------------------------------------------------------------------
# Activations, elementwise: a = f(h). Every one here has a derivative that is a function of its
# output a, so the output is all the backward needs: dL/dh = dL/da * f'(h), with f'(h) from a.
# --------------------------------------------------------------------------------------------------

def sigmoid(x):
    """Logistic function 1 / (1 + exp(-x)) without overflow: exp is only taken of -|x|.

    Parameters
    ----------
    x : array

    Returns
    -------
    array of the same shape and dtype, values in (0, 1)
    """
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(np.result_type(x), copy=False)


def activation_forward(h, activation="identity", slope=LEAKY_RELU_SLOPE):
    """a = f(h) elementwise.

    * identity: f(h) = h
    * relu: f(h) = max(h, 0)
    * leaky_relu: f(h) = h for h > 0, slope · h otherwise (slope ≥ 0 is data, not a constant)
    * tanh: f(h) = tanh(h)
    * sigmoid: f(h) = 1 / (1 + exp(-h))

    Parameters
    ----------
    h : array, the pre-activation
    activation : one of ``ACTIVATIONS``
    slope : float ≥ 0, the leaky ReLU's slope for h < 0 (ignored by the others)

    Returns
    -------
    a : array of h's shape and dtype
    cache : a itself (the backward needs only the output)
    """
    if activation == "relu":
        a = np.where(h > 0, h, 0)
    elif activation == "leaky_relu":
        a = np.where(h > 0, h, h * h.dtype.type(slope))
    elif activation == "tanh":
        a = np.tanh(h)
    elif activation == "sigmoid":
        a = sigmoid(h)
    elif activation == "identity":
        a = h
    else:
        raise ValueError(f"activation must be one of {ACTIVATIONS}; got {activation!r}")
    a = a.astype(h.dtype, copy=False)
    return a, a


def activation_backward(da, cache, activation="identity", slope=LEAKY_RELU_SLOPE):
    """Backward of :func:`activation_forward`: dL/dh = dL/da · f'(h), with f'(h) read off a = f(h).

    * relu: f'(h) = 1 where a > 0, else 0 (we take 0 at h = 0)
    * leaky_relu: f'(h) = 1 where a > 0, else slope (a > 0 exactly when h > 0, for slope ≥ 0)
    * tanh: f'(h) = 1 - a²
    * sigmoid: f'(h) = a (1 - a)
    * identity: f'(h) = 1

    Parameters
    ----------
    da : array, dL/da
    cache : from :func:`activation_forward` (the output a)
    activation, slope : as given to the forward

    Returns
    -------
    dh : array of da's shape
    """
    a = cache
    if activation == "relu":
        return np.where(a > 0, da, 0).astype(da.dtype, copy=False)
    if activation == "leaky_relu":
        return np.where(a > 0, da, da * da.dtype.type(slope))
    if activation == "tanh":
        return da * (1 - a * a)
    if activation == "sigmoid":
        return da * (a * (1 - a))
    if activation == "identity":
        return da
    raise ValueError(f"activation must be one of {ACTIVATIONS}; got {activation!r}")


# --------------------------------------------------------------------------------------------------
# Dense layer: a = f(x @ W + b), the linear map and its activation as one operation
# --------------------------------------------------------------------------------------------------

def dense_forward(x, W, b, activation="identity", slope=LEAKY_RELU_SLOPE):
    """One layer of an MLP: a = f(x @ W + b).

    The compiled kernel of the same name fuses the bias and the activation into one pass over the
    product; here it is :func:`linear_forward` then :func:`activation_forward`.

    Parameters
    ----------
    x : (N, in_dim) array
    W : (in_dim, out_dim) array
    b : (out_dim,) array
    activation : one of ``ACTIVATIONS``
    slope : float ≥ 0, the leaky ReLU's slope

    Returns
    -------
    a : (N, out_dim) array
    cache : (x, W, a): the backward reads the activation's derivative off a. Do not overwrite a
        before the backward.
    """
    h, _ = linear_forward(x, W, b)
    a, _ = activation_forward(h, activation, slope)
    return a, (x, W, a)


def dense_backward(da, cache, activation="identity", slope=LEAKY_RELU_SLOPE, need_dx=True):
    """Backward of :func:`dense_forward`.

    With h = x W + b and g = dL/dh = da · f'(h):  dL/db = Σ_n g[n],  dL/dW = xᵀ g,  dL/dx = g Wᵀ.

    Parameters
    ----------
    da : (N, out_dim) array, dL/da
    cache : from :func:`dense_forward`
    activation, slope : as given to the forward
    need_dx : bool; False skips the product g Wᵀ (the first layer's input needs no gradient)

    Returns
    -------
    dx : (N, in_dim) array, or None when need_dx is False
    dW : (in_dim, out_dim) array
    db : (out_dim,) array
    """
    x, W, a = cache
    dh = activation_backward(da, a, activation, slope)
    return linear_backward(dh, (x, W), need_dx)


# --------------------------------------------------------------------------------------------------
# The posterior q(z|x) = N(mu, diag(exp(logvar))): sampling by reparameterization, log-densities
# --------------------------------------------------------------------------------------------------

def reparameterize(mu, logvar, eps):
    """Draw z ~ N(mu, diag(exp(logvar))) as a differentiable function of (mu, logvar).

    z = mu + std · eps with std = exp(½ logvar) (logvar is the log of the variance, so the standard
    deviation takes the ½) and eps ~ N(0, I) drawn outside.

    Parameters
    ----------
    mu, logvar : (N, latent_dim) arrays
    eps : (N, latent_dim) array of standard normal draws, or (K, N, latent_dim) for K draws each

    Returns
    -------
    z : array of eps's shape
    cache : (std, eps)
    """
    std = np.exp(0.5 * logvar)
    return mu + std * eps, (std, eps)


def reparameterize_backward(dz, cache):
    """Backward of :func:`reparameterize`: how dL/dz reaches mu and logvar.

    dz/dmu = 1 and dz/dlogvar = ½ std · eps, so
    dL/dmu = dL/dz,  dL/dlogvar = dL/dz · eps · ½ std   (summed over the K draws when eps has them).

    Parameters
    ----------
    dz : array of eps's shape, dL/dz
    cache : from :func:`reparameterize`

    Returns
    -------
    dmu, dlogvar : (N, latent_dim) arrays
    """
    std, eps = cache
    dmu, dlogvar = dz, dz * eps * (0.5 * std)
    if dz.ndim == 3:  # K draws per example: each draw's gradient adds up
        dmu, dlogvar = dmu.sum(axis=0), dlogvar.sum(axis=0)
    return dmu, dlogvar


def diagonal_gaussian_log_prob(z, mu, logvar):
    """log N(z | mu, diag(exp(logvar))), summed over the last axis.

    log N = -½ Σ_j [log 2π + logvar_j + (z_j - mu_j)² exp(-logvar_j)]

    Parameters
    ----------
    z : (..., latent_dim) array
    mu, logvar : arrays broadcastable to z

    Returns
    -------
    logp : (...) array
    cache : what :func:`diagonal_gaussian_log_prob_backward` needs
    """
    inv_var = np.exp(-logvar)
    diff = z - mu
    logp = -0.5 * np.sum(LOG_2PI + logvar + diff * diff * inv_var, axis=-1)
    return logp, (diff, inv_var, np.shape(mu), np.shape(logvar))


def diagonal_gaussian_log_prob_backward(dlogp, cache):
    """Backward of :func:`diagonal_gaussian_log_prob`, with z, mu and logvar independent inputs.

    With r = (z - mu) exp(-logvar):  dlogp/dz = -r,  dlogp/dmu = r,
    dlogp/dlogvar = ½ ((z - mu)² exp(-logvar) - 1); each scaled by dL/dlogp of its row, and summed
    over the axes on which mu or logvar were broadcast.

    Parameters
    ----------
    dlogp : (...) array, dL/dlogp
    cache : from :func:`diagonal_gaussian_log_prob`

    Returns
    -------
    dz : array of z's shape
    dmu : array of mu's shape
    dlogvar : array of logvar's shape
    """
    diff, inv_var, mu_shape, logvar_shape = cache
    w = dlogp[..., None]
    r = diff * inv_var
    dz = -w * r
    dlogvar = w * 0.5 * (diff * r - 1)
    return dz, _sum_to_shape(-dz, mu_shape), _sum_to_shape(dlogvar, logvar_shape)


def reparameterized_log_prob(eps, logvar):
    """log q(z|x) at its own sample z = mu + std · eps, written with eps: -½ Σ_j (log 2π + logvar_j + eps_j²).

    The same number as ``diagonal_gaussian_log_prob(z, mu, logvar)``, without dividing by a
    variance that may be tiny. As a function of (mu, logvar) *with z moving along* (the
    reparameterization), it does not depend on mu at all.

    Parameters
    ----------
    eps : (..., N, latent_dim) array, the standard normal draws behind z
    logvar : (N, latent_dim) array

    Returns
    -------
    logp : (..., N) array
    cache : the shape of eps
    """
    return -0.5 * np.sum(LOG_2PI + logvar + eps * eps, axis=-1), np.shape(eps)


def reparameterized_log_prob_backward(dlogp, cache):
    """Backward of :func:`reparameterized_log_prob`, the total derivative through z = mu + std · eps.

    d log q / dmu = 0 and d log q / dlogvar_j = -½ (eps is fixed, z moves with the parameters).

    Parameters
    ----------
    dlogp : (..., N) array
    cache : from :func:`reparameterized_log_prob`

    Returns
    -------
    dmu, dlogvar : (N, latent_dim) arrays
    """
    eps_shape = cache
    dlogvar = np.broadcast_to(-0.5 * dlogp[..., None], eps_shape)
    dlogvar = _sum_to_shape(dlogvar, eps_shape[-2:])
    return np.zeros_like(dlogvar), dlogvar


def kl_standard_normal(mu, logvar):
    """Analytic KL(N(mu, diag(exp(logvar))) || N(0, I)) per example.

    KL = ½ Σ_j (mu_j² + exp(logvar_j) - 1 - logvar_j)

    Parameters
    ----------
    mu, logvar : (N, latent_dim) arrays

    Returns
    -------
    kl : (N,) array, nats
    cache : (mu, exp(logvar))
    """
    var = np.exp(logvar)
    return 0.5 * np.sum(mu * mu + var - 1 - logvar, axis=-1), (mu, var)


def kl_standard_normal_backward(dkl, cache):
    """Backward of :func:`kl_standard_normal`.

    dKL/dmu = mu,  dKL/dlogvar = ½ (exp(logvar) - 1), each scaled by dL/dKL of its example.

    Parameters
    ----------
    dkl : (N,) array, dL/dKL
    cache : from :func:`kl_standard_normal`

    Returns
    -------
    dmu, dlogvar : (N, latent_dim) arrays
    """
    mu, var = cache
    w = dkl[:, None]
    return w * mu, w * 0.5 * (var - 1)


def kl_diagonal_gaussians(mu_q, logvar_q, mu_p, logvar_p):
    """Analytic KL(N(mu_q, diag exp(logvar_q)) || N(mu_p, diag exp(logvar_p))) per example.

    KL = ½ Σ_j [logvar_p - logvar_q + (exp(logvar_q) + (mu_q - mu_p)²) exp(-logvar_p) - 1]

    With mu_p = 0 and logvar_p = 0 it is :func:`kl_standard_normal`.

    Parameters
    ----------
    mu_q, logvar_q, mu_p, logvar_p : (N, latent_dim) arrays (the p side may broadcast)

    Returns
    -------
    kl : (N,) array, nats
    cache : what the backward needs
    """
    var_ratio = np.exp(logvar_q - logvar_p)
    diff = mu_q - mu_p
    inv_var_p = np.exp(-logvar_p)
    kl = 0.5 * np.sum(logvar_p - logvar_q + var_ratio + diff * diff * inv_var_p - 1, axis=-1)
    return kl, (var_ratio, diff, inv_var_p, np.shape(mu_p), np.shape(logvar_p))


def kl_diagonal_gaussians_backward(dkl, cache):
    """Backward of :func:`kl_diagonal_gaussians`.

    With d = mu_q - mu_p and ρ = exp(logvar_q - logvar_p):
    dKL/dmu_q = d exp(-logvar_p),            dKL/dmu_p = -d exp(-logvar_p),
    dKL/dlogvar_q = ½ (ρ - 1),               dKL/dlogvar_p = ½ (1 - ρ - d² exp(-logvar_p)),
    each scaled by dL/dKL of its example.

    Parameters
    ----------
    dkl : (N,) array
    cache : from :func:`kl_diagonal_gaussians`

    Returns
    -------
    dmu_q, dlogvar_q, dmu_p, dlogvar_p : arrays of the shapes given to the forward
    """
    var_ratio, diff, inv_var_p, mu_p_shape, logvar_p_shape = cache
    w = dkl[:, None]
    dmu_q = w * diff * inv_var_p
    dlogvar_q = w * 0.5 * (var_ratio - 1)
    dlogvar_p = w * 0.5 * (1 - var_ratio - diff * diff * inv_var_p)
    return dmu_q, dlogvar_q, _sum_to_shape(-dmu_q, mu_p_shape), _sum_to_shape(dlogvar_p, logvar_p_shape)


# --------------------------------------------------------------------------------------------------
# log-sum-exp and log-softmax, with the max subtracted
# --------------------------------------------------------------------------------------------------

def logsumexp(a, axis=-1):
    """log Σ_i exp(a_i) along ``axis``, computed as m + log Σ_i exp(a_i - m) with m = max_i a_i.

    Subtracting the max keeps every exponent ≤ 0: nothing overflows, and the largest term is 1, so
    the sum never underflows to 0 either.

    Parameters
    ----------
    a : array
    axis : int

    Returns
    -------
    out : array, a with ``axis`` removed
    cache : the softmax weights exp(a - out), what the backward needs
    """
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)  # all -inf: the sum is 0 and the log -inf, without NaN
    e = np.exp(a - m)
    s = np.sum(e, axis=axis, keepdims=True)
    with np.errstate(divide="ignore"):
        out = m + np.log(s)
    weights = np.divide(e, s, out=np.zeros_like(e), where=s > 0)
    return np.squeeze(out, axis=axis), (weights, axis)


def logsumexp_backward(dout, cache):
    """Backward of :func:`logsumexp`: d logsumexp(a) / da_i = softmax(a)_i.

    Parameters
    ----------
    dout : array, dL/dout (a's shape without ``axis``)
    cache : from :func:`logsumexp`

    Returns
    -------
    da : array of a's shape, dout · softmax(a)
    """
    weights, axis = cache
    return np.expand_dims(dout, axis) * weights


def log_softmax(logits):
    """log softmax over the last axis: l - logsumexp(l), with the max subtracted.

    Parameters
    ----------
    logits : (..., L) array

    Returns
    -------
    (..., L) array of log-probabilities
    """
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def log_softmax_backward(dout, log_probs):
    """Backward of :func:`log_softmax`, from its output.

    With p = softmax(l):  d log p_i / d l_k = [i = k] - p_k, so  dL/dl_k = dout_k - p_k Σ_i dout_i.

    Parameters
    ----------
    dout : (..., L) array, dL/d log softmax(l)
    log_probs : (..., L) array, the output of :func:`log_softmax`

    Returns
    -------
    dlogits : (..., L) array
    """
    return dout - np.exp(log_probs) * np.sum(dout, axis=-1, keepdims=True)


# --------------------------------------------------------------------------------------------------
# Log-likelihoods of the data given the decoder's output
# --------------------------------------------------------------------------------------------------

def categorical_log_prob(logits, x_int, need_grad=True):
    """log p(x | logits) of integer data, one categorical distribution per dimension, and its gradient.

    logits (N, D * L) are read as (N, D, L) in C order: logits[n, d, :] belong to dimension d. With
    the log-softmax computed stably,  log p(x|l) = Σ_d [l_{d, x_d} - logsumexp_k l_{d, k}].

    The gradient is computed here, in the same pass (the compiled kernel of this name writes both
    in one sweep over the logits): d log p / d l_{d, k} = [k = x_d] - softmax(l_d)_k.

    Parameters
    ----------
    logits : (N, D * L) array
    x_int : (N, D) integer array, values in [0, L)
    need_grad : bool; False computes log p only (for evaluation) and returns no cache

    Returns
    -------
    logp : (N,) array of the dtype of logits
    cache : (N, D * L) array, onehot(x) - softmax(l), or None when need_grad is False
    """
    N, D = x_int.shape
    log_probs = log_softmax(logits.reshape(N, D, -1))
    logp = np.take_along_axis(log_probs, x_int[:, :, None], axis=2)[:, :, 0].sum(axis=1)
    if not need_grad:
        return logp, None
    grad = -np.exp(log_probs)
    np.put_along_axis(grad, x_int[:, :, None], np.take_along_axis(grad, x_int[:, :, None], axis=2) + 1,
                      axis=2)
    return logp, grad.reshape(logits.shape)


def categorical_log_prob_backward(dlogp, cache):
    """Backward of :func:`categorical_log_prob`: dL/dl = dL/dlogp · (onehot(x) - softmax(l)).

    The cache is scaled in place and returned: call this once per forward.

    Parameters
    ----------
    dlogp : (N,) array
    cache : from :func:`categorical_log_prob`

    Returns
    -------
    dlogits : (N, D * L) array (the cache's memory)
    """
    grad = cache
    grad *= dlogp.astype(grad.dtype, copy=False)[:, None]
    return grad


def bernoulli_log_prob(logits, x):
    """log p(x | logits) of 0/1 data, one Bernoulli per dimension, from logits (never probabilities).

    log p(x|l) = Σ_d [x_d l_d - softplus(l_d)],  softplus(l) = log(1 + exp(l)) = max(l, 0) + log1p(exp(-|l|)),
    which neither overflows nor takes log 0.

    Parameters
    ----------
    logits : (N, D) array
    x : (N, D) array of 0 and 1

    Returns
    -------
    logp : (N,) array
    cache : (x, logits)
    """
    softplus = np.maximum(logits, 0) + np.log1p(np.exp(-np.abs(logits)))
    return np.sum(x * logits - softplus, axis=-1), (x, logits)


def bernoulli_log_prob_backward(dlogp, cache):
    """Backward of :func:`bernoulli_log_prob`: dL/dl = dL/dlogp · (x - sigmoid(l)).

    Parameters
    ----------
    dlogp : (N,) array
    cache : from :func:`bernoulli_log_prob`

    Returns
    -------
    dlogits : (N, D) array
    """
    x, logits = cache
    return dlogp[:, None] * (x - sigmoid(logits))


def gaussian_log_prob(x, mean, logvar):
    """log N(x | mean, σ² I) with one log σ² = ``logvar`` for every dimension, per example.

    log p(x|z) = -½ Σ_d [log 2π + log σ² + (x_d - mean_d)² / σ²]

    Parameters
    ----------
    x, mean : (N, D) arrays
    logvar : float or 0-d array, log σ²

    Returns
    -------
    logp : (N,) array in the dtype of mean
    cache : (x - mean, ‖x - mean‖² per row, 1/σ², D)
    """
    dtype = mean.dtype.type
    logvar = dtype(logvar)
    inv_var = np.exp(-logvar)
    residual = x - mean
    squared_error = np.sum(residual * residual, axis=-1)
    D = x.shape[-1]
    logp = -dtype(0.5) * (dtype(D) * (dtype(LOG_2PI) + logvar) + inv_var * squared_error)
    return logp, (residual, squared_error, inv_var, D)


def gaussian_log_prob_backward(dlogp, cache):
    """Backward of :func:`gaussian_log_prob`.

    dL/dmean = dL/dlogp · (x - mean) / σ²;   dL/dlog σ² = Σ_n dL/dlogp_n · ½ (‖x_n - mean_n‖² / σ² - D).

    Parameters
    ----------
    dlogp : (N,) array
    cache : from :func:`gaussian_log_prob`

    Returns
    -------
    dmean : (N, D) array
    dlogvar : float, dL/dlog σ²
    """
    residual, squared_error, inv_var, D = cache
    dlogp = dlogp.astype(residual.dtype, copy=False)
    dmean = (dlogp * inv_var)[:, None] * residual
    dlogvar = float(np.sum(dlogp * 0.5 * (squared_error * inv_var - D)))
    return dmean, dlogvar


# --------------------------------------------------------------------------------------------------
# Optimizer updates, in place, with PyTorch's conventions
# --------------------------------------------------------------------------------------------------

def sgd_update(p, g, velocity=None, lr=1e-2, momentum=0.0):
    """SGD with momentum, in place:  v ← momentum · v + g;  p ← p - lr · v  (plain SGD without velocity).

    Parameters
    ----------
    p, g : arrays of one shape, the parameter and its gradient
    velocity : array like p, or None when momentum is 0
    lr, momentum : floats
    """
    if velocity is not None:
        velocity *= momentum
        velocity += g
        g = velocity
    p -= p.dtype.type(lr) * g


def adam_update(p, g, m, v, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, t=1):
    """Adam (Kingma & Ba 2015), in place, at step t ≥ 1:

    m ← β1 m + (1 - β1) g;  v ← β2 v + (1 - β2) g²;
    p ← p - lr · m̂ / (√v̂ + eps),  m̂ = m / (1 - β1ᵗ),  v̂ = v / (1 - β2ᵗ)

    Parameters
    ----------
    p, g, m, v : arrays of one shape (m and v the running moments)
    lr, beta1, beta2, eps : floats
    t : int, the step number
    """
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    denominator = np.sqrt(v / (1 - beta2 ** t)) + eps
    p -= ((lr / (1 - beta1 ** t)) * m / denominator).astype(p.dtype, copy=False)


def adamax_update(p, g, m, u, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, t=1):
    """Adamax, Adam with the infinity norm (Kingma & Ba 2015, §7.1), in place, as in PyTorch:

    m ← β1 m + (1 - β1) g;  u ← max(β2 u, |g| + eps);  p ← p - lr / (1 - β1ᵗ) · m / u

    Parameters
    ----------
    p, g, m, u : arrays of one shape
    lr, beta1, beta2, eps : floats
    t : int, the step number
    """
    m *= beta1
    m += (1 - beta1) * g
    u *= beta2
    np.maximum(u, np.abs(g) + eps, out=u)
    p -= ((lr / (1 - beta1 ** t)) * m / u).astype(p.dtype, copy=False)


def ema_update(average, p, decay):
    """Polyak averaging, in place:  average ← decay · average + (1 - decay) · p.

    Parameters
    ----------
    average, p : arrays of one shape
    decay : float in [0, 1]
    """
    average *= decay
    average += (1 - decay) * p


# --------------------------------------------------------------------------------------------------

def accumulate(grads, key, value):
    """grads[key] += value, creating the entry on first use: gradients from several terms add up."""
    if key in grads:
        grads[key] += value
    else:
        grads[key] = value


def complete_grads(grads, params):
    """``grads`` in the order of ``params``, with zeros for parameters the loss does not depend on."""
    return {key: grads[key] if key in grads else np.zeros_like(value) for key, value in params.items()}


def _sum_to_shape(a, shape):
    """Sum ``a`` over the axes along which an array of ``shape`` was broadcast to a's shape."""
    shape = tuple(shape)
    if a.shape == shape:
        return a
    lead = a.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and a.shape[lead + i] != 1)
    return a.sum(axis=axes, keepdims=False).reshape(shape) if axes else a.reshape(shape)

"""Probabilistic PCA: the exact yardstick for a linear VAE with a Gaussian decoder.

The model (Tipping & Bishop 1999)::

    z ~ N(0, I_q),   x = W z + mu + noise,   noise ~ N(0, sigma2 I_d)

with ``W: (d, q)``. Everything is Gaussian, so everything is exact:

* marginal      p(x)   = N(mu, C),                    C = W Wᵀ + sigma2 I_d   (d, d)
* posterior     p(z|x) = N(M⁻¹ Wᵀ (x - mu), sigma2 M⁻¹),  M = Wᵀ W + sigma2 I_q   (q, q)
* maximum likelihood in closed form from the eigen-decomposition of the sample covariance.

A VAE whose encoder and decoder are linear and whose decoder is Gaussian with variance ``sigma2``
*is* a pPCA, so its log p(x) is known exactly and the gap ``log p(x) - ELBO`` can be computed
without Monte Carlo. The functions ``linear_gaussian_*`` and :func:`optimal_linear_encoder` at the
end of this module do that on plain arrays, and :func:`linear_vae_exact`, :func:`set_optimal_encoder`
and :func:`linear_vae_from_ppca` do it on a :class:`minivae.VAE` built with ``hidden=()`` and
``likelihood="gaussian"``. The conventions are those of :mod:`minivae.vae`:

* encoder ``y = x @ W_enc + b_enc`` with ``W_enc: (d, 2q)``, ``b_enc: (2q,)``; ``mu = y[:, :q]``,
  ``logvar = y[:, q:]``, ``q(z|x) = N(mu, diag(exp(logvar)))``;
* decoder ``mean = z @ W_dec + b_dec`` with ``W_dec: (q, d)``, ``b_dec: (d,)``,
  ``p(x|z) = N(mean, sigma2 I_d)``.

Note that ``W_dec`` is the *transpose* of pPCA's ``W``: ``W = W_dec.T``, ``mu = b_dec``.

Every computation costs O(n d q + d q²) given the data: C is never formed or inverted. The
matrix inversion lemma and the determinant lemma move the work to the small matrix M::

    C⁻¹    = (I_d - W M⁻¹ Wᵀ) / sigma2
    log|C| = (d - q) log sigma2 + log|M|

and the Mahalanobis term is written as a sum of two squares (no cancellation)::

    (x - mu)ᵀ C⁻¹ (x - mu) = ||x - mu - W zhat||² / sigma2 + ||zhat||²,   zhat = M⁻¹ Wᵀ (x - mu).
"""

import numpy as np

from .checks import check_rng
from .ops import LOG_2PI

# When the discarded eigenvalues average to (almost) zero -- constant data, q >= rank of the data,
# fewer examples than dimensions -- the maximum-likelihood sigma2 is 0 and the likelihood is
# unbounded. We floor sigma2 at this fraction of the mean eigenvalue (the average variance per
# dimension): negligible next to any real noise, yet log sigma2 and 1/sigma2 stay finite and
# M = WᵀW + sigma2 I stays well conditioned in float64.
NOISE_VARIANCE_FLOOR = 1e-6


# --------------------------------------------------------------------------------------------------
# Checking inputs
# --------------------------------------------------------------------------------------------------

def as_data_matrix(X, name, n_features=None):
    """Return X as a finite float64 (n, d) array or raise a ValueError that says what is wrong."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_examples, n_features); got shape {X.shape}")
    if X.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one row; got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} columns; the model was fitted with {n_features}")
    if not np.all(np.isfinite(X)):
        bad = int(np.count_nonzero(~np.isfinite(X)))
        raise ValueError(f"{name} must be finite; it holds {bad} NaN or infinite value(s)")
    return X


def _as_sigma2(sigma2, name="sigma2"):
    """Return sigma2 as a positive finite Python float or raise a ValueError."""
    sigma2_array = np.asarray(sigma2, dtype=np.float64)
    if sigma2_array.ndim != 0:
        raise ValueError(f"{name} must be a scalar; got shape {sigma2_array.shape}")
    sigma2 = float(sigma2_array)
    if not (np.isfinite(sigma2) and sigma2 > 0):
        raise ValueError(f"{name} must be a positive finite number; got {sigma2}")
    return sigma2


def _as_decoder(W_dec, b_dec, sigma2):
    """Check a linear Gaussian decoder and return pPCA's (W (d, q), b (d,), sigma2)."""
    W_dec = np.asarray(W_dec, dtype=np.float64)
    if W_dec.ndim != 2:
        raise ValueError(f"W_dec must be a 2-D array (latent_dim, data_dim); got shape {W_dec.shape}")
    q, d = W_dec.shape
    b_dec = np.asarray(b_dec, dtype=np.float64)
    if b_dec.shape != (d,):
        raise ValueError(f"b_dec must have shape ({d},) to match W_dec {W_dec.shape}; got {b_dec.shape}")
    if not (np.all(np.isfinite(W_dec)) and np.all(np.isfinite(b_dec))):
        raise ValueError("W_dec and b_dec must be finite")
    return W_dec.T, b_dec, _as_sigma2(sigma2)


def _as_posterior_params(mu, logvar, n, q):
    """Check the encoder's outputs mu, logvar: (n, q) each."""
    mu = np.asarray(mu, dtype=np.float64)
    logvar = np.asarray(logvar, dtype=np.float64)
    for name, value in (("mu", mu), ("logvar", logvar)):
        if value.shape != (n, q):
            raise ValueError(f"{name} must have shape ({n}, {q}) (one row per row of x, latent_dim columns); "
                             f"got {value.shape}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} must be finite")
    return mu, logvar


# --------------------------------------------------------------------------------------------------
# The Gaussian algebra shared by PPCA and the linear-VAE functions
# --------------------------------------------------------------------------------------------------

def _small_matrix(W, sigma2):
    """M = Wᵀ W + sigma2 I_q, its Cholesky factor L (M = L Lᵀ) and log|M| = 2 Σ log L_jj."""
    q = W.shape[1]
    M = W.T @ W + sigma2 * np.eye(q)
    L = np.linalg.cholesky(M)
    return M, 2.0 * float(np.sum(np.log(np.diag(L))))


def _log_marginal(xc, W, sigma2):
    """log N(xc | 0, W Wᵀ + sigma2 I) per row, in O(n d q + d q²).

    Parameters
    ----------
    xc : (n, d) array, centred data x - mu
    W : (d, q) array
    sigma2 : float > 0

    Returns
    -------
    (n,) array
    """
    d, q = W.shape
    M, logdet_M = _small_matrix(W, sigma2)
    zhat = np.linalg.solve(M, (xc @ W).T).T                         # (n, q) posterior means
    residual = xc - zhat @ W.T                                       # (n, d)
    mahalanobis = np.sum(residual ** 2, axis=1) / sigma2 + np.sum(zhat ** 2, axis=1)
    logdet_C = (d - q) * np.log(sigma2) + logdet_M                  # determinant lemma
    return -0.5 * (d * LOG_2PI + logdet_C + mahalanobis)


def _mean_log_likelihood_from_covariance(W, sigma2, SW, trace_S):
    """Mean training log-likelihood -1/2 [d log 2π + log|C| + tr(C⁻¹ S)] from S W, O(d q²).

    tr(C⁻¹ S) = (tr S - tr(M⁻¹ Wᵀ S W)) / sigma2 by the matrix inversion lemma.

    Parameters
    ----------
    W : (d, q) array
    sigma2 : float
    SW : (d, q) array, S @ W with S the (1/N) sample covariance
    trace_S : float, tr S
    """
    d, q = W.shape
    M, logdet_M = _small_matrix(W, sigma2)
    trace_Cinv_S = (trace_S - np.trace(np.linalg.solve(M, W.T @ SW))) / sigma2
    logdet_C = (d - q) * np.log(sigma2) + logdet_M
    return -0.5 * (d * LOG_2PI + logdet_C + trace_Cinv_S)


def _noise_floor(eigenvalues):
    """The smallest sigma2 allowed: NOISE_VARIANCE_FLOOR times the mean eigenvalue (times 1 if that is 0)."""
    scale = float(np.mean(eigenvalues))
    return NOISE_VARIANCE_FLOOR * (scale if scale > 0 else 1.0)


def _closed_form_noise(eigenvalues, q):
    """sigma2 = mean of the discarded eigenvalues λ_{q+1..d}, floored; returns (sigma2, floored?)."""
    sigma2 = float(np.mean(eigenvalues[q:]))
    floor = _noise_floor(eigenvalues)
    if sigma2 < floor:
        return floor, True
    return sigma2, False


def _spectrum(Xc):
    """Eigenvalues (d,), descending, ≥ 0, and the leading eigenvectors (d, k) of S = Xcᵀ Xc / n.

    With n ≥ d: ``numpy.linalg.eigh`` of S (k = d). With n < d: the SVD of Xc / sqrt(n), whose
    squared singular values are the n possibly non-zero eigenvalues (k = n); the other d - n are 0.
    Round-off can leave tiny negative eigenvalues; they are clipped at 0.
    """
    n, d = Xc.shape
    if n >= d:
        eigenvalues, U = np.linalg.eigh(Xc.T @ Xc / n)
        eigenvalues, U = eigenvalues[::-1], U[:, ::-1]
    else:
        _, singular_values, Vt = np.linalg.svd(Xc / np.sqrt(n), full_matrices=False)
        eigenvalues = np.concatenate([singular_values ** 2, np.zeros(d - n)])
        U = Vt.T
    return np.clip(eigenvalues, 0.0, None), U


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------

class PPCA:
    """Probabilistic PCA fitted by exact maximum likelihood (or by EM, for teaching).

    Model: ``x = W z + mu + noise``, ``z ~ N(0, I_q)``, ``noise ~ N(0, sigma2 I_d)``, hence
    ``p(x) = N(mu, C)`` with ``C = W Wᵀ + sigma2 I_d``.

    Maximum likelihood (Tipping & Bishop 1999, section 3.2). Let λ_1 ≥ ... ≥ λ_d and u_1..u_d be the
    eigenvalues and eigenvectors of the sample covariance ``S = (1/N) Σ (x_n - mu)(x_n - mu)ᵀ``
    normalised by N (not N - 1: that is what maximises the likelihood). Then::

        mu = mean of the data
        sigma2 = (1 / (d - q)) Σ_{j>q} λ_j                (the variance lost per discarded direction)
        W = U_q (Λ_q - sigma2 I)^{1/2} R                   (R an arbitrary rotation; here R = I)

    and the maximum of the mean training log-likelihood is
    ``-1/2 [d log 2π + Σ_{j≤q} log λ_j + (d - q) log sigma2 + d]``.

    scikit-learn's ``PCA`` normalises its covariance by N - 1, so its ``score`` (the same pPCA
    log-likelihood) differs slightly from this maximum-likelihood model's.

    Degenerate data. If the discarded eigenvalues average to (nearly) 0 -- all data in a subspace of
    dimension ≤ q, e.g. q ≥ rank of the data or n ≤ q -- the likelihood is unbounded as sigma2 → 0 and
    no maximum exists. sigma2 is then floored at ``NOISE_VARIANCE_FLOOR`` times the mean eigenvalue
    (``noise_variance_floored_`` is True), and columns of W whose λ_j is below the floor are 0.
    Constant columns (like the three always-zero pixels of the digits) are harmless: they only add
    zero eigenvalues.

    Parameters
    ----------
    n_components : int, the latent dimension q, 1 ≤ q < d

    Attributes (after :meth:`fit` or :meth:`fit_em`)
    ----------
    W_ : (d, q) array, the loading matrix (columns orthogonal: W_ᵀ W_ is diagonal)
    mean_ : (d,) array, mu
    noise_variance_ : float, sigma2
    explained_variance_ : (q,) array, the top eigenvalues λ_1..λ_q of S (descending); after
        :meth:`fit_em`, the eigenvalues ``diag(W_ᵀ W_) + sigma2`` they converge to
    eigenvalues_ : (d,) array, all eigenvalues of S (descending, clipped at 0); None after :meth:`fit_em`
    noise_variance_floored_ : bool, whether sigma2 was raised to the floor
    n_features_in_ : int, d
    n_samples_ : int, N
    """

    def __init__(self, n_components):
        if isinstance(n_components, (bool, np.bool_)) or not isinstance(n_components, (int, np.integer)):
            raise TypeError(f"n_components must be an int; got {type(n_components).__name__}")
        if n_components < 1:
            raise ValueError(f"n_components must be ≥ 1; got {n_components}")
        self.n_components = int(n_components)
        self.W_ = None
        self.mean_ = None
        self.noise_variance_ = None
        self.explained_variance_ = None
        self.eigenvalues_ = None
        self.noise_variance_floored_ = False
        self.n_features_in_ = None
        self.n_samples_ = None

    def __repr__(self):
        return f"PPCA(n_components={self.n_components})"

    # ---------------------------------------------------------------------------------- helpers ---

    def _check_data_for_fit(self, X):
        X = as_data_matrix(X, "X")
        d = X.shape[1]
        if not self.n_components < d:
            raise ValueError(f"n_components must be < the number of columns of X ({d}); "
                             f"got n_components={self.n_components}")
        return X

    def _check_fitted(self, method):
        if self.W_ is None:
            raise ValueError(f"this PPCA is not fitted yet; call fit(X) or fit_em(X) before {method}()")

    def _centred(self, X, method):
        self._check_fitted(method)
        return as_data_matrix(X, "X", n_features=self.n_features_in_) - self.mean_

    # -------------------------------------------------------------------------------------- fit ---

    def fit(self, X):
        """Fit by exact maximum likelihood (closed form, no iterations).

        Parameters
        ----------
        X : (n, d) array of finite numbers, n ≥ 1, d > n_components

        Returns
        -------
        self
        """
        X = self._check_data_for_fit(X)
        n, d = X.shape
        q = self.n_components
        mean = X.mean(axis=0)
        eigenvalues, U = _spectrum(X - mean)
        sigma2, floored = _closed_form_noise(eigenvalues, q)

        # W = U_q (Λ_q - sigma2 I)^{1/2}. When n < q there are only n eigenvectors; the missing
        # ones have λ_j = 0 < sigma2, so their columns of W are 0 anyway.
        k = min(q, U.shape[1])
        W = np.zeros((d, q))
        W[:, :k] = U[:, :k] * np.sqrt(np.clip(eigenvalues[:k] - sigma2, 0.0, None))

        self.W_, self.mean_, self.noise_variance_ = W, mean, sigma2
        self.explained_variance_ = eigenvalues[:q].copy()
        self.eigenvalues_ = eigenvalues
        self.noise_variance_floored_ = floored
        self.n_features_in_, self.n_samples_ = d, n
        return self

    def fit_em(self, X, n_iter=1000, tol=1e-12, rng=None, W_init=None, sigma2_init=None):
        """Fit by the EM algorithm of Tipping & Bishop (1999, section 3.2 and appendix B).

        E-step, for each example::

            <z_n>      = M⁻¹ Wᵀ (x_n - mu)
            <z_n z_nᵀ> = sigma2 M⁻¹ + <z_n><z_n>ᵀ

        M-step, with the sums over n written through the (1/N) sample covariance S so one iteration
        costs one product S W (O(d² q), or O(n d q) when n < d) and O(d q²) more::

            W_new      = S W (sigma2 I + M⁻¹ Wᵀ S W)⁻¹
            sigma2_new = tr(S - S W M⁻¹ W_newᵀ) / d

        Each iteration cannot lower the likelihood. At the end W is rotated to its principal axes
        (W ← W V with W = P Σ Vᵀ its SVD), which leaves C unchanged and makes Wᵀ W diagonal like
        the closed-form solution.

        Parameters
        ----------
        X : (n, d) array
        n_iter : int, the maximum number of EM iterations
        tol : float, stop when the mean log-likelihood rises by less than tol * max(1, |L|)
        rng : numpy.random.Generator, used only to draw W_init ~ N(0, tr(S)/d) when W_init is None
        W_init : (d, q) array or None
        sigma2_init : float > 0 or None (default tr(S)/d, the average variance per dimension)

        Returns
        -------
        self
        history : list of float, the mean training log-likelihood at the initial parameters and after
            each iteration (length = iterations run + 1), non-decreasing up to round-off
        """
        X = self._check_data_for_fit(X)
        n, d = X.shape
        q = self.n_components
        mean = X.mean(axis=0)
        Xc = X - mean
        trace_S = float(np.sum(Xc ** 2)) / n
        S = Xc.T @ Xc / n if n >= d else None

        def S_times(W):
            return S @ W if S is not None else Xc.T @ (Xc @ W) / n

        floor = NOISE_VARIANCE_FLOOR * (trace_S / d if trace_S > 0 else 1.0)
        if W_init is None:
            if not isinstance(rng, np.random.Generator):
                raise ValueError("fit_em needs a starting point: pass W_init (d, q) or "
                                 f"rng=numpy.random.default_rng(seed); got W_init=None, rng={rng!r}")
            W = rng.standard_normal((d, q)) * np.sqrt(max(trace_S / d, floor))
        else:
            W = np.array(W_init, dtype=np.float64)
            if W.shape != (d, q) or not np.all(np.isfinite(W)):
                raise ValueError(f"W_init must be a finite ({d}, {q}) array; got shape {W.shape}")
        sigma2 = max(trace_S / d, floor) if sigma2_init is None else _as_sigma2(sigma2_init, "sigma2_init")

        history = []
        for _ in range(n_iter + 1):
            SW = S_times(W)
            history.append(float(_mean_log_likelihood_from_covariance(W, sigma2, SW, trace_S)))
            if len(history) > n_iter:
                break
            if len(history) >= 2 and history[-1] - history[-2] < tol * max(1.0, abs(history[-1])):
                break
            M, _ = _small_matrix(W, sigma2)
            Minv_Wt_SW = np.linalg.solve(M, W.T @ SW)                            # (q, q)
            W_new = np.linalg.solve((sigma2 * np.eye(q) + Minv_Wt_SW).T, SW.T).T  # S W (σ²I + M⁻¹WᵀSW)⁻¹
            SW_Minv = np.linalg.solve(M, SW.T).T                                 # S W M⁻¹ (M symmetric)
            sigma2 = max((trace_S - float(np.sum(SW_Minv * W_new))) / d, floor)
            W = W_new

        P, singular_values, Vt = np.linalg.svd(W, full_matrices=False)
        self.W_ = P * singular_values                                            # = W V
        self.mean_, self.noise_variance_ = mean, sigma2
        self.explained_variance_ = singular_values ** 2 + sigma2
        self.eigenvalues_ = None
        self.noise_variance_floored_ = sigma2 <= floor
        self.n_features_in_, self.n_samples_ = d, n
        return self, history

    # ----------------------------------------------------------------------------- likelihoods ---

    def log_likelihood(self, X):
        """Exact log p(x) = log N(x | mean_, C) of each row, C = W Wᵀ + sigma2 I, in O(n d q + d q²).

        With M = Wᵀ W + sigma2 I_q and zhat = M⁻¹ Wᵀ (x - mu)::

            log p(x) = -1/2 [d log 2π + (d - q) log sigma2 + log|M|
                             + ||x - mu - W zhat||² / sigma2 + ||zhat||²]

        Parameters
        ----------
        X : (n, d) array

        Returns
        -------
        (n,) array
        """
        Xc = self._centred(X, "log_likelihood")
        return _log_marginal(Xc, self.W_, self.noise_variance_)

    def mean_log_likelihood(self, X):
        """The average of :meth:`log_likelihood` over the rows of X (nats per example); a float."""
        return float(np.mean(self.log_likelihood(X)))

    def max_log_likelihood(self):
        """The closed-form mean training log-likelihood of the maximum-likelihood fit.

        ``-1/2 [d log 2π + Σ_{j≤q} log λ_j + (d - q) log sigma2 + d]`` with sigma2 the mean of the
        discarded eigenvalues. When sigma2 was floored (degenerate data) there is no maximum; the
        value returned is then the training log-likelihood of the floored model,
        ``-1/2 [d log 2π + Σ_{j≤q} log c_j + (d - q) log sigma2 + Σ_{j≤q} λ_j / c_j + Σ_{j>q} λ_j / sigma2]``
        with c_j = max(λ_j, sigma2), which equals the formula above when nothing is floored.

        Computed from the training eigenvalues only (not from the current W_, noise_variance_);
        available after :meth:`fit`. After :meth:`fit_em`, compare ``history[-1]`` with
        ``PPCA(q).fit(X).max_log_likelihood()``.

        Returns
        -------
        float
        """
        self._check_fitted("max_log_likelihood")
        if self.eigenvalues_ is None:
            raise ValueError("max_log_likelihood() needs the spectrum computed by fit(X); this model was "
                             "fitted by fit_em(X). Use PPCA(q).fit(X).max_log_likelihood() instead")
        q, d = self.n_components, self.n_features_in_
        eigenvalues = self.eigenvalues_
        sigma2, _ = _closed_form_noise(eigenvalues, q)
        c = np.maximum(eigenvalues[:q], sigma2)
        return float(-0.5 * (d * LOG_2PI + np.sum(np.log(c)) + (d - q) * np.log(sigma2)
                             + np.sum(eigenvalues[:q] / c) + np.sum(eigenvalues[q:]) / sigma2))

    # ------------------------------------------------------------------ posterior and generation ---

    def posterior(self, X):
        """The exact posterior p(z|x) = N(M⁻¹ Wᵀ (x - mu), sigma2 M⁻¹), M = Wᵀ W + sigma2 I_q.

        Parameters
        ----------
        X : (n, d) array

        Returns
        -------
        mean : (n, q) array, one posterior mean per row
        cov : (q, q) array, the posterior covariance (the same for every x)
        """
        Xc = self._centred(X, "posterior")
        M, _ = _small_matrix(self.W_, self.noise_variance_)
        mean = np.linalg.solve(M, (Xc @ self.W_).T).T
        cov = self.noise_variance_ * np.linalg.inv(M)
        return mean, 0.5 * (cov + cov.T)

    def reconstruct(self, X):
        """W <z|x> + mu: the data-space image of the posterior mean.

        Parameters
        ----------
        X : (n, d) array

        Returns
        -------
        (n, d) array
        """
        mean, _ = self.posterior(X)
        return mean @ self.W_.T + self.mean_

    def sample(self, n, rng, return_latent=False):
        """Draw x = W z + mu + sqrt(sigma2) eps with z, eps standard normal.

        Parameters
        ----------
        n : int ≥ 0, the number of samples
        rng : numpy.random.Generator
        return_latent : bool, also return z

        Returns
        -------
        x : (n, d) array
        z : (n, q) array, only if return_latent
        """
        self._check_fitted("sample")
        check_rng(rng)
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative int; got {n!r}")
        d, q = self.W_.shape
        z = rng.standard_normal((n, q))
        eps = rng.standard_normal((n, d))
        x = z @ self.W_.T + self.mean_ + np.sqrt(self.noise_variance_) * eps
        return (x, z) if return_latent else x

    def covariance(self):
        """C = W Wᵀ + sigma2 I_d as a dense (d, d) array -- for tests and small d only."""
        self._check_fitted("covariance")
        d = self.n_features_in_
        return self.W_ @ self.W_.T + self.noise_variance_ * np.eye(d)

    # ----------------------------------------------------------------------------- linear VAE ---

    def to_linear_vae_params(self):
        """The linear VAE with a Gaussian decoder that this pPCA is, and its best linear encoder.

        Decoder: ``W_dec = W_.T`` (q, d), ``b_dec = mean_`` (d,), variance ``noise_variance_``.
        Encoder: :func:`optimal_linear_encoder` of that decoder. Because W_ᵀ W_ is diagonal (the
        columns of W_ are orthogonal), the encoder's q(z|x) is exactly the true posterior, so the
        ELBO equals log p(x).

        Returns
        -------
        params : dict with "encoder.0.W" (d, 2q), "encoder.0.b" (2q,), "decoder.0.W" (q, d),
            "decoder.0.b" (d,)
        sigma2 : float, the decoder's variance
        """
        self._check_fitted("to_linear_vae_params")
        W_dec, b_dec = self.W_.T.copy(), self.mean_.copy()
        W_enc, b_enc = optimal_linear_encoder(W_dec, b_dec, self.noise_variance_)
        params = {"encoder.0.W": W_enc, "encoder.0.b": b_enc, "decoder.0.W": W_dec, "decoder.0.b": b_dec}
        return params, float(self.noise_variance_)


# --------------------------------------------------------------------------------------------------
# Exact quantities of a linear VAE with a Gaussian decoder
# --------------------------------------------------------------------------------------------------

def linear_gaussian_log_marginal(x, W_dec, b_dec, sigma2):
    """Exact log p(x) of the decoder p(x|z) = N(z @ W_dec + b_dec, sigma2 I) with p(z) = N(0, I).

    This is the pPCA marginal N(x | b_dec, W Wᵀ + sigma2 I) with W = W_dec.T.

    Parameters
    ----------
    x : (n, d) array
    W_dec : (q, d) array
    b_dec : (d,) array
    sigma2 : float > 0

    Returns
    -------
    (n,) array
    """
    W, b, sigma2 = _as_decoder(W_dec, b_dec, sigma2)
    x = as_data_matrix(x, "x", n_features=W.shape[0])
    return _log_marginal(x - b, W, sigma2)


def linear_gaussian_elbo(x, mu, logvar, W_dec, b_dec, sigma2):
    """The ELBO of q(z|x) = N(mu, diag(exp(logvar))) under the linear Gaussian decoder, in closed form.

    With W = W_dec.T, b = b_dec, and v = exp(logvar)::

        E_q[log N(x | W z + b, sigma2 I)] = -1/2 [d log(2π sigma2)
                                                  + (||x - b - W mu||² + Σ_j v_j ||W_{:,j}||²) / sigma2]
        KL(q || N(0, I)) = 1/2 Σ_j (mu_j² + v_j - 1 - logvar_j)
        ELBO = E_q[log p(x|z)] - KL

    Parameters
    ----------
    x : (n, d) array
    mu, logvar : (n, q) arrays, the encoder's outputs
    W_dec : (q, d) array
    b_dec : (d,) array
    sigma2 : float > 0

    Returns
    -------
    (n,) array
    """
    W, b, sigma2 = _as_decoder(W_dec, b_dec, sigma2)
    d, q = W.shape
    x = as_data_matrix(x, "x", n_features=d)
    mu, logvar = _as_posterior_params(mu, logvar, x.shape[0], q)
    var = np.exp(logvar)
    squared_error = np.sum((x - b - mu @ W.T) ** 2, axis=1)
    spread = var @ np.sum(W ** 2, axis=0)                          # Σ_j v_j ||W_{:,j}||²
    expected_log_likelihood = -0.5 * (d * (LOG_2PI + np.log(sigma2)) + (squared_error + spread) / sigma2)
    kl = 0.5 * np.sum(mu ** 2 + var - 1.0 - logvar, axis=1)
    return expected_log_likelihood - kl


def linear_gaussian_posterior_gap(x, mu, logvar, W_dec, b_dec, sigma2):
    """KL(q(z|x) || p(z|x)) exactly, which equals log p(x) - ELBO.

    The true posterior is N(m, Σ) with M = Wᵀ W + sigma2 I, m = M⁻¹ Wᵀ (x - b), Σ = sigma2 M⁻¹, so
    Σ⁻¹ = M / sigma2 and, with v = exp(logvar)::

        KL = 1/2 [Σ_j M_jj v_j / sigma2 + (m - mu)ᵀ M (m - mu) / sigma2 - q
                  + q log sigma2 - log|M| - Σ_j logvar_j]

    Parameters
    ----------
    x : (n, d) array
    mu, logvar : (n, q) arrays
    W_dec : (q, d) array
    b_dec : (d,) array
    sigma2 : float > 0

    Returns
    -------
    (n,) array, ≥ 0
    """
    W, b, sigma2 = _as_decoder(W_dec, b_dec, sigma2)
    d, q = W.shape
    x = as_data_matrix(x, "x", n_features=d)
    mu, logvar = _as_posterior_params(mu, logvar, x.shape[0], q)
    M, logdet_M = _small_matrix(W, sigma2)
    m = np.linalg.solve(M, ((x - b) @ W).T).T                       # (n, q) true posterior means
    delta = m - mu
    trace_term = np.exp(logvar) @ np.diag(M) / sigma2
    mahalanobis = np.sum((delta @ M) * delta, axis=1) / sigma2
    return 0.5 * (trace_term + mahalanobis - q + q * np.log(sigma2) - logdet_M - np.sum(logvar, axis=1))


def optimal_linear_encoder(W_dec, b_dec, sigma2):
    """The linear encoder whose q(z|x) is closest to the true posterior of a linear Gaussian decoder.

    Its mean is the true posterior mean, linear in x::

        mu(x) = M⁻¹ Wᵀ (x - b) = x @ A.T - A @ b,   A = M⁻¹ Wᵀ  (q, d),  M = Wᵀ W + sigma2 I

    and its variances are constant: sigma2 / diag(M), one over the diagonal of the posterior
    precision M / sigma2. That is the diagonal Gaussian with the smallest KL(q || p(z|x)), hence the
    largest ELBO (the mean-field solution); it is not the diagonal of the posterior covariance
    sigma2 M⁻¹, which is wider whenever the posterior has correlations. When Wᵀ W is diagonal (as for
    the maximum-likelihood pPCA with R = I) so is M, both agree, q(z|x) equals the true posterior and
    the ELBO equals log p(x). Otherwise a diagonal Gaussian cannot represent the correlations and a
    gap remains (the mean is still exact).

    Parameters
    ----------
    W_dec : (q, d) array
    b_dec : (d,) array
    sigma2 : float > 0

    Returns
    -------
    W_enc : (d, 2q) array, [A.T, 0]
    b_enc : (2q,) array, [-A @ b, log(sigma2 / diag(M))]
    """
    W, b, sigma2 = _as_decoder(W_dec, b_dec, sigma2)
    d, q = W.shape
    M, _ = _small_matrix(W, sigma2)
    A = np.linalg.solve(M, W.T)                                     # (q, d)
    W_enc = np.zeros((d, 2 * q))
    W_enc[:, :q] = A.T
    b_enc = np.concatenate([-A @ b, np.log(sigma2 / np.diag(M))])
    return W_enc, b_enc

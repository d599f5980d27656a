"""The exercises: what each one blanks out, its reference inputs, its checks and its known mistakes.

An exercise names its targets in the library (``"minivae.ops:linear_backward"``, or a method,
``"minivae.priors:VampPrior.log_prob"``), with the TODO the student reads. It knows

* ``cases(rng)``: the reference inputs, a list of dicts of arrays and numbers (shapes drawn from rng,
  so that the seed varies them);
* ``run(f, case, out)``: runs the computation, filling ``out`` with the named results. ``f(name)``
  gives ``"ops.linear_forward"``, ``"priors.MixtureOfGaussians"``, ...: the student's version for the
  exercise's own targets, the library's for everything else (NumPy path only);
* ``gradients(f, case)``: pairs (analytic, centered finite differences) to compare, both from the
  student's code: the backward against the numerical derivative of the student's *own* forward;
* ``mistakes``: known wrong variants, each with a hint. ``variant(case)`` returns the outputs that
  this mistake produces (a dict, a subset of ``run``'s; None where it predicts nothing), computed
  here, independently of the student's code; ``inject`` rewrites the library's solution into the
  mistake (the tests use it to check that the grader names it).

Everything runs in float64 on tiny shapes.
"""

import zlib
from dataclasses import dataclass, field

import numpy as np

from ..gradcheck import numerical_gradient, numerical_gradient_array

GROUPS = {"core": "The core: leaf operations, the -ELBO, optimizers, log p(x), pPCA",
          "family": "The model family: learnable priors, IWAE, the Gaussian-to-Gaussian KL"}


@dataclass
class Target:
    path: str                   # "minivae.ops:linear_backward"
    todo: object                # str, or a list of str (one per region)
    label: str = None           # the marker's label (None: the unlabelled regions)

    @property
    def todos(self):
        return [self.todo] if isinstance(self.todo, str) else list(self.todo)

    @property
    def top(self):
        """The top-level name the student's file defines (the function, or the class of a method)."""
        return self.path.partition(":")[2].split(".")[0]


@dataclass
class Mistake:
    name: str
    hint: str
    variant: object             # case -> dict of outputs (or None)
    inject: dict = field(default_factory=dict)  # target path -> [(old, new)] in the solution's source


class Exercise:
    """Base class; see the module docstring."""

    name = None
    group = "core"
    title = None
    targets = ()
    file = None          # the student file's name (without .py); exercises sharing a function share one
    mutable = ()         # case keys the computation may change in place
    # a case with "values_only": True (inputs of ±1000, for the stable formulas) skips the finite differences,
    # whose round-off grows with the size of the function's value
    value_tol = 1e-7     # relative error allowed against the reference
    grad_tol = 1e-5      # relative error allowed against centered finite differences
    points = 1

    def cases(self, rng):
        raise NotImplementedError

    def run(self, f, case, out):
        raise NotImplementedError

    def gradients(self, f, case):
        return []

    mistakes = ()

    @property
    def file_name(self):
        return self.file or self.name

    def rng(self, seed):
        """The generator of this exercise's cases for ``seed`` (the same seed, the same shapes and data)."""
        return np.random.default_rng([int(seed), zlib.crc32(self.name.encode())])


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------

def _dims(rng, low=2, high=5, n=1):
    values = [int(v) for v in rng.integers(low, high + 1, size=n)]
    return values if n > 1 else values[0]


def _fd(fun, x, dout):
    """Centered differences of Σ fun(x) · dout with respect to x (a float64 copy is perturbed)."""
    x = np.array(x, dtype=np.float64)
    return numerical_gradient_array(fun, x, dout)


def _away_from_zero(rng, shape, margin=0.1):
    h = rng.standard_normal(shape)
    return np.sign(h) * (margin + np.abs(h))


def _vae_case(rng, samples=None):
    """A tiny float64 VAE's settings, binary data and its noise."""
    D, L, H = _dims(rng, 3, 5), _dims(rng, 2, 3), _dims(rng, 2, 4)
    N = _dims(rng, 2, 4)
    shape = (N, L) if samples is None else (samples, N, L)
    return {"D": D, "L": L, "H": H, "seed": int(rng.integers(1000)),
            "x": (rng.random((N, D)) < 0.5).astype(np.float64), "eps": rng.standard_normal(shape)}


def _build_vae(cls, case, prior=None, likelihood="bernoulli", variance=1.0):
    return cls(case["D"], case["L"], hidden=(case["H"],), activation="tanh", likelihood=likelihood,
               variance=variance, prior=prior, dtype=np.float64, backend="numpy", seed=case["seed"])


def _library(name):
    """The library's object ``"module.attr"`` (for the wrong variants)."""
    import importlib
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module("minivae." + module), attr)


def _param_gradients(loss, params, grads, keys=None):
    """(name, analytic, numerical) for every parameter: loss() is recomputed as each entry moves."""
    return [(f"d{key}", grads[key], numerical_gradient(lambda _: loss(), params[key]))
            for key in (params if keys is None else keys)]


def _softmax(a, axis=-1):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


# --------------------------------------------------------------------------------------------------
# The core
# --------------------------------------------------------------------------------------------------

class LinearBackward(Exercise):
    name = "linear_backward"
    title = "Linear layer backward: dx, dW, db of out = x W + b"
    targets = (Target("minivae.ops:linear_backward",
                      "x, W = cache with x (N, in_dim), W (in_dim, out_dim); dout is (N, out_dim).\n"
                      "Return (dx, dW, db): dx (N, in_dim) (None when need_dx is False), dW (in_dim, out_dim),\n"
                      "db (out_dim,): dL/dx = dout Wᵀ, dL/dW = xᵀ dout, dL/db = Σ_n dout[n]."),)

    def cases(self, rng):
        N, I, O = _dims(rng, n=3)
        return [{"x": rng.standard_normal((N, I)), "W": rng.standard_normal((I, O)), "b": rng.standard_normal(O),
                 "dout": rng.standard_normal((N, O))}]

    def run(self, f, c, out):
        _, cache = f("ops.linear_forward")(c["x"], c["W"], c["b"])
        out["dx"], out["dW"], out["db"] = f("ops.linear_backward")(c["dout"], cache)

    def gradients(self, f, c):
        forward = f("ops.linear_forward")
        dx, dW, db = f("ops.linear_backward")(c["dout"], forward(c["x"], c["W"], c["b"])[1])
        return [("dx", dx, _fd(lambda x: forward(x, c["W"], c["b"])[0], c["x"], c["dout"])),
                ("dW", dW, _fd(lambda W: forward(c["x"], W, c["b"])[0], c["W"], c["dout"])),
                ("db", db, _fd(lambda b: forward(c["x"], c["W"], b)[0], c["b"], c["dout"]))]

    mistakes = (
        Mistake("wrong_axis", "db sums dout over the wrong axis: sum over the batch (axis 0), one number per "
                              "output unit, db has shape (out_dim,)",
                lambda c: {"db": c["dout"].sum(axis=1)},
                {"minivae.ops:linear_backward": [("dout.sum(axis=0)", "dout.sum(axis=1)")]}),
        Mistake("transposed_dW", "dW is transposed: dL/dW = xᵀ dout has W's shape (in_dim, out_dim)",
                lambda c: {"dW": c["dout"].T @ c["x"]},
                {"minivae.ops:linear_backward": [("x.T @ dout", "dout.T @ x")]}),
        Mistake("batch_mean", "db averages dout over the batch: the bias is added to every row, so its gradient "
                              "is the sum Σ_n dout[n], not the mean",
                lambda c: {"db": c["dout"].mean(axis=0)},
                {"minivae.ops:linear_backward": [("dout.sum(axis=0)", "dout.mean(axis=0)")]}),
    )


ACTIVATION_TODO = {
    "relu": "a = f(h) = max(h, 0) is the cache; da is dL/da, of a's shape.\n"
            "Return dh (da's shape) = da · f'(h), with f'(h) = 1 where a > 0, else 0.",
    "leaky_relu": "a = f(h) (h for h > 0, slope · h otherwise) is the cache; da is dL/da, of a's shape.\n"
                  "Return dh (da's shape) = da · f'(h), with f'(h) = 1 where a > 0, else slope.",
    "tanh": "a = tanh(h) is the cache; da is dL/da, of a's shape.\n"
            "Return dh (da's shape) = da · f'(h), with f'(h) written with the output a.",
    "sigmoid": "a = sigmoid(h) is the cache; da is dL/da, of a's shape.\n"
               "Return dh (da's shape) = da · f'(h), with f'(h) written with the output a.",
}


class ActivationBackward(Exercise):
    file = "activation_backward"
    activation = None

    def __init__(self, activation, upstream_missing, mistakes):
        self.activation = activation
        self.name = f"{activation}_backward"
        self.title = f"Activation backward: {activation}"
        self.targets = (Target("minivae.ops:activation_backward", ACTIVATION_TODO[activation], activation),)
        self.mistakes = tuple(mistakes) + (
            Mistake("missing_upstream", "dh must be multiplied by the upstream gradient: dh = da · f'(h) (the chain "
                                        "rule), not f'(h) alone",
                    lambda c: {"dh": self.derivative(c)},
                    {_ACT: [upstream_missing]}),)

    def derivative(self, c):
        h, slope = c["h"], c["slope"]
        return {"relu": (h > 0) * 1.0, "leaky_relu": np.where(h > 0, 1.0, slope),
                "tanh": 1 - np.tanh(h) ** 2, "sigmoid": _sigmoid(h) * (1 - _sigmoid(h))}[self.activation]

    def cases(self, rng):
        N, D = _dims(rng, n=2)
        h = _away_from_zero(rng, (N, D))
        h.flat[0], h.flat[-1] = abs(h.flat[0]), -abs(h.flat[-1])  # both sides of 0, whatever the seed
        return [{"h": h, "da": rng.standard_normal((N, D)),
                 "slope": float(rng.uniform(0.05, 0.3))}]

    def run(self, f, c, out):
        _, cache = f("ops.activation_forward")(c["h"], self.activation, c["slope"])
        out["dh"] = f("ops.activation_backward")(c["da"], cache, self.activation, c["slope"])

    def gradients(self, f, c):
        forward = f("ops.activation_forward")
        dh = f("ops.activation_backward")(c["da"], forward(c["h"], self.activation, c["slope"])[1],
                                          self.activation, c["slope"])
        return [("dh", dh, _fd(lambda h: forward(h, self.activation, c["slope"])[0], c["h"], c["da"]))]


_ACT = "minivae.ops:activation_backward"
ACTIVATION_EXERCISES = [
    ActivationBackward("relu", ("np.where(a > 0, da, 0).astype(da.dtype, copy=False)", "np.where(a > 0, 1.0, 0.0)"), [
        Mistake("not_masked", "the gradient passes where h < 0: ReLU's derivative is 0 there (keep da only where a > 0)",
                lambda c: {"dh": c["da"]},
                {_ACT: [("np.where(a > 0, da, 0)", "np.where(a >= 0, da, 0)")]})]),
    ActivationBackward("leaky_relu", ("np.where(a > 0, da, da * da.dtype.type(slope))", "np.where(a > 0, 1.0, slope)"), [
        Mistake("as_relu", "the slope is missing where h < 0: the leaky ReLU's derivative there is slope, not 0",
                lambda c: {"dh": np.where(c["h"] > 0, c["da"], 0.0)},
                {_ACT: [("da * da.dtype.type(slope)", "0 * da")]}),
        Mistake("default_slope", "use the slope argument, not the default 0.01 (LEAKY_RELU_SLOPE)",
                lambda c: {"dh": np.where(c["h"] > 0, c["da"], 0.01 * c["da"])},
                {_ACT: [("da * da.dtype.type(slope)", "da * da.dtype.type(LEAKY_RELU_SLOPE)")]})]),
    ActivationBackward("tanh", ("return da * (1 - a * a)", "return 1 - a * a"), [
        Mistake("missing_square", "tanh'(h) = 1 - tanh(h)² = 1 - a²: the square is missing",
                lambda c: {"dh": c["da"] * (1 - np.tanh(c["h"]))},
                {_ACT: [("da * (1 - a * a)", "da * (1 - a)")]}),
        Mistake("applied_twice", "f'(h) is computed from the output a as if it were h: with a = tanh(h) already, "
                                 "tanh'(h) = 1 - a², not 1 - tanh(a)²",
                lambda c: {"dh": c["da"] * (1 - np.tanh(np.tanh(c["h"])) ** 2)},
                {_ACT: [("da * (1 - a * a)", "da * (1 - np.tanh(a) ** 2)")]})]),
    ActivationBackward("sigmoid", ("return da * (a * (1 - a))", "return a * (1 - a)"), [
        Mistake("applied_twice", "f'(h) is computed from the output a as if it were h: with a = sigmoid(h) already, "
                                 "sigmoid'(h) = a (1 - a)",
                lambda c: {"dh": c["da"] * _sigmoid(_sigmoid(c["h"])) * (1 - _sigmoid(_sigmoid(c["h"])))},
                {_ACT: [("da * (a * (1 - a))", "da * (1 / (1 + np.exp(-a))) * (1 - 1 / (1 + np.exp(-a)))")]})]),
]


class Reparameterize(Exercise):
    name = "reparameterize"
    title = "The reparameterization trick z = mu + exp(½ logvar) · eps, and its backward"
    targets = (Target("minivae.ops:reparameterize",
                      "mu, logvar: (N, latent_dim); eps: (N, latent_dim) or (K, N, latent_dim).\n"
                      "Return (z, cache): z of eps's shape, z = mu + std · eps with std = exp(½ logvar);\n"
                      "cache = (std, eps)."),
               Target("minivae.ops:reparameterize_backward",
                      "std, eps = cache; dz has eps's shape.\n"
                      "Return (dmu, dlogvar), each (N, latent_dim): dL/dmu = dz, dL/dlogvar = dz · eps · ½ std,\n"
                      "summed over the K draws (axis 0) when dz is 3-D."))

    def cases(self, rng):
        N, L, K = _dims(rng, n=3)
        mu, logvar = rng.standard_normal((N, L)), 0.5 * rng.standard_normal((N, L))
        return [{"mu": mu, "logvar": logvar, "eps": rng.standard_normal((N, L)), "dz": rng.standard_normal((N, L))},
                {"mu": mu, "logvar": logvar, "eps": rng.standard_normal((K, N, L)),
                 "dz": rng.standard_normal((K, N, L))}]

    def run(self, f, c, out):
        out["z"], cache = f("ops.reparameterize")(c["mu"], c["logvar"], c["eps"])
        out["dmu"], out["dlogvar"] = f("ops.reparameterize_backward")(c["dz"], cache)

    def gradients(self, f, c):
        forward = f("ops.reparameterize")
        dmu, dlogvar = f("ops.reparameterize_backward")(c["dz"], forward(c["mu"], c["logvar"], c["eps"])[1])
        return [("dmu", dmu, _fd(lambda mu: forward(mu, c["logvar"], c["eps"])[0], c["mu"], c["dz"])),
                ("dlogvar", dlogvar, _fd(lambda lv: forward(c["mu"], lv, c["eps"])[0], c["logvar"], c["dz"]))]

    @staticmethod
    def _sum_draws(a):
        return a.sum(axis=0) if a.ndim == 3 else a

    mistakes = (
        Mistake("exp_logvar_as_std", "exp(logvar) is the variance, not the standard deviation: std = exp(½ logvar)",
                lambda c: {"z": c["mu"] + np.exp(c["logvar"]) * c["eps"]},
                {"minivae.ops:reparameterize": [("np.exp(0.5 * logvar)", "np.exp(logvar)")]}),
        Mistake("missing_half", "the ½ is missing: d std / d logvar = ½ std, so dL/dlogvar = dz · eps · ½ std",
                lambda c: {"dlogvar": Reparameterize._sum_draws(c["dz"] * c["eps"] * np.exp(0.5 * c["logvar"]))},
                {"minivae.ops:reparameterize_backward": [("dz * eps * (0.5 * std)", "dz * eps * std")]}),
        Mistake("draws_not_summed", "with K draws per example (eps of shape (K, N, L)) the gradients of the draws "
                                    "add up: sum dmu and dlogvar over axis 0",
                lambda c: {"dmu": c["dz"], "dlogvar": c["dz"] * c["eps"] * 0.5 * np.exp(0.5 * c["logvar"])},
                {"minivae.ops:reparameterize_backward": [("if dz.ndim == 3:", "if False:")]}),
    )


def _kl_standard(mu, logvar, half=0.5, axis=-1, var=None):
    var = np.exp(logvar) if var is None else var
    return half * np.sum(mu * mu + var - 1 - logvar, axis=axis)


class KLStandardNormal(Exercise):
    name = "kl_standard_normal"
    title = "The analytic KL(N(mu, exp(logvar)) || N(0, I)) and its gradient"
    targets = (Target("minivae.ops:kl_standard_normal",
                      "mu, logvar: (N, latent_dim).\n"
                      "Return (kl, cache): kl (N,) = ½ Σ_j (mu² + exp(logvar) - 1 - logvar) over the last axis;\n"
                      "cache = (mu, exp(logvar))."),
               Target("minivae.ops:kl_standard_normal_backward",
                      "mu, var = cache; dkl: (N,).\n"
                      "Return (dmu, dlogvar), each (N, latent_dim): dkl · mu and dkl · ½ (exp(logvar) - 1)."))

    def cases(self, rng):
        N, L = _dims(rng, n=2)
        return [{"mu": rng.standard_normal((N, L)), "logvar": 0.7 * rng.standard_normal((N, L)),
                 "dkl": rng.standard_normal(N)}]

    def run(self, f, c, out):
        out["kl"], cache = f("ops.kl_standard_normal")(c["mu"], c["logvar"])
        out["dmu"], out["dlogvar"] = f("ops.kl_standard_normal_backward")(c["dkl"], cache)

    def gradients(self, f, c):
        forward = f("ops.kl_standard_normal")
        dmu, dlogvar = f("ops.kl_standard_normal_backward")(c["dkl"], forward(c["mu"], c["logvar"])[1])
        return [("dmu", dmu, _fd(lambda mu: forward(mu, c["logvar"])[0], c["mu"], c["dkl"])),
                ("dlogvar", dlogvar, _fd(lambda lv: forward(c["mu"], lv)[0], c["logvar"], c["dkl"]))]

    _KL = "minivae.ops:kl_standard_normal"
    mistakes = (
        Mistake("missing_half", "the ½ is missing: KL = ½ Σ_j (mu² + exp(logvar) - 1 - logvar)",
                lambda c: {"kl": _kl_standard(c["mu"], c["logvar"], half=1.0)},
                {_KL: [("return 0.5 * np.sum(mu * mu", "return np.sum(mu * mu")]}),
        Mistake("sign", "the sign: a KL is ≥ 0, KL = +½ Σ_j (mu² + exp(logvar) - 1 - logvar)",
                lambda c: {"kl": -_kl_standard(c["mu"], c["logvar"])},
                {_KL: [("return 0.5 * np.sum(mu * mu", "return -0.5 * np.sum(mu * mu")]}),
        Mistake("wrong_axis", "sum over the latent dimensions (the last axis): one KL per example, shape (N,)",
                lambda c: {"kl": _kl_standard(c["mu"], c["logvar"], axis=0)},
                {_KL: [("axis=-1), (mu, var)", "axis=0), (mu, var)")]}),
        Mistake("std_as_variance", "exp(½ logvar) is the standard deviation; the KL needs the variance exp(logvar)",
                lambda c: {"kl": _kl_standard(c["mu"], c["logvar"], var=np.exp(0.5 * c["logvar"]))},
                {_KL: [("var = np.exp(logvar)", "var = np.exp(0.5 * logvar)")]}),
        Mistake("missing_half_backward", "the ½ is missing in the gradient: dKL/dlogvar = ½ (exp(logvar) - 1)",
                lambda c: {"dlogvar": c["dkl"][:, None] * (np.exp(c["logvar"]) - 1)},
                {"minivae.ops:kl_standard_normal_backward": [("w * 0.5 * (var - 1)", "w * (var - 1)")]}),
    )


class GaussianLogProb(Exercise):
    name = "gaussian_log_prob"
    title = "The Gaussian log-likelihood log N(x | mean, σ² I) and its gradient"
    targets = (Target("minivae.ops:gaussian_log_prob",
                      "x, mean: (N, D); logvar: a number, log σ² (one for every dimension).\n"
                      "Return (logp, cache): logp (N,) = -½ Σ_d [log 2π + log σ² + (x_d - mean_d)² / σ²], in mean's\n"
                      "dtype; cache = (x - mean, ‖x - mean‖² per row (N,), 1/σ², D)."),
               Target("minivae.ops:gaussian_log_prob_backward",
                      "residual, squared_error, inv_var, D = cache; dlogp: (N,).\n"
                      "Return (dmean, dlogvar): dmean (N, D) = dlogp · (x - mean) / σ²,\n"
                      "dlogvar a float = Σ_n dlogp_n · ½ (‖x_n - mean_n‖² / σ² - D)."))

    def cases(self, rng):
        N, D = _dims(rng, n=2)
        return [{"x": rng.standard_normal((N, D)), "mean": rng.standard_normal((N, D)),
                 "logvar": float(0.5 * rng.standard_normal()), "dlogp": rng.standard_normal(N)}]

    def run(self, f, c, out):
        out["logp"], cache = f("ops.gaussian_log_prob")(c["x"], c["mean"], c["logvar"])
        out["dmean"], out["dlogvar"] = f("ops.gaussian_log_prob_backward")(c["dlogp"], cache)

    def gradients(self, f, c):
        forward = f("ops.gaussian_log_prob")
        dmean, dlogvar = f("ops.gaussian_log_prob_backward")(c["dlogp"], forward(c["x"], c["mean"], c["logvar"])[1])
        return [("dmean", dmean, _fd(lambda m: forward(c["x"], m, c["logvar"])[0], c["mean"], c["dlogp"])),
                ("dlogvar", np.asarray(dlogvar),
                 _fd(lambda lv: forward(c["x"], c["mean"], lv)[0], np.array(c["logvar"]), c["dlogp"]))]

    @staticmethod
    def _logp(c, half=0.5, axis=-1):
        D = c["x"].shape[-1]
        se = np.sum((c["x"] - c["mean"]) ** 2, axis=axis)
        return -half * (D * (np.log(2 * np.pi) + c["logvar"]) + np.exp(-c["logvar"]) * se)

    _F = "minivae.ops:gaussian_log_prob"
    mistakes = (
        Mistake("missing_half", "the ½ is missing: log N = -½ Σ_d [log 2π + log σ² + (x_d - mean_d)² / σ²]",
                lambda c: {"logp": GaussianLogProb._logp(c, half=1.0)},
                {_F: [("logp = -dtype(0.5) * (", "logp = -(")]}),
        Mistake("wrong_axis", "sum over the data dimensions (the last axis): one log-probability per example, shape (N,)",
                lambda c: {"logp": GaussianLogProb._logp(c, axis=0)},
                {_F: [("np.sum(residual * residual, axis=-1)", "np.sum(residual * residual, axis=0)")]}),
        Mistake("residual_sign", "the sign: d log N / d mean = +(x - mean) / σ² (the density rises as the mean moves "
                                 "toward x)",
                lambda c: {"dmean": -c["dlogp"][:, None] * (c["x"] - c["mean"]) * np.exp(-c["logvar"])},
                {"minivae.ops:gaussian_log_prob_backward": [("dmean = (dlogp * inv_var)", "dmean = -(dlogp * inv_var)")]}),
    )


class BernoulliLogProb(Exercise):
    name = "bernoulli_log_prob"
    title = "The Bernoulli log-likelihood from logits and its gradient"
    targets = (Target("minivae.ops:bernoulli_log_prob",
                      "logits, x: (N, D), x of 0 and 1.\n"
                      "Return (logp, cache): logp (N,) = Σ_d [x_d l_d - softplus(l_d)], with softplus written so that\n"
                      "it neither overflows nor takes log 0 (logits can be ±1000); cache = (x, logits)."),
               Target("minivae.ops:bernoulli_log_prob_backward",
                      "x, logits = cache; dlogp: (N,).\n"
                      "Return dlogits (N, D) = dlogp · (x - sigmoid(logits))."))

    def cases(self, rng):
        N, D = _dims(rng, n=2)
        x = (rng.random((N, D)) < 0.5).astype(np.float64)
        logits = 2 * rng.standard_normal((N, D))
        large = logits.copy()
        large[0] = np.where(rng.random(D) < 0.5, 1000.0, -1000.0)
        large[0, 0] = 1000.0  # exp(1000) overflows: only a stable softplus survives
        return [{"logits": logits, "x": x, "dlogp": rng.standard_normal(N)},
                {"logits": large, "x": x, "dlogp": rng.standard_normal(N), "values_only": True}]

    def run(self, f, c, out):
        out["logp"], cache = f("ops.bernoulli_log_prob")(c["logits"], c["x"])
        out["dlogits"] = f("ops.bernoulli_log_prob_backward")(c["dlogp"], cache)

    def gradients(self, f, c):
        forward = f("ops.bernoulli_log_prob")
        dlogits = f("ops.bernoulli_log_prob_backward")(c["dlogp"], forward(c["logits"], c["x"])[1])
        return [("dlogits", dlogits, _fd(lambda l: forward(l, c["x"])[0], c["logits"], c["dlogp"]))]

    mistakes = (
        Mistake("sign", "the sign: d log p / d logits = x - sigmoid(logits) (the data minus the prediction)",
                lambda c: {"dlogits": c["dlogp"][:, None] * (_sigmoid(c["logits"]) - c["x"])},
                {"minivae.ops:bernoulli_log_prob_backward": [("(x - sigmoid(logits))", "(sigmoid(logits) - x)")]}),
        Mistake("naive_softplus", "log(1 + exp(l)) overflows for large logits: write softplus(l) = max(l, 0) + "
                                  "log1p(exp(-|l|))",
                lambda c: {"logp": np.sum(c["x"] * c["logits"] - np.log(1 + np.exp(c["logits"])), axis=-1)},
                {"minivae.ops:bernoulli_log_prob": [("np.maximum(logits, 0) + np.log1p(np.exp(-np.abs(logits)))",
                                                     "np.log(1 + np.exp(logits))")]}),
        Mistake("wrong_axis", "sum over the data dimensions (the last axis): one log-probability per example, shape (N,)",
                lambda c: {"logp": np.sum(c["x"] * c["logits"] - np.logaddexp(0, c["logits"]), axis=0)},
                {"minivae.ops:bernoulli_log_prob": [("axis=-1), (x, logits)", "axis=0), (x, logits)")]}),
    )


class CategoricalLogProb(Exercise):
    name = "categorical_log_prob"
    title = "The categorical log-likelihood (log-softmax per dimension) and its gradient"
    targets = (Target("minivae.ops:categorical_log_prob",
                      "logits: (N, D * L), read as (N, D, L) in C order; x_int: (N, D) integers in [0, L).\n"
                      "Return (logp, cache): logp (N,) = Σ_d log softmax(logits[n, d])[x_nd] (use log_softmax);\n"
                      "cache (N, D * L) = onehot(x) - softmax(logits), or None when need_grad is False."),
               Target("minivae.ops:categorical_log_prob_backward",
                      "grad = cache (N, D * L); dlogp: (N,).\n"
                      "Return dlogits (N, D * L) = dlogp · (onehot(x) - softmax(logits)) (you may scale the cache in place)."))

    def cases(self, rng):
        N, D, L = _dims(rng), _dims(rng, 2, 3), _dims(rng, 4, 5)  # D ≠ L: a layout mistake shows
        return [{"logits": 2 * rng.standard_normal((N, D * L)), "x_int": rng.integers(0, L, (N, D)),
                 "dlogp": rng.standard_normal(N), "L": L}]

    def run(self, f, c, out):
        out["logp"], cache = f("ops.categorical_log_prob")(c["logits"], c["x_int"])
        out["dlogits"] = f("ops.categorical_log_prob_backward")(c["dlogp"], cache)

    def gradients(self, f, c):
        forward = f("ops.categorical_log_prob")
        dlogits = f("ops.categorical_log_prob_backward")(c["dlogp"], forward(c["logits"], c["x_int"])[1])
        return [("dlogits", dlogits, _fd(lambda l: forward(l, c["x_int"], need_grad=False)[0], c["logits"], c["dlogp"]))]

    @staticmethod
    def _logp(log_probs, x_int):
        return np.take_along_axis(log_probs, x_int[:, :, None], axis=2)[:, :, 0].sum(axis=1)

    @staticmethod
    def _wrong_sign(c):
        N, D = c["x_int"].shape
        p = _softmax(c["logits"].reshape(N, D, -1))
        onehot = np.eye(c["L"])[c["x_int"]]
        return {"dlogits": (c["dlogp"][:, None, None] * (p - onehot)).reshape(N, -1)}

    @staticmethod
    def _layout(c):
        N, D = c["x_int"].shape
        logits = c["logits"].reshape(N, -1, D).transpose(0, 2, 1)
        return {"logp": CategoricalLogProb._logp(np.log(_softmax(logits)), c["x_int"])}

    @staticmethod
    def _axis(c):
        N, D = c["x_int"].shape
        return {"logp": CategoricalLogProb._logp(np.log(_softmax(c["logits"].reshape(N, D, -1), axis=1)), c["x_int"])}

    _F = "minivae.ops:categorical_log_prob"
    mistakes = (
        Mistake("sign", "the sign: d log p / d logits = onehot(x) - softmax(logits), not softmax - onehot (that is the "
                        "gradient of -log p)",
                _wrong_sign.__func__,
                {_F: [("grad = -np.exp(log_probs)", "grad = np.exp(log_probs)"), ("axis=2) + 1,", "axis=2) - 1,")]}),
        Mistake("wrong_layout", "logits (N, D·L) are read as (N, D, L) in C order: logits[n, d*L:(d+1)*L] belong to "
                                "dimension d",
                _layout.__func__,
                {_F: [("log_softmax(logits.reshape(N, D, -1))",
                       "log_softmax(logits.reshape(N, -1, D).transpose(0, 2, 1))")]}),
        Mistake("wrong_axis", "the softmax runs over the L values of each dimension (the last axis of (N, D, L)), not "
                              "over the dimensions",
                _axis.__func__,
                {_F: [("log_softmax(logits.reshape(N, D, -1))",
                       "log_softmax(logits.reshape(N, D, -1).swapaxes(1, 2)).swapaxes(1, 2)")]}),
    )


def _naive_logsumexp(a, axis=-1):
    return np.log(np.sum(np.exp(a), axis=axis))


class LogSumExp(Exercise):
    name = "logsumexp"
    title = "log-sum-exp with the max subtracted, and its backward"
    targets = (Target("minivae.ops:logsumexp",
                      "a: any array; axis: int.\n"
                      "Return (out, cache): out = log Σ exp(a) along axis (a's shape without axis), computed stably\n"
                      "(a can hold ±1000); cache = (the softmax weights exp(a - out), a's shape, axis)."),
               Target("minivae.ops:logsumexp_backward",
                      "weights, axis = cache; dout: a's shape without axis.\n"
                      "Return da (a's shape) = dout · softmax(a), dout expanded along axis."))

    def cases(self, rng):
        N, K = _dims(rng, 2, 4), _dims(rng, 5, 7)
        large = rng.standard_normal((N, K)) + np.where(rng.random((N, 1)) < 0.5, 1000.0, -1000.0)
        large[0] += 1000.0 - large[0].max() + 1
        return [{"a": rng.standard_normal((N, K)), "axis": -1, "dout": rng.standard_normal(N)},
                {"a": rng.standard_normal((K, N)), "axis": 0, "dout": rng.standard_normal(N)},
                {"a": large, "axis": -1, "dout": rng.standard_normal(N), "values_only": True}]

    def run(self, f, c, out):
        out["out"], cache = f("ops.logsumexp")(c["a"], axis=c["axis"])
        out["da"] = f("ops.logsumexp_backward")(c["dout"], cache)

    def gradients(self, f, c):
        forward = f("ops.logsumexp")
        da = f("ops.logsumexp_backward")(c["dout"], forward(c["a"], axis=c["axis"])[1])
        return [("da", da, _fd(lambda a: forward(a, axis=c["axis"])[0], c["a"], c["dout"]))]

    mistakes = (
        Mistake("no_max", "subtract the max before exponentiating: logsumexp(a) = m + log Σ exp(a - m) with m = max a "
                          "(exp overflows to inf, or underflows to 0, for large inputs)",
                lambda c: {"out": _naive_logsumexp(c["a"], c["axis"])},
                {"minivae.ops:logsumexp": [("m = np.max(a, axis=axis, keepdims=True)",
                                            "m = 0 * np.max(a, axis=axis, keepdims=True)")]}),
        Mistake("wrong_axis", "take the log-sum-exp along the axis argument (axis=0 reduces the rows)",
                lambda c: {"out": np.log(np.sum(np.exp(c["a"] - c["a"].max(-1, keepdims=True)), -1)) + c["a"].max(-1)},
                {"minivae.ops:logsumexp": [("axis=axis", "axis=-1")]}),
        Mistake("missing_upstream", "multiply the softmax weights by the upstream gradient dout (expanded along the axis)",
                lambda c: {"da": _softmax(c["a"], c["axis"])},
                {"minivae.ops:logsumexp_backward": [("np.expand_dims(dout, axis) * weights", "weights")]}),
    )


class LogSoftmax(Exercise):
    name = "log_softmax"
    title = "log-softmax with the max subtracted, and its backward"
    targets = (Target("minivae.ops:log_softmax",
                      "logits: (..., L).\n"
                      "Return the (..., L) array l - logsumexp(l) over the last axis, stable for logits of ±1000."),
               Target("minivae.ops:log_softmax_backward",
                      "dout, log_probs: (..., L), log_probs the forward's output.\n"
                      "Return dlogits (..., L): dL/dl_k = dout_k - p_k Σ_i dout_i with p = exp(log_probs)."))

    def cases(self, rng):
        N, L = _dims(rng, n=2)
        large = 5 * rng.standard_normal((N, L)) + 1000.0
        return [{"logits": 2 * rng.standard_normal((N, L)), "dout": rng.standard_normal((N, L))},
                {"logits": large, "dout": rng.standard_normal((N, L)), "values_only": True}]

    def run(self, f, c, out):
        out["log_probs"] = f("ops.log_softmax")(c["logits"])
        out["dlogits"] = f("ops.log_softmax_backward")(c["dout"], out["log_probs"])

    def gradients(self, f, c):
        forward = f("ops.log_softmax")
        dlogits = f("ops.log_softmax_backward")(c["dout"], forward(c["logits"]))
        return [("dlogits", dlogits, _fd(forward, c["logits"], c["dout"]))]

    mistakes = (
        Mistake("no_max", "subtract the max before exponentiating: log softmax(l) = (l - m) - log Σ exp(l - m), "
                          "m = max l (exp overflows for large logits)",
                lambda c: {"log_probs": c["logits"] - _naive_logsumexp(c["logits"])[..., None]},
                {"minivae.ops:log_softmax": [("shifted = logits - logits.max(axis=-1, keepdims=True)",
                                              "shifted = logits")]}),
        Mistake("missing_sum", "the log-softmax couples the classes: dL/dl_k = dout_k - p_k Σ_i dout_i (sum dout over "
                               "the last axis), not dout_k - p_k dout_k",
                lambda c: {"dlogits": c["dout"] - _softmax(c["logits"]) * c["dout"]},
                {"minivae.ops:log_softmax_backward": [("np.sum(dout, axis=-1, keepdims=True)", "dout")]}),
    )


class NegativeELBO(Exercise):
    name = "negative_elbo"
    title = "The -ELBO of a minibatch: its value and the gradients that start the backward chain"
    targets = (Target("minivae.objectives:ELBO.loss_and_grads", [
        "log_px, kl, cache = model.elbo_terms(x, eps, self.kl_method(model)): (N,) each.\n"
        "Set loss (a float, the mean over the batch of β·KL - log p(x|z), β = beta above), dkl (N,) = dloss/dKL\n"
        "per example, and rate (a float, the mean KL).",
        "grads = model.elbo_terms_backward(dlog_px, dkl, cache) with dlog_px (N,) = dloss/dlog p(x|z)."]),)

    def cases(self, rng):
        case = _vae_case(rng)
        case["beta"] = float(rng.uniform(0.3, 2.0))
        return [case]

    def run(self, f, c, out):
        model = _build_vae(_library("vae.VAE"), c)
        loss, grads, stats = f("objectives.ELBO")(beta=c["beta"]).loss_and_grads(model, c["x"], c["eps"])
        out["loss"], out["rate"] = loss, stats["rate"]
        out.update({f"d{key}": value for key, value in grads.items()})

    def gradients(self, f, c):
        model, objective = _build_vae(_library("vae.VAE"), c), f("objectives.ELBO")(beta=c["beta"])
        grads = objective.loss_and_grads(model, c["x"], c["eps"])[1]
        return _param_gradients(lambda: objective.loss_and_grads(model, c["x"], c["eps"])[0], model.params, grads)

    @staticmethod
    def _variant(c, dlog_px_scale, dkl_scale, loss_scale=1.0, beta=None):
        model = _build_vae(_library("vae.VAE"), c)
        beta = c["beta"] if beta is None else beta
        log_px, kl, cache = model.elbo_terms(c["x"], c["eps"], "analytic")
        N = c["x"].shape[0]
        grads = model.elbo_terms_backward(np.full(N, dlog_px_scale / N), np.full(N, dkl_scale * beta / N), cache)
        out = {f"d{key}": value for key, value in grads.items()}
        out["loss"] = loss_scale * float(np.mean(beta * kl - log_px))
        return out

    _F = "minivae.objectives:ELBO.loss_and_grads"
    mistakes = (
        Mistake("batch_size", "the loss is the mean over the batch, so its gradient is divided by the batch size N: "
                              "dloss/dlog p(x|z) = -1/N and dloss/dKL = β/N per example",
                lambda c: {key: value * (c["x"].shape[0] if key != "loss" else 1)
                           for key, value in NegativeELBO._variant(c, -1, 1).items()},
                {_F: [("dkl = np.full(N, beta / N)", "dkl = np.full(N, beta)"),
                      ("np.full(N, -1 / N), dkl, cache)", "np.full(N, -1.0), dkl, cache)")]}),
        Mistake("sign", "the loss is the negative ELBO, minimised: mean of β·KL - log p(x|z) (not log p(x|z) - β·KL)",
                lambda c: NegativeELBO._variant(c, 1, -1, loss_scale=-1.0),
                {_F: [("loss = float(np.mean(beta * kl - log_px))", "loss = float(np.mean(log_px - beta * kl))"),
                      ("dkl = np.full(N, beta / N)", "dkl = np.full(N, -beta / N)"),
                      ("np.full(N, -1 / N), dkl, cache)", "np.full(N, 1 / N), dkl, cache)")]}),
        Mistake("beta_ignored", "weigh the KL by β (beta = self.kl_weight()): loss = mean(β·KL - log p(x|z)), "
                                "dloss/dKL = β/N",
                lambda c: NegativeELBO._variant(c, -1, 1, beta=1.0),
                {_F: [("loss = float(np.mean(beta * kl - log_px))", "loss = float(np.mean(kl - log_px))"),
                      ("dkl = np.full(N, beta / N)", "dkl = np.full(N, 1 / N)")]}),
    )


class ELBOBackward(Exercise):
    name = "elbo_backward"
    title = "The whole -ELBO backward: likelihood, decoder, KL, reparameterization, encoder"
    targets = (Target("minivae.vae:VAE.elbo_terms_backward",
                      "dlog_px, dkl: dL/dlog p(x|z) and dL/dKL, (N,) (or (S, N)); the cache unpacked above.\n"
                      "Create grads = {} and fill it (name -> array) by chaining the backward passes: self.likelihood.backward,\n"
                      "self.decoder.backward -> dL/dz; the KL's gradient (analytic: self.prior.kl_backward; Monte\n"
                      "Carlo: self.prior.log_prob_backward and ops.reparameterized_log_prob_backward);\n"
                      "ops.reparameterize_backward; self.encoder.backward on dh = [dL/dmu, dL/dlogvar] (N, 2·latent_dim)."),)

    def cases(self, rng):
        analytic, monte_carlo = _vae_case(rng), _vae_case(rng)
        analytic["kl"], monte_carlo["kl"] = "analytic", "monte_carlo"
        return [analytic, monte_carlo]

    def run(self, f, c, out):
        model = _build_vae(f("vae.VAE"), c)
        _, grads, _ = _library("objectives.ELBO")(kl=c["kl"]).loss_and_grads(model, c["x"], c["eps"])
        out.update({f"d{key}": value for key, value in grads.items()})

    def gradients(self, f, c):
        model, objective = _build_vae(f("vae.VAE"), c), _library("objectives.ELBO")(kl=c["kl"])
        grads = objective.loss_and_grads(model, c["x"], c["eps"])[1]
        return _param_gradients(lambda: objective.loss_and_grads(model, c["x"], c["eps"])[0], model.params, grads)

    @staticmethod
    def _variant(c, dkl_scale):
        if c["kl"] != "analytic":
            return None
        model = _build_vae(_library("vae.VAE"), c)
        N = c["x"].shape[0]
        _, _, cache = model.elbo_terms(c["x"], c["eps"], "analytic")
        grads = model.elbo_terms_backward(np.full(N, -1 / N), np.full(N, dkl_scale / N), cache)
        return {f"d{key}": value for key, value in grads.items()}

    _F = "minivae.vae:VAE.elbo_terms_backward"
    mistakes = (
        Mistake("kl_gradient_missing", "the KL's own gradient (dmu_kl, dlogvar_kl) must be added to the gradient that "
                                       "reaches mu and logvar through z",
                lambda c: ELBOBackward._variant(c, 0.0),
                {_F: [("[dmu + dmu_kl, dlogvar + dlogvar_kl]", "[dmu, dlogvar]")]}),
        Mistake("kl_gradient_sign", "the KL's gradient enters with the sign of dkl: add dmu_kl and dlogvar_kl, do not "
                                    "subtract them",
                lambda c: ELBOBackward._variant(c, -1.0),
                {_F: [("[dmu + dmu_kl, dlogvar + dlogvar_kl]", "[dmu - dmu_kl, dlogvar - dlogvar_kl]")]}),
    )


def _optimizer_case(rng, steps=3):
    shape = tuple(_dims(rng, n=2))
    return {"p": rng.standard_normal(shape), "gs": [rng.standard_normal(shape) for _ in range(steps)],
            "lr": float(rng.uniform(1e-2, 1e-1))}


def _adam_steps(c, bias=True, eps_inside=False, in_place=True):
    p = c["p"].copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    b1, b2, eps = c["beta1"], c["beta2"], c["eps"]
    for t, g in enumerate(c["gs"], start=1):
        m_new, v_new = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        m_hat = m_new / (1 - b1 ** t) if bias else m_new
        v_hat = v_new / (1 - b2 ** t) if bias else v_new
        p -= c["lr"] * m_hat / (np.sqrt(v_hat + eps) if eps_inside else np.sqrt(v_hat) + eps)
        if in_place:
            m, v = m_new, v_new
    return {"p": p, "m": m, "v": v}


class SGDMomentum(Exercise):
    name = "sgd_momentum"
    title = "The SGD-with-momentum update (PyTorch's rule), in place"
    targets = (Target("minivae.ops:sgd_update",
                      "p, g: arrays of one shape; velocity: like p, or None (plain SGD).\n"
                      "Update in place, return nothing: v ← momentum · v + g, then p ← p - lr · v\n"
                      "(p ← p - lr · g without velocity)."),)
    mutable = ("p", "velocity")

    def cases(self, rng):
        with_momentum = _optimizer_case(rng)
        with_momentum["momentum"] = float(rng.uniform(0.5, 0.95))
        plain = _optimizer_case(rng)
        plain["momentum"] = 0.0
        return [with_momentum, plain]

    def run(self, f, c, out):
        p = c["p"].copy()
        velocity = np.zeros_like(p) if c["momentum"] else None
        for g in c["gs"]:
            f("ops.sgd_update")(p, g, velocity, lr=c["lr"], momentum=c["momentum"])
        out["p"] = p
        if velocity is not None:
            out["velocity"] = velocity

    @staticmethod
    def _steps(c, dampening=False, in_place=True):
        p, v = c["p"].copy(), np.zeros_like(c["p"])
        for g in c["gs"]:
            v = c["momentum"] * v + ((1 - c["momentum"]) * g if dampening else g)
            if in_place:
                p = p - c["lr"] * v
        return {"p": p, "velocity": v} if c["momentum"] else {"p": p}

    mistakes = (
        Mistake("not_in_place", "update p in place (p -= ...; velocity *= ...; velocity += ...): the function returns "
                                "nothing, the caller keeps its arrays",
                lambda c: {"p": c["p"]},
                {"minivae.ops:sgd_update": [("p -= p.dtype.type(lr) * g", "p = p - p.dtype.type(lr) * g")]}),
        Mistake("dampened", "PyTorch's momentum has no dampening: v ← momentum · v + g, not momentum · v + (1 - momentum) · g",
                lambda c: SGDMomentum._steps(c, dampening=True) if c["momentum"] else None,
                {"minivae.ops:sgd_update": [("velocity += g", "velocity += (1 - momentum) * g")]}),
    )


class Adam(Exercise):
    name = "adam"
    title = "The Adam update with bias correction, in place"
    targets = (Target("minivae.ops:adam_update",
                      "p, g, m, v: arrays of one shape; t ≥ 1 the step number.\n"
                      "Update p, m, v in place, return nothing: m ← β1 m + (1 - β1) g; v ← β2 v + (1 - β2) g²;\n"
                      "p ← p - lr · m̂ / (√v̂ + eps) with m̂ = m / (1 - β1ᵗ), v̂ = v / (1 - β2ᵗ)."),)

    def cases(self, rng):
        case = _optimizer_case(rng)
        case.update(beta1=float(rng.uniform(0.8, 0.95)), beta2=float(rng.uniform(0.9, 0.999)), eps=1e-3)
        return [case]

    def run(self, f, c, out):
        p = c["p"].copy()
        m, v = np.zeros_like(p), np.zeros_like(p)
        for t, g in enumerate(c["gs"], start=1):
            f("ops.adam_update")(p, g, m, v, lr=c["lr"], beta1=c["beta1"], beta2=c["beta2"], eps=c["eps"], t=t)
        out.update(p=p, m=m, v=v)

    _F = "minivae.ops:adam_update"
    mistakes = (
        Mistake("no_bias_correction", "Adam without bias correction: the moments start at 0, so divide m by (1 - β1ᵗ) "
                                      "and v by (1 - β2ᵗ)",
                lambda c: _adam_steps(c, bias=False),
                {_F: [("np.sqrt(v / (1 - beta2 ** t)) + eps", "np.sqrt(v) + eps"),
                      ("(lr / (1 - beta1 ** t)) * m", "lr * m")]}),
        Mistake("eps_inside_sqrt", "eps goes outside the square root: √v̂ + eps",
                lambda c: _adam_steps(c, eps_inside=True),
                {_F: [("np.sqrt(v / (1 - beta2 ** t)) + eps", "np.sqrt(v / (1 - beta2 ** t) + eps)")]}),
        Mistake("not_in_place", "update the moments m and v in place (m *= beta1; m += ...): they carry over to the next step",
                lambda c: _adam_steps(c, in_place=False),
                {_F: [("m *= beta1\n    m += (1 - beta1) * g\n    v *= beta2\n    v += (1 - beta2) * g * g",
                       "m = beta1 * m + (1 - beta1) * g\n    v = beta2 * v + (1 - beta2) * g * g")]}),
    )


class Adamax(Exercise):
    name = "adamax"
    title = "The Adamax update (the infinity norm), in place"
    targets = (Target("minivae.ops:adamax_update",
                      "p, g, m, u: arrays of one shape; t ≥ 1 the step number.\n"
                      "Update p, m, u in place, return nothing: m ← β1 m + (1 - β1) g; u ← max(β2 u, |g| + eps);\n"
                      "p ← p - lr / (1 - β1ᵗ) · m / u."),)

    def cases(self, rng):
        case = _optimizer_case(rng)
        case.update(beta1=float(rng.uniform(0.8, 0.95)), beta2=float(rng.uniform(0.9, 0.999)), eps=1e-8)
        return [case]

    def run(self, f, c, out):
        p = c["p"].copy()
        m, u = np.zeros_like(p), np.zeros_like(p)
        for t, g in enumerate(c["gs"], start=1):
            f("ops.adamax_update")(p, g, m, u, lr=c["lr"], beta1=c["beta1"], beta2=c["beta2"], eps=c["eps"], t=t)
        out.update(p=p, m=m, u=u)

    @staticmethod
    def _steps(c, bias=True, absolute=True):
        p = c["p"].copy()
        m, u = np.zeros_like(p), np.zeros_like(p)
        for t, g in enumerate(c["gs"], start=1):
            m = c["beta1"] * m + (1 - c["beta1"]) * g
            u = np.maximum(c["beta2"] * u, (np.abs(g) if absolute else g) + c["eps"])
            p = p - (c["lr"] / (1 - c["beta1"] ** t) if bias else c["lr"]) * m / u
        return {"p": p, "m": m, "u": u}

    _F = "minivae.ops:adamax_update"
    mistakes = (
        Mistake("no_bias_correction", "Adamax still corrects the first moment's bias: p ← p - lr / (1 - β1ᵗ) · m / u",
                lambda c: Adamax._steps(c, bias=False),
                {_F: [("(lr / (1 - beta1 ** t)) * m / u", "lr * m / u")]}),
        Mistake("no_abs", "the infinity norm takes |g|: u ← max(β2 u, |g| + eps)",
                lambda c: Adamax._steps(c, absolute=False),
                {_F: [("np.abs(g) + eps", "g + eps")]}),
    )


class LogLikelihood(Exercise):
    name = "log_likelihood"
    title = "The importance-weighted log p(x), with a running logsumexp"
    targets = (Target("minivae.evaluate:log_likelihood",
                      "model: a VAE; x: (N, input_dim); n_samples: K; rng: a numpy Generator.\n"
                      "Return an (N,) float64 array: log 1/K Σ_k w_k with log w_k = log p(x|z_k) - (log q(z_k|x) - log p(z_k)):\n"
                      "draw eps = model.draw_noise(N, rng, samples=K) once, take\n"
                      "log_px, kl, _ = model.elbo_terms(x, eps, \"monte_carlo\", need_grad=False) ((K, N) each),\n"
                      "and a log-sum-exp over the K draws that never exponentiates a large number."),)

    def cases(self, rng):
        normal = _vae_case(rng)
        normal.update(K=_dims(rng, 4, 8), rng_seed=int(rng.integers(1000)), likelihood="bernoulli", variance=1.0)
        large = _vae_case(rng)
        large.update(K=_dims(rng, 4, 8), rng_seed=int(rng.integers(1000)), likelihood="gaussian", variance=1e-4)
        large["x"] = 30 * rng.standard_normal(large["x"].shape)
        return [normal, large]

    @staticmethod
    def _model(c):
        return _build_vae(_library("vae.VAE"), c, likelihood=c["likelihood"], variance=c["variance"])

    def run(self, f, c, out):
        out["log_px"] = f("evaluate.log_likelihood")(self._model(c), c["x"], c["K"], np.random.default_rng(c["rng_seed"]))

    @staticmethod
    def _log_w(c):
        model = LogLikelihood._model(c)
        eps = model.draw_noise(c["x"].shape[0], np.random.default_rng(c["rng_seed"]), samples=c["K"])
        log_px, kl, _ = model.elbo_terms(c["x"], eps, "monte_carlo", need_grad=False)
        return log_px - kl

    _F = "minivae.evaluate:log_likelihood"
    mistakes = (
        Mistake("no_max", "subtract the (running) max before exponentiating: exp(log w) underflows to 0 when log w is "
                          "very negative, and log 0 = -inf",
                lambda c: {"log_px": np.log(np.mean(np.exp(LogLikelihood._log_w(c)), axis=0))},
                {_F: [("new_max = np.maximum(running_max, log_w.max(axis=0))", "new_max = np.zeros_like(running_max)")]}),
        Mistake("missing_log_k", "average the weights, not sum them: log p(x) ≈ logsumexp_k log w_k - log K",
                lambda c: {"log_px": _library("evaluate.log_likelihood")(
                    LogLikelihood._model(c), c["x"], c["K"], np.random.default_rng(c["rng_seed"])) + np.log(c["K"])},
                {_F: [(" - math.log(K)", "")]}),
    )


def _ppca_reference(X, q, scale=1.0, subtract_noise=True):
    """C = W Wᵀ + σ² I, the mean and σ² of the maximum-likelihood pPCA with the covariance × scale."""
    mean = X.mean(axis=0)
    Xc = X - mean
    eigenvalues, U = np.linalg.eigh(scale * Xc.T @ Xc / X.shape[0])
    eigenvalues, U = eigenvalues[::-1], U[:, ::-1]
    sigma2 = eigenvalues[q:].mean()
    W = U[:, :q] * np.sqrt(eigenvalues[:q] - (sigma2 if subtract_noise else 0))
    return {"covariance": W @ W.T + sigma2 * np.eye(X.shape[1]), "mean": mean, "noise_variance": sigma2}


class PPCAFit(Exercise):
    name = "ppca_fit"
    title = "Probabilistic PCA by maximum likelihood: the spectrum of the covariance, W and σ²"
    targets = (Target("minivae.ppca:_spectrum",
                      "Xc: (n, d) centred data.\n"
                      "Return (eigenvalues, U): the d eigenvalues of the maximum-likelihood covariance S = Xcᵀ Xc / n,\n"
                      "descending and clipped at 0, and its eigenvectors U (d, k) in the same order (k = d when n ≥ d;\n"
                      "when n < d, the n leading ones from the SVD of Xc / √n, the other eigenvalues 0)."),
               Target("minivae.ppca:PPCA.fit",
                      "X: (n, d), checked; q = self.n_components.\n"
                      "Set mean (d,), eigenvalues and U from _spectrum(X - mean), sigma2 and floored from\n"
                      "_closed_form_noise(eigenvalues, q), and W (d, q) = U_q (Λ_q - σ² I)^½ (0 where λ_j < σ²)."))

    def cases(self, rng):
        d = _dims(rng, 4, 6)
        q, n = _dims(rng, 1, d - 2), _dims(rng, 12, 20)
        X = rng.standard_normal((n, q)) @ (2 * rng.standard_normal((q, d))) + 0.5 * rng.standard_normal((n, d)) + 1.0
        return [{"X": X, "q": q}]

    def run(self, f, c, out):
        model = f("ppca.PPCA")(c["q"]).fit(c["X"])
        out["covariance"] = model.W_ @ model.W_.T + model.noise_variance_ * np.eye(c["X"].shape[1])
        out["mean"], out["noise_variance"] = model.mean_, model.noise_variance_
        out["eigenvalues"] = model.eigenvalues_

    mistakes = (
        Mistake("n_minus_1", "pPCA's maximum likelihood uses the covariance normalised by N, not N - 1 (the unbiased "
                             "estimate is not the likelihood's maximum)",
                lambda c: _ppca_reference(c["X"], c["q"], scale=c["X"].shape[0] / (c["X"].shape[0] - 1)),
                {"minivae.ppca:_spectrum": [("Xc.T @ Xc / n)", "Xc.T @ Xc / (n - 1))")]}),
        Mistake("noise_not_subtracted", "W = U_q (Λ_q - σ² I)^½: subtract the noise variance from the kept eigenvalues "
                                        "(else C counts σ² twice in those directions)",
                lambda c: _ppca_reference(c["X"], c["q"], subtract_noise=False),
                {"minivae.ppca:PPCA.fit": [("np.sqrt(np.clip(eigenvalues[:k] - sigma2, 0.0, None))",
                                            "np.sqrt(eigenvalues[:k])")]}),
    )


class PPCALogLikelihood(Exercise):
    name = "ppca_log_likelihood"
    title = "The exact pPCA log-likelihood log N(x | mu, W Wᵀ + σ² I), through the small matrix M"
    targets = (Target("minivae.ppca:_log_marginal",
                      "xc: (n, d) centred data; W: (d, q); sigma2 > 0.\n"
                      "Return (n,): -½ [d log 2π + log|C| + (x - mu)ᵀ C⁻¹ (x - mu)] without forming C: with\n"
                      "M = Wᵀ W + σ² I (_small_matrix gives M and log|M|) and ẑ = M⁻¹ Wᵀ xc, log|C| = (d - q) log σ² + log|M|\n"
                      "and the Mahalanobis term = ‖xc - W ẑ‖² / σ² + ‖ẑ‖²."),)

    def cases(self, rng):
        d = _dims(rng, 4, 6)
        q, n = _dims(rng, 1, d - 1), _dims(rng, 2, 5)
        return [{"xc": rng.standard_normal((n, d)), "W": rng.standard_normal((d, q)),
                 "sigma2": float(rng.uniform(0.2, 2.0))}]

    def run(self, f, c, out):
        out["log_px"] = f("ppca._log_marginal")(c["xc"], c["W"], c["sigma2"])

    @staticmethod
    def _parts(c):
        W, s2, xc = c["W"], c["sigma2"], c["xc"]
        d, q = W.shape
        M = W.T @ W + s2 * np.eye(q)
        zhat = np.linalg.solve(M, W.T @ xc.T).T
        return d, q, M, zhat, np.sum((xc - zhat @ W.T) ** 2, axis=1) / s2

    @staticmethod
    def _log_px(c, zhat_term=True, noise_logdet=True):
        d, q, M, zhat, residual = PPCALogLikelihood._parts(c)
        logdet = np.linalg.slogdet(M)[1] + ((d - q) * np.log(c["sigma2"]) if noise_logdet else 0)
        return {"log_px": -0.5 * (d * np.log(2 * np.pi) + logdet + residual
                                  + (np.sum(zhat ** 2, axis=1) if zhat_term else 0))}

    _F = "minivae.ppca:_log_marginal"
    mistakes = (
        Mistake("missing_zhat_term", "(x - mu)ᵀ C⁻¹ (x - mu) = ‖x - mu - W ẑ‖² / σ² + ‖ẑ‖²: the ‖ẑ‖² term is missing",
                lambda c: PPCALogLikelihood._log_px(c, zhat_term=False),
                {_F: [(" + np.sum(zhat ** 2, axis=1)", "")]}),
        Mistake("missing_noise_logdet", "log|C| = (d - q) log σ² + log|M| (the determinant lemma): the (d - q) log σ² "
                                        "term is missing",
                lambda c: PPCALogLikelihood._log_px(c, noise_logdet=False),
                {_F: [("(d - q) * np.log(sigma2) + logdet_M", "logdet_M")]}),
    )


# --------------------------------------------------------------------------------------------------
# The model family
# --------------------------------------------------------------------------------------------------

class KLDiagonalGaussians(Exercise):
    name = "kl_diagonal_gaussians"
    group = "family"
    title = "The Gaussian-to-Gaussian KL(q || p) of two diagonal Gaussians and its gradient"
    targets = (Target("minivae.ops:kl_diagonal_gaussians",
                      "mu_q, logvar_q, mu_p, logvar_p: (N, latent_dim).\n"
                      "Return (kl, cache): kl (N,) = ½ Σ_j [logvar_p - logvar_q + (exp(logvar_q) + (mu_q - mu_p)²)\n"
                      "exp(-logvar_p) - 1]; cache = (ρ = exp(logvar_q - logvar_p), mu_q - mu_p, exp(-logvar_p),\n"
                      "np.shape(mu_p), np.shape(logvar_p))."),
               Target("minivae.ops:kl_diagonal_gaussians_backward",
                      "the cache unpacked; dkl: (N,).\n"
                      "Return (dmu_q, dlogvar_q, dmu_p, dlogvar_p) in the forward's shapes (sum with _sum_to_shape where\n"
                      "the p side was broadcast), each scaled by dkl of its row."))

    def cases(self, rng):
        N, L = _dims(rng, n=2)
        return [{"mu_q": rng.standard_normal((N, L)), "logvar_q": 0.6 * rng.standard_normal((N, L)),
                 "mu_p": rng.standard_normal((N, L)), "logvar_p": 0.6 * rng.standard_normal((N, L)),
                 "dkl": rng.standard_normal(N)}]

    ARGS = ("mu_q", "logvar_q", "mu_p", "logvar_p")

    def run(self, f, c, out):
        out["kl"], cache = f("ops.kl_diagonal_gaussians")(*(c[k] for k in self.ARGS))
        grads = f("ops.kl_diagonal_gaussians_backward")(c["dkl"], cache)
        out.update({f"d{k}": g for k, g in zip(self.ARGS, grads)})

    def gradients(self, f, c):
        forward = f("ops.kl_diagonal_gaussians")
        grads = f("ops.kl_diagonal_gaussians_backward")(c["dkl"], forward(*(c[k] for k in self.ARGS))[1])
        pairs = []
        for i, key in enumerate(self.ARGS):
            def kl_of(value, i=i):
                args = [c[k] for k in self.ARGS]
                args[i] = value
                return forward(*args)[0]
            pairs.append((f"d{key}", grads[i], _fd(kl_of, c[key], c["dkl"])))
        return pairs

    @staticmethod
    def _kl(mu_q, logvar_q, mu_p, logvar_p, half=0.5):
        return half * np.sum(logvar_p - logvar_q + (np.exp(logvar_q) + (mu_q - mu_p) ** 2) * np.exp(-logvar_p) - 1,
                             axis=-1)

    _F = "minivae.ops:kl_diagonal_gaussians"
    mistakes = (
        Mistake("reversed", "this is KL(p || q): the KL is not symmetric; KL(q || p) = ½ Σ [logvar_p - logvar_q + "
                            "(exp(logvar_q) + (mu_q - mu_p)²) exp(-logvar_p) - 1]",
                lambda c: {"kl": KLDiagonalGaussians._kl(c["mu_p"], c["logvar_p"], c["mu_q"], c["logvar_q"])},
                {_F: [("np.exp(logvar_q - logvar_p)", "np.exp(logvar_p - logvar_q)"),
                      ("inv_var_p = np.exp(-logvar_p)", "inv_var_p = np.exp(-logvar_q)"),
                      ("np.sum(logvar_p - logvar_q +", "np.sum(logvar_q - logvar_p +")]}),
        Mistake("missing_half", "the ½ is missing: KL = ½ Σ_j [...]",
                lambda c: {"kl": KLDiagonalGaussians._kl(*(c[k] for k in KLDiagonalGaussians.ARGS), half=1.0)},
                {_F: [("kl = 0.5 * np.sum(", "kl = np.sum(")]}),
        Mistake("missing_mean_term", "dKL/dlogvar_p also has the mean term: ½ (1 - ρ - (mu_q - mu_p)² exp(-logvar_p))",
                lambda c: {"dlogvar_p": c["dkl"][:, None] * 0.5 * (1 - np.exp(c["logvar_q"] - c["logvar_p"]))},
                {"minivae.ops:kl_diagonal_gaussians_backward": [("(1 - var_ratio - diff * diff * inv_var_p)",
                                                                 "(1 - var_ratio)")]}),
    )


_MOG_FORWARD = ('log_components, gaussian_cache = ops.diagonal_gaussian_log_prob(\n'
                '            z[..., None, :], params["prior.means"], params["prior.logvars"])               # (..., K)\n'
                '        logp, logsumexp_cache = ops.logsumexp(log_weights + log_components, axis=-1)')
_MOG_FACTORISED = ('per_dimension = -0.5 * (ops.LOG_2PI + params["prior.logvars"] + (z[..., None, :] - params["prior.means"]) ** 2\n'
                   '                                 * np.exp(-params["prior.logvars"]))\n'
                   '        logp = ops.logsumexp(log_weights[:, None] + per_dimension, axis=-2)[0].sum(axis=-1)\n'
                   '        gaussian_cache = logsumexp_cache = None')


class MixtureOfGaussians(Exercise):
    name = "mixture_of_gaussians"
    group = "family"
    title = "The mixture-of-Gaussians prior: log p(z) and its gradient (z, means, log-variances, logits)"
    targets = (Target("minivae.priors:MixtureOfGaussians.log_prob",
                      "z: (..., latent_dim); params[\"prior.means\"], [\"prior.logvars\"]: (K, latent_dim), [\"prior.logits\"]: (K,).\n"
                      "Return (logp, cache): logp (...) = logsumexp_k [log π_k + log N(z; m_k, diag exp(ρ_k))], π = softmax(logits)\n"
                      "(ops.log_softmax, ops.diagonal_gaussian_log_prob on z[..., None, :], ops.logsumexp)."),
               Target("minivae.priors:MixtureOfGaussians.log_prob_backward",
                      "dlogp: (...); the cache of log_prob; grads: a dict.\n"
                      "Add dL/d(prior.means, prior.logvars, prior.logits) to grads with ops.accumulate, and return\n"
                      "dL/dz (..., latent_dim) (the backward passes of the three ops, in reverse)."))

    def cases(self, rng):
        K, L, N = _dims(rng, n=3)
        params = {"prior.means": rng.standard_normal((K, L)), "prior.logvars": 0.5 * rng.standard_normal((K, L)),
                  "prior.logits": rng.standard_normal(K)}
        return [{"K": K, "params": params, "z": rng.standard_normal((N, L)), "dlogp": rng.standard_normal(N)}]

    def run(self, f, c, out):
        prior = f("priors.MixtureOfGaussians")(c["K"])
        out["logp"], cache = prior.log_prob(c["z"], c["params"])
        grads = {}
        out["dz"] = prior.log_prob_backward(c["dlogp"], cache, grads)
        out.update({f"d{key}": grads.get(key) for key in c["params"]})

    def gradients(self, f, c):
        prior = f("priors.MixtureOfGaussians")(c["K"])
        grads = {}
        dz = prior.log_prob_backward(c["dlogp"], prior.log_prob(c["z"], c["params"])[1], grads)
        pairs = [("dz", dz, _fd(lambda z: prior.log_prob(z, c["params"])[0], c["z"], c["dlogp"]))]
        params = {key: value.copy() for key, value in c["params"].items()}
        return pairs + _param_gradients(lambda: np.sum(prior.log_prob(c["z"], params)[0] * c["dlogp"]), params, grads)

    @staticmethod
    def _logp(c, factorised=False, normalised=True):
        p, z = c["params"], c["z"][..., None, :]
        logits = p["prior.logits"]
        log_weights = logits - _naive_logsumexp(logits) if normalised else logits
        per_dim = -0.5 * (np.log(2 * np.pi) + p["prior.logvars"]
                          + (z - p["prior.means"]) ** 2 * np.exp(-p["prior.logvars"]))
        if factorised:
            return {"logp": np.sum(_naive_logsumexp(log_weights[:, None] + per_dim, axis=-2), axis=-1)}
        return {"logp": _naive_logsumexp(log_weights + per_dim.sum(axis=-1), axis=-1)}

    @staticmethod
    def _logits_gradient(c):
        p, z = c["params"], c["z"][..., None, :]
        log_weights = p["prior.logits"] - _naive_logsumexp(p["prior.logits"])
        per_dim = -0.5 * (np.log(2 * np.pi) + p["prior.logvars"]
                          + (z - p["prior.means"]) ** 2 * np.exp(-p["prior.logvars"]))
        responsibilities = _softmax(log_weights + per_dim.sum(axis=-1), axis=-1)
        return {"dprior.logits": np.sum(c["dlogp"][:, None] * responsibilities, axis=0)}

    _F = "minivae.priors:MixtureOfGaussians.log_prob"
    mistakes = (
        Mistake("factorised", "sum the log-densities over the latent dimensions *inside* the logsumexp over the "
                              "components: each component is a Gaussian over the whole z (a logsumexp per dimension "
                              "is a different, factorised mixture)",
                lambda c: MixtureOfGaussians._logp(c, factorised=True),
                {_F: [(_MOG_FORWARD, _MOG_FACTORISED)]}),
        Mistake("unnormalised_weights", "the mixture weights are π = softmax(logits): use log π = log_softmax(logits), "
                                        "not the logits themselves",
                lambda c: MixtureOfGaussians._logp(c, normalised=False),
                {_F: [('log_weights = ops.log_softmax(params["prior.logits"])', 'log_weights = params["prior.logits"]')]}),
        Mistake("logits_without_softmax_backward", "dL/dlogits goes through log π = log_softmax(logits): "
                                                   "dL/dlogits = dL/dlog π - π Σ_k dL/dlog π_k",
                lambda c: MixtureOfGaussians._logits_gradient(c),
                {"minivae.priors:MixtureOfGaussians.log_prob_backward": [
                    ("ops.log_softmax_backward(dlog_weights, log_weights)", "dlog_weights")]}),
    )


class VampPrior(Exercise):
    name = "vamp_prior"
    group = "family"
    title = "The VampPrior: log p(z) as the mixture of the posteriors at the pseudo-inputs, and its gradient"
    targets = (Target("minivae.priors:VampPrior.log_prob",
                      "z: (..., latent_dim); params: the model's parameters.\n"
                      "Return (logp, cache): logp (...) = logsumexp_k log N(z; mu(u_k), diag exp(logvar(u_k))) - log K, with\n"
                      "mu, logvar, encoder_cache = self.components(params) ((K, latent_dim) each); keep in the cache what\n"
                      "the backward needs (the encoder's cache and params included)."),
               Target("minivae.priors:VampPrior.log_prob_backward",
                      "dlogp: (...); the cache of log_prob; grads: a dict.\n"
                      "Return dL/dz; through the encoder's backward (self.model.encoder.backward(dh, encoder_cache, grads,\n"
                      "backend=self.model.backend), dh = [dmu, dlogvar] (K, 2·latent_dim)) add the encoder's gradients and\n"
                      "dL/d\"prior.pseudo_inputs\" = dL/du · (high - low) s (1 - s), s = sigmoid(v), to grads."))

    def cases(self, rng):
        case = _vae_case(rng)
        case.update(K=_dims(rng, 2, 4), z=rng.standard_normal((_dims(rng, 2, 4), case["L"])))
        case["dlogp"] = rng.standard_normal(case["z"].shape[0])
        return [case]

    @staticmethod
    def _model(prior_class, c):
        return _build_vae(_library("vae.VAE"), c, prior=prior_class(c["K"], low=0.0, high=1.0))

    def run(self, f, c, out):
        model = self._model(f("priors.VampPrior"), c)
        out["logp"], cache = model.prior.log_prob(c["z"], model.params)
        grads = {}
        out["dz"] = model.prior.log_prob_backward(c["dlogp"], cache, grads)
        out.update({f"d{key}": value for key, value in _library("ops.complete_grads")(grads, model.params).items()})

    def gradients(self, f, c):
        model = self._model(f("priors.VampPrior"), c)
        grads = {}
        dz = model.prior.log_prob_backward(c["dlogp"], model.prior.log_prob(c["z"], model.params)[1], grads)
        grads = _library("ops.complete_grads")(grads, model.params)
        keys = [key for key in model.params if not key.startswith("decoder.")]
        return ([("dz", dz, _fd(lambda z: model.prior.log_prob(z, model.params)[0], c["z"], c["dlogp"]))]
                + _param_gradients(lambda: np.sum(model.prior.log_prob(c["z"], model.params)[0] * c["dlogp"]),
                                   model.params, grads, keys))

    @staticmethod
    def _logp_plus_log_k(c):
        model = VampPrior._model(_library("priors.VampPrior"), c)
        return {"logp": model.prior.log_prob(c["z"], model.params)[0] + np.log(c["K"])}

    @staticmethod
    def _no_sigmoid_chain(c):
        model = VampPrior._model(_library("priors.VampPrior"), c)
        prior, v = model.prior, model.params["prior.pseudo_inputs"]
        grads = {}
        prior.log_prob_backward(c["dlogp"], prior.log_prob(c["z"], model.params)[1], grads)
        s = _sigmoid(v)
        return {"dprior.pseudo_inputs": grads["prior.pseudo_inputs"] / ((prior.high - prior.low) * s * (1 - s))}

    mistakes = (
        Mistake("missing_log_k", "the mixture weights are 1/K: log p(z) = logsumexp_k log q(z|u_k) - log K",
                lambda c: VampPrior._logp_plus_log_k(c),
                {"minivae.priors:VampPrior.log_prob": [("return logp - np.log(self.n_components),", "return logp,")]}),
        Mistake("missing_sigmoid_chain", "the parameter is v, with u = low + (high - low) · sigmoid(v): multiply dL/du "
                                         "by du/dv = (high - low) s (1 - s)",
                lambda c: VampPrior._no_sigmoid_chain(c),
                {"minivae.priors:VampPrior.log_prob_backward": [
                    ("(du * (self.high - self.low) * s * (1 - s)).astype(du.dtype)", "du")]}),
    )


class IWAEGradient(Exercise):
    name = "iwae_gradient"
    group = "family"
    title = "The IWAE bound L_k and its gradient through the normalised importance weights"
    targets = (Target("minivae.objectives:IWAE.loss_and_grads",
                      "x: (N, input_dim); eps: (k, N, latent_dim).\n"
                      "Set log_px, kl, cache = model.elbo_terms(x, eps, \"monte_carlo\") ((k, N) each), log_w = log_px - kl,\n"
                      "log_sum (N,) = logsumexp of log_w over the k samples, bound = L_k (N,), loss (a float, -mean L_k),\n"
                      "and grads = model.elbo_terms_backward(dlog_w, -dlog_w, cache) with dlog_w (k, N) = dloss/dlog w."),)

    def cases(self, rng):
        k = _dims(rng, 3, 5)
        case = _vae_case(rng, samples=k)
        case["k"] = k
        return [case]

    def run(self, f, c, out):
        model = _build_vae(_library("vae.VAE"), c)
        loss, grads, stats = f("objectives.IWAE")(c["k"]).loss_and_grads(model, c["x"], c["eps"])
        out["loss"], out["ess"] = loss, stats["ess"]
        out.update({f"d{key}": value for key, value in grads.items()})

    def gradients(self, f, c):
        model, objective = _build_vae(_library("vae.VAE"), c), f("objectives.IWAE")(c["k"])
        grads = objective.loss_and_grads(model, c["x"], c["eps"])[1]
        return _param_gradients(lambda: objective.loss_and_grads(model, c["x"], c["eps"])[0], model.params, grads)

    @staticmethod
    def _variant(c, weights="normalised", scale=1.0, log_k=True):
        model = _build_vae(_library("vae.VAE"), c)
        N, k = c["x"].shape[0], c["k"]
        log_px, kl, cache = model.elbo_terms(c["x"], c["eps"], "monte_carlo")
        log_w = log_px - kl
        w = _softmax(log_w, axis=0) if weights == "normalised" else np.full((k, N), 1 / k)
        dlog_w = -scale * w / N
        grads = model.elbo_terms_backward(dlog_w, -dlog_w, cache)
        out = {f"d{key}": value for key, value in grads.items()}
        log_sum = _naive_logsumexp(log_w - log_w.max(0), axis=0) + log_w.max(0)
        out["loss"] = -float(np.mean(log_sum - (np.log(k) if log_k else 0)))
        return out

    _F = "minivae.objectives:IWAE.loss_and_grads"
    mistakes = (
        Mistake("uniform_weights", "weigh each sample's gradient by its normalised importance weight w̃_i = softmax_i(log w) "
                                   "(the logsumexp's backward), not uniformly by 1/k (that is the ELBO's gradient)",
                lambda c: IWAEGradient._variant(c, weights="uniform"),
                {_F: [("dlog_w = ops.logsumexp_backward(np.full(N, -1 / N), logsumexp_cache)",
                       "dlog_w = np.full((k, N), -1 / (N * k))")]}),
        Mistake("missing_log_k", "L_k = log (1/k) Σ_i w_i: subtract log k",
                lambda c: {"loss": IWAEGradient._variant(c, log_k=False)["loss"]},
                {_F: [("bound = log_sum - np.log(k)", "bound = log_sum")]}),
        Mistake("batch_size", "the loss is the mean over the N examples: divide the gradient by the batch size N",
                lambda c: {key: value for key, value in IWAEGradient._variant(c, scale=c["x"].shape[0]).items()
                           if key != "loss"},
                {_F: [("np.full(N, -1 / N)", "np.full(N, -1.0)")]}),
    )


EXERCISES = {exercise.name: exercise for exercise in [
    LinearBackward(), *ACTIVATION_EXERCISES, Reparameterize(), KLStandardNormal(), GaussianLogProb(),
    BernoulliLogProb(), CategoricalLogProb(), LogSumExp(), LogSoftmax(), NegativeELBO(), ELBOBackward(),
    SGDMomentum(), Adam(), Adamax(), LogLikelihood(), PPCAFit(), PPCALogLikelihood(),
    KLDiagonalGaussians(), MixtureOfGaussians(), VampPrior(), IWAEGradient()]}

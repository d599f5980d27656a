"""Optimizers written by hand: SGD with momentum, Adam and Adamax.

They share one signature (as in CS231n's ``optim.py``): ``optimizer.step(params, grads)`` updates every
array of ``params`` in place from the array of ``grads`` with the same key, keeping its running
statistics in ``optimizer.state``. The update rules follow PyTorch's, so that results can be compared.

Each update is a leaf operation of :mod:`minivae.ops` (``sgd_update``, ``adam_update``,
``adamax_update``), where the rule is written out; the backend chooses the NumPy code or the compiled
kernel of the same name, one pass over the parameter.
"""

import numpy as np

from . import backend as backends


class Optimizer:
    """Base class: counts steps and keeps per-parameter state.

    Parameters
    ----------
    lr : float > 0, the learning rate
    backend : "numpy", "numba" or None (the current backend, see :mod:`minivae.backend`): which
        implementation of the update runs
    """

    def __init__(self, lr, backend=None):
        if not np.isscalar(lr) or not np.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be a positive number; got {lr!r}")
        self.lr = float(lr)
        self.backend = None if backend is None else backends.check_backend(backend)
        self.t = 0  # steps taken
        self.state = {}  # key -> dict of arrays shaped like the parameter

    def step(self, params, grads):
        """Update each ``params[key]`` in place with ``grads[key]``.

        Parameters
        ----------
        params : dict name -> array
        grads : dict with the same keys and shapes
        """
        self.t += 1
        ops = backends.leaf_ops(self.backend)
        for key, p in params.items():
            g = grads[key]
            if g.shape != p.shape or g.dtype != p.dtype:
                raise ValueError(f"grads[{key!r}] is {g.dtype} of shape {g.shape}; params[{key!r}] is "
                                 f"{p.dtype} of shape {p.shape}")
            if key not in self.state:
                self.state[key] = self.init_state(p)
        self.update_all(ops, list(params.values()), [grads[key] for key in params],
                        [self.state[key] for key in params])

    def update_all(self, ops, ps, gs, states):
        """Update every parameter: :meth:`update` of each (the optimizers below override this with
        one compiled call over all parameters where the backend has one; the same numbers)."""
        for p, g, state in zip(ps, gs, states):
            self.update(ops, p, g, state)

    def init_state(self, p):
        """The running statistics of one parameter, a dict of arrays."""
        return {}

    def update(self, ops, p, g, state):
        """Update one parameter array ``p`` in place with its gradient ``g``, with the leaf ops ``ops``."""
        raise NotImplementedError

    def state_dict(self):
        """The optimizer's state as a flat dict of arrays (for saving beside the parameters).

        Keys are ``"t"`` (the step count) and ``"{statistic}/{parameter name}"``.
        """
        arrays = {"t": np.array(self.t)}
        for key, state in self.state.items():
            for name, value in state.items():
                arrays[f"{name}/{key}"] = value.copy()
        return arrays

    def load_state_dict(self, arrays):
        """Restore a state written by :meth:`state_dict` (a dict, or an opened ``.npz``)."""
        if "t" not in arrays:
            raise ValueError("an optimizer state needs the step count 't'")
        state = {}
        for name in arrays:
            if name != "t":
                statistic, _, key = str(name).partition("/")
                state.setdefault(key, {})[statistic] = np.array(arrays[name])
        self.t = int(arrays["t"])
        self.state = state

    def __repr__(self):
        settings = ", ".join(f"{k}={v}" for k, v in vars(self).items() if k not in ("t", "state"))
        return f"{type(self).__name__}({settings})"


class SGD(Optimizer):
    """Stochastic gradient descent, with momentum as PyTorch defines it.

    v ← momentum · v + g;  p ← p - lr · v   (plain SGD when momentum = 0)
    """

    def __init__(self, lr=1e-2, momentum=0.0, backend=None):
        super().__init__(lr, backend)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1); got {momentum!r}")
        self.momentum = float(momentum)

    def init_state(self, p):
        return {"velocity": np.zeros_like(p)} if self.momentum else {}

    def update(self, ops, p, g, state):
        ops.sgd_update(p, g, state.get("velocity"), self.lr, self.momentum)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015).

    m ← β1 m + (1 - β1) g;  v ← β2 v + (1 - β2) g²;
    p ← p - lr · m̂ / (√v̂ + eps),  m̂ = m / (1 - β1ᵗ),  v̂ = v / (1 - β2ᵗ)
    """

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, backend=None):
        super().__init__(lr, backend)
        self.betas = _check_betas(betas)
        self.eps = float(eps)

    def init_state(self, p):
        return {"m": np.zeros_like(p), "v": np.zeros_like(p)}

    def update(self, ops, p, g, state):
        ops.adam_update(p, g, state["m"], state["v"], self.lr, *self.betas, self.eps, self.t)

    def update_all(self, ops, ps, gs, states):
        many = getattr(ops, "adam_update_many", None)  # the numba backend: one call for every parameter
        if many is None:
            return super().update_all(ops, ps, gs, states)
        many(ps, gs, [s["m"] for s in states], [s["v"] for s in states], self.lr, *self.betas, self.eps, self.t)


class Adamax(Optimizer):
    """Adamax, Adam with the infinity norm (Kingma & Ba 2015, section 7.1), as in PyTorch.

    m ← β1 m + (1 - β1) g;  u ← max(β2 u, |g| + eps);  p ← p - lr / (1 - β1ᵗ) · m / u
    """

    def __init__(self, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, backend=None):
        super().__init__(lr, backend)
        self.betas = _check_betas(betas)
        self.eps = float(eps)

    def init_state(self, p):
        return {"m": np.zeros_like(p), "u": np.zeros_like(p)}

    def update(self, ops, p, g, state):
        ops.adamax_update(p, g, state["m"], state["u"], self.lr, *self.betas, self.eps, self.t)

    def update_all(self, ops, ps, gs, states):
        many = getattr(ops, "adamax_update_many", None)  # the numba backend: one call for every parameter
        if many is None:
            return super().update_all(ops, ps, gs, states)
        many(ps, gs, [s["m"] for s in states], [s["u"] for s in states], self.lr, *self.betas, self.eps, self.t)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamax": Adamax}


def make_optimizer(name, lr, **options):
    """The optimizer called ``name`` (one of ``OPTIMIZERS``) with learning rate ``lr``."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}; got {name!r}")
    return OPTIMIZERS[name](lr=lr, **options)


def _check_betas(betas):
    beta1, beta2 = betas
    if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
        raise ValueError(f"betas must both be in [0, 1); got {betas!r}")
    return float(beta1), float(beta2)

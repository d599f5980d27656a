"""Layers written by hand: the linear map, activations, and the MLP that stacks them.

The arithmetic is in the leaf operations of :mod:`minivae.ops`, each forward beside its backward
(``linear_forward``/``linear_backward``, ``activation_forward``/``activation_backward``, and
``dense_forward``/``dense_backward`` for one whole layer a = f(x @ W + b)). Here they become the
objects a model is built of: an :class:`Activation` (with its slope, for the leaky ReLU) and an
:class:`MLP`, which runs its layers forward and backward, one leaf operation per layer.

Parameters are not stored in the layers. They live in one dict, ``params``, owned by the model
(``model.params``), under names such as ``"encoder.0.W"``; layers read them from there and write their
gradients into a dict ``grads`` with the same keys. Writing into a parameter array in place therefore
changes the model, which is what gradient checks and optimizers rely on.
"""

import numpy as np

from . import backend as backends
from .ops import (ACTIVATIONS as ACTIVATION_NAMES, LEAKY_RELU_SLOPE, accumulate, activation_backward,
                  activation_forward, linear_backward, linear_forward, sigmoid)

__all__ = ["Activation", "Identity", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "ACTIVATIONS", "get_activation",
           "MLP", "linear_forward", "linear_backward", "sigmoid", "LEAKY_RELU_SLOPE"]


# --------------------------------------------------------------------------------------------------
# Activations: elementwise a = f(h); the maths is in minivae.ops.activation_forward/_backward
# --------------------------------------------------------------------------------------------------

class Activation:
    """An elementwise nonlinearity, by name, with its parameters (the leaky ReLU's slope).

    ``forward(h)`` returns ``(a, cache)``; ``backward(da, cache)`` returns dL/dh = da · f'(h).
    """

    name = None
    slope = 0.0  # only the leaky ReLU has a slope; it is data, passed to every leaf operation

    def forward(self, h):
        """a = f(h) elementwise. Returns ``(a, cache)``; shapes are those of h."""
        return activation_forward(h, self.name, self.slope)

    def backward(self, da, cache):
        """dL/dh = da · f'(h), elementwise; same shape as da."""
        return activation_backward(da, cache, self.name, self.slope)

    def __repr__(self):
        return f"{type(self).__name__}()"


class Identity(Activation):
    """f(h) = h, f'(h) = 1. Used after the last layer of an MLP."""

    name = "identity"


class ReLU(Activation):
    """f(h) = max(h, 0); f'(h) = 1 where h > 0, else 0 (we take 0 at h = 0)."""

    name = "relu"


class LeakyReLU(Activation):
    """f(h) = h for h > 0, slope · h otherwise; f'(h) = 1 or slope.

    Parameters
    ----------
    slope : float in [0, 1), default 0.01 (PyTorch's)
    """

    name = "leaky_relu"

    def __init__(self, slope=LEAKY_RELU_SLOPE):
        if isinstance(slope, bool) or not np.isscalar(slope) or not 0 <= slope < 1:
            raise ValueError(f"slope must be a number in [0, 1); got {slope!r}")
        self.slope = float(slope)

    def __repr__(self):
        return f"LeakyReLU(slope={self.slope})"


class Tanh(Activation):
    """f(h) = tanh(h); f'(h) = 1 - tanh(h)², computed from the cached output."""

    name = "tanh"


class Sigmoid(Activation):
    """f(h) = 1 / (1 + exp(-h)); f'(h) = f(h) (1 - f(h)), computed from the cached output."""

    name = "sigmoid"


ACTIVATIONS = {cls.name: cls for cls in (Identity, ReLU, LeakyReLU, Tanh, Sigmoid)}
assert tuple(ACTIVATIONS) == ACTIVATION_NAMES


def get_activation(name):
    """The activation called ``name`` (one of ``ACTIVATIONS``), or an :class:`Activation` as given."""
    if isinstance(name, Activation):
        return name
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {name!r}")
    return ACTIVATIONS[name]()


# --------------------------------------------------------------------------------------------------
# MLP: dense layers a = f(x @ W + b), with no activation after the last
# --------------------------------------------------------------------------------------------------

class MLP:
    """A multilayer perceptron ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    Layer i is the dense layer with parameters ``f"{name}.{i}.W"`` of shape (sizes[i], sizes[i+1]) and
    ``f"{name}.{i}.b"`` of shape (sizes[i+1],). The activation follows every layer but the last, so
    ``MLP("encoder", [64, 256, 256, 32], "leaky_relu")`` is
    Linear(64, 256), LeakyReLU, Linear(256, 256), LeakyReLU, Linear(256, 32);
    with ``sizes = [64, 32]`` it is a single linear map.

    Each layer is one leaf operation, :func:`minivae.ops.dense_forward` forward and
    :func:`minivae.ops.dense_backward` backward (or the compiled kernels of the same names, see
    :mod:`minivae.backend`).

    Parameters
    ----------
    name : str, prefix of the parameter names ("encoder" or "decoder")
    sizes : sequence of int, the widths from input to output
    activation : str or Activation (e.g. ``LeakyReLU(0.2)``)
    """

    def __init__(self, name, sizes, activation="leaky_relu"):
        self.name = name
        self.sizes = [int(s) for s in sizes]
        self.activation = get_activation(activation)
        self.identity = Identity()

    @property
    def n_layers(self):
        return len(self.sizes) - 1

    def keys(self, i):
        """Names of the weight and bias of layer i."""
        return f"{self.name}.{i}.W", f"{self.name}.{i}.b"

    def param_shapes(self):
        """name -> shape of every parameter, in layer order (W before b)."""
        shapes = {}
        for i, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            key_W, key_b = self.keys(i)
            shapes[key_W], shapes[key_b] = (n_in, n_out), (n_out,)
        return shapes

    def init_params(self, rng, dtype):
        """Fresh parameters, as PyTorch's ``nn.Linear`` draws them: W and b ~ U(-1/√in, 1/√in).

        Parameters
        ----------
        rng : numpy.random.Generator
        dtype : floating dtype of the arrays

        Returns
        -------
        dict name -> array, in layer order (W before b)
        """
        params = {}
        for i, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            bound = 1 / np.sqrt(n_in)
            key_W, key_b = self.keys(i)
            params[key_W] = rng.uniform(-bound, bound, size=(n_in, n_out)).astype(dtype)
            params[key_b] = rng.uniform(-bound, bound, size=n_out).astype(dtype)
        return params

    def forward(self, params, x, backend=None):
        """Run the network.

        Parameters
        ----------
        params : dict holding this MLP's weights
        x : (N, sizes[0]) array
        backend : "numpy", "numba" or None (the current backend): which implementation of the leaf
            operations runs (see :mod:`minivae.backend`)

        Returns
        -------
        out : (N, sizes[-1]) array
        cache : list, one dense-layer cache per layer
        """
        ops = backends.leaf_ops(backend)
        cache = []
        h = x
        for i in range(self.n_layers):
            key_W, key_b = self.keys(i)
            activation = self._activation(i)
            h, layer_cache = ops.dense_forward(h, params[key_W], params[key_b], activation.name,
                                               activation.slope)
            cache.append(layer_cache)
        return h, cache

    def backward(self, dout, cache, grads, need_dx=True, backend=None):
        """Backpropagate dL/dout through the network.

        Parameters
        ----------
        dout : (N, sizes[-1]) array, dL/dout
        cache : from :meth:`forward`
        grads : dict; dL/dW and dL/db of every layer are stored in it under the parameter names
            (added to what is there, so gradients from several terms can accumulate)
        need_dx : bool; False skips the last product dL/dx (an encoder's input needs no gradient)
        backend : as given to :meth:`forward`

        Returns
        -------
        dx : (N, sizes[0]) array, dL/dx, or None when need_dx is False
        """
        ops = backends.leaf_ops(backend)
        dh = dout
        for i in reversed(range(self.n_layers)):
            activation = self._activation(i)
            dh, dW, db = ops.dense_backward(dh, cache[i], activation.name, activation.slope,
                                            need_dx or i > 0)
            key_W, key_b = self.keys(i)
            accumulate(grads, key_W, dW)
            accumulate(grads, key_b, db)
        return dh

    def _activation(self, i):
        """The activation after layer i: none (identity) after the last."""
        return self.activation if i < self.n_layers - 1 else self.identity

    def __repr__(self):
        return f"MLP({self.name!r}, sizes={self.sizes}, activation={self.activation!r})"

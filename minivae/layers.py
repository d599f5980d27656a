"""Layers written by hand: a linear layer, activations, and the MLP that stacks them.

Every computation comes as a pair in the style of CS231n: ``forward`` returns ``(out, cache)`` and
``backward`` takes ``(dout, cache)`` and returns the gradient with respect to the input. Here ``dout``
is dL/dout for some scalar loss L, and each backward applies the chain rule once.

Parameters are not stored in the layers. They live in one dict, ``params``, owned by the model
(``model.params``), under names such as ``"encoder.0.W"``; layers read them from there and write their
gradients into a dict ``grads`` with the same keys. Writing into a parameter array in place therefore
changes the model, which is what gradient checks and optimizers rely on.
"""

import numpy as np

from . import backend as backends

LEAKY_RELU_SLOPE = 0.01  # the slope for x < 0, PyTorch's default for nn.LeakyReLU


# --------------------------------------------------------------------------------------------------
# Linear layer: out = x @ W + b
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


def linear_backward(dout, cache):
    """Backward of :func:`linear_forward`.

    With out = x W + b:  dL/dx = dout Wᵀ,  dL/dW = xᵀ dout,  dL/db = Σ_n dout[n].

    Parameters
    ----------
    dout : (N, out_dim) array, dL/dout
    cache : from :func:`linear_forward`

    Returns
    -------
    dx : (N, in_dim) array
    dW : (in_dim, out_dim) array
    db : (out_dim,) array
    """
    x, W = cache
    return dout @ W.T, x.T @ dout, dout.sum(axis=0)


# --------------------------------------------------------------------------------------------------
# Activations: elementwise, out = f(x), backward dL/dx = dout * f'(x)
# --------------------------------------------------------------------------------------------------

class Activation:
    """An elementwise nonlinearity with its derivative. Subclasses define ``forward`` and ``backward``."""

    name = None

    def forward(self, x):
        """out = f(x) elementwise. Returns ``(out, cache)``; shapes are those of x."""
        raise NotImplementedError

    def backward(self, dout, cache):
        """dL/dx = dout * f'(x), elementwise; same shape as dout."""
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}()"


class Identity(Activation):
    """f(x) = x, f'(x) = 1. Used after the last layer of an MLP."""

    name = "identity"

    def forward(self, x):
        return x, None

    def backward(self, dout, cache):
        return dout


class ReLU(Activation):
    """f(x) = max(x, 0); f'(x) = 1 where x > 0, else 0 (we take 0 at x = 0)."""

    name = "relu"

    def forward(self, x):
        positive = x > 0
        return np.where(positive, x, 0), positive

    def backward(self, dout, cache):
        positive = cache
        return np.where(positive, dout, 0)


class LeakyReLU(Activation):
    """f(x) = x for x > 0, slope * x otherwise; f'(x) = 1 or slope."""

    name = "leaky_relu"

    def __init__(self, slope=LEAKY_RELU_SLOPE):
        self.slope = slope

    def forward(self, x):
        positive = x > 0
        return np.where(positive, x, self.slope * x), positive

    def backward(self, dout, cache):
        positive = cache
        return np.where(positive, dout, self.slope * dout)

    def __repr__(self):
        return f"LeakyReLU(slope={self.slope})"


class Tanh(Activation):
    """f(x) = tanh(x); f'(x) = 1 - tanh(x)², computed from the cached output."""

    name = "tanh"

    def forward(self, x):
        out = np.tanh(x)
        return out, out

    def backward(self, dout, cache):
        out = cache
        return dout * (1 - out * out)


class Sigmoid(Activation):
    """f(x) = 1 / (1 + exp(-x)); f'(x) = f(x) (1 - f(x)), computed from the cached output."""

    name = "sigmoid"

    def forward(self, x):
        out = sigmoid(x)
        return out, out

    def backward(self, dout, cache):
        out = cache
        return dout * out * (1 - out)


def sigmoid(x):
    """Logistic function without overflow: exp is only taken of -|x|.

    Parameters
    ----------
    x : array

    Returns
    -------
    array of the same shape, values in (0, 1)
    """
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


ACTIVATIONS = {cls.name: cls for cls in (Identity, ReLU, LeakyReLU, Tanh, Sigmoid)}


def get_activation(name):
    """The activation called ``name`` (one of ``ACTIVATIONS``), or an :class:`Activation` as given."""
    if isinstance(name, Activation):
        return name
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {name!r}")
    return ACTIVATIONS[name]()


# --------------------------------------------------------------------------------------------------
# MLP: linear layers with an activation between them, none after the last
# --------------------------------------------------------------------------------------------------

class MLP:
    """A multilayer perceptron ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    Layer i is the linear map with parameters ``f"{name}.{i}.W"`` of shape (sizes[i], sizes[i+1]) and
    ``f"{name}.{i}.b"`` of shape (sizes[i+1],). The activation follows every layer but the last, so
    ``MLP("encoder", [64, 256, 256, 32], "leaky_relu")`` is
    Linear(64, 256), LeakyReLU, Linear(256, 256), LeakyReLU, Linear(256, 32);
    with ``sizes = [64, 32]`` it is a single linear map.

    Parameters
    ----------
    name : str, prefix of the parameter names ("encoder" or "decoder")
    sizes : sequence of int, the widths from input to output
    activation : str or Activation
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
        """Names of the weight and bias of linear layer i."""
        return f"{self.name}.{i}.W", f"{self.name}.{i}.b"

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
        backend : "numpy", "numba" or None (the current backend, see :mod:`minivae.backend`)

        Returns
        -------
        out : (N, sizes[-1]) array
        cache : what :meth:`backward` needs: the backend and one entry per layer
        """
        if self._compiled(backend):
            return self._forward_numba(params, x)
        cache = []
        h = x
        for i in range(self.n_layers):
            key_W, key_b = self.keys(i)
            h, linear_cache = linear_forward(h, params[key_W], params[key_b])
            h, activation_cache = self._activation(i).forward(h)
            cache.append((linear_cache, activation_cache))
        return h, ("numpy", cache)

    def backward(self, dout, cache, grads, need_dx=True):
        """Backpropagate dL/dout through the network.

        Parameters
        ----------
        dout : (N, sizes[-1]) array, dL/dout
        cache : from :meth:`forward`
        grads : dict; dL/dW and dL/db of every layer are stored in it under the parameter names
            (added to what is there, so gradients from several terms can accumulate)
        need_dx : bool; False skips the last product dL/dx (an encoder's input needs no gradient)

        Returns
        -------
        dx : (N, sizes[0]) array, dL/dx (None when need_dx is False and the backend is numba)
        """
        backend, layers = cache
        if backend == "numba":
            return self._backward_numba(dout, layers, grads, need_dx)
        dh = dout
        for i in reversed(range(self.n_layers)):
            linear_cache, activation_cache = layers[i]
            dh = self._activation(i).backward(dh, activation_cache)
            dh, dW, db = linear_backward(dh, linear_cache)
            key_W, key_b = self.keys(i)
            _accumulate(grads, key_W, dW)
            _accumulate(grads, key_b, db)
        return dh

    # The same two passes with the compiled kernels: each layer is one fused call,
    # act(x @ W + b) forward and (act' · dout, its column sums, the two products) backward.

    def _compiled(self, backend):
        return (backends.resolve(backend) == "numba"
                and self.activation.name in backends.kernels().ACTIVATION_CODES)

    def _forward_numba(self, params, x):
        kernels = backends.kernels()
        layers = []
        h = x
        for i in range(self.n_layers):
            key_W, key_b = self.keys(i)
            a, _ = kernels.dense_forward(h, params[key_W], params[key_b], self._activation(i).name)
            layers.append((h, params[key_W], a))
            h = a
        return h, ("numba", layers)

    def _backward_numba(self, dout, layers, grads, need_dx):
        kernels = backends.kernels()
        dh = dout
        for i in reversed(range(self.n_layers)):
            x, W, a = layers[i]
            key_W, key_b = self.keys(i)
            dh, dW, db = kernels.dense_backward(dh, x, a, W, self._activation(i).name,
                                                need_dx=need_dx or i > 0)
            _accumulate(grads, key_W, dW)
            _accumulate(grads, key_b, db)
        return dh

    def _activation(self, i):
        """The activation after linear layer i: none (identity) after the last."""
        return self.activation if i < self.n_layers - 1 else self.identity

    def __repr__(self):
        return f"MLP({self.name!r}, sizes={self.sizes}, activation={self.activation!r})"


def _accumulate(grads, key, value):
    """grads[key] += value, creating the entry on first use."""
    if key in grads:
        grads[key] += value
    else:
        grads[key] = value

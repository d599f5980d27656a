"""Gradient checks of every layer and activation, in float64 on tiny fixed-seed shapes.

Each test is the exercise a course would set: run the forward, run the hand-written backward with a
random upstream gradient dout, and compare with centered finite differences of Σ forward(x) * dout.
"""

import numpy as np
import pytest

from minivae.gradcheck import numerical_gradient_array, rel_error
from minivae.layers import ACTIVATIONS, MLP, LeakyReLU, get_activation, linear_backward, linear_forward, \
    sigmoid

TOLERANCE = 1e-7  # float64 finite differences of O(1) quantities agree to about 1e-9


@pytest.fixture
def rng():
    return np.random.default_rng(231)


def test_linear_forward_is_affine_map(rng):
    x, W, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 5)), rng.standard_normal(5)
    out, _ = linear_forward(x, W, b)
    expected = np.array([[sum(x[n, i] * W[i, j] for i in range(3)) + b[j] for j in range(5)] for n in range(4)])
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_linear_backward_matches_finite_differences(rng):
    x, W, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 5)), rng.standard_normal(5)
    dout = rng.standard_normal((4, 5))
    _, cache = linear_forward(x, W, b)
    dx, dW, db = linear_backward(dout, cache)
    assert rel_error(dx, numerical_gradient_array(lambda v: linear_forward(v, W, b)[0], x, dout)) < TOLERANCE
    assert rel_error(dW, numerical_gradient_array(lambda v: linear_forward(x, v, b)[0], W, dout)) < TOLERANCE
    assert rel_error(db, numerical_gradient_array(lambda v: linear_forward(x, W, v)[0], b, dout)) < TOLERANCE


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_backward_matches_finite_differences(name, rng):
    activation = get_activation(name)
    # keep inputs away from the kink at 0 of relu and leaky_relu, where no derivative exists
    x = rng.standard_normal((5, 6))
    x = np.where(np.abs(x) < 0.1, 0.5, x)
    dout = rng.standard_normal(x.shape)
    _, cache = activation.forward(x)
    dx = activation.backward(dout, cache)
    assert rel_error(dx, numerical_gradient_array(lambda v: activation.forward(v)[0], x, dout)) < TOLERANCE


def test_activation_values():
    x = np.array([-2.0, -0.5, 0.5, 3.0])
    np.testing.assert_allclose(get_activation("relu").forward(x)[0], [0, 0, 0.5, 3.0])
    np.testing.assert_allclose(get_activation("leaky_relu").forward(x)[0], [-0.02, -0.005, 0.5, 3.0])
    np.testing.assert_allclose(get_activation("tanh").forward(x)[0], np.tanh(x))
    np.testing.assert_allclose(get_activation("sigmoid").forward(x)[0], 1 / (1 + np.exp(-x)), rtol=1e-15)
    assert LeakyReLU().slope == 0.01


def test_sigmoid_does_not_overflow():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    np.testing.assert_array_equal(s, [0.0, 0.5, 1.0])


def test_activations_keep_float32():
    x = np.linspace(-2, 2, 8, dtype=np.float32)
    for name in ACTIVATIONS:
        activation = get_activation(name)
        out, cache = activation.forward(x)
        assert out.dtype == np.float32, name
        assert activation.backward(np.ones_like(x), cache).dtype == np.float32, name


def test_unknown_activation_is_named():
    with pytest.raises(ValueError, match="activation must be one of .*got 'swish'"):
        get_activation("swish")


@pytest.mark.parametrize("activation", ["leaky_relu", "tanh"])
def test_mlp_backward_every_parameter(activation, rng):
    mlp = MLP("net", [3, 5, 4, 2], activation)
    params = mlp.init_params(rng, np.float64)
    x, dout = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    _, cache = mlp.forward(params, x)
    grads = {}
    dx = mlp.backward(dout, cache, grads)
    # one gradient per parameter, no more; filled as the backward runs, from the last layer to the
    # first (the VAE's objectives return them in the order of params)
    assert set(grads) == set(params)
    assert list(grads) == [key for i in reversed(range(mlp.n_layers)) for key in mlp.keys(i)]
    assert rel_error(dx, numerical_gradient_array(lambda v: mlp.forward(params, v)[0], x, dout)) < TOLERANCE
    for key in params:
        numerical = numerical_gradient_array(lambda _: mlp.forward(params, x)[0], params[key], dout)
        assert rel_error(grads[key], numerical) < TOLERANCE, key


def test_mlp_parameter_names_shapes_and_init(rng):
    mlp = MLP("encoder", [64, 256, 32], "relu")
    params = mlp.init_params(rng, np.float32)
    assert list(params) == ["encoder.0.W", "encoder.0.b", "encoder.1.W", "encoder.1.b"]
    assert params["encoder.0.W"].shape == (64, 256) and params["encoder.1.b"].shape == (32,)
    assert all(p.dtype == np.float32 for p in params.values())
    # PyTorch's nn.Linear initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), variance 1/(3 fan_in)
    W = params["encoder.0.W"]
    assert np.abs(W).max() <= 1 / 8
    assert abs(W.var() - 1 / (3 * 64)) < 0.05 / (3 * 64)


def test_mlp_without_hidden_layers_is_linear(rng):
    mlp = MLP("decoder", [3, 4], "leaky_relu")
    params = mlp.init_params(rng, np.float64)
    x = -np.abs(rng.standard_normal((2, 3)))  # negative inputs would be bent by an activation
    out, _ = mlp.forward(params, x)
    np.testing.assert_allclose(out, x @ params["decoder.0.W"] + params["decoder.0.b"], rtol=1e-14)


def test_mlp_backward_accumulates_into_existing_gradients(rng):
    mlp = MLP("net", [2, 3], "tanh")
    params = mlp.init_params(rng, np.float64)
    x, dout = rng.standard_normal((4, 2)), rng.standard_normal((4, 3))
    _, cache = mlp.forward(params, x)
    once = {}
    mlp.backward(dout, cache, once)
    twice = {key: value.copy() for key, value in once.items()}
    mlp.backward(dout, cache, twice)
    for key in once:
        np.testing.assert_allclose(twice[key], 2 * once[key])

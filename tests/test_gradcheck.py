"""The gradient checker itself: it must pass right gradients and catch wrong ones."""

import numpy as np
import pytest

from minivae.gradcheck import check_gradient, numerical_gradient, numerical_gradient_array, rel_error


def test_rel_error_is_cs231n_formula():
    a, b = np.array([1.0, 0.0, 2.0]), np.array([1.1, 0.0, 2.0])
    assert rel_error(a, b) == pytest.approx(0.1 / 2.1)
    assert rel_error(np.zeros(2), np.full(2, 1e-12)) == pytest.approx(1e-12 / 1e-8)  # the floor
    assert rel_error(3.0, 3.0) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        rel_error(np.zeros(2), np.zeros(3))


def test_numerical_gradient_of_known_functions():
    x = np.random.default_rng(0).standard_normal((3, 4))
    f = lambda v: np.sum(np.tanh(v) ** 2)  # noqa: E731
    analytic = 2 * np.tanh(x) * (1 - np.tanh(x) ** 2)
    assert rel_error(analytic, numerical_gradient(f, x)) < 1e-8
    assert check_gradient(f, x, analytic) < 1e-8
    x_before = x.copy()
    numerical_gradient(f, x)
    np.testing.assert_array_equal(x, x_before)  # restored after perturbing


def test_numerical_gradient_array_is_vector_jacobian_product():
    rng = np.random.default_rng(1)
    A, x, dout = rng.standard_normal((5, 3)), rng.standard_normal(3), rng.standard_normal(5)
    assert rel_error(A.T @ dout, numerical_gradient_array(lambda v: A @ v, x, dout)) < 1e-9


def test_a_wrong_gradient_is_caught():
    x = np.random.default_rng(2).standard_normal(6)
    f = lambda v: np.sum(np.sin(v))  # noqa: E731
    assert check_gradient(f, x, np.cos(x)) < 1e-8
    assert check_gradient(f, x, np.cos(x) * 1.001) > 1e-4
    assert check_gradient(f, x, -np.sin(x)) > 0.1


def test_float32_warns_and_non_arrays_are_refused():
    with pytest.warns(UserWarning, match="float64"):
        numerical_gradient(lambda v: float(np.sum(v * v)), np.ones(2, dtype=np.float32))
    with pytest.raises(TypeError, match="floating-point numpy array"):
        numerical_gradient(lambda v: 0.0, [1.0, 2.0])

"""Optimizers: each update rule against its formula written out, and convergence on a quadratic."""

import numpy as np
import pytest

import minivae
from minivae.optim import SGD, Adam, Adamax, make_optimizer


def _run(optimizer, steps, grads_fn, p0):
    params = {"p": p0.copy()}
    for _ in range(steps):
        optimizer.step(params, {"p": grads_fn(params["p"])})
    return params["p"]


@pytest.fixture
def gradients():
    rng = np.random.default_rng(0)
    return [rng.standard_normal((3, 2)) for _ in range(5)]


def test_sgd_with_momentum_matches_formula(gradients):
    optimizer, params = SGD(lr=0.1, momentum=0.9), {"p": np.ones((3, 2))}
    p, v = np.ones((3, 2)), np.zeros((3, 2))
    for g in gradients:
        optimizer.step(params, {"p": g})
        v = 0.9 * v + g
        p = p - 0.1 * v
    np.testing.assert_allclose(params["p"], p, rtol=1e-14)


def test_adam_matches_formula(gradients):
    optimizer, params = Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-6), {"p": np.ones((3, 2))}
    p, m, v = np.ones((3, 2)), np.zeros((3, 2)), np.zeros((3, 2))
    for t, g in enumerate(gradients, start=1):
        optimizer.step(params, {"p": g})
        m = 0.8 * m + 0.2 * g
        v = 0.99 * v + 0.01 * g ** 2
        p = p - 0.01 * (m / (1 - 0.8 ** t)) / (np.sqrt(v / (1 - 0.99 ** t)) + 1e-6)
    np.testing.assert_allclose(params["p"], p, rtol=1e-13)


def test_adamax_matches_formula(gradients):
    optimizer, params = Adamax(lr=0.002), {"p": np.ones((3, 2))}
    p, m, u = np.ones((3, 2)), np.zeros((3, 2)), np.zeros((3, 2))
    for t, g in enumerate(gradients, start=1):
        optimizer.step(params, {"p": g})
        m = 0.9 * m + 0.1 * g
        u = np.maximum(0.999 * u, np.abs(g) + 1e-8)
        p = p - 0.002 / (1 - 0.9 ** t) * m / u
    np.testing.assert_allclose(params["p"], p, rtol=1e-13)


def test_first_adam_step_moves_every_coordinate_by_lr():
    # m̂ = g and v̂ = g² after one step, so the step is lr * g / |g|
    params = {"p": np.zeros(4)}
    Adam(lr=0.05).step(params, {"p": np.array([3.0, -0.2, 1e-3, -40.0])})
    np.testing.assert_allclose(params["p"], [-0.05, 0.05, -0.05, 0.05], rtol=1e-4)


@pytest.mark.parametrize("optimizer", [SGD(lr=0.1, momentum=0.5), Adam(lr=0.05), Adamax(lr=0.05)],
                         ids=["sgd", "adam", "adamax"])
def test_optimizers_minimise_a_quadratic(optimizer):
    target = np.array([1.0, -2.0, 0.5])
    p = _run(optimizer, 2000, lambda p: 2 * (p - target), np.zeros(3))
    np.testing.assert_allclose(p, target, atol=1e-3)


def test_updates_are_in_place_and_keep_dtype():
    p = np.ones(3, dtype=np.float32)
    params = {"p": p}
    Adamax(lr=0.1).step(params, {"p": np.ones(3, dtype=np.float32)})
    assert params["p"] is p and p.dtype == np.float32 and np.all(p < 1)


def test_optimizer_errors_are_named():
    with pytest.raises(ValueError, match="lr must be a positive number; got -1"):
        Adam(lr=-1)
    with pytest.raises(ValueError, match="momentum"):
        SGD(momentum=1.5)
    with pytest.raises(ValueError, match="betas"):
        Adamax(betas=(0.9, 1.0))
    with pytest.raises(ValueError, match=r"grads\['p'\] is float64 of shape \(2,\); params\['p'\] is float64 of shape \(3,\)"):
        SGD().step({"p": np.zeros(3)}, {"p": np.zeros(2)})
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("rmsprop", 1e-3)


@pytest.mark.parametrize("optimizer_class", [minivae.SGD, minivae.Adam, minivae.Adamax])
def test_state_dict_round_trip_continues_exactly(optimizer_class):
    # two steps, save the state, three more; a fresh optimizer loaded from the state does the same three
    rng = np.random.default_rng(0)
    options = {"momentum": 0.9} if optimizer_class is minivae.SGD else {}
    grads = [{"a": rng.standard_normal((2, 3)), "b": rng.standard_normal(3)} for _ in range(5)]
    params = {"a": np.zeros((2, 3)), "b": np.ones(3)}
    first = optimizer_class(lr=0.1, **options)
    for g in grads[:2]:
        first.step(params, g)
    state = first.state_dict()
    copy = {key: value.copy() for key, value in params.items()}
    for g in grads[2:]:
        first.step(params, g)
    second = optimizer_class(lr=0.1, **options)
    second.load_state_dict(state)
    assert second.t == 2
    for g in grads[2:]:
        second.step(copy, g)
    for key in params:
        np.testing.assert_array_equal(copy[key], params[key])
    with pytest.raises(ValueError, match="step count 't'"):
        second.load_state_dict({})


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("optimizer_class", [Adam, Adamax])
def test_one_call_over_every_parameter_gives_the_numbers_of_one_call_each(optimizer_class, dtype):
    """The numba backend updates all parameters in one compiled call (adam_update_many,
    adamax_update_many); the NumPy backend calls the one-array update per parameter. Same numbers."""
    rng = np.random.default_rng(3)
    shapes = {"W0": (5, 4), "b0": (4,), "W1": (4, 3), "b1": (3,)}
    start = {key: rng.standard_normal(shape).astype(dtype) for key, shape in shapes.items()}
    results = {}
    for backend in ("numpy", "numba"):
        params = {key: value.copy() for key, value in start.items()}
        optimizer = optimizer_class(lr=0.01, backend=backend)
        for step in range(4):
            grads = {key: rng_g.standard_normal(shape).astype(dtype)
                     for rng_g in [np.random.default_rng(step)] for key, shape in shapes.items()}
            optimizer.step(params, grads)
        results[backend] = params
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    for key in shapes:
        np.testing.assert_allclose(results["numba"][key], results["numpy"][key], rtol=rtol, atol=rtol)
        assert not np.array_equal(results["numba"][key], start[key])


@pytest.mark.parametrize("name", ["adam", "adamax"])
def test_the_many_updates_of_parameters_of_two_dtypes_are_the_one_array_updates(name):
    """Parameters of different dtypes cannot share one compiled call: each is updated by its one-array
    kernel, bit for bit."""
    from minivae import kernels
    rng = np.random.default_rng(5)
    ps = [rng.standard_normal((4, 3)), rng.standard_normal(3).astype(np.float32)]
    gs = [rng.standard_normal(p.shape).astype(p.dtype) for p in ps]
    start = [p.copy() for p in ps]
    expected = [p.copy() for p in ps]
    for p, g in zip(expected, gs):
        getattr(kernels, f"{name}_update")(p, g, np.zeros_like(p), np.zeros_like(p), 0.01, t=1)
    getattr(kernels, f"{name}_update_many")(ps, gs, [np.zeros_like(p) for p in ps], [np.zeros_like(p) for p in ps],
                                            0.01, t=1)
    for p, e, s0 in zip(ps, expected, start):
        np.testing.assert_array_equal(p, e)
        assert not np.array_equal(p, s0)  # it moved


def test_the_many_updates_check_their_arrays_as_the_one_array_updates_do():
    from minivae import kernels
    p, g = np.zeros((3, 2)), np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"u must be a C-contiguous float64 array of shape \(3, 2\)"):
        kernels.adamax_update_many([p], [g], [np.zeros((3, 2))], [np.zeros(6)])
    with pytest.raises(ValueError, match="t must count steps from 1"):
        kernels.adam_update_many([p], [g], [p.copy()], [p.copy()], t=0)


def test_all_finite_finds_a_nan_or_an_infinity_anywhere():
    from minivae import kernels
    for dtype in (np.float32, np.float64):
        arrays = [np.ones((4, 3), dtype), np.zeros(7, dtype), np.full((2, 2), 1e30, dtype)]
        assert kernels.all_finite(arrays)
        for bad in (np.nan, np.inf, -np.inf):
            for k, index in [(0, (3, 2)), (1, 0), (2, (1, 0))]:
                broken = [a.copy() for a in arrays]
                broken[k][index] = bad
                assert not kernels.all_finite(broken)
    assert kernels.all_finite([])
    assert not kernels.all_finite([np.ones(3, np.float32), np.array([np.nan])])  # mixed dtypes

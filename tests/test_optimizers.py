"""Optimizers against hand-computed values and independent plain-NumPy references.

The references below use the textbook form of each rule (e.g. m = b1*m + (1-b1)*g)
rather than the book's incremental form, so they agree to rounding, not bit for bit.
"""

import math

import numpy as np
import pytest

from deepnet.io import read_params, save_params
from deepnet.optimizers import (
    SGD,
    AdaGrad,
    Adam,
    Momentum,
    Nesterov,
    RMSprop,
    _array_module,
    get_optimizer,
)

pytestmark = [pytest.mark.kernels, pytest.mark.asan]

P0 = [1.0, -2.0, 0.5]
# Three steps of gradients; the zero in step 3 exercises the 1e-7 guard paths.
GRADS = [[0.5, -1.0, 0.25], [0.1, 0.2, -0.3], [-0.4, 0.0, 1.0]]


# --- independent references: take float64 params and gradients, return params after each step


def ref_sgd(p, grads, lr):
    out = []
    for g in grads:
        p = p - lr * g
        out.append(p)
    return out


def ref_momentum(p, grads, lr, momentum):
    v, out = np.zeros_like(p), []
    for g in grads:
        v = momentum * v - lr * g
        p = p + v
        out.append(p)
    return out


def ref_nesterov(p, grads, lr, momentum):
    v, out = np.zeros_like(p), []
    for g in grads:
        v = momentum * v - lr * g
        p = p + momentum**2 * v - (1 + momentum) * lr * g
        out.append(p)
    return out


def ref_adagrad(p, grads, lr):
    h, out = np.zeros_like(p), []
    for g in grads:
        h = h + g**2
        p = p - lr * g / (np.sqrt(h) + 1e-7)
        out.append(p)
    return out


def ref_rmsprop(p, grads, lr, decay_rate):
    h, out = np.zeros_like(p), []
    for g in grads:
        h = decay_rate * h + (1 - decay_rate) * g**2
        p = p - lr * g / (np.sqrt(h) + 1e-7)
        out.append(p)
    return out


def ref_adam(p, grads, lr, beta1, beta2):
    m, v, out = np.zeros_like(p), np.zeros_like(p), []
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        lr_t = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        p = p - lr_t * m / (np.sqrt(v) + 1e-7)
        out.append(p)
    return out


# (factory, reference) pairs with non-default hyperparameters, so defaults are not what passes.
CASES = {
    "sgd": (lambda: SGD(lr=0.1), lambda p, g: ref_sgd(p, g, 0.1)),
    "momentum": (lambda: Momentum(lr=0.1, momentum=0.8), lambda p, g: ref_momentum(p, g, 0.1, 0.8)),
    "nesterov": (lambda: Nesterov(lr=0.1, momentum=0.8), lambda p, g: ref_nesterov(p, g, 0.1, 0.8)),
    "adagrad": (lambda: AdaGrad(lr=0.1), lambda p, g: ref_adagrad(p, g, 0.1)),
    "rmsprop": (lambda: RMSprop(lr=0.1, decay_rate=0.9), lambda p, g: ref_rmsprop(p, g, 0.1, 0.9)),
    "adam": (lambda: Adam(lr=0.01, beta1=0.8, beta2=0.99), lambda p, g: ref_adam(p, g, 0.01, 0.8, 0.99)),
}


def run_steps(optimizer, dtype, steps=3):
    """Run ``steps`` updates on one parameter "W"; return the param after each step."""
    w = np.array(P0, dtype=dtype)
    history = []
    for g in GRADS[:steps]:
        optimizer.update({"W": w}, {"W": np.array(g, dtype=dtype)})
        history.append(w.copy())
    return history


# --- hand-computed values (worked out on paper, lr=0.1, momentum=0.9)


def test_sgd_hand_values():
    got = run_steps(SGD(lr=0.1), np.float64, steps=2)
    np.testing.assert_allclose(got[0], [0.95, -1.9, 0.475], rtol=0, atol=1e-15)
    np.testing.assert_allclose(got[1], [0.94, -1.92, 0.505], rtol=0, atol=1e-15)


def test_momentum_hand_values():
    # v1 = -0.1*g1 = [-0.05, 0.1, -0.025];  v2 = 0.9*v1 - 0.1*g2 = [-0.055, 0.07, 0.0075]
    got = run_steps(Momentum(lr=0.1, momentum=0.9), np.float64, steps=2)
    np.testing.assert_allclose(got[0], [0.95, -1.9, 0.475], rtol=0, atol=1e-15)
    np.testing.assert_allclose(got[1], [0.895, -1.83, 0.4825], rtol=0, atol=1e-15)


def test_nesterov_hand_values():
    # p += 0.81*v - 0.19*g with the same v as Momentum:
    # step 1: [-0.0405-0.095, 0.081+0.19, -0.02025-0.0475]; step 2: [-0.04455-0.019, 0.0567-0.038, 0.006075+0.057]
    got = run_steps(Nesterov(lr=0.1, momentum=0.9), np.float64, steps=2)
    np.testing.assert_allclose(got[0], [0.8645, -1.729, 0.43225], rtol=0, atol=1e-15)
    np.testing.assert_allclose(got[1], [0.80095, -1.7103, 0.495325], rtol=0, atol=1e-15)


def test_adagrad_hand_values():
    # step 1: h = g^2, so the step is lr*g/(|g|+1e-7), just under lr in size.
    got = run_steps(AdaGrad(lr=0.1), np.float64, steps=2)
    expected1 = [1 - 0.05 / (0.5 + 1e-7), -2 + 0.1 / (1 + 1e-7), 0.5 - 0.025 / (0.25 + 1e-7)]
    np.testing.assert_allclose(got[0], expected1, rtol=1e-15)
    # step 2: h = [0.26, 1.04, 0.1525]
    expected2 = [
        expected1[0] - 0.01 / (math.sqrt(0.26) + 1e-7),
        expected1[1] - 0.02 / (math.sqrt(1.04) + 1e-7),
        expected1[2] + 0.03 / (math.sqrt(0.1525) + 1e-7),
    ]
    np.testing.assert_allclose(got[1], expected2, rtol=1e-15)


def test_rmsprop_hand_values():
    # decay 0.99, step 1: h = 0.01*g^2, sqrt(h) = 0.1*|g|, so each param moves by ~1 = lr/0.1.
    got = run_steps(RMSprop(lr=0.1), np.float64, steps=1)
    expected = [1 - 0.05 / (0.05 + 1e-7), -2 + 0.1 / (0.1 + 1e-7), 0.5 - 0.025 / (0.025 + 1e-7)]
    np.testing.assert_allclose(got[0], expected, rtol=1e-14, atol=1e-15)


def test_adam_first_step_moves_each_param_by_lr():
    # Bias correction makes step 1 exactly lr*g/(|g| + 1e-7/sqrt(1-beta2)) = ~lr*sign(g).
    got = run_steps(Adam(), np.float64, steps=1)
    g = np.array(GRADS[0])
    expected = np.array(P0) - 0.001 * g / (np.abs(g) + 1e-7 / math.sqrt(0.001))
    np.testing.assert_allclose(got[0], expected, rtol=1e-14)
    np.testing.assert_allclose(got[0], [0.999, -1.999, 0.499], rtol=1e-6)


# --- every optimizer against its reference, in each float dtype


@pytest.mark.parametrize("name", CASES)
def test_matches_reference_float64(name):
    make, reference = CASES[name]
    got = run_steps(make(), np.float64)
    expected = reference(np.array(P0), [np.array(g) for g in GRADS])
    for step_got, step_expected in zip(got, expected):
        np.testing.assert_allclose(step_got, step_expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", CASES)
def test_matches_reference_float32(name):
    make, reference = CASES[name]
    optimizer = make()
    got = run_steps(optimizer, np.float32)
    expected = reference(np.array(P0), [np.array(g) for g in GRADS])
    for step_got, step_expected in zip(got, expected):
        assert step_got.dtype == np.float32
        np.testing.assert_allclose(step_got, step_expected, rtol=2e-6, atol=1e-6)
    for key, value in optimizer.state_dict().items():
        if key != "iter":
            assert value.dtype == np.float32, key


@pytest.mark.parametrize("name", CASES)
def test_float16_params_stay_float16_with_float32_state(name):
    make, reference = CASES[name]
    optimizer = make()
    got = run_steps(optimizer, np.float16)

    # None of these updates depend on the param value, so the float16 result is the
    # float64 reference's per-step deltas added with a rounding to float16 after each step.
    grads16 = [np.array(g, dtype=np.float16).astype(np.float64) for g in GRADS]
    p0 = np.array(P0, dtype=np.float16)
    ref = [p0.astype(np.float64)] + reference(p0.astype(np.float64), grads16)
    p = p0
    for step, step_got in enumerate(got, start=1):
        p = (p.astype(np.float64) + (ref[step] - ref[step - 1])).astype(np.float16)
        assert step_got.dtype == np.float16
        # float32 vs float64 arithmetic may flip a rounding: allow one float16 ulp.
        assert np.all(np.abs(step_got.astype(np.float64) - p) <= np.spacing(np.abs(p))), step
    for key, value in optimizer.state_dict().items():
        if key != "iter":
            assert value.dtype == np.float32, key


def test_float16_adagrad_does_not_underflow():
    # g*g = 1e-8 is 0 in float16; float16 state would give h = 0 and a step of lr*g/1e-7 = 10.
    w = np.array([1.0], dtype=np.float16)
    AdaGrad(lr=0.01).update({"W": w}, {"W": np.array([1e-4], dtype=np.float16)})
    assert w.dtype == np.float16
    np.testing.assert_allclose(w, [0.99], rtol=1e-3)


# --- in-place semantics


@pytest.mark.parametrize("name", CASES)
def test_update_is_in_place(name):
    make, _ = CASES[name]
    w = np.array(P0)
    layer_view = w[:2]  # e.g. a layer holding the same memory
    params = {"W": w}
    grad = np.array(GRADS[0])
    make().update(params, {"W": grad})
    assert params["W"] is w
    assert not np.array_equal(w, P0)
    np.testing.assert_array_equal(layer_view, w[:2])
    np.testing.assert_array_equal(grad, GRADS[0])  # gradients are not modified


def test_state_is_created_lazily_per_parameter():
    optimizer = Adam()
    assert optimizer.state_dict() == {"iter": 0}
    optimizer.update(
        {"W": np.ones((2, 3)), "b": np.ones(3, dtype=np.float32)},
        {"W": np.ones((2, 3)), "b": np.ones(3, dtype=np.float32)},
    )
    state = optimizer.state_dict()
    assert sorted(state) == ["iter", "m/W", "m/b", "v/W", "v/b"]
    assert state["iter"] == 1
    assert state["m/W"].shape == (2, 3) and state["m/W"].dtype == np.float64
    assert state["v/b"].shape == (3,) and state["v/b"].dtype == np.float32


# --- checkpoint / resume


def two_params():
    rng = np.random.default_rng(0)
    return {"W1": rng.standard_normal((4, 3)), "b1": rng.standard_normal(3).astype(np.float32)}


def grads_for(step):
    rng = np.random.default_rng(100 + step)
    return {"W1": rng.standard_normal((4, 3)), "b1": rng.standard_normal(3).astype(np.float32)}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("via_npz", [False, True])
def test_state_dict_round_trip_resumes_bit_exactly(name, via_npz, tmp_path):
    make, _ = CASES[name]
    original, params = make(), two_params()
    for step in range(2):
        original.update(params, grads_for(step))

    state = original.state_dict()
    if via_npz:
        state = read_params(save_params(tmp_path / "optimizer.npz", state))
    resumed = make()
    resumed.load_state_dict(state)
    resumed_params = {k: v.copy() for k, v in params.items()}

    for step in range(2, 4):
        original.update(params, grads_for(step))
        resumed.update(resumed_params, grads_for(step))
    for key in params:
        np.testing.assert_array_equal(resumed_params[key], params[key])
        assert resumed_params[key].dtype == params[key].dtype
    assert resumed.iter == original.iter == 4


def test_state_dict_holds_copies():
    optimizer, params = Momentum(), two_params()
    optimizer.update(params, grads_for(0))
    state = optimizer.state_dict()
    state["v/W1"][...] = 123.0
    assert not np.any(optimizer.state_dict()["v/W1"] == 123.0)


def test_load_state_dict_rejects_foreign_entries():
    with pytest.raises(ValueError, match="'m/W1'"):
        Momentum().load_state_dict({"iter": 1, "m/W1": np.zeros(3)})
    with pytest.raises(ValueError, match="iter"):
        Adam().load_state_dict({"m/W1": np.zeros(3)})


@pytest.mark.parametrize(
    "state, fragments",
    [
        ({"iter": -5}, ["'iter'", "-5", ">= 0"]),
        ({"iter": np.array(2.5)}, ["'iter'", "2.5"]),
        ({"iter": 1, "m/W1": np.zeros(3, np.int64), "v/W1": np.zeros(3)}, ["'m/W1'", "int64", "floating-point"]),
        ({"iter": 1, "m/W1": np.zeros(3), "v/W1": -np.ones(3)}, ["'v/W1'", ">= 0"]),
        ({"iter": 1, "m/W1": np.full(3, np.nan), "v/W1": np.zeros(3)}, ["'m/W1'", "NaN"]),
    ],
)
def test_load_state_dict_checks_every_value_and_names_the_entry(state, fragments):
    """Once: iter=-5 a ZeroDivisionError later, int64 moments a numpy traceback, a negative
    v a NaN model at 9.8% accuracy."""
    with pytest.raises(ValueError) as info:
        Adam().load_state_dict(state)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    with pytest.raises(ValueError, match="'h/W1'"):
        AdaGrad().load_state_dict({"iter": 1, "h/W1": -np.ones(3)})


# --- factory and helpers


def test_get_optimizer_is_case_insensitive_and_passes_params():
    optimizer = get_optimizer("ADAM", lr=0.5, beta1=0.7)
    assert type(optimizer) is Adam
    assert (optimizer.lr, optimizer.beta1, optimizer.beta2) == (0.5, 0.7, 0.999)
    expected = {
        "sgd": SGD,
        "Momentum": Momentum,
        "nesterov": Nesterov,
        "AdaGrad": AdaGrad,
        "rmsprop": RMSprop,
        "adam": Adam,
    }
    for name, cls in expected.items():
        assert type(get_optimizer(name)) is cls


def test_defaults_are_the_books():
    assert SGD().lr == 0.01
    assert (Momentum().lr, Momentum().momentum) == (0.01, 0.9)
    assert (Nesterov().lr, Nesterov().momentum) == (0.01, 0.9)
    assert AdaGrad().lr == 0.01
    assert (RMSprop().lr, RMSprop().decay_rate) == (0.01, 0.99)
    assert (Adam().lr, Adam().beta1, Adam().beta2) == (0.001, 0.9, 0.999)


def test_get_optimizer_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as excinfo:
        get_optimizer("adamw")
    message = str(excinfo.value)
    assert "'adamw'" in message
    for name in ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"):
        assert name in message


def test_array_module_is_numpy_for_numpy_arrays():
    assert _array_module(np.zeros(2)) is np
    assert _array_module(np.float32(1.0)) is np


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_weight_decay_is_the_gradient_of_the_books_l2_term_on_weights_only(name):
    """weight_decay * W added to the gradient of every weight (ndim > 1), none to biases:
    the same step as the undecayed optimizer given that gradient by hand."""
    from deepnet.optimizers import get_optimizer

    rng = np.random.default_rng(0)
    params = {"W": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    grads = {"W": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    decayed = {k: v.copy() for k, v in params.items()}
    plain = {k: v.copy() for k, v in params.items()}
    get_optimizer(name, lr=0.1, weight_decay=0.01).update(decayed, grads)
    get_optimizer(name, lr=0.1).update(plain, {"W": grads["W"] + 0.01 * params["W"], "b": grads["b"]})
    for key in params:
        np.testing.assert_allclose(decayed[key], plain[key], rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_adam_kernel_gives_numpys_bits(dtype, threads):
    """The one-pass kernel (src/deepnet_adam.h) against the NumPy update it replaces, over
    three steps of arrays that span several of its chunks, with extreme values too."""
    import deepnet
    from deepnet import reference
    from deepnet.backends import cpu as _cpu

    if not deepnet.kernels_compiled():
        pytest.skip("kernels not built")
    rng = np.random.default_rng(7)
    n = 20011
    param = rng.standard_normal(n).astype(dtype)
    param[:4] = [0.0, -0.0, 1e30, -1e-30]
    state = {
        "kernel": [param.copy(), np.zeros(n, dtype), np.zeros(n, dtype)],
        "numpy": [param.copy(), np.zeros(n, dtype), np.zeros(n, dtype)],
    }
    with deepnet.backend("cython"):
        deepnet.set_num_threads(threads)
        try:
            for step in range(1, 4):
                grad = (rng.standard_normal(n) * 10.0 ** rng.integers(-6, 3, n)).astype(dtype)
                lr_t = 0.001 * math.sqrt(1.0 - 0.999**step) / (1.0 - 0.9**step)
                _cpu.adam_update(*state["kernel"][:1], grad, *state["kernel"][1:], lr_t, 0.9, 0.999, 1e-7)
                reference.adam_update(state["numpy"][0], grad, *state["numpy"][1:], lr_t, 0.9, 0.999, 1e-7)
                for got, want in zip(state["kernel"], state["numpy"]):
                    assert got.tobytes() == want.tobytes(), step
        finally:
            deepnet.set_num_threads(None)


def test_adam_on_both_backends_gives_the_same_bits():
    """The whole optimizer, compiled backend against the NumPy one, on non-contiguous and
    read-only gradients too (they take the NumPy code, or are read as they are)."""
    import deepnet

    if not deepnet.kernels_compiled():
        pytest.skip("kernels not built")
    rng = np.random.default_rng(3)
    start = {"W": rng.standard_normal((40, 30)).astype(np.float32), "b": rng.standard_normal(30)}
    results = {}
    for backend in ("cython", "numpy"):
        params = {k: v.copy() for k, v in start.items()}
        opt = Adam(lr=0.01)
        grads_rng = np.random.default_rng(5)
        with deepnet.backend(backend):
            for _ in range(3):
                gW = grads_rng.standard_normal((30, 40)).astype(np.float32).T  # not C-contiguous
                gb = grads_rng.standard_normal(30)
                gb.flags.writeable = False
                opt.update(params, {"W": gW, "b": gb})
        results[backend] = params
    for key in start:
        assert results["cython"][key].tobytes() == results["numpy"][key].tobytes(), key

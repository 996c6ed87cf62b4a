"""Int8Model.predict through one compiled Int8Plan (a quantization, then int8 convolutions ending in
float32 scores) against the same model's steps run one by one, and the NumPy reference backend."""

import threading

import numpy as np
import pytest

import deepnet
from deepnet import nets
from deepnet.layers import Affine, Convolution, Flatten, Relu, Sigmoid
from deepnet.quant import ops, quantize
from deepnet.quant.model import ConvStep, FloatStep, Int8Model, QuantizeStep, _Tensor

pytestmark = [
    pytest.mark.kernels,
    pytest.mark.skipif("kernel" not in ops.available(), reason="deepnet._kernels.int8 is not built"),
]


def step_by_step(model, x):
    """The model's steps run one after the other (no plan)."""
    tensor = _Tensor(np.asarray(x, np.float32))
    for step in model.steps:
        tensor = step.run(tensor)
    return tensor.values


@pytest.fixture(scope="module")
def deep_convnet():
    rng = np.random.default_rng(11)
    return quantize(nets.DeepConvNet(seed=3), rng.random((40, 1, 28, 28), dtype=np.float32))


def test_deep_convnet_runs_through_one_plan(deep_convnet):
    deep_convnet.predict(np.zeros((1, 1, 28, 28), np.float32))
    assert deep_convnet._plan is not None and deep_convnet._plan[1] is not None


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_plan_gives_the_steps_and_the_references_bits(deep_convnet, threads):
    rng = np.random.default_rng(threads)
    previous = deepnet.get_num_threads()
    deepnet.set_num_threads(threads)
    try:
        for batch in (1, 2, 7, 33):
            x = rng.random((batch, 1, 28, 28), dtype=np.float32)
            x[0, 0, 0, :3] = [-5.0, np.inf, -np.inf]  # beyond the calibrated range: clipped alike
            got = deep_convnet.predict(x)
            assert got.dtype == np.float32 and got.shape == (batch, 10)
            np.testing.assert_array_equal(got, step_by_step(deep_convnet, x))
            with ops.using("reference"):
                np.testing.assert_array_equal(got, deep_convnet.predict(x))
    finally:
        deepnet.set_num_threads(previous)


def test_non_contiguous_float64_input_and_an_empty_batch(deep_convnet):
    x = np.random.default_rng(4).random((6, 1, 28, 56))[:, :, :, ::2]
    np.testing.assert_array_equal(deep_convnet.predict(x), step_by_step(deep_convnet, x))
    assert deep_convnet.predict(np.zeros((0, 1, 28, 28), np.float32)).shape == (0, 10)


def test_nan_is_refused_as_the_quantize_step_refuses_it(deep_convnet):
    x = np.zeros((2, 1, 28, 28), np.float32)
    x[1, 0, 5, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        deep_convnet.predict(x)


def test_concurrent_calls_give_each_their_own_scores(deep_convnet):
    rng = np.random.default_rng(9)
    batches = [rng.random((int(rng.integers(1, 30)), 1, 28, 28), dtype=np.float32) for _ in range(8)]
    want = [step_by_step(deep_convnet, x) for x in batches]
    got = [None] * len(batches)

    def work(i):
        for _ in range(5):
            got[i] = deep_convnet.predict(batches[i])

    workers = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_changed_steps_make_a_new_plan(deep_convnet):
    x = np.random.default_rng(2).random((3, 1, 28, 28), dtype=np.float32)
    model = Int8Model(list(deep_convnet.steps), deep_convnet.input_shape)
    first = model.predict(x)
    plan = model._plan[1]
    model.steps = model.steps[:-2] + [model.steps[-1]]  # without the hidden affine layer: a new chain
    with pytest.raises(ValueError):
        model.predict(x)  # the steps no longer chain; the steps' own error
    model.steps = list(deep_convnet.steps)
    np.testing.assert_array_equal(model.predict(x), first)
    assert model._plan[1] is not plan


def test_a_replaced_array_makes_a_new_plan_and_a_new_packing(deep_convnet):
    """Replacing a step's bias or weights takes effect in the plan and the steps alike; the
    step's arrays are read-only copies, so writing into them fails instead of going stale."""
    x = np.random.default_rng(8).random((5, 1, 28, 28), dtype=np.float32)
    steps = [
        ConvStep(
            s.w_q, s.w_scale, s.bias_q, s.scale, s.stride, s.pad, s.relu, s.pool, s.affine, s.out_scale, s.out_zero
        )
        if isinstance(s, ConvStep)
        else s
        for s in deep_convnet.steps
    ]
    model = Int8Model(steps, deep_convnet.input_shape)
    before = model.predict(x)
    conv = steps[1]
    with pytest.raises(ValueError, match="read-only"):
        conv.bias_q[0] += 1
    conv.bias_q = conv.bias_q + np.int32(5000)
    after_bias = model.predict(x)
    assert not np.array_equal(after_bias, before)
    np.testing.assert_array_equal(after_bias, step_by_step(model, x))
    conv.w_q = -conv.w_q
    after_weights = model.predict(x)
    assert not np.array_equal(after_weights, after_bias)
    np.testing.assert_array_equal(after_weights, step_by_step(model, x))
    with ops.using("reference"):
        np.testing.assert_array_equal(after_weights, model.predict(x))


def test_models_with_float_steps_run_their_steps():
    rng = np.random.default_rng(5)
    net = nets.Sequential(
        Convolution(rng.normal(0, 0.3, (4, 1, 3, 3)).astype(np.float32), np.zeros(4, np.float32)),
        Sigmoid(),
        Convolution(rng.normal(0, 0.3, (6, 4, 3, 3)).astype(np.float32), np.full(6, -0.1, np.float32)),
        Relu(),
        Flatten(),
        Affine(rng.normal(0, 0.1, (6 * 10 * 10, 10)).astype(np.float32), np.zeros(10, np.float32)),
    )
    x = rng.random((20, 1, 14, 14), dtype=np.float32)
    model = quantize(net, x)
    assert any(isinstance(step, FloatStep) for step in model.steps)
    got = model.predict(x[:5])
    assert model._plan[1] is None
    np.testing.assert_array_equal(got, step_by_step(model, x[:5]))


def test_an_mlp_on_flat_inputs_runs_through_a_plan():
    rng = np.random.default_rng(6)
    net = nets.Sequential(
        Affine(rng.normal(0, 0.1, (30, 16)).astype(np.float32), np.zeros(16, np.float32)),
        Relu(),
        Affine(rng.normal(0, 0.1, (16, 4)).astype(np.float32), np.zeros(4, np.float32)),
    )
    x = rng.random((12, 30), dtype=np.float32)
    model = quantize(net, x)
    assert isinstance(model.steps[0], QuantizeStep) and all(isinstance(s, ConvStep) for s in model.steps[1:])
    got = model.predict(x)
    assert model._plan[1] is not None
    np.testing.assert_array_equal(got, step_by_step(model, x))
    with ops.using("reference"):
        np.testing.assert_array_equal(got, model.predict(x))

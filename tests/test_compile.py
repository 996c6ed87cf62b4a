"""deepnet.compile: the compiled inference plan gives model.predict's bits, for every model
family, dtype, batch and thread count, and refuses what it cannot run."""

import math

import numpy as np
import pytest

import deepnet
from deepnet import functional as F
from deepnet import recipes
from deepnet.layers import BatchNormalization
from deepnet.nets import fold_batch_norm

# The ASan job (and the aarch64 job under qemu) runs the tests marked asan: every kernel
# test here, but of the model matrices only a subset that still reaches each kind of step.
pytestmark = [pytest.mark.kernels]
asan = pytest.mark.asan

FAMILIES = ("deepconvnet", "deepconvnet-bn", "resnet", "simpleconvnet", "googlenet")


def cases(names, values, under_asan):
    """pytest params (name, value) for each pair, those in under_asan marked asan."""
    return [
        pytest.param(name, value, marks=[asan] if (name, value) in under_asan else [], id=f"{name}-{value}")
        for name in names
        for value in values
    ]


def bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def trained_looking(name, dtype):
    """A model of the family with BN statistics away from their initial 0 and 1, so that
    folding and the BN steps compute something."""
    net = recipes.MODEL_NAMES[name](dtype, 0)
    rng = np.random.default_rng(1)

    def visit(layer):
        if isinstance(layer, BatchNormalization):
            n = layer.gamma.size
            layer.running_mean[...] = rng.normal(0, 0.5, n)
            layer.running_var[...] = rng.uniform(0.2, 3.0, n)
            layer.gamma[...] = rng.uniform(0.5, 1.5, n)
            layer.beta[...] = rng.normal(0, 0.3, n)
        for _, child in layer.children():
            visit(child)

    visit(net)
    return net


@pytest.fixture(autouse=True)
def restore_threads():
    yield
    deepnet.set_num_threads(None)


@pytest.mark.parametrize(
    "name, dtype",
    cases(
        FAMILIES,
        ["float16", "float32", "float64"],
        {("deepconvnet", "float16"), ("deepconvnet", "float64")} | {(name, "float32") for name in FAMILIES},
    ),
)
def test_plan_gives_predict_bits(name, dtype):
    # float16: the plan computes in float32 and rounds where each layer stores (without
    # those roundings 17-42 of the 50 scores differ)
    net = trained_looking(name, dtype)
    plan = deepnet.compile(net)
    reference = fold_batch_norm(net)
    rng = np.random.default_rng(0)
    for threads in (1, 2, 3):
        deepnet.set_num_threads(threads)
        for batch in (1, 2, 5):
            x = rng.random((batch,) + plan.input_shape).astype(dtype)
            expected = reference.predict(x, train=False)
            got = plan(x)
            assert got.dtype == expected.dtype and got.shape == expected.shape
            np.testing.assert_array_equal(bits(got), bits(expected), err_msg=f"{threads} threads, batch {batch}")


@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg_plans_give_predict_bits(batch_norm):
    from deepnet.models import VGG

    net = VGG(batch_norm=batch_norm, dtype=np.float32, seed=0)
    plan = deepnet.compile(net)
    reference = fold_batch_norm(net)
    for threads in (1, 2):
        deepnet.set_num_threads(threads)
        x = np.random.default_rng(threads).random((3, 1, 28, 28), dtype=np.float32)
        np.testing.assert_array_equal(bits(plan(x)), bits(reference.predict(x, train=False)))


def test_plan_is_close_to_the_unfolded_model():
    # folding BN changes roundings only: the plan also agrees with the model as trained
    net = trained_looking("deepconvnet-bn", "float64")
    x = np.random.default_rng(2).random((4, 1, 28, 28))
    np.testing.assert_allclose(deepnet.compile(net)(x), net.predict(x, train=False), rtol=1e-9, atol=1e-9)


@asan
@pytest.mark.parametrize("mode", ["never", "auto", "always"])
def test_each_winograd_mode_matches_predict(mode):
    net = recipes.MODEL_NAMES["deepconvnet"]("float32", 3)
    plan = deepnet.compile(net)
    x = np.random.default_rng(3).random((4, 1, 28, 28), dtype=np.float32)
    with deepnet.winograd(mode):
        np.testing.assert_array_equal(bits(plan(x)), bits(net.predict(x, train=False)))


@asan
def test_out_of_winograd_range_falls_back_as_predict_does():
    # inputs near float32's largest value: "auto" runs the direct kernel (finite), "always"
    # Winograd (may overflow); the plan's per-call check must choose as predict's does
    net = recipes.MODEL_NAMES["deepconvnet"]("float32", 4)
    plan = deepnet.compile(net)
    x = np.random.default_rng(4).random((3, 1, 28, 28), dtype=np.float32) * np.float32(3e37)
    x[0, 0, 0, 0] = np.nan  # a NaN counts as out of range, and must come out where predict's does
    for mode in ("auto", "always"):
        with deepnet.winograd(mode):
            np.testing.assert_array_equal(bits(plan(x)), bits(net.predict(x, train=False)))


@asan
def test_predict_does_not_depend_on_the_thread_count():
    # Winograd runs from two images on whatever the threads: the same bits at 1, 2 and 3
    net = recipes.MODEL_NAMES["deepconvnet"]("float32", 5)
    for batch in (1, 2):
        x = np.random.default_rng(batch).random((batch, 1, 28, 28), dtype=np.float32)
        results = []
        for threads in (1, 2, 3):
            deepnet.set_num_threads(threads)
            results.append(bits(net.predict(x, train=False)))
        for other in results[1:]:
            np.testing.assert_array_equal(other, results[0])


@asan
def test_batches_grow_and_shrink_and_inputs_may_be_strided_or_read_only():
    net = fold_batch_norm(recipes.MODEL_NAMES["resnet"]("float32", 6))
    plan = deepnet.compile(net)
    rng = np.random.default_rng(6)
    for batch in (3, 9, 1, 9):
        x = rng.random((batch, 1, 28, 28), dtype=np.float32)
        np.testing.assert_array_equal(bits(plan(x)), bits(net.predict(x, train=False)))
    wide = rng.random((4, 1, 28, 56), dtype=np.float32)
    strided = wide[:, :, :, ::2]
    strided.flags.writeable = False
    np.testing.assert_array_equal(bits(plan(strided)), bits(net.predict(np.ascontiguousarray(strided), train=False)))
    # other dtypes are converted as predict converts them
    as_float64 = rng.random((2, 1, 28, 28))
    np.testing.assert_array_equal(bits(plan(as_float64)), bits(net.predict(as_float64, train=False)))


@asan
def test_out_argument_and_empty_batch():
    net = recipes.MODEL_NAMES["deepconvnet"]("float32", 7)
    plan = deepnet.compile(net)
    x = np.random.default_rng(7).random((2, 1, 28, 28), dtype=np.float32)
    out = np.full((2, 10), np.nan, dtype=np.float32)
    assert plan(x, out=out) is out
    np.testing.assert_array_equal(bits(out), bits(net.predict(x, train=False)))
    assert plan(np.zeros((0, 1, 28, 28), np.float32)).shape == (0, 10)
    with pytest.raises(ValueError, match=r"out must be a C-contiguous float32 array of shape \(2, 10\)"):
        plan(x, out=np.empty((2, 11), np.float32))


@asan
def test_the_plan_holds_its_own_copy_of_the_weights():
    net = recipes.MODEL_NAMES["deepconvnet"]("float32", 8)
    x = np.random.default_rng(8).random((2, 1, 28, 28), dtype=np.float32)
    plan = deepnet.compile(net)
    before = net.predict(x, train=False)
    for W in net.params.values():
        W *= 2
    np.testing.assert_array_equal(bits(plan(x)), bits(before))


@asan
def test_bad_inputs_and_models_are_refused_clearly():
    net = recipes.MODEL_NAMES["deepconvnet"]("float32", 9)
    plan = deepnet.compile(net)
    with pytest.raises(ValueError, match=r"images of shape \(N, 1, 28, 28\), got x of shape \(2, 28, 28\)"):
        plan(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(TypeError, match="must hold numbers"):
        plan(np.array([["a"]]))
    with pytest.raises(ValueError, match="cannot compile a LeakyReLU layer"):
        from deepnet.layers import LeakyReLU
        from deepnet.models import Sequential

        deepnet.compile(Sequential(LeakyReLU(0.2)), input_shape=(1, 4, 4))
    with pytest.raises(ValueError, match="a Convolution layer of 1 channels gets 3"):
        deepnet.compile(net, input_shape=(3, 28, 28))
    with pytest.raises(ValueError, match=r"input_shape must be \(C, H, W\)"):
        deepnet.compile(net, input_shape=(28, 28))


@pytest.mark.parametrize(
    "name, dot",
    cases(
        ["deepconvnet", "deepconvnet-bn", "resnet", "googlenet"],
        [True, False],
        {("deepconvnet", True), ("deepconvnet", False), ("googlenet", True)},
    ),
)
def test_bfloat16_plans_give_predict_bits(name, dot, monkeypatch):
    # the convolutions in vdpbf16ps's dot products (the emulation here), or in float32 on
    # the widened values (DOT_CONVOLUTION off); every stored result rounded to bfloat16
    pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes")
    from deepnet.backends import bf16

    monkeypatch.setattr(bf16, "DOT_CONVOLUTION", dot)
    net = trained_looking(name, "bfloat16")
    plan = deepnet.compile(net)
    reference = fold_batch_norm(net)
    rng = np.random.default_rng(3)
    for threads in (1, 2, 3):
        deepnet.set_num_threads(threads)
        for batch in (1, 4):
            x = rng.random((batch,) + plan.input_shape).astype(np.float32)
            expected = reference.predict(x, train=False)
            got = plan(x)
            assert got.dtype == expected.dtype
            np.testing.assert_array_equal(bits(got), bits(expected), err_msg=f"{threads} threads, batch {batch}")


@asan
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_binary_plans_give_the_bit_and_float_paths_bits(dtype):
    # BinaryConvolution and BinaryAffine as the plan's XNOR-popcount steps: the integer sums
    # of +-1 products, so the bits of both of the layers' own paths; negative inputs, exact
    # zeros (+1), NaN (-1) and padded windows included
    from deepnet.nn.binary import bit_inference

    net = trained_looking("deepconvnet-binary", dtype)
    plan = deepnet.compile(net)
    reference = fold_batch_norm(net)
    rng = np.random.default_rng(4)
    for threads in (1, 2, 3):
        deepnet.set_num_threads(threads)
        for batch in (1, 5):
            x = rng.random((batch,) + plan.input_shape).astype(np.float32) - 0.3
            x[0, 0, :3] = 0.0
            x[-1, 0, 5, 5] = np.nan
            got = plan(x)
            for bit_path in (True, False):
                with bit_inference(bit_path):
                    expected = reference.predict(x, train=False)
                np.testing.assert_array_equal(bits(got), bits(expected), err_msg=f"{threads} threads, batch {batch}")


@asan
def test_binary_layers_of_odd_channels_strides_and_padding():
    # words of 64 channels with a partial last one, strides and paddings the model lacks
    from deepnet.layers import BinaryAffine, BinaryConvolution, Flatten
    from deepnet.models import Sequential

    rng = np.random.default_rng(5)
    for C, stride, pad in ((70, 1, 1), (3, 2, 2), (130, (2, 1), (0, 1))):
        conv = BinaryConvolution(
            rng.normal(size=(5, C, 3, 2)).astype(np.float32), rng.normal(size=5).astype(np.float32), stride, pad
        )
        features = math.prod(conv.output_shape((1, C, 9, 8))[1:])
        affine = BinaryAffine(rng.normal(size=(features, 7)).astype(np.float32), rng.normal(size=7).astype(np.float32))
        net = Sequential(conv, Flatten(), affine)
        plan = deepnet.compile(net, input_shape=(C, 9, 8))
        x = rng.normal(size=(3, C, 9, 8)).astype(np.float32)
        for threads in (1, 3):
            deepnet.set_num_threads(threads)
            np.testing.assert_array_equal(bits(plan(x)), bits(net.predict(x, train=False)))
        # the plan's integers, against NumPy's float64 sums of +-1 products
        signs = np.where(x >= 0, 1.0, -1.0)
        expected = (
            np.asarray(deepnet.functional.conv2d(signs, np.where(conv.W >= 0, 1.0, -1.0), None, conv.stride, conv.pad))
            + conv.b[:, None, None]
        )
        hidden = expected.astype(np.float32).reshape(3, -1)
        scores = np.where(hidden >= 0, 1.0, -1.0) @ np.where(affine.W >= 0, 1.0, -1.0) + affine.b
        np.testing.assert_array_equal(plan(x), scores.astype(np.float32))


@asan
def test_plan_steps_are_checked():
    from deepnet._kernels import plan as _plan

    with pytest.raises(ValueError, match="step 0 reads slot 5 or 5 before any step writes it"):
        _plan.Plan([{"kind": "activate", "ops": [("relu",)], "src": 5, "dst": 1}], np.float32, 4)
    with pytest.raises(ValueError, match="the last step must write the output"):
        _plan.Plan([{"kind": "activate", "ops": [("relu",)], "src": 0, "dst": 2}], np.float32, 4)
    with pytest.raises(ValueError, match="an affine layer of 3 inputs after a step of 4 outputs"):
        weights = np.zeros((3, 2), np.float32)
        _plan.Plan([{"kind": "affine", "weights": weights, "bias": np.zeros(2), "src": 0, "dst": 1}], np.float32, 4)


@asan
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_affine_kernel_against_numpy(dtype):
    rng = np.random.default_rng(10)
    for N, K, M in ((1, 1024, 50), (7, 50, 10), (5, 3, 17), (0, 4, 3), (2, 0, 3)):
        x, W, b = rng.normal(size=(N, K)).astype(dtype), rng.normal(size=(K, M)).astype(dtype), rng.normal(size=M)
        b = b.astype(dtype)
        expected = x.astype(np.float64) @ W.astype(np.float64) + b
        got = F.affine(x, W, b)
        assert got.dtype == dtype and got.shape == (N, M)
        np.testing.assert_allclose(got, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-4)
        deepnet.set_num_threads(1)
        one = F.affine(x, W, b)
        deepnet.set_num_threads(3)
        np.testing.assert_array_equal(bits(F.affine(x, W, b)), bits(one))


@asan
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_global_average_pool_against_numpy(dtype):
    x = np.random.default_rng(11).normal(size=(3, 5, 7, 7)).astype(dtype)
    got = F.global_average_pool(x)
    assert got.dtype == dtype and got.shape == (3, 5)
    tolerance = {np.float16: 1e-3, np.float32: 1e-6, np.float64: 1e-14}[dtype]
    np.testing.assert_allclose(got, x.astype(np.float64).mean(axis=(2, 3)), rtol=tolerance, atol=tolerance)


@asan
@pytest.mark.parametrize("size, pad", [(13, 0), (14, 1), (9, 2)])
def test_odd_and_even_outputs_in_bands_of_every_kernel(size, pad):
    # 3x3 convolutions of 16 channels (Winograd under "auto") with odd and even outputs,
    # pooled and not, at batches and thread counts that split images into bands
    from deepnet.layers import Affine, Convolution, Flatten, Pooling, Relu
    from deepnet.models import Sequential

    rng = np.random.default_rng(size)
    out = size + 2 * pad - 2

    def conv(relu):
        return Convolution(
            rng.normal(0, 0.2, (16, 16, 3, 3)).astype(np.float32),
            rng.normal(0, 0.1, 16).astype(np.float32),
            1,
            pad,
            relu=relu,
        )

    after_second = out + 2 * pad - 2
    features = 16 * (after_second // 2) ** 2
    net = Sequential(
        *[
            conv(True),
            conv(False),
            Relu(),
            Pooling(2, 2),
            Flatten(),
            Affine(rng.normal(0, 0.1, (features, 10)).astype(np.float32), np.zeros(10, np.float32)),
        ]
    )
    plan = deepnet.compile(net, input_shape=(16, size, size))
    for mode in ("auto", "never"):
        for threads in (1, 2, 3, 5):
            deepnet.set_num_threads(threads)
            for batch in (1, 2, 4):
                x = rng.normal(size=(batch, 16, size, size)).astype(np.float32)
                with deepnet.winograd(mode):
                    np.testing.assert_array_equal(bits(plan(x)), bits(net.predict(x, train=False)))


def _max_pool_reference(x, kh, kw, stride, pad):
    """NumPy max-pooling in float64 whose windows skip the padding, with NaN winning."""
    (sh, sw), (ph, pw) = stride, pad
    N, C, H, W = x.shape
    OH, OW = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    out = np.empty((N, C, OH, OW), x.dtype)
    for oy in range(OH):
        for ox in range(OW):
            y0, x0 = oy * sh - ph, ox * sw - pw
            window = x[:, :, max(y0, 0) : y0 + kh, max(x0, 0) : x0 + kw].reshape(N, C, -1)
            out[:, :, oy, ox] = np.max(window, axis=2)  # NaN propagates, as NaN wins
    return out


@asan
@pytest.mark.parametrize(
    "kh, kw, stride, pad",
    [
        (3, 3, (1, 1), (1, 1)),
        (2, 2, (2, 2), (0, 0)),
        (3, 3, (2, 2), (1, 1)),
        (2, 3, (1, 2), (1, 0)),
        (4, 4, (3, 3), (0, 0)),
    ],
)
def test_max_pooling_that_follows_no_convolution(kh, kw, stride, pad):
    # pooling on the input and after a Concat runs as the plan's own pooling step: the
    # layer's values (its ties, NaN and padding), and the float64 NumPy maxima
    from deepnet.layers import Flatten, Pooling
    from deepnet.models import Sequential

    rng = np.random.default_rng(kh * 10 + kw)
    net = Sequential(Pooling(kh, kw, stride, pad), Flatten())  # float32; float64 pools in the GoogLeNet family
    x = rng.normal(size=(5, 3, 11, 9)).astype(np.float32)
    x[0, 0, 2:4, 2:4] = 1.5  # a tie
    x[1, 2, 5, 5] = np.nan
    x[2, 1] = -np.inf
    plan = deepnet.compile(net, input_shape=(3, 11, 9))
    for threads in (1, 2, 3):
        deepnet.set_num_threads(threads)
        for batch in (1, 5):
            got = plan(x[:batch])
            np.testing.assert_array_equal(bits(got), bits(net.predict(x[:batch], train=False)))
            np.testing.assert_array_equal(got, _max_pool_reference(x[:batch], kh, kw, stride, pad).reshape(batch, -1))


@asan
def test_concat_branches_of_every_kind():
    # branches that pool, that are empty (the input itself), that end in a Concat of their
    # own, followed by an in-place ReLU, a pooling and a Concat as the last layer
    from deepnet.layers import Concat, Convolution, Flatten, Pooling, Relu
    from deepnet.models import Sequential

    rng = np.random.default_rng(21)

    def conv(c_in, c_out, size, relu=False):
        W = rng.normal(0, 0.3, (c_out, c_in, size, size)).astype(np.float32)
        return Convolution(W, rng.normal(0, 0.1, c_out).astype(np.float32), 1, size // 2, relu=relu)

    inner = Concat(Sequential(conv(2, 2, 1)), Sequential(Pooling(3, 3, 1, 1)))
    net = Sequential(
        Concat(Sequential(conv(3, 4, 3, relu=True)), Sequential(), Sequential(conv(3, 2, 1), inner)),
        Relu(),
        Pooling(2, 2),
        Concat(Sequential(conv(11, 5, 3)), Sequential(Pooling(3, 3, 1, 1), conv(11, 3, 1, relu=True))),
        Flatten(),
    )
    plan = deepnet.compile(net, input_shape=(3, 10, 10))
    x = rng.normal(size=(4, 3, 10, 10)).astype(np.float32)
    expected = net.predict(x, train=False)
    assert expected.shape == (4, 8 * 5 * 5)
    for threads in (1, 2, 3):
        deepnet.set_num_threads(threads)
        for batch in (1, 4):
            np.testing.assert_array_equal(bits(plan(x[:batch])), bits(expected[:batch]))


def test_for_inference_compiles_what_it_can_and_keeps_the_rest():
    from deepnet.models.compiled import CompiledModel, for_inference

    net = recipes.MODEL_NAMES["deepconvnet"]("float32", 12)
    compiled = for_inference(net)
    assert isinstance(compiled, CompiledModel)
    half = recipes.MODEL_NAMES["deepconvnet"]("float16", 12)
    assert isinstance(for_inference(half), CompiledModel)
    leaky = deepnet.models.Sequential(deepnet.layers.LeakyReLU(0.2))
    assert for_inference(leaky) is leaky
    binary = recipes.MODEL_NAMES["deepconvnet-binary"]("float32", 12)  # its bit kernel is the faster
    assert for_inference(binary) is binary and isinstance(deepnet.compile(binary), CompiledModel)
    # what evaluate and predict call on it: the same answers as the model's own
    x = np.random.default_rng(12).random((250, 1, 28, 28), dtype=np.float32)
    t = np.random.default_rng(13).integers(0, 10, 250)
    np.testing.assert_array_equal(compiled.classify(x), net.classify(x))
    np.testing.assert_array_equal(compiled.probabilities(x), net.probabilities(x))
    assert compiled.accuracy(x, t) == net.accuracy(x, t)
    with pytest.raises(ValueError, match="samples but"):
        compiled.accuracy(x, t[:3])
    for model in (compiled, net):  # the shared batch loop (deepnet.nn.classifier) checks batch_size for both
        with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
            model.classify(x, batch_size=0)


@asan
def test_int8_plan_gives_the_int8_models_bits():
    from deepnet.models.compiled import CompiledModel, for_inference

    net = recipes.MODEL_NAMES["deepconvnet"]("float32", 14)
    rng = np.random.default_rng(14)
    model = deepnet.quantize(net, rng.random((64, 1, 28, 28), dtype=np.float32))
    plan = deepnet.compile(model)
    assert isinstance(for_inference(model), CompiledModel)
    for threads in (1, 2, 3):
        deepnet.set_num_threads(threads)
        for batch in (1, 2, 5, 40):
            x = rng.random((batch, 1, 28, 28), dtype=np.float32)
            np.testing.assert_array_equal(bits(plan(x)), bits(model.predict(x)))
    x = rng.random((2, 1, 28, 28), dtype=np.float32)
    x[1, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="holds NaN"):
        plan(x)
    with pytest.raises(ValueError, match="holds NaN"):
        model.predict(x)


@asan
def test_int8_models_with_float_steps_chain_an_int8_and_a_float_plan():
    # a quantized ResNet: int8 stem, float residual blocks and pooling, int8 classifier
    from deepnet.models.compiled import CompiledModel, for_inference
    from deepnet.quant.model import FloatStep

    net = recipes.MODEL_NAMES["resnet"]("float32", 15)
    rng = np.random.default_rng(15)
    model = deepnet.quantize(net, rng.random((32, 1, 28, 28), dtype=np.float32))
    assert any(isinstance(step, FloatStep) for step in model.steps)
    plan = deepnet.compile(model)
    assert isinstance(for_inference(model), CompiledModel)
    for threads in (1, 2, 3):
        deepnet.set_num_threads(threads)
        for batch in (1, 2, 5, 40):
            x = rng.random((batch, 1, 28, 28), dtype=np.float32)
            np.testing.assert_array_equal(bits(plan(x)), bits(model.predict(x)))
    x = rng.random((2, 1, 28, 28), dtype=np.float32)
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="holds NaN"):
        plan(x)


def test_quantized_googlenet_saves_loads_and_compiles(tmp_path):
    # its Concat blocks are float steps (written and rebuilt as data); its pooled int8 stem
    # ends in a dequantize step, which its int8 plan runs (then the float plan, then int8)
    from deepnet.models import load_model
    from deepnet.models.compiled import CompiledModel, for_inference
    from deepnet.quant.model import DequantizeStep

    net = recipes.MODEL_NAMES["googlenet"]("float32", 16)
    rng = np.random.default_rng(16)
    model = deepnet.quantize(net, rng.random((32, 1, 28, 28), dtype=np.float32))
    assert any(isinstance(step, DequantizeStep) for step in model.steps)
    model.save(tmp_path / "googlenet_int8.npz")
    loaded = load_model(tmp_path / "googlenet_int8.npz")
    x = rng.random((20, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert np.abs(model.predict(x) - net.predict(x, train=False)).max() < 0.1 * np.abs(net.predict(x)).max()
    plan = deepnet.compile(loaded)
    assert isinstance(for_inference(model), CompiledModel)
    for threads in (1, 2, 3):
        deepnet.set_num_threads(threads)
        for batch in (1, 2, 7):
            np.testing.assert_array_equal(bits(plan(x[:batch])), bits(model.predict(x[:batch])))


def test_the_numpy_backend_runs_the_model_itself():
    from deepnet.models.compiled import NotCompilable, for_inference

    net = recipes.MODEL_NAMES["deepconvnet"]("float32", 16)
    with deepnet.backend("numpy"):
        with pytest.raises(NotCompilable, match="chose NumPy"):
            deepnet.compile(net)
        assert for_inference(net) is net

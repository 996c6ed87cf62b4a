"""deepnet.onnx.export against ONNX Runtime (and onnx's own reference evaluator): every model
family's graph passes onnx.checker, and its scores on 1,000 MNIST test images match
deepnet's predict within 1e-5 with the same argmax everywhere."""

import functools
import os

import numpy as np
import pytest

from deepnet import cli, recipes
from deepnet.app.inference import load_for_inference
from deepnet.datasets import load_mnist
from deepnet.models import VGG, Sequential, fold_batch_norm
from deepnet.nn import (
    Affine,
    BatchNormalization,
    BinaryAffine,
    Concat,
    Convolution,
    ConvTranspose,
    Dropout,
    Flatten,
    Layer,
    LeakyReLU,
    Pooling,
    Relu,
    Residual,
    Sigmoid,
    Tanh,
    containers,
)
from support import BOOK_PARAMS, MNIST_DIR

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
deepnet_onnx = pytest.importorskip("deepnet.onnx")


@pytest.fixture(scope="module")
def images():
    (_, _), (x_test, _) = load_mnist(root=MNIST_DIR, flatten=False, dtype=np.float32)
    return x_test[:1000]


def run_onnx(proto, x):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def randomize_batch_norm(model, seed):
    """Scales and offsets far from the identity, and the running statistics a trained model
    has: its data's (one training-mode pass over 500 training images with momentum 0), so
    that exporting them matters and the scores have a trained model's size."""
    rng = np.random.default_rng(seed)
    layers = [layer for _, layer in model.named_layers() if isinstance(layer, BatchNormalization)]
    for layer in layers:
        n = layer.gamma.size
        layer.gamma[...] = rng.uniform(0.5, 1.5, n)
        layer.beta[...] = rng.normal(0, 0.2, n)
        layer.momentum = 0.0
    model.predict(training_images()[:500], train=True)
    for layer in layers:
        layer.momentum = 0.9
    return model


@functools.lru_cache(maxsize=1)
def training_images():
    (x_train, _), _ = load_mnist(root=MNIST_DIR, flatten=False, dtype=np.float32)
    return x_train


def assert_matches(model, proto, x):
    expected = model.predict(x, train=False)
    got = run_onnx(proto, x)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert np.abs(got - expected).max() <= 1e-5
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))


FAMILIES = {
    "book-deepconvnet": lambda: load_for_inference(str(BOOK_PARAMS), "float32"),
    "deepconvnet-bn": lambda: randomize_batch_norm(recipes.MODEL_NAMES["deepconvnet-bn"]("float32", 1), 1),
    "resnet": lambda: randomize_batch_norm(recipes.MODEL_NAMES["resnet"]("float32", 2), 2),
    "vgg-bn": lambda: randomize_batch_norm(VGG(batch_norm=True, dtype=np.float32, seed=3), 3),
    "vgg": lambda: VGG(dtype=np.float32, seed=4),
    "googlenet": lambda: recipes.MODEL_NAMES["googlenet"]("float32", 5),
    "deepconvnet-binary": lambda: recipes.MODEL_NAMES["deepconvnet-binary"]("float32", 6),
}


@pytest.mark.parametrize("fold", [False, True], ids=["bn-node", "bn-folded"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_matches_onnx_runtime_on_mnist(family, fold, images):
    model = FAMILIES[family]()
    proto = deepnet_onnx.to_onnx(model, fold_batch_norm=fold)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version >= 17
    ops = {node.op_type for node in proto.graph.node}
    exported = fold_batch_norm(model) if fold else model  # folding removes the BN after a Convolution
    has_bn = any(isinstance(layer, BatchNormalization) for _, layer in exported.named_layers())
    assert ("BatchNormalization" in ops) == has_bn
    assert_matches(model, proto, images)


def test_the_batch_size_is_free(images):
    model = recipes.MODEL_NAMES["deepconvnet"]("float32", 7)
    proto = deepnet_onnx.to_onnx(model)
    for n in (1, 7):
        assert_matches(model, proto, images[:n])


def every_layer_model(rng):
    """A net that uses each exportable layer and container once, in float32."""

    def conv(c_in, c_out, k, **kw):
        return Convolution(
            rng.normal(0, 0.3, (c_out, c_in, k, k)).astype(np.float32),
            rng.normal(0, 0.1, c_out).astype(np.float32),
            **kw,
        )

    def bn(n, relu=False):
        layer = BatchNormalization(np.ones(n, np.float32), np.zeros(n, np.float32), relu=relu)
        return layer

    up = ConvTranspose(
        rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32),
        rng.normal(0, 0.1, 3).astype(np.float32),
        stride=2,
        pad=1,
        output_padding=1,
    )
    return Sequential(
        conv(1, 4, 3, stride=2, pad=(1, 0), relu=True),  # 28x28 -> 14x13
        Residual(containers.Sequential(conv(4, 4, 3, pad=1), bn(4, relu=True)), conv(4, 4, 1)),
        Concat(containers.Sequential(), containers.Sequential(Pooling(3, 3, stride=1, pad=1), LeakyReLU(0.2))),
        conv(8, 4, 1),
        up,  # 14x13 -> 28x26
        Tanh(),
        Pooling(2, 2, stride=2),
        Sigmoid(),
        Dropout(0.3),
        Flatten(),
        Affine(rng.normal(0, 0.1, (3 * 14 * 13, 12)).astype(np.float32), np.zeros(12, np.float32)),
        bn(12),
        Relu(),
        BinaryAffine(rng.normal(0, 0.1, (12, 6)).astype(np.float32), rng.normal(0, 0.5, 6).astype(np.float32)),
        Affine(rng.normal(0, 0.3, (6, 10)).astype(np.float32), np.zeros(10, np.float32)),
    )


def test_every_layer_and_container(images):
    model = randomize_batch_norm(every_layer_model(np.random.default_rng(8)), 8)
    proto = deepnet_onnx.to_onnx(model)
    ops = {node.op_type for node in proto.graph.node}
    expected_ops = {"Conv", "Add", "Concat", "MaxPool", "LeakyRelu", "ConvTranspose", "Tanh", "Sigmoid", "Mul", "Gemm"}
    assert expected_ops | {"BatchNormalization", "Round", "Where", "MatMul"} <= ops
    assert_matches(model, proto, images[:200])


def test_float64_graph_against_onnx_reference_evaluator(images):
    """float64 graphs are valid ONNX (ONNX Runtime's CPU Conv has no double kernel, so onnx's
    own reference evaluator runs them)."""
    from onnx.reference import ReferenceEvaluator

    model = randomize_batch_norm(recipes.MODEL_NAMES["resnet"]("float64", 9), 9)
    proto = deepnet_onnx.to_onnx(model, dtype="float64")
    x = images[:3].astype(np.float64)
    got = ReferenceEvaluator(proto).run(None, {"input": x})[0]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, model.predict(x, train=False), rtol=1e-10, atol=1e-10)


def test_float16_model_exports_as_a_float32_graph(images):
    model = recipes.MODEL_NAMES["deepconvnet"]("float16", 10)
    proto = deepnet_onnx.to_onnx(model)
    got = run_onnx(proto, images[:50])
    expected = model.predict(images[:50].astype(np.float16), train=False).astype(np.float32)
    # deepnet rounds to float16 between layers, the graph does not: float16's precision
    np.testing.assert_allclose(got, expected, atol=2e-2 * max(1.0, float(np.abs(expected).max())))


def test_input_shape_other_than_the_models(images):
    model = randomize_batch_norm(recipes.MODEL_NAMES["resnet"]("float32", 11), 11)
    proto = deepnet_onnx.to_onnx(model, input_shape=(1, 36, 36))
    x = np.pad(images[:20], ((0, 0), (0, 0), (4, 4), (4, 4)))
    assert_matches(model, proto, x)
    with pytest.raises(ValueError, match=r"does not take images of shape \(1, 8, 8\).*Affine"):
        deepnet_onnx.to_onnx(recipes.MODEL_NAMES["deepconvnet"]("float32", 0), input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="input_shape must be positive integers"):
        deepnet_onnx.to_onnx(model, input_shape=(1, 0, 28))


def test_refusals_name_what_was_expected():
    class Custom(Layer):
        def forward(self, x, train=None):
            return x

        def output_shape(self, shape):
            return tuple(shape)

    model = Sequential(Flatten(), Custom(), Affine(np.zeros((784, 10), np.float32), np.zeros(10, np.float32)))
    with pytest.raises(deepnet_onnx.ExportError, match=r"layer 1 \(Custom\)"):
        deepnet_onnx.to_onnx(model, input_shape=(1, 28, 28))
    with pytest.raises(deepnet_onnx.ExportError, match="expected a deepnet model.*got dict"):
        deepnet_onnx.to_onnx({"W": 1})
    with pytest.raises(ValueError, match="dtype must be float32 or float64, got float16"):
        deepnet_onnx.to_onnx(recipes.MODEL_NAMES["deepconvnet"]("float32", 0), dtype="float16")


def test_int8_models_export_as_qdq_and_onnx_runtime_agrees(images):
    """The book's weights quantized (calibrated on training images) in ONNX's QDQ form.  ONNX
    Runtime with its graph optimizations off computes QDQ's definition (dequantize, float Conv,
    quantize): it must give deepnet's int8 scores but for rare ties in rounding.  With them on it
    runs its own int8 kernels, whose rounding differs more: the predicted classes must agree."""
    from deepnet.quant import quantize

    (x_train, _), (_, t_test) = load_mnist(root=MNIST_DIR, flatten=False, dtype=np.float32)
    model = quantize(load_for_inference(str(BOOK_PARAMS), "float32"), x_train[-1000:])
    proto = deepnet_onnx.to_onnx(model)
    onnx.checker.check_model(proto, full_check=True)
    ops = [node.op_type for node in proto.graph.node]
    assert ops.count("QuantizeLinear") == 8 and "Gemm" not in ops  # the input and each int8 layer's output
    int8_weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) == 8 and all(t.dims[0] for t in int8_weights)
    expected = model.predict(images)
    labels = t_test[: len(images)]
    for level, mean_limit in ((ort.GraphOptimizationLevel.ORT_DISABLE_ALL, 1e-3), (None, None)):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        if level is not None:
            options.graph_optimization_level = level
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": images})[0]
        if mean_limit is not None:
            assert np.abs(got - expected).mean() <= mean_limit and np.abs(got - expected).max() <= 0.1
            np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
        else:
            assert np.mean(got.argmax(axis=1) != expected.argmax(axis=1)) <= 0.01
            assert abs(np.mean(got.argmax(axis=1) == labels) - np.mean(expected.argmax(axis=1) == labels)) <= 0.01
    with pytest.raises(ValueError, match="an int8 model exports as float32"):
        deepnet_onnx.to_onnx(model, dtype="float64")


def test_export_command_writes_a_file_that_onnx_runtime_runs(tmp_path, capsys, images):
    out = tmp_path / "book.onnx"
    assert cli.main(["export", str(BOOK_PARAMS), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["book.onnx"]  # written atomically: no temporary left
    proto = onnx.load(str(out))
    assert_matches(load_for_inference(str(BOOK_PARAMS), "float32"), proto, images[:100])
    # a second export refuses to replace the file, unless told to
    assert cli.main(["export", str(BOOK_PARAMS), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["export", str(BOOK_PARAMS), "--out", str(out), "--overwrite", "--fold-bn"]) == 0
    assert cli.main(["export", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "x.onnx")]) == 2

"""deepnet.onnx.load: ONNX files of the operators deepnet has load as deepnet models whose
scores match ONNX Runtime's on the same file; everything else is refused, naming what."""

import os
import sys

import numpy as np
import pytest

from deepnet.datasets import load_mnist
from support import MNIST_DIR, REPO

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
deepnet_onnx = pytest.importorskip("deepnet.onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from test_onnx_export import FAMILIES  # noqa: E402


@pytest.fixture(scope="module")
def images():
    (_, _), (x_test, _) = load_mnist(root=MNIST_DIR, flatten=False, dtype=np.float32)
    return x_test[:1000]


def onnx_runtime(data, x):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def assert_close(got, expected):
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-5 * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - {"deepconvnet-binary"}))
def test_deepnet_exports_load_back_bit_for_bit(family, images):
    model = FAMILIES[family]()
    data = deepnet_onnx.to_onnx(model).SerializeToString()
    loaded = deepnet_onnx.from_bytes(data)
    x = images[:300]
    np.testing.assert_array_equal(loaded.predict(x, train=False), model.predict(x, train=False))
    assert_close(loaded.predict(x, train=False), onnx_runtime(data, x))


def tensor(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def graph_file(nodes, initializers, input_shape=(None, 1, 6, 6), output_shape=None, opset=17, inputs=None):
    graph = helper.make_graph(
        nodes,
        "g",
        inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
        initializers,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    return proto.SerializeToString()


def pytorch_style_graph(rng):
    """What PyTorch's exporter writes: shared tensors through Identity, Gemm with transB,
    BatchNormalization with epsilon 1e-5 on maps and on rows, MatMul + Add, a Constant."""
    W = rng.normal(0, 0.5, (3, 1, 3, 3))
    nodes = [
        helper.make_node("Identity", ["b_shared"], ["b_conv"]),
        helper.make_node("Conv", ["x", "W", "b_conv"], ["c"], pads=[1, 1, 1, 1], strides=[1, 1], kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c", "g", "be", "m", "v"], ["n"], epsilon=1e-5),
        helper.make_node("LeakyRelu", ["n"], ["r"], alpha=0.1),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "L1", "l1b"], ["h"], transB=1),
        helper.make_node("BatchNormalization", ["h", "g4", "be4", "m4", "v4"], ["hn"], epsilon=1e-3),
        helper.make_node("Tanh", ["hn"], ["t"]),
        helper.make_node("Constant", [], ["L2b"], value=tensor("L2b_value", rng.normal(0, 1, 5))),
        helper.make_node("MatMul", ["t", "L2"], ["mm"]),
        helper.make_node("Add", ["mm", "L2b"], ["y"]),
    ]
    initializers = [
        tensor("W", W),
        tensor("b_shared", rng.normal(0, 0.1, 3)),
        tensor("g", rng.uniform(0.5, 1.5, 3)),
        tensor("be", rng.normal(0, 0.2, 3)),
        tensor("m", rng.normal(0, 0.2, 3)),
        tensor("v", rng.uniform(0.3, 2, 3)),
        tensor("L1", rng.normal(0, 0.3, (4, 27))),
        tensor("l1b", rng.normal(0, 0.1, 4)),
        tensor("g4", rng.uniform(0.5, 1.5, 4)),
        tensor("be4", rng.normal(0, 0.2, 4)),
        tensor("m4", rng.normal(0, 0.2, 4)),
        tensor("v4", rng.uniform(0.3, 2, 4)),
        tensor("L2", rng.normal(0, 0.5, (4, 5))),
    ]
    return graph_file(nodes, initializers)


def test_a_pytorch_style_graph_matches_onnx_runtime():
    data = pytorch_style_graph(np.random.default_rng(0))
    model = deepnet_onnx.from_bytes(data)
    x = np.random.default_rng(1).random((50, 1, 6, 6), dtype=np.float32)
    assert_close(model.predict(x, train=False), onnx_runtime(data, x))


def test_load_reads_a_file_and_the_model_trains(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(pytorch_style_graph(np.random.default_rng(2)))
    model = deepnet_onnx.load(path)
    x = np.random.default_rng(3).random((8, 1, 6, 6), dtype=np.float32)
    loss, grads = model.loss_and_gradient(x, np.arange(8) % 5)  # a deepnet model: it trains on its kernels
    assert np.isfinite(loss) and set(grads) == set(model.grads) and grads


def torch_mirror_files():
    """The PyTorch mirrors of benches/ exported by PyTorch (skipped without the bench extra)."""
    torch = pytest.importorskip("torch", reason="torch is the [bench] extra's comparison only")
    sys.path.insert(0, str(REPO / "benches" / "models"))
    import torch_deepconvnet

    return torch, torch_deepconvnet


@pytest.mark.parametrize("name", ["deepconvnet", "deepconvnet-bn", "resnet", "googlenet"])
def test_pytorch_mirrors_exported_by_pytorch_run_on_deepnet(name, images, tmp_path):
    torch, mirrors = torch_mirror_files()
    net = mirrors.MODELS[name](seed=1).eval()
    generator = torch.Generator().manual_seed(0)
    for module in net.modules():  # statistics far from the identity, so that importing them matters
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
            module.running_var.copy_(torch.rand(n, generator=generator) * 1.7 + 0.3)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(net, (torch.zeros((1, 1, 28, 28)),), str(path), opset_version=17, dynamo=False)
    model = deepnet_onnx.load(path)
    with torch.no_grad():
        expected = net(torch.from_numpy(images)).numpy()
    assert_close(model.predict(images, train=False), expected)


def refused(data, match):
    with pytest.raises(deepnet_onnx.ImportRefused, match=match):
        deepnet_onnx.from_bytes(data)


def conv_graph(**attributes):
    conv = helper.make_node("Conv", ["x", "W"], ["y"], kernel_shape=[3, 3], **attributes)
    return graph_file([conv], [tensor("W", np.ones((2, 1, 3, 3)))])


def test_refusals_name_the_operator_or_setting():
    refused(graph_file([helper.make_node("Softplus", ["x"], ["y"])], []), "operator Softplus.*not supported")
    refused(conv_graph(group=2), "group 2")
    refused(conv_graph(dilations=[2, 2]), "dilations")
    refused(conv_graph(pads=[1, 0, 0, 1]), "only equal padding")
    refused(conv_graph(auto_pad="SAME_UPPER"), "auto_pad")
    assert deepnet_onnx.from_bytes(conv_graph(pads=[1, 1, 1, 1])).layers  # the same node, supported settings
    pool = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], ceil_mode=1)
    refused(graph_file([pool], []), "ceil_mode")
    refused(graph_file([helper.make_node("Relu", ["x"], ["y"])], [], opset=9), "opset 9")
    dead = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Relu", ["x"], ["z"])]
    refused(graph_file(dead, []), "without meeting the others")
    two_inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, 6, 6]) for n in ("x", "x2")]
    refused(graph_file([helper.make_node("Add", ["x", "x2"], ["y"])], [], inputs=two_inputs), "one input")
    refused(b"\x00not an onnx file" * 3, "not an ONNX model")
    # a cycle (ONNX forbids them; a hostile file need not care) is refused, not followed forever
    cycle = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Relu", ["b"], ["a"]),
        helper.make_node("Sigmoid", ["b"], ["y"]),
    ]
    refused(graph_file(cycle, []), "cycle|without meeting")


def test_the_work_inside_a_branch_is_bounded():
    """A convolution whose output is far past MAX_ACTIVATION, hidden in a residual branch:
    refused from the shapes alone, before anything runs."""
    conv = helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[1, 1], pads=[2000, 2000, 2000, 2000])
    add = helper.make_node("Add", ["c", "x"], ["y"])
    refused(
        graph_file([conv, add], [tensor("W", np.ones((4096, 1, 1, 1)))]),
        r"cannot run on its input.*layer 0\.body\.0 \(Convolution\).*values",
    )


def test_tensors_outside_the_file_and_oversized_tensors_are_refused(tmp_path):
    conv = helper.make_node("Conv", ["x", "W"], ["y"], kernel_shape=[3, 3])
    external = tensor("W", np.ones((2, 1, 3, 3)))
    external.ClearField("raw_data")
    external.data_location = TensorProto.EXTERNAL
    external.external_data.add(key="location", value="../../etc/passwd")
    refused(graph_file([conv], [external]), "stored outside the file")
    huge = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 10, 3, 3], raw_data=b"")
    refused(graph_file([conv], [huge]), "more than .* values")  # refused from its header, nothing allocated
    short = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[2, 1, 3, 3], raw_data=b"\x00" * 8)
    refused(graph_file([conv], [short]), "tensor 'W' is damaged")
    big = tmp_path / "big.onnx"
    with open(big, "wb") as f:
        f.truncate(deepnet_onnx.load.__globals__["MAX_FILE_BYTES"] + 1)
    with pytest.raises(deepnet_onnx.ImportRefused, match="at most"):
        deepnet_onnx.load(big)
    assert os.path.getsize(big) > 0


def test_the_commands_read_onnx_files(tmp_path, capsys):
    """evaluate (and predict, serve: the same loader) takes an ONNX file as --params."""
    from deepnet import cli

    from support import BOOK_PARAMS

    onnx_file = tmp_path / "book.onnx"
    assert cli.main(["export", str(BOOK_PARAMS), "--out", str(onnx_file)]) == 0
    capsys.readouterr()
    accuracies = []
    for params in (BOOK_PARAMS, onnx_file):
        assert cli.main(["evaluate", "--params", str(params), "--data", str(MNIST_DIR)]) == 0
        accuracies.append(capsys.readouterr().out.splitlines()[-1].split()[-1])
    assert accuracies[0] == accuracies[1] == "0.9797"  # the book's weights (data/book/README.md)
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    assert cli.main(["evaluate", "--params", str(tmp_path / "bad.onnx"), "--data", str(MNIST_DIR)]) == 1
    assert "not an ONNX model" in capsys.readouterr().err

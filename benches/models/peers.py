"""The int8, bfloat16 and ONNX Runtime peers of deepnet's DeepConvNet that compare.py and latency.py time.

Every peer starts from the book's trained DeepConvNet (data/book/deep_convnet_params.pkl) in
deepnet, copied into PyTorch (torch_deepconvnet.from_deepnet):

- PyTorch int8: FX graph mode static quantization, x86 backend (per-channel weights,
  histogram-calibrated activations);
- PyTorch bfloat16: torch.autocast on the CPU, training and inference;
- ONNX Runtime float32: the PyTorch mirror exported with torch.onnx.export (the TorchScript
  exporter, which needs no onnxscript), one inter-op thread, sequential execution;
- ONNX Runtime int8: that export quantized by onnxruntime.quantization.quantize_static, QDQ
  format, per-channel weights;
- deepnet int8: deepnet.quantize(net, x_calibration), where this deepnet has it.

The quantized peers are calibrated on CALIBRATION_SIZE images of the MNIST training set's
validation split (never the test set), and each peer must predict the same classes as
deepnet's float32 model on at least MIN_AGREEMENT of those images, so that a broken export
cannot make a fast but wrong row.  torch, onnx and onnxruntime are imported only when a peer
is built (pip install ".[bench]").
"""

import os
import tempfile
from pathlib import Path

import numpy as np

BOOK_PARAMS = Path(__file__).resolve().parents[2] / "data" / "book" / "deep_convnet_params.pkl"
VALIDATION_SIZE = 5000  # the validation split of deepnet.recipes (seed 0)
CALIBRATION_SIZE = 500  # drawn from it, stratified by label
MIN_AGREEMENT = 0.99
CALIBRATION_BATCH = 100


def deepnet_float_net(path=BOOK_PARAMS):
    """deepnet's DeepConvNet in float32 with the book's trained parameters."""
    from deepnet.nets import DeepConvNet

    net = DeepConvNet(dtype="float32", seed=0)
    net.load_params(path)
    return net


def calibration_images(size=CALIBRATION_SIZE, seed=0):
    """``size`` validation images (N, 1, 28, 28) float32 of the MNIST training set: a stratified
    draw from the held-out part of deepnet.datasets.stratified_split(labels, VALIDATION_SIZE, seed)."""
    from deepnet.datasets import load_mnist, stratified_split

    (x_train, t_train), _ = load_mnist(flatten=False, dtype=np.float32)
    _, validation = stratified_split(t_train, VALIDATION_SIZE, seed=seed)
    _, chosen = stratified_split(t_train[validation], size, seed=seed)
    return np.ascontiguousarray(x_train[validation[chosen]])


def batched(predict, x, batch=CALIBRATION_BATCH):
    """predict(x) in batches, concatenated (a NumPy array of scores)."""
    return np.concatenate([np.asarray(predict(x[i : i + batch])) for i in range(0, len(x), batch)])


def check_agreement(name, scores, reference_scores, minimum=MIN_AGREEMENT):
    """The share of images whose predicted class equals the reference's; RuntimeError below ``minimum``."""
    agreement = float(np.mean(np.argmax(scores, axis=1) == np.argmax(reference_scores, axis=1)))
    if agreement < minimum:
        raise RuntimeError(
            f"{name} predicts the class of deepnet's float32 model on {agreement:.1%} of the "
            f"{len(scores)} calibration images, expected at least {minimum:.0%}"
        )
    return agreement


def reference_scores(net, x):
    """deepnet's float32 scores of x (inference mode)."""
    return batched(lambda xb: net.predict(xb, train=False), x)


# -- PyTorch -----------------------------------------------------------------------------


def torch_mirror(net):
    """The float32 PyTorch mirror of ``net`` in eval mode."""
    import torch_deepconvnet

    return torch_deepconvnet.from_deepnet(net)


def torch_predict(model, autocast=None):
    """A function from a NumPy batch to NumPy float32 scores of ``model`` under no_grad (and CPU
    autocast to ``autocast``, a torch dtype, if given)."""
    import torch

    def predict(x):
        with torch.no_grad(), torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            return model(torch.from_numpy(x)).float().numpy()

    return predict


def torch_int8(model, x_calibration):
    """``model`` (float32, eval) statically quantized to int8 by FX graph mode for the x86 backend,
    calibrated on x_calibration."""
    import copy

    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    example = (torch.from_numpy(x_calibration[:1]),)
    # The x86 mapping: per-channel symmetric int8 weights, histogram-observed uint8 activations.
    prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"), example)
    with torch.no_grad():
        for i in range(0, len(x_calibration), CALIBRATION_BATCH):
            prepared(torch.from_numpy(x_calibration[i : i + CALIBRATION_BATCH]))
    return convert_fx(prepared)


# -- ONNX Runtime ------------------------------------------------------------------------


def export_onnx(model, path):
    """Write ``model`` (float32, eval) as ONNX with a dynamic batch axis (input "x", output "scores")."""
    import torch

    torch.onnx.export(
        model,
        (torch.zeros((1, 1, 28, 28)),),
        os.fspath(path),
        input_names=["x"],
        output_names=["scores"],
        dynamic_axes={"x": {0: "batch"}, "scores": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return path


def quantize_onnx(float_path, int8_path, x_calibration):
    """quantize_static of the float model at float_path into int8_path: QDQ, per-channel int8
    weights, int8 activations calibrated (min-max) on x_calibration.  The model goes through
    quant_pre_process (shape inference, graph optimisation) first, as ONNX Runtime advises."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared_path = Path(int8_path).with_suffix(".prepared.onnx")
    quant_pre_process(os.fspath(float_path), os.fspath(prepared_path))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(
                [
                    {"x": x_calibration[i : i + CALIBRATION_BATCH]}
                    for i in range(0, len(x_calibration), CALIBRATION_BATCH)
                ]
            )

        def get_next(self):
            return next(self.batches, None)

    quantize_static(
        os.fspath(prepared_path),
        os.fspath(int8_path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )
    return int8_path


def ort_session(path, threads):
    """An ONNX Runtime CPU session of the model at path: ``threads`` intra-op threads, one inter-op
    thread, sequential execution, all graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(os.fspath(path), sess_options=options, providers=["CPUExecutionProvider"])


def ort_predict(session):
    return lambda x: session.run(None, {"x": x})[0]


# -- the rows' models (compare.py's interface) -------------------------------------------


class InferencePeer:
    """An inference-only peer of deepnet's DeepConvNet with compare.py's model interface
    (``trains`` False: compare.py times no training step).  ``kind``: "torch-int8",
    "ort-float32", "ort-int8" or "deepnet-int8"."""

    KINDS = ("torch-int8", "ort-float32", "ort-int8", "deepnet-int8")
    trains = False

    def __init__(self, kind, threads):
        if kind not in self.KINDS:
            raise ValueError(f"InferencePeer: kind must be one of {', '.join(self.KINDS)}, got {kind!r}")
        import deepnet

        deepnet.set_num_threads(threads)
        self.kind, self._threads, self.rng = kind, threads, np.random.default_rng(0)
        net = deepnet_float_net()
        x_calibration = calibration_images()
        if kind == "deepnet-int8":
            if not hasattr(deepnet, "quantize"):
                raise RuntimeError("this deepnet has no deepnet.quantize")
            quantized = deepnet.quantize(net, x_calibration)
            self.predict = quantized.predict
        elif kind == "torch-int8":
            import torch

            torch.set_num_threads(threads)
            self.predict = torch_predict(torch_int8(torch_mirror(net), x_calibration))
        else:
            import torch

            torch.set_num_threads(threads)
            self.workdir = tempfile.TemporaryDirectory(prefix="deepnet-peers-")  # removed with this object
            path = export_onnx(torch_mirror(net), Path(self.workdir.name) / "deepconvnet.onnx")
            if kind == "ort-int8":
                path = quantize_onnx(path, Path(self.workdir.name) / "deepconvnet-int8.onnx", x_calibration)
            self.predict = ort_predict(ort_session(path, threads))
        self.agreement = check_agreement(
            kind, batched(self.predict, x_calibration), reference_scores(net, x_calibration)
        )

    def batch(self, n):
        return self.rng.random((n, 1, 28, 28), dtype=np.float32), self.rng.integers(0, 10, size=n)

    def eval_mode(self):
        pass

    def threads(self):
        return self._threads


def check_torch_mirror(model, autocast=None):
    """The agreement of a float PyTorch model holding the book's weights (under autocast, if given)
    with deepnet's float32 model on the calibration images; RuntimeError below MIN_AGREEMENT."""
    net = deepnet_float_net()
    x_calibration = calibration_images()
    name = "PyTorch" + (f" {autocast} autocast" if autocast is not None else "")
    return check_agreement(
        name, batched(torch_predict(model, autocast), x_calibration), reference_scores(net, x_calibration)
    )

"""The bench scripts run (with the least work each), so that they cannot rot unnoticed.

Their numbers are not checked here, only that they finish and print their tables; the
memory-check script also compares the kernels with the reference.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import deepnet

BENCHES = Path(__file__).resolve().parent
pytestmark = pytest.mark.skipif(not deepnet.kernels_compiled(), reason="compiled kernels not built")


def run_script(name, *args):
    # The scripts import the deepnet this test imported (installed, or an in-place build).
    deepnet_home = str(Path(deepnet.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [deepnet_home, os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [sys.executable, str(BENCHES / name), *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_memcheck_script_convolutions_equal_reference():
    assert "all equal to the reference" in run_script("analysis/memcheck.py")


def test_profile_layers_prints_the_per_layer_table():
    out = run_script("analysis/profile_layers.py", "--reps", "1")
    assert "| Convolution 16->16 3x3 pad 1 +ReLU" in out and "img/s" in out


def test_winograd_layers_prints_the_per_layer_table():
    out = run_script("analysis/winograd_layers.py", "--rounds", "1")
    assert "| 64->64 8x8 pad 1 |" in out and "| 1->16 28x28 pad 1 |" in out


def test_fusion_prints_both_inference_passes():
    out = run_script("models/fusion.py", "--rounds", "1", "--batch", "4")
    assert "| fused |" in out and "| layer by layer |" in out and "fused / layer by layer:" in out


def test_latency_prints_the_rounds():
    frameworks = "deepnet,torch" if importlib.util.find_spec("torch") else "deepnet"
    out = run_script("models/latency.py", "--rounds", "1", "--calls", "2", "--frameworks", frameworks, "--markdown")
    assert "| 1 |" in out and "| median |" in out
    assert out.startswith(
        f"Produced by `python benches/models/latency.py --rounds 1 --calls 2 --frameworks {frameworks} --markdown`"
    )
    assert ("deepnet faster than torch in" in out) == ("torch" in frameworks)


def needs_peers(*packages):
    """Skip unless the peers' packages (the [bench] extra) are installed."""
    for package in packages:
        pytest.importorskip(package, reason=f"{package} is the [bench] extra's comparison only")


def test_latency_races_the_peers():
    needs_peers("torch", "onnx", "onnxruntime")
    out = run_script(
        "models/latency.py", "--rounds", "1", "--calls", "2", "--frameworks", "deepnet,torch-int8,ort-int8"
    )
    assert "| round | deepnet | torch-int8 | ort-int8 |" in out
    assert "deepnet faster than ort-int8 in" in out


def test_latency_refuses_a_framework_it_does_not_know():
    result = subprocess.run(
        [sys.executable, str(BENCHES / "models" / "latency.py"), "--frameworks", "deepnet,tensorflow"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "unknown tensorflow" in result.stderr


def available(*packages):
    return all(importlib.util.find_spec(package) for package in packages)


@pytest.mark.parametrize("model", ["deepconvnet-bn", "resnet", "googlenet"])
def test_latency_races_the_other_models(model):
    """--model runs deepnet (BN folded), and PyTorch and ONNX Runtime float32 where installed
    (the mirror of deepnet's net, the ONNX export checked against deepnet's scores)."""
    frameworks = (
        ["deepnet"] + ["torch"] * available("torch") + ["ort-float32"] * available("torch", "onnx", "onnxruntime")
    )
    out = run_script(
        "models/latency.py", "--model", model, "--rounds", "1", "--calls", "3", "--frameworks", ",".join(frameworks)
    )
    title = {"deepconvnet-bn": "DeepConvNet-BN", "resnet": "ResNet", "googlenet": "GoogLeNet"}[model]
    assert out.startswith(f"{title} (deepnet in float32") and "| round | " + " | ".join(frameworks) + " |" in out
    assert "| median |" in out


def test_latency_times_deepnet_in_float16_and_its_plan():
    out = run_script(
        "models/latency.py",
        "--dtype",
        "float16",
        "--rounds",
        "1",
        "--calls",
        "3",
        "--frameworks",
        "deepnet,deepnet-compiled",
    )
    assert out.startswith("DeepConvNet (deepnet in float16") and "| round | deepnet | deepnet-compiled |" in out


def test_latency_refuses_a_deepconvnet_peer_for_another_model():
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHES / "models" / "latency.py"),
            "--model",
            "resnet",
            "--frameworks",
            "deepnet,ort-int8",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "ort-int8 runs DeepConvNet only" in result.stderr


def test_latency_races_deepnet_compile_where_deepnet_has_it():
    if not hasattr(deepnet, "compile"):
        result = subprocess.run(
            [sys.executable, str(BENCHES / "models" / "latency.py"), "--frameworks", "deepnet,deepnet-compiled"],
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(Path(deepnet.__file__).resolve().parent.parent)),
        )
        assert result.returncode == 2 and "deepnet-compiled (this deepnet has no deepnet.compile)" in result.stderr
        pytest.skip("this deepnet has no deepnet.compile: its framework is only refused")
    out = run_script(
        "models/latency.py",
        "--model",
        "resnet",
        "--rounds",
        "1",
        "--calls",
        "3",
        "--frameworks",
        "deepnet,deepnet-compiled",
    )
    assert "| round | deepnet | deepnet-compiled |" in out and "deepnet faster than deepnet-compiled in" in out


def test_the_compiled_rows_call_deepnet_compile_and_check_its_plan(monkeypatch):
    """The hook of latency.py's deepnet-compiled and compare.py's deepnet-compiled-float32: deepnet.compile
    gets the BN-folded net, its plan is what is timed, and a plan with other scores than net.predict fails."""
    sys.path.insert(0, str(BENCHES / "models"))
    import compare
    import latency

    compiled = []

    def fake_compile(shift):
        def compile_(net):
            compiled.append(net)
            return lambda x: net.predict(x, train=False) + shift

        return compile_

    threads = deepnet.get_num_threads()
    try:
        monkeypatch.setattr(deepnet, "compile", fake_compile(0.0), raising=False)
        assert latency.missing("deepnet-compiled", "resnet") is None
        assert latency.predictor("deepnet-compiled", 1, "resnet")().shape == (1, 10)  # every BN follows a conv
        assert not any(type(layer).__name__ == "BatchNormalization" for _, layer in compiled[-1].named_layers())
        model = compare.make_model(compare.ROWS_BY_KEY["deepnet-compiled-float32"], 1)
        model.eval_mode()
        x, _ = model.batch(3)
        assert not model.trains and model.predict(x).shape == (3, 10) and len(compiled) == 2
        monkeypatch.setattr(deepnet, "compile", fake_compile(1e-3))
        with pytest.raises(RuntimeError, match="deepnet.compile's plan gives other scores than net.predict"):
            latency.predictor("deepnet-compiled", 1, "resnet")
        monkeypatch.delattr(deepnet, "compile")
        assert latency.missing("deepnet-compiled") == "this deepnet has no deepnet.compile"
        assert "deepnet-compiled-float32" not in compare.default_rows()
        assert compare.run_child("row", compare.ROWS_BY_KEY["deepnet-compiled-float32"], 1, 1, 0) == {
            "error": "this deepnet has no deepnet.compile"
        }
    finally:
        deepnet.set_num_threads(threads)


def test_compare_runs_the_deepnet_compiled_row_where_deepnet_has_it():
    if not hasattr(deepnet, "compile"):
        pytest.skip("this deepnet has no deepnet.compile: its row is only refused")
    out = run_script(
        "models/compare.py",
        "--rows",
        "deepnet-compiled-float32",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--repeat",
        "1",
        "--fma-peak",
        "100",
    )
    row = next(line for line in out.splitlines() if line.startswith("| deepnet float32, deepnet.compile"))
    assert re.match(r"\| [^|]+\| +n/a \| +\d+ \| +[\d.]+ \|", row), row


def test_compare_runs_the_bfloat16_row():
    sys.path.insert(0, str(BENCHES / "models"))
    import compare

    row = compare.ROWS_BY_KEY["deepnet-bfloat16"]
    assert compare.torch_row_for(row) == "torch-bfloat16"
    if not available("ml_dtypes"):
        assert compare.missing(row).startswith("ml_dtypes not installed")
        assert "deepnet-bfloat16" not in compare.default_rows()
        pytest.skip("ml_dtypes is not installed: the bfloat16 row is only refused")
    assert "deepnet-bfloat16" in compare.default_rows()
    out = run_script("models/compare.py", "--rows", "deepnet-bfloat16", "--quick", "--steps", "1", "--fma-peak", "100")
    line = next(line for line in out.splitlines() if line.startswith("| deepnet bfloat16"))
    assert re.match(r"\| deepnet bfloat16 +\| +\d+ \| +\d+ \| +[\d.]+ \|", line), line


def assert_markdown_table(text, header, rows):
    """text is a GitHub markdown table: the header, the separator, then one line per row (first cells)."""
    lines = text.splitlines()
    assert len(lines) == 2 + len(rows), text
    cells = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    assert cells[0] == header
    assert all(re.fullmatch(r":?-+:?", cell) for cell in cells[1]) and len(cells[1]) == len(header)
    assert [line[0] for line in cells[2:]] == rows and all(len(line) == len(header) for line in cells[2:])


def test_the_markdown_tables_have_a_row_per_result():
    """--markdown's tables (compare.py's main table, latency.py's rounds) on fake results."""
    sys.path.insert(0, str(BENCHES / "models"))
    import compare
    import latency

    rows = [compare.ROWS_BY_KEY[key] for key in ("deepnet-float32", "torch-float32", "ort-int8")]
    results = {
        "deepnet-float32": dict(
            train_ips=800.0, infer_ips=2400.0, latency_ms=0.3, rss_before_mb=60.0, rss_peak_mb=130.0
        ),
        "torch-float32": {"error": "failed"},
        # An inference-only row: the medians of its rounds, training n/a.
        "ort-int8": compare.combine_rounds(
            [
                dict(train_ips=None, infer_ips=ips, latency_ms=0.2, rss_before_mb=90.0, rss_peak_mb=90.0)
                for ips in (3000.0, 1000.0, 5000.0)
            ]
        ),
    }
    table = compare.main_table(results, rows)
    header = [
        "configuration",
        "train img/s",
        "infer img/s",
        "latency b=1 ms",
        "RSS before MB",
        "peak RSS train MB (+delta)",
        "train vs torch",
        "infer vs torch",
        "train vs ref",
        "infer vs ref",
        "train % of FMA peak",
        "infer % of FMA peak",
    ]
    assert_markdown_table(table, header, [row.label for row in rows])
    assert "| 800 | 2400 | 0.30 | 60 | 130 (+70) |" in re.sub(" +", " ", table)
    assert "| ONNX Runtime int8 (QDQ static) | n/a | 3000 | 0.20 | 90 | 90 (+0) | n/a | n/a |" in re.sub(
        " +", " ", table
    )
    assert (
        compare.command_line(str(BENCHES / "models" / "compare.py"), ["--markdown", "--rows", "a b"])
        == "python benches/models/compare.py --markdown --rows 'a b'"
    )

    table = latency.rounds_table({"deepnet": [0.3, 0.5, 0.4], "torch": [0.6, 0.2, 0.7]})
    assert_markdown_table(table, ["round", "deepnet", "torch"], ["1", "2", "3", "median"])
    assert table.splitlines()[-1] == "| median | 0.400 | 0.600 |"


def test_compare_prints_the_whole_network_table():
    out = run_script("models/compare.py", "--rows", "deepnet-float32", "--steps", "1", "--warmup", "0", "--repeat", "1")
    assert "| deepnet float32" in out and "train % of FMA peak" in out
    if shutil.which("cc"):  # the peak measured by benches/analysis/gemm_peak.c, and a percentage from it
        assert "GFLOP/s on" in out and "(benches/analysis/gemm_peak.c)" in out
        row = next(line for line in out.splitlines() if line.startswith("| deepnet float32"))
        assert row.rstrip(" |").endswith("%")


def test_compare_runs_the_bn_and_resnet_rows():
    out = run_script(
        "models/compare.py",
        "--rows",
        "deepnet-bn-float32,deepnet-resnet-float32",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--repeat",
        "1",
        "--fma-peak",
        "100",
    )
    assert "| deepnet DeepConvNet-BN float32" in out and "| deepnet ResNet float32" in out
    assert "failed" not in out


def test_compare_runs_the_rows_of_each_malloc_policy(monkeypatch):
    sys.path.insert(0, str(BENCHES / "models"))
    import compare
    from deepnet import _memory

    monkeypatch.setenv("MALLOC_TOP_PAD_", "1")  # a user's own setting is not passed to the rows
    kept = compare.child_environment(compare.ROWS_BY_KEY["torch-kept-float32"])
    assert kept["MALLOC_TRIM_THRESHOLD_"] == str(_memory.TRIM_THRESHOLD) and "MALLOC_TOP_PAD_" not in kept
    assert compare.child_environment(compare.ROWS_BY_KEY["trimmed-float32"])["DEEPNET_KEEP_FREED_MEMORY"] == "0"
    default = compare.child_environment(compare.ROWS_BY_KEY["torch-float32"])
    assert not any(name.startswith("MALLOC_") for name in default)
    assert compare.torch_row_for(compare.ROWS_BY_KEY["trimmed-float32"]) == "torch-float32"
    out = run_script(
        "models/compare.py",
        "--rows",
        "trimmed-float32",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--repeat",
        "1",
        "--fma-peak",
        "100",
    )
    assert "| deepnet float32, malloc's defaults" in out and "failed" not in out


def test_compare_runs_the_peer_rows():
    """Each peer row builds its model, agrees with deepnet's float32 classes (else its row fails)
    and prints its numbers; the int8 and ONNX Runtime rows train n/a."""
    needs_peers("torch", "onnx", "onnxruntime")
    out = run_script(
        "models/compare.py",
        "--rows",
        "torch-bfloat16,torch-int8,ort-float32,ort-int8",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--repeat",
        "1",
        "--fma-peak",
        "100",
    )
    assert "failed" not in out and "not installed" not in out, out
    lines = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert re.match(r"\| PyTorch bfloat16 autocast +\| +\d+ \|", lines["PyTorch bfloat16 autocast"])
    for label in ("PyTorch int8 (FX static, x86)", "ONNX Runtime float32", "ONNX Runtime int8 (QDQ static)"):
        assert re.match(r"\| [^|]+\| +n/a \| +\d+ \|", lines[label]), lines[label]


def test_the_deepnet_int8_row_waits_for_deepnet_quantize():
    sys.path.insert(0, str(BENCHES / "models"))
    import compare

    row = compare.ROWS_BY_KEY["deepnet-int8"]
    assert ("deepnet-int8" in compare.default_rows()) == hasattr(deepnet, "quantize")
    if not hasattr(deepnet, "quantize"):
        assert compare.run_child("row", row, 1, 1, 0) == {"error": "this deepnet has no deepnet.quantize"}
        pytest.skip("this deepnet has no deepnet.quantize: its row is only refused")
    out = run_script("models/compare.py", "--rows", "deepnet-int8", "--steps", "1", "--warmup", "0", "--repeat", "1")
    assert "| deepnet int8 (deepnet.quantize)" in out and "failed" not in out


def test_the_deepnet_int8_peer_calls_deepnet_quantize(monkeypatch):
    """The hook of the deepnet int8 row: deepnet.quantize(net, x_calibration) gets the book's float32
    net and the calibration images, its model's predict is timed, and a model that predicts other
    classes than the float net fails the row."""
    sys.path.insert(0, str(BENCHES / "models"))
    import peers

    calls = []

    class Quantized:
        def __init__(self, net, shift):
            self.net, self.shift = net, shift

        def predict(self, x):
            return np.roll(self.net.predict(x, train=False), self.shift, axis=1)

    def fake_quantize(shift):
        def quantize(net, x_calibration):
            calls.append((net.params["W1"].dtype, x_calibration.shape))
            return Quantized(net, shift)

        return quantize

    threads = deepnet.get_num_threads()
    try:
        monkeypatch.setattr(deepnet, "quantize", fake_quantize(0), raising=False)
        peer = peers.InferencePeer("deepnet-int8", 1)
        x, _ = peer.batch(3)
        assert peer.agreement == 1.0 and peer.predict(x).shape == (3, 10) and not peer.trains
        assert calls == [(np.dtype(np.float32), (peers.CALIBRATION_SIZE, 1, 28, 28))]
        monkeypatch.setattr(deepnet, "quantize", fake_quantize(1))
        with pytest.raises(RuntimeError, match="deepnet-int8 predicts the class"):
            peers.InferencePeer("deepnet-int8", 1)
    finally:
        deepnet.set_num_threads(threads)


def test_the_bench_scripts_import_no_peer_framework():
    """compare.py, latency.py and peers.py import PyTorch and ONNX Runtime only in a row that needs them,
    so the test run without the [bench] extra can import them."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import compare, latency, peers; compare.default_rows(); "
        "loaded = sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules); "
        "assert not loaded, loaded"
    )
    deepnet_home = str(Path(deepnet.__file__).resolve().parent.parent)
    result = subprocess.run(
        [sys.executable, "-c", code, str(BENCHES / "models")],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=deepnet_home),
    )
    assert result.returncode == 0, result.stderr


def test_peer_agreement_refuses_a_peer_that_predicts_other_classes():
    sys.path.insert(0, str(BENCHES / "models"))
    import peers

    reference = np.eye(10)[np.arange(200) % 10]
    assert peers.check_agreement("same", 2 * reference + 1, reference) == 1.0
    wrong = reference.copy()
    wrong[:3] = np.roll(wrong[:3], 1, axis=1)  # 3 of 200 classes differ: 98.5%
    with pytest.raises(RuntimeError, match=r"wrong predicts the class of deepnet's float32 model on 98.5%"):
        peers.check_agreement("wrong", wrong, reference)


def test_the_calibration_images_are_validation_images_of_the_training_set():
    sys.path.insert(0, str(BENCHES / "models"))
    import peers
    from deepnet.datasets import load_mnist, stratified_split

    x = peers.calibration_images(size=50)
    (x_train, t_train), _ = load_mnist(flatten=False, dtype=np.float32)
    _, validation = stratified_split(t_train, peers.VALIDATION_SIZE, seed=0)
    label_of = {image.tobytes(): label for image, label in zip(x_train[validation], t_train[validation])}
    assert x.shape == (50, 1, 28, 28) and x.dtype == np.float32
    labels = [label_of[image.tobytes()] for image in x]  # a KeyError: not a validation image
    share = np.bincount(t_train[validation], minlength=10) / len(validation)
    assert np.all(np.abs(np.bincount(labels, minlength=10) - 50 * share) < 1)  # stratified


def test_the_torch_mirror_of_the_book_net_predicts_deepnets_scores():
    torch = pytest.importorskip("torch", reason="PyTorch is the [bench] extra's comparison only")
    sys.path.insert(0, str(BENCHES / "models"))
    import torch_deepconvnet

    from deepnet.nets import DeepConvNet

    net = DeepConvNet(dtype="float64", seed=0)
    net.load_params(BENCHES.parent / "data" / "book" / "deep_convnet_params.pkl")
    x = np.random.default_rng(0).random((8, 1, 28, 28))
    with deepnet.backend("numpy"):
        expected = net.predict(x, train=False)
    with torch.no_grad():
        got = torch_deepconvnet.from_deepnet(net)(torch.from_numpy(x.astype(np.float32))).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(
        ValueError, match=r"expected deepnet's deepconvnet \(8 convolution/affine layers, 0 BN\), got 8 and 7"
    ):
        torch_deepconvnet.from_deepnet(DeepConvNet(dtype="float32", seed=0, batch_norm=True))
    with pytest.raises(ValueError, match="model must be one of"):
        torch_deepconvnet.from_deepnet(net, "vgg")


@pytest.mark.parametrize("model", ["deepconvnet-bn", "resnet", "googlenet"])
def test_the_torch_mirrors_of_the_bn_models_predict_deepnets_scores(model):
    """from_deepnet carries weights and BN statistics (made far from their initial 0 and 1, so that
    a missed or misplaced one shows) into the mirror: its scores are deepnet's NumPy reference's."""
    torch = pytest.importorskip("torch", reason="PyTorch is the [bench] extra's comparison only")
    sys.path.insert(0, str(BENCHES / "models"))
    import torch_deepconvnet
    from deepnet.recipes import MODEL_NAMES

    net = MODEL_NAMES[model]("float64", 0)
    rng = np.random.default_rng(1)
    for name, value in net.named_arrays().items():
        leaf = name.rsplit(".", 1)[-1].rsplit("/", 1)[-1].rstrip("0123456789")
        if leaf in ("gamma", "running_var"):
            value[...] = rng.uniform(0.5, 1.5, value.shape)
        elif leaf in ("b", "beta", "running_mean"):
            value[...] = rng.normal(0, 0.1, value.shape)
    x = rng.random((4, 1, 28, 28))
    with deepnet.backend("numpy"):
        expected = net.predict(x, train=False)
    with torch.no_grad():
        got = torch_deepconvnet.from_deepnet(net, model)(torch.from_numpy(x.astype(np.float32))).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_the_torch_mirrors_have_deepnets_parameter_counts():
    torch = pytest.importorskip("torch", reason="PyTorch is the [bench] extra's comparison only")
    sys.path.insert(0, str(BENCHES / "models"))
    import torch_deepconvnet
    from deepnet.recipes import MODEL_NAMES

    for name, build in torch_deepconvnet.MODELS.items():
        model = build(dtype=torch.float32, seed=0)
        torch_count = sum(p.numel() for p in model.parameters())
        assert torch_count == sum(a.size for a in MODEL_NAMES[name]("float32", 0).params.values()), name


def test_transfer_prints_the_three_ways_to_learn_five_to_nine():
    out = run_script(
        "models/transfer.py",
        "--pretrain-epochs",
        "1",
        "--finetune-epochs",
        "1",
        "--labelled",
        "50",
        "--pretrain-size",
        "200",
    )
    assert "| scratch |" in out and "| fine-tune |" in out and "| frozen |" in out


def test_depth_prints_its_tables():
    out = run_script("models/depth.py", "--epochs", "1", "--train-size", "100")
    assert "| book | 123,552 | 8.77 M | 36 px |" in out and "| 16 | 4,608 | 6,400 | 0.72 |" in out


def test_mpi_throughput_and_the_scaling_model_print_their_tables(tmp_path):
    pytest.importorskip("mpi4py")
    measured = tmp_path / "mpi.json"
    out = run_script(
        "models/mpi_throughput.py", "--rounds", "1", "--steps", "1", "--warmup", "0", "--json", str(measured)
    )
    assert "| 1 x 2 |" in out and "| 2 x 1 |" in out
    out = run_script("analysis/scaling_model.py", "--measured", str(measured))
    assert "| 1024 |" in out and "Check on this machine" in out


def test_winograd_error_prints_the_ratio_table():
    out = run_script("analysis/winograd_error.py")
    assert "| deepnet F(2x2) (always) |" in out and "| F(4x4) 0,1,-1,2,-2,inf (Lavin) |" in out


def test_bf16_winograd_transforms_compute_the_convolution():
    """The bfloat16 Winograd emulation is F(2x2, 3x3): on small integers, whose transforms
    bfloat16 holds exactly, it gives the exact convolution, odd output sizes included."""
    pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes (the bf16 extra)")
    from deepnet import reference as R
    from deepnet._dtypes import require_bfloat16

    bench = load_bench("bf16_winograd")
    rng = np.random.default_rng(3)
    for pad, size in ((1, 7), (0, 8), (2, 5)):
        x = rng.integers(-3, 4, (2, 3, size, size)).astype(np.float64)
        W = rng.integers(-2, 3, (4, 3, 3, 3)).astype(np.float64)
        exact = R.conv_forward(x, W, np.zeros(4), (1, 1), (pad, pad))
        np.testing.assert_array_equal(bench.exact_convolution(x, W, pad), exact)
        got = bench.winograd_bf16(x.astype(require_bfloat16()), W.astype(require_bfloat16()), pad)
        np.testing.assert_array_equal(got.astype(np.float64), exact)


def test_bf16_winograd_prints_both_tables():
    pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes (the bf16 extra)")
    out = run_script("analysis/bf16_winograd.py", "--repeat", "1")
    assert out.count("| 16->16 28x28 pad 1 |") == 2 and "Winograd error" in out and "16 GEMMs" in out


def load_bench(name):
    spec = importlib.util.spec_from_file_location(name, BENCHES / "analysis" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("pad", [0, 1, 2])
def test_winograd_error_transforms_compute_the_convolution(pad):
    """The Cook-Toom transforms behind the error table are right: in float64 every point
    set's F(m x m, 3x3) gives the reference convolution, also where the last tile sticks
    out of the image (7x9 output with m = 2 and 4)."""
    from deepnet import reference as R

    bench = load_bench("winograd_error")
    rng = np.random.default_rng(pad)
    x = rng.standard_normal((2, 3, 7 + 2 - 2 * pad, 9 + 2 - 2 * pad))
    W, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    exact = R.conv_forward(x, W, b, (1, 1), (pad, pad))
    for name, points in bench.POINT_SETS.items():
        AT, G, BT = bench.cook_toom(points)
        assert AT.shape == (len(points) - 2, len(points)), name
        got = bench.winograd_conv(x, W, b, pad, AT, G, BT, dtype=np.float64)
        np.testing.assert_allclose(got, exact, rtol=0, atol=1e-11, err_msg=name)


def test_cook_toom_refuses_points_that_repeat():
    bench = load_bench("winograd_error")
    with pytest.raises(ValueError, match="cook_toom"):
        bench.cook_toom((0, 1, 1, bench.INFINITY))


def test_winograd_error_emulation_has_the_kernels_error():
    """The float32 emulation is faithful: its F(2x2) has the error of deepnet's own F(2x2)
    kernel (Winograd "always") against the exact result, to within 3%, and it computes in
    float32 (in float64 the error would be ~1e-16, not ~1e-7)."""
    from deepnet import functional as F

    bench = load_bench("winograd_error")
    rng = np.random.default_rng(1)
    AT, G, BT = bench.cook_toom(bench.POINT_SETS["F(2x2) 0,1,-1,inf"])
    for x_shape, filters, pad in bench.GEOMETRIES[:3]:
        x, W, b, exact = bench.layer_and_exact(rng, x_shape, filters, pad)
        emulated = bench.winograd_conv(x, W, b, pad, AT, G, BT)
        with deepnet.backend("cython"), deepnet.winograd("always"):
            kernel = F.conv2d(x, W, b, 1, pad)
        assert emulated.dtype == np.float32
        emulated_error = bench.error_against_exact(emulated, exact)
        kernel_error = bench.error_against_exact(kernel, exact)
        assert 1e-8 < kernel_error < 1e-6
        assert abs(emulated_error / kernel_error - 1) < 0.03, (x_shape, emulated_error, kernel_error)


def _import_graph_module():
    spec = importlib.util.spec_from_file_location("import_graph", BENCHES / "analysis" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_import_graph_finds_the_cycles_of_a_known_graph():
    graph = _import_graph_module()
    known = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": {"e"}, "g": set()}
    assert sorted(graph.cycles(known)) == [["a", "b", "c"], ["e", "f"]]
    assert graph.cycles({"a": {"b"}, "b": set()}) == []


def test_import_graph_reads_relative_and_lazy_imports(tmp_path):
    package = tmp_path / "deepnet"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text('"""Top."""\nfrom .sub import leaf\n')
    (package / "sub" / "__init__.py").write_text('"""Sub."""\n')
    (package / "sub" / "leaf.py").write_text('"""Leaf."""\ndef f():\n    from .. import other\n')
    (package / "other.py").write_text('"""Other."""\nimport deepnet.sub.leaf\n')
    sizes, edges = _import_graph_module().read_tree(tmp_path)
    assert sizes["deepnet.sub.leaf"] == 3
    assert edges["deepnet"] == {"deepnet.sub.leaf"}
    assert edges["deepnet.sub.leaf"] == {"deepnet.other"}
    assert edges["deepnet.other"] == {"deepnet.sub.leaf"}


def test_import_graph_prints_this_checkouts_structure():
    out = run_script("analysis/import_graph.py")
    assert "module cycles: 0" in out


def test_kernel_table_pairs_each_groups_compiled_and_reference_medians(tmp_path):
    report = {
        "machine_info": {"cpu": {"brand_raw": "Test CPU", "count": 2}},
        "commit_info": {"id": "abcdef123456", "dirty": False},
        "datetime": "2026-12-06T10:00:00",
        "benchmarks": [
            {
                "group": "conv_forward[conv2 float32]",
                "extra_info": {"backend": "cython", "threads": 2},
                "stats": {"median": 0.002},
            },
            {
                "group": "conv_forward[conv2 float32]",
                "extra_info": {"backend": "numpy", "threads": 2},
                "stats": {"median": 0.050},
            },
            {
                "group": "relu_forward[conv2 float32]",
                "extra_info": {"backend": "numpy", "threads": 2},
                "stats": {"median": 0.001},
            },
        ],
    }
    path = tmp_path / "k.json"
    path.write_text(json.dumps(report))
    out = run_script("micro/table.py", str(path))
    assert "| conv_forward[conv2 float32] | 2.000 ms | 50.000 ms | 25.0x |" in out
    assert "relu_forward" not in out  # no compiled entry: no row
    assert "Test CPU" in out and "abcdef1" in out


def test_kernel_table_from_a_real_benchmark_run(tmp_path):
    path = tmp_path / "k.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(BENCHES / "micro" / "test_bench_kernels.py"),
            "-k",
            "test_relu_forward and conv6-float32",
            "--benchmark-only",
            "--benchmark-min-rounds=1",
            "--benchmark-max-time=0.01",
            "--benchmark-warmup=off",
            f"--benchmark-json={path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(Path(deepnet.__file__).resolve().parent.parent)),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(path.read_text())
    medians = {b["extra_info"]["backend"]: b["stats"]["median"] for b in report["benchmarks"]}
    out = run_script("micro/table.py", str(path))
    assert f"{medians['numpy'] / medians['cython']:.1f}x |" in out
    assert "| relu_forward[conv6 float32] |" in out


def test_builds_alternates_the_builds_and_prints_one_row_each():
    tree = str(Path(deepnet.__file__).resolve().parent.parent)
    out = run_script(
        "models/builds.py", f"a={tree}", f"b={tree}:DEEPNET_WINOGRAD=never", "--rounds", "1", "--steps", "1"
    )
    rows = [line for line in out.splitlines() if line.startswith("| a |") or line.startswith("| b |")]
    assert len(rows) == 2, out
    assert rows[0].endswith("| 1.00x / 1.00x |")


def test_builds_prints_n_a_for_an_inference_only_row():
    """The int8 row has no training numbers: n/a there, the inference ratio still given."""
    tree = str(Path(deepnet.__file__).resolve().parent.parent)
    out = run_script(
        "models/builds.py", f"a={tree}", f"b={tree}", "--row", "deepnet-int8", "--rounds", "1", "--steps", "1"
    )
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith(("| a |", "| b |"))]
    assert len(rows) == 2, out
    for row in rows:
        train, infer, latency, ratio = (cell.strip() for cell in row[2:])
        assert train == "n/a" and float(infer) > 0 and float(latency) > 0, out
        assert ratio.startswith("n/a / ") and ratio.endswith("x"), out
    assert rows[0][-1].strip() == "n/a / 1.00x"


def test_builds_refuses_a_build_that_is_neither_a_tree_nor_a_python(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCHES / "models" / "builds.py"), f"x={tmp_path / 'missing'}"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "neither a source tree nor a Python executable" in result.stderr

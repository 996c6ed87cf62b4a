"""Model files and specs written to hurt (issue 32, "Hardening round 3").

Nothing deepnet reads may crash the process, allocate without bound, hang or run code:
every setting of a named model is checked before any arithmetic uses it, a model file's
arrays are checked against its spec before anything is allocated, the layers, the spec's
bytes and the work for one image are bounded, and every error is one clear line.
"""

import json
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

from deepnet import io
from deepnet import layers as L
from deepnet.nets import (
    SPEC_KEY,
    DeepConvNet,
    ResNet,
    Sequential,
    SimpleConvNet,
    VGG,
    build,
    he_normal,
    load_model,
    load_spec_file,
)

MB = 1 << 20
MAX_LAYERS = 10_000  # deepnet.nets.MAX_LAYERS
MAX_SPEC_BYTES = 1 << 20  # deepnet.nets.MAX_SPEC_BYTES


def test_the_limits_are_the_documented_ones():
    from deepnet import nets

    assert (nets.MAX_LAYERS, nets.MAX_SPEC_BYTES, nets.MAX_ACTIVATION, nets.MAX_WORK) == (
        MAX_LAYERS,
        MAX_SPEC_BYTES,
        1 << 23,
        10**10,
    )


def peak_bytes(function, *args, **kwargs):
    """(result or the exception raised, peak bytes traced while ``function`` ran)."""
    tracemalloc.start()
    try:
        try:
            result = function(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the caller looks at it
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def model_file(path, spec, arrays=None):
    """A model file holding ``spec`` (data or JSON text) and ``arrays``."""
    text = spec if isinstance(spec, (str, bytes)) else json.dumps(spec)
    data = text.encode() if isinstance(text, str) else text
    return io.save_params(path, {SPEC_KEY: np.frombuffer(data, np.uint8), **(arrays or {})})


def one_line(exc, *fragments, longest=400):
    message = str(exc)
    assert "\n" not in message and len(message) <= longest, message[:1000]
    for fragment in fragments:
        assert fragment in message, message
    return message


def conv(c_in, c_out, kernel=3, stride=1, pad=1):
    return {
        "type": "Convolution",
        "in_channels": c_in,
        "filters": c_out,
        "kernel": kernel,
        "stride": stride,
        "pad": pad,
    }


# -- row 1: every setting of a named model is checked before arithmetic or allocation -------

BAD_SETTINGS = [
    ("VGG", {"input_dim": ["x", 28, 28]}, "'input_dim[0]' must be an int"),
    ("DeepConvNet", {"input_dim": ["x", 28, 28]}, "'input_dim[0]' must be an int"),
    ("SimpleConvNet", {"input_dim": ["x", 28, 28]}, "'input_dim[0]' must be an int"),
    ("ResNet", {"input_dim": ["x", 28, 28]}, "'input_dim[0]' must be an int"),
    ("DeepConvNet", {"input_dim": [[1], 28, 28]}, "'input_dim[0]' must be an int"),
    ("VGG", {"input_dim": [1, 28]}, "'input_dim' must be 3 ints"),
    ("VGG", {"input_dim": [1, 28, 10**9]}, "'input_dim[2]' must be an int from 1 to 65536"),
    ("VGG", {"config": [[16], "M"]}, "'config[0]' must be an int"),
    ("VGG", {"config": [16, "N"]}, "'config[1]' must be an int from 1 to 65536, got 'N' (or 'M'"),
    ("VGG", {"config": [10**5000]}, "got an int of 16610 bits"),
    ("VGG", {"hidden": [50, "x"]}, "'hidden[1]' must be an int"),
    ("VGG", {"dropout": 1.5}, "'dropout' must be a number in [0, 1)"),
    ("VGG", {"dropout": float("nan")}, "'dropout' must be a number in [0, 1)"),
    ("VGG", {"batch_norm": "yes"}, "'batch_norm' must be true or false"),
    ("DeepConvNet", {"hidden_size": [50]}, "'hidden_size' must be an int"),
    ("DeepConvNet", {"output_size": True}, "'output_size' must be an int"),
    ("DeepConvNet", {"hidden_size": 10**30}, "'hidden_size' must be an int from 1 to 65536"),
    (
        "DeepConvNet",
        {"conv_param_1": {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 0}},
        "'conv_param_1.stride' must be an int from 1",
    ),
    (
        "DeepConvNet",
        {"conv_param_2": {"filter_num": [16], "filter_size": 3, "pad": 1, "stride": 1}},
        "'conv_param_2.filter_num' must be an int",
    ),
    (
        "DeepConvNet",
        {"conv_param_3": {"filter_num": 16, "filter_size": 3, "pad": 1}},
        "'conv_param_3' must be an object with exactly the entries",
    ),
    (
        "DeepConvNet",
        {"conv_param_3": {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1, "x": 1}},
        "'conv_param_3' must be an object with exactly the entries",
    ),
    (
        "DeepConvNet",
        {"conv_param_1": {"filter_num": 16, "filter_size": 99, "pad": 0, "stride": 1}},
        "conv_param_1 leaves no output",
    ),
    ("DeepConvNet", {"batch_norm": 1}, "'batch_norm' must be true or false"),
    (
        "SimpleConvNet",
        {"conv_param": {"filter_num": 30, "filter_size": 5, "pad": -1, "stride": 1}},
        "'conv_param.pad' must be an int from 0",
    ),
    ("SimpleConvNet", {"weight_init_std": float("inf")}, "'weight_init_std' must be a number"),
    ("SimpleConvNet", {"weight_init_std": "0.01"}, "'weight_init_std' must be a number"),
    ("ResNet", {"widths": ["a"], "blocks": [1]}, "'widths[0]' must be an int"),
    ("ResNet", {"widths": [16], "blocks": [[2]]}, "'blocks[0]' must be an int"),
    ("ResNet", {"widths": [], "blocks": []}, "'widths' must be a non-empty list"),
    ("ResNet", {"widths": [16, 32], "blocks": [1]}, "equally long"),
]


@pytest.mark.parametrize(
    "kind, config, message", BAD_SETTINGS, ids=[f"{kind}-{message[:30]}" for kind, _, message in BAD_SETTINGS]
)
def test_every_named_model_setting_is_checked_before_any_arithmetic(kind, config, message):
    """["x", 28, 28] as input_dim made the parameter budget repeat a string (1.2-2.9 GB from
    a 90-byte spec); a list as a channel count gave MemoryError, stride 0 ZeroDivisionError."""
    error, peak = peak_bytes(build, {"type": kind, "config": config})
    assert isinstance(error, ValueError), repr(error)[:300]
    one_line(error, f"bad {kind} config", message)
    assert peak < 4 * MB


@pytest.mark.parametrize(
    "make",
    [
        lambda: DeepConvNet(input_dim=("x", 28, 28)),
        lambda: SimpleConvNet(conv_param={"filter_num": 3, "filter_size": 3, "pad": 0, "stride": 0}),
        lambda: VGG(input_dim=(1, 28, [28])),
        lambda: ResNet(widths=(8,), blocks=(10**7,)),
    ],
)
def test_constructing_a_named_model_directly_checks_the_settings_too(make):
    error, peak = peak_bytes(make)
    assert isinstance(error, ValueError), repr(error)[:300]
    assert peak < 4 * MB


# -- row 2: loading counts every array before allocating, and draws nothing ----------------


def test_a_model_file_whose_spec_asks_for_more_than_it_holds_allocates_nothing(tmp_path):
    """A 361-byte file whose spec holds one 16384x16384 Affine reached 4.1 GB: the weights
    were drawn in float64 before the file's arrays were even looked at (16384x16000 here:
    within the parameter budget, so it is the file's missing arrays that refuse it)."""
    path = model_file(
        tmp_path / "huge.npz",
        {"type": "Sequential", "layers": [{"type": "Affine", "in_features": 16384, "out_features": 16000}]},
    )
    error, peak = peak_bytes(load_model, path)
    assert isinstance(error, ValueError), repr(error)[:300]
    one_line(error, "huge.npz", "'0.W' is missing")
    assert peak < 4 * MB


def test_loading_peaks_at_a_small_multiple_of_the_files_arrays(tmp_path):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((1000, 1000))  # float64: 8 MB, the file's only large array
    net = Sequential(L.Affine(W, np.zeros(1000)))
    path = net.save(tmp_path / "model.npz")
    loaded, peak = peak_bytes(load_model, path)
    assert isinstance(loaded, Sequential), repr(loaded)[:300]
    assert loaded.dtype == np.float64
    np.testing.assert_array_equal(loaded.params["0.W"], W)
    assert peak < 2.5 * W.nbytes + MB, peak / W.nbytes


def test_he_normal_draws_the_same_weights_in_the_target_dtype_without_a_float64_copy():
    shape = (4, 1 << 20)  # 16 MB of float32
    expected = (np.sqrt(2.0 / 4) * np.random.default_rng(1).standard_normal(shape)).astype(np.float32)
    weights, peak = peak_bytes(he_normal, shape, np.random.default_rng(1), np.float32)
    np.testing.assert_array_equal(weights, expected)
    assert peak < 1.25 * weights.nbytes + 2 * MB, peak / weights.nbytes


# -- row 3: layers and the spec's size are bounded --------------------------------------------


def test_a_spec_with_more_than_max_layers_is_refused_quickly():
    spec = {"type": "Sequential", "layers": [{"type": "Relu"}] * (MAX_LAYERS + 1)}
    start = time.perf_counter()
    with pytest.raises(ValueError) as error:
        build(spec)
    one_line(error.value, f"more than {MAX_LAYERS} layers")
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("blocks", [[2000], [10**7], [5, 10**9]])
def test_a_resnet_with_too_many_blocks_is_refused_at_once(blocks):
    """blocks [10**7] in a 70-byte spec would have taken hours; run in a child, so a hang
    shows as a timeout."""
    code = (
        "import json, sys; from deepnet.nets import build\n"
        "try:\n    build(json.loads(sys.argv[1]))\nexcept ValueError as e:\n    print(e)\n"
    )
    spec = {"type": "ResNet", "config": {"widths": [8] * len(blocks), "blocks": blocks}}
    child = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr[-500:]
    assert "bad ResNet config" in child.stdout and ("blocks" in child.stdout or "layers" in child.stdout), child.stdout[
        -500:
    ]


def test_a_model_files_spec_larger_than_1_mib_is_refused_before_decoding(tmp_path, monkeypatch):
    text = '{"type": "Sequential", "layers": [{"type": "Flatten"}]}' + " " * MAX_SPEC_BYTES
    path = model_file(tmp_path / "padded.npz", text)

    def no_decoding(*args, **kwargs):
        raise AssertionError("the oversized spec was decoded")

    monkeypatch.setattr(json, "loads", no_decoding)
    with pytest.raises(ValueError) as error:
        load_model(path)
    one_line(error.value, "padded.npz", SPEC_KEY, f"more than the {MAX_SPEC_BYTES} bytes")


def test_a_compressed_spec_of_millions_of_layers_is_refused_from_its_header(tmp_path):
    """4 M Relu entries deflate to 175 kB and took 2.9 GB and 67 s to load."""
    import zipfile

    text = ('{"type": "Sequential", "layers": [' + '{"type": "Relu"}, ' * 4_000_000 + '{"type": "Flatten"}]}').encode()
    path = tmp_path / "relus.npz"
    header = np.lib.format.header_data_from_array_1_0(np.frombuffer(text, np.uint8))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open(SPEC_KEY + ".npy", "w") as member:
            np.lib.format.write_array_header_1_0(member, header)
            member.write(text)
    del text
    assert path.stat().st_size < 1 * MB
    start = time.perf_counter()
    error, peak = peak_bytes(load_model, path)
    assert isinstance(error, ValueError), repr(error)[:300]
    one_line(error, "relus.npz", "more than the")
    assert peak < 4 * MB and time.perf_counter() - start < 5


# -- row 4: the work for one image is bounded, checked at load without running anything ----


def test_a_huge_padding_is_refused_at_load_naming_the_layer(tmp_path):
    """A 1x1 convolution with pad 5770 allocated 8 GiB to predict one image."""
    rng = np.random.default_rng(0)
    spec = {
        "type": "Sequential",
        "layers": [
            conv(1, 1, kernel=1, pad=5770),
            {"type": "GlobalAveragePooling"},
            {"type": "Affine", "in_features": 1, "out_features": 10},
        ],
    }
    arrays = {
        "0.W": rng.random((1, 1, 1, 1), np.float32),
        "0.b": np.zeros(1, np.float32),
        "2.W": rng.random((1, 10), np.float32),
        "2.b": np.zeros(10, np.float32),
    }
    path = model_file(tmp_path / "padded.npz", spec, arrays)
    with pytest.raises(ValueError) as error:
        load_model(path)
    one_line(error.value, "padded.npz", "layer 0 (Convolution)", "more than 8388608")
    with pytest.raises(ValueError, match="layer 0 "):
        build(spec)


@pytest.mark.parametrize(
    "pooling, message",
    [
        (
            {"type": "Pooling", "pool_h": 16001, "pool_w": 16001, "stride": 1, "pad": 8000},
            "larger than its 28x28 input",
        ),
        ({"type": "Pooling", "pool_h": 16001, "pool_w": 16001, "stride": 1, "pad": 0}, "larger than its 28x28 input"),
        ({"type": "Pooling", "pool_h": 29, "pool_w": 2, "stride": 2, "pad": 0}, "29x2 window is larger than"),
        ({"type": "Pooling", "pool_h": 2000, "pool_w": 2000, "stride": 1, "pad": 1000}, "larger than its 28x28 input"),
        ({"type": "Pooling", "pool_h": 2, "pool_w": 2, "stride": 1, "pad": 3000}, "more than 8388608"),
    ],
)
def test_a_pooling_window_larger_than_its_input_is_refused(tmp_path, pooling, message):
    """A 16001x16001 pooling window did not answer within 60 s."""
    spec = {"type": "Sequential", "layers": [pooling, {"type": "Flatten"}]}
    path = model_file(tmp_path / "pool.npz", spec)
    with pytest.raises(ValueError) as error:
        load_model(path)
    one_line(error.value, "pool.npz", "layer 0 (Pooling)", message)


def test_more_than_max_work_for_one_image_is_refused_before_allocating():
    """400 convolutions of 64 channels: 1.2e10 multiply-adds an image, 15 M parameters."""
    spec = {"type": "Sequential", "layers": [conv(1, 64)] + [conv(64, 64)] * 400}
    error, peak = peak_bytes(build, spec)
    assert isinstance(error, ValueError), repr(error)[:300]
    one_line(error, "multiply-adds")
    assert peak < 8 * MB


@pytest.mark.parametrize(
    "layers, message",
    [
        ([conv(1, 4), conv(5, 2)], "layer 1 (Convolution): expects 5 channels, gets 4"),
        (
            [conv(1, 4), {"type": "Flatten"}, {"type": "Pooling", "pool_h": 2, "pool_w": 2, "stride": 2, "pad": 0}],
            "layer 2 (Pooling): needs images",
        ),
        ([conv(1, 4), {"type": "BatchNormalization", "features": 3}], "layer 1 (BatchNormalization): expects"),
        ([{"type": "Residual", "body": conv(1, 4), "shortcut": None}], "layer 0 (Residual): the body gives"),
        ([{"type": "Affine", "in_features": 4, "out_features": 2}, conv(1, 2)], "layer 1 (Convolution): needs images"),
    ],
)
def test_a_layer_that_cannot_take_its_input_is_named(tmp_path, layers, message):
    with pytest.raises(ValueError) as error:
        build({"type": "Sequential", "layers": layers})
    one_line(error.value, message)


def test_models_for_other_input_sizes_still_build_and_load(tmp_path):
    """A named model's input_dim is its input; a hand-built Sequential for 8x8 images
    (an Affine sized for them) is not refused for MNIST's 28x28."""
    resnet = ResNet(input_dim=(1, 8, 8), widths=(2, 3), blocks=(1, 1), output_size=3, seed=0)
    assert load_model(resnet.save(tmp_path / "resnet.npz")).spec() == resnet.spec()
    pooling = {"type": "Pooling", "pool_h": 2, "pool_w": 2, "stride": 2, "pad": 0}
    spec = {
        "type": "Sequential",
        "layers": [
            conv(1, 2),
            pooling,
            {"type": "Flatten"},
            {"type": "Affine", "in_features": 2 * 4 * 4, "out_features": 3},
        ],
    }
    net = build(spec)
    assert load_model(net.save(tmp_path / "small.npz")).spec() == net.spec()


# -- row 9: values a model cannot hold ---------------------------------------------------------


def test_a_negative_running_variance_is_refused_at_load_naming_it(tmp_path):
    net = build(
        {
            "type": "Sequential",
            "layers": [conv(1, 2), {"type": "BatchNormalization", "features": 2}, {"type": "GlobalAveragePooling"}],
        }
    )
    net.buffers["1.running_var"][:] = [1.0, -0.5]
    with pytest.raises(ValueError) as error:
        load_model(net.save(tmp_path / "negative.npz"))
    one_line(error.value, "negative.npz", "buffers/1.running_var", "negative variance")


@pytest.mark.parametrize("name", ["W1", "buffers/running_mean1"])
def test_non_finite_parameters_and_buffers_are_refused_at_load(tmp_path, name):
    net = DeepConvNet(input_dim=(1, 12, 12), hidden_size=6, output_size=3, batch_norm=True, seed=0)
    net.named_arrays()[name].flat[3] = np.nan
    with pytest.raises(ValueError) as error:
        load_model(net.save(tmp_path / "nan.npz"))
    one_line(error.value, "nan.npz", repr(name), "NaN or infinite")


# -- row 13: clear errors ------------------------------------------------------------------------


def test_a_model_without_parameters_loads_in_float32(tmp_path):
    net = Sequential(L.Relu(), L.Flatten())
    loaded = load_model(net.save(tmp_path / "relu.npz"))
    assert loaded.params == {} and loaded.dtype == np.float32
    assert loaded.predict(np.ones((2, 1, 28, 28))).shape == (2, 784)


def test_a_model_whose_output_is_not_class_scores_is_refused_clearly(tmp_path):
    """A spec of only Relu layers gave a bare StopIteration from load_model."""
    with pytest.raises(ValueError) as error:
        load_model(Sequential(L.Relu()).save(tmp_path / "relu.npz"))
    one_line(error.value, "relu.npz", "(1, 1, 28, 28)", "classifier")


def test_long_names_in_a_spec_are_shortened_in_messages(tmp_path):
    key = "k" * 500_000
    with pytest.raises(ValueError) as error:
        load_model(model_file(tmp_path / "key.npz", {"type": "Sequential", "layers": [{"type": "Relu", key: 1}]}))
    one_line(error.value, "key.npz", "unknown entry 'kkkk")
    spec = {
        "type": "Sequential",
        "aliases": {"0.W": "w" * 500_000},
        "layers": [{"type": "Affine", "in_features": 784, "out_features": 2}],
    }
    with pytest.raises(ValueError) as error:
        load_model(model_file(tmp_path / "alias.npz", spec))
    one_line(error.value, "alias.npz", "'wwww")


def test_a_long_parameter_name_in_a_file_is_shortened(tmp_path):
    net = Sequential(L.Affine(np.ones((784, 2), np.float32), np.zeros(2, np.float32)))
    arrays = {
        **net.named_arrays(),
        "n" * 60_000: np.zeros(1, np.float32),
        SPEC_KEY: np.frombuffer(json.dumps(net.spec()).encode(), np.uint8),
    }
    with pytest.raises(ValueError) as error:
        load_model(io.save_params(tmp_path / "name.npz", arrays))
    one_line(error.value, "name.npz", "unexpected parameter 'nnnn")


def test_duplicate_keys_in_a_spec_are_refused(tmp_path):
    text = '{"type": "Sequential", "layers": [], "layers": [{"type": "Flatten"}]}'
    with pytest.raises(ValueError) as error:
        load_model(model_file(tmp_path / "twice.npz", text))
    one_line(error.value, "twice.npz", "'layers' appears twice")
    spec_file = tmp_path / "twice.json"
    spec_file.write_text('{"type": "ResNet", "config": {"blocks": [1], "blocks": [2]}}')
    with pytest.raises(ValueError) as error:
        load_spec_file(spec_file)
    one_line(error.value, "twice.json", "'blocks' appears twice")


# -- row 18: a training checkpoint given where a model file belongs -------------------------------


@pytest.fixture
def checkpoint(tmp_path):
    from deepnet.trainer import Trainer

    rng = np.random.default_rng(0)
    net = DeepConvNet(input_dim=(1, 12, 12), hidden_size=6, output_size=3, seed=0)
    x, t = rng.random((4, 1, 12, 12)).astype(np.float32), np.arange(4) % 3
    Trainer(
        net, x, t, x, t, epochs=1, mini_batch_size=4, verbose=False, checkpoint_path=tmp_path / "run.ckpt.npz"
    ).train()
    return tmp_path / "run.ckpt.npz"


@pytest.mark.parametrize("dtype", [None, "float32", "float64"])
def test_load_model_of_a_checkpoint_says_what_it_is_whatever_the_dtype(checkpoint, dtype):
    with pytest.raises(ValueError) as error:
        load_model(checkpoint, dtype=dtype)
    one_line(error.value, "run.ckpt.npz: a training checkpoint", "--out")


@pytest.mark.parametrize("command", [["evaluate"], ["misclassified", "--out", "wrong.png"], ["predict"]])
def test_the_cli_given_a_checkpoint_says_it_is_one(checkpoint, tmp_path, monkeypatch, capsys, command):
    from deepnet import cli

    if command[0] == "misclassified":
        pytest.importorskip("matplotlib")
    if command[0] == "predict":
        pytest.importorskip("PIL")
        from PIL import Image

        image = np.zeros((28, 28), np.uint8)
        image[8:20, 12:16] = 255
        Image.fromarray(image).save(tmp_path / "digit.png")
        command = command + [str(tmp_path / "digit.png")]
    monkeypatch.chdir(tmp_path)
    assert cli.main([command[0], "--params", str(checkpoint), *command[1:]]) != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "a training checkpoint" in err and "missing" not in err, err


def test_the_input_of_a_sequential_spec_is_what_its_first_layers_declare():
    from deepnet.nets import input_shape

    rgb = build({"type": "Sequential", "layers": [{"type": "Relu"}, conv(3, 4), {"type": "GlobalAveragePooling"}]})
    assert input_shape(rgb) == (1, 3, 28, 28)
    features = build({"type": "Sequential", "layers": [{"type": "Affine", "in_features": 5, "out_features": 3}]})
    assert input_shape(features) == (1, 5)
    assert input_shape(Sequential(L.Flatten(), L.Relu())) == (1, 1, 28, 28)


@pytest.mark.parametrize(
    "layers, works", [([L.Relu()], False), ([L.Relu(), L.Flatten()], True)], ids=["relu", "relu-flatten"]
)
def test_the_cli_predicts_with_a_model_without_parameters_or_says_why_not(tmp_path, capsys, layers, works):
    """A model of only Relu layers loaded, then the CLI died with an IndexError traceback."""
    pytest.importorskip("PIL")
    from PIL import Image
    from deepnet import cli

    image = np.zeros((28, 28), np.uint8)
    image[8:20, 12:16] = 255
    Image.fromarray(image).save(tmp_path / "digit.png")
    path = Sequential(*layers).save(tmp_path / "plain.npz")
    code = cli.main(["predict", "--params", path, str(tmp_path / "digit.png")])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and (code == 0) == works, err
    if works:
        assert "digit.png: " in out
    else:
        assert len(err.strip().splitlines()) == 1 and "classifier" in err, err


# -- every setting of every model file, replaced by hostile values -------------------------------

HOSTILE_VALUES = ["x", [1], {}, None, True, -1, 0, 10**9, 2**31, 1.5, float("nan"), [[1, 2]] * 3]


def fuzz_models():
    sequential = Sequential(
        L.Convolution(np.ones((2, 1, 3, 3)), np.zeros(2), 1, 1),
        L.BatchNormalization(np.ones(2), np.zeros(2)),
        L.Residual(Sequential(L.Relu())),
        L.Pooling(2, 2, stride=2),
        L.Dropout(0.5),
        L.Flatten(),
        L.Affine(np.ones((2 * 14 * 14, 3)), np.zeros(3)),
    )
    return {
        "deepconvnet": DeepConvNet(input_dim=(1, 12, 12), hidden_size=6, output_size=3, seed=0),
        "simpleconvnet": SimpleConvNet(input_dim=(1, 10, 10), hidden_size=5, output_size=3, seed=0),
        "resnet": ResNet(input_dim=(1, 8, 8), widths=(2, 3), blocks=(1, 1), output_size=3, seed=0),
        "vgg": VGG([3, "M", 4, "M"], input_dim=(1, 8, 8), hidden=(5,), output_size=3, batch_norm=True, seed=0),
        "sequential": sequential,
    }


def leaves(data, path=()):
    """(path, value) of every number, string, bool and null in JSON data."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from leaves(value, path + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from leaves(value, path + (index,))
    else:
        yield path, data


def replaced(data, path, value):
    data = json.loads(json.dumps(data))
    target = data
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return data


@pytest.mark.parametrize("name", ["deepconvnet", "simpleconvnet", "resnet", "vgg", "sequential"])
def test_every_setting_of_a_model_file_replaced_by_hostile_values_loads_or_fails_cleanly(tmp_path, name):
    """Each leaf of the spec, in turn, becomes each of HOSTILE_VALUES (the file keeps its
    arrays): load_model either loads the model or raises one clear ValueError line, quickly
    and in bounded memory."""
    net = fuzz_models()[name]
    arrays, spec = net.named_arrays(), net.spec()
    outcomes = {"loaded": 0, "refused": 0}
    start = time.perf_counter()
    for path, _ in leaves(spec):
        for value in HOSTILE_VALUES:
            file = model_file(tmp_path / "fuzzed.npz", replaced(spec, path, value), arrays)
            result, peak = peak_bytes(load_model, file)
            where = f"{path} = {value!r}"
            assert isinstance(result, (Sequential, ValueError)), f"{where}: {result!r}"[:500]
            assert peak < 16 * MB, f"{where}: {peak} bytes"
            if isinstance(result, ValueError):
                one_line(result, "fuzzed.npz")
            outcomes["loaded" if isinstance(result, Sequential) else "refused"] += 1
    assert outcomes["refused"] > outcomes["loaded"], outcomes
    assert time.perf_counter() - start < 120

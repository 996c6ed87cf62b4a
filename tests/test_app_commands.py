"""``deepnet predict`` and ``deepnet serve`` on the command line, and the network they share."""

import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import deepnet
from app_support import black_on_white, encode, mnist_test_digits
from deepnet import cli, nets
from deepnet.app import inference, preprocess
from deepnet.app.inference import DigitReader, load_for_inference
from deepnet.app.preprocess import mnist_input
from deepnet.app.server import MAX_BODY
from deepnet.layers import softmax
from support import BOOK_PARAMS

INSTALL_HINT = 'pip install -e ".[app]"'


@pytest.fixture(scope="module")
def network():
    return load_for_inference(BOOK_PARAMS)


@pytest.fixture
def pictures(tmp_path):
    """Three MNIST test digits (7, 2, 1) as PNG files, with their labels."""
    digits, labels = mnist_test_digits(3)
    paths = []
    for i, digit in enumerate(digits):
        path = tmp_path / f"digit{i}.png"
        path.write_bytes(encode(black_on_white(digit)))
        paths.append(str(path))
    return paths, labels


def one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("deepnet: error: "), err
    for fragment in fragments:
        assert fragment in err
    return err


# -- deepnet predict -------------------------------------------------------------------


def test_predict_prints_the_top_three_classes_of_each_file(pictures, network, capsys):
    paths, labels = pictures
    assert cli.main(["predict", "--params", str(BOOK_PARAMS), *paths]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(paths)
    for line, path, label in zip(lines, paths, labels):
        expected = softmax(network.predict(mnist_input(Path(path).read_bytes())[None, None]).astype(np.float64))[0]
        top3 = np.argsort(expected)[::-1][:3]
        assert line == f"{path}: " + ", ".join(f"{d} {100 * expected[d]:.2f}%" for d in top3)
        assert top3[0] == label  # the book's net reads these three right


def test_predict_json_lists_file_label_and_probabilities(pictures, network, capsys):
    paths, labels = pictures
    assert cli.main(["predict", "--json", "--params", str(BOOK_PARAMS), *paths]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert [a["file"] for a in answers] == paths
    inputs = np.stack([mnist_input(Path(p).read_bytes()) for p in paths])[:, None]
    expected = softmax(network.predict(inputs).astype(np.float64))
    for answer, row, label in zip(answers, expected, labels):
        assert set(answer) == {"file", "label", "probabilities"}
        assert answer["label"] == label == int(np.argmax(row))
        assert np.allclose(answer["probabilities"], row, rtol=1e-6, atol=1e-9)


def test_predict_names_the_file_it_cannot_read(pictures, tmp_path, capsys):
    paths, _ = pictures
    bad = tmp_path / "notes.png"
    bad.write_text("shopping list")
    assert cli.main(["predict", "--params", str(BOOK_PARAMS), paths[0], str(bad)]) != 0
    one_line_error(capsys, "notes.png", "PNG or JPEG")


def test_predict_calls_a_blank_picture_blank(tmp_path, capsys):
    from app_support import Image

    blank = tmp_path / "blank.png"
    blank.write_bytes(encode(Image.new("L", (100, 100), 255)))
    assert cli.main(["predict", "--params", str(BOOK_PARAMS), str(blank)]) != 0
    one_line_error(capsys, "blank.png", "blank")


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["predict", "--params", str(BOOK_PARAMS)], "IMAGE"),
        (["predict", "--params", str(BOOK_PARAMS), "missing.png"], "missing.png"),
        (["predict", str(BOOK_PARAMS)], "--params"),
        (["serve", "--params", str(BOOK_PARAMS), "--port", "65536"], "65536"),
        (["serve", "--params", str(BOOK_PARAMS), "--port", "-1"], "-1"),
        (["serve", "--params", "missing.npz"], "missing.npz"),
        (["serve", "--params", str(BOOK_PARAMS), "--threads", "0"], "--threads"),
    ],
)
def test_bad_usage_is_one_line_and_exit_code_2(argv, fragment, capsys):
    assert cli.main(argv) == 2
    one_line_error(capsys, fragment)


@pytest.mark.parametrize("command", ["predict", "serve"])
def test_without_pillow_both_commands_say_how_to_install_it(command, pictures, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL now raises ImportError
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    argv = [command, "--params", str(BOOK_PARAMS)] + (pictures[0][:1] if command == "predict" else ["--port", "0"])
    assert cli.main(argv) == 2
    one_line_error(capsys, INSTALL_HINT)


def test_serve_listens_on_127_0_0_1_port_8000_with_one_kernel_thread_by_default():
    args = cli.build_parser().parse_args(["serve", "--params", str(BOOK_PARAMS)])
    assert (args.host, args.port, args.threads) == ("127.0.0.1", 8000, 1)


def test_serve_runs_from_the_command_line(pictures, network):
    paths, labels = pictures
    deepnet_home = str(Path(deepnet.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [deepnet_home, os.environ.get("PYTHONPATH")])))
    process = subprocess.Popen(
        [sys.executable, "-m", "deepnet", "serve", "--params", str(BOOK_PARAMS), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        banner = process.stdout.readline()
        assert banner.startswith("deepnet serve: http://127.0.0.1:"), banner + process.stderr.read()
        port = int(re.match(r"deepnet serve: http://127\.0\.0\.1:(\d+)/", banner).group(1))
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", "/predict", Path(paths[1]).read_bytes(), {"Content-Type": "image/png"})
        answer = json.loads(connection.getresponse().read())
        assert answer["label"] == labels[1]
    finally:
        process.terminate()
        process.wait(timeout=10)


# -- the network -----------------------------------------------------------------------


def test_load_for_inference_falls_back_to_the_book_network(network):
    loaded = load_for_inference(BOOK_PARAMS)
    assert isinstance(loaded, nets.DeepConvNet) and loaded.dtype == np.float32
    for name, value in network.params.items():
        assert np.array_equal(loaded.params[name], value)


def test_load_for_inference_reads_any_saved_model_in_float32(tmp_path):
    model = nets.ResNet(widths=(4, 8), blocks=(1, 1), dtype=np.float64, seed=0)
    loaded = load_for_inference(model.save(tmp_path / "resnet.npz"))
    assert isinstance(loaded, nets.ResNet) and loaded.dtype == np.float32
    x = np.random.default_rng(0).random((2, 1, 28, 28))
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-4, atol=1e-5)


class _RacyLayer:
    """Keeps its input between storing it and using it, as the book's layers do, and
    gives other threads the time to overwrite it."""

    def forward(self, x):
        self.x = x
        time.sleep(0.005)
        return self.x.reshape(len(self.x), -1)[:, :10] * 10


class _RacyNetwork:
    def __init__(self):
        self.layers = [_RacyLayer()]

    def predict(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x


def test_the_reader_serialises_passes_through_a_stateful_network():
    reader = DigitReader(_RacyNetwork())
    inputs = []
    for digit in range(10):  # input `digit` gives the scores 10 * one-hot(digit)
        x = np.zeros((1, 28, 28), np.float32)
        x[0, 0, digit] = 1
        inputs.append(x)
    answers = [None] * len(inputs)

    def read(i):
        answers[i] = reader.probabilities(inputs[i])

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for digit, answer in enumerate(answers):
        assert np.argmax(answer) == digit
        assert np.allclose(answer, softmax(10.0 * np.eye(10)[digit]))


def test_feature_maps_are_every_stack_of_maps_up_to_the_classifier(network):
    reader = DigitReader(network)
    digits, _ = mnist_test_digits(1)
    maps = reader.feature_maps(digits[0])
    assert [(name, m.shape) for name, m in maps] == [
        ("Convolution 1", (16, 28, 28)),
        ("Convolution 2", (16, 28, 28)),
        ("Pooling 1", (16, 14, 14)),
        ("Convolution 3", (32, 14, 14)),
        ("Convolution 4", (32, 16, 16)),
        ("Pooling 2", (32, 8, 8)),
        ("Convolution 5", (64, 8, 8)),
        ("Convolution 6", (64, 8, 8)),
        ("Pooling 3", (64, 4, 4)),
    ]
    assert all(m.min() >= 0 for _, m in maps)  # ReLU'd convolutions, and poolings of them
    assert np.array_equal(reader.first_filters(), network.params["W1"])
    assert inference.DigitReader(_RacyNetwork()).first_filters() is None


def test_the_load_test_script_runs_and_prints_its_tables():
    # benches/models/load_serve.py, with the least work: it must not rot unnoticed.
    script = Path(__file__).resolve().parents[1] / "benches" / "models" / "load_serve.py"
    deepnet_home = str(Path(deepnet.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [deepnet_home, os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [sys.executable, str(script), "--requests", "16", "--threads", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "| 16 | 0 |" in result.stdout and "| after the load |" in result.stdout


# -- hardening round 3 (issue 32) ------------------------------------------------------

INTERNAL_NAMES = re.compile(r"\b(read_grayscale|digit_to_mnist|mnist_input|_grayscale)\b")


def error_lines(err):
    lines = err.strip().splitlines()
    assert all(line.startswith("deepnet: error: ") for line in lines), err
    assert not INTERNAL_NAMES.search(err) and "Traceback" not in err, err
    return lines


@pytest.fixture
def eight(tmp_path):
    """Seven MNIST test digits as PNG files, and a blank picture as the fourth of eight."""
    from app_support import Image

    digits, labels = mnist_test_digits(7)
    paths = []
    for i, digit in enumerate(digits):
        path = tmp_path / f"digit{i}.png"
        path.write_bytes(encode(black_on_white(digit)))
        paths.append(str(path))
    blank = tmp_path / "blank.png"
    blank.write_bytes(encode(Image.new("L", (100, 100), 255)))
    return paths[:3] + [str(blank)] + paths[3:], list(labels)


@pytest.mark.parametrize("json_output", [False, True])
def test_one_blank_picture_among_eight_leaves_the_other_seven_read(eight, capsys, json_output):
    paths, labels = eight
    good = [p for p in paths if not p.endswith("blank.png")]
    options = ["--json"] if json_output else []
    assert cli.main(["predict", *options, "--params", str(BOOK_PARAMS), *good]) == 0
    expected = capsys.readouterr().out

    assert cli.main(["predict", *options, "--params", str(BOOK_PARAMS), *paths]) == 1
    out, err = capsys.readouterr()
    assert out == expected  # the seven readable files, as they are printed without the blank one
    [line] = error_lines(err)
    assert line.startswith(f"deepnet: error: {paths[3]}: ") and "blank" in line


def test_each_unreadable_file_gets_its_own_line_in_the_order_given(pictures, tmp_path, capsys):
    paths, _ = pictures
    garbage = tmp_path / "notes.png"
    garbage.write_text("shopping list")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(Path(paths[0]).read_bytes()[:200])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    argv = [paths[0], str(garbage), paths[1], str(truncated), str(empty), paths[2]]
    assert cli.main(["predict", "--params", str(BOOK_PARAMS), *argv]) == 1
    out, err = capsys.readouterr()
    assert [line.split(":")[0] for line in out.splitlines()] == paths
    lines = error_lines(err)
    assert len(lines) == 3
    assert lines[0].startswith(f"deepnet: error: {garbage}: ") and "PNG or JPEG" in lines[0]
    assert lines[1].startswith(f"deepnet: error: {truncated}: ") and "unreadable" in lines[1]
    assert lines[2] == f"deepnet: error: {empty}: the file is empty: expected a PNG or JPEG image"


def sparse_file(path, size):
    with open(path, "wb") as f:
        f.truncate(size)  # no blocks on disk: a huge file that costs nothing
    return str(path)


@pytest.mark.parametrize("size", [MAX_BODY + 1, 10 * 1024**3])
def test_a_file_over_the_upload_limit_is_refused_from_its_size_before_reading(
    pictures, tmp_path, capsys, monkeypatch, size
):
    import tracemalloc

    paths, _ = pictures
    huge = sparse_file(tmp_path / "huge.png", size)
    read = []
    real = preprocess.mnist_input
    monkeypatch.setattr(preprocess, "mnist_input", lambda data: read.append(len(data)) or real(data))
    tracemalloc.start()
    try:
        assert cli.main(["predict", "--params", str(BOOK_PARAMS), huge, paths[0]]) == 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    out, err = capsys.readouterr()
    assert out.startswith(f"{paths[0]}: 7 ")
    [line] = error_lines(err)
    assert line == (
        f"deepnet: error: {huge}: the file is {size:,} bytes, more than the "
        f"{MAX_BODY:,} accepted for an image (the same limit as deepnet serve's)"
    )
    assert len(read) == 1 and peak < 4 * MAX_BODY + 50 * 2**20


def test_predicts_byte_limit_is_the_servers(tmp_path, capsys):
    from deepnet.app import inference, server

    assert server.MAX_BODY == inference.MAX_IMAGE_BYTES == MAX_BODY
    exactly = sparse_file(tmp_path / "exact.png", MAX_BODY)  # read, then found no image
    assert cli.main(["predict", "--params", str(BOOK_PARAMS), exactly]) == 1
    [line] = error_lines(capsys.readouterr().err)
    assert "PNG or JPEG" in line and "accepted" not in line


def test_out_of_memory_in_predict_gives_predicts_own_advice(pictures, monkeypatch, capsys):
    def exhausted(self, inputs):
        raise MemoryError()

    monkeypatch.setattr(inference.DigitReader, "probabilities", exhausted)
    assert cli.main(["predict", "--params", str(BOOK_PARAMS), *pictures[0]]) == 1
    err = one_line_error(capsys, "out of memory", "IMAGE")
    assert "--batch-size" not in err


def test_out_of_memory_reading_one_image_is_that_files_error(pictures, monkeypatch, capsys):
    paths, _ = pictures
    real = preprocess.mnist_input
    calls = []

    def exhausted_once(data):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError()
        return real(data)

    monkeypatch.setattr(preprocess, "mnist_input", exhausted_once)
    assert cli.main(["predict", "--params", str(BOOK_PARAMS), *paths]) == 1
    out, err = capsys.readouterr()
    assert [line.split(":")[0] for line in out.splitlines()] == [paths[0], paths[2]]
    [line] = error_lines(err)
    assert line == f"deepnet: error: {paths[1]}: out of memory reading this image"


def broken_network(network, value):
    import copy

    broken = copy.deepcopy(network)
    last_bias = [name for name in broken.params if name.startswith("b")][-1]
    broken.params[last_bias][...] = value
    return broken


@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("json_output", [False, True])
def test_predict_with_a_network_giving_non_finite_outputs_fails_and_prints_no_nan(
    pictures, network, monkeypatch, capsys, value, json_output
):
    monkeypatch.setattr(inference, "load_for_inference", lambda path: broken_network(network, value))
    options = ["--json"] if json_output else []
    assert cli.main(["predict", *options, "--params", str(BOOK_PARAMS), *pictures[0]]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    [line] = error_lines(err)
    assert str(BOOK_PARAMS) in line and "not finite" in line


class _NaNForSomeInputs:
    """The book's network, except that inputs whose first row has ink give NaN scores."""

    def __init__(self, network):
        self.network = network
        self.layers = network.layers

    def predict(self, x):
        scores = np.array(self.network.predict(x))
        scores[x[:, 0, 0].sum(axis=1) > 0] = np.nan
        return scores


def test_predict_reports_each_file_whose_output_is_not_finite(pictures, network, monkeypatch, capsys):
    paths, _ = pictures
    real = preprocess.mnist_input

    def marked(data):  # the second picture gets ink on its first row
        image = real(data)
        if data == Path(paths[1]).read_bytes():
            image[0, 0] = 1
        return image

    monkeypatch.setattr(preprocess, "mnist_input", marked)
    monkeypatch.setattr(inference, "load_for_inference", lambda path: _NaNForSomeInputs(network))
    assert cli.main(["predict", "--params", str(BOOK_PARAMS), *paths]) == 1
    out, err = capsys.readouterr()
    assert [line.split(":")[0] for line in out.splitlines()] == [paths[0], paths[2]]
    assert "nan" not in out.lower()
    [line] = error_lines(err)
    assert line.startswith(f"deepnet: error: {paths[1]}: ") and "not finite" in line


def test_serve_on_a_busy_port_says_so_in_one_line(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["serve", "--params", str(BOOK_PARAMS), "--port", str(port)]) == 2
    err = one_line_error(capsys, f"port {port} on 127.0.0.1 is in use; choose another with --port")
    assert "Errno" not in err


def test_serve_on_an_address_of_another_machine_says_so_in_one_line(capsys):
    # 192.0.2.1: TEST-NET-1, documentation only, never an address of this machine
    assert cli.main(["serve", "--params", str(BOOK_PARAMS), "--host", "192.0.2.1", "--port", "0"]) == 2
    err = one_line_error(capsys, "192.0.2.1 is not an address of this machine", "--host")
    assert "Errno" not in err

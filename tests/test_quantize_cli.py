"""``deepnet quantize`` end to end, and int8 model files in ``deepnet evaluate``, ``predict`` and the app's reader."""

from pathlib import Path

import numpy as np
import pytest

from deepnet import cli, datasets, nets
from deepnet.app.inference import DigitReader, load_for_inference
from deepnet.cli import common
from deepnet.cli.quantize import calibration_images
from deepnet.quant import Int8Model, load_int8_model
from support import BOOK_PARAMS, MNIST_DIR

SMALL = ["--val-size", "600", "--calibration-size", "200", "--data", str(MNIST_DIR)]


@pytest.fixture
def small_test_set(monkeypatch):
    """Keep the commands quick: they see only the first 300 test images."""
    real_load = common.load_mnist

    def load(root, dtype):
        train, (x_test, t_test) = real_load(root, dtype)
        return train, (x_test[:300], t_test[:300])

    monkeypatch.setattr(common, "load_mnist", load)


@pytest.fixture(scope="module")
def int8_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "book_int8.npz"
    assert cli.main(["quantize", "--params", str(BOOK_PARAMS), "--out", str(out), *SMALL]) == 0
    return out


def one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("deepnet: error: "), err
    for fragment in fragments:
        assert fragment in err


def test_quantize_calibrates_on_the_validation_split_that_train_holds_out(int8_file):
    model = load_int8_model(int8_file)
    assert model.calibration == {"method": "max", "images": 200}
    (x_train, t_train), (x_test, _) = datasets.load_mnist(
        normalize=True, flatten=False, one_hot_label=False, root=str(MNIST_DIR)
    )
    args = type("Args", (), {"train_size": None, "val_size": 600, "calibration_size": 200, "seed": 0})()
    x_val, t_val = calibration_images(args, x_train, t_train)
    _, expected = datasets.stratified_split(t_train, 600, np.random.SeedSequence(0).spawn(3)[2])
    np.testing.assert_array_equal(x_val, x_train[expected])
    np.testing.assert_array_equal(t_val, t_train[expected])
    again = nets.load_model(BOOK_PARAMS, dtype=np.float32)  # what --dtype float32 loads
    from deepnet.quant import quantize

    same = quantize(again, x_val[:200])
    np.testing.assert_array_equal(same.predict(x_test[:20]), model.predict(x_test[:20]))  # those very images


def test_quantize_refuses_to_overwrite_without_overwrite(int8_file, capsys):
    before = int8_file.read_bytes()
    assert cli.main(["quantize", "--params", str(BOOK_PARAMS), "--out", str(int8_file), *SMALL]) == 2
    one_line_error(capsys, str(int8_file), "--overwrite")
    assert int8_file.read_bytes() == before


def test_quantize_overwrites_with_overwrite_and_compares_on_validation(tmp_path, capsys):
    out = tmp_path / "q.npz"
    out.write_bytes(b"old")
    argv = ["quantize", "--params", str(BOOK_PARAMS), "--out", str(out), "--overwrite", "--compare", *SMALL]
    assert cli.main([*argv, "--percentile", "99.99"]) == 0
    text = capsys.readouterr().out
    assert "validation accuracy on 600 images" in text and "int8" in text and "same prediction" in text
    assert "99.99th percentile" in text
    assert load_int8_model(out).calibration["method"] == "percentile"


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--calibration-size", "700"], "--calibration-size 700"),
        (["--val-size", "60000"], "--val-size 60000"),
        (["--percentile", "40"], "--percentile"),
    ],
)
def test_quantize_usage_errors_are_one_line(extra, fragment, tmp_path, capsys):
    argv = ["quantize", "--params", str(BOOK_PARAMS), "--out", str(tmp_path / "q.npz"), *SMALL, *extra]
    assert cli.main(argv) == 2
    one_line_error(capsys, fragment)


def test_quantizing_an_int8_model_is_refused(int8_file, tmp_path, capsys):
    argv = ["quantize", "--params", str(int8_file), "--out", str(tmp_path / "again.npz"), *SMALL]
    assert cli.main(argv) == 2
    one_line_error(capsys, "int8 model already")


def test_evaluate_reads_an_int8_file(int8_file, small_test_set, capsys):
    assert cli.main(["evaluate", "--params", str(int8_file), "--data", str(MNIST_DIR)]) == 0
    out = capsys.readouterr().out
    _, (x_test, t_test) = datasets.load_mnist(normalize=True, flatten=False, one_hot_label=False, root=str(MNIST_DIR))
    accuracy = load_int8_model(int8_file).accuracy(x_test[:300], t_test[:300])
    assert f"int8     {accuracy:.4f}" in out
    assert cli.main(["evaluate", "--params", str(int8_file), "--half-check", "--data", str(MNIST_DIR)]) == 2
    one_line_error(capsys, "int8 model")


def test_evaluate_averages_a_float_and_an_int8_member(int8_file, small_test_set, capsys):
    argv = ["evaluate", "--params", str(BOOK_PARAMS), str(int8_file), "--data", str(MNIST_DIR)]
    assert cli.main(argv) == 0
    assert "ensemble of 2" in capsys.readouterr().out


def test_predict_reads_digits_with_an_int8_file(int8_file, tmp_path, capsys):
    pytest.importorskip("PIL")
    from app_support import black_on_white, encode, mnist_test_digits
    from deepnet.app.preprocess import mnist_input

    digits, labels = mnist_test_digits(3)
    paths = []
    for i, digit in enumerate(digits):
        path = tmp_path / f"digit{i}.png"
        path.write_bytes(encode(black_on_white(digit)))
        paths.append(str(path))
    assert cli.main(["predict", "--json", "--params", str(int8_file), *paths]) == 0
    import json

    answers = json.loads(capsys.readouterr().out)
    model = load_int8_model(int8_file)
    inputs = np.stack([mnist_input(Path(p).read_bytes()) for p in paths])[:, None]
    expected = model.probabilities(inputs)
    for answer, row, label in zip(answers, expected, labels):
        assert answer["label"] == label == int(np.argmax(row))
        np.testing.assert_allclose(answer["probabilities"], row, rtol=1e-6, atol=1e-9)


def test_the_app_reader_shows_an_int8_models_maps_and_filters(int8_file):
    network = load_for_inference(int8_file)
    assert isinstance(network, Int8Model)
    reader = DigitReader(network)
    _, (x_test, _) = datasets.load_mnist(normalize=True, flatten=False, one_hot_label=False, root=str(MNIST_DIR))
    maps = reader.feature_maps(x_test[0, 0])
    assert [name for name, _ in maps] == [f"int8 conv {i}" for i in range(1, 7)]
    assert maps[0][1].shape == (16, 28, 28) and maps[1][1].shape == (16, 14, 14)
    assert all(m.dtype == np.float32 for _, m in maps)
    filters = reader.first_filters()
    book = nets.load_model(BOOK_PARAMS)
    assert filters.shape == (16, 1, 3, 3)
    step = np.abs(book.params["W1"]).reshape(16, -1).max(axis=1) / 127
    assert np.all(np.abs(filters - book.params["W1"]) <= step[:, None, None, None] / 2 + 1e-7)
    p = reader.probabilities(x_test[:4, 0])
    assert p.shape == (4, 10) and np.allclose(p.sum(axis=1), 1)

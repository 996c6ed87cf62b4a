"""int8 model files: a bit-identical round trip through deepnet's load_model, and hostile files refused with clear errors."""

import json
import zipfile

import numpy as np
import pytest

from deepnet import datasets, models, nets
from deepnet.quant import INT8_KEY, Int8Model, load_int8_model, quantize
from support import MNIST_DIR


@pytest.fixture(scope="module")
def images():
    (x_train, _), _ = datasets.load_mnist(normalize=True, flatten=False, one_hot_label=False, root=str(MNIST_DIR))
    return x_train[:120]


@pytest.fixture(scope="module")
def book_int8(images):
    return quantize(nets.DeepConvNet(seed=1), images[:60])


@pytest.fixture(scope="module")
def resnet_int8(images):
    net = models.ResNet(widths=(4, 8), blocks=(1, 1), seed=2)
    for layer in net.batch_norm_layers():
        layer.running_var[...] = np.linspace(0.5, 2, layer.running_var.size)
    return quantize(net, images[:60], percentile=99.9)


@pytest.mark.parametrize("which", ["book_int8", "resnet_int8"])
@pytest.mark.parametrize("load", [models.load_model, nets.load_model, load_int8_model])
def test_save_and_load_give_the_same_model_bit_for_bit(request, which, load, tmp_path, images):
    model = request.getfixturevalue(which)
    path = model.save(tmp_path / "m")
    assert path.endswith("m.npz")
    loaded = load(path)
    assert isinstance(loaded, Int8Model)
    assert loaded.spec() == model.spec()
    before, after = model.named_arrays(), loaded.named_arrays()
    assert before.keys() == after.keys()
    for name in before:
        assert before[name].dtype == after[name].dtype
        np.testing.assert_array_equal(before[name], after[name])
    np.testing.assert_array_equal(loaded.predict(images[60:]), model.predict(images[60:]))
    assert loaded.describe() == model.describe()


# -- hostile files ---------------------------------------------------------------------------


def _arrays(model):
    arrays = dict(model.named_arrays())
    arrays[INT8_KEY] = np.frombuffer(json.dumps(model.spec()).encode(), np.uint8)
    return arrays


def _write(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def _with_spec(model, change):
    arrays = _arrays(model)
    spec = model.spec()
    change(spec)
    arrays[INT8_KEY] = np.frombuffer(json.dumps(spec).encode(), np.uint8)
    return arrays


def _set(path, value):
    def change(spec):
        target = spec
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


SPEC_CASES = {
    "nan scale": (_set(["steps", 0, "scale"], float("nan")), "not a number"),
    "zero scale": (_set(["steps", 0, "scale"], 0.0), "finite number > 0"),
    "huge scale": (_set(["steps", 0, "scale"], 1e300), "float32"),
    "zero point 256": (_set(["steps", 0, "zero"], 256), "0..255"),
    "negative zero point": (_set(["steps", 1, "out_zero"], -1), "0..255"),
    "string zero point": (_set(["steps", 1, "out_zero"], "0"), "0..255"),
    "huge filters": (_set(["steps", 1, "filters"], 10**9), "1..65536"),
    "huge image": (_set(["input_shape"], [1, 60000, 60000]), "values for one image"),
    "too deep a kernel": (_set(["steps", 1, "in_channels"], 60000), "65536"),
    "channels that do not match": (_set(["steps", 2, "in_channels"], 3), "expects"),
    "extra key": (_set(["steps", 1, "bias"], 1), "unexpected key 'bias'"),
    "extra top key": (_set(["pickle"], 1), "unexpected key 'pickle'"),
    "unknown step": (_set(["steps", 1, "type"], "eval"), "unknown step type"),
    "wrong version": (_set(["version"], 2), "version"),
    "float step first": (_set(["steps", 0], {"type": "dequantize"}), "takes uint8"),
    "no steps": (_set(["steps"], []), "1 to 1000"),
    "relu as a string": (_set(["steps", 1, "relu"], "yes"), "true or false"),
}


@pytest.mark.parametrize("case", SPEC_CASES)
def test_a_bad_spec_is_refused_before_any_array_is_read(case, book_int8, tmp_path):
    change, message = SPEC_CASES[case]
    path = _write(tmp_path / "bad.npz", _with_spec(book_int8, change))
    with pytest.raises(ValueError, match=message) as error:
        models.load_model(path)
    assert str(path) in str(error.value)


def _array_case(name, value):
    def change(arrays):
        arrays[name] = value(arrays[name]) if callable(value) else value

    return change


ARRAY_CASES = {
    "w_q as int16": (_array_case("steps/1/w_q", lambda a: a.astype(np.int16)), "expected int8, got int16"),
    "w_q as float": (_array_case("steps/1/w_q", lambda a: a.astype(np.float32)), "expected int8, got float32"),
    "bias as int64": (_array_case("steps/1/bias_q", lambda a: a.astype(np.int64)), "expected int32"),
    "scale as float64": (_array_case("steps/1/scale", lambda a: a.astype(np.float64)), "expected float32"),
    "nan scale": (_array_case("steps/1/scale", lambda a: np.full_like(a, np.nan)), "NaN"),
    "negative scale": (_array_case("steps/2/w_scale", lambda a: -a), "> 0"),
    "-128 weight": (_array_case("steps/1/w_q", lambda a: np.full_like(a, -128)), "-127..127"),
    "wrong shape": (_array_case("steps/1/w_q", lambda a: a[:1]), "shape"),
    "object array": (_array_case("steps/1/bias_q", np.array([object()], dtype=object)), "dtype"),
    "missing array": (lambda arrays: arrays.pop("steps/1/scale"), "missing"),
    "extra array": (_array_case("steps/1/extra", np.zeros(1, np.float32)), "unexpected"),
    "a float model's spec too": (_array_case("__model_spec__", np.zeros(3, np.uint8)), "unexpected"),
}


@pytest.mark.parametrize("case", ARRAY_CASES)
def test_bad_arrays_are_refused(case, book_int8, tmp_path):
    change, message = ARRAY_CASES[case]
    arrays = _arrays(book_int8)
    change(arrays)
    path = tmp_path / "bad.npz"
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ValueError, match=message):
        models.load_model(path)


def test_a_float_step_with_nan_parameters_is_refused(resnet_int8, tmp_path):
    arrays = _arrays(resnet_int8)
    name = next(n for n in arrays if n.endswith("gamma"))
    arrays[name] = np.full_like(arrays[name], np.nan)
    with pytest.raises(ValueError, match="NaN or infinite"):
        models.load_model(_write(tmp_path / "bad.npz", arrays))


def test_a_float_step_asking_for_huge_parameters_is_refused(resnet_int8, tmp_path):
    def huge(spec):
        index = next(i for i, s in enumerate(spec["steps"]) if s["type"] == "float")
        spec["steps"][index]["layer"] = {
            "type": "BatchNormalization",
            "features": 10**9,
            "momentum": 0.9,
            "relu": False,
        }

    with pytest.raises(ValueError, match="more than 50000000 parameters"):
        models.load_model(_write(tmp_path / "bad.npz", _with_spec(resnet_int8, huge)))


@pytest.mark.parametrize("cut", [0.3, 0.9])
def test_a_truncated_file_is_refused(cut, book_int8, tmp_path):
    path = book_int8.save(tmp_path / "m.npz")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * cut)])
    with pytest.raises(ValueError):
        models.load_model(path)


def test_a_spec_that_is_not_json_or_too_large_is_refused(book_int8, tmp_path):
    arrays = _arrays(book_int8)
    arrays[INT8_KEY] = np.frombuffer(b'{"format": "deepnet-int8", "format": 1}', np.uint8)
    with pytest.raises(ValueError, match="twice"):
        models.load_model(_write(tmp_path / "dup.npz", arrays))
    arrays[INT8_KEY] = np.frombuffer(b"\xff\xfe", np.uint8)
    with pytest.raises(ValueError, match="not valid JSON"):
        models.load_model(_write(tmp_path / "bytes.npz", arrays))
    arrays[INT8_KEY] = np.zeros((1 << 20) + 1, np.uint8)
    with pytest.raises(ValueError, match="bytes"):
        models.load_model(_write(tmp_path / "large.npz", arrays))
    arrays[INT8_KEY] = np.zeros(3, np.int32)
    with pytest.raises(ValueError, match="UTF-8 bytes"):
        load_int8_model(_write(tmp_path / "int.npz", arrays))


def test_the_file_is_written_atomically_and_without_pickle(book_int8, tmp_path):
    path = book_int8.save(tmp_path / "m.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]  # no temporary left behind
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    assert INT8_KEY + ".npy" in names
    with np.load(path, allow_pickle=False) as data:  # loads without pickle
        assert data["steps/1/w_q"].dtype == np.int8


def test_a_float_model_file_is_not_an_int8_model_file(tmp_path):
    path = nets.DeepConvNet(seed=0).save(tmp_path / "float.npz")
    with pytest.raises(ValueError, match="not an int8 model file"):
        load_int8_model(path)
    assert not isinstance(models.load_model(path), Int8Model)

"""Parameter files: the book's pickle (loaded safely), .npz save/load, atomic writes."""
import os
import pickle
import pickletools
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from deepnet.io import (
    UnsafePickleError, atomic_write, load_params_file, load_pickle_arrays, save_params,
)

BOOK_PICKLE = Path(__file__).resolve().parents[1] / "data" / "book" / "deep_convnet_params.pkl"
needs_book_pickle = pytest.mark.skipif(not BOOK_PICKLE.exists(), reason=f"{BOOK_PICKLE} not present")


def write_pickle(path, obj, protocol=pickle.DEFAULT_PROTOCOL):
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def same_bits(a, b):
    """Bit-for-bit equality (also for NaN and -0.0), dtype and shape included."""
    return (a.dtype == b.dtype and a.shape == b.shape
            and a.tobytes() == b.tobytes())


# --- the book's pickle

@needs_book_pickle
def test_book_pickle_loads():
    params = load_pickle_arrays(BOOK_PICKLE)
    assert sorted(params) == sorted([f"W{i}" for i in range(1, 9)] + [f"b{i}" for i in range(1, 9)])
    assert params["W1"].shape == (16, 1, 3, 3)
    assert params["W7"].shape == (1024, 50)
    assert params["W8"].shape == (50, 10)
    assert params["b8"].shape == (10,)
    for name, array in params.items():
        assert type(array) is np.ndarray and array.dtype == np.float64, name
        assert np.all(np.isfinite(array)), name
    assert params["W1"].flags.writeable   # usable as a trainable parameter


@needs_book_pickle
def test_book_pickle_matches_unrestricted_pickle():
    # The trusted file may be loaded the ordinary way to get an independent reference.
    with open(BOOK_PICKLE, "rb") as f:
        reference = pickle.load(f)
    loaded = load_params_file(BOOK_PICKLE)
    assert loaded.keys() == reference.keys()
    for name in reference:
        assert same_bits(loaded[name], reference[name]), name


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_array_dict_pickles_load_with_each_protocol(tmp_path, protocol):
    params = {"W": np.arange(6, dtype=np.float32).reshape(2, 3),
              "F": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
              "h": np.array([1.5, -0.0, np.inf], dtype=np.float16)}
    loaded = load_pickle_arrays(write_pickle(tmp_path / "p.pkl", params, protocol))
    for name, array in params.items():
        assert same_bits(loaded[name], array), name


# --- hostile or malformed pickles

class RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


def test_malicious_pickle_is_refused_without_side_effect(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = write_pickle(tmp_path / "evil.pkl", {"W1": RunsAShellCommand(marker)})
    assert b"system" in path.read_bytes()   # the payload really references os.system
    with pytest.raises(UnsafePickleError, match=r"refusing to load \w+\.system from") as excinfo:
        load_pickle_arrays(path)
    assert str(path) in str(excinfo.value)
    assert not marker.exists()


def test_unsafe_pickle_error_is_an_unpickling_error():
    assert issubclass(UnsafePickleError, pickle.UnpicklingError)


def test_malicious_pickle_is_refused_through_load_params_file(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = write_pickle(tmp_path / "evil.pkl", RunsAShellCommand(marker))
    with pytest.raises(UnsafePickleError):
        load_params_file(path)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    {"W": np.zeros(2), "extra": eval},           # builtins.eval next to a valid array
    {"W": np.zeros(2), "step": Fraction(1, 3)},   # any non-NumPy class
    {"W": np.zeros(2), "lr": np.float64(0.1)},    # NumPy scalars are not parameters either
])
def test_any_other_global_is_refused(tmp_path, payload):
    path = write_pickle(tmp_path / "p.pkl", payload)
    with pytest.raises(UnsafePickleError, match="refusing to load"):
        load_pickle_arrays(path)


def test_protocol_2_array_pickle_is_refused(tmp_path):
    # Protocol 2 stores bytes through _codecs.encode, which is not on the allow-list.
    path = write_pickle(tmp_path / "p.pkl", {"W": np.zeros(2)}, protocol=2)
    ops = {op.name for op, _, _ in pickletools.genops(path.read_bytes())}
    assert "GLOBAL" in ops
    with pytest.raises(UnsafePickleError, match="_codecs.encode"):
        load_pickle_arrays(path)


@pytest.mark.parametrize("payload, message", [
    ([np.zeros(2), np.ones(2)], "holds a list"),
    (np.zeros(2), "holds a ndarray"),
    ("W1", "holds a str"),
    ({1: np.zeros(2)}, "name 1 is not a str"),
    ({"W": [1.0, 2.0]}, "'W' is a list"),
    ({"W": np.array([1, "a"], dtype=object)}, "'W' is a ndarray"),
])
def test_non_parameter_pickles_are_refused(tmp_path, payload, message):
    path = write_pickle(tmp_path / "p.pkl", payload)
    with pytest.raises(ValueError, match=message) as excinfo:
        load_pickle_arrays(path)
    assert str(path) in str(excinfo.value)


# --- .npz save / load

@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_save_load_round_trip_is_bit_exact(tmp_path, dtype):
    rng = np.random.default_rng(1)
    params = {
        "W1": rng.standard_normal((16, 1, 3, 3)).astype(dtype),
        "b1": np.array([np.nan, -0.0, np.inf, -np.inf, np.finfo(dtype).tiny / 2], dtype=dtype),
        "m/W1": rng.standard_normal(4).astype(dtype),     # optimizer-state style name
    }
    path = save_params(tmp_path / "params.npz", params)
    loaded = load_params_file(path)
    assert loaded.keys() == params.keys()
    for name, array in params.items():
        assert same_bits(loaded[name], array), name


def test_save_params_appends_npz_and_returns_the_path(tmp_path):
    written = save_params(tmp_path / "checkpoint", {"W": np.ones(3)})
    assert written == str(tmp_path / "checkpoint.npz")
    assert os.listdir(tmp_path) == ["checkpoint.npz"]
    assert save_params(tmp_path / "x.npz", {"W": np.ones(3)}) == str(tmp_path / "x.npz")


def test_saved_file_has_no_pickle(tmp_path):
    path = save_params(tmp_path / "p.npz", {"W": np.ones(3), "iter": 7})
    with np.load(path, allow_pickle=False) as archive:
        assert int(archive["iter"]) == 7


def test_save_params_refuses_object_arrays_and_reserved_names(tmp_path):
    with pytest.raises(ValueError, match="object array 'W'"):
        save_params(tmp_path / "p.npz", {"W": np.array([None, 1], dtype=object)})
    with pytest.raises(ValueError, match="'file'"):
        save_params(tmp_path / "p.npz", {"file": np.ones(2)})
    assert os.listdir(tmp_path) == []


@needs_book_pickle
def test_book_params_survive_npz_round_trip(tmp_path):
    book = load_params_file(BOOK_PICKLE)
    loaded = load_params_file(save_params(tmp_path / "book.npz", book))
    for name in book:
        assert same_bits(loaded[name], book[name]), name


def test_missing_files_name_the_path(tmp_path):
    for name in ("missing.npz", "missing.pkl"):
        with pytest.raises(FileNotFoundError, match=name):
            load_params_file(tmp_path / name)


def test_unknown_extension_names_the_path(tmp_path):
    path = tmp_path / "params.h5"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"params\.h5.*unknown extension '\.h5'"):
        load_params_file(path)


# --- atomic writes

def test_atomic_write_failure_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "params.bin"
    path.write_bytes(b"old contents")
    with pytest.raises(RuntimeError, match="midway"):
        with atomic_write(path) as f:
            f.write(b"half of the new")
            raise RuntimeError("failed midway")
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["params.bin"]


def test_atomic_write_success_replaces_file(tmp_path):
    path = tmp_path / "params.bin"
    path.write_bytes(b"old contents")
    with atomic_write(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["params.bin"]


def test_save_params_failing_midway_keeps_old_checkpoint(tmp_path, monkeypatch):
    path = save_params(tmp_path / "ckpt.npz", {"W": np.arange(3.0)})

    def savez_that_dies(file, **arrays):
        file.write(b"PK\x03\x04 truncated")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", savez_that_dies)
    with pytest.raises(OSError, match="disk full"):
        save_params(path, {"W": np.zeros(3)})
    monkeypatch.undo()

    np.testing.assert_array_equal(load_params_file(path)["W"], [0.0, 1.0, 2.0])
    assert os.listdir(tmp_path) == ["ckpt.npz"]

"""Parameter files (the book's pickle and .npz, read safely), atomic writes, the cache dir."""

import os
import pickle
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from deepnet.io import (
    ParameterFileError,
    UnsafePickleError,
    atomic_write,
    read_params,
    save_params,
    user_cache_dir,
)
from deepnet.nets import DeepConvNet
from support import BOOK_PARAMS, same_bits

needs_book_pickle = pytest.mark.skipif(not BOOK_PARAMS.exists(), reason=f"{BOOK_PARAMS} not present")

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import _reconstruct


def write_pickle(path, obj, protocol=pickle.DEFAULT_PROTOCOL):
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def peak_bytes(function, *args, **kwargs):
    """(peak bytes traced while ``function`` ran, its exception or None)."""
    tracemalloc.start()
    try:
        function(*args, **kwargs)
        error = None
    except Exception as err:
        error = err
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, error


def assert_error_names_file(excinfo, path):
    message = str(excinfo.value)
    assert str(path) in message
    assert "allow_pickle" not in message  # never suggest loading the file unsafely


SAMPLE_ARRAYS = {
    "C": np.arange(6, dtype=np.float32).reshape(2, 3),
    "F": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    "strided": np.arange(10.0)[::2],
    "big_endian": np.arange(3, dtype=">i4"),
    "empty": np.zeros((0, 3)),
    "scalar": np.array(2.5),
    "bytes": np.arange(3, dtype=np.uint8),
    "half": np.array([1.5, -0.0, np.inf], dtype=np.float16),
    "int64": np.array([-(2**62), 7]),
}


# --- the book's pickle


@needs_book_pickle
def test_book_pickle_loads():
    params = read_params(BOOK_PARAMS)
    assert sorted(params) == sorted([f"W{i}" for i in range(1, 9)] + [f"b{i}" for i in range(1, 9)])
    assert params["W1"].shape == (16, 1, 3, 3)
    assert params["W7"].shape == (1024, 50)
    assert params["W8"].shape == (50, 10)
    assert params["b8"].shape == (10,)
    for name, array in params.items():
        assert type(array) is np.ndarray and array.dtype == np.float64, name
        assert np.all(np.isfinite(array)), name
    assert params["W1"].flags.writeable  # usable as a trainable parameter


@needs_book_pickle
def test_book_pickle_matches_unrestricted_pickle():
    # The trusted file may be loaded the ordinary way to get an independent reference.
    with open(BOOK_PARAMS, "rb") as f:
        reference = pickle.load(f)
    loaded = read_params(BOOK_PARAMS, {name: value.shape for name, value in reference.items()})
    assert list(loaded) == list(reference)
    for name in reference:
        assert same_bits(loaded[name], reference[name]), name
        assert loaded[name].flags.c_contiguous == reference[name].flags.c_contiguous, name


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_array_dict_pickles_load_with_each_protocol(tmp_path, protocol):
    # Protocols 0-2 write bytes as _codecs.encode(text, 'latin1') (issue 9, item 8).
    path = write_pickle(tmp_path / "p.pkl", SAMPLE_ARRAYS, protocol)
    reference = pickle.loads(path.read_bytes())
    loaded = read_params(path)
    assert list(loaded) == list(SAMPLE_ARRAYS)
    for name, array in SAMPLE_ARRAYS.items():
        assert same_bits(loaded[name], array), name
        assert loaded[name].flags.f_contiguous == reference[name].flags.f_contiguous, name
        assert loaded[name].flags.writeable, name


# --- hostile or malformed pickles


class RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


class CallsNdarray:
    """numpy.ndarray(shape, dtype, buffer, offset): a negative offset reads process memory."""

    def __reduce__(self):
        return (np.ndarray, ((64,), np.dtype(np.uint8), b"12345678", -4096))


class ReconstructsWithState:
    """ndarray.__reduce__'s form, with a state of our choosing."""

    def __init__(self, state, shape=(0,), typecode=b"b"):
        self.state, self.shape, self.typecode = state, shape, typecode

    def __reduce__(self):
        return (_reconstruct, (np.ndarray, self.shape, self.typecode), self.state)


class PickledDtype:
    """np.dtype(typestr) followed by a state of our choosing (fields, offsets, ...)."""

    def __init__(self, typestr, state):
        self.typestr, self.state = typestr, state

    def __reduce__(self):
        return (np.dtype, (self.typestr, False, True), self.state)


def test_malicious_pickle_is_refused_without_side_effect(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = write_pickle(tmp_path / "evil.pkl", {"W1": RunsAShellCommand(marker)})
    assert b"system" in path.read_bytes()  # the payload really references os.system
    with pytest.raises(UnsafePickleError, match=r"refusing to load \w+\.system from") as excinfo:
        read_params(path)
    assert_error_names_file(excinfo, path)
    assert not marker.exists()


def test_unsafe_pickle_error_is_a_parameter_file_error_and_an_unpickling_error():
    assert issubclass(UnsafePickleError, ParameterFileError)
    assert issubclass(UnsafePickleError, pickle.UnpicklingError)
    assert issubclass(ParameterFileError, ValueError)


@pytest.mark.parametrize(
    "payload",
    [
        {"W": np.zeros(2), "extra": eval},  # builtins.eval next to a valid array
        {"W": np.zeros(2), "step": Fraction(1, 3)},  # any non-NumPy class
        {"W": np.zeros(2), "lr": np.float64(0.1)},  # NumPy scalars are not parameters either
    ],
)
def test_any_other_global_is_refused(tmp_path, payload):
    path = write_pickle(tmp_path / "p.pkl", payload)
    with pytest.raises(UnsafePickleError, match="refusing to load"):
        read_params(path)


def test_pickle_may_not_call_ndarray_with_an_offset(tmp_path):
    # Issue 9, item 5: the old unpickler handed the pickle numpy.ndarray itself.
    path = write_pickle(tmp_path / "p.pkl", {"W": CallsNdarray()})
    with pytest.raises(UnsafePickleError, match=r"may not call numpy\.ndarray") as excinfo:
        read_params(path)
    assert_error_names_file(excinfo, path)


@pytest.mark.parametrize(
    "dtype_state",
    [
        # Issue 9, item 6: a field at offset 4096 of an 8-byte item.
        (3, "|", None, ("a",), {"a": (np.dtype("<f8"), 4096)}, 8, 1, 16),
        # A subarray dtype.
        (3, "|", (np.dtype("<f8"), (2,)), None, None, 16, 8, 16),
    ],
)
def test_structured_and_subarray_dtypes_are_refused(tmp_path, dtype_state):
    dtype = PickledDtype("V8", dtype_state)
    array = ReconstructsWithState((1, (1,), dtype, False, bytes(8)))
    path = write_pickle(tmp_path / "p.pkl", {"W": array})
    with pytest.raises(ParameterFileError, match=r"'W' has dtype 'V8 with fields or a subarray'"):
        read_params(path)


@pytest.mark.parametrize(
    "state, message",
    [
        ((1, (3,), np.dtype("<f8"), False, bytes(8)), r"has 8 bytes of data, shape \(3,\) of float64 needs 24"),
        ((1, (-1,), np.dtype("<f8"), False, b""), "must be a shape, a dtype, a bool and its data"),
        ((1, (1,), np.dtype("<f8"), 1, bytes(8)), "must be a shape, a dtype, a bool and its data"),
        ((1, (1,), np.dtype("<f8"), False, "x" * 8), r"has no bytes of data, shape \(1,\)"),
        ((2, (1,), np.dtype("<f8"), False, bytes(8)), "unknown ndarray state version 2"),
    ],
)
def test_inconsistent_array_states_are_refused(tmp_path, state, message):
    path = write_pickle(tmp_path / "p.pkl", {"W": ReconstructsWithState(state)})
    with pytest.raises(ParameterFileError, match=message) as excinfo:
        read_params(path)
    assert_error_names_file(excinfo, path)


@pytest.mark.parametrize(
    "array",
    [
        np.array([True, False]),
        np.array([1 + 2j]),
        np.array(["2020-01-01"], dtype="datetime64[D]"),
        np.array([b"ab"]),
        np.array(["ab"]),
        np.array([1, "a"], dtype=object),
        np.zeros(2, dtype=np.longdouble),
    ],
)
@pytest.mark.parametrize("extension", [".pkl", ".npz"])
def test_non_numeric_arrays_are_refused_not_cast(tmp_path, array, extension):
    # Issue 9, item 9: only integer and floating-point arrays come out of a parameter file.
    path = tmp_path / f"p{extension}"
    params = {"W": np.zeros(2), "b": array}
    if extension == ".pkl":
        write_pickle(path, params)
    else:
        np.savez(path, **params)  # allow_pickle: the object array is written too
    with pytest.raises(ParameterFileError, match=r"'b'|refusing") as excinfo:
        read_params(path)
    assert_error_names_file(excinfo, path)


def test_a_60_byte_pickle_cannot_make_the_loader_allocate(tmp_path):
    # Issue 9, item 7: _reconstruct(ndarray, (50_000_000,), b'O') made NumPy allocate (and
    # fill with None) a 400 MB object array before anything was checked.
    n = 50_000_000
    payload = (
        b"\x80\x03cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        + b"J"
        + struct.pack("<i", n)
        + b"\x85C\x01O\x87R."
    )
    path = tmp_path / "attack.pkl"
    path.write_bytes(payload)
    assert len(payload) < 70
    peak, error = peak_bytes(read_params, path)
    assert isinstance(error, UnsafePickleError), error
    assert peak < 1 << 20


def test_a_huge_memo_index_cannot_make_the_unpickler_allocate(tmp_path):
    # LONG_BINPUT 20_000_000: CPython's unpickler resizes its memo to twice the index (320 MB).
    path = tmp_path / "memo.pkl"
    path.write_bytes(b"\x80\x04}r" + struct.pack("<I", 20_000_000) + b".")
    peak, error = peak_bytes(read_params, path)
    assert isinstance(error, ParameterFileError) and "memo index" in str(error), error
    assert peak < 1 << 20


def test_a_pickle_of_many_small_objects_is_refused_before_it_is_run(tmp_path):
    # 1 MB of TUPLE1 opcodes would make the unpickler build a million tuples (60 MB).
    path = tmp_path / "tuples.pkl"
    path.write_bytes(b"\x80\x02N" + b"\x85" * 1_000_000 + b".")
    peak, error = peak_bytes(read_params, path)
    assert isinstance(error, ParameterFileError) and "pickle opcodes" in str(error), error
    assert peak < 2 << 20


@pytest.mark.parametrize(
    "opcodes",
    [
        b"\x80\x02cnumpy\ndtype\n)\x81.",  # NEWOBJ
        b"\x80\x02\x82\x01.",  # EXT1
        b"\x80\x02P1\n.",  # PERSID
    ],
)
def test_opcodes_a_dict_of_arrays_does_not_need_are_refused(tmp_path, opcodes):
    path = tmp_path / "p.pkl"
    path.write_bytes(opcodes)
    with pytest.raises(UnsafePickleError, match="refusing pickle opcode"):
        read_params(path)


def test_pickle_may_not_set_attributes_on_the_stand_ins(tmp_path):
    # BUILD with a (dict state, slot state) pair sets attributes with setattr().
    payload = b"\x80\x02cnumpy\ndtype\nN}X\x05\x00\x00\x00_callK\x01s\x86b."
    path = tmp_path / "p.pkl"
    path.write_bytes(payload)
    with pytest.raises(ParameterFileError):
        read_params(path)
    assert read_params(write_pickle(tmp_path / "ok.pkl", {"W": np.ones(2)}))["W"].tolist() == [1, 1]


@pytest.mark.parametrize(
    "payload, message",
    [
        ([np.zeros(2), np.ones(2)], "holds a list"),
        (np.zeros(2), "holds a ndarray"),
        ("W1", "holds a str"),
        ({1: np.zeros(2)}, "name 1 is not a str"),
        ({"W": [1.0, 2.0]}, "'W' is a list"),
    ],
)
def test_non_parameter_pickles_are_refused(tmp_path, payload, message):
    path = write_pickle(tmp_path / "p.pkl", payload)
    with pytest.raises(ParameterFileError, match=message) as excinfo:
        read_params(path)
    assert_error_names_file(excinfo, path)


@needs_book_pickle
@pytest.mark.parametrize("cut", [0, 1, 100, 5000, -2])
def test_truncated_book_pickle_names_the_file(tmp_path, cut):
    path = tmp_path / "cut.pkl"
    path.write_bytes(BOOK_PARAMS.read_bytes()[:cut])
    with pytest.raises(ParameterFileError, match="not a valid") as excinfo:
        read_params(path)
    assert_error_names_file(excinfo, path)


# --- .npz save / read


def test_save_load_round_trip_is_bit_exact(tmp_path, dtype):
    rng = np.random.default_rng(1)
    params = {
        "W1": rng.standard_normal((16, 1, 3, 3)).astype(dtype),
        "b1": np.array([np.nan, -0.0, np.inf, -np.inf, np.finfo(dtype).tiny / 2], dtype=dtype),
        "m/W1": rng.standard_normal(4).astype(dtype),  # optimizer-state style name
    }
    path = save_params(tmp_path / "params.npz", params)
    loaded = read_params(path, {name: value.shape for name, value in params.items()})
    assert loaded.keys() == params.keys()
    for name, array in params.items():
        assert same_bits(loaded[name], array), name


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_layouts_and_byte_orders_round_trip(tmp_path, compressed):
    path = tmp_path / "p.npz"
    (np.savez_compressed if compressed else np.savez)(path, **SAMPLE_ARRAYS)
    loaded = read_params(path)
    assert list(loaded) == list(SAMPLE_ARRAYS)
    with np.load(path) as reference:
        for name, array in SAMPLE_ARRAYS.items():
            assert same_bits(loaded[name], array), name
            assert loaded[name].flags.f_contiguous == reference[name].flags.f_contiguous, name
            assert loaded[name].flags.writeable, name


def test_save_params_appends_npz_and_returns_the_path(tmp_path):
    written = save_params(tmp_path / "checkpoint", {"W": np.ones(3)})
    assert written == str(tmp_path / "checkpoint.npz")
    assert os.listdir(tmp_path) == ["checkpoint.npz"]
    assert save_params(tmp_path / "x.npz", {"W": np.ones(3)}) == str(tmp_path / "x.npz")


def test_saved_file_has_no_pickle(tmp_path):
    path = save_params(tmp_path / "p.npz", {"W": np.ones(3), "iter": 7})
    with np.load(path, allow_pickle=False) as archive:
        assert int(archive["iter"]) == 7
    assert int(read_params(path)["iter"]) == 7


def test_save_params_refuses_object_arrays_and_reserved_names(tmp_path):
    with pytest.raises(ValueError, match="object array 'W'"):
        save_params(tmp_path / "p.npz", {"W": np.array([None, 1], dtype=object)})
    with pytest.raises(ValueError, match="'file'"):
        save_params(tmp_path / "p.npz", {"file": np.ones(2)})
    assert os.listdir(tmp_path) == []


@needs_book_pickle
def test_book_params_survive_npz_round_trip(tmp_path):
    book = read_params(BOOK_PARAMS)
    loaded = read_params(save_params(tmp_path / "book.npz", book))
    for name in book:
        assert same_bits(loaded[name], book[name]), name


def test_missing_files_name_the_path(tmp_path):
    for name in ("missing.npz", "missing.pkl"):
        with pytest.raises(FileNotFoundError, match=name):
            read_params(tmp_path / name)


def test_unknown_extension_names_the_path(tmp_path):
    path = tmp_path / "params.h5"
    path.write_bytes(b"")
    with pytest.raises(ParameterFileError, match=r"params\.h5.*unknown extension '\.h5'"):
        read_params(path)


# --- what the caller expects: names, shapes, subsets

EXPECTED = {"W1": (2, 3), "b1": (3,), "W2": (3, 1)}


def expected_arrays():
    return {name: np.full(shape, i, dtype=np.float32) for i, (name, shape) in enumerate(EXPECTED.items())}


@pytest.fixture(params=[".npz", ".pkl"])
def params_file(request, tmp_path):
    """A function writing name -> array as a .npz or a .pkl, returning its path."""

    def write(arrays, name="p"):
        path = tmp_path / (name + request.param)
        if request.param == ".npz":
            np.savez(path, **arrays)
        else:
            write_pickle(path, arrays)
        return path

    return write


def test_expected_names_and_shapes_load(params_file):
    loaded = read_params(params_file(expected_arrays()), EXPECTED)
    assert {name: value.shape for name, value in loaded.items()} == EXPECTED
    assert loaded["W2"].tolist() == [[2.0]] * 3


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p.pop("b1"), "parameter 'b1' is missing"),
        (lambda p: p.update(W9=np.zeros(2)), "unexpected parameter 'W9'"),
        (lambda p: p.update(W2=np.zeros((1, 3))), r"'W2' has shape \(1, 3\), expected \(3, 1\)"),
    ],
)
def test_mismatch_with_expected_is_refused_and_names_the_file(params_file, change, message):
    arrays = expected_arrays()
    change(arrays)
    path = params_file(arrays)
    with pytest.raises(ParameterFileError, match=message) as excinfo:
        read_params(path, EXPECTED)
    assert_error_names_file(excinfo, path)


def test_a_subset_is_read_with_strict_false(params_file):
    arrays = expected_arrays()
    arrays["head"] = np.zeros(5)  # in the file, not asked for: ignored
    path = params_file(arrays)
    subset = {"W1": (2, 3), "extra": (4,)}  # "extra" is not in the file: left out
    loaded = read_params(path, subset, strict=False)
    assert list(loaded) == ["W1"]
    assert same_bits(loaded["W1"], arrays["W1"])
    with pytest.raises(ParameterFileError, match="'W1' has shape"):
        read_params(path, {"W1": (3, 2)}, strict=False)  # shapes are still checked


def test_a_shape_of_none_accepts_any_shape(params_file):
    loaded = read_params(params_file(expected_arrays()), {**EXPECTED, "W1": None})
    assert loaded["W1"].shape == (2, 3)


def test_entries_not_asked_for_are_never_read(tmp_path):
    # A bool array the caller did not ask for is skipped, unread, not refused.
    path = tmp_path / "p.npz"
    np.savez(path, W=np.ones(2), mask=np.array([True]))
    assert list(read_params(path, {"W": (2,)}, strict=False)) == ["W"]


def test_max_bytes_limits_the_file_and_the_arrays(params_file):
    path = params_file({"W": np.zeros(1000)})
    with pytest.raises(ParameterFileError, match=r"more than .* \(max_bytes\)"):
        read_params(path, max_bytes=4000)
    assert read_params(path, max_bytes=10_000)["W"].shape == (1000,)


def test_text_entries_of_a_checkpoint(tmp_path):
    path = tmp_path / "ckpt.npz"
    np.savez(path, **{"param/W": np.ones(2), "epoch": 3, "config": '{"lr": 0.1}'})
    state = read_params(path, text=["config"])
    assert state["config"] == '{"lr": 0.1}' and isinstance(state["config"], str)
    assert int(state["epoch"]) == 3
    with pytest.raises(ParameterFileError, match="'history' is missing"):
        read_params(path, text=["config", "history"])
    with pytest.raises(ParameterFileError, match="'config' has dtype '<U11'"):
        read_params(path)  # a string that was not asked for as text


# --- corrupt and hostile .npz files


def npz_bytes(arrays, compression=zipfile.ZIP_STORED):
    """An .npz as np.savez writes it, with a choice of compression."""
    import io as stdlib_io

    buffer = stdlib_io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, array in arrays.items():
            with archive.open(name + ".npy", "w") as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


def npy_bytes(array):
    import io as stdlib_io

    buffer = stdlib_io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def build_zip(members):
    """A zip of deflated members, name -> (deflated bytes, declared size, declared CRC-32)."""
    local, directory = bytearray(), bytearray()
    for name, (deflated, size, crc) in members.items():
        offset, encoded = len(local), name.encode()
        local += (
            struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(deflated), size, len(encoded), 0)
            + encoded
            + deflated
        )
        directory += (
            struct.pack(
                "<4s6H3I5H2I",
                b"PK\x01\x02",
                20,
                20,
                0,
                8,
                0,
                0,
                crc,
                len(deflated),
                size,
                len(encoded),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + encoded
        )
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(members), len(members), len(directory), len(local), 0)
    return bytes(local + directory + end)


def test_a_member_inflating_beyond_its_declared_size_is_refused_while_inflating(tmp_path):
    # Header, directory entry and CRC agree on 2 float64 (144 bytes); the deflate stream
    # goes on for 50 MB more.
    content = npy_bytes(np.zeros(2))
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = deflate.compress(content + bytes(50_000_000)) + deflate.flush()
    path = tmp_path / "bomb.npz"
    path.write_bytes(build_zip({"W.npy": (deflated, len(content), zlib.crc32(content))}))
    assert path.stat().st_size < 100_000
    with np.load(path) as archive:  # zipfile stops at the declared size and says nothing
        assert archive["W"].shape == (2,)
    peak, error = peak_bytes(read_params, path, {"W": (2,)})
    assert isinstance(error, ParameterFileError), error
    assert "inflates to more than the 144 bytes its zip entry declares" in str(error)
    assert peak < 4 << 20
    # The same member, honestly sized, loads.
    honest = build_zip({"W.npy": (zlib.compress(content)[2:-4], len(content), zlib.crc32(content))})
    path.write_bytes(honest)
    assert read_params(path, {"W": (2,)})["W"].tolist() == [0.0, 0.0]


def test_a_small_npz_declaring_gigabytes_is_refused_from_its_headers(tmp_path):
    # Issue 9, item 7: 1 MB of deflated zeros declares a 400 MB array. The missing name
    # is seen in the zip directory, the size in the .npy header: nothing is inflated.
    n = 50_000_000
    header = {"descr": "<f8", "fortran_order": False, "shape": (n,)}
    path = tmp_path / "big.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("W1.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            zeros = bytes(1 << 22)
            for _ in range(n * 8 // len(zeros)):
                member.write(zeros)
    assert path.stat().st_size < 1 << 20
    expected = {"W1": (16, 1, 3, 3), "b1": (16,)}
    peak, error = peak_bytes(read_params, path, expected)
    assert isinstance(error, ParameterFileError) and "'b1' is missing" in str(error), error
    assert peak < 1 << 20
    peak, error = peak_bytes(read_params, path, {"W1": (16, 1, 3, 3)})
    assert isinstance(error, ParameterFileError) and "has shape (50000000,)" in str(error), error
    assert peak < 1 << 20
    peak, error = peak_bytes(read_params, path)
    assert isinstance(error, ParameterFileError) and "(max_bytes)" in str(error), error
    assert peak < 1 << 20


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda data: data[: len(data) // 2], "not a valid .npz file"),
        (lambda data: b"not a zip at all", "not a valid .npz file"),
        (lambda data: b"", "not a valid .npz file"),
        (lambda data: data.replace(b"\x00\x00\xf0\x3f", b"\x00\x00\xf0\x40"), "CRC-32"),
        (lambda data: data.replace(b"'descr': '<f8'", b"'descr': '|O8'"), "has dtype '|O8'"),
        (lambda data: data.replace(b"'descr': '<f8'", b"'descr': [1,2]"), "has dtype"),
        (lambda data: data.replace(b"'shape': (3,)", b"'shape': (3.)"), "invalid .npy header"),
        (lambda data: data.replace(b"\x93NUMPY", b"\x93NUMPZ"), "not an .npy array"),
        (lambda data: data.replace(b"{'descr'", b"{'de'cr'"), "unreadable .npy header"),
    ],
)
def test_corrupt_npz_gives_a_clear_error_naming_the_file(tmp_path, corrupt, message):
    data = corrupt(npz_bytes({"W": np.ones(3), "b": np.zeros(2)}))
    path = tmp_path / "p.npz"
    path.write_bytes(data)
    with pytest.raises(ParameterFileError, match=message) as excinfo:
        read_params(path)
    assert_error_names_file(excinfo, path)


def test_npz_with_other_members_is_refused(tmp_path):
    path = tmp_path / "p.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("W.npy", npy_bytes(np.ones(1)))
        archive.writestr("notes.txt", b"hello")
    with pytest.raises(ParameterFileError, match="'notes.txt' is not an .npy array"):
        read_params(path)


# --- loading into a network is all-or-nothing


@pytest.mark.parametrize("extension", [".npz", ".pkl"])
@pytest.mark.parametrize("last", [np.array(["not a number"] * 10), np.zeros(10, dtype=complex)])
def test_failed_load_params_changes_nothing(tmp_path, extension, last):
    # Issue 9, item 9: the earlier parameters were overwritten before the last one failed.
    source, target = DeepConvNet(seed=1), DeepConvNet(seed=2)
    params = dict(source.params)
    params["b8"] = last  # the last entry
    path = tmp_path / f"p{extension}"
    if extension == ".npz":
        np.savez(path, **params)
    else:
        write_pickle(path, params)
    before = {name: value.copy() for name, value in target.params.items()}
    with pytest.raises(ParameterFileError, match="'b8'") as excinfo:
        target.load_params(path)
    assert_error_names_file(excinfo, path)
    for name, value in before.items():
        assert same_bits(target.params[name], value), name


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

    np.testing.assert_array_equal(read_params(path)["W"], [0.0, 1.0, 2.0])
    assert os.listdir(tmp_path) == ["ckpt.npz"]


WRITER = textwrap.dedent("""
    import sys
    from deepnet.io import atomic_write
    with atomic_write(sys.argv[1]) as f:
        f.write(b"x" * 100_000)
        f.flush()
        print("writing", flush=True)
        sys.stdin.readline()   # hold the temporary file until told to finish (or killed)
        f.write(b"y")
""")


def start_writer(path):
    """A process inside atomic_write(path), its temporary file written, waiting on stdin."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline() == "writing\n"
    return writer


def temporaries(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


def test_next_write_removes_temporaries_of_killed_writers_only(tmp_path):
    # Issue 9, item 12: 50 kills left 39 temporaries (314 MB) behind.
    path = tmp_path / "ckpt.npz"
    for _ in range(3):
        killed = start_writer(path)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        killed.stdin.close()
        killed.stdout.close()
    assert len(temporaries(tmp_path)) == 3
    other_target = start_writer(tmp_path / "other.npz")
    other_target.kill()
    other_target.wait()
    live = start_writer(path)
    try:
        with atomic_write(path) as f:
            f.write(b"done")
        # The live writer's temporary stays (and that of another file, not ours to judge).
        remaining = temporaries(tmp_path)
        assert len(remaining) == 2
        assert any(name.startswith(f".ckpt.npz.{live.pid}-") for name in remaining)
        assert any(name.startswith(".other.npz.") for name in remaining)
        live.stdin.write("finish\n")
        live.stdin.close()
        assert live.wait(timeout=60) == 0
    finally:
        live.kill()
        live.wait()
        live.stdout.close()
    assert path.read_bytes() == b"x" * 100_000 + b"y"
    assert temporaries(tmp_path) == [name for name in remaining if name.startswith(".other")]


def test_rewrite_keeps_the_files_mode(tmp_path):
    path = tmp_path / "secret.npz"
    path.write_bytes(b"old")
    path.chmod(0o600)
    with atomic_write(path) as f:
        f.write(b"new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == b"new"


def test_new_file_gets_the_umask_mode(tmp_path):
    old_umask = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "new.bin") as f:
            f.write(b"x")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "new.bin").stat().st_mode) == 0o640


def test_rewrite_writes_through_a_symlink(tmp_path):
    (tmp_path / "runs").mkdir()
    real = tmp_path / "runs" / "params-v3.npz"
    save_params(real, {"W": np.zeros(2)})
    link = tmp_path / "params.npz"
    link.symlink_to(Path("runs") / "params-v3.npz")
    save_params(link, {"W": np.ones(2)})
    assert link.is_symlink() and os.readlink(link) == os.path.join("runs", "params-v3.npz")
    np.testing.assert_array_equal(read_params(real)["W"], [1.0, 1.0])
    assert sorted(os.listdir(tmp_path)) == ["params.npz", "runs"]
    assert os.listdir(tmp_path / "runs") == ["params-v3.npz"]


# --- the user cache directory


def test_user_cache_dir_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "xdg" / "deepnet"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # the XDG spec: ignore it
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "deepnet"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "deepnet"


def test_entry_limits_refuse_a_large_entry_from_its_header(tmp_path):
    """A model file's spec is capped (1 MiB) before a byte of it is read."""
    path = save_params(tmp_path / "spec.npz", {"spec": np.zeros(4 << 20, np.uint8), "W": np.ones(3)})
    tracemalloc.start()
    try:
        with pytest.raises(
            ParameterFileError,
            match=r"spec.npz: entry 'spec' takes 4194304 bytes, more than "
            r"the 1048576 bytes it may have",
        ):
            read_params(path, {"spec": None}, strict=False, entry_limits={"spec": 1 << 20})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert read_params(path, {"W": None}, strict=False, entry_limits={"spec": 1 << 20}).keys() == {"W"}


def test_names_a_pickle_gives_are_shortened_in_messages(tmp_path):
    """A pickle's global names, and names read from a file, may be megabytes long."""
    module = "m" * 1_000_000
    data = b"c" + module.encode() + b"\nsystem\n."  # GLOBAL opcode: module, then name
    path = tmp_path / "long.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError) as excinfo:
        read_params(path)
    assert len(str(excinfo.value)) < 400 and "mmm..." in str(excinfo.value)
    path = write_pickle(tmp_path / "names.pkl", {"n" * 1_000_000: np.zeros(2)})
    with pytest.raises(ParameterFileError) as excinfo:
        read_params(path, {"W": None})
    assert len(str(excinfo.value)) < 400

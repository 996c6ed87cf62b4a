"""Reading a pickled dict of arrays (the book's ``.pkl``) without handing the pickle NumPy.

The unpickler gives a pickle stand-ins instead of NumPy's array-rebuilding callables: they
only record the shape, dtype and raw bytes each array claims. The arrays are built with
np.frombuffer once everything is checked, so no pickle can make NumPy allocate, read
memory at an offset, or build a dtype of its choosing.
"""

from __future__ import annotations

import math
import pickle
import pickletools
from io import BytesIO
from typing import Any, Callable, Dict, Tuple, cast

import numpy as np

from deepnet._paramcheck import Request, UnsafePickleError, cut, is_shape, parsing, short

__all__ = ["read_pkl"]

# Opcodes that build objects from classes or reach outside the pickle; a dict of arrays
# needs none of them (every other opcode only builds str, bytes, numbers and containers).
_REFUSED_OPCODES = frozenset(
    {
        "INST",
        "OBJ",
        "NEWOBJ",
        "NEWOBJ_EX",
        "EXT1",
        "EXT2",
        "EXT4",
        "PERSID",
        "BINPERSID",
        "NEXT_BUFFER",
        "READONLY_BUFFER",
    }
)
_MEMO_PUT_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
# A dict of arrays takes about 30 opcodes per array (the book's file: 457 for 16 arrays).
_PICKLE_OPCODE_LIMIT = 100_000


def read_pkl(data: bytes, request: Request) -> Dict[str, Any]:
    """The arrays of a pickled dict of arrays that ``request`` selects, each checked before it is built."""
    _scan_pickle(data, request)
    unpickler = _ArrayOnlyUnpickler(BytesIO(data), request.path)
    with parsing(request, "not a valid parameter pickle"):
        try:
            loaded = unpickler.load()
        except _NotAPlainArray as err:
            raise UnsafePickleError(f"{request.path}: {err}") from None
    if not isinstance(loaded, dict):
        raise request.error(f"holds a {_type_name(loaded)}, expected a dict of name -> ndarray")
    for name, value in loaded.items():
        if not isinstance(name, str):
            raise request.error(f"parameter name {short(name)} is not a str")
        if not isinstance(value, _PickledArray) or value.data is None:
            raise request.error(f"parameter {short(name)} is a {_type_name(value)}, expected a numeric ndarray")
    names = request.select(list(loaded))
    dtypes = request.check({name: (loaded[name].shape, loaded[name].descriptor()) for name in names})
    for name in names:
        array = loaded[name]
        needed = math.prod(array.shape) * dtypes[name].itemsize
        found = len(array.data) if isinstance(array.data, (bytes, bytearray)) else "no"
        if found != needed:
            raise request.error(
                f"parameter {short(name)} has {found} bytes of data, "
                f"shape {array.shape} of {dtypes[name]} needs {needed}"
            )
    return {name: loaded[name].build(dtypes[name]) for name in names}


def _scan_pickle(data: bytes, request: Request) -> None:
    """Refuse opcodes a dict of arrays does not need, memo indices it cannot have, and more
    opcodes than it can need (each may build an object: 1 byte of file, 60 of memory).

    CPython's unpickler grows its memo to twice the largest index it is told to store at
    (a 9-byte pickle could make it allocate 1.6 GB); a pickler numbers its memo 0, 1, 2...
    """
    count, memo_size, largest_index = 0, 0, -1
    with parsing(request, "not a valid pickle"):
        for op, arg, _ in pickletools.genops(data):
            count += 1
            if count > _PICKLE_OPCODE_LIMIT:
                raise request.error(f"more than {_PICKLE_OPCODE_LIMIT} pickle opcodes: not a dict of arrays")
            if op.name in _REFUSED_OPCODES:
                raise UnsafePickleError(
                    f"{request.path}: refusing pickle opcode {op.name}: a parameter pickle only rebuilds NumPy arrays"
                )
            if op.name in _MEMO_PUT_OPCODES:
                largest_index = max(largest_index, cast(int, arg))  # a PUT opcode's argument is its index
            memo_size += op.name in _MEMO_PUT_OPCODES or op.name == "MEMOIZE"
    if largest_index >= memo_size:
        raise request.error(f"not a valid pickle (memo index {largest_index} of {memo_size})")


class _NotAPlainArray(Exception):
    """Raised by the stand-ins: the pickle rebuilds something other than a plain array."""


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler whose only globals are stand-ins that record arrays (see _PickledArray).

    ``find_class`` is the only way a pickle reaches callables (os.system, eval, ...);
    refusing every other global makes loading side-effect free.
    """

    def __init__(self, file: BytesIO, path: str) -> None:
        super().__init__(file)
        self._path = path
        self._globals = _stand_ins()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._globals[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {cut(module)}.{cut(name)} from {self._path!r}: "
                f"a parameter pickle may only rebuild NumPy arrays"
            ) from None


class _StandIn:
    """What a pickle gets for a global it may name: a callable it cannot change."""

    __slots__ = ("_name", "_call")
    _name: str
    _call: Callable[..., Any]

    def __init__(self, name: str, call: Callable[..., Any]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_call", call)

    def __setattr__(self, attribute: str, value: Any) -> None:  # the BUILD opcode sets attributes
        raise _NotAPlainArray(f"a pickle may not set {short(attribute)} on {self._name}")

    def __call__(self, *args: Any) -> Any:
        return self._call(*args)


def _stand_ins() -> Dict[Tuple[str, str], _StandIn]:
    """(module, name) a parameter pickle may reference -> its stand-in, fresh for each load.

    What NumPy's pickles reference, with the module paths of NumPy 1.x (the book's file)
    and 2.x; protocols 0-2 write bytes as ``_codecs.encode(text, 'latin1')``, and empty
    bytes as ``__builtin__.bytes()``; protocol 5 uses ``_frombuffer``.
    """
    ndarray = _StandIn("numpy.ndarray", _refuse_ndarray_call)

    def start_array(cls: Any, shape: Any, typecode: Any) -> _PickledArray:
        # ndarray.__reduce__ gives _reconstruct(ndarray, (0,), b'b'), then BUILD sets the state
        if cls is not ndarray or shape != (0,) or typecode != b"b":
            raise _NotAPlainArray("_reconstruct may only start a plain ndarray")
        return _PickledArray()

    reconstruct = _StandIn("numpy._core.multiarray._reconstruct", start_array)
    frombuffer = _StandIn("numpy._core.numeric._frombuffer", _PickledArray.from_buffer)
    dtype = _StandIn("numpy.dtype", _PickledDtype)
    encode = _StandIn("_codecs.encode", _latin1_encode)
    empty_bytes = _StandIn("bytes", _empty_bytes)
    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy.core.numeric", "_frombuffer"): frombuffer,
        ("numpy._core.numeric", "_frombuffer"): frombuffer,
        ("numpy", "ndarray"): ndarray,
        ("numpy", "dtype"): dtype,
        ("_codecs", "encode"): encode,
        ("__builtin__", "bytes"): empty_bytes,
        ("builtins", "bytes"): empty_bytes,
    }


def _refuse_ndarray_call(*args: Any) -> None:
    raise _NotAPlainArray("a pickle may not call numpy.ndarray(shape, dtype, buffer, offset)")


def _latin1_encode(text: Any, encoding: Any) -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _NotAPlainArray("_codecs.encode may only turn latin1 text into bytes")
    return text.encode("latin1")


def _empty_bytes() -> bytes:
    return b""


class _PickledDtype:
    """A dtype as a pickle describes it: numpy.dtype(typestr, align, copy), then its state."""

    __slots__ = ("typestr", "state")

    def __init__(self, typestr: Any, align: Any = False, copy: Any = True) -> None:
        self.typestr: Any = typestr
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        if self.state is not None:
            raise _NotAPlainArray("a dtype's state is set twice")
        self.state = state

    def descriptor(self) -> str:
        """'<f8'-style text for a dtype without fields or subarray; otherwise what it is."""
        state = self.state
        if state is None:
            return self.typestr
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not (isinstance(state, tuple) and len(state) in (8, 9)):
            return "a dtype with an unknown state"
        byteorder, subarray, names, fields = state[1:5]
        if subarray is not None or names is not None or fields is not None:
            return f"{self.typestr} with fields or a subarray"
        if byteorder not in ("<", ">", "|", "=") or not isinstance(self.typestr, str):
            return "a dtype with an unknown byte order"
        return ("" if byteorder == "|" else byteorder) + self.typestr


class _PickledArray:
    """An array as a pickle describes it (shape, dtype, order, raw bytes), not yet built."""

    __slots__ = ("shape", "dtype", "fortran", "data")

    def __init__(self) -> None:
        self.shape: Any = None
        self.dtype: Any = None
        self.fortran: Any = None
        self.data: Any = None

    def __setstate__(self, state: Any) -> None:
        # ndarray.__setstate__'s argument: ([version,] shape, dtype, is_fortran, raw data)
        if self.data is not None or not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _NotAPlainArray("an ndarray's state must be set once, as a 4- or 5-tuple")
        if len(state) == 5 and state[0] != 1:
            raise _NotAPlainArray(f"unknown ndarray state version {short(state[0])}")
        self._set(*state[-4:])

    @classmethod
    def from_buffer(cls, buffer: Any, dtype: Any, shape: Any, order: Any) -> _PickledArray:
        if order not in ("C", "F"):
            raise _NotAPlainArray(f"unknown array order {short(order)}")
        array = cls()
        array._set(shape, dtype, order == "F", buffer)
        return array

    def _set(self, shape: Any, dtype: Any, fortran: Any, data: Any) -> None:
        # The data is checked once the dtype is (an object array holds a list).
        if not (is_shape(shape) and isinstance(dtype, _PickledDtype) and type(fortran) is bool):
            raise _NotAPlainArray("an ndarray's state must be a shape, a dtype, a bool and its data")
        self.shape, self.dtype, self.fortran, self.data = shape, dtype, fortran, data

    def descriptor(self) -> str:
        return str(self.dtype.descriptor())

    def build(self, dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
        """The array, once dtype and size were checked: a writable copy, independent of the pickle."""
        array = np.frombuffer(self.data, dtype).reshape(self.shape, order="F" if self.fortran else "C")
        return array.copy(order="K")


def _type_name(value: Any) -> str:
    if isinstance(value, _PickledArray):
        return "ndarray"
    if isinstance(value, _StandIn):
        return value._name
    return type(value).__name__

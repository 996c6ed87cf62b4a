"""Parameter files read and written: ``read_params`` (an ``.npz`` or the book's ``.pkl``,
trusted in nothing) and ``save_params`` (an ``.npz``, written atomically)."""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Mapping, Optional, Union

import numpy as np

from deepnet._array import to_cpu
from deepnet._atomic import atomic_write
from deepnet._npz import read_npz
from deepnet._paramcheck import Expected, ParameterFileError, Request, parsing, short
from deepnet._pkl import read_pkl

__all__ = ["DEFAULT_MAX_BYTES", "read_params", "save_params"]

# A file system path as the functions here take it.
PathLike = Union[str, "os.PathLike[str]"]

# Parameter files of the networks here are a few MB; a training checkpoint a few times that.
DEFAULT_MAX_BYTES = 256 << 20


def read_params(
    path: PathLike,
    expected: Optional[Mapping[str, Optional[Iterable[int]]]] = None,
    *,
    strict: bool = True,
    optional: Iterable[str] = (),
    text: Iterable[str] = (),
    max_bytes: int = DEFAULT_MAX_BYTES,
    entry_limits: Optional[Mapping[str, int]] = None,
) -> Dict[str, Any]:
    """Read a parameter file (``.npz``, or a pickled dict like the book's ``.pkl``) safely.

    Returns a dict name -> NumPy array. Only integer and floating-point arrays come out,
    in the file's dtype (the caller casts); bool, complex, datetime, string, object and
    structured arrays are refused, never cast. Every name, dtype and shape is checked
    (for an ``.npz`` from its zip directory and ``.npy`` headers) before any array is
    allocated, so a failed read returns nothing and costs little memory.

    Parameters
    ----------
    expected
        name -> shape (a tuple, or None for any shape) of what the caller will use.
        None: every entry of the file, of any shape.
    strict
        With ``expected``, the file must hold exactly those names. With
        ``strict=False`` the expected names that the file holds are read and the
        rest of the file is ignored (a subset, e.g. for transfer learning); compare
        the result's keys with ``expected`` to see what was missing.
    optional
        Expected names that may be missing even with ``strict`` (a model file's
        spec and buffers, which a plain parameter file does not have).
    text
        Names of ``.npz`` entries saved from a ``str`` (a checkpoint's JSON); they
        are returned as ``str`` and required like expected names.
    max_bytes
        Limit on the file's size and on the arrays read from it together.
    entry_limits
        name -> the most bytes that entry's array may take (a model file's JSON
        spec), checked from its header like everything else.

    Raises FileNotFoundError for a missing file and ParameterFileError (a ValueError whose
    message names the file) for anything wrong with it.
    """
    path = os.fspath(path)
    extension = os.path.splitext(path)[1].lower()
    if extension not in (".npz", ".pkl"):
        raise ParameterFileError(
            f"cannot load parameters from {path!r}: unknown extension {short(extension)} (expected .npz or .pkl)"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"parameter file not found: {path!r}")
    shapes: Optional[Expected] = None
    if expected is not None:
        shapes = {name: None if shape is None else tuple(int(n) for n in shape) for name, shape in expected.items()}
    request = Request(path, shapes, strict, frozenset(text), max_bytes, frozenset(optional), dict(entry_limits or {}))
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size > max_bytes:
            raise ParameterFileError(
                f"{path}: {size} bytes, more than the {max_bytes} bytes a parameter file may have (max_bytes)"
            )
        arrays = read_npz(file, request) if extension == ".npz" else read_pkl(file.read(size), request)
    for name in request.text.intersection(arrays):
        with parsing(request, f"entry {short(name)} is not a valid string"):
            arrays[name] = str(arrays[name].item())
    return arrays


# np.savez's own keyword arguments: an array passed under one of these names would be
# taken as the argument instead of being saved.
_SAVEZ_RESERVED_NAMES = ("file", "allow_pickle")


def save_params(path: PathLike, params: Mapping[str, Any]) -> str:
    """Write ``params`` (name -> array) to an uncompressed ``.npz`` atomically; return the path.

    Path handling: ``.npz`` is appended when ``path`` does not already end with it (what
    np.savez does for a file name). This must be done here because np.savez is handed the
    open temporary file of atomic_write, and never appends anything to a file object.
    Object arrays are refused, so the file always loads with allow_pickle=False.
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    arrays: Dict[str, Any] = {}
    for name, value in params.items():
        if name in _SAVEZ_RESERVED_NAMES:
            raise ValueError(
                f"cannot save a parameter named {short(name)} to {path!r}: "
                f"np.savez reserves the names {_SAVEZ_RESERVED_NAMES}"
            )
        array = to_cpu(value)
        if array.dtype.hasobject:
            raise ValueError(f"cannot save object array {short(name)} to {path!r} without pickle")
        arrays[name] = array
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)
    return path

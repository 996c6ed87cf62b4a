"""MNIST's file format, IDX, read strictly: header, exact payload length, and the SHA-256 of
the four MNIST files (their names and digests are here too), so that a damaged or wrong file
raises an error instead of producing a silently wrong array."""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import zlib
from typing import IO, Any, Optional, Tuple, Union

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MNIST_SHA256",
    "MNIST_FILES",
    "IMAGE_SIZE",
    "NUM_CLASSES",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "IDX_UBYTE",
    "GZIP_MAGIC",
    "PathLike",
    "MNISTFormatError",
    "read_idx",
]

# SHA-256 of the *decompressed* files (the .gz wrapper differs between mirrors).
# Same values as data/mnist/SHA256SUMS.idx; embedded so verification never needs that file.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

# The book's names for the four arrays -> the file each comes from.
MNIST_FILES = {
    "train_img": "train-images-idx3-ubyte",
    "train_label": "train-labels-idx1-ubyte",
    "test_img": "t10k-images-idx3-ubyte",
    "test_label": "t10k-labels-idx1-ubyte",
}

IMAGE_SIZE = 28
NUM_CLASSES = 10
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
IDX_UBYTE = 0x08
GZIP_MAGIC = b"\x1f\x8b"

# A file system path as the functions here take it.
PathLike = Union[str, "os.PathLike[str]"]


class MNISTFormatError(ValueError):
    """An MNIST/IDX file is malformed, truncated, or not the expected content."""


def read_idx(path_or_fileobj: Union[PathLike, IO[bytes]], name: Optional[str] = None) -> NDArray[np.uint8]:
    """Read one IDX file of unsigned bytes (gzip-compressed or not) into a uint8 array.

    ``name`` is used in error messages and to recognise the four MNIST files, whose
    decompressed content must match ``MNIST_SHA256``; it defaults to the file's path.
    Raises ``MNISTFormatError`` on any malformed, truncated or unexpected content.

    Parameters
    ----------
    path_or_fileobj : str, os.PathLike or binary file object
        The file, gzip-compressed or not (recognised by its magic bytes).
    name : str, optional
        The name used in error messages and to recognise an MNIST file.

    Returns
    -------
    numpy.ndarray
        A writable uint8 array of the shape the IDX header gives.

    Raises
    ------
    MNISTFormatError
        A malformed, truncated or unexpected file (an MNIST file whose digest differs).
    """
    name = name or _source_name(path_or_fileobj)
    data = _decompress(_read_all(path_or_fileobj), name)
    dims, header_len = _parse_header(data, name)
    _check_payload_length(len(data) - header_len, dims, name)
    _check_digest(data, name)
    # Copy so the array is writable and independent of the file's bytes.
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims).copy()


def _source_name(path_or_fileobj: Any) -> str:
    if hasattr(path_or_fileobj, "read"):
        return str(getattr(path_or_fileobj, "name", "<stream>"))
    return os.fspath(path_or_fileobj)


def _read_all(path_or_fileobj: Any) -> bytes:
    if hasattr(path_or_fileobj, "read"):
        return path_or_fileobj.read()
    with open(path_or_fileobj, "rb") as f:
        return f.read()


def _decompress(raw: bytes, name: str) -> bytes:
    # Detect gzip by its magic bytes, not the file name: IDX files start with 0x0000.
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise MNISTFormatError(f"{name}: corrupt or truncated gzip stream ({err})") from err


def _parse_header(data: bytes, name: str) -> Tuple[Tuple[int, ...], int]:
    """Return (dims, header length) after checking the magic number."""
    if len(data) < 4:
        raise MNISTFormatError(f"{name}: {len(data)} bytes, too short for an IDX magic number (4 bytes)")
    magic = int.from_bytes(data[:4], "big")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    expected = f"expected 0x{IDX_IMAGES_MAGIC:08x} (images) or 0x{IDX_LABELS_MAGIC:08x} (labels)"
    if zero != 0:
        raise MNISTFormatError(f"{name}: not an IDX file: magic number 0x{magic:08x}, {expected}")
    if dtype_code != IDX_UBYTE:
        raise MNISTFormatError(
            f"{name}: IDX data type byte 0x{dtype_code:02x}, expected 0x{IDX_UBYTE:02x} (unsigned byte)"
        )
    if magic not in (IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC):
        raise MNISTFormatError(f"{name}: magic number 0x{magic:08x} ({ndim} dimensions), {expected}")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise MNISTFormatError(
            f"{name}: {len(data)} bytes, too short for an IDX header with {ndim} dimensions ({header_len} bytes)"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    return dims, header_len


def _check_payload_length(found: int, dims: Tuple[int, ...], name: str) -> None:
    expected = math.prod(dims)
    if found != expected:
        problem = "truncated" if found < expected else "trailing data after the payload"
        raise MNISTFormatError(f"{name}: payload is {found} bytes, expected {expected} for shape {dims} ({problem})")


def _check_digest(data: bytes, name: str) -> None:
    stem = os.path.basename(name).removesuffix(".gz")
    expected = MNIST_SHA256.get(stem)
    if expected is None:
        return  # not one of the MNIST files: nothing to compare against
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise MNISTFormatError(
            f"{name}: SHA-256 of the decompressed content is {actual}, expected {expected} "
            f"(the file is damaged or is not the original MNIST {stem})"
        )

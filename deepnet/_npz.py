"""Reading an ``.npz`` parameter file without trusting it: the zip directory, then each
member's ``.npy`` header, then the data, each checked against the request first."""

from __future__ import annotations

import ast
import math
import os
import struct
import zipfile
import zlib
from typing import IO, Any, Dict, Iterator, Optional, Tuple

import numpy as np

from deepnet._paramcheck import Request, is_shape, parsing, short

__all__ = ["read_npz"]

# (shape, fortran order, dtype descriptor, header size) of one .npy member.
Header = Tuple[Tuple[int, ...], bool, Any, int]

_NPY_MAGIC = b"\x93NUMPY"
_NPY_HEADER_LIMIT = 10000  # what np.load allows; deepnet's headers are about 120 bytes


def read_npz(file: IO[bytes], request: Request) -> Dict[str, Any]:
    """The arrays of an ``.npz`` file that ``request`` selects, each checked before it is read."""
    with parsing(request, "not a valid .npz file"):
        with zipfile.ZipFile(file) as archive:
            infos = archive.infolist()
    members: Dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise request.error(f"entry {short(info.filename)} is not an .npy array")
        name = info.filename[: -len(".npy")]
        if name in members:
            raise request.error(f"parameter {short(name)} is stored twice")
        members[name] = info
    names = request.select(list(members))
    headers = {name: _read_npy_header(file, members[name], request, name) for name in names}
    dtypes = request.check({name: (header[0], header[2]) for name, header in headers.items()})
    for name in names:
        shape, _, _, header_size = headers[name]
        nbytes = math.prod(shape) * dtypes[name].itemsize
        if members[name].file_size != header_size + nbytes:
            raise request.error(
                f"entry {short(name)} holds {members[name].file_size - header_size} "
                f"bytes of data, its header says {nbytes}"
            )
    arrays: Dict[str, Any] = {}
    for name in names:
        shape, fortran, _, header_size = headers[name]
        arrays[name] = _read_npy_data(file, members[name], request, name, header_size, shape, fortran, dtypes[name])
    return arrays


def _read_npy_header(file: IO[bytes], info: zipfile.ZipInfo, request: Request, name: str) -> Header:
    """(shape, fortran_order, descr, header size) of one member, from its first bytes only."""
    member = _ZipMember(file, info, request, name)
    prefix = member.read(len(_NPY_MAGIC) + 2)
    major = prefix[len(_NPY_MAGIC)]
    if prefix[: len(_NPY_MAGIC)] != _NPY_MAGIC or major not in (1, 2):
        # (format 3.0 exists only for structured arrays with non-Latin-1 field names)
        raise request.error(f"entry {short(name)} is not an .npy array of format 1.0 or 2.0")
    length_format = "<H" if major == 1 else "<I"
    (length,) = struct.unpack(length_format, member.read(struct.calcsize(length_format)))
    if length > _NPY_HEADER_LIMIT:
        raise request.error(
            f"entry {short(name)} has a {length}-byte .npy header, more than the {_NPY_HEADER_LIMIT} bytes one needs"
        )
    with parsing(request, f"entry {short(name)} has an unreadable .npy header"):
        header = ast.literal_eval(member.read(length).decode("latin1"))
    if not (
        isinstance(header, dict)
        and header.keys() == {"descr", "fortran_order", "shape"}
        and type(header["fortran_order"]) is bool
        and is_shape(header["shape"])
    ):
        raise request.error(f"entry {short(name)} has an invalid .npy header {short(header)}")
    header_size = len(prefix) + struct.calcsize(length_format) + length
    return header["shape"], header["fortran_order"], header["descr"], header_size


def _read_npy_data(
    file: IO[bytes],
    info: zipfile.ZipInfo,
    request: Request,
    name: str,
    header_size: int,
    shape: Tuple[int, ...],
    fortran: bool,
    dtype: np.dtype[Any],
) -> np.ndarray[Any, Any]:
    member = _ZipMember(file, info, request, name)
    member.read(header_size)  # parsed already
    raw = np.empty(math.prod(shape) * dtype.itemsize, np.uint8)
    member.readinto(raw.data)
    member.finish()
    return raw.view(dtype).reshape(shape, order="F" if fortran else "C")


class _ZipMember:
    """The uncompressed bytes of one zip member, decompressed chunk by chunk.

    zipfile's own reader silently stops at the size a member's directory entry declares;
    this one refuses a member that inflates to more (a compression bomb is stopped after
    one chunk) or to less, or whose CRC-32 does not match the directory's.
    """

    _CHUNK = 1 << 16
    _LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... file name and extra field lengths

    def __init__(self, file: IO[bytes], info: zipfile.ZipInfo, request: Request, name: str) -> None:
        self._where = f"entry {short(name)}"
        self._request = request
        if info.flag_bits & 0x1:
            raise request.error(f"{self._where} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise request.error(
                f"{self._where} is compressed with zip method {info.compress_type}; "
                f"only stored and deflated entries are read"
            )
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise request.error(f"{self._where}: stored with {info.compress_size} bytes for {info.file_size}")
        with parsing(request, f"{self._where}: its zip directory entry is corrupt"):
            file.seek(info.header_offset)
            local = file.read(self._LOCAL_HEADER.size)
        if len(local) != self._LOCAL_HEADER.size or local[:4] != b"PK\x03\x04":
            raise request.error(f"{self._where}: no zip local header where the directory says")
        _, name_length, extra_length = self._LOCAL_HEADER.unpack(local)
        file.seek(name_length + extra_length, os.SEEK_CUR)
        self._file, self._info = file, info
        self._compressed_left = info.compress_size
        self._produced, self._crc = 0, 0
        self._pending = memoryview(b"")
        self._chunks = self._decompressed_chunks()

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes (only small headers are read this way)."""
        buffer = bytearray(size)
        self.readinto(memoryview(buffer))
        return bytes(buffer)

    def readinto(self, view: memoryview) -> None:
        """Fill the byte memoryview ``view`` exactly."""
        filled = 0
        while filled < len(view):
            if not self._pending:
                chunk = self._pull()
                if chunk is None:
                    raise self._request.error(f"{self._where} is truncated: it ends after {self._produced} bytes")
                self._pending = memoryview(chunk)
            take = min(len(self._pending), len(view) - filled)
            view[filled : filled + take] = self._pending[:take]
            self._pending = self._pending[take:]
            filled += take

    def finish(self) -> None:
        """Check that the member has no more bytes than were read and that its CRC matches."""
        if self._pending or self._pull() is not None:
            raise self._request.error(f"{self._where} has more data than its header says")
        if self._crc != self._info.CRC:
            raise self._request.error(f"{self._where} is corrupt (CRC-32 mismatch)")

    def _pull(self) -> Optional[bytes]:
        """The next chunk of uncompressed bytes, or None at the end of the member."""
        with parsing(self._request, f"{self._where} is corrupt"):
            chunk = next(self._chunks, None)
        if chunk is None:
            return None
        self._produced += len(chunk)
        if self._produced > self._info.file_size:
            raise self._request.error(
                f"{self._where} inflates to more than the {self._info.file_size} bytes its zip entry declares"
            )
        self._crc = zlib.crc32(chunk, self._crc)
        return chunk

    def _decompressed_chunks(self) -> Iterator[bytes]:
        if self._info.compress_type == zipfile.ZIP_STORED:
            while self._compressed_left:
                yield self._read_compressed()
            return
        inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        while not inflate.eof:
            chunk = inflate.decompress(inflate.unconsumed_tail or self._read_compressed(), self._CHUNK)
            if chunk:
                yield chunk
        if inflate.unused_data or self._compressed_left:
            raise self._request.error(f"{self._where} has data after its deflate stream")

    def _read_compressed(self) -> bytes:
        data = self._file.read(min(self._CHUNK, self._compressed_left))
        if not data:
            raise self._request.error(f"{self._where} is truncated")
        self._compressed_left -= len(data)
        return data

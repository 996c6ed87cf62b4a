"""Files deepnet writes and reads: atomic writes, the user cache directory, parameter files.

A parameter file (an ``.npz`` deepnet wrote, or the book's ``.pkl``) comes from outside, so
``read_params`` trusts nothing in it: only plain integer and floating-point arrays come out,
and their names, dtypes and shapes are checked against what the caller expects before any
array is allocated. Memory use stays a small multiple of the file's size and of the arrays
returned, whatever the file claims.
"""

import ast
import contextlib
import hashlib
import math
import os
import pickle
import pickletools
import platform
import re
import secrets
import stat
import struct
import zipfile
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np

from deepnet._array import to_cpu
from deepnet._errors import short_repr

__all__ = [
    "atomic_write",
    "user_cache_dir",
    "DEFAULT_MAX_BYTES",
    "ParameterFileError",
    "UnsafePickleError",
    "read_params",
    "save_params",
]


# ---------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------

# A temporary file is named ".<target>.<pid>-<host>-<random>.tmp": the pid and host say
# whether its writer can still be alive, so a later write can remove it if it cannot.
_HOST_ID = hashlib.sha256(platform.node().encode()).hexdigest()[:8]


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file beside ``path``; rename it over ``path`` only on success.

    A crash (or an exception inside the ``with`` block) leaves any previous file untouched
    and no half-written file behind; the temporary file of a writer that was killed outright
    is removed by the next successful write of the same file. An existing file keeps its
    permission bits, and a symbolic link stays a link: the file it points to is replaced.
    """
    target = os.path.realpath(path)
    directory, name = os.path.split(target)
    os.makedirs(directory, exist_ok=True)
    tmp, fd = _create_temporary(directory, name)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _remove_stale_temporaries(directory, name)


def _create_temporary(directory, name):
    """(path, fd) of a new file; mode 0666 less the umask, like any file open() creates."""
    while True:
        tmp = os.path.join(directory, f".{name}.{os.getpid()}-{_HOST_ID}-{secrets.token_hex(4)}.tmp")
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue


def _remove_stale_temporaries(directory, name):
    """Remove the temporaries of writers of ``name`` (on this host) that no longer run."""
    if os.name != "posix":
        return  # os.kill(pid, 0) would not test for a process there
    pattern = re.compile(re.escape(f".{name}.") + rf"(\d+)-{_HOST_ID}-[0-9a-f]{{8}}\.tmp")
    try:
        entries = os.listdir(directory)
    except OSError:
        return  # the write itself succeeded; cleaning up is a courtesy
    for entry in entries:
        match = pattern.fullmatch(entry)
        if match and not _process_exists(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, entry))


def _process_exists(pid):
    if pid <= 0:
        return True  # not a pid a writer has; os.kill would signal a process group
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or no pid at all: leave its file alone
    return True


def user_cache_dir():
    """Where deepnet keeps caches and downloads: ``$XDG_CACHE_HOME/deepnet``, else ``~/.cache/deepnet``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec says to ignore a relative path
        base = Path.home() / ".cache"
    return Path(base) / "deepnet"


# ---------------------------------------------------------------------------
# Reading parameter files
# ---------------------------------------------------------------------------

# Parameter files of the networks here are a few MB; a training checkpoint a few times that.
DEFAULT_MAX_BYTES = 256 << 20

# The dtypes a parameter may have: integer and floating-point of 1 to 8 bytes, any byte order.
_NUMERIC_DESCR = re.compile(r"[<>|=]?(?:[iu][1248]|f[248])")
_TEXT_DESCR = re.compile(r"[<>|=]?U[0-9]{1,9}")


class ParameterFileError(ValueError):
    """A parameter file is malformed, holds something other than plain numeric arrays, or
    does not hold what the caller expects. The message names the file."""


class UnsafePickleError(ParameterFileError, pickle.UnpicklingError):
    """A pickle asked for something that rebuilding plain NumPy arrays does not need."""


def read_params(
    path, expected=None, *, strict=True, optional=(), text=(), max_bytes=DEFAULT_MAX_BYTES, entry_limits=None
):
    """Read a parameter file (``.npz``, or a pickled dict like the book's ``.pkl``) safely.

    Returns a dict name -> NumPy array. Only integer and floating-point arrays come out,
    in the file's dtype (the caller casts); bool, complex, datetime, string, object and
    structured arrays are refused, never cast. Every name, dtype and shape is checked
    (for an ``.npz`` from its zip directory and ``.npy`` headers) before any array is
    allocated, so a failed read returns nothing and costs little memory.

    expected:  name -> shape (a tuple, or None for any shape) of what the caller will use.
               None: every entry of the file, of any shape.
    strict:    with ``expected``, the file must hold exactly those names. With
               ``strict=False`` the expected names that the file holds are read and the
               rest of the file is ignored (a subset, e.g. for transfer learning); compare
               the result's keys with ``expected`` to see what was missing.
    optional:  expected names that may be missing even with ``strict`` (a model file's
               spec and buffers, which a plain parameter file does not have).
    text:      names of ``.npz`` entries saved from a ``str`` (a checkpoint's JSON); they
               are returned as ``str`` and required like expected names.
    max_bytes: limit on the file's size and on the arrays read from it together.
    entry_limits: name -> the most bytes that entry's array may take (a model file's JSON
               spec), checked from its header like everything else.

    Raises FileNotFoundError for a missing file and ParameterFileError (a ValueError whose
    message names the file) for anything wrong with it.
    """
    path = os.fspath(path)
    extension = os.path.splitext(path)[1].lower()
    if extension not in (".npz", ".pkl"):
        raise ParameterFileError(
            f"cannot load parameters from {path!r}: unknown extension {_short(extension)} (expected .npz or .pkl)"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"parameter file not found: {path!r}")
    if expected is not None:
        expected = {name: None if shape is None else tuple(int(n) for n in shape) for name, shape in expected.items()}
    request = _Request(
        path, expected, strict, frozenset(text), max_bytes, frozenset(optional), dict(entry_limits or {})
    )
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size > max_bytes:
            raise ParameterFileError(
                f"{path}: {size} bytes, more than the {max_bytes} bytes a parameter file may have (max_bytes)"
            )
        arrays = _read_npz(file, request) if extension == ".npz" else _read_pkl(file.read(size), request)
    for name in request.text.intersection(arrays):
        with _parsing(request, f"entry {_short(name)} is not a valid string"):
            arrays[name] = str(arrays[name].item())
    return arrays


class _Request:
    """What a read_params call asks for; checks entries against it (shared by both formats)."""

    def __init__(self, path, expected, strict, text, max_bytes, optional=frozenset(), entry_limits=None):
        self.path, self.expected, self.strict = path, expected, strict
        self.text, self.max_bytes, self.optional = text, max_bytes, optional
        self.entry_limits = entry_limits or {}

    def error(self, message):
        return ParameterFileError(f"{self.path}: {message}")

    def select(self, names):
        """The file's ``names`` to read, in file order, after the missing/unexpected checks."""
        wanted = None if self.expected is None else self.expected.keys() | self.text
        if self.strict:
            present = set(names)
            for name in [*(self.expected or ()), *sorted(self.text)]:
                if name not in present and name not in self.optional:
                    raise self.error(f"parameter {_short(name)} is missing")
            for name in names:
                if wanted is not None and name not in wanted:
                    raise self.error(f"unexpected parameter {_short(name)}")
        return [name for name in names if wanted is None or name in wanted]

    def check(self, entries):
        """Check ``entries`` (name -> (shape, dtype descriptor)); return name -> np.dtype."""
        dtypes, total = {}, 0
        for name, (shape, descr) in entries.items():
            dtype = self._check_entry(name, shape, descr)
            nbytes = math.prod(shape) * dtype.itemsize
            limit = self.entry_limits.get(name)
            if limit is not None and nbytes > limit:
                raise self.error(f"entry {_short(name)} takes {nbytes} bytes, more than the {limit} bytes it may have")
            total += nbytes
            dtypes[name] = dtype
        if total > self.max_bytes:
            raise self.error(
                f"its arrays take {total} bytes, more than the limit of {self.max_bytes} bytes (max_bytes)"
            )
        return dtypes

    def _check_entry(self, name, shape, descr):
        is_text = name in self.text
        pattern = _TEXT_DESCR if is_text else _NUMERIC_DESCR
        if not (isinstance(descr, str) and pattern.fullmatch(descr)):
            expected = (
                "expected a string"
                if is_text
                else "a parameter file holds only integer and floating-point arrays (of 1 to 8 bytes per item)"
            )
            raise self.error(f"parameter {_short(name)} has dtype {_short(descr)}; {expected}")
        expected_shape = () if is_text else (self.expected or {}).get(name)
        if expected_shape is not None and shape != expected_shape:
            raise self.error(f"parameter {_short(name)} has shape {_short(shape)}, expected {expected_shape}")
        return np.dtype(descr)


def _cut(text):
    """A str from a file (a pickle's module name), cut short without quotes."""
    text = str(text)
    return text if len(text) <= 80 else text[:77] + "..."


_short = short_repr


@contextlib.contextmanager
def _parsing(request, what):
    """Report any failure of a parser reading the file's bytes as a ParameterFileError."""
    try:
        yield
    except (ParameterFileError, MemoryError):
        raise
    except Exception as err:  # a parser of untrusted bytes can fail in any way
        raise request.error(f"{what} ({type(err).__name__}: {str(err)[:200]})") from err


# --- .npz: the zip directory, then each member's .npy header, then the data ----------

_NPY_MAGIC = b"\x93NUMPY"
_NPY_HEADER_LIMIT = 10000  # what np.load allows; deepnet's headers are about 120 bytes


def _read_npz(file, request):
    with _parsing(request, "not a valid .npz file"):
        with zipfile.ZipFile(file) as archive:
            infos = archive.infolist()
    members = {}
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise request.error(f"entry {_short(info.filename)} is not an .npy array")
        name = info.filename[: -len(".npy")]
        if name in members:
            raise request.error(f"parameter {_short(name)} is stored twice")
        members[name] = info
    names = request.select(list(members))
    headers = {name: _read_npy_header(file, members[name], request, name) for name in names}
    dtypes = request.check({name: (header[0], header[2]) for name, header in headers.items()})
    for name in names:
        shape, _, _, header_size = headers[name]
        nbytes = math.prod(shape) * dtypes[name].itemsize
        if members[name].file_size != header_size + nbytes:
            raise request.error(
                f"entry {_short(name)} holds {members[name].file_size - header_size} "
                f"bytes of data, its header says {nbytes}"
            )
    arrays = {}
    for name in names:
        shape, fortran, _, header_size = headers[name]
        arrays[name] = _read_npy_data(file, members[name], request, name, header_size, shape, fortran, dtypes[name])
    return arrays


def _read_npy_header(file, info, request, name):
    """(shape, fortran_order, descr, header size) of one member, from its first bytes only."""
    member = _ZipMember(file, info, request, name)
    prefix = member.read(len(_NPY_MAGIC) + 2)
    major = prefix[len(_NPY_MAGIC)]
    if prefix[: len(_NPY_MAGIC)] != _NPY_MAGIC or major not in (1, 2):
        # (format 3.0 exists only for structured arrays with non-Latin-1 field names)
        raise request.error(f"entry {_short(name)} is not an .npy array of format 1.0 or 2.0")
    length_format = "<H" if major == 1 else "<I"
    (length,) = struct.unpack(length_format, member.read(struct.calcsize(length_format)))
    if length > _NPY_HEADER_LIMIT:
        raise request.error(
            f"entry {_short(name)} has a {length}-byte .npy header, more than the {_NPY_HEADER_LIMIT} bytes one needs"
        )
    with _parsing(request, f"entry {_short(name)} has an unreadable .npy header"):
        header = ast.literal_eval(member.read(length).decode("latin1"))
    if not (
        isinstance(header, dict)
        and header.keys() == {"descr", "fortran_order", "shape"}
        and type(header["fortran_order"]) is bool
        and _is_shape(header["shape"])
    ):
        raise request.error(f"entry {_short(name)} has an invalid .npy header {_short(header)}")
    header_size = len(prefix) + struct.calcsize(length_format) + length
    return header["shape"], header["fortran_order"], header["descr"], header_size


def _is_shape(shape):
    return isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)


def _read_npy_data(file, info, request, name, header_size, shape, fortran, dtype):
    member = _ZipMember(file, info, request, name)
    member.read(header_size)  # parsed already
    raw = np.empty(math.prod(shape) * dtype.itemsize, np.uint8)
    member.readinto(memoryview(raw))
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

    def __init__(self, file, info, request, name):
        self._where = f"entry {_short(name)}"
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
        with _parsing(request, f"{self._where}: its zip directory entry is corrupt"):
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

    def read(self, size):
        """Exactly ``size`` bytes (only small headers are read this way)."""
        buffer = bytearray(size)
        self.readinto(memoryview(buffer))
        return bytes(buffer)

    def readinto(self, view):
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

    def finish(self):
        """Check that the member has no more bytes than were read and that its CRC matches."""
        if self._pending or self._pull() is not None:
            raise self._request.error(f"{self._where} has more data than its header says")
        if self._crc != self._info.CRC:
            raise self._request.error(f"{self._where} is corrupt (CRC-32 mismatch)")

    def _pull(self):
        """The next chunk of uncompressed bytes, or None at the end of the member."""
        with _parsing(self._request, f"{self._where} is corrupt"):
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

    def _decompressed_chunks(self):
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

    def _read_compressed(self):
        data = self._file.read(min(self._CHUNK, self._compressed_left))
        if not data:
            raise self._request.error(f"{self._where} is truncated")
        self._compressed_left -= len(data)
        return data


# --- .pkl: a pickled dict of arrays, rebuilt without handing the pickle NumPy ----------
#
# The unpickler gives a pickle stand-ins instead of NumPy's array-rebuilding callables: they
# only record the shape, dtype and raw bytes each array claims. The arrays are built with
# np.frombuffer once everything is checked, so no pickle can make NumPy allocate, read
# memory at an offset, or build a dtype of its choosing.

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


def _read_pkl(data, request):
    _scan_pickle(data, request)
    unpickler = _ArrayOnlyUnpickler(BytesIO(data), request.path)
    with _parsing(request, "not a valid parameter pickle"):
        try:
            loaded = unpickler.load()
        except _NotAPlainArray as err:
            raise UnsafePickleError(f"{request.path}: {err}") from None
    if not isinstance(loaded, dict):
        raise request.error(f"holds a {_type_name(loaded)}, expected a dict of name -> ndarray")
    for name, value in loaded.items():
        if not isinstance(name, str):
            raise request.error(f"parameter name {_short(name)} is not a str")
        if not isinstance(value, _PickledArray) or value.data is None:
            raise request.error(f"parameter {_short(name)} is a {_type_name(value)}, expected a numeric ndarray")
    names = request.select(list(loaded))
    dtypes = request.check({name: (loaded[name].shape, loaded[name].descriptor()) for name in names})
    for name in names:
        array = loaded[name]
        needed = math.prod(array.shape) * dtypes[name].itemsize
        found = len(array.data) if isinstance(array.data, (bytes, bytearray)) else "no"
        if found != needed:
            raise request.error(
                f"parameter {_short(name)} has {found} bytes of data, "
                f"shape {array.shape} of {dtypes[name]} needs {needed}"
            )
    return {name: loaded[name].build(dtypes[name]) for name in names}


def _scan_pickle(data, request):
    """Refuse opcodes a dict of arrays does not need, memo indices it cannot have, and more
    opcodes than it can need (each may build an object: 1 byte of file, 60 of memory).

    CPython's unpickler grows its memo to twice the largest index it is told to store at
    (a 9-byte pickle could make it allocate 1.6 GB); a pickler numbers its memo 0, 1, 2...
    """
    count, memo_size, largest_index = 0, 0, -1
    with _parsing(request, "not a valid pickle"):
        for op, arg, _ in pickletools.genops(data):
            count += 1
            if count > _PICKLE_OPCODE_LIMIT:
                raise request.error(f"more than {_PICKLE_OPCODE_LIMIT} pickle opcodes: not a dict of arrays")
            if op.name in _REFUSED_OPCODES:
                raise UnsafePickleError(
                    f"{request.path}: refusing pickle opcode {op.name}: a parameter pickle only rebuilds NumPy arrays"
                )
            if op.name in _MEMO_PUT_OPCODES:
                largest_index = max(largest_index, arg)
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

    def __init__(self, file, path):
        super().__init__(file)
        self._path = path
        self._globals = _stand_ins()

    def find_class(self, module, name):
        try:
            return self._globals[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {_cut(module)}.{_cut(name)} from {self._path!r}: "
                f"a parameter pickle may only rebuild NumPy arrays"
            ) from None


class _StandIn:
    """What a pickle gets for a global it may name: a callable it cannot change."""

    __slots__ = ("_name", "_call")

    def __init__(self, name, call):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_call", call)

    def __setattr__(self, attribute, value):  # the BUILD opcode sets attributes
        raise _NotAPlainArray(f"a pickle may not set {_short(attribute)} on {self._name}")

    def __call__(self, *args):
        return self._call(*args)


def _stand_ins():
    """(module, name) a parameter pickle may reference -> its stand-in, fresh for each load.

    What NumPy's pickles reference, with the module paths of NumPy 1.x (the book's file)
    and 2.x; protocols 0-2 write bytes as ``_codecs.encode(text, 'latin1')``, and empty
    bytes as ``__builtin__.bytes()``; protocol 5 uses ``_frombuffer``.
    """
    ndarray = _StandIn("numpy.ndarray", _refuse_ndarray_call)

    def reconstruct(cls, shape, typecode):
        # ndarray.__reduce__ gives _reconstruct(ndarray, (0,), b'b'), then BUILD sets the state
        if cls is not ndarray or shape != (0,) or typecode != b"b":
            raise _NotAPlainArray("_reconstruct may only start a plain ndarray")
        return _PickledArray()

    reconstruct = _StandIn("numpy._core.multiarray._reconstruct", reconstruct)
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


def _refuse_ndarray_call(*args):
    raise _NotAPlainArray("a pickle may not call numpy.ndarray(shape, dtype, buffer, offset)")


def _latin1_encode(text, encoding):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _NotAPlainArray("_codecs.encode may only turn latin1 text into bytes")
    return text.encode("latin1")


def _empty_bytes():
    return b""


class _PickledDtype:
    """A dtype as a pickle describes it: numpy.dtype(typestr, align, copy), then its state."""

    __slots__ = ("typestr", "state")

    def __init__(self, typestr, align=False, copy=True):
        self.typestr, self.state = typestr, None

    def __setstate__(self, state):
        if self.state is not None:
            raise _NotAPlainArray("a dtype's state is set twice")
        self.state = state

    def descriptor(self):
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

    def __init__(self):
        self.shape = self.dtype = self.fortran = self.data = None

    def __setstate__(self, state):
        # ndarray.__setstate__'s argument: ([version,] shape, dtype, is_fortran, raw data)
        if self.data is not None or not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _NotAPlainArray("an ndarray's state must be set once, as a 4- or 5-tuple")
        if len(state) == 5 and state[0] != 1:
            raise _NotAPlainArray(f"unknown ndarray state version {_short(state[0])}")
        self._set(*state[-4:])

    @classmethod
    def from_buffer(cls, buffer, dtype, shape, order):
        if order not in ("C", "F"):
            raise _NotAPlainArray(f"unknown array order {_short(order)}")
        array = cls()
        array._set(shape, dtype, order == "F", buffer)
        return array

    def _set(self, shape, dtype, fortran, data):
        # The data is checked once the dtype is (an object array holds a list).
        if not (_is_shape(shape) and isinstance(dtype, _PickledDtype) and type(fortran) is bool):
            raise _NotAPlainArray("an ndarray's state must be a shape, a dtype, a bool and its data")
        self.shape, self.dtype, self.fortran, self.data = shape, dtype, fortran, data

    def descriptor(self):
        return self.dtype.descriptor()

    def build(self, dtype):
        """The array, once dtype and size were checked: a writable copy, independent of the pickle."""
        array = np.frombuffer(self.data, dtype).reshape(self.shape, order="F" if self.fortran else "C")
        return array.copy(order="K")


def _type_name(value):
    if isinstance(value, _PickledArray):
        return "ndarray"
    if isinstance(value, _StandIn):
        return value._name
    return type(value).__name__


# ---------------------------------------------------------------------------
# Writing parameter files
# ---------------------------------------------------------------------------

# np.savez's own keyword arguments: an array passed under one of these names would be
# taken as the argument instead of being saved.
_SAVEZ_RESERVED_NAMES = ("file", "allow_pickle")


def save_params(path, params):
    """Write ``params`` (name -> array) to an uncompressed ``.npz`` atomically; return the path.

    Path handling: ``.npz`` is appended when ``path`` does not already end with it (what
    np.savez does for a file name). This must be done here because np.savez is handed the
    open temporary file of atomic_write, and never appends anything to a file object.
    Object arrays are refused, so the file always loads with allow_pickle=False.
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    arrays = {}
    for name, value in params.items():
        if name in _SAVEZ_RESERVED_NAMES:
            raise ValueError(
                f"cannot save a parameter named {_short(name)} to {path!r}: "
                f"np.savez reserves the names {_SAVEZ_RESERVED_NAMES}"
            )
        array = to_cpu(value)
        if array.dtype.hasobject:
            raise ValueError(f"cannot save object array {_short(name)} to {path!r} without pickle")
        arrays[name] = array
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)
    return path

"""Files deepnet writes and reads: atomic writes, parameter files, the book's pickle."""
import contextlib
import os
import pickle
import tempfile

import numpy as np

from deepnet._cuda import to_cpu

__all__ = [
    "atomic_write", "UnsafePickleError", "load_pickle_arrays", "save_params", "load_params_file",
]


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file beside ``path``; rename it over ``path`` only on success.

    A crash (or an exception inside the ``with`` block) leaves any previous file untouched
    and no half-written file behind.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual mode
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------
# The book's pickle, loaded without running arbitrary code
# ---------------------------------------------------------------------------

class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global that rebuilding NumPy arrays does not need."""


def _numpy_rebuild_functions():
    """NumPy's private array-rebuilding functions (they moved to numpy._core in NumPy 2)."""
    try:
        from numpy._core.multiarray import _reconstruct
        from numpy._core.numeric import _frombuffer
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _reconstruct
        from numpy.core.numeric import _frombuffer
    return _reconstruct, _frombuffer


def _allowed_globals():
    """(module, name) a parameter pickle may reference -> the object to hand back.

    Both spellings of NumPy's module paths are accepted, so pickles written by NumPy 1.x
    (the book's file uses numpy.core.multiarray._reconstruct) and 2.x load on either.
    ``_frombuffer`` is what NumPy uses for pickle protocol 5.
    """
    reconstruct, frombuffer = _numpy_rebuild_functions()
    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy.core.numeric", "_frombuffer"): frombuffer,
        ("numpy._core.numeric", "_frombuffer"): frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild NumPy arrays and nothing else.

    ``find_class`` is the only way a pickle reaches callables (os.system, eval, ...);
    refusing every global outside a short allow-list makes loading side-effect free.
    """

    def __init__(self, file, path):
        super().__init__(file)
        self._path = path
        self._allowed = _allowed_globals()

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name} from {self._path!r}: "
                f"a parameter pickle may only rebuild NumPy arrays") from None


def load_pickle_arrays(path):
    """Load a pickled ``dict`` of name -> numeric ndarray (e.g. the book's params .pkl) safely.

    Raises UnsafePickleError if the pickle references any global other than NumPy's
    array-rebuilding functions, and ValueError if the top-level object is not a dict of
    str -> ndarray (object arrays are refused too: they are not parameters).
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        loaded = _ArrayOnlyUnpickler(f, path).load()
    if not isinstance(loaded, dict):
        raise ValueError(
            f"{path!r} holds a {type(loaded).__name__}, expected a dict of name -> ndarray")
    for name, value in loaded.items():
        if not isinstance(name, str):
            raise ValueError(f"{path!r}: parameter name {name!r} is not a str")
        if not isinstance(value, np.ndarray) or value.dtype.hasobject:
            raise ValueError(
                f"{path!r}: parameter {name!r} is a {type(value).__name__}, "
                f"expected a numeric ndarray")
    return loaded


# ---------------------------------------------------------------------------
# Parameter files (.npz written by deepnet, .pkl from the book)
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
            raise ValueError(f"cannot save a parameter named {name!r} to {path!r}: "
                             f"np.savez reserves the names {_SAVEZ_RESERVED_NAMES}")
        array = to_cpu(value)
        if array.dtype.hasobject:
            raise ValueError(f"cannot save object array {name!r} to {path!r} without pickle")
        arrays[name] = array
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def load_params_file(path):
    """Read a parameter file into a dict name -> NumPy array.

    ``.npz``: loaded with allow_pickle=False.  ``.pkl``: loaded with load_pickle_arrays.
    Raises FileNotFoundError for a missing file and ValueError for any other extension.
    """
    path = os.fspath(path)
    extension = os.path.splitext(path)[1].lower()
    if extension not in (".npz", ".pkl"):
        raise ValueError(
            f"cannot load parameters from {path!r}: unknown extension {extension!r} "
            f"(expected .npz or .pkl)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"parameter file not found: {path!r}")
    if extension == ".pkl":
        return load_pickle_arrays(path)
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}

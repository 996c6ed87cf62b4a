"""MNIST loading, as in the book's ``dataset/mnist.py``, with a strict IDX parser.

Every file is checked (IDX header, exact payload length, SHA-256 of the decompressed
content for the four MNIST files), so a damaged or wrong file raises an error instead of
producing a silently wrong array. The parsed arrays are cached in the user cache directory
(``deepnet.io.user_cache_dir()``), never beside the data.
"""

from __future__ import annotations
import gzip
import hashlib
import http.client
import importlib.util
import io
import math
import os
import struct
import urllib.request
import zlib
from pathlib import Path
from typing import IO, Any, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from deepnet._atomic import atomic_write
from deepnet._cachedir import user_cache_dir
from deepnet._paramcheck import ParameterFileError
from deepnet._paramfile import read_params, save_params

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

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
DOWNLOAD_TIMEOUT_S = 30

IMAGE_SIZE = 28
NUM_CLASSES = 10
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
IDX_UBYTE = 0x08
GZIP_MAGIC = b"\x1f\x8b"

# Bump when the cache layout changes, so old caches are rebuilt rather than misread.
CACHE_VERSION = "mnist-cache-v2"


# A file system path as the functions here take it.
PathLike = Union[str, "os.PathLike[str]"]
# (images, labels) of one split, as load_mnist returns it.
Split = Tuple[NDArray[Any], NDArray[Any]]


class MNISTFormatError(ValueError):
    """An MNIST/IDX file is malformed, truncated, or not the expected content."""


class MNISTNotFoundError(FileNotFoundError):
    """The MNIST files are in none of the searched places and could not be downloaded."""


# --- IDX parsing -----------------------------------------------------------------------


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


# --- Finding and downloading the files ---------------------------------------------------


def default_download_dir() -> Path:
    """Where missing files are downloaded: ``mnist/`` in ``deepnet.io.user_cache_dir()``.

    Returns
    -------
    pathlib.Path
        The download directory (it may not exist yet).
    """
    return user_cache_dir() / "mnist"


def shipped_data_dir() -> Path:
    """The data installed with the package (MNIST, the book's weights): ``deepnet._data``
    of an installation, or ``data/`` of the source tree deepnet is imported from.

    Returns
    -------
    pathlib.Path
        The directory holding ``mnist/`` and ``book/``.
    """
    spec = importlib.util.find_spec("deepnet._data")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(__file__).resolve().parent.parent / "data"


def mnist_search_dirs(root: Optional[PathLike] = None) -> List[Path]:
    """The directories searched for the four files, in order.

    ``root`` and ``$DEEPNET_DATA`` may name the directory holding the files or a parent
    with an ``mnist/`` subdirectory; then come ``./data/mnist``, the copy installed with the
    package and the download directory.

    Parameters
    ----------
    root : str or os.PathLike, optional
        A directory searched first (and its ``mnist/`` subdirectory).

    Returns
    -------
    list of pathlib.Path
        The directories, in the order they are searched.
    """
    dirs = []
    for base in (root, os.environ.get("DEEPNET_DATA")):
        if base:
            base = Path(base).expanduser()
            dirs += [base, base / "mnist"]
    dirs += [Path.cwd() / "data" / "mnist", shipped_data_dir() / "mnist", default_download_dir()]
    return dirs


def find_mnist_dir(root: Optional[PathLike] = None) -> Optional[Path]:
    """The first directory of ``mnist_search_dirs(root)`` holding all four files, or None.

    Parameters
    ----------
    root : str or os.PathLike, optional
        A directory searched first (see ``mnist_search_dirs``).

    Returns
    -------
    pathlib.Path or None
        The directory, or None when no searched directory holds the four files.
    """
    for directory in mnist_search_dirs(root):
        if _mnist_files_in(directory) is not None:
            return directory
    return None


def _mnist_files_in(directory: Path) -> Optional[Dict[str, Path]]:
    """{array name: path} for the four files in ``directory`` (.gz or not), or None if any is missing."""
    files = {}
    for key, stem in MNIST_FILES.items():
        # Prefer an uncompressed copy: same content (verified), faster to read.
        candidates = [directory / stem, directory / (stem + ".gz")]
        found = [path for path in candidates if path.is_file()]
        if not found:
            return None
        files[key] = found[0]
    return files


def download_mnist(directory: Optional[PathLike] = None, mirrors: Iterable[str] = MIRRORS) -> Path:
    """Download the four .gz files into ``directory`` (default ``default_download_dir()``).

    Each file is verified before it is written (atomically), so a failed or bad download
    never leaves a file behind. Raises ``OSError`` if a file is unavailable from every mirror.

    Parameters
    ----------
    directory : str or os.PathLike, optional
        Where the files go (default ``default_download_dir()``); files already there are kept.
    mirrors : iterable of str
        Base URLs tried in order for each file.

    Returns
    -------
    pathlib.Path
        The directory holding the files.

    Raises
    ------
    OSError
        A file could not be downloaded (and verified) from any mirror.
    """
    directory = Path(directory) if directory is not None else default_download_dir()
    for stem in MNIST_FILES.values():
        filename = stem + ".gz"
        if (directory / filename).is_file():
            continue
        content = _download_verified(filename, mirrors)
        with atomic_write(directory / filename) as f:
            f.write(content)
    return directory


def _download_verified(filename: str, mirrors: Iterable[str]) -> bytes:
    errors = []
    for mirror in mirrors:
        url = mirror + filename
        try:
            content = _fetch(url)
            read_idx(io.BytesIO(content), name=filename)  # raises unless it is the real file
            return content
        except (OSError, http.client.HTTPException, MNISTFormatError) as err:
            errors.append(f"{url}: {err}")
    raise OSError(f"could not download {filename}: " + "; ".join(errors))


def _fetch(url: str) -> bytes:
    """The bytes at ``url``, with a progress bar."""
    from tqdm import tqdm  # imported here: only downloads need it

    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        chunks = []
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1]) as bar:
            while chunk := response.read(1 << 16):
                chunks.append(chunk)
                bar.update(len(chunk))
    content = b"".join(chunks)
    if total is not None and len(content) != total:
        raise OSError(f"{url}: received {len(content)} of {total} bytes")
    return content


def _download_or_explain(root: Optional[PathLike]) -> Path:
    """Download into the default directory, or raise MNISTNotFoundError saying what to do."""
    try:
        directory = download_mnist(default_download_dir())
        if _mnist_files_in(Path(directory)) is not None:
            return Path(directory)
        reason = "the download finished but the files are not there"
    except (OSError, http.client.HTTPException, MNISTFormatError, ImportError) as err:
        reason = f"{type(err).__name__}: {err}"  # ImportError: tqdm, needed for the progress bar
    raise MNISTNotFoundError(_not_found_message(root, reason))


def _not_found_message(root: Optional[PathLike], reason: str) -> str:
    names = "\n".join(f"  {stem}.gz" for stem in MNIST_FILES.values())
    searched = "\n".join(f"  {directory}" for directory in mnist_search_dirs(root))
    return (
        f"MNIST data not found. Put these four files (gzip-compressed, or uncompressed without .gz) "
        f"in {default_download_dir()}, or in a directory given by --data DIR (on the command line), "
        f"root=... (in Python) or $DEEPNET_DATA:\n"
        f"{names}\n"
        f"Searched:\n{searched}\n"
        f"Download from {', '.join(MIRRORS)} failed: {reason}"
    )


# --- Parsing with a cache ----------------------------------------------------------------


def _load_arrays(files: Dict[str, Path]) -> Dict[str, Any]:
    """The four uint8 arrays (book names), from the .npz cache when it is up to date."""
    key = _cache_key(files)
    cache_path = _cache_path(next(iter(files.values())).parent)
    arrays = _read_cache(cache_path, key)
    if arrays is None:
        arrays = {name: read_idx(path) for name, path in files.items()}
        _check_arrays(arrays, files)
        _write_cache(cache_path, key, arrays)
    return arrays


def _check_arrays(arrays: Dict[str, Any], files: Dict[str, Any]) -> None:
    """Check each split has N 28x28 images, N labels and labels 0..9."""
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_img"], arrays[f"{split}_label"]
        image_file, label_file = files[f"{split}_img"], files[f"{split}_label"]
        if images.dtype != np.uint8 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise MNISTFormatError(
                f"{image_file}: images of shape {images.shape} and dtype {images.dtype}, "
                f"expected (N, {IMAGE_SIZE}, {IMAGE_SIZE}) uint8"
            )
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise MNISTFormatError(
                f"{label_file}: labels of shape {labels.shape} and dtype {labels.dtype}, expected (N,) uint8"
            )
        if len(images) != len(labels):
            raise MNISTFormatError(
                f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} labels"
            )
        if labels.size and labels.max() >= NUM_CLASSES:
            raise MNISTFormatError(f"{label_file}: label {labels.max()}, expected 0..{NUM_CLASSES - 1}")


def _cache_key(files: Dict[str, Path]) -> str:
    """Changes whenever a source file is replaced, edited or touched, or the digests change.

    The file's identity (device, inode) and its change time (ctime, which no tool can set
    back) catch a replacement that keeps the size and modification time, as ``cp -p`` does.
    """
    parts = [CACHE_VERSION]
    for name, path in sorted(files.items()):
        stat = path.stat()
        parts.append(
            f"{name}:{path.resolve()}:{stat.st_dev}:{stat.st_ino}:{stat.st_size}:"
            f"{stat.st_mtime_ns}:{stat.st_ctime_ns}:{MNIST_SHA256[MNIST_FILES[name]]}"
        )
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _cache_path(data_dir: Path) -> Path:
    """One cache file per data directory, in the user cache directory (never beside the data)."""
    dir_id = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return user_cache_dir() / f"mnist-arrays-{dir_id}.npz"


def _read_cache(path: Path, key: str) -> Optional[Dict[str, Any]]:
    """The cached arrays if ``path`` is a valid cache for ``key``; None otherwise (never raises)."""
    try:
        cache = read_params(path, dict.fromkeys(MNIST_FILES), text=["cache_key"])
    except (OSError, ParameterFileError):
        return None  # missing or corrupt cache: parse the source files again
    if cache.pop("cache_key") != key:
        return None
    try:
        _check_arrays(cache, dict.fromkeys(MNIST_FILES, path))
    except MNISTFormatError:
        return None
    return cache


def _write_cache(path: Path, key: str, arrays: Dict[str, Any]) -> None:
    try:
        save_params(path, {"cache_key": np.array(key), **arrays})
    except OSError:
        pass  # the cache directory is not writable; the cache is optional


# --- The book's interface -----------------------------------------------------------------


def load_mnist(
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    dtype: DTypeLike = np.float32,
    root: Optional[PathLike] = None,
) -> Tuple[Split, Split]:
    """Load MNIST as ``(x_train, t_train), (x_test, t_test)``, like the book's ``load_mnist``.

    Parameters
    ----------
    normalize : bool
        Images as ``dtype`` scaled to [0, 1] (pixel / 255); if False, the raw uint8 pixels
        0..255 as the book returns them (``dtype`` is not applied).
    flatten : bool
        Images of shape (N, 784); if False, (N, 1, 28, 28).
    one_hot_label : bool
        Labels as (N, 10) one-hot rows of ``dtype``; otherwise int64 of shape (N,).
    dtype : dtype
        A floating dtype for normalized images and one-hot labels.
    root : str or os.PathLike, optional
        A directory searched first (see ``mnist_search_dirs``). If no searched directory
        holds the files, they are downloaded to ``default_download_dir()``.

    Returns
    -------
    (x_train, t_train), (x_test, t_test) : tuple of two (images, labels) pairs
        The training set (60000 images) and the test set (10000 images).

    Raises
    ------
    ValueError
        ``dtype`` is not a floating-point type.
    MNISTNotFoundError
        The files can be neither found nor downloaded.
    MNISTFormatError
        A file is damaged or is not the original MNIST file.
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a floating-point type, got {dtype}")
    data_dir = find_mnist_dir(root) or _download_or_explain(root)
    files = _mnist_files_in(data_dir)
    assert files is not None  # find_mnist_dir and _download_or_explain checked
    arrays = _load_arrays(files)
    train = _prepare(arrays["train_img"], arrays["train_label"], normalize, flatten, one_hot_label, dtype)
    test = _prepare(arrays["test_img"], arrays["test_label"], normalize, flatten, one_hot_label, dtype)
    return train, test


def _prepare(
    images: NDArray[Any],
    labels: NDArray[Any],
    normalize: bool,
    flatten: bool,
    one_hot_label: bool,
    dtype: np.dtype[Any],
) -> Split:
    if normalize:
        images = images.astype(dtype)
        images /= 255
    shape = (len(images), IMAGE_SIZE * IMAGE_SIZE) if flatten else (len(images), 1, IMAGE_SIZE, IMAGE_SIZE)
    images = images.reshape(shape)
    if one_hot_label:
        labels = np.eye(NUM_CLASSES, dtype=dtype)[labels]
    else:
        labels = labels.astype(np.int64)
    return images, labels


# --- Validation splits -------------------------------------------------------------------


def stratified_split(
    labels: ArrayLike, size: int, seed: Optional[int] = None
) -> Tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Indices (train, validation) holding out ``size`` samples, stratified by label: each
    class keeps its share of the validation set (within one sample), drawn with ``seed``.

    Both index arrays are sorted, so the split does not reorder the data.

    Parameters
    ----------
    labels : array_like
        Class labels of shape (N,), or one-hot rows (N, classes).
    size : int
        How many samples the validation set holds, in 1..N-1.
    seed : int, optional
        Seed of the random draw (None: a fresh one).

    Returns
    -------
    train, validation : numpy.ndarray
        Sorted sample indices of the two parts; together they are 0..N-1.

    Raises
    ------
    ValueError
        ``size`` is not in 1..N-1.
    """
    y: NDArray[Any] = np.asarray(labels)
    if y.ndim == 2:  # one-hot
        y = y.argmax(axis=1)
    if not 0 < size < len(y):
        raise ValueError(f"stratified_split: the validation size must be in 1..{len(y) - 1}, got {size}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    # Largest remainders: per-class quotas that add up to size exactly.
    exact = counts * size / len(y)
    quota = np.floor(exact).astype(int)
    quota[np.argsort(-(exact - quota), kind="stable")[: size - quota.sum()]] += 1
    held_out = [rng.choice(np.flatnonzero(y == c), q, replace=False) for c, q in zip(classes, quota)]
    validation = np.sort(np.concatenate(held_out))
    train = np.setdiff1d(np.arange(len(y)), validation, assume_unique=True)
    return train, validation


def mnist_dir_in(root: PathLike) -> Optional[Path]:
    """``root`` or ``root/mnist`` if it holds the four files, else None (no other place is
    searched: for a directory the user named).

    Parameters
    ----------
    root : str or os.PathLike
        The directory the user named.

    Returns
    -------
    pathlib.Path or None
        ``root`` or ``root/mnist``, whichever holds the four files first, else None.
    """
    for directory in (Path(root).expanduser(), Path(root).expanduser() / "mnist"):
        if directory.is_dir() and _mnist_files_in(directory) is not None:
            return directory
    return None

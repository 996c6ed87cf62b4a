"""Where the MNIST files are: the directories searched for them, and their download (each
file verified before it is written) into the user cache directory when they are nowhere."""

from __future__ import annotations

import http.client
import importlib.util
import io
import os
import urllib.request
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from deepnet._atomic import atomic_write
from deepnet._cachedir import user_cache_dir
from deepnet._idx import MNIST_FILES, MNISTFormatError, PathLike, read_idx

__all__ = [
    "MIRRORS",
    "DOWNLOAD_TIMEOUT_S",
    "MNISTNotFoundError",
    "default_download_dir",
    "shipped_data_dir",
    "mnist_search_dirs",
    "find_mnist_dir",
    "mnist_dir_in",
    "download_mnist",
    "mnist_files_in",
    "download_or_explain",
]

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
DOWNLOAD_TIMEOUT_S = 30


class MNISTNotFoundError(FileNotFoundError):
    """The MNIST files are in none of the searched places and could not be downloaded."""


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
        if mnist_files_in(directory) is not None:
            return directory
    return None


def mnist_files_in(directory: Path) -> Optional[Dict[str, Path]]:
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
        if directory.is_dir() and mnist_files_in(directory) is not None:
            return directory
    return None


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


def download_or_explain(root: Optional[PathLike]) -> Path:
    """Download into the default directory, or raise MNISTNotFoundError saying what to do."""
    try:
        directory = download_mnist(default_download_dir())
        if mnist_files_in(Path(directory)) is not None:
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

"""The parsed MNIST arrays, cached in the user cache directory (never beside the data): read
when the cache is up to date, else parsed from the files, checked and written anew."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from deepnet._cachedir import user_cache_dir
from deepnet._idx import IMAGE_SIZE, MNIST_FILES, MNIST_SHA256, NUM_CLASSES, MNISTFormatError, read_idx
from deepnet._paramcheck import ParameterFileError
from deepnet._paramfile import read_params, save_params

__all__ = ["CACHE_VERSION", "load_arrays"]

# Bump when the cache layout changes, so old caches are rebuilt rather than misread.
CACHE_VERSION = "mnist-cache-v2"


def load_arrays(files: Dict[str, Path]) -> Dict[str, Any]:
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

"""MNIST as the book's ``dataset/mnist.py`` loads it (``load_mnist``), and stratified validation splits.

Every file is checked (IDX header, exact payload length, SHA-256 of the decompressed
content for the four MNIST files), so a damaged or wrong file raises an error instead of
producing a silently wrong array. The parsed arrays are cached in the user cache directory
(``deepnet.io.user_cache_dir()``), never beside the data.

The rest has its own modules, whose public names are importable from here too:
``deepnet._idx`` (the IDX parser and the files' digests), ``deepnet._mnist_files`` (where the
files are searched for, and their download) and ``deepnet._mnist_cache`` (the cache).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from deepnet._dtypes import is_bfloat16
from deepnet._idx import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    IDX_UBYTE,
    GZIP_MAGIC,
    IMAGE_SIZE,
    MNIST_FILES,
    MNIST_SHA256,
    NUM_CLASSES,
    MNISTFormatError,
    PathLike,
    read_idx,
)
from deepnet._mnist_cache import CACHE_VERSION, load_arrays
from deepnet._mnist_files import (
    DOWNLOAD_TIMEOUT_S,
    MIRRORS,
    MNISTNotFoundError,
    download_or_explain,
    mnist_files_in,
    _not_found_message as _not_found_message,
    default_download_dir,
    download_mnist,
    find_mnist_dir,
    mnist_dir_in,
    mnist_search_dirs,
    shipped_data_dir,
)

__all__ = [
    "MNIST_SHA256",
    "MNIST_FILES",
    "MIRRORS",
    "DOWNLOAD_TIMEOUT_S",
    "IMAGE_SIZE",
    "NUM_CLASSES",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "IDX_UBYTE",
    "GZIP_MAGIC",
    "CACHE_VERSION",
    "PathLike",
    "Split",
    "MNISTFormatError",
    "MNISTNotFoundError",
    "read_idx",
    "default_download_dir",
    "shipped_data_dir",
    "mnist_search_dirs",
    "find_mnist_dir",
    "mnist_dir_in",
    "download_mnist",
    "load_mnist",
    "stratified_split",
]

# (images, labels) of one split, as load_mnist returns it.
Split = Tuple[NDArray[Any], NDArray[Any]]


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
    if dtype.kind != "f" and not is_bfloat16(dtype):
        raise ValueError(f"dtype must be a floating-point type, got {dtype}")
    data_dir = find_mnist_dir(root) or download_or_explain(root)
    files = mnist_files_in(data_dir)
    assert files is not None  # find_mnist_dir and download_or_explain checked
    arrays = load_arrays(files)
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
        if is_bfloat16(dtype):  # scaled in float32, rounded once
            images = (images.astype(np.float32) / 255).astype(dtype)
        else:
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

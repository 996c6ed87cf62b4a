"""What several test files share: the repository's data, a numerical gradient and a bitwise
comparison."""

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = REPO / "data" / "mnist"  # the real MNIST files, committed with the repository
BOOK_PARAMS = REPO / "data" / "book" / "deep_convnet_params.pkl"  # the book's trained weights


def numerical_gradient_at(f, array, index, eps=1e-6):
    """Central difference of the scalar f() with respect to array[index] (changed in place,
    then restored)."""
    original = array[index]
    array[index] = original + eps
    plus = f()
    array[index] = original - eps
    minus = f()
    array[index] = original
    return (plus - minus) / (2 * eps)


def numerical_gradient(f, array, eps=1e-6):
    """Central differences of the scalar f() with respect to every entry of array."""
    grad = np.zeros_like(array)
    for index in np.ndindex(*array.shape):
        grad[index] = numerical_gradient_at(f, array, index, eps)
    return grad


def same_bits(a, b):
    """Bit-for-bit equality (also for NaN and -0.0), dtype and shape included; any memory
    layout."""
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
    )

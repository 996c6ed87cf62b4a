"""The compiled backend's cache of prepared filter matrices
(deepnet.backends.cpu._prepared_filters): a weight array's matrix is reused only while the
array's bytes are unchanged, and goes when the array does.  Every result is checked against a computation on a fresh copy of the
weights (a different array, so a fresh matrix) and against the NumPy reference."""

import gc

import numpy as np
import pytest

import deepnet
from deepnet.backends import cpu as _cpu
from deepnet import functional as F
from deepnet import reference as R
from cases import RTOL, max_relative_error

pytestmark = [
    pytest.mark.kernels,
    pytest.mark.asan,
    pytest.mark.skipif(not deepnet.kernels_compiled(), reason="compiled kernels not built"),
]


def conv(x, W, b, winograd, pad=1):
    with deepnet.backend("cython"), deepnet.winograd(winograd):
        return F.conv2d(x, W, b, 1, pad, relu=True)


def fresh(x, W, b, winograd):
    """The same convolution with a copy of W, which the cache has never seen."""
    return conv(x, W.copy(), b, winograd)


@pytest.mark.parametrize("winograd", ["never", "always"])
def test_an_update_in_place_is_seen(winograd, dtype, rng):
    x = rng.standard_normal((3, 16, 10, 10)).astype(dtype)
    W = (rng.standard_normal((32, 16, 3, 3)) / 12).astype(dtype)
    b = rng.standard_normal(32).astype(dtype)
    first = conv(x, W, b, winograd)
    np.testing.assert_array_equal(conv(x, W, b, winograd), first)  # reused: the same result
    W[5, 7, 1, 2] += dtype(0.25)  # one entry, in place, as an optimizer does
    updated = conv(x, W, b, winograd)
    np.testing.assert_array_equal(updated, fresh(x, W, b, winograd))
    assert not np.array_equal(updated[:, 5], first[:, 5])
    W -= dtype(0.01) * W  # every entry
    np.testing.assert_array_equal(conv(x, W, b, winograd), fresh(x, W, b, winograd))
    acc = np.float64
    expected = R.conv_forward(x.astype(acc), W.astype(acc), b.astype(acc), (1, 1), (1, 1), relu=True)
    assert max_relative_error(conv(x, W, b, winograd), expected) < RTOL[dtype]


def test_a_change_of_sign_of_zero_is_seen(rng):
    """The snapshot compares bytes, not values: -0.0 == 0.0, yet the filters differ in bits."""
    x = rng.standard_normal((2, 16, 6, 6)).astype(np.float32)
    W = np.zeros((16, 16, 3, 3), np.float32)
    b = np.zeros(16, np.float32)
    conv(x, W, b, "always")
    assert not np.signbit(_cpu._prepared_filters(W, True)).any()
    W[...] = -0.0
    np.testing.assert_array_equal(np.signbit(conv(x, W, b, "always")), np.signbit(fresh(x, W, b, "always")))
    matrix = _cpu._prepared_filters(W, True)
    np.testing.assert_array_equal(matrix.view(np.uint32), _cpu._winograd_filters(W.copy(), np.float32).view(np.uint32))
    assert np.signbit(matrix).any()


def test_a_reshaped_or_retyped_array_is_prepared_again(rng):
    W = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    square = _cpu._prepared_filters(W, False)
    W.shape = (4, 8, 3, 3)  # same bytes, other filters
    assert _cpu._prepared_filters(W, False).shape[0] == 8 * 9
    assert square.shape[0] == 4 * 9


def test_the_matrix_is_reused_read_only_and_goes_with_its_array(rng):
    W = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    matrix = _cpu._prepared_filters(W, True)
    assert _cpu._prepared_filters(W, True) is matrix
    assert not matrix.flags.writeable
    with pytest.raises(ValueError):
        matrix[0, 0] = 1
    key = (id(W), True)
    assert key in _cpu._prepared
    del W
    gc.collect()
    assert key not in _cpu._prepared


def test_many_short_lived_weights_leave_nothing_behind(rng):
    before = len(_cpu._prepared)
    x = rng.standard_normal((1, 3, 5, 5)).astype(np.float32)
    for _ in range(50):
        conv(x, rng.standard_normal((4, 3, 3, 3)).astype(np.float32), None, "never")
    gc.collect()
    assert len(_cpu._prepared) == before


def test_same_bytes_compares_bytes():
    from deepnet._kernels.elementwise import same_bytes

    a = np.arange(10, dtype=np.uint8)
    assert same_bytes(a, a.copy())
    assert not same_bytes(a, a[:9].copy())
    b = a.copy()
    b[9] ^= 1
    assert not same_bytes(a, b)
    assert same_bytes(a[:0].copy(), np.empty(0, np.uint8))

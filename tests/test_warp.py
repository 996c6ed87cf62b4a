"""affine_warp and elastic_warp against scipy.ndimage and the NumPy reference.

scipy.ndimage.affine_transform / map_coordinates with order=1, mode="grid-constant" compute
the same bilinear samples in float64: the compiled kernels and deepnet.reference must match
them within 1e-5 (float32) and 1e-12 (float64) on random transforms, odd sizes and C > 1.
float16 is float32 arithmetic rounded once, so it must equal the float32 kernel's result on
the widened input, rounded to half, bit for bit.
"""

import numpy as np
import pytest
from scipy import ndimage

import deepnet
from deepnet import functional as F
from deepnet import reference as R

pytestmark = pytest.mark.kernels

needs_kernels = pytest.mark.skipif(not deepnet.kernels_compiled(), reason="compiled kernels not built")
TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}
# (N, C, H, W): odd and uneven sizes, several channels, a single pixel, MNIST's size.
SHAPES = [(3, 2, 7, 9), (2, 3, 13, 5), (4, 1, 1, 1), (2, 1, 2, 3), (3, 1, 28, 28), (1, 4, 16, 11)]


def random_theta(rng, n, shape):
    """Random rotations, scales (0.5 to 2), shears and shifts about the image centre (some of
    the image ends up outside the frame), and one arbitrary matrix per batch."""
    H, W = shape
    angle = rng.uniform(-np.pi, np.pi, n)
    scale = np.exp(rng.uniform(np.log(0.5), np.log(2), (n, 2)))
    shear = rng.uniform(-0.5, 0.5, n)
    linear = np.empty((n, 2, 2))
    linear[:, 0, 0], linear[:, 0, 1] = scale[:, 0] * np.cos(angle), -scale[:, 0] * np.sin(angle)
    linear[:, 1, 0] = scale[:, 1] * (np.sin(angle) + shear * np.cos(angle))
    linear[:, 1, 1] = scale[:, 1] * (np.cos(angle) - shear * np.sin(angle))
    linear[0] = rng.normal(size=(2, 2)) * 1.5
    centre = (np.array([H, W]) - 1) / 2
    offset = centre - linear @ centre + rng.uniform(-0.4, 0.4, (n, 2)) * [H, W]
    return np.concatenate([linear, offset[:, :, None]], axis=2)


def scipy_affine(x, theta, fill):
    out = np.empty(x.shape)
    for n, c in np.ndindex(*x.shape[:2]):
        out[n, c] = ndimage.affine_transform(
            x[n, c].astype(np.float64), theta[n, :, :2], offset=theta[n, :, 2], order=1, mode="grid-constant", cval=fill
        )
    return out


def scipy_remap(x, rows, cols, fill):
    """Every channel of image n sampled at (rows[n], cols[n]) by map_coordinates."""
    out = np.empty(x.shape)
    for n, c in np.ndindex(*x.shape[:2]):
        out[n, c] = ndimage.map_coordinates(
            x[n, c].astype(np.float64), [rows[n], cols[n]], order=1, mode="grid-constant", cval=fill
        )
    return out


def max_error(got, expected):
    return float(np.abs(np.asarray(got, np.float64) - expected).max(initial=0.0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_affine_warp_equals_scipy(backend, dtype, shape, rng):
    x = rng.standard_normal(shape).astype(dtype)
    theta = random_theta(rng, shape[0], shape[2:])
    fill = float(rng.normal())
    got = F.affine_warp(x, theta, fill)
    assert got.dtype == dtype and got.shape == shape
    assert max_error(got, scipy_affine(x, theta, fill)) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_elastic_warp_equals_scipy_map_coordinates(backend, dtype, shape, rng):
    N, _, H, W = shape
    x = rng.standard_normal(shape).astype(dtype)
    displacement = rng.normal(scale=0.3 * max(H, W), size=(N, 2, H, W)).astype(np.float32)
    rows, cols = np.indices((H, W))
    fill = float(rng.normal())
    got = F.elastic_warp(x, displacement, fill)
    assert got.dtype == dtype and got.shape == shape
    expected = scipy_remap(
        x, rows + displacement[:, 0].astype(np.float64), cols + displacement[:, 1].astype(np.float64), fill
    )
    assert max_error(got, expected) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elastic_warp_with_theta_maps_the_displaced_positions(backend, dtype, rng):
    shape = (3, 2, 11, 8)
    N, _, H, W = shape
    x = rng.standard_normal(shape).astype(dtype)
    displacement = rng.normal(scale=2.0, size=(N, 2, H, W))  # float64 this time
    theta = random_theta(rng, N, (H, W))
    rows = np.indices((H, W))[0] + displacement[:, 0]
    cols = np.indices((H, W))[1] + displacement[:, 1]
    t = theta[:, :, :, None, None]
    expected = scipy_remap(
        x, t[:, 0, 0] * rows + t[:, 0, 1] * cols + t[:, 0, 2], t[:, 1, 0] * rows + t[:, 1, 1] * cols + t[:, 1, 2], 0.25
    )
    got = F.elastic_warp(x, displacement, 0.25, theta=theta)
    assert max_error(got, expected) <= TOLERANCE[dtype]


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_equal_the_reference(dtype, rng):
    shape = (5, 3, 17, 12)
    x = rng.standard_normal(shape).astype(dtype)
    theta = random_theta(rng, shape[0], shape[2:])
    displacement = rng.normal(scale=3.0, size=(5, 2, 17, 12)).astype(np.float32)
    assert max_error(F.affine_warp(x, theta, 0.5), R.affine_warp(x, theta, 0.5)) <= TOLERANCE[dtype]
    got = F.elastic_warp(x, displacement, -1.0, theta=theta)
    assert max_error(got, R.elastic_warp(x, displacement, theta, -1.0)) <= TOLERANCE[dtype]


def test_float16_is_the_float32_result_rounded_once(backend, rng):
    shape = (4, 3, 13, 10)
    x = rng.standard_normal(shape).astype(np.float16)
    theta = random_theta(rng, 4, shape[2:])
    displacement = rng.normal(scale=2.0, size=(4, 2, 13, 10)).astype(np.float16)
    wide = x.astype(np.float32)
    got = F.affine_warp(x, theta, 0.3)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, F.affine_warp(wide, theta, 0.3).astype(np.float16))
    got = F.elastic_warp(x, displacement, 0.3, theta=theta)  # float16 displacement: widened
    assert got.dtype == np.float16
    np.testing.assert_array_equal(
        got, F.elastic_warp(wide, displacement.astype(np.float32), 0.3, theta=theta).astype(np.float16)
    )


@needs_kernels
def test_results_identical_for_any_thread_count(dtype, rng):
    shape = (7, 3, 19, 14)
    x = rng.standard_normal(shape).astype(dtype)
    theta = random_theta(rng, 7, shape[2:])
    displacement = rng.normal(scale=3.0, size=(7, 2, 19, 14)).astype(np.float32)
    results = []
    try:
        for threads in (1, 2, 3):
            deepnet.set_num_threads(threads)
            results.append((F.affine_warp(x, theta), F.elastic_warp(x, displacement, theta=theta)))
    finally:
        deepnet.set_num_threads(None)
    for affine, elastic in results[1:]:
        np.testing.assert_array_equal(affine, results[0][0])
        np.testing.assert_array_equal(elastic, results[0][1])


def test_identity_and_whole_pixel_shifts_are_exact(backend, dtype, rng):
    x = rng.standard_normal((2, 3, 6, 9)).astype(dtype)
    identity = np.tile(np.eye(2, 3), (2, 1, 1))
    np.testing.assert_array_equal(F.affine_warp(x, identity, 7.0), x)
    np.testing.assert_array_equal(F.elastic_warp(x, np.zeros((2, 2, 6, 9)), 7.0), x)
    shifted = identity.copy()
    shifted[:, :, 2] = [-2, 3]  # output (r, c) reads input (r - 2, c + 3)
    expected = np.full_like(x, 7.0)
    expected[:, :, 2:, :-3] = x[:, :, :-2, 3:]
    np.testing.assert_array_equal(F.affine_warp(x, shifted, 7.0), expected)


@pytest.mark.parametrize("layout", ["images", "channels"])
def test_no_position_reads_outside_its_plane(backend, dtype, layout, rng):
    """Every tested plane lies between NaN planes in memory (as images n-1 and n+1, or as
    channels 0 and 2 of its image): a read outside the plane would put NaN in its output."""
    H, W = 5, 7
    # Whole-pixel shifts onto every row and column around the border, wide random transforms.
    shifts = [(dy, dx) for dy in range(-H - 1, H + 2) for dx in range(-W - 1, W + 2)]
    theta = np.tile(np.eye(2, 3), (len(shifts), 1, 1))
    theta[:, :, 2] = shifts
    theta = np.concatenate([theta, random_theta(rng, 40, (H, W)) * rng.uniform(0.5, 3, (40, 1, 1))])
    planes = rng.uniform(1, 2, (len(theta), H, W))
    if layout == "images":  # images 1, 3, 5, ... between NaN images
        x = np.full((2 * len(theta) + 1, 1, H, W), np.nan, dtype=dtype)
        x[1::2, 0] = planes
        thetas = np.tile(np.eye(2, 3), (x.shape[0], 1, 1))
        thetas[1::2] = theta
        tested = (slice(1, None, 2), 0)
    else:  # channel 1 of each image between NaN channels
        x = np.full((len(theta), 3, H, W), np.nan, dtype=dtype)
        x[:, 1] = planes
        thetas = theta
        tested = (slice(None), 1)
    fields = rng.normal(scale=4.0, size=(x.shape[0], 2, H, W))
    assert not np.isnan(F.affine_warp(x, thetas, 0.5)[tested]).any()
    assert not np.isnan(F.elastic_warp(x, fields, 0.5, theta=thetas)[tested]).any()


def test_non_finite_and_huge_positions_give_fill(backend, dtype, rng):
    x = rng.uniform(1, 2, (9, 2, 5, 7)).astype(dtype)
    values = [np.nan, np.inf, -np.inf, 1e300, -1e300, 2.0**31, -(2.0**31) - 1, 2.0**63, -(2.0**63)]
    theta = np.tile(np.eye(2, 3), (9, 1, 1))
    theta[:, 0, 2] = values
    theta[:, 1, 2] = rng.uniform(-10, 10, 9)
    np.testing.assert_array_equal(F.affine_warp(x, theta, 0.5), 0.5)
    theta[:, 0, 2], theta[:, 0, 0] = 0, values  # the matrix itself non-finite or huge
    out = F.affine_warp(x, theta, 0.5)
    np.testing.assert_array_equal(out[:, :, 1:], 0.5)  # row 0 reads row 0 * value: NaN, inf or 0
    field = np.zeros((9, 2, 5, 7))
    field[:, 0] = np.array(values)[:, None, None]
    field[:, 1] = rng.uniform(-10, 10, (9, 1, 1))
    np.testing.assert_array_equal(F.elastic_warp(x, field, 0.5), 0.5)
    np.testing.assert_array_equal(F.elastic_warp(x, field[:, ::-1], 0.5), 0.5)


def test_positions_just_inside_and_outside_the_border(backend):
    """Position -1 and H (W) are outside; just inside, the pixel blends with fill."""
    x = np.arange(1.0, 13.0).reshape(1, 1, 3, 4)
    eps = 2.0**-20
    for offset, expected_first_row in [
        (-1.0, 9.0),
        (-1 + eps, 9.0 * (1 - eps) + 1.0 * eps),
        (2.0, None),
        (3.0 - eps, None),
    ]:
        theta = np.array([[[1.0, 0.0, offset], [0.0, 1.0, 0.0]]])
        got = F.affine_warp(x, theta, 9.0)
        expected = scipy_affine(x, theta, 9.0)
        assert max_error(got, expected) <= 1e-12
        if expected_first_row is not None:
            np.testing.assert_allclose(got[0, 0, 0, 0], expected_first_row, rtol=1e-15)


@pytest.mark.parametrize("layout", ["fortran", "sliced", "transposed", "read-only"])
def test_awkward_memory_layouts_give_the_contiguous_result(backend, layout, rng):
    base = rng.standard_normal((3, 2, 9, 11)).astype(np.float32)
    theta0 = random_theta(rng, 3, (9, 11))
    field0 = rng.normal(size=(3, 2, 9, 11)).astype(np.float32)
    if layout == "fortran":
        x, theta, field = (np.asfortranarray(a) for a in (base, theta0, field0))
    elif layout == "sliced":
        x, theta, field = (np.repeat(a, 2, axis=-1)[..., ::2] for a in (base, theta0, field0))
    elif layout == "transposed":
        x, theta, field = (
            np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2) for a in (base, theta0, field0)
        )
    else:
        x, theta, field = (a.copy() for a in (base, theta0, field0))
        for a in (x, theta, field):
            a.setflags(write=False)
    np.testing.assert_array_equal(F.affine_warp(x, theta), F.affine_warp(base, theta0))
    np.testing.assert_array_equal(F.elastic_warp(x, field, theta=theta), F.elastic_warp(base, field0, theta=theta0))


def test_integer_theta_and_empty_batches(backend, rng):
    x = rng.standard_normal((2, 1, 4, 5))
    identity = np.tile(np.eye(2, 3, dtype=np.int64), (2, 1, 1))
    np.testing.assert_array_equal(F.affine_warp(x, identity), x)
    for shape in [(0, 1, 4, 5), (2, 0, 4, 5), (2, 1, 0, 5), (2, 1, 4, 0)]:
        empty = np.zeros(shape, dtype=np.float32)
        theta = np.zeros((shape[0], 2, 3))
        assert F.affine_warp(empty, theta).shape == shape
        field = np.zeros((shape[0], 2) + shape[2:])
        assert F.elastic_warp(empty, field, theta=theta).shape == shape


X = np.zeros((2, 3, 5, 4), dtype=np.float32)
THETA = np.zeros((2, 2, 3))
FIELD = np.zeros((2, 2, 5, 4), dtype=np.float32)


@pytest.mark.parametrize(
    "call, error, fragments",
    [
        (lambda: F.affine_warp(X[0], THETA), ValueError, ["deepnet.affine_warp", "x must be 4-D", "(3, 5, 4)"]),
        (lambda: F.affine_warp(X.astype(np.int32), THETA), TypeError, ["deepnet.affine_warp", "float", "int32"]),
        (lambda: F.affine_warp(X, THETA[:1]), ValueError, ["deepnet.affine_warp", "theta", "(2, 2, 3)", "(1, 2, 3)"]),
        (lambda: F.affine_warp(X, np.zeros((2, 3, 3))), ValueError, ["theta", "(2, 2, 3)", "(2, 3, 3)"]),
        (lambda: F.affine_warp(X, THETA.astype(bool)), TypeError, ["deepnet.affine_warp", "theta", "bool"]),
        (lambda: F.affine_warp(X, THETA.astype(complex)), TypeError, ["theta", "complex128"]),
        (lambda: F.affine_warp(X, THETA, fill=np.nan), ValueError, ["deepnet.affine_warp", "fill", "finite", "nan"]),
        (lambda: F.affine_warp(X, THETA, fill="0"), TypeError, ["deepnet.affine_warp", "fill", "real number", "'0'"]),
        (
            lambda: F.elastic_warp(X, FIELD[:, :1]),
            ValueError,
            ["deepnet.elastic_warp", "displacement", "(2, 2, 5, 4)", "(2, 1, 5, 4)"],
        ),
        (lambda: F.elastic_warp(X, FIELD.astype(np.int8)), TypeError, ["deepnet.elastic_warp", "displacement", "int8"]),
        (lambda: F.elastic_warp(X, FIELD[0]), ValueError, ["deepnet.elastic_warp", "displacement must be 4-D"]),
        (
            lambda: F.elastic_warp(X, FIELD, theta=THETA[:, :1]),
            ValueError,
            ["deepnet.elastic_warp", "theta", "(2, 1, 3)"],
        ),
        (lambda: F.elastic_warp(X, FIELD, fill=np.inf), ValueError, ["deepnet.elastic_warp", "fill", "finite"]),
    ],
)
def test_bad_input_raises_a_clear_error(call, error, fragments):
    with pytest.raises(error) as info:
        call()
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))

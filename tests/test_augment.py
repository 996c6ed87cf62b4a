"""deepnet.augment: the transforms it builds, the fields it draws, and its spec syntax."""

import numpy as np
import pytest
from scipy import ndimage

import deepnet
from deepnet import functional as F
from deepnet.augment import Augment, affine_theta, elastic_field, gaussian_blur_matrix


def forward_matrix(rotation, scale, shear):
    """The input -> output map of affine_theta's docstring, built as a product of matrices."""
    a, s = np.radians(rotation), np.radians(shear)
    rotate = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return scale * np.array([[1, 0], [np.tan(s), 1]]) @ rotate


def test_affine_theta_inverts_the_forward_map(rng):
    H, W = 9, 14
    n = 6
    rotation, scale = rng.uniform(-180, 180, n), rng.uniform(0.5, 2, n)
    shear, shift = rng.uniform(-40, 40, n), rng.uniform(-3, 3, (n, 2))
    theta = affine_theta((H, W), rotation, scale, shear, shift)
    assert theta.shape == (n, 2, 3)
    centre = np.array([H - 1, W - 1]) / 2
    for i in range(n):
        A = forward_matrix(rotation[i], scale[i], shear[i])
        inputs = rng.uniform(-5, 20, (10, 2))
        outputs = (inputs - centre) @ A.T + centre + shift[i]
        np.testing.assert_allclose(outputs @ theta[i, :, :2].T + theta[i, :, 2], inputs, atol=1e-12)


def test_rotation_by_90_degrees_is_rot90_counter_clockwise(rng):
    x = rng.standard_normal((2, 3, 7, 7))
    got = F.affine_warp(x, affine_theta((7, 7), rotation=[90, 90]))
    np.testing.assert_allclose(got, np.rot90(x, 1, axes=(2, 3)), atol=1e-12)


def test_shift_scale_and_shear_move_pixels_where_documented(rng):
    x = rng.standard_normal((1, 1, 9, 9))
    down_right = F.affine_warp(x, affine_theta((9, 9), shift=(1, 2)), fill=5.0)
    np.testing.assert_array_equal(down_right[0, 0, 1:, 2:], x[0, 0, :-1, :-2])
    assert (down_right[0, 0, 0] == 5).all() and (down_right[0, 0, :, :2] == 5).all()
    zoomed = F.affine_warp(x, affine_theta((9, 9), scale=2.0))  # centre 4: output 4 + 2k = input 4 + k
    np.testing.assert_allclose(zoomed[0, 0, ::2, ::2], x[0, 0, 2:7, 2:7], atol=1e-12)
    sheared = F.affine_warp(x, affine_theta((9, 9), shear=45.0))  # row r moves right by r - 4
    for r in range(9):
        np.testing.assert_allclose(
            sheared[0, 0, r, max(0, r - 4) : min(9, 5 + r)], x[0, 0, r, max(0, 4 - r) : min(9, 13 - r)], atol=1e-12
        )


@pytest.mark.parametrize("size, sigma", [(28, 4.0), (28, 1.5), (9, 0.6), (5, 6.0), (1, 2.0)])
def test_gaussian_blur_matrix_is_scipy_gaussian_filter1d(size, sigma, rng):
    v = rng.standard_normal((size, 3))
    expected = ndimage.gaussian_filter1d(v, sigma, axis=0, mode="constant", truncate=4.0)
    got = gaussian_blur_matrix(size, sigma).astype(np.float64) @ v
    np.testing.assert_allclose(got, expected, atol=1e-6)  # the matrix is float32


def test_elastic_field_is_blurred_uniform_noise_times_alpha():
    alpha, sigma = 34.0, 4.0
    field = elastic_field(np.random.default_rng(3), 5, (28, 23), alpha, sigma)
    assert field.shape == (5, 2, 28, 23) and field.dtype == np.float32
    noise = np.random.default_rng(3).random((5, 2, 28, 23), dtype=np.float32).astype(np.float64) * 2 - 1
    expected = alpha * ndimage.gaussian_filter(noise, sigma=(0, 0, sigma, sigma), mode="constant", truncate=4.0)
    np.testing.assert_allclose(field, expected, atol=1e-5 * alpha)
    out = np.empty_like(field)
    assert elastic_field(np.random.default_rng(3), 5, (28, 23), alpha, sigma, out=out) is out
    np.testing.assert_array_equal(out, field)


SPEC = "rotation=10,scale=0.1,shear=5,shift=2.5,elastic=34:4"


def test_augment_draws_in_the_documented_order_and_warps_once(rng):
    x = rng.random((6, 2, 28, 28), dtype=np.float32)
    got = Augment.from_spec(SPEC + ",fill=0.5", rng=11)(x)
    draw = np.random.default_rng(11)
    rotation, scale = draw.uniform(-10, 10, 6), draw.uniform(0.9, 1.1, 6)
    shear, shift = draw.uniform(-5, 5, 6), draw.uniform(-2.5, 2.5, (6, 2))
    field = elastic_field(draw, 6, (28, 28), 34, 4)
    theta = affine_theta((28, 28), rotation, scale, shear, shift)
    np.testing.assert_array_equal(got, F.elastic_warp(x, field, 0.5, theta=theta))
    assert got.dtype == np.float32 and got.shape == x.shape
    assert np.abs(got - x).max() > 0.1  # it did move the images


def test_affine_only_augment_uses_the_affine_warp(rng):
    x = rng.random((4, 1, 12, 10))
    got = Augment(rotation=30, shift=1, rng=2)(x)
    draw = np.random.default_rng(2)
    rotation, shift = draw.uniform(-30, 30, 4), draw.uniform(-1, 1, (4, 2))
    np.testing.assert_array_equal(got, F.affine_warp(x, affine_theta((12, 10), rotation, shift=shift)))


@pytest.mark.skipif(not deepnet.kernels_compiled(), reason="compiled kernels not built")
def test_augment_depends_only_on_the_seed_never_on_threads(rng):
    x = rng.random((20, 1, 28, 28), dtype=np.float32)
    batches = []
    try:
        for threads in (1, 2):
            deepnet.set_num_threads(threads)
            augment = Augment.from_spec(SPEC, rng=np.random.default_rng(7))
            batches.append([augment(x), augment(x)])
    finally:
        deepnet.set_num_threads(None)
    np.testing.assert_array_equal(batches[0], batches[1])
    assert not np.array_equal(batches[0][0], batches[0][1])  # the generator moves on


def test_augment_rng_argument_and_dtypes(rng):
    augment = Augment.from_spec(SPEC)
    for dtype in (np.float16, np.float32, np.float64):
        x = rng.random((3, 1, 10, 10)).astype(dtype)
        a = augment(x, rng=np.random.default_rng(4))
        b = augment(x, rng=np.random.default_rng(4))
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="Augment: rng must be a numpy Generator"):
        augment(x, rng=4)
    with pytest.raises(ValueError, match=r"deepnet.augment.Augment: x must be 4-D"):
        augment(x[0])


def test_no_augmentation_returns_the_batch(rng):
    x = rng.random((2, 1, 5, 5), dtype=np.float32)
    for augment in (Augment(), Augment.from_spec("none"), Augment.from_spec("")):
        assert augment(x) is x
        assert augment.spec() == "none"


def test_spec_round_trips():
    augment = Augment.from_spec(" rotation = 12.5, shift=2, elastic=30:3.5 ,fill=-1")
    assert (augment.rotation, augment.scale, augment.shear, augment.shift) == (12.5, 0.0, 0.0, 2.0)
    assert (augment.elastic_alpha, augment.elastic_sigma, augment.fill) == (30.0, 3.5, -1.0)
    assert augment.spec() == "rotation=12.5,shift=2.0,elastic=30.0:3.5,fill=-1.0"
    assert Augment.from_spec(augment.spec()).spec() == augment.spec()
    assert repr(Augment(scale=0.1)) == "Augment.from_spec('scale=0.1')"


@pytest.mark.parametrize(
    "spec, error, fragments",
    [
        ("rotate=10", ValueError, ["from_spec('rotate=10')", "unknown key 'rotate'", "rotation, scale"]),
        ("rotation", ValueError, ["KEY=VALUE", "'rotation'"]),
        ("rotation=", ValueError, ["KEY=VALUE"]),
        ("rotation=ten", ValueError, ["rotation must be a number", "'ten'"]),
        ("rotation=5,rotation=6", ValueError, ["rotation is given twice"]),
        ("elastic=34", ValueError, ["elastic takes ALPHA:SIGMA", "'34'"]),
        ("elastic=34:x", ValueError, ["elastic sigma must be a number", "'x'"]),
        ("rotation=-1", ValueError, ["Augment: rotation", "[0, 180]", "-1.0"]),
        ("scale=1", ValueError, ["scale", "[0, 1)", "1.0"]),
        ("shear=90", ValueError, ["shear", "[0, 90)"]),
        ("shift=nan", ValueError, ["shift", "finite"]),
        ("elastic=34:0", ValueError, ["elastic_sigma", "(0, 1000]"]),
        ("elastic=34:1e300", ValueError, ["elastic_sigma", "(0, 1000]"]),
        ("fill=inf", ValueError, ["fill", "finite"]),
        ("shift=1e308", ValueError, ["shift", "[0, 1000]", "1e+308"]),
        ("elastic=1e30:4", ValueError, ["elastic_alpha", "[0, 10000]"]),
        ("fill=-1e30", ValueError, ["fill", "[-1000, 1000]"]),
        (3, TypeError, ["from_spec", "must be a str", "3"]),
    ],
)
def test_bad_specs_raise_clear_errors(spec, error, fragments):
    with pytest.raises(error) as info:
        Augment.from_spec(spec)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_bad_constructor_arguments():
    with pytest.raises(TypeError, match="Augment: rotation must be a real number"):
        Augment(rotation="10")
    with pytest.raises(TypeError, match="Augment: shift must be a real number"):
        Augment(shift=True)

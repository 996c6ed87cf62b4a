"""Winograd F(2x2, 3x3) convolutions (src/deepnet_winograd.h) against the reference, an exact
float64 computation and the direct kernels; and the rule that picks them."""

import math
import platform
from pathlib import Path

import numpy as np
import pytest

import deepnet
from deepnet.backends import cpu as _cpu
from deepnet import functional as F
from deepnet import reference as R
from cases import RTOL, WINOGRAD, max_relative_error

pytestmark = [
    pytest.mark.kernels,
    pytest.mark.asan,
    pytest.mark.skipif(not deepnet.kernels_compiled(), reason="compiled kernels not built"),
]

# (x shape, filters, pad) of cases.WINOGRAD (3x3, stride 1); its first five are DeepConvNet's.
GEOMETRIES = [(g.x_shape, g.filters, g.pad[0]) for g in WINOGRAD]


def random_conv(rng, x_shape, filters, dtype):
    C = x_shape[1]
    x = rng.standard_normal(x_shape).astype(dtype)
    W = (rng.standard_normal((filters, C, 3, 3)) / np.sqrt(9 * C)).astype(dtype)
    return x, W, rng.standard_normal(filters).astype(dtype)


@pytest.fixture
def winograd_always():
    with deepnet.backend("cython"), deepnet.winograd("always"):
        yield


@pytest.mark.parametrize("x_shape,filters,pad", GEOMETRIES)
def test_winograd_forward_and_dx_equal_the_reference(x_shape, filters, pad, dtype, rng, winograd_always):
    x, W, b = random_conv(rng, x_shape, filters, dtype)
    assert _cpu.uses_winograd(W.shape, (1, 1), (pad, pad))
    y = F.conv2d(x, W, b, 1, pad, relu=True)
    y_ref = np.maximum(R.conv_forward(x, W, b, (1, 1), (pad, pad)), 0)
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert max_relative_error(y, y_ref) <= RTOL[dtype]
    dout = rng.standard_normal(y.shape).astype(dtype)
    dx, dW, db = F.conv2d_backward(dout, x, W, 1, pad)
    for name, got, expected in zip(("dx", "dW", "db"), (dx, dW, db), R.conv_backward(dout, x, W, (1, 1), (pad, pad))):
        assert got.dtype == dtype and got.shape == expected.shape, name
        assert max_relative_error(got, expected) <= RTOL[dtype], name


def error_against_exact(got, exact):
    """Root-mean-square error over the root-mean-square of the exact values."""
    return float(np.sqrt(np.mean((got.astype(np.float64) - exact) ** 2) / np.mean(exact**2)))


@pytest.mark.parametrize("x_shape,filters,pad", GEOMETRIES[:5])
def test_winograd_error_is_at_most_twice_the_direct_kernels(x_shape, filters, pad, rng):
    """float32 Winograd against the convolution of the same float32 numbers in float64
    (exact to ~1e-16 here): its error is at most 2x the direct kernel's (the issue's bound;
    Lavin & Gray 2016 measured F(2x2, 3x3) about as accurate as direct), for the forward
    pass, dx and dW.  Run with -s to see the numbers."""
    x, W, b = random_conv(rng, x_shape, filters, np.float32)
    exact_y = R.conv_forward(x.astype(np.float64), W.astype(np.float64), b.astype(np.float64), (1, 1), (pad, pad))
    dout = rng.standard_normal(exact_y.shape).astype(np.float32)
    exact_dx, exact_dW, _ = R.conv_backward(
        dout.astype(np.float64), x.astype(np.float64), W.astype(np.float64), (1, 1), (pad, pad)
    )
    errors = {}
    with deepnet.backend("cython"):
        for mode in ("never", "always"):
            with deepnet.winograd(mode):
                y = F.conv2d(x, W, b, 1, pad)
                dx, dW, _ = F.conv2d_backward(dout, x, W, 1, pad)
            errors[mode] = [
                error_against_exact(got, exact) for got, exact in ((y, exact_y), (dx, exact_dx), (dW, exact_dW))
            ]
    print(
        f"\n{x_shape} {filters} filters pad {pad}, direct / Winograd: "
        + "; ".join(
            f"{name} {errors['never'][i]:.2e} / {errors['always'][i]:.2e}"
            for i, name in enumerate(("forward", "dx", "dW"))
        )
    )
    for which in range(3):
        assert 0 < errors["always"][which] <= 2 * errors["never"][which]
        assert errors["always"][which] < 1e-6


@pytest.mark.parametrize("x_shape,filters,pad", GEOMETRIES)
def test_winograd_dW_is_the_adjoint_of_the_convolution_in_W(x_shape, filters, pad, rng, winograd_always):
    """<dW, V> = <dout, conv(x, V)> for any filters V (the convolution is linear in W), in
    float64, with the forward pass by the direct kernel."""
    x, W, _ = random_conv(rng, x_shape, filters, np.float64)
    V = rng.standard_normal(W.shape)
    with deepnet.winograd("never"):
        y_V = F.conv2d(x, V, None, 1, pad)
    dout = rng.standard_normal(y_V.shape)
    dW = F.conv2d_backward(dout, x, W, 1, pad)[1]
    np.testing.assert_allclose(np.sum(dW * V), np.sum(dout * y_V), rtol=1e-11, atol=1e-11)


def test_winograd_results_do_not_depend_on_the_thread_count(dtype, rng, winograd_always):
    x, W, b = random_conv(rng, (5, 32, 14, 14), 32, dtype)
    dout = rng.standard_normal((5, 32, 14, 14)).astype(dtype)
    results = []
    for threads in (1, 2, 3):
        deepnet.set_num_threads(threads)
        try:
            results.append((F.conv2d(x, W, b, 1, 1), *F.conv2d_backward(dout, x, W, 1, 1)))
        finally:
            deepnet.set_num_threads(None)
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            np.testing.assert_array_equal(a, b_)


def test_winograd_takes_read_only_and_strided_arrays(rng, winograd_always):
    x, W, b = random_conv(rng, (2, 16, 9, 18), 16, np.float32)
    strided = x[:, :, :, ::2]
    for a in (x, W, b):
        a.flags.writeable = False
    y = F.conv2d(strided, W, b, 1, 1)
    y_ref = R.conv_forward(np.ascontiguousarray(strided), W, b, (1, 1), (1, 1))
    assert max_relative_error(y, y_ref) <= RTOL[np.float32]


G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])


@pytest.mark.parametrize("flipped", [False, True])
def test_the_filter_transform_is_G_g_G_transposed(dtype, flipped, rng):
    FN, C = 5, 3
    W = rng.standard_normal((FN, C, 3, 3)).astype(dtype)
    acc = _cpu.compute_dtype(W.dtype)
    U = np.einsum("ia,fcab,jb->ijcf", G, W.astype(np.float64), G)  # (4, 4, C, FN): G W[f, c] G^T
    if flipped:  # the transposed convolution: filters W[f, c, ::-1, ::-1] from f to c
        U = np.einsum("ia,fcab,jb->ijfc", G, W[:, :, ::-1, ::-1].astype(np.float64), G)
    expected = U.reshape(16 * U.shape[2], U.shape[3]).astype(acc)
    got = _cpu._winograd_filters(W[:, :, :, :], acc, flipped)
    # computed in float64 and rounded once (where entries cancel, float64's order of sums shows)
    np.testing.assert_allclose(
        got[:, : expected.shape[1]],
        expected,
        rtol=np.finfo(acc).eps,
        atol=8 * np.finfo(np.float64).eps * np.abs(U).max(),
    )
    assert not got[:, expected.shape[1] :].any()  # the GEMM padding stays zero


def test_the_filter_transform_refuses_other_shapes():
    from deepnet._kernels import conv

    with pytest.raises(ValueError, match="winograd_filters: W must have shape"):
        conv.winograd_filters(np.zeros((2, 2, 5, 5)), np.zeros((32, 8)), False)
    with pytest.raises(ValueError, match="winograd_filters: out must have 32 rows"):
        conv.winograd_filters(np.zeros((2, 2, 3, 3)), np.zeros((16, 8)), False)


@pytest.mark.parametrize("which", ["forward", "dx", "dW"])
def test_the_rule_takes_3x3_stride_1_layers_with_enough_channels(which):
    enough = _cpu.WINOGRAD_MIN_CHANNELS[which]
    with deepnet.winograd("always"):
        assert _cpu.uses_winograd((1, 1, 3, 3), (1, 1), (1, 1), which)
    assert "Winograd" in deepnet.config() and "3x3" in deepnet.config()["Winograd"]
    if enough == math.inf:  # measured never to pay: direct under "auto"
        assert not _cpu.uses_winograd((512, 512, 3, 3), (1, 1), (1, 1), which)
        return
    assert _cpu.uses_winograd((enough, enough, 3, 3), (1, 1), (1, 1), which)
    assert not _cpu.uses_winograd((enough, enough // 2, 3, 3), (1, 1), (1, 1), which)  # too few inputs
    assert not _cpu.uses_winograd((enough, 1, 3, 3), (1, 1), (1, 1), which)  # DeepConvNet's conv1
    assert not _cpu.uses_winograd((enough, enough, 3, 3), (2, 2), (1, 1), which)  # stride 2
    assert not _cpu.uses_winograd((enough, enough, 5, 5), (1, 1), (1, 1), which)  # 5x5
    assert not _cpu.uses_winograd((enough, enough, 3, 3), (1, 1), (3, 3), which)  # pad past the kernel
    with deepnet.winograd("never"):
        assert not _cpu.uses_winograd((64, 64, 3, 3), (1, 1), (1, 1), which)


def cpuinfo_splits_512bit_fmas():
    """What /proc/cpuinfo says of the CPU: an AMD family 25 (0x19) with avx512f (Zen 4)."""
    fields = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if not line.strip():
            break  # the first processor's block is enough
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return (
        fields.get("vendor_id") == "AuthenticAMD"
        and fields.get("cpu family") == "25"
        and "avx512f" in fields.get("flags", "").split()
    )


@pytest.mark.skipif(
    not Path("/proc/cpuinfo").exists() or platform.machine() not in ("x86_64", "AMD64"),
    reason="reads Linux's /proc/cpuinfo on x86",
)
def test_the_cpu_check_agrees_with_proc_cpuinfo():
    from deepnet._kernels import openmp_helpers

    assert openmp_helpers.splits_512bit_fmas() == cpuinfo_splits_512bit_fmas()


@pytest.mark.parametrize(
    "vector_bits,splits,expected",
    [
        (256, False, {"forward": 16, "dx": 32, "dW": math.inf}),  # AVX2 (Zen 3 measured)
        (256, True, {"forward": 16, "dx": 32, "dW": math.inf}),  # an AVX2 build on Zen 4
        (512, False, {"forward": 32, "dx": 32, "dW": math.inf}),  # Intel Xeon
        (512, True, {"forward": 16, "dx": 16, "dW": 32}),
    ],
)  # Zen 4
def test_the_rule_follows_the_build_and_the_cpu(vector_bits, splits, expected):
    assert _cpu._measured_winograd_rule(vector_bits, splits) == expected
    described = _cpu._describe_winograd_rule(expected, vector_bits, splits)
    assert f">= {expected['forward']} input and output channels (forward)" in described
    assert ("the weight gradient direct" in described) == (expected["dW"] == math.inf)
    assert ("Zen 4" in described) == (vector_bits == 512 and splits)


def test_the_rule_in_effect_is_the_one_for_this_build_and_cpu():
    from deepnet._kernels import openmp_helpers

    assert _cpu.WINOGRAD_MIN_CHANNELS == _cpu._measured_winograd_rule(
        openmp_helpers.vector_bits(), openmp_helpers.splits_512bit_fmas()
    )
    assert _cpu.WINOGRAD_RULE in deepnet.config()["Winograd"]


def test_a_bad_winograd_mode_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="set_winograd: expected one of"):
        deepnet.set_winograd("sometimes")
    with pytest.raises(ValueError, match="deepnet.winograd: expected one of"):
        with deepnet.winograd(True):
            pass


def test_the_environment_variable_sets_the_default_mode(monkeypatch):
    """A thread starts from the default, which DEEPNET_WINOGRAD sets (checked when read)."""
    import concurrent.futures

    def mode_in_a_new_thread():
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(deepnet.get_winograd).result()

    monkeypatch.setenv("DEEPNET_WINOGRAD", "never")
    assert mode_in_a_new_thread() == "never"
    monkeypatch.setenv("DEEPNET_WINOGRAD", "yes")
    with pytest.raises(ValueError, match="DEEPNET_WINOGRAD must be one of"):
        mode_in_a_new_thread()
    monkeypatch.delenv("DEEPNET_WINOGRAD")
    assert mode_in_a_new_thread() == "auto"


# -- Winograd's range (issue 32, row 11) ----------------------------------------------------

HUGE = {np.float32: 1e38, np.float64: 1e308}


def huge_conv(rng, dtype, C=32, FN=32, N=3, size=10):
    """x of ±HUGE (the largest magnitudes) and small filters: the direct result stays within
    0.1 HUGE, while Winograd's input transform (4 values added) overflows."""
    x = (rng.choice([-1.0, 1.0], (N, C, size, size)) * rng.uniform(0.5, 1, (N, C, size, size)) * HUGE[dtype]).astype(
        dtype
    )
    W = (rng.uniform(-1, 1, (FN, C, 3, 3)) * 0.1 / (9 * C)).astype(dtype)
    return x, W


def exact_conv(x, W, pad):
    """The convolution in float64 (float32 inputs: exact to ~1e-16; float64: the reference)."""
    return R.conv_forward(x.astype(np.float64), W.astype(np.float64), np.zeros(W.shape[0]), (1, 1), pad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pad", [(1, 1), (1, 2)])
def test_auto_falls_back_to_the_direct_kernel_outside_winograds_range(dtype, pad, rng):
    """±1e38 float32 inputs (±1e308 float64), for the forward pass, dx (dout of ±1e38) and
    dW: "auto" gives finite results, equal to the direct kernel's and to the float64
    reference within the usual tolerance, where Winograd's transforms would overflow."""
    x, W = huge_conv(rng, dtype)
    with deepnet.backend("cython"):
        assert _cpu.uses_winograd(W.shape, (1, 1), pad, "forward") and _cpu.uses_winograd(W.shape, (1, 1), pad, "dx")
        assert not _cpu.winograd_in_range("forward", W, x)
        with np.errstate(over="ignore", invalid="ignore"):
            y = F.conv2d(x, W, None, 1, pad)
            with deepnet.winograd("never"):
                direct = F.conv2d(x, W, None, 1, pad)
            assert np.isfinite(direct).all() and np.isfinite(y).all()
            np.testing.assert_array_equal(y, direct)
            assert max_relative_error(y, exact_conv(x, W, pad)) <= RTOL[dtype]
            # dx: dout of ±HUGE, the transposed convolution by Winograd (>= 32 channels)
            dout = (rng.choice([-1.0, 1.0], y.shape) * rng.uniform(0.5, 1, y.shape) * HUGE[dtype]).astype(dtype)
            ones = np.ones_like(x)
            assert not _cpu.winograd_in_range("dx", W, dout)
            dx = F.conv2d_backward(dout, ones, W, 1, pad)[0]
            with deepnet.winograd("never"):
                direct_dx = F.conv2d_backward(dout, ones, W, 1, pad)[0]
            assert np.isfinite(dx).all()
            np.testing.assert_array_equal(dx, direct_dx)
            exact_dx = R.conv_backward(dout.astype(np.float64), np.ones(x.shape), W.astype(np.float64), (1, 1), pad)[0]
            assert max_relative_error(dx, exact_dx) <= RTOL[dtype]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_weight_gradient_falls_back_outside_its_range_too(dtype, rng, monkeypatch):
    """dW by Winograd (the rule of a CPU that uses it) on ±HUGE inputs with small output
    gradients: finite and equal to the direct kernel's."""
    monkeypatch.setitem(_cpu.WINOGRAD_MIN_CHANNELS, "dW", 16)
    x, W = huge_conv(rng, dtype, C=16, FN=16)
    dout = (rng.uniform(-1, 1, (3, 16, 10, 10)) * 1e-3 / 400).astype(dtype)
    with deepnet.backend("cython"), np.errstate(over="ignore", invalid="ignore"):
        assert _cpu.uses_winograd(W.shape, (1, 1), (1, 1), "dW")
        assert not _cpu.winograd_in_range("dW", W, x, dout, (10, 10))
        dW = F.conv2d_backward(dout, x, W, 1, 1, input_gradient=False)[1]
        with deepnet.winograd("never"):
            direct = F.conv2d_backward(dout, x, W, 1, 1, input_gradient=False)[1]
    assert np.isfinite(dW).all()
    np.testing.assert_array_equal(dW, direct)
    exact = R.conv_backward(dout.astype(np.float64), x.astype(np.float64), W.astype(np.float64), (1, 1), (1, 1))[1]
    assert max_relative_error(dW, exact) <= RTOL[dtype]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_winograd_is_finite_up_to_the_edge_of_its_range(dtype, rng, winograd_always):
    """The bound that "auto" checks is sufficient: inputs scaled to the edge of the range
    (81 C max|x| max|W| at the largest float) run as Winograd ("always") and stay finite and
    accurate, with the extreme case of every value at its bound (all-equal signs)."""
    C = FN = 32
    largest = float(np.finfo(dtype).max)
    W = np.full((FN, C, 3, 3), 0.5, dtype)
    X = largest / (81 * C * 0.5) * 0.999
    for x in (np.full((3, C, 8, 8), X, dtype), (rng.uniform(-1, 1, (3, C, 8, 8)) * X).astype(dtype)):
        assert _cpu.winograd_in_range("forward", W, x)
        y = F.conv2d(x, W, None, 1, 1)
        assert np.isfinite(y).all()
        assert max_relative_error(y, exact_conv(x, W, (1, 1))) <= RTOL[dtype]


def test_the_range_check_counts_nan_and_inf_as_outside(rng):
    x, W = huge_conv(rng, np.float32)
    x = x / 1e30
    assert _cpu.winograd_in_range("forward", W, x)
    for special in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[1, 2, 3, 4] = special
        assert not _cpu.winograd_in_range("forward", W, y)
    half = np.full((2, 3, 4), -65504, np.float16)
    assert _cpu._max_abs(half) == 65504.0 and _cpu._max_abs(np.zeros(0, np.float32)) == 0.0


# -- non-square padding (issue 32, row 13b) -------------------------------------------------


@pytest.mark.parametrize(
    "x_shape,filters,pad",
    [
        ((2, 16, 9, 12), 16, (1, 2)),
        ((2, 16, 12, 9), 16, (2, 0)),
        ((2, 17, 7, 10), 19, (0, 1)),
        ((2, 16, 10, 7), 16, (2, 1)),
        ((2, 8, 6, 5), 8, (0, 2)),
    ],
)
def test_winograd_with_non_square_padding_equals_the_reference(x_shape, filters, pad, dtype, rng, winograd_always):
    """Forward, dx and dW by Winograd with different vertical and horizontal padding on
    images taller or wider than square: a swapped (ph, pw) gives wrong values."""
    x, W, b = random_conv(rng, x_shape, filters, dtype)
    assert all(_cpu.uses_winograd(W.shape, (1, 1), pad, which) for which in ("forward", "dx", "dW"))
    y = F.conv2d(x, W, b, 1, pad)
    assert max_relative_error(y, R.conv_forward(x, W, b, (1, 1), pad)) <= RTOL[dtype]
    dout = rng.standard_normal(y.shape).astype(dtype)
    for name, got, expected in zip(
        ("dx", "dW", "db"), F.conv2d_backward(dout, x, W, 1, pad), R.conv_backward(dout, x, W, (1, 1), pad)
    ):
        assert got.shape == expected.shape, name
        assert max_relative_error(got, expected) <= RTOL[dtype], name


@pytest.mark.parametrize("threads", [1, 3])
def test_max_abs_bits_is_the_largest_magnitude_across_chunks(dtype, threads, rng):
    from deepnet._kernels import elementwise

    unsigned = np.dtype(f"u{np.dtype(dtype).itemsize}")
    x = rng.standard_normal(3 * 8192 + 5).astype(dtype)
    for where, value in ((-1, -100.0), (8192, 200.0), (0, -np.inf), (5000, np.nan)):
        x[where] = value
        bits = elementwise.max_abs_bits(x.view(unsigned), threads)
        got = np.array(bits, unsigned).view(dtype)
        expected = np.nan if np.isnan(x).any() else np.abs(x).max()
        np.testing.assert_array_equal(got, expected)
    assert elementwise.max_abs_bits(np.zeros(0, unsigned), threads) == 0

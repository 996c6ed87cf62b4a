"""The compiled int8 kernels (deepnet._kernels.int8) against an integer NumPy reference of INT8_SPEC.

The reference here is written independently of the kernels and of deepnet.quant: im2col by
sliding windows, the integer matrix product in float64 (exact: every partial sum is an integer
below 2**53), the float32 requantization in NumPy.  Every path this CPU runs must give its
bits exactly, for 1 and 2 threads.
"""

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

K = pytest.importorskip("deepnet._kernels.int8", reason="deepnet's compiled kernels are not built")

pytestmark = [pytest.mark.kernels, pytest.mark.asan]

PATHS = K.paths()


def output_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def reference(x, x_zero, w_q, stride, pad, bias_q, scale, out_zero, relu, pool, dtype):
    """INT8_SPEC's conv_int8, in NumPy."""
    N, C, H, W = x.shape
    FN, _, KH, KW = w_q.shape
    (sh, sw), (ph, pw) = stride, pad
    OH, OW = output_size(H, KH, sh, ph), output_size(W, KW, sw, pw)
    centred = np.pad(x.astype(np.int64) - x_zero, ((0, 0), (0, 0), (ph, ph), (pw, pw)))  # the border is x_zero
    windows = sliding_window_view(centred, (KH, KW), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :OH, :OW]
    columns = windows.transpose(0, 2, 3, 1, 4, 5).reshape(N, OH, OW, C * KH * KW).astype(np.float64)
    sums = (columns @ w_q.reshape(FN, -1).T.astype(np.float64)).astype(np.int64)
    acc = np.ascontiguousarray(sums.transpose(0, 3, 1, 2)) + bias_q.astype(np.int64)[:, None, None]
    assert np.abs(acc).max(initial=0) < 2**31
    y = acc.astype(np.int32).astype(np.float32) * scale[:, None, None]
    if dtype == np.float32:
        return np.where(y > 0, y, np.float32(0)) if relu else y
    y = np.clip(np.rint(y), -512, 512) + out_zero
    q = np.clip(y, out_zero if relu else 0, 255).astype(np.uint8)
    if pool:
        PH, PW = OH // 2, OW // 2
        q = q[:, :, : 2 * PH, : 2 * PW].reshape(N, FN, PH, 2, PW, 2).max(axis=(3, 5))
    return q


def random_case(rng, **fixed):
    """A random geometry and quantization (keyword arguments fix some of them)."""
    case = dict(
        N=int(rng.integers(1, 5)),
        C=int(rng.integers(1, 10)),
        H=int(rng.integers(3, 31)),
        W=int(rng.integers(3, 31)),
        KH=int(rng.integers(1, 4)),
        KW=int(rng.integers(1, 4)),
        stride=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
        pad=(int(rng.integers(0, 3)), int(rng.integers(0, 3))),
        FN=int(rng.integers(1, 14)),
        x_zero=int(rng.integers(0, 256)),
        out_zero=int(rng.integers(0, 256)),
        relu=bool(rng.integers(2)),
        pool=bool(rng.integers(2)),
        dtype=np.uint8,
    )
    case.update(fixed)
    OH = output_size(case["H"], case["KH"], case["stride"][0], case["pad"][0])
    OW = output_size(case["W"], case["KW"], case["stride"][1], case["pad"][1])
    if case["dtype"] == np.float32 or OH < 2 or OW < 2:
        case["pool"] = False
    N, C, H, W, FN = case["N"], case["C"], case["H"], case["W"], case["FN"]
    case["x"] = rng.integers(0, 256, (N, C, H, W), dtype=np.uint8)
    case["w_q"] = rng.integers(-127, 128, (FN, C, case["KH"], case["KW"])).astype(np.int8)
    case["bias_q"] = rng.integers(-20000, 20000, FN).astype(np.int32)
    # scales that spread the sums (std about 5400 sqrt(K)) over the uint8 range, a few clipping
    case["scale"] = (rng.uniform(0.2, 3.0, FN) * 0.004 / np.sqrt(C * case["KH"] * case["KW"])).astype(np.float32)
    return case


def run(case, path=None, n_threads=None, out=None, winograd=None):
    """conv_int8 of a case into a fresh output (or out)."""
    OH = output_size(case["H"], case["KH"], case["stride"][0], case["pad"][0])
    OW = output_size(case["W"], case["KW"], case["stride"][1], case["pad"][1])
    shape = (case["N"], case["FN"], OH // 2, OW // 2) if case["pool"] else (case["N"], case["FN"], OH, OW)
    if out is None:
        out = np.full(shape, 77, dtype=case["dtype"])
    filters = K.pack_filters(case["w_q"])
    result = K.conv_int8(
        case["x"],
        case["x_zero"],
        filters,
        case["stride"],
        case["pad"],
        case["bias_q"],
        case["scale"],
        case["out_zero"],
        case["relu"],
        case["pool"],
        out,
        path=path,
        n_threads=n_threads,
        winograd=winograd,
    )
    assert result is out
    return out


def expected(case):
    return reference(
        case["x"],
        case["x_zero"],
        case["w_q"],
        case["stride"],
        case["pad"],
        case["bias_q"],
        case["scale"],
        case["out_zero"],
        case["relu"],
        case["pool"],
        case["dtype"],
    )


def assert_same_bits(got, want):
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.array_equal(got.view(np.uint8), np.ascontiguousarray(want).view(np.uint8)), (
        f"{np.count_nonzero(got != want)} of {got.size} outputs differ"
    )


def test_paths_lists_scalar_and_what_this_cpu_runs():
    assert PATHS[0] == "scalar"
    assert set(PATHS) <= set(K.PATHS)
    assert K.best_path() in PATHS
    if "avx2" in PATHS:
        assert {"avxvnni-emulated", "avx512vnni-emulated"} <= set(PATHS)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("path", PATHS)
def test_random_geometries_match_the_reference_bit_for_bit(path, seed):
    rng = np.random.default_rng(seed)
    for dtype in (np.uint8, np.uint8, np.float32):
        case = random_case(rng, dtype=dtype)
        want = expected(case)
        for n_threads in (1, 2):
            assert_same_bits(run(case, path, n_threads), want)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("C", [1, 3, 4, 50, 1024, 1027])
def test_affine_layers_match_the_reference(path, C):
    # images of one pixel (H = W = 1, 1x1 filters) take a transpose for their im2col: channel
    # counts with and without a partial last group of 4, batches past a task, scores in float32
    rng = np.random.default_rng(C)
    for N, dtype in ((1, np.uint8), (3, np.float32), (17, np.uint8), (64, np.uint8), (101, np.float32)):
        case = random_case(
            rng, N=N, C=C, H=1, W=1, KH=1, KW=1, FN=int(rng.integers(1, 60)), pad=(0, 0), stride=(1, 1), dtype=dtype
        )
        want = expected(case)
        for n_threads in (1, 2, 3):
            assert_same_bits(run(case, path, n_threads), want)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("pad", [(0, 5), (5, 0), (3, 6), (1, 9), (2, 1)])
def test_wide_borders_and_rows_around_16_bytes_match_the_reference(path, pad):
    # the padded image is written 16 bytes a row at a time, running into the border and the
    # next rows: borders wider than 8 bytes, rows of 1-33 pixels, the image's last rows
    rng = np.random.default_rng(300 + 10 * pad[0] + pad[1])
    for W in (1, 5, 8, 15, 16, 17, 31, 33):
        for KH, KW, winograd in ((3, 3, None), (3, 3, False), (1, 2, None)):
            if W + 2 * pad[1] < KW:
                continue
            case = random_case(
                rng,
                C=int(rng.integers(1, 6)),
                H=int(rng.integers(1, 7)),
                W=W,
                KH=KH,
                KW=KW,
                pad=pad,
                stride=(1, 1),
                N=int(rng.integers(1, 4)),
            )
            if output_size(case["H"], KH, 1, pad[0]) < 1:
                continue
            assert_same_bits(run(case, path, 2, winograd=winograd), expected(case))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "geometry",
    [
        dict(N=3, C=16, H=28, W=28, KH=3, KW=3, FN=16, pad=(1, 1), stride=(1, 1), pool=True),  # conv2
        dict(N=2, C=32, H=14, W=14, KH=3, KW=3, FN=32, pad=(2, 2), stride=(1, 1), pool=True),  # conv4
        dict(N=5, C=64, H=8, W=8, KH=3, KW=3, FN=64, pad=(1, 1), stride=(1, 1), pool=False),  # conv6
        dict(N=7, C=1024, H=1, W=1, KH=1, KW=1, FN=50, pad=(0, 0), stride=(1, 1), pool=False),  # affine1
        dict(N=1, C=3, H=37, W=41, KH=3, KW=2, FN=9, pad=(2, 0), stride=(2, 3), pool=True),  # odd, K = 18
        dict(N=1, C=5, H=70, W=70, KH=1, KW=1, FN=3, pad=(0, 0), stride=(1, 1), pool=True),  # K = 5, big plane
    ],
)
def test_layer_shapes_match_the_reference(path, geometry):
    rng = np.random.default_rng(7)
    for relu in (False, True):
        case = random_case(rng, relu=relu, **geometry)
        assert_same_bits(run(case, path, 2), expected(case))
        case = random_case(rng, relu=relu, dtype=np.float32, **{**geometry, "pool": False})
        assert_same_bits(run(case, path, 1), expected(case))


@pytest.mark.parametrize("path", PATHS)
def test_extreme_values_do_not_overflow_or_saturate(path):
    """All 255 activations against all +-127 weights at the largest sums: vpmaddubsw would
    saturate here, the exact paths must not."""
    rng = np.random.default_rng(3)
    C, KH, KW = 64, 3, 3
    for x_value, w_value, x_zero in ((255, 127, 0), (255, -127, 0), (0, 127, 255), (255, -127, 255)):
        case = random_case(
            rng,
            N=2,
            C=C,
            H=6,
            W=6,
            KH=KH,
            KW=KW,
            FN=12,
            pad=(1, 1),
            stride=(1, 1),
            x_zero=x_zero,
            relu=False,
            pool=False,
            dtype=np.float32,
        )
        case["x"][:] = x_value
        case["w_q"][:] = w_value
        case["w_q"][::2, 0, 0, 0] = -w_value  # alternate pairs of (u8, s8) products
        case["bias_q"][:] = 0
        case["scale"][:] = 1.0
        assert_same_bits(run(case, path, 1), expected(case))
    case = random_case(rng, N=2, C=8, H=9, W=9, KH=3, KW=3, FN=5, pad=(1, 1), stride=(1, 1))
    case["x"][:, :, ::2] = 255
    case["x"][:, :, 1::2] = 0
    case["w_q"][:] = rng.choice(np.array([-127, 127], dtype=np.int8), case["w_q"].shape)
    assert_same_bits(run(case, path, 2), expected(case))


@pytest.mark.parametrize("path", PATHS)
def test_negative_scales_pool_the_requantized_values(path):
    rng = np.random.default_rng(11)
    case = random_case(rng, N=2, C=4, H=12, W=20, KH=3, KW=3, FN=6, pad=(1, 1), stride=(1, 1), pool=True)
    case["scale"][::2] *= -1
    assert_same_bits(run(case, path, 2), expected(case))


WINOGRAD = pytest.mark.skipif("avx2" not in PATHS, reason="the Winograd convolution is the avx2 path's; no AVX2 here")


def winograd_case(rng, C, OH, OW, pad, pool, N):
    """A random 3x3, stride-1 case whose convolution output is OH x OW."""
    return random_case(
        rng,
        N=N,
        C=C,
        H=OH + 2 - 2 * pad,
        W=OW + 2 - 2 * pad,
        KH=3,
        KW=3,
        stride=(1, 1),
        pad=(pad, pad),
        FN=int(rng.integers(1, 20)),
        pool=pool,
    )


@WINOGRAD
@pytest.mark.parametrize("seed", range(6))
def test_the_avx2_winograd_convolution_matches_the_reference(seed):
    """3x3, stride 1, pooled: odd channel counts, odd outputs, fewer than 8 tiles, negative scales."""
    rng = np.random.default_rng(100 + seed)
    sizes = [(1, 5, 5, 1), (3, 9, 7, 0), (16, 28, 28, 1), (32, 14, 14, 2), (7, 8, 8, 1), (2, 4, 30, 1), (5, 12, 10, 0)]
    for C, H, W, pad in sizes:
        case = winograd_case(
            rng, C, OH=H - 2 + 2 * pad, OW=W - 2 + 2 * pad, pad=pad, pool=True, N=int(rng.integers(1, 9))
        )
        case["scale"][:: int(rng.integers(2, 5))] *= -1
        want = expected(case)
        assert_same_bits(run(case, "avx2", 1, winograd=True), want)
        assert_same_bits(run(case, "avx2", 2, winograd=True), want)
        assert_same_bits(run(case, "avx2", 1, winograd=False), want)


@WINOGRAD
@pytest.mark.parametrize("pad", [0, 1])
@pytest.mark.parametrize("seed", range(4))
def test_the_avx2_winograd_convolution_without_pooling_matches_the_reference(seed, pad):
    """Unpooled: each tile requantized straight into the output.  Odd and even heights and
    widths (a last tile row or column cut), odd and even channel counts, fewer and more than
    8 tiles an image, tile rows shorter and longer than 8 tiles, negative scales, 1-3 threads,
    against the reference and the forced direct loop."""
    rng = np.random.default_rng(200 + 10 * seed + pad)
    sizes = [(1, 5, 4), (3, 9, 7), (8, 8, 8), (16, 14, 14), (9, 15, 22), (32, 7, 7), (2, 3, 40), (5, 36, 3)]
    sizes += [(6, 5, 8), (4, 9, 7)]  # rows of 4 tiles (two a step), an odd number of them
    sizes += [(3, 4, 8), (9, 12, 8)]  # 8 wide, a multiple of 4 high: two tile rows a step, stored straight
    for C, H, W in sizes:
        case = winograd_case(rng, C, H, W, pad, False, N=int(rng.integers(3, 7)))
        assert expected(case).shape[2:] == (H, W)
        case["scale"][:: int(rng.integers(2, 5))] *= -1
        want = expected(case)
        for n_threads in (1, 2, 3):
            assert_same_bits(run(case, "avx2", n_threads, winograd=True), want)
        assert_same_bits(run(case, "avx2", 2, winograd=False), want)
        assert_same_bits(run(case, "avx2", 2), want)  # the default choice


@WINOGRAD
def test_the_winograd_choice_gives_the_same_bits_at_deepconvnets_layers():
    """conv1-conv6 of DeepConvNet: the default choice (Winograd where it pays), forced Winograd
    and the direct loop, at 1-3 threads, with extreme activations and weights."""
    rng = np.random.default_rng(21)
    layers = [(1, 28, 16, 1, False), (16, 28, 16, 1, True), (16, 14, 32, 1, False), (32, 14, 32, 2, True)]
    layers += [(32, 8, 64, 1, False), (64, 8, 64, 1, True)]
    for C, H, FN, pad, pool in layers:
        case = random_case(rng, N=5, C=C, H=H, W=H, KH=3, KW=3, stride=(1, 1), pad=(pad, pad), FN=FN, pool=pool)
        case["x"][0] = 255
        case["w_q"][::2] = 127
        case["w_q"][1::3] = -127
        want = expected(case)
        for n_threads in (1, 2, 3):
            for winograd in (None, True, False):
                assert_same_bits(run(case, "avx2", n_threads, winograd=winograd), want)


@pytest.mark.parametrize("out_zero", [0, 37, 200, 255])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("pool", [False, True])
def test_requantization_ties_and_bounds_on_every_path(out_zero, relu, pool):
    """Sums that land on halves (scale 0.5) at and around the clip bounds low - out_zero and
    255 - out_zero, the half-even ties among them, on every path, direct and Winograd."""
    rng = np.random.default_rng(out_zero + 2 * relu + pool)
    C, FN = 9, 40
    w_q = np.zeros((FN, C, 3, 3), np.int8)
    w_q[:, 0, 1, 1] = 1  # the sum is x[channel 0] - x_zero at the pixel
    w_q[::3, 4, 1, 1] = -1
    case = random_case(rng, N=3, C=C, H=10, W=12, KH=3, KW=3, stride=(1, 1), pad=(1, 1), FN=FN, pool=pool)
    case.update(w_q=w_q, x_zero=0, out_zero=out_zero, relu=relu)
    case["bias_q"] = np.arange(-640, 640, 32).astype(np.int32)  # y = (x + bias) / 2 spans [-448, 447]
    case["scale"] = np.full(FN, 0.5, np.float32)
    case["scale"][5::7] = -0.5
    want = expected(case)
    for path in PATHS:
        choices = (None, True, False) if path == "avx2" else (None,)
        for winograd in choices:
            assert_same_bits(run(case, path, 2, winograd=winograd), want)


def test_winograd_must_be_none_or_a_bool():
    with pytest.raises(TypeError, match="winograd must be None, True or False, got 'yes'"):
        K.conv_int8(**base_arguments(), winograd="yes")


def test_every_path_and_thread_count_agree_on_a_batch():
    rng = np.random.default_rng(5)
    case = random_case(rng, N=9, C=16, H=14, W=14, KH=3, KW=3, FN=20, pad=(1, 1), stride=(1, 1), pool=True)
    first = run(case, "scalar", 1)
    for path in PATHS:
        for n_threads in (1, 2, 3):
            assert_same_bits(run(case, path, n_threads), first)
    assert_same_bits(run(case), first)  # the default path and thread count


def test_non_contiguous_and_read_only_inputs():
    rng = np.random.default_rng(9)
    case = random_case(rng, N=3, C=5, H=10, W=11, KH=3, KW=3, FN=7, pad=(1, 1), stride=(1, 1), pool=False)
    want = expected(case)
    x = np.asfortranarray(case["x"])
    x.flags.writeable = False
    bias = np.repeat(case["bias_q"], 2)[::2]
    scale = np.repeat(case["scale"], 2)[::2]
    w_q = np.asfortranarray(case["w_q"])
    w_q.flags.writeable = False
    out = np.zeros(want.shape, np.uint8)
    K.conv_int8(
        x,
        case["x_zero"],
        K.pack_filters(w_q),
        list(case["stride"]),
        case["pad"],
        bias,
        scale,
        case["out_zero"],
        case["relu"],
        False,
        out,
    )
    assert_same_bits(out, want)


def test_pack_filters_keeps_the_shape_and_sums():
    w_q = np.arange(-60, 60, dtype=np.int8).reshape(4, 2, 5, 3)
    filters = K.pack_filters(w_q)
    assert filters.shape == (4, 2, 5, 3)
    assert np.array_equal(filters.sums, w_q.reshape(4, -1).astype(np.int64).sum(axis=1))


def test_quantize_and_dequantize_follow_the_spec():
    rng = np.random.default_rng(13)
    x = np.concatenate([rng.normal(0, 3, 1000), [0.5, 1.5, 2.5, -0.5, 1e30, -1e30, np.inf, -np.inf]]).astype(np.float32)
    inv_scale, zero = np.float32(1 / 0.02), 100
    want = np.clip(np.clip(np.rint(x * inv_scale), -512, 512) + zero, 0, 255).astype(np.uint8)
    out = np.empty(x.shape, np.uint8)
    assert K.quantize_uint8(x, inv_scale, zero, out) is out
    assert np.array_equal(out, want)
    x2 = x[:1000].reshape(10, 100)[:, ::2]
    out2 = np.empty(x2.shape, np.uint8)
    assert np.array_equal(K.quantize_uint8(x2, inv_scale, zero, out2), want[:1000].reshape(10, 100)[:, ::2])
    nan = np.array([np.nan], np.float32)
    assert K.quantize_uint8(nan, inv_scale, zero, np.empty(1, np.uint8))[0] == 0
    q = rng.integers(0, 256, (3, 7), dtype=np.uint8)
    scale = np.float32(0.037)
    want_f = (q.astype(np.int32) - zero).astype(np.float32) * scale
    assert_same_bits(K.dequantize_uint8(q, scale, zero), want_f)
    out_f = np.empty((3, 7), np.float32)
    assert K.dequantize_uint8(q, scale, zero, out_f) is out_f


def base_arguments():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (2, 3, 6, 6), dtype=np.uint8)
    filters = K.pack_filters(rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8))
    return dict(
        x=x,
        x_zero=0,
        filters=filters,
        stride=(1, 1),
        pad=(1, 1),
        bias_q=np.zeros(4, np.int32),
        scale=np.ones(4, np.float32),
        out_zero=0,
        relu=False,
        pool=False,
        out=np.empty((2, 4, 6, 6), np.uint8),
    )


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(x=np.zeros((2, 3, 6, 6), np.float32)), TypeError, "x must have dtype uint8, got float32"),
        (dict(x=np.zeros((3, 6, 6), np.uint8)), ValueError, "x must have 4 dimensions, got shape (3, 6, 6)"),
        (dict(x=np.zeros((2, 5, 6, 6), np.uint8)), ValueError, "x must have 3 channels (the filters'), got"),
        (dict(x=[[1]]), TypeError, "x must be a numpy.ndarray of uint8, got list"),
        (dict(filters=np.zeros((4, 3, 3, 3), np.int8)), TypeError, "filters must be what pack_filters returned"),
        (dict(x_zero=256), ValueError, "x_zero must lie in [0, 255], got 256"),
        (dict(out_zero=1.5), TypeError, "out_zero must be an int, got float"),
        (dict(stride=(0, 1)), ValueError, "stride >= 1"),
        (dict(stride=1), TypeError, "stride must be a pair of ints, got 1"),
        (dict(bias_q=np.zeros(4, np.int64)), TypeError, "bias_q must have dtype int32, got int64"),
        (dict(bias_q=np.zeros(5, np.int32)), ValueError, "bias_q must have shape (4,), got (5,)"),
        (dict(scale=np.ones(4)), TypeError, "scale must have dtype float32, got float64"),
        (dict(scale=np.full(4, np.nan, np.float32)), ValueError, "scale must be finite"),
        (dict(bias_q=np.full(4, 2**31 - 10, np.int32)), ValueError, "could overflow the int32 sums"),
        (dict(out=np.empty((2, 4, 6, 6), np.int8)), TypeError, "out must have dtype uint8 or float32, got int8"),
        (dict(out=np.empty((2, 4, 6, 5), np.uint8)), ValueError, "out must have shape (2, 4, 6, 6), got (2, 4, 6, 5)"),
        (dict(out=np.empty((2, 4, 6, 12), np.uint8)[..., ::2]), ValueError, "out must be C-contiguous"),
        (dict(pool=True), ValueError, "out must have shape (2, 4, 3, 3), got (2, 4, 6, 6)"),
        (dict(pool=True, out=np.empty((2, 4, 3, 3), np.float32)), TypeError, "out must have dtype uint8, got float32"),
    ],
)
def test_bad_arguments_are_refused_naming_expected_and_got(change, error, message):
    arguments = {**base_arguments(), **change}
    with pytest.raises(error, match=None) as raised:
        K.conv_int8(**arguments)
    assert message in str(raised.value)


def test_bad_paths_and_filters_are_refused():
    arguments = base_arguments()
    with pytest.raises(ValueError, match="path must be one of"):
        K.conv_int8(**arguments, path="sse9")
    missing = [p for p in K.PATHS if p not in PATHS]
    if missing:
        with pytest.raises(ValueError, match="not available on this CPU"):
            K.conv_int8(**arguments, path=missing[0])
    with pytest.raises(ValueError, match="C\\*KH\\*KW must be at most 65536"):
        K.pack_filters(np.zeros((1, 65537, 1, 1), np.int8))
    with pytest.raises(ValueError, match="in \\[-127, 127\\], got -128"):
        K.pack_filters(np.full((1, 1, 1, 1), -128, np.int8))
    with pytest.raises(TypeError, match="w_q must have dtype int8, got int16"):
        K.pack_filters(np.zeros((1, 1, 1, 1), np.int16))
    with pytest.raises(ValueError, match="2x2 pooling needs a 2x2 output"):
        K.conv_int8(
            **{
                **arguments,
                "x": np.zeros((2, 3, 3, 6), np.uint8),
                "pad": (0, 1),
                "pool": True,
                "out": np.empty((2, 4, 0, 3), np.uint8),
            }
        )


def test_an_empty_batch_returns_out():
    arguments = {**base_arguments(), "x": np.zeros((0, 3, 6, 6), np.uint8), "out": np.empty((0, 4, 6, 6), np.uint8)}
    assert K.conv_int8(**arguments) is arguments["out"]


@pytest.mark.parametrize("path", ["avxvnni", "avx512vnni"])
def test_real_vnni_paths_match_the_emulated_loop(path):
    if path not in PATHS:
        pytest.skip(f"this CPU has no {path} (CPUID); its emulated loop is tested above")
    rng = np.random.default_rng(17)
    for seed in range(6):
        case = random_case(rng, dtype=np.float32 if seed % 3 == 0 else np.uint8)
        assert_same_bits(run(case, path, 2), expected(case))
        assert_same_bits(run(case, path, 1), run(case, f"{path}-emulated", 1))


@WINOGRAD
@pytest.mark.parametrize("pool", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_the_avx2_winograd4_convolution_matches_the_reference(seed, pool):
    """F(4x4, 3x3)'s tiles (4x4 outputs, 2x2 pooled ones): tile rows of 2, 4 and 5-16 tiles
    (one step, several and an overshooting last one), tiles cut by odd and other sizes, an odd
    number of tile rows, odd and even channel counts, negative scales (pooling minima),
    x_zero, 1-3 threads, against the reference."""
    rng = np.random.default_rng(300 + seed + 10 * pool)
    sizes = [(8, 8, 8), (7, 16, 16), (16, 28, 28), (9, 12, 8), (8, 4, 20), (3, 20, 24), (10, 8, 36), (5, 12, 64)]
    sizes += [(64, 8, 8), (33, 8, 16), (16, 14, 14), (6, 7, 15), (11, 15, 6), (4, 3, 30), (9, 10, 7), (5, 3, 16)]
    if not pool:  # unpooled only (pooled, 5 wide is a row of 1 tile): rows of 2 tiles the last cut, 17 wide, conv5
        sizes += [(11, 15, 5), (9, 10, 17), (32, 8, 8)]
    for C, OH, OW in sizes:
        pad = int(rng.integers(0, 2))
        case = winograd_case(rng, C, OH, OW, pad, pool, N=int(rng.integers(1, 9)))
        assert K.winograd_tile(K.pack_filters(case["w_q"]), OH, OW, pool) == 4, (OH, OW, pool)
        case["scale"][:: int(rng.integers(2, 5))] *= -1
        want = expected(case)
        for n_threads in (1, 2, 3):
            assert_same_bits(run(case, "avx2", n_threads, winograd=True), want)
        assert_same_bits(run(case, "avx2", 2), want)  # the default choice


@WINOGRAD
@pytest.mark.parametrize("C", [115, 116])
def test_the_winograd4_bound_on_the_sums(C):
    """F(4x4, 3x3) recovers the sums mod 2**26: 115 channels of 127-weights reach 255 * 127 * 9 *
    115 = 33,518,475 < 2**25 and take it; 116 channels would pass 2**25 and take F(2x2, 3x3).
    Both give the reference's bits with the extreme sums."""
    rng = np.random.default_rng(C)
    case = random_case(rng, N=2, C=C, H=8, W=8, KH=3, KW=3, stride=(1, 1), pad=(1, 1), FN=6, pool=True)
    case["w_q"][0::2] = 127
    case["w_q"][1::2] = -127
    case["x"][0] = 255
    case["x_zero"] = 0
    case["scale"][:] = np.float32(2e-6)  # +-33.5e6 sums to about +-67, inside the uint8 range
    filters = K.pack_filters(case["w_q"])
    assert K.winograd_tile(filters, 8, 8, True) == (4 if C == 115 else 2)
    assert_same_bits(run(case, "avx2", 2, winograd=True), expected(case))


def test_winograd_tile_takes_packed_filters():
    with pytest.raises(TypeError, match="filters must be what pack_filters returned, got ndarray"):
        K.winograd_tile(np.zeros((1, 1, 3, 3), np.int8), 8, 8, True)

"""The bit-packed XNOR-popcount kernels of the binary layers (deepnet._kernels.binary) against a NumPy
reference: a float convolution of +-1 values, whose sums are exact integers.  Every popcount path
this CPU runs (scalar, AVX2, the emulated AVX-512 loop, and real AVX512 VPOPCNTDQ where present)
and every thread count give the same bits."""

import numpy as np
import pytest

from deepnet import _config

pytestmark = [
    pytest.mark.kernels,
    pytest.mark.asan,
    pytest.mark.skipif(not _config.kernels_compiled(), reason="the kernels are not built"),
]

B = pytest.importorskip("deepnet._kernels.binary")


def signs(a):
    return np.where(a >= 0, 1.0, -1.0)


def reference_conv(x, W, stride, pad):
    """The float64 cross-correlation of sign(x) and sign(W), zero padded: exact integers."""
    (sh, sw), (ph, pw) = stride, pad
    xs = np.pad(signs(x.astype(np.float64)), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ws = signs(W.astype(np.float64))
    N, C, H, Wd = x.shape
    F, _, kh, kw = W.shape
    OH, OW = (H + 2 * ph - kh) // sh + 1, (Wd + 2 * pw - kw) // sw + 1
    out = np.zeros((N, F, OH, OW))
    for i in range(kh):
        for j in range(kw):
            patch = xs[:, :, i : i + sh * (OH - 1) + 1 : sh, j : j + sw * (OW - 1) + 1 : sw]
            out += np.einsum("nchw,fc->nfhw", patch, ws[:, :, i, j])
    return out


GEOMETRIES = [
    # N, C, H, W, F, kh, kw, stride, pad
    (2, 3, 5, 6, 4, 3, 3, (1, 1), (1, 1)),
    (3, 64, 7, 7, 64, 3, 3, (1, 1), (1, 1)),
    (2, 70, 7, 5, 33, 3, 3, (1, 1), (1, 1)),
    (2, 130, 9, 8, 65, 3, 2, (2, 1), (2, 0)),
    (1, 1, 4, 4, 1, 1, 1, (1, 1), (0, 0)),
    (2, 16, 6, 6, 32, 3, 3, (1, 1), (2, 2)),
    (2, 64, 15, 15, 64, 3, 3, (1, 1), (1, 1)),  # 225 pixels: more than one run of the avx2 path
    (1, 40, 11, 12, 70, 2, 3, (3, 2), (1, 2)),
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "x".join(map(str, g[:7])))
@pytest.mark.parametrize("impl", ["scalar", "avx2", "avx512", "avx512_emu"])
def test_conv_equals_the_float_convolution_of_signs_for_every_path_and_thread_count(geometry, impl):
    if impl not in B.implementations():
        pytest.skip(f"this CPU has no {impl} path (it runs {B.implementations()})")
    N, C, H, Wd, F, kh, kw, stride, pad = geometry
    rng = np.random.default_rng(sum(geometry[:7]))
    x = rng.standard_normal((N, C, H, Wd)).astype(np.float32)
    x[0, 0, 0, :2] = [0.0, -0.0]  # sign(0) = sign(-0) = +1
    W = rng.standard_normal((F, C, kh, kw)).astype(np.float32)
    bias = rng.standard_normal(F).astype(np.float32)
    expected = reference_conv(x, W, stride, pad)
    assert np.array_equal(expected, np.rint(expected))
    for threads in (1, 2, 3):
        out = np.full(expected.shape, np.nan, np.float32)
        B.conv_forward(x, W, bias, out, *stride, *pad, impl, threads)
        np.testing.assert_array_equal(out, expected.astype(np.float32) + bias[:, None, None])


@pytest.mark.parametrize("geometry", GEOMETRIES[1:4] + GEOMETRIES[6:], ids=lambda g: "x".join(map(str, g[:7])))
def test_conv_into_float64_equals_the_float_convolution_of_signs(geometry):
    # float64 outputs take the avx2 path's integer dots rather than its float32 stores
    N, C, H, Wd, F, kh, kw, stride, pad = geometry
    rng = np.random.default_rng(sum(geometry[:7]) + 1)
    x, W, bias = rng.standard_normal((N, C, H, Wd)), rng.standard_normal((F, C, kh, kw)), rng.standard_normal(F)
    expected = reference_conv(x, W, stride, pad) + bias[:, None, None]
    for impl in B.implementations():
        out = np.full(expected.shape, np.nan)
        B.conv_forward(x, W, bias, out, *stride, *pad, impl, 2)
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("impl", ["scalar", "avx2", "avx512", "avx512_emu"])
@pytest.mark.parametrize("D, units", [(5, 2), (64, 32), (130, 70), (576, 256)])
def test_affine_equals_the_float_product_of_signs(impl, D, units):
    if impl not in B.implementations():
        pytest.skip(f"this CPU has no {impl} path (it runs {B.implementations()})")
    rng = np.random.default_rng(D + units)
    x, W, bias = rng.standard_normal((7, D)), rng.standard_normal((D, units)), rng.standard_normal(units)
    expected = signs(x) @ signs(W) + bias
    for threads in (1, 3):
        out = np.empty((7, units))
        B.affine_forward(x, W, bias, out, impl, threads)
        np.testing.assert_array_equal(out, expected)


def test_every_path_gives_the_same_bits_on_a_large_layer():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 200, 9, 9)).astype(np.float32)
    W = rng.standard_normal((96, 200, 3, 3)).astype(np.float32)
    outputs = []
    for impl in B.implementations():
        out = np.empty((4, 96, 9, 9), np.float32)
        B.conv_forward(x, W, np.zeros(96, np.float32), out, 1, 1, 1, 1, impl, 2)
        outputs.append(out)
    for out in outputs[1:]:
        np.testing.assert_array_equal(out, outputs[0])
    np.testing.assert_array_equal(outputs[0], reference_conv(x, W, (1, 1), (1, 1)))


def test_packing_layout_puts_channel_c_in_bit_c_mod_64_of_word_c_div_64():
    x = -np.ones((1, 70, 1, 2), np.float32)
    x[0, [0, 63, 64, 69], 0, 1] = [1.0, 0.0, 2.0, -0.0]
    packed = B.pack_images(x)
    assert packed.shape == (1, 2, 2) and packed.dtype == np.uint64
    assert packed[0, 0].tolist() == [0, 0]
    assert packed[0, 1].tolist() == [1 | (1 << 63), 1 | (1 << 5)]
    W = -np.ones((3, 70, 1, 1))
    W[2, 65, 0, 0] = 1.0
    weights = B.pack_conv_weights(W)
    assert weights.shape == (2, B.padded_filters(3)) and B.padded_filters(3) % 32 == 0
    assert weights[1, 2] == 1 << 1 and not weights[0].any() and weights[1].sum() == 2


@pytest.mark.parametrize("C, P", [(64, 600), (70, 601), (5, 1)])
def test_pack_images_against_numpy_signs(C, P):
    # more than 64 blocks of 8 pixels, a partial last block, a partial last word
    rng = np.random.default_rng(C + P)
    x = rng.standard_normal((2, C, 1, P)).astype(np.float32)
    x[0, 0, 0, :3] = [0.0, -0.0, np.nan][:P]
    bits = (x >= 0).reshape(2, C, P).transpose(0, 2, 1)
    bits = np.concatenate([bits, np.zeros((2, P, -C % 64), bool)], axis=2).reshape(2, P, -1, 64)
    expected = (bits.astype(np.uint64) << np.arange(64, dtype=np.uint64)).sum(axis=3, dtype=np.uint64)
    for threads in (1, 2):
        np.testing.assert_array_equal(B.pack_images(x, threads), expected)


@pytest.mark.parametrize("impl", ["scalar", "avx2", "avx512_emu"])
@pytest.mark.parametrize("C", [32704, 32768])
def test_window_of_32704_and_32768_bits_counts_exactly(impl, C):
    # the avx2 path counts in int16 up to 511 window words, and hands larger windows on
    if impl not in B.implementations():
        pytest.skip(f"this CPU has no {impl} path (it runs {B.implementations()})")
    x = np.ones((1, C, 1, 2), np.float32)
    x[0, :100, 0, 1] = -1
    W = -np.ones((2, C, 1, 1), np.float32)
    W[1, :7] = 1
    out = np.empty((1, 2, 1, 2), np.float32)
    B.conv_forward(x, W, np.zeros(2, np.float32), out, 1, 1, 0, 0, impl)
    np.testing.assert_array_equal(out, reference_conv(x, W, (1, 1), (0, 0)).astype(np.float32))
    assert out[0, 0, 0, 0] == -C


@pytest.mark.parametrize("C", [64, 192, 200])
def test_windows_where_every_bit_or_no_bit_differs_count_exactly(C):
    # the avx2 path sums two pixels' counts in the halves of a byte and its byte counts reach
    # 192 over three words: neighbouring pixels that differ in every bit and in none
    x = np.ones((2, C, 5, 6), np.float32)
    x[:, :, :, 1::2] = -1
    x[1, :, 2:, :] *= -1
    W = np.ones((3, C, 3, 3), np.float32)
    W[1] = -1
    W[2, :, :, 1] = -1
    expected = reference_conv(x, W, (1, 1), (1, 1))
    for impl in B.implementations():
        out = np.empty(expected.shape, np.float32)
        B.conv_forward(x, W, np.zeros(3, np.float32), out, 1, 1, 1, 1, impl)
        np.testing.assert_array_equal(out, expected.astype(np.float32))


def test_float16_float64_non_contiguous_and_read_only_inputs():
    rng = np.random.default_rng(3)
    x64 = rng.standard_normal((2, 12, 6, 10))
    x = x64[:, :, :, ::2]  # not contiguous
    W = rng.standard_normal((5, 12, 3, 3)).astype(np.float16)
    W.setflags(write=False)
    expected = reference_conv(x, W, (1, 1), (1, 1))
    for arr in (x, x.astype(np.float16), np.asfortranarray(x)):
        arr.setflags(write=False)
        out = np.empty(expected.shape)
        B.conv_forward(arr, W, np.zeros(5), out, 1, 1, 1, 1)
        np.testing.assert_array_equal(out, expected)


def test_nan_packs_as_minus_one_like_the_layers_sign():
    x = np.full((1, 1, 1, 1), np.nan, np.float32)
    out = np.empty((1, 1, 1, 1), np.float32)
    B.conv_forward(x, np.ones((1, 1, 1, 1), np.float32), np.zeros(1, np.float32), out, 1, 1, 0, 0)
    assert out[0, 0, 0, 0] == -1


def test_bad_arguments_are_refused_with_what_was_expected():
    x, W = np.zeros((1, 3, 4, 4), np.float32), np.zeros((2, 3, 3, 3), np.float32)
    out = np.empty((1, 2, 4, 4), np.float32)
    with pytest.raises(ValueError, match="impl must be 'auto' or one of"):
        B.conv_forward(x, W, np.zeros(2, np.float32), out, 1, 1, 1, 1, "sse9")
    with pytest.raises(ValueError, match=r"out must have shape \(1, 2, 4, 4\), got \(1, 2, 2, 2\)"):
        B.conv_forward(x, W, np.zeros(2, np.float32), np.empty((1, 2, 2, 2), np.float32), 1, 1, 1, 1)
    with pytest.raises(ValueError, match="must agree"):
        B.conv_forward(x, np.zeros((2, 4, 3, 3)), np.zeros(2, np.float32), out, 1, 1, 1, 1)
    with pytest.raises(TypeError, match="must be float16, float32 or float64, got int64"):
        B.conv_forward(x.astype(np.int64), W, np.zeros(2, np.float32), out, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="window"):
        B.conv_forward(x, np.zeros((2, 3, 7, 7)), np.zeros(2, np.float32), out, 1, 1, 0, 0)
    with pytest.raises(ValueError, match="padded to a multiple of 32"):
        B.affine_bits(np.zeros((1, 1), np.uint64), 3, np.zeros((1, 8), np.uint64), 3, np.zeros(3), np.empty((1, 3)))
    if "avx512" not in B.implementations():
        with pytest.raises(ValueError, match="cannot run the avx512 path"):
            B.conv_forward(x, W, np.zeros(2, np.float32), out, 1, 1, 1, 1, "avx512")


def test_auto_is_the_best_path_this_cpu_runs():
    assert B.best_implementation() in B.implementations()
    assert B.best_implementation() == next(p for p in ("avx512", "avx2", "scalar") if p in B.implementations())
    assert {"scalar", "avx512_emu"} <= set(B.implementations())


def test_real_avx512_vpopcntdq_path():
    if "avx512" not in B.implementations():
        pytest.skip("this CPU lacks AVX512 VPOPCNTDQ (the emulated loop is tested instead)")
    rng = np.random.default_rng(9)
    x, W = rng.standard_normal((3, 100, 7, 7)), rng.standard_normal((64, 100, 3, 3))
    out = np.empty((3, 64, 7, 7))
    B.conv_forward(x, W, np.zeros(64), out, 1, 1, 1, 1, "avx512", 2)
    np.testing.assert_array_equal(out, reference_conv(x, W, (1, 1), (1, 1)))

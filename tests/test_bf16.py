"""bfloat16: the dtype rules, the conversion and dot-product kernels against ml_dtypes and a
NumPy reference of vdpbf16ps, the backends' bfloat16 ops, master weights, the command line."""

import sys

import numpy as np
import pytest

import deepnet
from deepnet import functional as F
from deepnet._dtypes import FLOAT_DTYPES, compute_dtype, is_bfloat16, require_bfloat16

ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes (the bf16 extra)")
kernels = pytest.importorskip("deepnet._kernels.bf16", reason="the bf16 kernels are not built")

from deepnet.backends import bf16 as bf16_backend  # noqa: E402

pytestmark = [pytest.mark.kernels, pytest.mark.asan]

BF16 = np.dtype(ml_dtypes.bfloat16)
FLT_MIN = np.float32(np.finfo(np.float32).tiny)
EMULATIONS = [isa for isa in ("scalar", "avx2") if kernels.ISAS[isa] <= kernels.ISAS[kernels.BEST]]
needs_instruction = pytest.mark.skipif(
    kernels.BEST != "avx512_bf16", reason=f"this CPU has no AVX512_BF16 (best path: {kernels.BEST})"
)


def bf16_bits(a):
    return np.ascontiguousarray(a).view(np.uint16)


# ------------------------------------------------------------------------------ dtype rules


def test_dtype_rules():
    assert compute_dtype(BF16) == np.float32 and compute_dtype(np.float16) == np.float32
    assert compute_dtype(np.float64) == np.float64
    assert BF16 in FLOAT_DTYPES and "bfloat16" in FLOAT_DTYPES and np.dtype(np.float32) in FLOAT_DTYPES
    assert is_bfloat16(np.zeros(1, BF16)) and not is_bfloat16(np.float16) and not is_bfloat16(None)
    assert require_bfloat16() == BF16


def test_missing_ml_dtypes_names_the_extra(monkeypatch):
    from deepnet.cli.options import dtype_name

    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # import ml_dtypes now raises ImportError
    with pytest.raises(ImportError, match=r"deepnet-ch8\[bf16\]"):
        require_bfloat16()
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match=r"bf16"):
        dtype_name("bfloat16")
    assert dtype_name("float32") == "float32"


# ------------------------------------------------------------------------------ conversion


def special_floats():
    bits = np.array(
        [0, 0x80000000, 1, 0x80000001, 0x007FFFFF, 0x00008000, 0x00018000, 0x7F7FFFFF, 0x7F7F8000, 0x7F800000,
         0xFF800000, 0x7F800001, 0xFFC00001, 0x7FBFFFFF, 0x3F808000, 0x3F818000, 0x3F80FFFF, 0x3F807FFF],
        dtype=np.uint32,
    )  # fmt: skip
    ties = (np.arange(1 << 16, dtype=np.uint32) << 16) | np.uint32(0x8000)  # every exact tie
    rng = np.random.default_rng(0)
    random = rng.integers(0, 1 << 32, size=1 << 18, dtype=np.uint64).astype(np.uint32)
    return np.concatenate([bits, ties, ties - 1, ties + 1, random]).view(np.float32)


@pytest.mark.parametrize("isa", EMULATIONS + [pytest.param("avx512_bf16", marks=needs_instruction)])
def test_float_to_bf16_is_ml_dtypes_astype(isa):
    """Bit for bit (ties to even, NaN quiet with its sign, subnormals kept, overflow to Inf);
    an exhaustive run over all 2^32 floats found no difference for scalar and avx2."""
    source = special_floats()
    with np.errstate(invalid="ignore", over="ignore"):
        expected = bf16_bits(source.astype(BF16))
    out = np.empty(source.size, dtype=np.uint16)
    kernels.floats_to_bf16(source, out, 1, isa)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("isa", EMULATIONS + [pytest.param("avx512_bf16", marks=needs_instruction)])
def test_bf16_to_float_is_exact(isa):
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    out = np.empty(every.size, dtype=np.float32)
    kernels.bf16_to_floats(every, out, 1, isa)
    np.testing.assert_array_equal(out.view(np.uint32), every.astype(np.uint32) << 16)
    np.testing.assert_array_equal(out.view(np.uint32), every.view(BF16).astype(np.float32).view(np.uint32))


def test_conversion_threads_and_errors():
    source = special_floats()
    one, four = np.empty(source.size, np.uint16), np.empty(source.size, np.uint16)
    kernels.floats_to_bf16(source, one, 1)
    kernels.floats_to_bf16(source, four, 4)
    np.testing.assert_array_equal(one, four)
    with pytest.raises(ValueError, match="same length"):
        kernels.floats_to_bf16(source, one[:-1], 1)
    with pytest.raises(ValueError, match="isa must be one of"):
        kernels.floats_to_bf16(source, one, 1, "sse9")


def test_backend_cast_matches_ml_dtypes():
    x = np.random.default_rng(1).standard_normal((7, 33)).astype(np.float32)[:, ::2]  # not contiguous
    narrow = F.cast(x, BF16)
    assert narrow.dtype == BF16 and narrow.shape == x.shape
    np.testing.assert_array_equal(bf16_bits(narrow), bf16_bits(x.astype(BF16)))
    np.testing.assert_array_equal(F.cast(narrow, np.float32), narrow.astype(np.float32))
    assert F.cast(narrow, np.float64).dtype == np.float64


# ------------------------------------------------------------------------------ dot GEMM


def _daz(x):
    """Subnormal float32 values read as zero, with their sign."""
    return np.where(np.abs(x) < FLT_MIN, np.copysign(np.float32(0), x), x).astype(np.float32)


def reference_dot(a, b, c):
    """vdpbf16ps's sequence in NumPy: for each pair of K, odd element first, c = fma(a, b, c)
    in float32 (the product and the sum exact in float64, rounded once to float32: two
    bfloat16's product has 16 significant bits, so the float64 sum rounds to float32 as the
    exact one would), subnormal inputs read as zero, subnormal results flushed to zero."""
    K = a.shape[1]
    if K % 2:
        a = np.concatenate([a, np.zeros((a.shape[0], 1), a.dtype)], axis=1)
        b = np.concatenate([b, np.zeros((1, b.shape[1]), b.dtype)], axis=0)
    wa = _daz(a.astype(np.float32)).astype(np.float64)
    wb = _daz(b.astype(np.float32)).astype(np.float64)
    acc = np.array(c, dtype=np.float32)
    with np.errstate(all="ignore"):
        for k2 in range(a.shape[1] // 2):
            for k in (2 * k2 + 1, 2 * k2):
                exact = _daz(acc).astype(np.float64) + wa[:, k, None] * wb[None, k, :]
                acc = _daz(exact.astype(np.float32))
    return acc


def dot_operands(rng, M, K, N, tiny=False):
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    c = rng.standard_normal((M, N)).astype(np.float32)
    if tiny:  # subnormal inputs, products that underflow, a subnormal accumulator
        a[::3] *= np.float32(1e-38)
        b[:, ::2] *= np.float32(1e-20)
        c[::2] = np.float32(3e-39)
        c[1::4] = np.float32(-0.0)
    return a.astype(BF16), b.astype(BF16), c


@pytest.mark.parametrize("isa", EMULATIONS)
@pytest.mark.parametrize("shape", [(1, 2, 1), (5, 7, 3), (9, 40, 37), (3, 64, 16), (6, 150, 50), (70, 9, 24)])
@pytest.mark.parametrize("tiny", [False, True])
def test_dot_emulation_matches_reference(isa, shape, tiny):
    a, b, c = dot_operands(np.random.default_rng(sum(shape)), *shape, tiny=tiny)
    out = bf16_backend.dot_matmul(a, b, c, isa=isa)
    np.testing.assert_array_equal(out.view(np.uint32), reference_dot(a, b, c).view(np.uint32))


def test_dot_rounds_after_each_product():
    """Each product is added and rounded in turn (ties to even): 1 + 2^-24 + 2^-24 stays 1,
    where adding the exact dot product 2^-23 to 1 first would give 1 + 2^-23."""
    a = np.ones((1, 2), dtype=BF16)
    b = np.full((2, 1), 2.0**-24, dtype=np.float32).astype(BF16)
    c = np.ones((1, 1), dtype=np.float32)
    for isa in EMULATIONS:
        assert bf16_backend.dot_matmul(a, b, c, isa=isa)[0, 0] == 1.0
    assert reference_dot(a, b, c)[0, 0] == 1.0
    assert np.float32(1) + np.float32(2.0**-23) != 1.0


def test_dot_special_values_and_threads():
    rng = np.random.default_rng(5)
    a, b, c = dot_operands(rng, 17, 12, 29)
    a[0, 3], b[5, 2], a[2, 1] = np.inf, np.nan, 3e38
    results = []
    for isa in EMULATIONS:
        for threads in (1, 3):
            with _threads(threads):
                results.append(bf16_backend.dot_matmul(a, b, c, isa=isa))
    expected = reference_dot(a, b, c)
    for out in results:
        np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
        finite = ~np.isnan(expected)
        np.testing.assert_array_equal(out[finite].view(np.uint32), expected[finite].view(np.uint32))


class _threads:
    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.saved = deepnet.get_num_threads()
        deepnet.set_num_threads(self.n)

    def __exit__(self, *exc):
        deepnet.set_num_threads(self.saved)


@needs_instruction
@pytest.mark.parametrize("shape", [(5, 7, 3), (9, 40, 37), (3, 64, 32), (6, 150, 50), (70, 9, 24)])
@pytest.mark.parametrize("tiny", [False, True])
def test_dot_instruction_matches_emulation_and_reference(shape, tiny):
    a, b, c = dot_operands(np.random.default_rng(sum(shape) + 1), *shape, tiny=tiny)
    out = bf16_backend.dot_matmul(a, b, c, isa="avx512_bf16")
    np.testing.assert_array_equal(out, bf16_backend.dot_matmul(a, b, c, isa="avx2"))
    np.testing.assert_array_equal(out.view(np.uint32), reference_dot(a, b, c).view(np.uint32))


def test_dot_gemm_shape_errors():
    with pytest.raises(ValueError, match="do not match"):
        kernels.dot_gemm(np.zeros((2, 3), np.uint32), np.zeros((4, 5), np.uint32), np.zeros((2, 5), np.float32), 1)


# ------------------------------------------------------------------------------ backend ops


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_ops_are_float32_on_widened_inputs_rounded(backend, monkeypatch):
    monkeypatch.setattr(bf16_backend, "DOT_CONVOLUTION", False)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 9, 9)).astype(BF16)
    W = (0.3 * rng.standard_normal((6, 3, 3, 3))).astype(BF16)
    b = rng.standard_normal(6).astype(BF16)
    wide = [a.astype(np.float32) for a in (x, W, b)]
    saved = deepnet.get_backend()
    deepnet.set_backend(backend)
    try:
        y = F.conv2d(x, W, b, 1, 1, relu=True)
        expected_y = F.conv2d(*wide, 1, 1, relu=True).astype(BF16)
        pooled, argmax = F.max_pool2d(y, 2, 2)
        expected_pooled = F.max_pool2d(y.astype(np.float32), 2, 2)
        dout = rng.standard_normal(y.shape).astype(BF16)
        grads = F.conv2d_backward(dout, x, W, 1, 1)
        expected_grads = F.conv2d_backward(dout.astype(np.float32), *wide[:2], 1, 1)
    finally:
        deepnet.set_backend(saved)
    assert y.dtype == BF16
    np.testing.assert_array_equal(bf16_bits(y), bf16_bits(expected_y))
    for got, want in zip(grads, expected_grads):
        assert got.dtype == BF16
        np.testing.assert_array_equal(bf16_bits(got), bf16_bits(want.astype(BF16)))
    assert pooled.dtype == BF16
    np.testing.assert_array_equal(pooled.astype(np.float32), expected_pooled[0])
    np.testing.assert_array_equal(argmax, expected_pooled[1])


@pytest.mark.parametrize("stride, pad, relu", [(1, 1, True), (2, 0, False)])
def test_dot_convolution_forward_is_im2col_times_filters_in_dot_products(stride, pad, relu):
    from deepnet.backends import reference

    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 5, 9, 8)).astype(BF16)
    W = (0.3 * rng.standard_normal((7, 5, 3, 3))).astype(BF16)
    b = rng.standard_normal(7).astype(BF16)
    y = F.conv2d(x, W, b, stride, pad, relu=relu)
    cols = reference.im2col(x.astype(np.float32), 3, 3, (stride, stride), (pad, pad)).astype(BF16)
    acc = reference_dot(cols, W.reshape(7, -1).T, np.broadcast_to(b.astype(np.float32), (cols.shape[0], 7)))
    if relu:
        acc = np.maximum(acc, 0)
    expected = acc.astype(BF16).reshape(3, y.shape[2], y.shape[3], 7).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(bf16_bits(y), bf16_bits(expected))
    pooled = F.conv2d_max_pool2d(x, W, b, stride, pad, relu=relu)
    np.testing.assert_array_equal(bf16_bits(pooled), bf16_bits(F.max_pool2d(y, 2, 2)[0]))


def _reference_windows(x, kh, kw, stride, pad):
    from deepnet.backends import reference

    return reference.im2col(x.astype(np.float32), kh, kw, (stride, stride), (pad, pad)).astype(BF16)


@pytest.mark.parametrize(
    "shape, kh, stride, pad", [((2, 3, 7, 7), 3, 1, 1), ((3, 2, 9, 8), 3, 2, 0), ((1, 5, 6, 5), 2, 1, 2)]
)
def test_window_layouts_are_im2col(shape, kh, stride, pad):
    """im2col_t is im2col's columns transposed (a zero column for an odd window count);
    im2col_pairs_t holds them as pairs of taps (a zero high half for an odd tap count)."""
    x = np.random.default_rng(6).standard_normal(shape).astype(BF16)
    cols = bf16_bits(_reference_windows(x, kh, kh, stride, pad))
    M, K = cols.shape
    for threads in (1, 3):
        cols_t = np.full((K, M + M % 2), 7, np.uint16)
        kernels.im2col_t(bf16_bits(x), cols_t, kh, kh, stride, stride, pad, pad, threads)
        np.testing.assert_array_equal(cols_t[:, :M], cols.T)
        assert not cols_t[:, M:].any()
        pairs = np.full(((K + 1) // 2, M), 7, np.uint32)
        kernels.im2col_pairs_t(bf16_bits(x), pairs, kh, kh, stride, stride, pad, pad, threads)
        padded = np.concatenate([cols, np.zeros((M, K % 2), np.uint16)], axis=1)
        np.testing.assert_array_equal(pairs & 0xFFFF, padded[:, 0::2].T)
        np.testing.assert_array_equal(pairs >> 16, padded[:, 1::2].T)
    with pytest.raises(ValueError, match="must be"):
        kernels.im2col_pairs_t(bf16_bits(x), np.zeros((1, M), np.uint32), kh, kh, stride, stride, pad, pad, 1)
    with pytest.raises(ValueError, match="must be"):
        kernels.im2col_t(bf16_bits(x), np.zeros((K, M + 2), np.uint16), kh, kh, stride, stride, pad, pad, 1)


def _reference_backward(dout, x, W, stride, pad):
    """The gradients as the dot products the backend defines (see its conv_backward)."""
    from deepnet.backends import reference

    FN, C, kh, kw = W.shape
    windows = _reference_windows(x, kh, kw, stride, pad)
    rows = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
    dW = reference_dot(np.ascontiguousarray(windows.T), rows, np.zeros((windows.shape[1], FN), np.float32))
    db = reference_dot(np.ones((1, rows.shape[0]), BF16), rows, np.zeros((1, FN), np.float32))[0]
    if stride == 1 and pad < kh:
        flipped = W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(C, -1)
        dout_windows = _reference_windows(dout, kh, kw, 1, kh - 1 - pad)
        dx = reference_dot(
            dout_windows, np.ascontiguousarray(flipped.T), np.zeros((dout_windows.shape[0], C), np.float32)
        )
        dx = dx.reshape(x.shape[0], x.shape[2], x.shape[3], C).transpose(0, 3, 1, 2)
    else:
        dcol = reference_dot(rows, W.reshape(FN, -1), np.zeros((rows.shape[0], windows.shape[1]), np.float32))
        dx = reference.col2im(dcol, x.shape, kh, kw, (stride, stride), (pad, pad))
    return dx.astype(BF16), dW.T.reshape(W.shape).astype(BF16), db.astype(BF16)


@pytest.mark.parametrize(
    "shape, stride, pad", [((3, 5, 9, 8), 1, 1), ((3, 5, 9, 8), 2, 0), ((2, 3, 7, 7), 1, 0), ((1, 4, 5, 5), 1, 2)]
)
def test_dot_convolution_backward_is_dot_products(shape, stride, pad):
    rng = np.random.default_rng(sum(shape) + stride + pad)
    x = rng.standard_normal(shape).astype(BF16)
    W = (0.3 * rng.standard_normal((7, shape[1], 3, 3))).astype(BF16)
    y = F.conv2d(x, W, None, stride, pad)
    dout = rng.standard_normal(y.shape).astype(BF16)
    expected = _reference_backward(dout, x, W, stride, pad)
    for threads in (1, 3):
        with _threads(threads):
            grads = F.conv2d_backward(dout, x, W, stride, pad)
        for got, want in zip(grads, expected):
            assert got.dtype == BF16
            np.testing.assert_array_equal(bf16_bits(got), bf16_bits(want))
    # Without the input's gradient, and from non-contiguous views: the same dW and db.
    _, dW, db = F.conv2d_backward(dout[:, ::-1][:, ::-1], x[..., ::-1][..., ::-1], W, stride, pad, input_gradient=False)
    np.testing.assert_array_equal(bf16_bits(dW), bf16_bits(expected[1]))
    np.testing.assert_array_equal(bf16_bits(db), bf16_bits(expected[2]))


def test_dot_convolution_backward_masks_and_scatters_exactly():
    """The ReLU mask and a following 2x2 pooling's scatter select dout's values: the
    gradients are those of the masked, scattered dout."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 8, 8)).astype(BF16)
    W = (0.3 * rng.standard_normal((4, 3, 3, 3))).astype(BF16)
    b = rng.standard_normal(4).astype(BF16)
    y = F.conv2d(x, W, b, 1, 1, relu=True)
    pooled, argmax = F.max_pool2d(y, 2, 2)
    dpooled = rng.standard_normal(pooled.shape).astype(BF16)
    scattered = F.max_pool2d_backward(dpooled.astype(np.float32), argmax, y.shape, 2, 2)
    scattered[y.astype(np.float32) <= 0] = 0
    assert np.count_nonzero(scattered) == np.count_nonzero(dpooled.astype(np.float32) * (pooled.astype(np.float32) > 0))
    expected = _reference_backward(scattered.astype(BF16), x, W, 1, 1)
    grads = F.conv2d_backward(dpooled, x, W, 1, 1, relu_out=pooled, pool_argmax=argmax)
    for got, want in zip(grads, expected):
        np.testing.assert_array_equal(bf16_bits(got), bf16_bits(want))


# ------------------------------------------------------------------------------ training


def test_adam_keeps_float32_master_weights():
    from deepnet.training.optimizers import Adam

    rng = np.random.default_rng(3)
    start = rng.standard_normal((4, 5)).astype(BF16)
    wide = {"W": start.astype(np.float32)}
    narrow = {"W": start.copy()}
    reference, optimizer = Adam(lr=1e-4), Adam(lr=1e-4)
    for _ in range(5):
        grad = rng.standard_normal((4, 5)).astype(np.float32)
        reference.update(wide, {"W": grad})
        optimizer.update(narrow, {"W": grad.astype(BF16)})
        # the bf16 gradient, widened, is what the float32 reference must see too
        assert narrow["W"].dtype == BF16
    state = optimizer.state_dict()
    master = state["master/W"]
    assert master.dtype == np.float32
    np.testing.assert_array_equal(bf16_bits(narrow["W"]), bf16_bits(master.astype(BF16)))
    # updates of 1e-4 vanish in bfloat16 but accumulate in the master weights
    assert not np.array_equal(master, start.astype(np.float32))
    fresh = Adam(lr=1e-4)
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh.state_dict()["master/W"], master)


def test_master_restarts_when_the_parameter_is_replaced():
    from deepnet.training.optimizers import SGD

    params = {"b": np.ones(3, dtype=BF16)}
    optimizer = SGD(lr=1e-3)
    optimizer.update(params, {"b": np.ones(3, dtype=BF16)})
    params["b"][...] = np.full(3, 5.0, dtype=BF16)  # loaded from elsewhere
    optimizer.update(params, {"b": np.zeros(3, dtype=BF16)})
    np.testing.assert_array_equal(optimizer.state_dict()["master/b"], np.full(3, 5.0, np.float32))

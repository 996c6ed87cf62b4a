"""ConvTranspose against a direct NumPy scatter, numerical gradients and the adjoint identity
<conv(x), y> = <x, conv_T(y)>, in float16, float32 and float64."""

import numpy as np
import pytest

from deepnet import functional as F
from deepnet.layers import ConvTranspose

pytestmark = [pytest.mark.kernels, pytest.mark.asan]

CASES = [  # (N, C_in, C_out, H, W, k, stride, pad, output_padding)
    (2, 3, 4, 5, 6, 3, 1, 0, 0),
    (2, 4, 3, 4, 4, 3, 2, 1, 1),
    (1, 2, 5, 3, 5, 4, 2, 1, 0),
    (3, 1, 2, 7, 7, 2, 2, 0, 0),
    (1, 6, 2, 4, 3, 5, 3, 2, 2),
]
TOLERANCE = {np.float16: 2e-2, np.float32: 1e-5, np.float64: 1e-12}


def scatter(x, W, b, stride, pad, output_padding):
    """Each input pixel adds W[c_in] times itself to the output window it spreads to."""
    N, C_in, H, Wd = x.shape
    _, C_out, kh, kw = W.shape
    OH = (H - 1) * stride - 2 * pad + kh + output_padding
    OW = (Wd - 1) * stride - 2 * pad + kw + output_padding
    full = np.zeros((N, C_out, (H - 1) * stride + kh + output_padding, (Wd - 1) * stride + kw + output_padding))
    for i in range(H):
        for j in range(Wd):
            full[:, :, i * stride : i * stride + kh, j * stride : j * stride + kw] += np.einsum(
                "nc,cokl->nokl", x[:, :, i, j], W
            )
    return full[:, :, pad : pad + OH, pad : pad + OW] + b[None, :, None, None]


def layer(case, dtype, seed=0):
    N, C_in, C_out, H, W, k, stride, pad, op = case
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(C_in, C_out, k, k)).astype(dtype)
    bias = rng.normal(size=C_out).astype(dtype)
    x = rng.normal(size=(N, C_in, H, W)).astype(dtype)
    return ConvTranspose(weights, bias, stride, pad, op), x


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_forward_against_the_scatter(case, dtype):
    t, x = layer(case, dtype)
    y = t.forward(x)
    expected = scatter(x.astype(np.float64), t.W.astype(np.float64), t.b.astype(np.float64), *case[6:])
    assert y.dtype == dtype and y.shape == expected.shape == t.output_shape(x.shape)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(y, expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * scale)


@pytest.mark.parametrize("case", CASES)
def test_adjoint_of_the_convolution(case):
    # <conv(z; W), x> = <z, conv_T(x; W)> with no bias: the layer is the convolution's transpose
    t, x = layer(case, np.float64)
    t.b[...] = 0
    y = t.forward(x)
    z = np.random.default_rng(1).normal(size=y.shape)
    conv = F.conv2d(z, t.W, None, case[6], case[7])
    assert conv.shape == x.shape
    np.testing.assert_allclose(np.vdot(conv, x), np.vdot(z, y), rtol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_gradients_against_numerical_ones(case):
    t, x = layer(case, np.float64)
    g = np.random.default_rng(2).normal(size=t.output_shape(x.shape))

    def loss():
        return float(np.vdot(t.forward(x), g))

    t.forward(x)
    dx = t.backward(g)
    analytic = {"x": dx, "W": t.dW, "b": t.db}
    for name, array in (("x", x), ("W", t.W), ("b", t.b)):
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + 1e-6
            up = loss()
            array[index] = saved - 1e-6
            down = loss()
            array[index] = saved
            numeric[index] = (up - down) / 2e-6
        np.testing.assert_allclose(analytic[name], numeric, rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_lower_precision_gradients_follow_float64(dtype):
    case = CASES[1]
    t64, x64 = layer(case, np.float64)
    t, x = layer(case, dtype)
    g = np.random.default_rng(3).normal(size=t.output_shape(x.shape))
    t64.forward(x64)
    t.forward(x)
    dx64, dx = t64.backward(g), t.backward(g.astype(dtype))
    for got, expected in ((dx, dx64), (t.dW, t64.dW), (t.db, t64.db)):
        assert got.dtype == dtype
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got, expected, rtol=TOLERANCE[dtype] * 5, atol=TOLERANCE[dtype] * 5 * scale)


def test_bad_arguments_are_refused():
    W, b = np.zeros((2, 3, 3, 3), np.float32), np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"W must have shape \(C_in, C_out, kh, kw\) and b \(C_out,\)"):
        ConvTranspose(W, np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="0 <= output_padding < stride"):
        ConvTranspose(W, b, stride=2, output_padding=2)
    t = ConvTranspose(W, b)
    with pytest.raises(ValueError, match=r"expected \(N, 2, H, W\) input"):
        t.forward(np.zeros((1, 3, 4, 4), np.float32))
    with pytest.raises(RuntimeError, match="no forward pass"):
        ConvTranspose(W, b).backward(np.zeros((1, 3, 6, 6), np.float32))


def test_model_specs_and_files_carry_it_and_refuse_bad_settings(tmp_path):
    from deepnet.models import build, load_model, model_spec

    spec = {
        "type": "Sequential",
        "layers": [
            {
                "type": "Convolution",
                "in_channels": 1,
                "filters": 4,
                "kernel": [3, 3],
                "stride": [2, 2],
                "pad": [1, 1],
                "relu": True,
            },
            {
                "type": "ConvTranspose",
                "in_channels": 4,
                "out_channels": 2,
                "kernel": [3, 3],
                "stride": [2, 2],
                "pad": [1, 1],
                "output_padding": [1, 1],
            },
            {"type": "Flatten"},  # a model file holds a classifier: (N, scores)
        ],
    }
    net = build(spec, np.float32, rng=0)
    assert model_spec(net) == spec
    x = np.random.default_rng(4).random((2, 1, 28, 28), dtype=np.float32)
    assert net.predict(x).shape == (2, 2 * 28 * 28)
    loaded = load_model(net.save(str(tmp_path / "transposed.npz")))
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))
    for bad, message in (
        ({"pad": [50, 50]}, "no output"),
        ({"output_padding": [3, 3]}, "output_padding < stride"),
        ({"kernel": [100000, 100000]}, "more than"),
    ):
        layers = [spec["layers"][0], {**spec["layers"][1], **bad}, spec["layers"][2]]
        with pytest.raises(ValueError, match=message):
            build({"type": "Sequential", "layers": layers})

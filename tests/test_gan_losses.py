"""The losses of the chapter's applications: SigmoidWithLoss (binary cross-entropy from
logits) and SpatialSoftmaxWithLoss (per-pixel softmax cross-entropy), against direct
float64 formulas, extreme logits and numerical gradients."""

import numpy as np
import pytest

from deepnet.layers import SigmoidWithLoss, SoftmaxWithLoss, SpatialSoftmaxWithLoss
from support import numerical_gradient


def test_sigmoid_loss_against_the_formula_and_stays_finite():
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(4, 3)) * 3, rng.random((4, 3))
    p = 1 / (1 + np.exp(-x))
    expected = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    assert SigmoidWithLoss().forward(x, t) == pytest.approx(expected, rel=1e-12)
    # logits far past exp's range: the loss is |x| for the wrong target, 0 for the right one
    loss = SigmoidWithLoss()
    assert loss.forward(np.array([1000.0, -1000.0]), np.array([0.0, 1.0])) == pytest.approx(1000.0)
    np.testing.assert_allclose(loss.backward(), [0.5, -0.5])
    assert SigmoidWithLoss().forward(np.array([1000.0, -1000.0]), np.array([1.0, 0.0])) == 0.0


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_sigmoid_loss_gradient(dtype):
    rng = np.random.default_rng(1)
    x, t = rng.normal(size=(3, 5)), (rng.random((3, 5)) > 0.5).astype(np.float64)
    loss = SigmoidWithLoss()
    loss.forward(x.astype(dtype), t)
    dx = loss.backward()
    assert dx.dtype == dtype
    numeric = numerical_gradient(lambda: SigmoidWithLoss().forward(x, t), x)
    np.testing.assert_allclose(
        dx, numeric, rtol=1e-3 if dtype == np.float16 else 1e-6, atol=1e-4 if dtype == np.float16 else 1e-9
    )


def test_sigmoid_loss_refuses_bad_targets():
    with pytest.raises(ValueError, match="t must have x's shape"):
        SigmoidWithLoss().forward(np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(ValueError, match=r"targets in \[0, 1\]"):
        SigmoidWithLoss().forward(np.zeros(2), np.array([0.0, 2.0]))


def test_spatial_softmax_loss_is_the_row_loss_of_every_pixel():
    rng = np.random.default_rng(2)
    x, t = rng.normal(size=(2, 4, 3, 5)) * 4, rng.integers(0, 4, size=(2, 3, 5))
    rows, labels = x.transpose(0, 2, 3, 1).reshape(-1, 4), t.reshape(-1)
    log_probabilities = rows - rows.max(axis=1, keepdims=True)
    log_probabilities -= np.log(np.exp(log_probabilities).sum(axis=1, keepdims=True))
    expected = -log_probabilities[np.arange(len(labels)), labels].mean()
    loss = SpatialSoftmaxWithLoss()
    assert loss.forward(x, t) == pytest.approx(expected, rel=1e-12)
    row_loss = SoftmaxWithLoss()
    row_loss.forward(rows, labels)
    np.testing.assert_allclose(
        loss.backward(), row_loss.backward().reshape(2, 3, 5, 4).transpose(0, 3, 1, 2), rtol=1e-12
    )
    numeric = numerical_gradient(lambda: SpatialSoftmaxWithLoss().forward(x, t), x)
    np.testing.assert_allclose(loss.backward(), numeric, rtol=1e-6, atol=1e-8)


def test_spatial_softmax_loss_refuses_bad_labels():
    x = np.zeros((1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"one label a pixel, shape \(1, 2, 2\)"):
        SpatialSoftmaxWithLoss().forward(x, np.zeros((1, 3, 2, 2), int))
    with pytest.raises(ValueError, match=r"labels must lie in 0..2"):
        SpatialSoftmaxWithLoss().forward(x, np.full((1, 2, 2), 3))
    with pytest.raises(TypeError, match="labels must be integers"):
        SpatialSoftmaxWithLoss().forward(x, np.zeros((1, 2, 2)))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_spatial_softmax_loss_in_each_dtype(dtype):
    """float16 and float32 scores give the float64 loss and gradient to their precision,
    and the gradient keeps the scores' dtype."""
    rng = np.random.default_rng(3)
    x, t = rng.normal(size=(2, 5, 4, 3)) * 3, rng.integers(0, 5, size=(2, 4, 3))
    exact = SpatialSoftmaxWithLoss()
    want = exact.forward(x, t)
    want_dx = exact.backward()
    loss = SpatialSoftmaxWithLoss()
    got = loss.forward(x.astype(dtype), t)
    dx = loss.backward()
    assert dx.dtype == dtype
    tolerance = {np.float16: 2e-3, np.float32: 1e-6, np.float64: 1e-12}[dtype]
    assert got == pytest.approx(want, rel=tolerance * 10)
    np.testing.assert_allclose(dx, want_dx, rtol=tolerance * 10, atol=tolerance * np.abs(want_dx).max())

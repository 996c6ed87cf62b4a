"""Reviewer's tests (branch review): gradient checks that were missing (they pass on main at
dd15e03): BatchNormalization with its fused ReLU, 2-D and 4-D, on both CPU backends, and
GlobalAveragePooling on odd sizes; and the empty batch through BatchNormalization, which
fails on main."""
import numpy as np
import pytest

from deepnet import layers as L
from test_layers import backend, check_layer_gradients  # noqa: F401  (fixture)


@pytest.mark.parametrize("shape", [(5, 4), (4, 3, 3, 5), (3, 2, 1, 7)])
@pytest.mark.parametrize("relu", [False, True])
def test_batch_normalization_gradients_on_both_backends(backend, rng, shape, relu):
    channels = shape[1]
    layer = L.BatchNormalization(rng.standard_normal(channels) + 1.0, rng.standard_normal(channels) * 0.5, relu=relu)
    x = rng.standard_normal(shape) * 3 + 2
    check_layer_gradients(layer, x, rng, ("gamma", "beta"), forward_kwargs={"train": True})


@pytest.mark.parametrize("shape", [(3, 5, 7, 3), (1, 1, 1, 1), (2, 3, 1, 9)])
def test_global_average_pooling_gradients_on_odd_sizes(backend, rng, shape):
    check_layer_gradients(L.GlobalAveragePooling(), rng.standard_normal(shape), rng)


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (0, 3)])
@pytest.mark.parametrize("train", [True, False])
def test_batch_normalization_of_an_empty_batch_is_empty(backend, shape, train):
    """An empty shard (data-parallel: a last batch smaller than the ranks) must pass through.
    Fails on main at dd15e03: x.reshape(0, C, -1) cannot infer -1 for an empty array."""
    layer = L.BatchNormalization(np.ones(3), np.zeros(3), relu=True)
    out = layer.forward(np.zeros(shape), train=train)
    assert out.shape == shape
    if train:
        assert layer.backward(np.zeros(shape)).shape == shape

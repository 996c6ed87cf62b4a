"""Reviewer's tests (branch review): gradient checks that were missing (they pass on main at
dd15e03): BatchNormalization with its fused ReLU, 2-D and 4-D, on both CPU backends, and
GlobalAveragePooling on odd sizes."""
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

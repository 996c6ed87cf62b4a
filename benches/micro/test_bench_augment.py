"""Data augmentation of one MNIST batch (100 x 1 x 28 x 28, float32) next to what it must beat.

Groups:

* ``affine_warp[batch100 float32]``, ``elastic_warp[batch100 float32]``: the compiled
  kernels (``backend=cython``) against the vectorised NumPy reference (``backend=numpy``);
  issue 11 asks for at least 10x.
* ``augment[batch100 float32]``: a whole ``Augment`` call (the random draws, the elastic
  field and the warp) for the affine and the affine + elastic recipes, and one DeepConvNet
  training step (loss_and_gradient) on the same batch: issue 11 asks for under 5% of it.

    pytest benches/micro/test_bench_augment.py --benchmark-only --benchmark-columns=min,median,rounds
"""

import numpy as np
import pytest

import deepnet
from deepnet import functional as F
from deepnet.augment import Augment, affine_theta, elastic_field
from deepnet.nets import DeepConvNet

BATCH = 100
GROUP = f"[batch{BATCH} float32]"
RECIPES = {
    "affine": "rotation=10,scale=0.1,shift=2.5",
    "affine+elastic": "rotation=10,scale=0.1,shift=2.5,elastic=34:4",
}


@pytest.fixture
def batch(rng):
    return rng.random((BATCH, 1, 28, 28), dtype=np.float32)


def _bench(benchmark, group, backend, function, *args):
    benchmark.group = group
    benchmark.extra_info.update(backend=backend, threads=deepnet.get_num_threads())
    with deepnet.backend(backend):
        return benchmark(function, *args)


def test_affine_warp(benchmark, backend, rng, batch):
    theta = affine_theta(
        (28, 28), rng.uniform(-10, 10, BATCH), rng.uniform(0.9, 1.1, BATCH), shift=rng.uniform(-2.5, 2.5, (BATCH, 2))
    )
    out = _bench(benchmark, "affine_warp" + GROUP, backend, F.affine_warp, batch, theta)
    assert out.shape == batch.shape and out.dtype == batch.dtype


def test_elastic_warp(benchmark, backend, rng, batch):
    field = elastic_field(rng, BATCH, (28, 28), 34.0, 4.0)
    out = _bench(benchmark, "elastic_warp" + GROUP, backend, F.elastic_warp, batch, field)
    assert out.shape == batch.shape and out.dtype == batch.dtype


@pytest.mark.parametrize("recipe", RECIPES)
def test_augment(benchmark, recipe, batch):
    if not deepnet.kernels_compiled():
        pytest.skip("deepnet's compiled kernels are not built")
    augment = Augment.from_spec(RECIPES[recipe], rng=0)
    benchmark.extra_info["recipe"] = RECIPES[recipe]
    out = _bench(benchmark, "augment" + GROUP, "cython", augment, batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype


def test_deepconvnet_training_step(benchmark, rng, batch):
    if not deepnet.kernels_compiled():
        pytest.skip("deepnet's compiled kernels are not built")
    net = DeepConvNet(seed=0)
    labels = rng.integers(0, 10, BATCH)
    loss, grads = _bench(benchmark, "augment" + GROUP, "cython", net.loss_and_gradient, batch, labels)
    assert np.isfinite(float(loss)) and set(grads) == set(net.params)

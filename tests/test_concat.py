"""Concat (branches side by side, concatenated along the channels) and GoogLeNet's
Inception block: shapes, numerical gradients, model specs and files, cost checks."""

import numpy as np
import pytest

from deepnet.layers import Affine, Concat, Convolution, GlobalAveragePooling, Relu
from deepnet.models import Sequential, build, describe, model_spec
from deepnet.models.compiled import for_inference
from deepnet.models.googlenet import inception
from support import numerical_gradient


def small_block(dtype=np.float64, seed=0):
    return inception(3, 2, (2, 3), (1, 2), 2, np.random.default_rng(seed), dtype)


def test_inception_concatenates_its_four_branches():
    block = small_block()
    x = np.random.default_rng(1).normal(size=(2, 3, 6, 5))
    y = block.forward(x, False)
    assert y.shape == (2, 2 + 3 + 2 + 2, 6, 5) == block.output_shape(x.shape)
    # each part of the channels is its branch's own output
    first = 0
    for branch in block.branches:
        part = branch.forward(x, False)
        np.testing.assert_array_equal(y[:, first : first + part.shape[1]], part)
        first += part.shape[1]


def test_gradients_against_numerical_ones():
    # L = <block(x), G>: the backward pass of G gives dL/dx and every branch's dL/dW, db
    block = small_block()
    x = np.random.default_rng(3).normal(size=(2, 3, 5, 5))
    G = np.random.default_rng(4).normal(size=block.output_shape(x.shape))

    def loss():
        return float(np.vdot(block.forward(x, False), G))

    block.forward(x, True)
    dx = block.backward(G)
    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)
    for prefix, layer in block.named_layers():
        for name, param in layer.params.items():
            expected = layer.grads[name].copy()
            np.testing.assert_allclose(
                expected, numerical_gradient(loss, param), rtol=1e-6, atol=1e-8, err_msg=prefix + name
            )


def test_branches_that_disagree_are_refused():
    rng = np.random.default_rng(4)
    block = Concat(
        Convolution(rng.normal(size=(2, 1, 3, 3)), np.zeros(2), pad=1),
        Convolution(rng.normal(size=(2, 1, 3, 3)), np.zeros(2)),
    )
    with pytest.raises(ValueError, match="agree on every axis but the channels"):
        block.forward(np.zeros((1, 1, 5, 5)))
    with pytest.raises(ValueError, match="at least one branch"):
        Concat()
    with pytest.raises(RuntimeError, match="no forward pass"):
        small_block().backward(np.zeros((1, 9, 4, 4)))


def test_spec_round_trip_files_and_cost(tmp_path):
    net = Sequential(
        Convolution(
            np.random.default_rng(5).normal(size=(3, 1, 3, 3)).astype(np.float32), np.zeros(3, np.float32), pad=1
        ),
        Relu(),
        small_block(np.float32),
        GlobalAveragePooling(),
        Affine(np.random.default_rng(6).normal(size=(9, 10)).astype(np.float32), np.zeros(10, np.float32)),
    )
    spec = model_spec(net)
    assert spec["layers"][2]["type"] == "Concat" and len(spec["layers"][2]["branches"]) == 4
    rebuilt = build(spec, np.float32, rng=0)
    assert model_spec(rebuilt) == spec
    x = np.random.default_rng(7).random((2, 1, 28, 28), dtype=np.float32)
    path = net.save(str(tmp_path / "inception.npz"))
    from deepnet.models import load_model

    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))
    info = describe(net, (1, 1, 28, 28))
    assert info["output_shape"] == (1, 10)
    compiled = for_inference(net)  # the compiled plan's concat step
    assert compiled is not net
    np.testing.assert_array_equal(compiled.predict(x), net.predict(x))
    bad = dict(spec)
    bad["layers"] = list(spec["layers"])
    bad["layers"][2] = {"type": "Concat", "branches": []}
    with pytest.raises(ValueError, match="at least one branch"):
        build(bad)
    bad["layers"][2] = {"type": "Concat", "branches": [{"type": "Relu"}, {"type": "Flatten"}]}
    with pytest.raises(ValueError, match="agree on every axis but the channels"):
        build(bad)


def test_googlenet_builds_saves_and_learns(tmp_path):
    from deepnet.models import GoogLeNet, load_model
    from deepnet.optimizers import Adam

    net = GoogLeNet(seed=0)
    assert describe(net)["parameters"] == 51978 and describe(net)["output_shape"] == (1, 10)
    assert model_spec(net) == {"type": "GoogLeNet", "config": {"input_dim": [1, 28, 28], "output_size": 10}}
    x = np.random.default_rng(8).random((8, 1, 28, 28), dtype=np.float32)
    t = np.arange(8) % 10
    loaded = load_model(net.save(str(tmp_path / "googlenet.npz")))
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))
    # a few steps on one batch fit it: the gradients flow through every branch
    optimizer, first = Adam(lr=0.01), net.loss(x, t)
    for _ in range(15):
        optimizer.update(net.params, net.gradient(x, t))
    assert net.loss(x, t) < 0.75 * first

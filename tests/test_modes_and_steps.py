"""Layer modes (train()/eval(), the mode a forward pass runs in when not told), the fusion
pass (deepnet.nn.fusion.plan: layers into steps, each layer saying whether it fuses with
the next), and deepnet.nn.containers.Sequential, the container under the classifier."""

import numpy as np
import pytest

from deepnet import layers as L
from deepnet import nn
from deepnet.models import Sequential as Model
from deepnet.nets import DeepConvNet
from deepnet.nn import fusion
from deepnet.nn.containers import Sequential


def _dropout_net(seed=0):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((4, 3)).astype(np.float32)
    return Model(L.Affine(W, np.zeros(3, np.float32)), L.Dropout(0.5, rng=np.random.default_rng(seed)))


def _trains(net, x):
    """Whether a forward pass not told its mode trained: dropout zeroed some units instead
    of scaling them all by one half."""
    inference = net.forward(x, False)
    out = net.forward(x)
    return not np.array_equal(out, inference)


def test_a_layer_infers_unless_told_or_put_in_training_mode():
    x = np.random.default_rng(1).random((50, 4)).astype(np.float32)
    net = _dropout_net()
    assert net.training is False and not _trains(net, x)
    assert net.train() is net and net.training and all(layer.training for _, layer in net.named_layers())
    assert _trains(net, x)
    assert np.array_equal(net.forward(x, False), net.forward(x, train_flg=False))  # told: the argument wins
    assert net.eval() is net and not net.training and not any(layer.training for _, layer in net.named_layers())
    assert not _trains(net, x)
    # predict too takes the mode when not told
    net.train()
    assert not np.array_equal(net.predict(x), net.predict(x, train=False))


def test_train_reaches_layers_inside_containers_and_the_book_keyword_still_works():
    rng = np.random.default_rng(0)
    bn = L.BatchNormalization(np.ones(3, np.float32), np.zeros(3, np.float32))
    inner = Sequential(L.Affine(rng.standard_normal((3, 3)).astype(np.float32), np.zeros(3, np.float32)), bn)
    net = Model(L.Residual(inner))
    net.train()
    assert bn.training and inner.training
    x = rng.random((8, 3)).astype(np.float32)
    before = bn.running_mean.copy()
    net.forward(x)  # training: the running statistics move
    assert not np.array_equal(bn.running_mean, before)
    net.eval()
    after = bn.running_mean.copy()
    net.forward(x)
    assert np.array_equal(bn.running_mean, after)
    bn.forward(x, train_flg=True)  # the book's keyword, the layer in eval mode
    assert not np.array_equal(bn.running_mean, after)


def test_the_plan_fuses_each_convolution_with_the_2x2_pooling_after_it():
    net = DeepConvNet(seed=0)
    steps = fusion.plan(net.layers)
    fused = [step for step in steps if not isinstance(step, L.Layer)]
    assert len(fused) == 3 and len(steps) == len(net.layers) - 3
    assert all(step.skips_input_gradient for step in fused)
    conv = L.Convolution(np.ones((2, 1, 3, 3), np.float32), np.zeros(2, np.float32), pad=1)
    assert conv.fuse_with(L.Pooling(3, 3)) is None and conv.fuse_with(L.Pooling(2, 2, stride=1)) is None
    assert L.Relu().fuse_with(L.Relu()) is None  # the default: no fusion
    assert fusion.plan([]) == []


class _Scale(nn.Layer):
    """A test layer that fuses with a following _Scale into one step."""

    spec_name = None

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x, train=None):
        return x * self.factor

    def backward(self, dout):
        return dout * self.factor

    def fuse_with(self, following):
        return _Product(self, following) if isinstance(following, _Scale) else None


class _Product:
    skips_input_gradient = False
    runs = 0

    def __init__(self, first, second):
        self.factor = first.factor * second.factor

    def forward(self, x, train=False):
        _Product.runs += 1
        return x * self.factor

    def backward(self, dout):
        return dout * self.factor


def test_a_container_runs_whatever_steps_its_layers_fuse_into():
    net = Sequential(_Scale(2.0), _Scale(3.0), _Scale(5.0))
    _Product.runs = 0
    x = np.ones((1, 2))
    assert np.array_equal(net.forward(x), x * 30) and _Product.runs == 1
    assert np.array_equal(net.backward(np.ones((1, 2))), np.full((1, 2), 30.0))


def test_the_container_is_the_layer_under_the_classifier():
    x = np.random.default_rng(2).random((4, 1, 28, 28)).astype(np.float32)
    model = DeepConvNet(seed=0)
    container = Sequential(*model.layers)
    assert np.array_equal(container.forward(x), model.predict(x))
    assert container.output_shape((4, 1, 28, 28)) == (4, 10)
    assert set(container.params) == {f"{i}.{p}" for i, layer in enumerate(model.layers) for p in layer.params}
    assert container.config()["layers"][0]["type"] == "Convolution"
    out = container.forward(x, True)
    assert container.backward(np.ones_like(out), input_gradient=False) is None  # the first Convolution skips dx
    assert container.backward(np.ones_like(out)).shape == x.shape
    with pytest.raises(AttributeError):
        container.predict  # noqa: B018  (the classifier's methods are the model's)

"""New layer types need no central edit: LeakyReLU and Tanh (deepnet.nn.activations alone), and a
layer defined here, are checked numerically, built from specs, saved, loaded and described.

Every layer type is a subclass of deepnet.nn.base.Layer that registers itself; these tests show
that defining the class is all it takes for build, model_spec, load_model and describe.
"""

import numpy as np
import pytest

from deepnet import layers as L
from deepnet.nets import build, describe, load_model, model_spec
from deepnet.nn.activations import LeakyReLU, Tanh
from deepnet.nn.base import Layer
from deepnet.nn.config import _check_keys, _int

# name -> (a fresh layer, its spec entry)
NEW_LAYERS = {
    "LeakyReLU": (lambda: LeakyReLU(0.1), {"type": "LeakyReLU", "alpha": 0.1}),
    "LeakyReLU-default": (lambda: LeakyReLU(), {"type": "LeakyReLU"}),
    "Tanh": (lambda: Tanh(), {"type": "Tanh"}),
}


def _numerical_gradient(f, x, eps=1e-6):
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        saved = x[index]
        x[index] = saved + eps
        plus = f(x)
        x[index] = saved - eps
        minus = f(x)
        x[index] = saved
        grad[index] = (plus - minus) / (2 * eps)
    return grad


@pytest.mark.parametrize("name", sorted(NEW_LAYERS))
def test_backward_matches_central_differences_in_float64(name):
    layer = NEW_LAYERS[name][0]()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 4, 4))
    x[np.abs(x) < 1e-3] = 0.5  # away from LeakyReLU's kink
    dout = rng.standard_normal(x.shape)
    out = layer.forward(x.copy(), train=True)
    assert out.shape == layer.output_shape(x.shape) and out.dtype == np.float64
    dx = layer.backward(dout)
    numerical = _numerical_gradient(lambda v: float((layer.forward(v, train=True) * dout).sum()), x.copy())
    np.testing.assert_allclose(dx, numerical, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", sorted(NEW_LAYERS))
def test_a_model_of_them_round_trips_through_a_model_file(name, tmp_path):
    spec = {
        "type": "Sequential",
        "layers": [
            {"type": "Convolution", "in_channels": 1, "filters": 4, "kernel": 3, "stride": 1, "pad": 1},
            NEW_LAYERS[name][1],
            {"type": "Pooling", "pool_h": 2, "pool_w": 2, "stride": 2, "pad": 0},
            {"type": "Flatten"},
            {"type": "Affine", "in_features": 4 * 14 * 14, "out_features": 10},
            dict(NEW_LAYERS[name][1]),
        ],
    }
    model = build(spec, rng=0)
    assert model_spec(model) == build(model_spec(model), rng=1).spec()
    x = np.random.default_rng(1).standard_normal((5, 1, 28, 28)).astype(np.float32)
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert model_spec(loaded) == model_spec(model)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert describe(model)["multiply_adds"] == describe(loaded)["multiply_adds"] > 0


@pytest.mark.parametrize("name", sorted(NEW_LAYERS))
def test_build_names_them_and_checks_their_settings(name):
    layer = build(NEW_LAYERS[name][1])
    assert type(layer) is type(NEW_LAYERS[name][0]())
    assert layer.config() == NEW_LAYERS[name][0]().config() or name == "LeakyReLU-default"
    with pytest.raises(ValueError, match="unknown entry 'beta'"):
        build({**NEW_LAYERS[name][1], "beta": 1})


@pytest.mark.parametrize("alpha", [-0.1, 1, True, "0.1", None])
def test_leaky_relu_refuses_a_bad_alpha(alpha):
    with pytest.raises(ValueError, match="'alpha' must be in"):
        build({"type": "LeakyReLU", "alpha": alpha})


def test_the_book_api_still_has_its_layers():
    assert {
        "Relu",
        "Sigmoid",
        "Affine",
        "Convolution",
        "Pooling",
        "Dropout",
        "BatchNormalization",
        "Flatten",
        "GlobalAveragePooling",
    } <= set(Layer.registry)
    assert Layer.registry["Relu"] is L.Relu and L.Layer is Layer


# ------------------------------------------------------------ a layer type defined right here


def _define_doubler():
    """A layer type unknown to deepnet until this runs: y = factor * x, a 'factor' setting."""

    class Doubler(Layer):
        preserves_rank = True

        def __init__(self, factor=2):
            super().__init__()
            self.factor = factor

        def forward(self, x, train=False):
            return x * x.dtype.type(self.factor)

        def backward(self, dout):
            return dout * dout.dtype.type(self.factor)

        def config(self):
            return {"factor": self.factor}

        @classmethod
        def from_config(cls, spec, dtype, rng, where):
            _check_keys(spec, {"type", "factor"}, where)
            return cls(_int(spec, "factor", where, 1) if "factor" in spec else 2)

        def cost(self, input_shape):
            out = self.output_shape(input_shape)
            return out, int(np.prod(out)), None  # one multiply per value

    return Doubler


def test_a_layer_type_defined_in_a_test_works_everywhere_with_no_other_change(tmp_path, monkeypatch):
    monkeypatch.setattr(Layer, "registry", dict(Layer.registry))  # Doubler is gone after the test
    Doubler = _define_doubler()
    assert Layer.registry["Doubler"] is Doubler
    spec = {
        "type": "Sequential",
        "layers": [
            {"type": "Flatten"},
            {"type": "Affine", "in_features": 784, "out_features": 10},
            {"type": "Doubler", "factor": 3},
        ],
    }
    model = build(spec, rng=0)
    assert isinstance(model.layers[-1], Doubler) and model.layers[-1].factor == 3
    assert model_spec(model) == spec
    x = np.random.default_rng(2).standard_normal((4, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), 3 * model.layers[1].forward(x), rtol=1e-6)
    model.save(tmp_path / "doubler.npz")
    loaded = load_model(tmp_path / "doubler.npz")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert model_spec(loaded) == spec
    summary = describe(model)
    assert summary["multiply_adds"] == 784 * 10 + 10 and summary["output_shape"] == (1, 10)
    with pytest.raises(ValueError, match="unknown entry 'scale'"):
        build({"type": "Doubler", "scale": 2})
    with pytest.raises(ValueError, match="Doubler"):  # the known types come from the registry
        build({"type": "Trebler"})

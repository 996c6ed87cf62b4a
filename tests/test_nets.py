"""DeepConvNet and SimpleConvNet: shapes, initialisation, accuracy, gradients, parameter files."""

import pickle

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from deepnet.datasets import load_mnist
from deepnet.nets import DeepConvNet, SimpleConvNet
from support import BOOK_PARAMS, MNIST_DIR, numerical_gradient_at


def tiny_deep_convnet(dtype=np.float64, seed=0):
    """DeepConvNet's architecture on 12x12 inputs with few filters: fast enough to check by hand.

    12 -> conv, conv -> pool 6 -> conv, conv(pad 2) 8 -> pool 4 -> conv, conv -> pool 2.
    """

    def conv(filters, pad=1):
        return {"filter_num": filters, "filter_size": 3, "pad": pad, "stride": 1}

    return DeepConvNet(
        input_dim=(1, 12, 12),
        conv_param_1=conv(2),
        conv_param_2=conv(2),
        conv_param_3=conv(3),
        conv_param_4=conv(3, pad=2),
        conv_param_5=conv(4),
        conv_param_6=conv(4),
        hidden_size=6,
        output_size=3,
        dtype=dtype,
        seed=seed,
    )


def reference_deep_convnet_scores(params, x, pads=(1, 1, 1, 2, 1, 1)):
    """DeepConvNet's inference written out directly: sliding windows and einsum, no layers."""
    for index, pad in enumerate(pads, 1):
        W, b = params[f"W{index}"], params[f"b{index}"]
        padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        windows = sliding_window_view(padded, W.shape[2:], axis=(2, 3))  # (N, C, H, W, kh, kw)
        x = np.einsum("nchwij,fcij->nfhw", windows, W, optimize=True) + b[:, None, None]
        x = np.maximum(x, 0)
        if index % 2 == 0:  # 2x2 max pooling, stride 2
            n, c, h, w = x.shape
            x = x[:, :, : h // 2 * 2, : w // 2 * 2]
            x = x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    hidden = np.maximum(x.reshape(len(x), -1) @ params["W7"] + params["b7"], 0)
    # At inference the book's dropout layers scale by (1 - 0.5).
    return (0.5 * hidden @ params["W8"] + params["b8"]) * 0.5


# -- architecture and initialisation -------------------------------------------------------

BOOK_SHAPES = {
    "W1": (16, 1, 3, 3),
    "W2": (16, 16, 3, 3),
    "W3": (32, 16, 3, 3),
    "W4": (32, 32, 3, 3),
    "W5": (64, 32, 3, 3),
    "W6": (64, 64, 3, 3),
    "W7": (64 * 4 * 4, 50),
    "W8": (50, 10),
    "b1": (16,),
    "b2": (16,),
    "b3": (32,),
    "b4": (32,),
    "b5": (64,),
    "b6": (64,),
    "b7": (50,),
    "b8": (10,),
}


def test_default_params_have_the_books_names_shapes_and_dtype():
    net = DeepConvNet(seed=0)
    assert {name: value.shape for name, value in net.params.items()} == BOOK_SHAPES
    assert all(value.dtype == np.float32 for value in net.params.values())
    assert all(not net.params[f"b{i}"].any() for i in range(1, 9))


def test_weights_use_he_initialisation():
    net = DeepConvNet(seed=0)
    # The book's pre_node_nums: inputs feeding one unit of each layer.
    fan_ins = [1 * 3 * 3, 16 * 3 * 3, 16 * 3 * 3, 32 * 3 * 3, 32 * 3 * 3, 64 * 3 * 3, 64 * 4 * 4, 50]
    for index, fan_in in enumerate(fan_ins, 1):
        weights = net.params[f"W{index}"]
        assert weights.std() == pytest.approx(np.sqrt(2.0 / fan_in), rel=0.2), f"W{index}"
        assert abs(weights.mean()) < 0.2 * np.sqrt(2.0 / fan_in), f"W{index}"


def test_layer_sizes_follow_the_configuration():
    net = tiny_deep_convnet()
    assert net.params["W4"].shape == (3, 3, 3, 3)
    assert net.params["W7"].shape == (4 * 2 * 2, 6)
    assert net.params["W8"].shape == (6, 3)
    # With conv 4 padded by 1 instead of 2, 28x28 inputs end as 3x3 maps, not 4x4.
    narrower = DeepConvNet(conv_param_4={"filter_num": 32, "filter_size": 3, "pad": 1, "stride": 1})
    assert narrower.params["W7"].shape == (64 * 3 * 3, 50)


def test_seed_makes_initialisation_repeatable():
    a, b, c = tiny_deep_convnet(seed=1), tiny_deep_convnet(seed=1), tiny_deep_convnet(seed=2)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.params["W1"], c.params["W1"])


def test_layers_share_the_parameter_arrays():
    net = tiny_deep_convnet()
    x = np.random.default_rng(0).random((4, 1, 12, 12))
    before = net.predict(x)
    net.params["b8"] += 1.0  # in place, as an optimizer does
    # Inference scales the last dropout's input by 0.5, so the scores move by 0.5.
    np.testing.assert_allclose(net.predict(x), before + 0.5)


def test_predict_matches_a_direct_reference_implementation():
    net = tiny_deep_convnet(dtype=np.float64, seed=3)
    for value in net.params.values():  # non-zero biases, so they are checked too
        value += np.random.default_rng(0).normal(0, 0.1, value.shape)
    x = np.random.default_rng(1).random((7, 1, 12, 12))
    np.testing.assert_allclose(net.predict(x), reference_deep_convnet_scores(net.params, x), rtol=1e-10, atol=1e-12)


# -- accuracy ------------------------------------------------------------------------------


def test_accuracy_counts_every_sample_including_a_partial_batch():
    net = tiny_deep_convnet()
    x = np.random.default_rng(1).random((23, 1, 12, 12))
    one_by_one = np.array([np.argmax(net.predict(x[i : i + 1])) for i in range(len(x))])
    t = one_by_one.copy()
    t[-1] = (t[-1] + 1) % 3  # the only mistake sits in the last, partial batch
    expected = np.mean(one_by_one == t)
    assert expected == pytest.approx(22 / 23)
    assert net.accuracy(x, t, batch_size=10) == pytest.approx(expected)
    assert net.accuracy(x, np.eye(3)[t], batch_size=10) == pytest.approx(expected)  # one-hot


def test_accuracy_of_no_samples_is_an_error_not_nan():
    net = tiny_deep_convnet()
    with pytest.raises(ValueError, match="accuracy: no samples"):
        net.accuracy(np.zeros((0, 1, 12, 12)), np.zeros(0, dtype=int))


# -- gradients -----------------------------------------------------------------------------


def check_gradient_against_numerical(net, x, t, entries_per_param=4, atol=1e-8):
    """Backprop gradients == central differences, for random entries of every parameter.

    The book's loss is -log(y + 1e-7): its derivative differs from backprop's softmax - t
    by up to ~1e-7 per sample, which ``atol`` must allow where gradients are small.

    The dropout masks are kept fixed by restoring the network's generator before each
    loss evaluation (the dropout layers draw from net.rng).
    """
    rng_state = net.rng.bit_generator.state

    def loss():
        net.rng.bit_generator.state = rng_state
        return net.loss(x, t)

    loss()
    net.rng.bit_generator.state = rng_state
    grads = {name: np.array(g, copy=True) for name, g in net.gradient(x, t).items()}
    assert grads.keys() == net.params.keys()
    pick = np.random.default_rng(3)
    for name, param in net.params.items():
        assert grads[name].shape == param.shape, name
        for _ in range(entries_per_param):
            index = tuple(int(pick.integers(n)) for n in param.shape)
            numerical = numerical_gradient_at(loss, param, index, eps=1e-5)
            assert grads[name][index] == pytest.approx(numerical, rel=1e-4, abs=atol), (name, index)


def test_deep_convnet_gradient_matches_numerical_gradient():
    net = tiny_deep_convnet(dtype=np.float64, seed=4)
    data = np.random.default_rng(5)
    x = data.random((5, 1, 12, 12))
    t = data.integers(0, 3, size=5)
    check_gradient_against_numerical(net, x, t)


def test_simple_convnet_gradient_matches_numerical_gradient():
    net = SimpleConvNet(
        input_dim=(1, 10, 10),
        conv_param={"filter_num": 3, "filter_size": 3, "pad": 0, "stride": 1},
        hidden_size=5,
        output_size=4,
        weight_init_std=0.3,
        dtype=np.float64,
        seed=6,
    )
    assert net.params["W2"].shape == (3 * 4 * 4, 5)
    data = np.random.default_rng(7)
    x = data.random((4, 1, 10, 10))
    t = np.eye(4)[data.integers(0, 4, size=4)]  # one-hot labels work too
    check_gradient_against_numerical(net, x, t)


def test_simple_convnet_has_the_books_shapes():
    net = SimpleConvNet(seed=0)
    shapes = {name: value.shape for name, value in net.params.items()}
    assert shapes == {
        "W1": (30, 1, 5, 5),
        "b1": (30,),
        "W2": (30 * 12 * 12, 100),
        "b2": (100,),
        "W3": (100, 10),
        "b3": (10,),
    }
    assert net.params["W2"].std() == pytest.approx(0.01, rel=0.05)


# -- parameter files -----------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path):
    source, target = tiny_deep_convnet(seed=1), tiny_deep_convnet(seed=2)
    path = source.save_params(tmp_path / "params.npz")
    arrays_before = {name: value for name, value in target.params.items()}
    target.load_params(path)
    for name, value in source.params.items():
        assert np.array_equal(target.params[name], value), name
        assert target.params[name] is arrays_before[name], "must copy into the existing arrays"
    x = np.random.default_rng(0).random((3, 1, 12, 12))
    np.testing.assert_array_equal(target.predict(x), source.predict(x))


def test_load_book_style_pickle_casts_to_the_networks_dtype(tmp_path):
    source = tiny_deep_convnet(dtype=np.float64, seed=1)
    path = tmp_path / "params.pkl"
    with open(path, "wb") as f:
        pickle.dump({name: value.copy() for name, value in source.params.items()}, f)
    target = tiny_deep_convnet(dtype=np.float32, seed=2)
    target.load_params(path)
    for name, value in source.params.items():
        assert target.params[name].dtype == np.float32
        np.testing.assert_array_equal(target.params[name], value.astype(np.float32))


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda p: p.update(W3=np.zeros((3, 3, 2, 2))), "W3"),
        (lambda p: p.pop("b5"), "b5"),
        (lambda p: p.update(W9=np.zeros(2)), "W9"),
    ],
)
def test_load_mismatch_names_the_parameter_and_changes_nothing(tmp_path, change, named):
    params = dict(tiny_deep_convnet(seed=1).params)
    change(params)
    path = tmp_path / "params.npz"
    np.savez(path, **params)
    net = tiny_deep_convnet(seed=2)
    before = {name: value.copy() for name, value in net.params.items()}
    with pytest.raises(ValueError, match=named):
        net.load_params(path)
    assert all(np.array_equal(net.params[name], before[name]) for name in before)


def test_astype_returns_an_independent_copy_in_another_dtype():
    net = tiny_deep_convnet(dtype=np.float64, seed=1)
    half = net.astype(np.float16)
    assert all(value.dtype == np.float16 for value in half.params.values())
    assert all(value.dtype == np.float64 for value in net.params.values())
    x = np.random.default_rng(0).random((6, 1, 12, 12))
    np.testing.assert_allclose(half.predict(x).astype(np.float64), net.predict(x), rtol=2e-2, atol=2e-2)
    half.params["W1"][...] = 0
    assert net.params["W1"].any()


def test_to_cpu_keeps_a_cpu_network_working():
    net = tiny_deep_convnet(seed=1)
    x = np.random.default_rng(0).random((3, 1, 12, 12))
    before = net.predict(x)
    net.to_cpu()
    np.testing.assert_array_equal(net.predict(x), before)


def test_to_gpu_and_back_gives_the_same_predictions():
    from deepnet import _cuda

    if not _cuda.gpu_available():
        pytest.skip("no usable GPU (CuPy and a CUDA device)")
    net = tiny_deep_convnet(dtype=np.float32, seed=1)
    x = np.random.default_rng(0).random((3, 1, 12, 12)).astype(np.float32)
    before = net.predict(x)
    net.to_gpu()
    assert _cuda.is_cupy_array(net.params["W1"]) and net.layers[0].W is net.params["W1"]
    np.testing.assert_allclose(_cuda.to_cpu(net.predict(x)), before, rtol=1e-4, atol=1e-5)
    net.to_cpu()
    assert isinstance(net.params["W1"], np.ndarray)
    np.testing.assert_allclose(net.predict(x), before, rtol=1e-4, atol=1e-5)


def test_book_weights_classify_mnist_test_images():
    params, data = BOOK_PARAMS, MNIST_DIR
    net = DeepConvNet(dtype=np.float64)
    net.load_params(params)
    (_, _), (x_test, t_test) = load_mnist(flatten=False, dtype=np.float64, root=data)
    x, t = x_test[:500], t_test[:500]
    expected = np.argmax(reference_deep_convnet_scores(net.params, x), axis=1)
    np.testing.assert_array_equal(net.classify(x), expected)
    # These weights score 97.97% on the whole test set (98.2% on these 500 images).
    assert net.accuracy(x, t) >= 0.98


# -- models from parts: Sequential, ResNet, VGG, model files ---------------------------------

from deepnet import layers as L  # noqa: E402
from deepnet.nets import VGG, ResNet, Sequential, build, fold_batch_norm, load_model  # noqa: E402
from deepnet.optimizers import SGD  # noqa: E402


def tiny_resnet(dtype=np.float64, seed=0):
    return ResNet(input_dim=(1, 8, 8), widths=(2, 3), blocks=(1, 1), output_size=3, dtype=dtype, seed=seed)


def hand_built(seed=0):
    """A residual block written by hand, as the README shows."""
    rng = np.random.default_rng(seed)

    def conv(c_in, c_out, relu=False):
        return L.Convolution(rng.standard_normal((c_out, c_in, 3, 3)) * 0.3, np.zeros(c_out), 1, 1, relu=relu)

    block = L.Residual(Sequential(conv(2, 2, relu=True), conv(2, 2)))
    return Sequential(
        conv(1, 2, relu=True),
        block,
        L.Relu(),
        L.Pooling(2, 2, stride=2),
        L.Flatten(),
        L.Affine(rng.standard_normal((2 * 4 * 4, 3)) * 0.3, np.zeros(3)),
        rng=rng,
    )


NETS = {
    "deepconvnet": lambda: tiny_deep_convnet(seed=1),
    "deepconvnet-bn": lambda: DeepConvNet(
        input_dim=(1, 12, 12), hidden_size=6, output_size=3, seed=1, batch_norm=True, dtype=np.float64
    ),
    "simpleconvnet": lambda: SimpleConvNet(
        input_dim=(1, 10, 10), hidden_size=5, output_size=3, seed=1, dtype=np.float64
    ),
    "resnet": lambda: tiny_resnet(seed=1),
    "vgg": lambda: VGG(
        [3, "M", 4, "M"], input_dim=(1, 8, 8), hidden=(5,), output_size=3, batch_norm=True, seed=1, dtype=np.float64
    ),
    "hand-built": hand_built,
}


@pytest.mark.parametrize("name", NETS)
def test_save_then_load_model_gives_identical_predictions(tmp_path, name):
    net = NETS[name]()
    size = 10 if name == "simpleconvnet" else (8 if name in ("resnet", "vgg", "hand-built") else 12)
    x = np.random.default_rng(0).random((5, 1, size, size))
    net.loss(x, np.array([0, 1, 2, 0, 1]))  # a training pass: BN running statistics move off 0 and 1
    path = net.save(tmp_path / "model.npz")
    loaded = load_model(path)
    assert type(loaded) is type(net) and loaded.spec() == net.spec()
    assert loaded.params.keys() == net.params.keys() and loaded.buffers.keys() == net.buffers.keys()
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))


def test_a_plain_parameter_file_and_the_books_pickle_load_as_deep_convnet(tmp_path):
    net = DeepConvNet(seed=3)
    path = net.save_params(tmp_path / "params.npz")
    loaded = load_model(path)
    assert isinstance(loaded, DeepConvNet)
    x = np.random.default_rng(0).random((4, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))
    book = load_model(BOOK_PARAMS)
    assert isinstance(book, DeepConvNet) and book.dtype == np.float64


def test_book_weights_score_the_books_accuracy_on_all_10000_test_images():
    """97.97%: what both backends give (benches/models/book_parity.py compares all 10,000 labels;
    the direct einsum implementation above checks the first 500, too slow for 10,000)."""
    net = load_model(BOOK_PARAMS, dtype=np.float32)
    (_, _), (x_test, t_test) = load_mnist(flatten=False, dtype=np.float32, root=MNIST_DIR)
    assert net.accuracy(x_test, t_test) == pytest.approx(0.9797, abs=1e-4)  # the book: 97.97%


def test_small_resnet_gradient_matches_numerical_gradient():
    net = tiny_resnet(seed=2)
    data = np.random.default_rng(5)
    x = data.random((4, 1, 8, 8))
    t = data.integers(0, 3, size=4)
    check_gradient_against_numerical(net, x, t, atol=1e-6)


def test_deep_convnet_bn_gradient_matches_numerical_gradient():
    net = NETS["deepconvnet-bn"]()
    data = np.random.default_rng(6)
    x = data.random((4, 1, 12, 12))
    t = data.integers(0, 3, size=4)
    check_gradient_against_numerical(net, x, t, atol=1e-6)


def test_resnet_default_size_and_names():
    net = ResNet(seed=0)
    assert 100_000 < sum(p.size for p in net.params.values()) <= 500_000
    assert "2.body.1.gamma" in net.params and "6.shortcut.0.W" in net.params
    assert net.output_shape((7, 1, 28, 28)) == (7, 10)


def test_frozen_layers_stay_unchanged_after_an_optimizer_step():
    net = tiny_deep_convnet(seed=1)
    for layer in net.layers[:3]:  # the first two convolutions and their pooling
        layer.trainable = False
    before = {name: value.copy() for name, value in net.params.items()}
    x = np.random.default_rng(0).random((3, 1, 12, 12))
    grads = net.gradient(x, np.array([0, 1, 2]))
    assert set(grads) == set(net.params) - {"W1", "b1", "W2", "b2"}
    SGD(lr=0.1).update(net.params, grads)
    for name in ("W1", "b1", "W2", "b2"):
        np.testing.assert_array_equal(net.params[name], before[name])
    assert not np.array_equal(net.params["W3"], before["W3"])


def test_a_frozen_container_freezes_everything_inside():
    net = tiny_resnet()
    net.layers[2].trainable = False  # the first residual block
    grads = net.gradient(np.random.default_rng(0).random((2, 1, 8, 8)), np.array([0, 1]))
    assert not [name for name in grads if name.startswith("2.")]
    assert any(name.startswith("2.") for name in net.params)


def test_load_a_subset_of_parameters_for_transfer_learning(tmp_path):
    source = tiny_deep_convnet(seed=1)
    path = source.save_params(tmp_path / "pretrained.npz")
    target = tiny_deep_convnet(seed=2)
    head = target.params["W8"].copy()
    loaded = target.load_params(path, only=["W1", "b1", "W2", "b2"])
    assert loaded == ["W1", "W2", "b1", "b2"]
    np.testing.assert_array_equal(target.params["W1"], source.params["W1"])
    np.testing.assert_array_equal(target.params["W8"], head)
    # A net with another head: strict=False loads what both have with the same shapes... and
    # a shape mismatch is still an error, so pick the names.
    other = DeepConvNet(
        input_dim=(1, 12, 12),
        conv_param_1=source.conv_params[0],
        conv_param_2=source.conv_params[1],
        conv_param_3=source.conv_params[2],
        conv_param_4=source.conv_params[3],
        conv_param_5=source.conv_params[4],
        conv_param_6=source.conv_params[5],
        hidden_size=8,
        output_size=5,
    )
    with pytest.raises(ValueError, match="W7"):
        other.load_params(path, strict=False)
    assert other.load_params(path, only=[f"{k}{i}" for i in range(1, 7) for k in "Wb"]) != []
    with pytest.raises(ValueError, match="no parameter matches"):
        other.load_params(path, only=["nothing"])


def test_fold_batch_norm_keeps_the_eval_predictions():
    net = NETS["deepconvnet-bn"]()
    x = np.random.default_rng(0).random((6, 1, 12, 12))
    for _ in range(3):
        net.loss(x, np.array([0, 1, 2, 0, 1, 2]))
    folded = fold_batch_norm(net)
    assert len(net.batch_norm_layers()) == 7 and len(folded.batch_norm_layers()) == 1  # only the affine's is left
    np.testing.assert_allclose(folded.predict(x), net.predict(x), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"type": "Eval", "code": "1"}, "unknown layer type 'Eval'"),
        (
            {
                "type": "Sequential",
                "layers": [
                    {"type": "Convolution", "in_channels": 1, "filters": -3, "kernel": 3, "stride": 1, "pad": 0}
                ],
            },
            "'filters' must be an int >= 0",
        ),
        ({"type": "Sequential", "layers": [{"type": "Relu", "extra": 1}]}, "unknown entry 'extra'"),
        ({"type": "Sequential", "layers": "Relu"}, "'layers' must be a list"),
        (
            {"type": "Sequential", "layers": [{"type": "Affine", "in_features": 1 << 20, "out_features": 1 << 20}]},
            "more than",
        ),
        ({"type": "ResNet", "config": {"widths": [1 << 16], "blocks": [4]}}, "more than"),
        ({"type": "DeepConvNet", "config": {"hidden_size": "big"}}, "bad DeepConvNet config"),
        ([1, 2], "must be an object"),
    ],
)
def test_bad_specs_are_refused_with_a_clear_error_before_allocating(spec, message):
    with pytest.raises(ValueError, match=message):
        build(spec)


def test_a_model_file_with_a_broken_spec_names_the_file(tmp_path):
    path = tmp_path / "broken.npz"
    np.savez(path, __model_spec__=np.frombuffer(b"{not json", dtype=np.uint8), W1=np.zeros(2))
    with pytest.raises(ValueError, match="broken.npz.*not valid JSON"):
        load_model(path)


def test_describe_counts_the_books_multiply_adds_and_receptive_field():
    from deepnet.nets import describe

    macs = (
        28 * 28 * 16 * 9
        + 28 * 28 * 16 * 144
        + 14 * 14 * 32 * 144
        + 16 * 16 * 32 * 288
        + 8 * 8 * 64 * 288
        + 8 * 8 * 64 * 576
        + 1024 * 50
        + 50 * 10
    )
    info = describe(DeepConvNet(seed=0))
    assert info == {"parameters": 123_552, "multiply_adds": macs, "receptive_field": 36, "output_shape": (1, 10)}
    assert 2 * macs == pytest.approx(17.5e6, rel=0.01)  # "forward = 17.5 MFLOP per image"


def test_load_params_checks_the_file_against_the_net_before_reading_data(tmp_path):
    """A small .npz declaring a 40 MB W1 is refused from its headers, not after inflating it."""
    import tracemalloc
    import zipfile

    path = tmp_path / "bomb.npz"
    n = 10_000_000
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("W1.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": (n,)})
            for _ in range(n * 4 // (1 << 22)):
                member.write(bytes(1 << 22))
    net = DeepConvNet(seed=0)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="bomb.npz"):
            net.load_params(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


# -- edge cases ---------------------------------------------------------------------------

from deepnet.nets import affine_layer  # noqa: E402


def trained_bn_statistics(net, rng, size=8):
    for _ in range(3):
        net.predict(rng.random((16, 1, size, size)) * 2, train=True)
    for bn in net.batch_norm_layers():
        bn.gamma[...] = rng.random(bn.gamma.shape) + 0.5
        bn.beta[...] = rng.standard_normal(bn.beta.shape)
    return net


def small_resnet():
    return ResNet(input_dim=(1, 8, 8), widths=(2, 3), blocks=(1, 1), output_size=3, dtype=np.float64, seed=0)


def test_fold_batch_norm_inside_residual_blocks_with_learned_gamma_and_beta():
    rng = np.random.default_rng(0)
    net = trained_bn_statistics(small_resnet(), rng)
    folded = fold_batch_norm(net)
    assert not folded.batch_norm_layers()
    x = rng.random((5, 1, 8, 8))
    np.testing.assert_allclose(folded.predict(x), net.predict(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "make", [small_resnet, lambda: DeepConvNet(batch_norm=True, input_dim=(1, 8, 8), dtype=np.float64, seed=0)]
)
def test_a_folded_model_saves_loads_and_converts_as_what_it_is(tmp_path, make):
    rng = np.random.default_rng(1)
    net = trained_bn_statistics(make(), rng)
    folded = fold_batch_norm(net)
    x = rng.random((4, 1, 8, 8))
    expected = folded.predict(x)
    np.testing.assert_allclose(folded.astype(np.float64).predict(x), expected, rtol=1e-12)
    np.testing.assert_allclose(load_model(folded.save(tmp_path / "folded.npz")).predict(x), expected, rtol=1e-12)


def test_a_net_with_a_replaced_head_saves_and_loads(tmp_path):
    net = DeepConvNet(seed=0)
    head = max(i for i, layer in enumerate(net.layers) if type(layer).__name__ == "Affine")
    net.layers[head] = affine_layer(50, 5, np.random.default_rng(1), np.float32)  # 10 -> 5 classes
    x = np.random.default_rng(0).random((3, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(load_model(net.save(tmp_path / "m.npz")).predict(x), net.predict(x))
    np.testing.assert_array_equal(net.astype(np.float32).predict(x), net.predict(x))


def test_only_given_as_one_string_selects_that_prefix_not_its_characters():
    target = ResNet(input_dim=(1, 8, 8), widths=(2, 3), blocks=(2, 2), seed=0)
    source = ResNet(input_dim=(1, 8, 8), widths=(2, 3), blocks=(2, 2), seed=1)
    assert any(name.startswith("11.") for name in target.params)
    loaded = target.set_params(source.params, only="11.")
    assert loaded and all(name.startswith("11.") for name in loaded)


def test_strict_false_that_matches_nothing_is_an_error():
    with pytest.raises(ValueError):
        ResNet(seed=0).set_params(SimpleConvNet(seed=0).params, strict=False)


def test_load_model_of_a_plain_file_of_another_net_is_a_clear_error(tmp_path):
    path = ResNet(seed=0).save_params(tmp_path / "resnet_params.npz")  # no spec: taken as DeepConvNet
    with pytest.raises(ValueError, match="resnet_params.npz"):
        load_model(path)


@pytest.mark.parametrize("make", [lambda: DeepConvNet(seed=0), lambda: small_resnet()], ids=["deepconvnet", "resnet"])
def test_load_model_of_a_training_checkpoint_says_what_it_is_and_how_to_use_it(tmp_path, make):
    from deepnet.trainer import Trainer

    rng = np.random.default_rng(0)
    net = make()
    shape = (4,) + tuple(net.spec()["config"]["input_dim"])
    x, t = rng.random(shape).astype(net.dtype), np.arange(4) % 3
    trainer = Trainer(
        net, x, t, x, t, epochs=1, mini_batch_size=4, verbose=False, checkpoint_path=tmp_path / "run.ckpt.npz"
    )
    trainer.train()
    with pytest.raises(ValueError, match=r"run.ckpt.npz: a training checkpoint.*--resume"):
        load_model(tmp_path / "run.ckpt.npz")


def test_loading_a_prefix_also_loads_the_batch_norm_statistics_of_those_layers(tmp_path):
    rng = np.random.default_rng(0)
    source = trained_bn_statistics(small_resnet(), rng)
    path = source.save(tmp_path / "pretrained.npz")
    target = ResNet(input_dim=(1, 8, 8), widths=(2, 3), blocks=(1, 1), output_size=3, dtype=np.float64, seed=1)
    target.load_params(path, only=["0.", "1."])  # the stem: conv and its BN
    np.testing.assert_array_equal(target.buffers["1.running_mean"], source.buffers["1.running_mean"])
    np.testing.assert_array_equal(target.buffers["1.running_var"], source.buffers["1.running_var"])


def test_a_model_file_with_a_deeply_nested_spec_is_refused_with_a_clear_error(tmp_path):
    """985 nested Residual blocks: within json's nesting limit, so in a fresh interpreter the
    spec parses, and without a limit build() accepts it and predict recurses too deep (a
    RecursionError traceback from deepnet evaluate).  A cap on the nesting
    depth in build() makes this a clear error whatever the interpreter's stack."""
    import subprocess
    import sys
    from deepnet import io

    depth = 985
    nested = '{"type": "Residual", "shortcut": null, "body": ' * depth + '{"type": "Relu"}' + "}" * depth
    text = '{"type": "Sequential", "layers": [' + nested + ', {"type": "Affine", "in_features": 4, "out_features": 2}]}'
    path = io.save_params(
        tmp_path / "deep.npz",
        {
            "__model_spec__": np.frombuffer(text.encode(), np.uint8),
            "1.W": np.zeros((4, 2), np.float32),
            "1.b": np.zeros(2, np.float32),
        },
    )
    code = (
        "import sys, numpy as np; from deepnet.nets import load_model; "
        "load_model(sys.argv[1]).predict(np.zeros((1, 4), np.float32))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0 and "RecursionError" not in last and "deep.npz" in last, result.stderr[-500:]


@pytest.mark.parametrize("name", ["resnet", "deepconvnet-bn", "hand-built"])
def test_models_from_parts_train_the_same_on_the_gpu(name):
    """Forward (train and eval) and the gradients of every parameter, CuPy against NumPy."""
    from deepnet import _cuda

    if not _cuda.gpu_available():
        pytest.skip("no usable GPU (CuPy and a CUDA device)")
    size = 12 if name == "deepconvnet-bn" else 8
    x = np.random.default_rng(0).random((4, 1, size, size))
    t = np.array([0, 1, 2, 0])
    cpu, gpu = NETS[name](), NETS[name]().to_gpu()
    rng_state = cpu.rng.bit_generator.state
    cpu_grads = {k: v.copy() for k, v in cpu.gradient(x, t).items()}
    gpu.rng.bit_generator.state = rng_state  # the same dropout masks
    gpu_grads = gpu.gradient(x, t)
    assert gpu_grads.keys() == cpu_grads.keys()
    for key, value in cpu_grads.items():
        np.testing.assert_allclose(_cuda.to_cpu(gpu_grads[key]), value, rtol=1e-7, atol=1e-9, err_msg=key)
    np.testing.assert_allclose(_cuda.to_cpu(gpu.predict(x)), cpu.predict(x), rtol=1e-7, atol=1e-9)

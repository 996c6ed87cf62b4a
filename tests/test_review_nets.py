"""Reviewer's tests (branch review): model specs that go stale, subset loading, load_model's
errors, nesting.  All but test_fold_batch_norm_inside_residual_blocks_with_learned_gamma_and_beta
fail on main at dd15e03."""
import numpy as np
import pytest

from deepnet.nets import DeepConvNet, ResNet, SimpleConvNet, affine_layer, fold_batch_norm, load_model


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


@pytest.mark.parametrize("make", [small_resnet, lambda: DeepConvNet(batch_norm=True, input_dim=(1, 8, 8),
                                                                     dtype=np.float64, seed=0)])
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
    spec parses and build() accepts it, then predict recurses too deep (on main: a
    RecursionError traceback from deepnet evaluate).  A cap on the nesting
    depth in build() makes this a clear error whatever the interpreter's stack."""
    import subprocess
    import sys
    from deepnet import io
    depth = 985
    nested = '{"type": "Residual", "shortcut": null, "body": ' * depth + '{"type": "Relu"}' + "}" * depth
    text = '{"type": "Sequential", "layers": [' + nested + ', {"type": "Affine", "in_features": 4, "out_features": 2}]}'
    path = io.save_params(tmp_path / "deep.npz", {"__model_spec__": np.frombuffer(text.encode(), np.uint8),
                                                  "1.W": np.zeros((4, 2), np.float32), "1.b": np.zeros(2, np.float32)})
    code = ("import sys, numpy as np; from deepnet.nets import load_model; "
            "load_model(sys.argv[1]).predict(np.zeros((1, 4), np.float32))")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0 and "RecursionError" not in last and "deep.npz" in last, result.stderr[-500:]

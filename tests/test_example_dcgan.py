"""examples/dcgan.py and its scores (examples/gan_scores.py): the inception score and the
Fréchet distance against known values and SciPy, the nets' shapes and gradients against
numerical ones, the PNG writer against Pillow, and the --quick run end to end."""

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import deepnet
from support import numerical_gradient_at

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
gan_scores = importlib.import_module("gan_scores")
dcgan = importlib.import_module("dcgan")


# -- the inception score -----------------------------------------------------------------


def test_inception_score_of_confident_even_predictions_is_the_class_count():
    p = np.eye(10)[np.arange(1000) % 10]
    assert gan_scores.inception_score(p) == pytest.approx(10.0, rel=1e-12)
    assert gan_scores.inception_score(np.eye(4)) == pytest.approx(4.0, rel=1e-12)


def test_inception_score_of_predictions_that_ignore_the_image_is_one():
    rng = np.random.default_rng(0)
    row = rng.random(10)
    assert gan_scores.inception_score(np.tile(row / row.sum(), (50, 1))) == pytest.approx(1.0, abs=1e-12)
    assert gan_scores.inception_score(np.eye(10)[[3] * 20]) == pytest.approx(1.0, abs=1e-12)


def test_inception_score_against_the_definition():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.full(10, 0.3), size=200)
    marginal = p.mean(axis=0)
    expected = np.exp(np.mean([np.sum(row * np.log(row / marginal)) for row in p]))
    assert gan_scores.inception_score(p) == pytest.approx(expected, rel=1e-10)


def test_inception_score_refuses_what_is_not_probabilities():
    with pytest.raises(ValueError, match=r"shape \(N, classes\)"):
        gan_scores.inception_score(np.ones(10) / 10)
    with pytest.raises(ValueError, match="sum to 1"):
        gan_scores.inception_score(np.ones((3, 10)))


# -- the Fréchet distance ----------------------------------------------------------------


def random_covariance(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    features = np.random.default_rng(2).normal(size=(500, 20)) @ np.random.default_rng(3).normal(size=(20, 20))
    assert gan_scores.frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_gaussians_with_commuting_covariances_has_the_closed_form():
    # S1 = Q diag(a) Q^T and S2 = Q diag(b) Q^T: the distance is |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2
    rng = np.random.default_rng(4)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    distance = gan_scores.frechet_distance_from_statistics(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert distance == pytest.approx(expected, rel=1e-10)
    # one dimension: (m1 - m2)^2 + (s1 - s2)^2
    assert gan_scores.frechet_distance_from_statistics([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(10.0)


def test_frechet_distance_of_samples_is_that_of_their_statistics():
    rng = np.random.default_rng(5)
    f1, f2 = rng.normal(size=(300, 5)), rng.normal(1.0, 2.0, size=(400, 5))
    expected = gan_scores.frechet_distance_from_statistics(
        f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False)
    )
    assert gan_scores.frechet_distance(f1, f2) == expected
    with pytest.raises(ValueError, match="same width"):
        gan_scores.frechet_distance(f1, f2[:, :4])


def test_matrix_square_root_against_scipy():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(6)
    s1, s2 = random_covariance(rng, 8), random_covariance(rng, 8)
    root = gan_scores.sqrtm_psd(s1)
    np.testing.assert_allclose(root, np.real(linalg.sqrtm(s1)), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(root @ root, s1, rtol=1e-10, atol=1e-12)
    # non-commuting covariances: the trace term as the usual FID code computes it
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    covmean = np.real(linalg.sqrtm(s1 @ s2))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert gan_scores.frechet_distance_from_statistics(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    with pytest.raises(ValueError, match="not symmetric"):
        gan_scores.sqrtm_psd(np.array([[1.0, 2.0], [0.0, 1.0]]))


# -- the nets ----------------------------------------------------------------------------


def test_generator_makes_images_in_the_tanh_range_and_discriminator_one_logit():
    rng = np.random.default_rng(7)
    generator = dcgan.Generator(rng, width=8)
    z = rng.normal(size=(5, dcgan.Z_DIM)).astype(np.float32) * 30
    images = generator.forward(z, True)
    assert images.shape == (5, 1, 28, 28) and images.dtype == np.float32
    assert images.min() >= -1 and images.max() <= 1 and images.std() > 0
    assert dcgan.discriminator(rng, width=8).forward(images, True).shape == (5, 1)


def test_one_generator_step_gradient_equals_the_numerical_gradient():
    # The generator's loss, D(G(z)) against "real", through both nets in training mode (BN
    # on batch statistics), in float64: the gradients of G's parameters and of z.
    gan = dcgan.DCGAN(seed=8, width=4, dtype=np.float64)
    z = gan.noise(3)
    # Zero biases make exact zeros (ReLU's zeros through zero-bias layers), which sit on
    # LeakyReLU's kink, where a central difference averages the two slopes.
    rng = np.random.default_rng(9)
    for net in (gan.G, gan.D):
        for name, p in net.params.items():
            if name.endswith(".b"):
                p[...] = rng.normal(0, 0.1, p.shape)

    def loss():
        logits = gan.D.forward(gan.G.forward(z, True), True)
        return gan.loss.forward(logits, np.ones_like(logits))

    loss()
    dz = gan.G.backward(gan.D.backward(gan.loss.backward()))
    grads = {name: g.copy() for name, g in gan.G.grads.items()}
    params = gan.G.params
    for name in ("head.0.W", "head.1.gamma", "body.0.W", "body.1.beta", "body.2.W", "body.2.b"):
        for index in [tuple(rng.integers(0, n) for n in params[name].shape) for _ in range(3)]:
            numeric = numerical_gradient_at(loss, params[name], index)
            assert grads[name][index] == pytest.approx(numeric, rel=1e-5, abs=1e-9), (name, index)
    for index in [(0, 5), (2, 77)]:
        assert dz[index] == pytest.approx(numerical_gradient_at(loss, z, index), rel=1e-5, abs=1e-9)


def test_discriminator_step_sums_the_real_and_the_fake_gradients():
    gan = dcgan.DCGAN(seed=10, width=4, dtype=np.float64)
    real = np.random.default_rng(11).uniform(-1, 1, (4, 1, 28, 28))
    before = {name: p.copy() for name, p in gan.D.params.items()}
    generator_before = {name: p.copy() for name, p in gan.G.params.items()}
    losses = gan.step(real)
    assert np.isfinite(losses["D"]) and np.isfinite(losses["G"])
    assert all(not np.array_equal(before[name], p) for name, p in gan.D.params.items())
    assert all(not np.array_equal(generator_before[name], p) for name, p in gan.G.params.items())


# -- the sample grid ---------------------------------------------------------------------


def test_png_writer_round_trips_through_pillow_and_zlib(tmp_path):
    images = np.random.default_rng(12).random((6, 1, 28, 28))
    grid = dcgan.image_grid(images, rows=2)
    assert grid.shape == (2 * 30 + 2, 3 * 30 + 2) and grid[0, 0] == 255
    data = dcgan.png_bytes(grid)
    # independent of Pillow: the IDAT payload is the filter byte 0 and the row, for every row
    start = data.index(b"IDAT") + 4
    rows = np.frombuffer(
        zlib.decompress(data[start : start + int.from_bytes(data[start - 8 : start - 4], "big")]), np.uint8
    )
    np.testing.assert_array_equal(rows.reshape(grid.shape[0], -1)[:, 1:], grid)
    image_module = pytest.importorskip("PIL.Image")
    dcgan.write_png(tmp_path / "grid.png", grid)
    with image_module.open(tmp_path / "grid.png") as image:
        assert image.mode == "L"
        np.testing.assert_array_equal(np.asarray(image), grid)


# -- the example end to end --------------------------------------------------------------


def run_example(*args, script="examples/dcgan.py"):
    deepnet_home = str(Path(deepnet.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [deepnet_home, os.environ.get("PYTHONPATH")])))
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_quick_run_trains_scores_and_writes_its_outputs(tmp_path):
    out = tmp_path / "run"
    result = run_example("--quick", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "real MNIST (test vs training): inception score" in result.stdout
    assert "DCGAN (" in result.stdout and "inception score" in result.stdout
    scores = json.loads((out / "scores.json").read_text())
    assert 1 <= scores["generated"]["inception_score"] <= 10 and scores["generated"]["frechet_distance"] >= 0
    assert 1 <= scores["real"]["inception_score"] <= 10
    assert (out / "samples.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert (out / "classifier.npz").is_file() and (out / "generator.npz").is_file()
    # a second run refuses the existing directory, and takes it with --force
    again = run_example("--quick", "--out", str(out))
    assert again.returncode == 2 and "exists; give --force" in again.stderr

    if importlib.util.find_spec("torch") is None:
        return  # the PyTorch mirror is the bench extra's
    mirror = run_example(
        "--quick",
        "--out",
        str(tmp_path / "torch"),
        "--classifier",
        str(out / "classifier.npz"),
        script="benches/torch_dcgan.py",
    )
    assert mirror.returncode == 0, mirror.stderr
    assert "PyTorch DCGAN (" in mirror.stdout
    assert json.loads((tmp_path / "torch" / "scores.json").read_text())["generated"]["inception_score"] >= 1

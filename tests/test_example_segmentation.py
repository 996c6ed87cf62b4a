"""examples/segmentation.py and its canvases: the data against what a canvas must be, the metrics
against hand computations, and the example (and its PyTorch mirror) run end to end."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import deepnet
from deepnet.datasets import load_mnist

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
sys.path.insert(0, str(EXAMPLES))

import canvases  # noqa: E402
import segmentation  # noqa: E402


@pytest.fixture(scope="module")
def mnist():
    return load_mnist(normalize=False, flatten=False, root=REPO / "data" / "mnist")


@pytest.fixture(scope="module")
def train_digits(mnist):
    (x, t), _ = mnist
    return x[:2000, 0], t[:2000]


def test_canvases_are_deterministic_per_seed_and_index(train_digits):
    x, t, p = canvases.make_canvases(*train_digits, 12, seed=7)
    x2, t2, p2 = canvases.make_canvases(*train_digits, [10, 3], seed=7)
    np.testing.assert_array_equal(x2, x[[10, 3]])
    np.testing.assert_array_equal(t2, t[[10, 3]])
    assert p2 == [p[10], p[3]]
    x3, _, _ = canvases.make_canvases(*train_digits, 12, seed=8)
    assert not np.array_equal(x3, x)
    assert x.dtype == np.float32 and x.shape == (12, 1, 64, 64) and t.shape == (12, 64, 64)


def test_a_canvas_is_its_digits_and_labels_are_their_classes_exactly_on_their_ink(train_digits):
    images, labels = train_digits
    x, t, placements = canvases.make_canvases(images, labels, 200, seed=3)
    for canvas, classes, placed in zip(x[:, 0], t, placements):
        # rebuilt from the placements: the maximum of the pasted images, each ink pixel its digit's class
        pixels = np.zeros((64, 64), np.uint8)
        expected = np.full((64, 64), 10)
        owners = np.zeros((64, 64), int)
        for p in placed:
            assert p.label == labels[p.image] and 0 <= p.row <= 36 and 0 <= p.col <= 36
            window = (slice(p.row, p.row + 28), slice(p.col, p.col + 28))
            pixels[window] = np.maximum(pixels[window], images[p.image])
            ink = images[p.image] >= 128
            expected[window][ink] = p.label
            owners[window] += ink
        assert owners.max() <= 1  # no two digits' ink on one pixel
        np.testing.assert_array_equal(canvas, pixels / np.float32(255))
        np.testing.assert_array_equal(classes, expected)
        np.testing.assert_array_equal(classes != 10, canvas >= 0.5)  # the ink threshold, seen on the canvas


def test_inks_keep_the_gap(train_digits):
    # between the ink of two digits: at least `gap` blank pixels in every direction (Chebyshev distance > gap)
    images, labels = train_digits
    for gap in (0, 2, 4):
        _, _, placements = canvases.make_canvases(images, labels, 60, seed=gap, gap=gap)
        for placed in placements:
            inks = [np.argwhere(images[p.image] >= 128) + (p.row, p.col) for p in placed]
            for i in range(len(inks)):
                for j in range(i):
                    distance = np.abs(inks[i][:, None, :] - inks[j][None, :, :]).max(axis=2).min()
                    assert distance > gap


def test_a_canvas_without_room_is_refused_not_searched_forever():
    solid = np.full((1, 28, 28), 255, np.uint8)  # one position on a 28x28 canvas: no room for a second digit
    with pytest.raises(RuntimeError, match="no room for another digit"):
        canvases.make_canvases(solid, np.array([4]), 10, size=28, max_digits=2)
    _, t, placements = canvases.make_canvases(solid, np.array([4]), 3, seed=1, size=28, max_digits=1)
    assert (t == 4).all() and all(p == [canvases.Placement(0, 4, 0, 0)] for p in placements)


def test_one_to_three_digits_a_canvas_about_equally_often(train_digits):
    _, _, placements = canvases.make_canvases(*train_digits, 600, seed=5)
    counts = np.bincount([len(p) for p in placements], minlength=4)
    assert counts[0] == 0 and counts.sum() == 600
    assert all(150 <= n <= 250 for n in counts[1:]), counts


def test_canvases_use_only_the_images_given(mnist, train_digits):
    # the windows of the digits hold exactly the given images (here 2000 training images)
    images, labels = train_digits
    x, _, placements = canvases.make_canvases(images, labels, 50, seed=11)
    for canvas, placed in zip(x[:, 0], placements):
        for p in placed:
            assert 0 <= p.image < len(images)
            window = canvas[p.row : p.row + 28, p.col : p.col + 28]
            ink = images[p.image] >= 128
            np.testing.assert_array_equal(window[ink], images[p.image][ink] / np.float32(255))


def test_the_example_makes_train_and_val_canvases_from_training_images_and_test_from_test(monkeypatch, mnist):
    (x_train, t_train), (x_test, t_test) = mnist
    seen = {}

    def spy(images, labels, count, seed):
        seen[seed] = images
        return canvases.make_canvases(images, labels, count, seed=seed)

    monkeypatch.setattr(segmentation, "make_canvases", spy)
    data = segmentation.load_canvases(str(REPO / "data" / "mnist"), {"train": 3, "val": 2, "test": 4})
    assert [len(data[k][0]) for k in ("train", "val", "test")] == [3, 2, 4]
    seeds = segmentation.SEEDS
    np.testing.assert_array_equal(seen[seeds["train"]], x_train[:55000, 0])
    np.testing.assert_array_equal(seen[seeds["val"]], x_train[55000:, 0])  # disjoint from the training part
    np.testing.assert_array_equal(seen[seeds["test"]], x_test[:, 0])


def test_canvases_refuse_bad_images():
    with pytest.raises(ValueError, match="uint8 of shape"):
        canvases.make_canvases(np.zeros((2, 28, 28), np.float32), np.zeros(2, int), 1)
    with pytest.raises(ValueError, match="one label an image"):
        canvases.make_canvases(np.zeros((2, 28, 28), np.uint8), np.zeros(3, int), 1)


def test_metrics_against_a_hand_computation():
    true = np.array([[0, 0, 1], [1, 2, 2]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    counts = segmentation.confusion(true, pred, 4)
    np.testing.assert_array_equal(counts[:3, :3], [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    m = segmentation.segmentation_metrics(counts)
    # 4 of 6 pixels right; IoU 0: 1/(2+2-1), 1: 2/(3+2-2), 2: 1/(1+2-1); class 3 absent from both
    assert m["pixel_accuracy"] == pytest.approx(4 / 6)
    assert m["iou"][:3] == pytest.approx([1 / 3, 2 / 3, 1 / 2]) and m["iou"][3] is None
    assert m["mean_iou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    with pytest.raises(ValueError, match="0..3"):
        segmentation.confusion(true, pred + 2, 4)


def test_the_fcn_maps_a_canvas_to_11_scores_a_pixel():
    net = segmentation.build_fcn(0, width=4)
    assert net.forward(np.zeros((2, 1, 64, 64), np.float32), train=False).shape == (2, 11, 64, 64)


def _env():
    home = str(Path(deepnet.__file__).resolve().parent.parent)
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [home, os.environ.get("PYTHONPATH")])))


def _run(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=_env(), timeout=300)


def test_quick_run_writes_its_metrics_and_figure_and_keeps_a_run_it_would_overwrite(tmp_path):
    out = tmp_path / "run"
    result = _run(str(EXAMPLES / "segmentation.py"), "--quick", "--out", str(out), "--threads", "1")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["test"]["pixel_accuracy"] <= 1 and 0 <= metrics["test"]["mean_iou"] <= 1
    assert len(metrics["test"]["iou"]) == 11 and metrics["steps"] == metrics["total_steps"] > 0
    assert "mean IoU" in result.stdout
    if importlib.util.find_spec("matplotlib"):
        assert (out / "segmentation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = (out / "metrics.json").read_bytes()
    again = _run(str(EXAMPLES / "segmentation.py"), "--quick", "--out", str(out))
    assert again.returncode != 0 and "--force" in again.stderr
    assert (out / "metrics.json").read_bytes() == before


@pytest.mark.skipif(not importlib.util.find_spec("torch"), reason="torch is not installed (the bench extra)")
def test_the_pytorch_mirror_runs_quick():
    result = _run(str(REPO / "benches" / "torch_segmentation.py"), "--quick", "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert "forward equals deepnet's" in result.stdout and "mean IoU" in result.stdout


def test_a_recipe_that_cannot_run_is_refused_before_any_work(tmp_path):
    result = _run(str(EXAMPLES / "segmentation.py"), "--quick", "--batch", "5000", "--out", str(tmp_path / "run"))
    assert result.returncode != 0 and "--batch 5000 is more than the 1024 canvases" in result.stderr
    assert not (tmp_path / "run").exists()

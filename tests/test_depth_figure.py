"""benches/models/depth.py's figure (docs/depth.png): labels stay clear of the title and inside the figure."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_depth():
    spec = importlib.util.spec_from_file_location("depth_bench", ROOT / "benches" / "models" / "depth.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_depth_figures_labels_overlap_neither_the_title_nor_the_edges():
    """Row 22 of hardening round 3: the label of the top point overlapped the title."""
    pytest.importorskip("matplotlib")
    depth = load_depth()
    from deepnet.nets import describe

    accuracies = {"book": 0.9908, "5x5 x 3": 0.9883, "3x3 pairs, width 32": 0.9879, "5x5 x 3, width 32": 0.9854}
    rows = [(name, describe(make(0)), None, accuracies[name]) for name, make in depth.NETS.items()]
    figure = depth.figure_of(rows, 3)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    axes = figure.axes[0]
    title = axes.title.get_window_extent(renderer)
    page = figure.bbox
    labels = [text for text in axes.texts]
    assert len(labels) == 4
    for text in labels:
        box = text.get_window_extent(renderer)
        assert not box.overlaps(title), text.get_text()
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, text.get_text()
        assert axes.bbox.contains(box.x0, box.y0) and axes.bbox.contains(box.x1, box.y1), text.get_text()

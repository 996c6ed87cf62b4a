"""The digit cut out of an ink map: its largest piece of ink and the pieces near it, so that
marks elsewhere on the page do not widen its box."""

from __future__ import annotations

from typing import Any, List, Tuple

import numpy as np
from numpy.typing import NDArray

__all__ = ["INK_THRESHOLD", "DIGIT_CELLS", "DIGIT_NEAR", "cut_digit", "pool"]

INK_THRESHOLD = 0.1  # ink below this (after contrast stretching) is not part of the digit
DIGIT_CELLS = 128  # the digit's pieces are found in cells of about 1/128 of the picture's side
DIGIT_NEAR = 0.25  # pieces within this share of the largest piece's size are the digit's


def cut_digit(ink: NDArray[Any], noisy: bool) -> NDArray[Any]:
    """The digit cut out of an ink map: the box around the pixels above INK_THRESHOLD that
    belong to the digit (_digit_cells: its largest piece of ink and the pieces near it, seen
    in cells of about a DIGIT_CELLS-th of the picture). In a noisy map only pixels in a 2 x 2
    square of such pixels count (a lone speck is not ink), and the ink inside the box but
    more than a cell away from the digit's pieces is cleared."""
    inked = ink > INK_THRESHOLD
    if noisy:
        squares = inked[:-1, :-1] & inked[1:, :-1] & inked[:-1, 1:] & inked[1:, 1:]
        if squares.any():
            inked = np.zeros_like(inked)
            for dy in (0, 1):
                for dx in (0, 1):
                    inked[dy : dy + squares.shape[0], dx : dx + squares.shape[1]] |= squares
    cell = -(-max(ink.shape) // DIGIT_CELLS)
    cells = np.asarray(pool(inked, cell).any(axis=(1, 3)))  # asarray: for mypy, any() may be a scalar
    mass = pool(np.where(inked, ink, 0), cell).sum(axis=(1, 3))
    kept = _digit_cells(cells, mass)
    ours = inked & _cells_to_pixels(kept, cell, ink.shape)
    rows, columns = np.flatnonzero(ours.any(axis=1)), np.flatnonzero(ours.any(axis=0))
    box = slice(rows[0], rows[-1] + 1), slice(columns[0], columns[-1] + 1)
    if not noisy:
        return ink[box]
    grown = kept.copy()
    grown[1:] |= kept[:-1]
    grown[:-1] |= kept[1:]
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    return ink[box] * _cells_to_pixels(grown, cell, ink.shape)[box]


def pool(image: NDArray[Any], cell: int) -> NDArray[Any]:
    """(H, W) -> (H / cell, cell, W / cell, cell), padded with zeros to whole cells."""
    height, width = image.shape
    rows, columns = -(-height // cell), -(-width // cell)
    padded = np.zeros((rows * cell, columns * cell), image.dtype)
    padded[:height, :width] = image
    return padded.reshape(rows, cell, columns, cell)


def _cells_to_pixels(cells: NDArray[Any], cell: int, shape: Tuple[int, ...]) -> NDArray[Any]:
    """Each cell of ``cells`` repeated over its cell x cell pixels, cut to ``shape``."""
    return np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1)[: shape[0], : shape[1]]


def _digit_cells(cells: NDArray[Any], mass: NDArray[Any]) -> NDArray[Any]:
    """The cells of the digit: of the 8-connected pieces of ``cells``, the one with the most
    ``mass`` (ink), and those whose boxes come within DIGIT_NEAR of its size of its box."""
    labels, count = _components(cells)
    if count <= 1:
        return cells
    flat = labels.ravel()
    masses = np.bincount(flat, weights=mass.ravel(), minlength=count + 1)
    masses[0] = -1
    main = int(masses.argmax())
    rows, columns = np.divmod(np.arange(flat.size), labels.shape[1])
    top, left = np.full(count + 1, flat.size), np.full(count + 1, flat.size)
    bottom, right = np.full(count + 1, -1), np.full(count + 1, -1)
    np.minimum.at(top, flat, rows)
    np.maximum.at(bottom, flat, rows)
    np.minimum.at(left, flat, columns)
    np.maximum.at(right, flat, columns)
    near = max(1.0, DIGIT_NEAR * max(bottom[main] - top[main], right[main] - left[main]) + 1)
    gap = np.maximum(
        np.maximum(top - bottom[main], top[main] - bottom), np.maximum(left - right[main], left[main] - right)
    )
    keep = gap <= near
    keep[0] = False
    return keep[labels]


def _components(cells: NDArray[Any]) -> Tuple[NDArray[np.intp], int]:
    """8-connected pieces of a small boolean array: (labels, count), 0 = not a cell. Runs of
    cells along rows are joined with the runs they touch in the row above (union-find)."""
    parent = [0]

    def root(label: int) -> int:
        while parent[label] != label:
            parent[label] = parent[parent[label]]
            label = parent[label]
        return label

    labels = np.zeros(cells.shape, np.intp)
    padded = np.zeros((cells.shape[0], cells.shape[1] + 2), np.int8)
    padded[:, 1:-1] = cells
    edges = np.diff(padded, axis=1)
    run_rows, starts = np.nonzero(edges == 1)  # row-major: each row's runs, left to right
    ends = np.nonzero(edges == -1)[1]
    above: List[Tuple[int, int, int]] = []
    current: List[Tuple[int, int, int]] = []
    row = -1
    for y, start, end in zip(run_rows.tolist(), starts.tolist(), ends.tolist()):
        if y != row:
            above, current, row = (current if y == row + 1 else []), [], y
        label = len(parent)
        parent.append(label)
        for upper_start, upper_end, upper in above:
            if upper_start <= end and upper_end >= start:  # touching, corners included
                a, b = root(upper), root(label)
                parent[max(a, b)] = min(a, b)
        labels[y, start:end] = label
        current.append((start, end, label))
    roots = np.array([root(label) for label in range(len(parent))])
    _, compact = np.unique(roots, return_inverse=True)
    return compact[labels], int(compact.max())

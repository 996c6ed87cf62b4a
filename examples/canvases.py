"""Digit canvases for segmentation: one to three MNIST digits on a blank square, and a class for every pixel.

A canvas is ``size`` x ``size`` (64 by default) and holds 1..3 digits (uniformly), each
a 28x28 MNIST image pasted at a random position inside the canvas.  Its pixels are the
maximum of the pasted images (values in [0, 1], float32).

Labels: a digit's *ink* is where its own pixel is >= 128 (>= 0.5 after / 255).  A pixel
takes the class of the digit whose ink covers it, and BACKGROUND (10) elsewhere: 11
classes.  Overlaps cannot arise: a digit is only placed where its ink keeps ``gap`` blank
pixels (2 by default, in all 8 directions) from the ink already placed, so every ink pixel
belongs to exactly one digit, and a canvas pixel is >= 0.5 exactly where the label is a
digit (the faint edges of a digit, below 0.5, are background even where they touch another
digit: the maximum keeps the ink).

Canvas ``i`` of ``seed`` depends on (seed, i) and the images only, so any slice of the
indices gives the same canvases however many are generated.  Training canvases are made
from MNIST's training images, test canvases from its test images: pass the images of the
split (or of a part of it, such as a validation part of the training images).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import NDArray

__all__ = ["BACKGROUND", "NUM_CLASSES", "INK", "Placement", "make_canvases", "dilate"]

BACKGROUND = 10  # the class of every pixel that is no digit's ink
NUM_CLASSES = 11  # the ten digits and the background
INK = 128  # a uint8 pixel is ink when >= INK, i.e. >= 0.5 after / 255
DIGIT = 28  # MNIST's side
_TRIES = 200  # random positions tried for a digit before all of them are
_IMAGES = 20  # images drawn for one digit before the canvas is found too crowded


@dataclass(frozen=True)
class Placement:
    """One digit on a canvas: the index of its image in the given images, its class, and its
    top-left corner on the canvas."""

    image: int
    label: int
    row: int
    col: int


def dilate(mask: NDArray[np.bool_], radius: int) -> NDArray[np.bool_]:
    """``mask`` grown by ``radius`` pixels in the 8 directions (a (2 radius + 1)^2 square)."""
    out = mask.copy()
    height, width = mask.shape
    for dr in range(-radius, radius + 1):
        for dc in range(-radius, radius + 1):
            r0, r1 = max(dr, 0), height + min(dr, 0)
            c0, c1 = max(dc, 0), width + min(dc, 0)
            out[r0:r1, c0:c1] |= mask[r0 - dr : r1 - dr, c0 - dc : c1 - dc]
    return out


def _position(
    taken: NDArray[np.bool_], ink: NDArray[np.bool_], rng: np.random.Generator, size: int
) -> Optional[Tuple[int, int]]:
    """A random top-left corner where ``ink`` misses ``taken``: _TRIES random ones, then every
    corner in a random order; None where none fits."""
    span = size - DIGIT + 1
    for _ in range(_TRIES):
        row, col = (int(v) for v in rng.integers(0, span, size=2))
        if not (taken[row : row + DIGIT, col : col + DIGIT] & ink).any():
            return row, col
    for k in rng.permutation(span * span):
        row, col = divmod(int(k), span)
        if not (taken[row : row + DIGIT, col : col + DIGIT] & ink).any():
            return row, col
    return None


def _check(images: NDArray[np.uint8], labels: NDArray[np.integer], size: int, max_digits: int, gap: int) -> None:
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 3):
        raise ValueError(
            "make_canvases: images must be uint8 of shape (N, 28, 28) (load_mnist(normalize=False)), got "
            f"{getattr(images, 'dtype', type(images).__name__)} of shape {getattr(images, 'shape', None)}"
        )
    if images.shape[1:] != (DIGIT, DIGIT) or images.shape[0] == 0:
        raise ValueError(f"make_canvases: images must have shape (N >= 1, 28, 28), got {images.shape}")
    if np.shape(labels) != images.shape[:1]:
        raise ValueError(f"make_canvases: one label an image expected, got {np.shape(labels)} for {images.shape[0]}")
    if not 1 <= max_digits <= 9:
        raise ValueError(f"make_canvases: max_digits must lie in 1..9, got {max_digits}")
    if size < DIGIT or gap < 0:
        raise ValueError(f"make_canvases: size >= {DIGIT} and gap >= 0 expected, got size {size}, gap {gap}")


def _canvas(
    images: NDArray[np.uint8],
    labels: NDArray[np.integer],
    rng: np.random.Generator,
    size: int,
    max_digits: int,
    gap: int,
) -> Tuple[NDArray[np.uint8], NDArray[np.uint8], List[Placement]]:
    pixels = np.zeros((size, size), np.uint8)
    classes = np.full((size, size), BACKGROUND, np.uint8)
    taken = np.zeros((size, size), bool)  # ink placed so far, grown by the gap
    placements: List[Placement] = []
    for _ in range(int(rng.integers(1, max_digits + 1))):
        for _ in range(_IMAGES):
            index = int(rng.integers(images.shape[0]))
            ink = images[index] >= INK
            corner = _position(taken, ink, rng, size)
            if corner is not None:
                break
        else:
            raise RuntimeError(
                f"make_canvases: no room for another digit on a {size}x{size} canvas after {_IMAGES} images "
                f"(gap {gap}); give a larger size, a smaller gap or fewer digits"
            )
        row, col = corner
        window = (slice(row, row + DIGIT), slice(col, col + DIGIT))
        np.maximum(pixels[window], images[index], out=pixels[window])
        classes[window][ink] = int(labels[index])
        grown = np.zeros((size, size), bool)
        grown[window] = ink
        taken |= dilate(grown, gap) if gap else grown
        placements.append(Placement(index, int(labels[index]), row, col))
    return pixels, classes, placements


def make_canvases(
    images: NDArray[np.uint8],
    labels: NDArray[np.integer],
    indices: Sequence[int] | int,
    seed: int = 0,
    size: int = 64,
    max_digits: int = 3,
    gap: int = 2,
) -> Tuple[NDArray[np.float32], NDArray[np.uint8], List[List[Placement]]]:
    """Canvases ``indices`` (or ``range(indices)``) of ``seed``, from ``images`` and their ``labels``.

    Parameters
    ----------
    images : uint8 array of shape (N, 28, 28)
        The digits to paste (``load_mnist(normalize=False, flatten=False)``'s, squeezed).
    labels : int array of shape (N,)
        Their classes 0..9.
    indices : int or sequence of int
        Which canvases: canvas i is drawn by ``np.random.default_rng((seed, i))``.
    seed : int
        Selects the family of canvases.
    size : int
        The canvas side.
    max_digits : int
        Each canvas holds 1..max_digits digits, uniformly.
    gap : int
        The least distance between the ink of two digits (0: inks may touch, never overlap).

    Returns
    -------
    x : float32 array (n, 1, size, size)
        The canvases, in [0, 1].
    t : uint8 array (n, size, size)
        The class of every pixel (uint8: a quarter of int64's memory): 0..9 on a digit's ink, BACKGROUND elsewhere.
    placements : list of lists of Placement
        The digits of every canvas, in the order they were pasted.
    """
    _check(images, labels, size, max_digits, gap)
    wanted = range(indices) if isinstance(indices, (int, np.integer)) else [int(i) for i in indices]
    x = np.empty((len(wanted), 1, size, size), np.float32)
    t = np.empty((len(wanted), size, size), np.uint8)
    placements = []
    for k, i in enumerate(wanted):
        if i < 0:
            raise ValueError(f"make_canvases: canvas indices must be >= 0, got {i}")
        pixels, classes, placed = _canvas(images, labels, np.random.default_rng((seed, i)), size, max_digits, gap)
        x[k, 0] = pixels / np.float32(255)
        t[k] = classes
        placements.append(placed)
    return x, t, placements

"""A picture of a digit (PNG or JPEG bytes) -> a 28x28 MNIST input, made the way MNIST was.

MNIST's digits were cropped to their bounding box, scaled with anti-aliasing to fit a
20x20 box with their aspect kept, and placed in a 28x28 field with their centre of mass
at its centre; they are light on dark, in [0, 1], and each peaks at 1. ``mnist_input``
does the same to any picture: grayscale, then the ink told from the paper (ink_map), then
crop, scale and centre.

A photo of a digit on paper is not a clean drawing: its light falls off across the page,
its sensor adds noise, JPEG adds blocks, and notebook paper has ruled lines. ink_map reads
each pixel's ink against the paper's brightness where it lies (a smooth surface fitted to
the paper, so that a gradient or a shadow is no ink), divides out thin lines that run
across the page (also a few degrees askew), and in a noisy photo smooths the speckle away;
the digit is then its largest piece of ink and the pieces near it, so that marks elsewhere
do not widen its box. tests/photo_pages.py makes such photos of MNIST's test digits; the
book's model reads them about as well as clean drawings (tests/test_app_photos.py).

Images are untrusted input (``deepnet serve`` decodes what a request sends): only PNG and
JPEG decoders run, and the pixel count and the ratio of the sides are checked from the header
before any decoding. Decoding takes at most 4 bytes a pixel in Pillow (64 MB at MAX_PIXELS);
mnist_input then shrinks the picture to WORK_SIDE pixels a side before making arrays of it, so
that a request's working memory is bounded by a constant. Error messages speak of the user's

The steps have their own modules, whose public names are importable from here too: ``decode``
(bytes -> grayscale, and the errors), ``ink`` (ink_map), ``ruled_lines`` and ``digit`` (the
digit's pieces of ink); this module puts them together and makes the 28x28 field.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .decode import FORMATS as FORMATS
from .decode import ONE_COLOUR as ONE_COLOUR
from .decode import VISIBLE_ALPHA as VISIBLE_ALPHA
from .decode import (
    MAX_ASPECT,
    MAX_PIXELS,
    PILLOW_INSTALL_HINT,
    WORK_SIDE,
    BlankImage,
    ImageError,
    ImageTooLarge,
    check_size,
    read_grayscale,
    require_pillow,
)
from .digit import DIGIT_CELLS as DIGIT_CELLS
from .digit import DIGIT_NEAR as DIGIT_NEAR
from .digit import INK_THRESHOLD as INK_THRESHOLD
from .digit import cut_digit
from .ink import DENOISE as DENOISE
from .ink import FLAT as FLAT
from .ink import MIN_CONTRAST as MIN_CONTRAST
from .ink import MIN_PAPER as MIN_PAPER
from .ink import NOISY as NOISY
from .ink import PAPER_BLOCKS as PAPER_BLOCKS
from .ink import ink_map, measure_ink
from .ruled_lines import LINE_EDGE as LINE_EDGE
from .ruled_lines import LINE_INK as LINE_INK
from .ruled_lines import LINE_SEARCH as LINE_SEARCH
from .ruled_lines import LINE_SPAN as LINE_SPAN
from .ruled_lines import LINE_STRIP as LINE_STRIP
from .ruled_lines import LINE_TILT as LINE_TILT

__all__ = [
    "ImageError",
    "ImageTooLarge",
    "BlankImage",
    "PILLOW_INSTALL_HINT",
    "MAX_PIXELS",
    "MAX_ASPECT",
    "WORK_SIDE",
    "require_pillow",
    "mnist_input",
    "read_grayscale",
    "check_size",
    "digit_to_mnist",
    "ink_map",
    "centre_of_mass",
]


FIELD = 28  # MNIST's image side
BOX = 20  # the side of the box the digit is scaled to fit
CENTRE = 14.0  # MNIST's centres of mass, in pixel indices: 14.0 +- 0.5 on both axes


def mnist_input(data: bytes) -> NDArray[np.float32]:
    """PNG or JPEG bytes -> float32 (28, 28) in [0, 1], light digit on dark, like MNIST."""
    return digit_to_mnist(read_grayscale(data, max_side=WORK_SIDE))


def digit_to_mnist(gray: ArrayLike) -> NDArray[np.float32]:
    """Grayscale (H, W) in [0, 1] -> the MNIST input (28, 28) float32: see the module doc.

    Raises BlankImage when nothing stands out from the background.
    """
    from PIL import Image

    digit = cut_digit(*measure_ink(gray))

    height, width = digit.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = np.asarray(Image.fromarray(digit).resize(size, Image.Resampling.LANCZOS)).clip(0, 1)

    # A bilinear shift puts the centre of mass at (CENTRE, CENTRE) to a fraction of a pixel.
    # The zero border keeps it exact: Pillow repeats edge pixels when it samples past them.
    digit = np.pad(digit, 1)
    y, x = centre_of_mass(digit)
    shift = (1, 0, x - CENTRE, 0, 1, y - CENTRE)  # output pixel (i, j) samples (i + dy, j + dx)
    shifted = Image.fromarray(digit).transform(
        (FIELD, FIELD), Image.Transform.AFFINE, shift, resample=Image.Resampling.BILINEAR
    )
    field = np.asarray(shifted, dtype=np.float32).clip(0, 1)
    return field / field.max()  # MNIST's digits peak at 1; scaling and shifting lower thin strokes


def centre_of_mass(image: ArrayLike) -> Tuple[float, float]:
    """(row, column) of the intensity-weighted centre of a 2-D array, in pixel indices."""
    image = np.asarray(image, dtype=np.float64)
    total = image.sum()
    rows = image.sum(axis=1) @ np.arange(image.shape[0]) / total
    columns = image.sum(axis=0) @ np.arange(image.shape[1]) / total
    return float(rows), float(columns)

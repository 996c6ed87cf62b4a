"""How much ink each pixel of a picture holds: the paper's light divided out, ruled lines taken
out, and a noisy photo's speckle smoothed away (ink_map)."""

from __future__ import annotations

from typing import Any, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .decode import BlankImage
from .ruled_lines import remove_ruled_lines

__all__ = ["MIN_CONTRAST", "PAPER_BLOCKS", "FLAT", "MIN_PAPER", "NOISY", "DENOISE", "ink_map", "measure_ink"]

MIN_CONTRAST = 0.1  # an image whose ink rises less than this above its background is blank
PAPER_BLOCKS = 32  # the paper's brightness is fitted to the medians of about 32 x 32 blocks
FLAT = 0.02  # a fitted paper that varies by less than this is taken as one level
MIN_PAPER = 0.02  # the paper's brightness is taken as at least this (no division by zero)
NOISY = 0.01  # a picture whose paper's noise is more than this (in brightness) is denoised
DENOISE = 3  # ... by lowering its ink by this many times the noise left after smoothing


def ink_map(gray: ArrayLike) -> NDArray[np.float32]:
    """Grayscale (H, W) in [0, 1] -> float32 (H, W) in [0, 1]: how much ink each pixel
    holds, 0 = bare paper, peaking at 1. Raises BlankImage when there is none.

    The picture is made dark on light (inverted when its border is dark: _dark_on_light);
    the paper's brightness under the picture's lighting is estimated everywhere (_paper),
    and each pixel's ink is how much darker than that paper it is, as a fraction: 1 - pixel
    / paper, so that a gradient of light, a shadow or grey paper is no ink. Thin ruled lines
    that run across most of the page are taken out (remove_ruled_lines). In a noisy photo the map is
    smoothed over 3 x 3 pixels and lowered by DENOISE times the noise left (more where the
    paper is darker, as the noise is larger there against it). The rest is stretched to
    peak at 1.
    """
    return measure_ink(gray)[0]


def measure_ink(gray: ArrayLike) -> Tuple[NDArray[Any], bool]:
    """ink_map's map, and whether the picture was found noisy (and denoised)."""
    gray = np.asarray(gray, dtype=np.float32)
    if not _dark_on_light(gray):
        gray = 1 - gray
    paper = _paper(gray)
    ink = gray / paper
    np.subtract(1, ink, out=ink)
    noisy = _noise(ink, paper) > NOISY
    remove_ruled_lines(ink)
    if noisy:
        ink = _smooth(ink)
        ink -= DENOISE * _noise(ink, paper) / paper  # more where the paper is darker
    ink.clip(0, 1, out=ink)
    contrast = float(ink.max())
    if contrast < MIN_CONTRAST:
        raise BlankImage("the image is blank: no ink found (nothing stands out from the background)")
    ink /= contrast
    return ink, noisy


def _dark_on_light(gray: NDArray[Any]) -> bool:
    """Whether the picture's background, its border, is light: brighter than 0.5, or (a dim
    photo of paper) nearer its brightest pixels than its darkest (1st and 99th percentiles)."""
    border = float(np.median(np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])))
    if border > 0.5:
        return True
    darkest, brightest = np.percentile(gray[::4, ::4], [1, 99])
    return border > (darkest + brightest) / 2


def _paper(gray: NDArray[Any]) -> Union[float, NDArray[np.float32]]:
    """The brightness of bare paper at each pixel of a dark-on-light picture: a quadratic
    surface fitted to the medians of about 32 x 32 blocks, leaving out the blocks darker than
    the fit (ink) until none is left out anew. A fit that varies by less than FLAT across the
    picture is taken as one level, the median of the blocks kept. Float32 (H, W), or a
    scalar for one level."""
    height, width = gray.shape
    block = max(2, -(-max(height, width) // PAPER_BLOCKS))
    rows, columns = height // block, width // block
    if rows < 3 or columns < 3:  # too small to fit a surface: one level, the border's
        border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
        return max(float(np.median(border)), MIN_PAPER)
    cells = gray[: rows * block, : columns * block].reshape(rows, block, columns, block)
    cells = np.median(cells.transpose(0, 2, 1, 3).reshape(rows, columns, -1), axis=2)
    # Cell centres, and every pixel, in coordinates from -1 to 1 across the picture.
    y = _unit((np.arange(rows) + 0.5) * block - 0.5, height)
    x = _unit((np.arange(columns) + 0.5) * block - 0.5, width)
    y, x = np.meshgrid(y, x, indexing="ij")
    terms = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1).reshape(-1, 6)
    values = cells.reshape(-1).astype(np.float64)
    kept = values >= np.median(values)  # start from the lighter half: paper, mostly
    for _ in range(8):
        coefficients = np.linalg.lstsq(terms[kept], values[kept], rcond=None)[0]
        residuals = values - terms @ coefficients
        spread = 1.4826 * np.median(np.abs(residuals[kept])) + 0.01
        now = residuals > -3 * spread  # darker than the paper by more than its noise: ink
        if np.array_equal(now, kept):
            break
        kept = now
    fitted = terms @ coefficients
    if fitted.max() - fitted.min() < FLAT:
        return max(float(np.median(values[kept])), MIN_PAPER)
    c0, cx, cy, cxx, cxy, cyy = coefficients.astype(np.float32)
    y = _unit(np.arange(height), height)[:, None]
    x = _unit(np.arange(width), width)[None, :]
    paper = (c0 + cy * y + cyy * y * y) + (cx + cxy * y) * x
    paper += cxx * x * x
    return np.maximum(paper, MIN_PAPER, out=paper)


def _unit(positions: ArrayLike, size: int) -> NDArray[np.float32]:
    """Pixel positions along a side of ``size`` pixels -> float32 from -1 to 1."""
    half = max(size - 1, 1) / 2
    return ((np.asarray(positions, dtype=np.float32) - half) / half).astype(np.float32)


def _noise(ink: NDArray[Any], paper: Union[float, NDArray[Any]]) -> float:
    """The standard deviation of the paper's noise, in brightness, in an ink map (not yet
    clipped) over ``paper``: paper pixels scatter around 0 and ink is only positive, so the
    negative values are noise, and half of the paper's noise is negative."""
    negative = np.minimum(ink, 0)
    negative *= paper  # ink is relative to the paper: paper - pixel = ink * paper
    return float(np.sqrt(2 * np.vdot(negative, negative) / ink.size))


def _smooth(ink: NDArray[Any]) -> NDArray[Any]:
    """The mean of each pixel's 3 x 3 neighbourhood (edges repeated)."""
    padded = np.pad(ink, 1, mode="edge")
    rows = padded[:-2] + padded[1:-1] + padded[2:]
    smooth = rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]
    smooth /= 9
    return smooth

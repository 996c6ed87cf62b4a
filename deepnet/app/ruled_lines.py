"""Ruled lines (notebook paper's, and its margin line) taken out of an ink map, also when the
photo is a few degrees askew; ink crossing a line is kept."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .digit import pool

__all__ = ["LINE_SPAN", "LINE_INK", "LINE_STRIP", "LINE_TILT", "LINE_EDGE", "LINE_SEARCH", "remove_ruled_lines"]

LINE_SPAN = 0.75  # a ruled line holds ink along at least this share of a row or column
LINE_INK = 0.05  # ... at least this much ink, more than the rows around it
LINE_STRIP = 8  # ... seen in strips this many pixels wide
LINE_TILT = 0.09  # ... and lies at most this many rows per column askew (about 5 degrees)
LINE_EDGE = 0.5  # ... and is taken to darken the rows beside it by this share of its ink
LINE_SEARCH = 400  # the lines' slope is sought in a map shrunk to this side, then refined


def remove_ruled_lines(ink: NDArray[Any]) -> None:
    """Take out of an ink map, in place, thin straight lines that run along most of its rows
    or columns (the ruled lines and the margin line of notebook paper), also when the photo
    is a few degrees askew: see _remove_lines_along_rows. Ink crossing a line is kept."""
    _remove_lines_along_rows(ink)
    _remove_lines_along_rows(ink.T)  # the columns, through a view: still in place


def _remove_lines_along_rows(ink: NDArray[Any]) -> None:
    """Divide out of an ink map (in place) the lines that cross it from side to side.

    The map is cut into strips LINE_STRIP pixels wide, and each strip's mean ink row by row
    is its profile; the lines' slope (_line_slope) aligns the profiles. Where the strips'
    aligned profiles hold ink along LINE_SPAN of the strips that the line crosses inside the
    map (a line askew may leave it through the top or bottom), more than the rows around
    (within a thirtieth of the height), there is a line, of that ink; each pixel on it is
    divided by the line's transmission (1 - its ink), so a stroke darker than the line
    keeps its ink.
    """
    height, width = ink.shape
    strips = width // LINE_STRIP
    if strips < 4 or height < 8:
        return
    profiles = ink[:, : strips * LINE_STRIP].reshape(height, strips, LINE_STRIP).mean(axis=2)
    if np.mean(profiles.max(axis=0) >= LINE_INK) < LINE_SPAN:
        return  # no line can cross LINE_SPAN of the strips: a drawing on a clean page
    slope = _line_slope(ink)
    shifts = slope * _centres(strips, LINE_STRIP, width)
    extra = int(np.ceil(np.abs(shifts).max()))  # lines crossing the middle column off the map
    level = _line_level(profiles, shifts, extra)
    line = level - _opening(level, max(5, height // 30))  # only what is thinner than that
    line[line < LINE_INK] = 0
    if not line.any():
        return
    # Each line widened by a row either way: its edges, blurred, are no ink either.
    line[1:-1] = np.maximum(np.maximum(line[:-2], line[2:]) * LINE_EDGE, line[1:-1])
    line = np.minimum(line, 0.9).astype(np.float32)
    # The line through pixel (y, x) crosses the middle column at y - slope * x.
    x = np.arange(width, dtype=np.float32) - (width - 1) / 2
    position = np.arange(extra, height + extra, dtype=np.float32)[:, None] - np.float32(slope) * x
    position.clip(0, len(line) - 1, out=position)
    below = position.astype(np.intp)
    position -= below
    np.minimum(below, len(line) - 2, out=below)
    position.clip(0, 1, out=position)
    found = line[below] * (1 - position)
    found += line[below + 1] * position
    ink -= found
    found -= 1
    ink /= found
    np.negative(ink, out=ink)


def _line_level(profiles: NDArray[Any], shifts: NDArray[Any], extra: int) -> NDArray[Any]:
    """For each line position (crossing the middle column at rows -extra to H + extra), the
    ink that LINE_SPAN of the strips it crosses inside the map hold: their 1 - LINE_SPAN
    quantile (the lower one); 0 where it crosses fewer than a quarter of the strips."""
    height, count = profiles.shape
    rows = np.arange(-extra, height + extra, dtype=np.float32)[:, None] + shifts[None, :]
    inside = (rows >= 0) & (rows <= height - 1)
    rows.clip(0, height - 1, out=rows)
    below = np.minimum(rows.astype(np.intp), height - 2)
    rows -= below
    columns = np.arange(count)
    lower = profiles[below, columns]
    aligned = lower + (profiles[below + 1, columns] - lower) * rows
    aligned[~inside] = np.inf  # sorted last
    aligned.sort(axis=1)
    crossed = inside.sum(axis=1)
    rank = np.floor((1 - LINE_SPAN) * np.maximum(crossed - 1, 0)).astype(np.intp)
    level = np.take_along_axis(aligned, rank[:, None], axis=1)[:, 0]
    level[crossed < max(2, count // 4)] = 0
    return level


def _centres(strips: int, strip: int, width: int) -> NDArray[Any]:
    """The strips' middle columns, counted from the map's middle column."""
    return (np.arange(strips) + 0.5) * strip - 0.5 - (width - 1) / 2


def _shifted(profiles: NDArray[Any], shifts: ArrayLike) -> NDArray[Any]:
    """profiles (H, K) with column k read shifts[..., k] rows further down (linearly
    interpolated, the ends repeated): (..., H, K) for shifts (..., K)."""
    height, count = profiles.shape
    shifts = np.asarray(shifts, dtype=np.float32)
    rows = np.arange(height, dtype=np.float32)[:, None] + shifts[..., None, :]
    rows.clip(0, height - 1, out=rows)
    below = np.minimum(rows.astype(np.intp), height - 2)
    rows -= below
    columns = np.arange(count)
    lower = profiles[below, columns]
    return lower + (profiles[below + 1, columns] - lower) * rows


def _line_slope(ink: NDArray[Any]) -> float:
    """The slope (rows per column) at which lines across the map lie, within LINE_TILT:
    the one, in steps that move a line by a pixel across the map, at which the mean of 32
    strips' aligned profiles has most ink in thin rows (the smallest slope of equals). A map
    larger than LINE_SEARCH pixels a side is searched shrunk to it, then around what that
    found, so that the search's cost is bounded."""
    height, width = ink.shape
    factor = -(-max(height, width) // LINE_SEARCH)
    if factor > 1 and min(height, width) >= 8 * factor:
        small = pool(ink, factor).mean(axis=(1, 3))[: height // factor, : width // factor]
        near = _line_slope(small)
        steps = np.arange(factor + 1)
        slopes = near + np.stack([steps, -steps], axis=1).ravel()[1:] / width
        return _best_slope(ink, slopes)
    steps = np.arange(int(LINE_TILT * width) + 1)
    return _best_slope(ink, np.stack([steps, -steps], axis=1).ravel()[1:] / width)


def _best_slope(ink: NDArray[Any], slopes: NDArray[Any]) -> float:
    """Of ``slopes`` (the first wins ties), the one that _line_slope prefers."""
    height, width = ink.shape
    strips = min(32, width // LINE_STRIP)
    strip = width // strips
    profiles = ink[:, : strips * strip].reshape(height, strips, strip).mean(axis=2)
    centres = _centres(strips, strip, width).astype(np.float32)
    window = max(5, height // 30)
    edge = 0
    scores = []
    chunk = max(1, 1_000_000 // (height * strips))  # bounds the memory: ~ 4 MB a chunk
    for start in range(0, len(slopes), chunk):
        shifts = slopes[start : start + chunk, None] * centres
        level = np.quantile(_shifted(profiles, shifts), 1 - LINE_SPAN, axis=2)
        thin = (level - _opening(level, window))[:, edge : height - edge]
        scores.append(np.einsum("ah,ah->a", thin, thin))
    return float(slopes[int(np.argmax(np.concatenate(scores)))])


def _opening(profiles: NDArray[Any], window: int) -> NDArray[Any]:
    """Grey opening of 1-D profiles along their last axis: a minimum then a maximum over
    ``window`` values. Past the ends the profile is taken as its lowest value, so that a
    peak at an end is as thin as it looks."""
    from numpy.lib.stride_tricks import sliding_window_view

    before, after = window // 2, window - 1 - window // 2
    pad = [(0, 0)] * (np.ndim(profiles) - 1)
    lowest = np.min(profiles, axis=-1, keepdims=True)
    padded = np.concatenate(
        [
            np.broadcast_to(lowest, profiles.shape[:-1] + (before,)),
            profiles,
            np.broadcast_to(lowest, profiles.shape[:-1] + (after,)),
        ],
        axis=-1,
    )
    low = sliding_window_view(padded, window, axis=-1).min(axis=-1)
    return sliding_window_view(np.pad(low, pad + [(after, before)], mode="edge"), window, axis=-1).max(axis=-1)

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
image ("the image is blank: ..."): they are shown to the user as they are.
"""

import io
import re

import numpy as np

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

PILLOW_INSTALL_HINT = (
    'reading images needs Pillow: pip install -e ".[app]" in deepnet\'s source directory (or pip install Pillow)'
)
FORMATS = ("PNG", "JPEG")
MAX_PIXELS = 16_000_000  # a 16-megapixel photo fits; a decompression bomb does not
MAX_ASPECT = 20  # longest side / shortest side: a 16,000,000 x 1 strip is refused unread
WORK_SIDE = 1024  # mnist_input shrinks larger pictures to this side before any array is made
VISIBLE_ALPHA = 64  # pixels at least this opaque are the visible ones whose colours count
ONE_COLOUR = 24  # visible pixels whose channels all vary less than this are one colour
FIELD = 28  # MNIST's image side
BOX = 20  # the side of the box the digit is scaled to fit
CENTRE = 14.0  # MNIST's centres of mass, in pixel indices: 14.0 +- 0.5 on both axes
INK_THRESHOLD = 0.1  # ink below this (after contrast stretching) is not part of the digit
MIN_CONTRAST = 0.1  # an image whose ink rises less than this above its background is blank
PAPER_BLOCKS = 32  # the paper's brightness is fitted to the medians of about 32 x 32 blocks
FLAT = 0.02  # a fitted paper that varies by less than this is taken as one level
MIN_PAPER = 0.02  # the paper's brightness is taken as at least this (no division by zero)
LINE_SPAN = 0.75  # a ruled line holds ink along at least this share of a row or column
LINE_INK = 0.05  # ... at least this much ink, more than the rows around it
LINE_STRIP = 8  # ... seen in strips this many pixels wide
LINE_TILT = 0.09  # ... and lies at most this many rows per column askew (about 5 degrees)
LINE_EDGE = 0.5  # ... and is taken to darken the rows beside it by this share of its ink
LINE_SEARCH = 400  # the lines' slope is sought in a map shrunk to this side, then refined
DIGIT_CELLS = 128  # the digit's pieces are found in cells of about 1/128 of the picture's side
DIGIT_NEAR = 0.25  # pieces within this share of the largest piece's size are the digit's
NOISY = 0.01  # a picture whose paper's noise is more than this (in brightness) is denoised
DENOISE = 3  # ... by lowering its ink by this many times the noise left after smoothing


class ImageError(ValueError):
    """An image that cannot be made an MNIST input: unreadable, not PNG/JPEG, too large, blank."""


class ImageTooLarge(ImageError):
    """More pixels than MAX_PIXELS, or sides further apart than MAX_ASPECT (refused from the
    header, before decoding)."""


class BlankImage(ImageError):
    """A readable image with nothing drawn on it."""


def require_pillow():
    """Pillow's Image module; ImportError with the install command when Pillow is missing."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(PILLOW_INSTALL_HINT) from None
    return Image


def mnist_input(data):
    """PNG or JPEG bytes -> float32 (28, 28) in [0, 1], light digit on dark, like MNIST."""
    return digit_to_mnist(read_grayscale(data, max_side=WORK_SIDE))


def check_size(width, height):
    """Raise ImageTooLarge unless a width x height image may be decoded: at most MAX_PIXELS
    pixels, and its long side at most MAX_ASPECT times its short side."""
    if width * height > MAX_PIXELS:
        raise ImageTooLarge(f"the image is {width}x{height} pixels, more than the {MAX_PIXELS:,} accepted")
    if max(width, height) > MAX_ASPECT * max(1, min(width, height)):
        raise ImageTooLarge(
            f"the image is {width}x{height} pixels, its long side "
            f"{max(width, height) / max(1, min(width, height)):,.0f} times its "
            f"short side; at most {MAX_ASPECT}:1 is accepted"
        )


def read_grayscale(data, max_side=None):
    """PNG or JPEG bytes -> float32 (H, W) in [0, 1], 1 = white.

    EXIF orientation is applied; transparency is resolved as _grayscale_image says; 16-bit
    greyscale keeps its precision. The size is checked (check_size) from the header, before
    any decoding. With ``max_side``, an image whose longer side is more is shrunk (JPEG by its
    decoder, others by block averages) before it becomes an array, to at most 2 * max_side -
    1 (JPEG) or max_side pixels a side. Raises ImageError (or its subclass ImageTooLarge).
    """
    Image = require_pillow()
    from PIL import ImageOps

    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            width, height = image.size  # from the header: Image.open decodes nothing yet
            check_size(width, height)
            if max_side and max(width, height) > max_side and image.format == "JPEG":
                image.draft(image.mode, (max_side, max_side))  # decoded at 1/2, 1/4 or 1/8 scale
            image.load()
            return _grayscale(_grayscale_image(ImageOps.exif_transpose(image)), max_side)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise ImageTooLarge(f"the image has {pixels}, more than the {MAX_PIXELS:,} accepted") from None
    except Image.UnidentifiedImageError:
        raise ImageError("the image is neither PNG nor JPEG (only PNG or JPEG images are read)") from None
    except Exception as exc:  # Pillow's decoders raise many types for broken files
        raise ImageError(f"the image is unreadable ({type(exc).__name__}: {exc})") from None


def _grayscale_image(image):
    """A decoded image -> a Pillow image of its lightness: mode "L", or "I" for 16-bit.

    An image with transparent pixels whose visible pixels are all one colour (strokes of one
    colour on a transparent background, as drawing apps export them) is read by its alpha:
    opaque = ink, whatever the colour, so that white strokes are not lost on white. Any
    other transparent image is composited on white.
    """
    from PIL import Image, ImageStat

    if image.mode.startswith("I;16") or image.mode == "I":  # 16-bit greyscale PNG
        return image.convert("I")
    if image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        alpha = rgba.getchannel("A")
        if alpha.getextrema()[0] < 255:  # some transparency
            visible = alpha.point(lambda a: 255 if a >= VISIBLE_ALPHA else 0)
            colours = ImageStat.Stat(rgba.convert("RGB"), mask=visible)
            if colours.count[0] > 0 and all(high - low <= ONE_COLOUR for low, high in colours.extrema):
                return alpha.point(lambda a: 255 - a)  # one colour: the alpha is the ink
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("L")
    return image.convert("L")


def _grayscale(image, max_side=None):
    """_grayscale_image's result -> float32 (H, W) in [0, 1], shrunk to max_side if given."""
    if max_side and max(image.size) > max_side:
        factor = -(-max(image.size) // max_side)
        image = image.reduce(factor)  # block averages: cheap, and thin strokes stay as grey
    white = 65535 if image.mode == "I" else 255
    gray = np.asarray(image, dtype=np.float32)
    gray /= white  # in place: a large photo's pixels are copied no more than needed
    return gray.clip(0, 1, out=gray)


def ink_map(gray):
    """Grayscale (H, W) in [0, 1] -> float32 (H, W) in [0, 1]: how much ink each pixel
    holds, 0 = bare paper, peaking at 1. Raises BlankImage when there is none.

    The picture is made dark on light (inverted when its border is dark: _dark_on_light);
    the paper's brightness under the picture's lighting is estimated everywhere (_paper),
    and each pixel's ink is how much darker than that paper it is, as a fraction: 1 - pixel
    / paper, so that a gradient of light, a shadow or grey paper is no ink. Thin ruled lines
    that run across most of the page are taken out (_remove_ruled_lines). In a noisy photo the map is
    smoothed over 3 x 3 pixels and lowered by DENOISE times the noise left (more where the
    paper is darker, as the noise is larger there against it). The rest is stretched to
    peak at 1.
    """
    return _ink_map(gray)[0]


def _ink_map(gray):
    """ink_map's map, and whether the picture was found noisy (and denoised)."""
    gray = np.asarray(gray, dtype=np.float32)
    if not _dark_on_light(gray):
        gray = 1 - gray
    paper = _paper(gray)
    ink = gray / paper
    np.subtract(1, ink, out=ink)
    noisy = _noise(ink, paper) > NOISY
    _remove_ruled_lines(ink)
    if noisy:
        ink = _smooth(ink)
        ink -= DENOISE * _noise(ink, paper) / paper  # more where the paper is darker
    ink.clip(0, 1, out=ink)
    contrast = float(ink.max())
    if contrast < MIN_CONTRAST:
        raise BlankImage("the image is blank: no ink found (nothing stands out from the background)")
    ink /= contrast
    return ink, noisy


def _dark_on_light(gray):
    """Whether the picture's background, its border, is light: brighter than 0.5, or (a dim
    photo of paper) nearer its brightest pixels than its darkest (1st and 99th percentiles)."""
    border = float(np.median(np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])))
    if border > 0.5:
        return True
    darkest, brightest = np.percentile(gray[::4, ::4], [1, 99])
    return border > (darkest + brightest) / 2


def _paper(gray):
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


def _unit(positions, size):
    """Pixel positions along a side of ``size`` pixels -> float32 from -1 to 1."""
    half = max(size - 1, 1) / 2
    return ((np.asarray(positions, dtype=np.float32) - half) / half).astype(np.float32)


def _noise(ink, paper):
    """The standard deviation of the paper's noise, in brightness, in an ink map (not yet
    clipped) over ``paper``: paper pixels scatter around 0 and ink is only positive, so the
    negative values are noise, and half of the paper's noise is negative."""
    negative = np.minimum(ink, 0)
    negative *= paper  # ink is relative to the paper: paper - pixel = ink * paper
    return float(np.sqrt(2 * np.vdot(negative, negative) / ink.size))


def _remove_ruled_lines(ink):
    """Take out of an ink map, in place, thin straight lines that run along most of its rows
    or columns (the ruled lines and the margin line of notebook paper), also when the photo
    is a few degrees askew: see _remove_lines_along_rows. Ink crossing a line is kept."""
    _remove_lines_along_rows(ink)
    _remove_lines_along_rows(ink.T)  # the columns, through a view: still in place


def _remove_lines_along_rows(ink):
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


def _line_level(profiles, shifts, extra):
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


def _centres(strips, strip, width):
    """The strips' middle columns, counted from the map's middle column."""
    return (np.arange(strips) + 0.5) * strip - 0.5 - (width - 1) / 2


def _shifted(profiles, shifts):
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


def _line_slope(ink):
    """The slope (rows per column) at which lines across the map lie, within LINE_TILT:
    the one, in steps that move a line by a pixel across the map, at which the mean of 32
    strips' aligned profiles has most ink in thin rows (the smallest slope of equals). A map
    larger than LINE_SEARCH pixels a side is searched shrunk to it, then around what that
    found, so that the search's cost is bounded."""
    height, width = ink.shape
    factor = -(-max(height, width) // LINE_SEARCH)
    if factor > 1 and min(height, width) >= 8 * factor:
        small = _pool(ink, factor).mean(axis=(1, 3))[: height // factor, : width // factor]
        near = _line_slope(small)
        steps = np.arange(factor + 1)
        slopes = near + np.stack([steps, -steps], axis=1).ravel()[1:] / width
        return _best_slope(ink, slopes)
    steps = np.arange(int(LINE_TILT * width) + 1)
    return _best_slope(ink, np.stack([steps, -steps], axis=1).ravel()[1:] / width)


def _best_slope(ink, slopes):
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


def _opening(profiles, window):
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


def _smooth(ink):
    """The mean of each pixel's 3 x 3 neighbourhood (edges repeated)."""
    padded = np.pad(ink, 1, mode="edge")
    rows = padded[:-2] + padded[1:-1] + padded[2:]
    smooth = rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]
    smooth /= 9
    return smooth


def _digit(ink, noisy):
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
    cells = _pool(inked, cell).any(axis=(1, 3))
    mass = _pool(np.where(inked, ink, 0), cell).sum(axis=(1, 3))
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


def _pool(image, cell):
    """(H, W) -> (H / cell, cell, W / cell, cell), padded with zeros to whole cells."""
    height, width = image.shape
    rows, columns = -(-height // cell), -(-width // cell)
    padded = np.zeros((rows * cell, columns * cell), image.dtype)
    padded[:height, :width] = image
    return padded.reshape(rows, cell, columns, cell)


def _cells_to_pixels(cells, cell, shape):
    return np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1)[: shape[0], : shape[1]]


def _digit_cells(cells, mass):
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


def _components(cells):
    """8-connected pieces of a small boolean array: (labels, count), 0 = not a cell. Runs of
    cells along rows are joined with the runs they touch in the row above (union-find)."""
    parent = [0]

    def root(label):
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
    above, current, row = [], [], -1
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


def digit_to_mnist(gray):
    """Grayscale (H, W) in [0, 1] -> the MNIST input (28, 28) float32: see the module doc.

    Raises BlankImage when nothing stands out from the background.
    """
    from PIL import Image

    digit = _digit(*_ink_map(gray))

    height, width = digit.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = np.asarray(Image.fromarray(digit).resize(size, Image.Resampling.LANCZOS)).clip(0, 1)

    # A bilinear shift puts the centre of mass at (CENTRE, CENTRE) to a fraction of a pixel.
    # The zero border keeps it exact: Pillow repeats edge pixels when it samples past them.
    digit = np.pad(digit, 1)
    y, x = centre_of_mass(digit)
    shift = (1, 0, x - CENTRE, 0, 1, y - CENTRE)  # output pixel (i, j) samples (i + dy, j + dx)
    field = Image.fromarray(digit).transform(
        (FIELD, FIELD), Image.Transform.AFFINE, shift, resample=Image.Resampling.BILINEAR
    )
    field = np.asarray(field, dtype=np.float32).clip(0, 1)
    return field / field.max()  # MNIST's digits peak at 1; scaling and shifting lower thin strokes


def centre_of_mass(image):
    """(row, column) of the intensity-weighted centre of a 2-D array, in pixel indices."""
    image = np.asarray(image, dtype=np.float64)
    total = image.sum()
    rows = image.sum(axis=1) @ np.arange(image.shape[0]) / total
    columns = image.sum(axis=0) @ np.arange(image.shape[1]) / total
    return float(rows), float(columns)

"""A picture of a digit (PNG or JPEG bytes) -> a 28x28 MNIST input, made the way MNIST was.

MNIST's digits were cropped to their bounding box, scaled with anti-aliasing to fit a
20x20 box with their aspect kept, and placed in a 28x28 field with their centre of mass
at its centre; they are light on dark, in [0, 1], and each peaks at 1. ``mnist_input``
does the same to any picture: grayscale, inverted when the digit is dark on light, the
background level taken off, then crop, scale and centre.

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

__all__ = ["ImageError", "ImageTooLarge", "BlankImage", "PILLOW_INSTALL_HINT", "MAX_PIXELS",
           "MAX_ASPECT", "WORK_SIDE", "require_pillow", "mnist_input", "read_grayscale",
           "check_size", "digit_to_mnist", "centre_of_mass"]

PILLOW_INSTALL_HINT = 'reading images needs Pillow: pip install "deepnet[app]"'
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
        raise ImageTooLarge(f"the image is {width}x{height} pixels, more than the "
                            f"{MAX_PIXELS:,} accepted")
    if max(width, height) > MAX_ASPECT * max(1, min(width, height)):
        raise ImageTooLarge(f"the image is {width}x{height} pixels, a strip "
                            f"{max(width, height) / max(1, min(width, height)):,.0f} times longer "
                            f"than it is wide; sides up to {MAX_ASPECT}:1 are accepted")


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
        raise ImageTooLarge(f"the image has {pixels}, more than the {MAX_PIXELS:,} "
                            "accepted") from None
    except Image.UnidentifiedImageError:
        raise ImageError("the image is not a PNG or JPEG: expected a PNG or JPEG image, got "
                         "bytes that are neither") from None
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
            if colours.count[0] > 0 and all(high - low <= ONE_COLOUR
                                            for low, high in colours.extrema):
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


def digit_to_mnist(gray):
    """Grayscale (H, W) in [0, 1] -> the MNIST input (28, 28) float32: see the module doc.

    Raises BlankImage when nothing stands out from the background.
    """
    from PIL import Image

    gray = np.asarray(gray, dtype=np.float32)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    if background > 0.5:  # dark on light: invert
        ink, background = 1 - gray, 1 - background
    else:
        ink = gray.copy()
    contrast = float(ink.max()) - background
    if contrast < MIN_CONTRAST:
        raise BlankImage("the image is blank: no ink found (nothing stands out from the "
                         "background)")
    ink -= background
    ink /= contrast
    ink.clip(0, 1, out=ink)

    inked = ink > INK_THRESHOLD
    rows, columns = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
    digit = ink[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]

    height, width = digit.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = np.asarray(Image.fromarray(digit).resize(size, Image.Resampling.LANCZOS)).clip(0, 1)

    # A bilinear shift puts the centre of mass at (CENTRE, CENTRE) to a fraction of a pixel.
    # The zero border keeps it exact: Pillow repeats edge pixels when it samples past them.
    digit = np.pad(digit, 1)
    y, x = centre_of_mass(digit)
    shift = (1, 0, x - CENTRE, 0, 1, y - CENTRE)  # output pixel (i, j) samples (i + dy, j + dx)
    field = Image.fromarray(digit).transform((FIELD, FIELD), Image.Transform.AFFINE, shift,
                                             resample=Image.Resampling.BILINEAR)
    field = np.asarray(field, dtype=np.float32).clip(0, 1)
    return field / field.max()  # MNIST's digits peak at 1; scaling and shifting lower thin strokes


def centre_of_mass(image):
    """(row, column) of the intensity-weighted centre of a 2-D array, in pixel indices."""
    image = np.asarray(image, dtype=np.float64)
    total = image.sum()
    rows = image.sum(axis=1) @ np.arange(image.shape[0]) / total
    columns = image.sum(axis=0) @ np.arange(image.shape[1]) / total
    return float(rows), float(columns)

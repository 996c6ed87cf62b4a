"""A picture of a digit (PNG or JPEG bytes) -> a 28x28 MNIST input, made the way MNIST was.

MNIST's digits were cropped to their bounding box, scaled with anti-aliasing to fit a
20x20 box with their aspect kept, and placed in a 28x28 field with their centre of mass
at its centre; they are light on dark, in [0, 1], and each peaks at 1. ``mnist_input``
does the same to any picture: grayscale, inverted when the digit is dark on light, the
background level taken off, then crop, scale and centre.

Images are untrusted input (``deepnet serve`` decodes what a request sends): only PNG and
JPEG decoders run, and the pixel count is checked from the header before any decoding.
"""
import io

import numpy as np

__all__ = ["ImageError", "ImageTooLarge", "BlankImage", "PILLOW_INSTALL_HINT", "MAX_PIXELS",
           "require_pillow", "mnist_input", "read_grayscale", "digit_to_mnist", "centre_of_mass"]

PILLOW_INSTALL_HINT = 'reading images needs Pillow: pip install ".[app]" in deepnet\'s source directory (or pip install Pillow)'
FORMATS = ("PNG", "JPEG")
MAX_PIXELS = 16_000_000  # a 16-megapixel photo fits; a decompression bomb does not
FIELD = 28  # MNIST's image side
BOX = 20  # the side of the box the digit is scaled to fit
CENTRE = 14.0  # MNIST's centres of mass, in pixel indices: 14.0 +- 0.5 on both axes
INK_THRESHOLD = 0.1  # ink below this (after contrast stretching) is not part of the digit
MIN_CONTRAST = 0.1  # an image whose ink rises less than this above its background is blank


class ImageError(ValueError):
    """An image that cannot be made an MNIST input: unreadable, not PNG/JPEG, too large, blank."""


class ImageTooLarge(ImageError):
    """More pixels than MAX_PIXELS (refused from the header, before decoding)."""


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
    return digit_to_mnist(read_grayscale(data))


def read_grayscale(data):
    """PNG or JPEG bytes -> float32 (H, W) in [0, 1], 1 = white.

    EXIF orientation is applied; transparent pixels are composited on white; 16-bit
    greyscale keeps its precision. Raises ImageError (or its subclass ImageTooLarge).
    """
    Image = require_pillow()
    from PIL import ImageOps

    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            width, height = image.size  # from the header: Image.open decodes nothing yet
            if width * height > MAX_PIXELS:
                raise ImageTooLarge(f"read_grayscale: the image is {width}x{height} pixels, "
                                    f"more than the {MAX_PIXELS:,} accepted")
            image.load()
            return _grayscale(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"read_grayscale: {exc}") from None
    except Image.UnidentifiedImageError:
        raise ImageError("read_grayscale: expected a PNG or JPEG image, got bytes "
                         "that are neither") from None
    except Exception as exc:  # Pillow's decoders raise many types for broken files
        raise ImageError(f"read_grayscale: unreadable image ({type(exc).__name__}: {exc})") from None


def _grayscale(image):
    from PIL import Image

    if image.mode.startswith("I;16") or image.mode == "I":  # 16-bit greyscale PNG
        gray = np.asarray(image, dtype=np.float32)
        white = 65535
    else:
        if image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
        gray = np.asarray(image.convert("L"), dtype=np.float32)
        white = 255
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
        raise BlankImage("digit_to_mnist: blank image (nothing stands out from the background)")
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

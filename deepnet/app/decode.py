"""Image bytes (PNG or JPEG, untrusted) -> a grayscale array, its size checked from the header
before any decoding; and the errors a picture that cannot be an MNIST input raises.

Only PNG and JPEG decoders run. Decoding takes at most 4 bytes a pixel in Pillow (64 MB at
MAX_PIXELS); with ``max_side`` a large picture is shrunk before it becomes an array. Error
messages speak of the user's image: they are shown to the user as they are.
"""

from __future__ import annotations

import io
import re
from typing import Any, Optional

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "ImageError",
    "ImageTooLarge",
    "BlankImage",
    "PILLOW_INSTALL_HINT",
    "FORMATS",
    "MAX_PIXELS",
    "MAX_ASPECT",
    "WORK_SIDE",
    "require_pillow",
    "check_size",
    "read_grayscale",
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


class ImageError(ValueError):
    """An image that cannot be made an MNIST input: unreadable, not PNG/JPEG, too large, blank."""


class ImageTooLarge(ImageError):
    """More pixels than MAX_PIXELS, or sides further apart than MAX_ASPECT (refused from the
    header, before decoding)."""


class BlankImage(ImageError):
    """A readable image with nothing drawn on it."""


def require_pillow() -> Any:
    """Pillow's Image module; ImportError with the install command when Pillow is missing."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(PILLOW_INSTALL_HINT) from None
    return Image


def check_size(width: int, height: int) -> None:
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


def read_grayscale(data: bytes, max_side: Optional[int] = None) -> NDArray[np.float32]:
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


def _grayscale_image(image: Any) -> Any:
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


def _grayscale(image: Any, max_side: Optional[int] = None) -> NDArray[np.float32]:
    """_grayscale_image's result -> float32 (H, W) in [0, 1], shrunk to max_side if given."""
    if max_side and max(image.size) > max_side:
        factor = -(-max(image.size) // max_side)
        image = image.reduce(factor)  # block averages: cheap, and thin strokes stay as grey
    white = 65535 if image.mode == "I" else 255
    gray = np.asarray(image, dtype=np.float32)
    gray /= white  # in place: a large photo's pixels are copied no more than needed
    return gray.clip(0, 1, out=gray)

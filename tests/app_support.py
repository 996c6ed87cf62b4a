"""What the tests of deepnet.app share: MNIST digits rendered as the pictures a user makes."""

import io
import struct
import zlib

import numpy as np
import pytest

Image = pytest.importorskip("PIL.Image", reason='Pillow is not installed (pip install ".[app]")')

from deepnet.datasets import load_mnist  # noqa: E402
from support import MNIST_DIR  # noqa: E402


def mnist_test_digits(count):
    """The first ``count`` MNIST test images (count, 28, 28) in [0, 1], and their labels."""
    (_, _), (x, t) = load_mnist(normalize=True, flatten=False, root=MNIST_DIR)
    return x[:count, 0], t[:count]


def black_on_white(digit, scale=5, canvas=(300, 260), offset=(40, 30)):
    """An MNIST digit as a user's picture: dark ink on white, ``scale`` times larger,
    somewhere on a bigger white canvas (an "L" image)."""
    ink = Image.fromarray(np.round(255 * (1 - digit)).astype(np.uint8))
    picture = Image.new("L", canvas, 255)
    picture.paste(ink.resize((28 * scale, 28 * scale), Image.Resampling.NEAREST), offset)
    return picture


def encode(image, format="PNG", **options):
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def png_header_only(width, height):
    """A PNG that declares width x height pixels and holds none (a decompression bomb's header)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")

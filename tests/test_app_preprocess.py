"""Pictures -> MNIST inputs (deepnet.app.preprocess), checked against what MNIST itself is."""

import io

import numpy as np
import pytest

from app_support import Image, black_on_white, encode, mnist_test_digits, png_header_only
from deepnet.app import preprocess
from deepnet.app.inference import load_for_inference
from deepnet.app.preprocess import BlankImage, ImageError, ImageTooLarge, centre_of_mass, mnist_input
from support import BOOK_PARAMS


@pytest.fixture(scope="module")
def book_net():
    return load_for_inference(BOOK_PARAMS)


@pytest.fixture(scope="module")
def digit():
    """One MNIST test digit (a 7) as a black-on-white picture."""
    digits, _ = mnist_test_digits(1)
    return black_on_white(digits[0])


def test_mnist_itself_has_its_centres_of_mass_at_pixel_14_and_peaks_at_1():
    # The facts preprocess.CENTRE and the final normalisation rest on.
    digits, _ = mnist_test_digits(1000)
    centres = np.array([centre_of_mass(d) for d in digits])
    assert np.all(np.abs(centres - 14.0) <= 0.55)
    assert abs(centres.mean() - 14.0) < 0.05
    assert digits.max(axis=(1, 2)).min() > 0.99


def test_twenty_mnist_digits_drawn_at_5x_anywhere_on_a_page_read_as_the_originals(book_net):
    digits, _ = mnist_test_digits(20)
    inputs = np.array(
        [mnist_input(encode(black_on_white(d, offset=(13 + 7 * i, 90 - 4 * i)))) for i, d in enumerate(digits)]
    )

    originals = book_net.predict(digits[:, None]).argmax(axis=1)
    round_trip = book_net.predict(inputs[:, None]).argmax(axis=1)
    assert np.array_equal(round_trip, originals)

    for made in inputs:
        assert made.shape == (28, 28) and made.dtype == np.float32
        assert made.min() >= 0 and made.max() == pytest.approx(1)
        # MNIST's own centres are within 0.5 px of (14, 14); the sub-pixel shift is exact.
        assert np.allclose(centre_of_mass(made), (14, 14), atol=1e-3)
    # Not just the same labels: the same pictures, up to resampling.
    assert np.abs(inputs - digits).mean() < 0.05


def test_a_bar_three_times_wider_than_high_keeps_its_aspect_in_the_20x20_box():
    page = Image.new("L", (400, 300), 255)
    page.paste(0, (50, 100, 350, 200))  # 300 x 100 pixels of ink
    made = mnist_input(encode(page))
    # 20 x round(20 / 3) = 20 x 7 pixels of full ink, moved by a sub-pixel shift.
    assert made.sum() == pytest.approx(140, abs=1)
    assert (made.max(axis=0) > 0.5).sum() in (19, 20, 21)
    assert (made.max(axis=1) > 0.5).sum() in (6, 7, 8)


def test_light_on_dark_reads_as_dark_on_light(digit):
    inverted = Image.eval(digit, lambda v: 255 - v)
    assert np.allclose(mnist_input(encode(inverted)), mnist_input(encode(digit)), atol=1e-5)


def _strokes_on_transparent(digit, colour):
    """The digit drawn in one ``colour`` (r, g, b) on a fully transparent background: the
    ink is the alpha channel, as a drawing app exports it."""
    alpha = Image.eval(digit, lambda v: 255 - v)
    return Image.merge("RGBA", [Image.new("L", digit.size, c) for c in colour] + [alpha])


@pytest.mark.parametrize(
    "colour", [(255, 255, 255), (0, 0, 0), (200, 30, 30), (40, 90, 250)], ids=["white", "black", "red", "blue"]
)
def test_strokes_of_any_one_colour_on_a_transparent_background_are_ink(digit, colour):
    made = mnist_input(encode(_strokes_on_transparent(digit, colour)))
    assert np.allclose(made, mnist_input(encode(digit)), atol=0.02)


def test_white_strokes_on_transparent_grey_and_black_read_the_same_digit(digit, book_net):
    white = mnist_input(encode(_strokes_on_transparent(digit, (255, 255, 255))))
    grey_alpha = _strokes_on_transparent(digit, (255, 255, 255)).convert("LA")
    grey = mnist_input(encode(grey_alpha))
    black = mnist_input(encode(_strokes_on_transparent(digit, (0, 0, 0))))
    assert np.allclose(white, black, atol=1e-6) and np.allclose(grey, black, atol=1e-6)
    labels = book_net.predict(np.array([white, grey, black])[:, None]).argmax(axis=1)
    assert list(labels) == [7, 7, 7]


def test_an_opaque_picture_with_an_alpha_channel_is_read_by_its_colours(digit):
    # Fully opaque: the alpha says nothing, the colours are the picture.
    opaque = Image.merge("RGBA", [digit] * 3 + [Image.new("L", digit.size, 255)])
    assert np.allclose(mnist_input(encode(opaque)), mnist_input(encode(digit)), atol=1e-6)


def test_a_picture_of_several_colours_with_transparency_is_composited_on_white(digit):
    # Black strokes on an opaque white card that covers half the canvas, the rest
    # transparent (and black underneath): composited on white, the card's edge is no ink.
    rgba = Image.merge("RGBA", [digit] * 3 + [Image.new("L", digit.size, 255)])
    width, height = digit.size
    rgba.paste((0, 0, 0, 0), (0, 0, width, 20))
    assert np.allclose(mnist_input(encode(rgba)), mnist_input(encode(digit)), atol=0.02)


def test_a_transparent_background_is_white(digit):
    ink = Image.eval(digit, lambda v: 255 - v)
    strokes = Image.merge("RGBA", [Image.new("L", digit.size, 0)] * 3 + [ink])  # black, alpha = ink
    assert np.allclose(mnist_input(encode(strokes)), mnist_input(encode(digit)), atol=0.02)


def test_sixteen_bit_greyscale_keeps_its_levels(digit):
    sixteen = Image.fromarray(np.asarray(digit, dtype=np.uint16) * 257)  # 255 -> 65535
    data = encode(sixteen)
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode.startswith("I")  # it really is a 16-bit PNG
    assert np.allclose(mnist_input(data), mnist_input(encode(digit)), atol=1e-4)


def test_palette_images_with_and_without_transparency(digit):
    palette = digit.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    assert np.allclose(mnist_input(encode(palette)), mnist_input(encode(digit)), atol=0.02)

    # The background's palette entry made black but transparent: it must still read as white.
    transparent = palette.copy()
    background = palette.getpixel((0, 0))
    colours = transparent.getpalette()
    colours[3 * background : 3 * background + 3] = [0, 0, 0]
    transparent.putpalette(colours)
    assert np.allclose(mnist_input(encode(transparent, transparency=background)), mnist_input(encode(digit)), atol=0.02)


@pytest.mark.parametrize(
    "orientation, stored_as",
    [
        (3, Image.Transpose.ROTATE_180),
        (6, Image.Transpose.ROTATE_90),  # a phone held upright: stored on its side
        (8, Image.Transpose.ROTATE_270),
    ],
)
def test_exif_orientation_is_applied(digit, orientation, stored_as):
    exif = Image.Exif()
    exif[0x0112] = orientation
    sideways = encode(digit.transpose(stored_as), exif=exif.tobytes())
    assert np.array_equal(mnist_input(sideways), mnist_input(encode(digit)))


def test_a_jpeg_photo_of_the_digit_reads_the_same(digit, book_net):
    photo = Image.merge("RGB", [digit] * 3)
    jpeg, png = mnist_input(encode(photo, "JPEG", quality=85)), mnist_input(encode(digit))
    assert np.abs(jpeg - png).mean() < 0.02
    assert book_net.predict(jpeg[None, None]).argmax() == book_net.predict(png[None, None]).argmax()


def test_grey_paper_and_grey_ink_are_stretched_to_mnist_contrast(digit):
    dull = Image.eval(digit, lambda v: 90 + v * 100 // 255)  # ink at 90, paper at 190
    assert np.allclose(mnist_input(encode(dull)), mnist_input(encode(digit)), atol=0.03)


@pytest.mark.parametrize("level", [0, 128, 255])
def test_a_blank_picture_is_refused_as_blank(level):
    with pytest.raises(BlankImage, match="blank"):
        mnist_input(encode(Image.new("L", (50, 40), level)))


def test_faint_noise_alone_is_blank():
    noise = np.random.default_rng(0).integers(240, 256, size=(60, 60)).astype(np.uint8)
    with pytest.raises(BlankImage):
        mnist_input(encode(Image.fromarray(noise)))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "neither"),
        (b"not an image at all", "neither"),
        (b"GIF89a" + bytes(40), "neither"),  # a format whose decoder is not run
        (b"\x89PNG\r\n\x1a\n" + bytes(30), "neither"),  # PNG's signature, then no PNG
    ],
    ids=["empty", "text", "gif-header", "png-signature"],
)
def test_unreadable_bytes_raise_image_error_speaking_of_the_image(data, message):
    with pytest.raises(ImageError, match=f"^the image .*{message}"):
        mnist_input(data)


def test_a_truncated_or_corrupted_png_raises_image_error(digit):
    data = encode(digit)
    with pytest.raises(ImageError, match="^the image is unreadable"):
        mnist_input(data[: len(data) // 2])
    middle = len(data) // 2
    corrupted = data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 16]) + data[middle + 16 :]
    with pytest.raises(ImageError, match="^the image is unreadable"):
        mnist_input(corrupted)


def _failures():
    """(what, bytes) of pictures that cannot be read as a digit, one of each kind of error."""
    return [
        ("blank", encode(Image.new("L", (50, 40), 255))),
        ("white on white", encode(Image.new("RGBA", (50, 40), (255, 255, 255, 0)))),
        ("not an image", b"not an image at all"),
        ("truncated", encode(Image.new("L", (50, 40), 0))[:30]),
        ("too many pixels", png_header_only(5000, 4000)),
        ("a decompression bomb", png_header_only(100_000, 100_000)),
        ("a 16,000,000 x 1 strip", png_header_only(16_000_000, 1)),
    ]


@pytest.mark.parametrize("what, data", _failures(), ids=[what for what, _ in _failures()])
def test_error_messages_speak_of_the_users_image_not_of_internal_functions(what, data):
    with pytest.raises(ImageError) as caught:
        mnist_input(data)
    message = str(caught.value)
    assert message.startswith("the image ")
    for internal in ("read_grayscale", "digit_to_mnist", "mnist_input", "_grayscale", "Pillow"):
        assert internal not in message


def test_a_blank_image_says_no_ink_was_found():
    with pytest.raises(BlankImage, match="^the image is blank: no ink found"):
        mnist_input(encode(Image.new("L", (50, 40), 255)))


def test_a_real_gif_is_refused_without_being_decoded(digit):
    with pytest.raises(ImageError, match="PNG or JPEG"):
        mnist_input(encode(digit, "GIF"))


@pytest.fixture
def decodes(monkeypatch):
    """The images whose pixels Pillow was asked to decode (ImageFile.load calls)."""
    from PIL import ImageFile

    calls, load = [], ImageFile.ImageFile.load

    def spy(image):
        calls.append(image.size)
        return load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return calls


@pytest.mark.parametrize("width, height", [(5000, 4000), (100_000, 100_000)])
def test_too_many_pixels_are_refused_from_the_header_before_decoding(width, height, decodes):
    with pytest.raises(ImageTooLarge, match="accepted|exceeds"):
        mnist_input(png_header_only(width, height))
    assert decodes == []


def test_the_pixel_cap_is_inclusive(decodes):
    width = preprocess.MAX_PIXELS // 4000
    with pytest.raises(ImageError) as caught:  # at the cap: decoded, and found to hold nothing
        mnist_input(png_header_only(width, 4000))
    assert not isinstance(caught.value, ImageTooLarge) and decodes == [(width, 4000)]
    with pytest.raises(ImageTooLarge):
        mnist_input(png_header_only(width + 1, 4000))


def _one_bit_strip(width, height):
    strip = Image.new("1", (width, height), 1)
    strip.putpixel((0, 0), 0)
    return encode(strip)


@pytest.mark.parametrize("width, height", [(16_000_000, 1), (1, 16_000_000), (40_000, 100)])
def test_extreme_aspect_ratios_are_refused_from_the_header_before_decoding(width, height, decodes):
    data = _one_bit_strip(width, height)
    assert len(data) < 40_000  # a small file: the cost would be all in decoding and after
    with pytest.raises(ImageTooLarge) as caught:
        mnist_input(data)
    assert decodes == []
    message = str(caught.value)
    assert f"{width}x{height}" in message and f"{preprocess.MAX_ASPECT}:1" in message


def test_a_long_but_plausible_strip_is_still_read():
    page = Image.new("L", (preprocess.MAX_ASPECT * 30, 30), 255)
    page.paste(0, (10, 5, 30, 25))
    assert mnist_input(encode(page)).shape == (28, 28)


def test_the_working_memory_of_a_large_photo_is_bounded(digit):
    # A 16-megapixel picture at the pixel cap: its numpy working arrays stay far below the
    # 64 MB that one float32 copy of it would take.
    import tracemalloc

    big = digit.resize((4000, 4000), Image.Resampling.NEAREST)
    data = encode(big)
    small = mnist_input(encode(digit))
    tracemalloc.start()
    try:
        made = mnist_input(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32_000_000
    assert np.abs(made - small).mean() < 0.02

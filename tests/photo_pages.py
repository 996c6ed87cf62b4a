"""Photo-like pages of MNIST digits: what a phone photo of a digit on paper looks like.

Each page is an MNIST test digit drawn in dark ink, scaled up smoothly onto a larger sheet
of paper (200-400 px), then photographed: uneven lighting, sensor noise, JPEG compression,
and for notebook paper, thin ruled lines. Pages are made from a seed, so that every run sees
the same ones. The conditions:

    clean     dark ink on white paper, evenly lit, no noise, saved as PNG (the drawing case)
    lit       a lighting gradient from 0.45 to 1.0 across the page (any direction), noise, JPEG
    ruled     evenly lit notebook paper: ruled lines every 22-28 px and a margin line, noise, JPEG
    photo     the lit page's gradient on the ruled page, noise, JPEG
    askew     the photo page taken 1 to 2.5 degrees askew (either way), its corners cropped

Run ``python tests/photo_pages.py [COUNT]`` for the book's model's accuracy on COUNT pages of
each condition (default 200), read by deepnet.app.preprocess and by the global-background
preprocessing it replaced (global_background_digit_to_mnist, kept here for comparison).
"""

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CONDITIONS = ("clean", "lit", "ruled", "photo", "askew")
DARKEST_LIGHT = 0.45  # the lighting falls from 1.0 to this across a lit page
NOISE = 0.03  # the sensor noise's standard deviation, in [0, 1] units (about 8 levels of 255)
JPEG_QUALITY = (60, 75)


def photo_page(digit, rng, condition):
    """An MNIST digit (28, 28) in [0, 1], light on dark, as the PNG or JPEG bytes of a photo
    of it written on paper under ``condition`` (one of CONDITIONS), random by ``rng``."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, not {condition!r}")
    height, width = (int(side) for side in rng.integers(200, 401, size=2))
    lost = 0  # what the askew page loses at its edges
    if condition == "askew":
        tilt = rng.uniform(1, 2.5) * rng.choice([-1, 1])  # degrees
        lost = int(np.ceil(np.sin(np.radians(abs(tilt))) * (height + width))) + 2
    side = int(rng.uniform(0.45, 0.75) * (min(height, width) - 2 * lost))  # the 28x28 box
    ink_map = Image.fromarray((digit * 255).astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC)
    ink = np.zeros((height, width), np.float32)
    top = int(rng.integers(lost, height - side - lost + 1))
    left = int(rng.integers(lost, width - side - lost + 1))
    ink[top : top + side, left : left + side] = np.asarray(ink_map, np.float32) / 255

    paper, pen = rng.uniform(0.88, 1.0), rng.uniform(0.08, 0.25)  # reflectances
    reflectance = paper + (pen - paper) * ink
    if condition == "clean":
        return _encode(Image.fromarray(np.round(255 * reflectance / paper).astype(np.uint8)), "PNG")

    tint = np.ones(3, np.float32)
    if condition in ("ruled", "photo", "askew"):
        lines = np.ones((height, 1), np.float32)
        spacing, darkness = int(rng.integers(22, 29)), rng.uniform(0.65, 0.8)
        thickness = int(rng.integers(1, 3))
        for row in range(int(rng.integers(5, spacing)), height, spacing):
            lines[row : row + thickness] = darkness
        margin = np.ones((1, width), np.float32)
        column = int(rng.integers(10, width // 6))
        margin[0, column : column + thickness] = rng.uniform(0.6, 0.8)
        reflectance = reflectance * lines * margin
        tint = np.array([0.97, 0.98, 1.0], np.float32)  # bluish lines on white paper
    light = np.ones((height, width), np.float32)
    if condition in ("lit", "photo", "askew"):
        angle = rng.uniform(0, 2 * np.pi)
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        along = np.cos(angle) * x + np.sin(angle) * y
        along = (along - along.min()) / (along.max() - along.min())
        light = DARKEST_LIGHT + (1 - DARKEST_LIGHT) * along
    seen = (light * reflectance)[..., None] * tint
    seen = seen + rng.normal(0, NOISE, size=seen.shape).astype(np.float32)
    photo = Image.fromarray(np.round(255 * seen.clip(0, 1)).astype(np.uint8), "RGB")
    if condition == "askew":
        photo = photo.rotate(tilt, resample=Image.Resampling.BICUBIC).crop((lost, lost, width - lost, height - lost))
    return _encode(photo, "JPEG", quality=int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)))


def photo_pages(digits, condition, seed=0):
    """The pages of photo_page for each digit, from one seed per (condition, count)."""
    rng = np.random.default_rng([seed, CONDITIONS.index(condition)])
    return [photo_page(digit, rng, condition) for digit in digits]


def accuracy(net, pages, labels, reader):
    """The share of ``pages`` (PNG or JPEG bytes) that ``net`` reads as ``labels`` when
    ``reader`` (bytes -> (28, 28)) makes their inputs; an unreadable page counts as wrong."""
    from deepnet.app.preprocess import ImageError

    inputs, read = [], []
    for page in pages:
        try:
            inputs.append(reader(page))
            read.append(True)
        except ImageError:
            inputs.append(np.zeros((28, 28), np.float32))
            read.append(False)
    predicted = net.predict(np.array(inputs)[:, None]).argmax(axis=1)
    return float(np.mean((predicted == labels) & np.array(read)))


def _encode(image, format, **options):
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def global_background_digit_to_mnist(gray):
    """The preprocessing that deepnet.app.preprocess.digit_to_mnist replaced, for comparison:
    one background level for the whole picture (the median of its border), and every pixel
    darker than it by a tenth of the contrast counted as ink."""
    from deepnet.app.preprocess import BlankImage, BOX, CENTRE, FIELD, centre_of_mass

    gray = np.asarray(gray, dtype=np.float32)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    if background > 0.5:
        ink, background = 1 - gray, 1 - background
    else:
        ink = gray.copy()
    contrast = float(ink.max()) - background
    if contrast < 0.1:
        raise BlankImage("the image is blank")
    ink = ((ink - background) / contrast).clip(0, 1)
    inked = ink > 0.1
    rows, columns = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
    digit = ink[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]
    height, width = digit.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = np.asarray(Image.fromarray(digit).resize(size, Image.Resampling.LANCZOS)).clip(0, 1)
    digit = np.pad(digit, 1)
    y, x = centre_of_mass(digit)
    shift = (1, 0, x - CENTRE, 0, 1, y - CENTRE)
    field = Image.fromarray(digit).transform(
        (FIELD, FIELD), Image.Transform.AFFINE, shift, resample=Image.Resampling.BILINEAR
    )
    field = np.asarray(field, dtype=np.float32).clip(0, 1)
    return field / field.max()


def global_background_input(data):
    from deepnet.app.preprocess import WORK_SIDE, read_grayscale

    return global_background_digit_to_mnist(read_grayscale(data, max_side=WORK_SIDE))


def main(count=200):
    here = Path(__file__).resolve().parent
    sys.path[:0] = [str(here), str(here.parent)]  # support, and deepnet from this checkout
    from support import BOOK_PARAMS, MNIST_DIR
    from deepnet.app.inference import load_for_inference
    from deepnet.app.preprocess import mnist_input
    from deepnet.datasets import load_mnist

    (_, _), (x, t) = load_mnist(normalize=True, flatten=False, root=MNIST_DIR)
    digits, labels = x[:count, 0], t[:count]
    net = load_for_inference(BOOK_PARAMS)
    print(
        f"the book's model on MNIST itself ({count} digits): "
        f"{np.mean(net.predict(x[:count]).argmax(axis=1) == labels):.1%}"
    )
    print(f"{'condition':10} {'local background':>17} {'global background':>18}")
    for condition in CONDITIONS:
        pages = photo_pages(digits, condition)
        new = accuracy(net, pages, labels, mnist_input)
        old = accuracy(net, pages, labels, global_background_input)
        print(f"{condition:10} {new:17.1%} {old:18.1%}")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))

"""Random data augmentation of image batches: affine jitter and elastic distortion.

``Augment`` draws for every image a rotation, a scale, a shear and a shift about the image
centre and, optionally, a Simard-style elastic field (Simard, Steinkraus and Platt 2003:
uniform noise in [-1, 1) per pixel and axis, blurred by a Gaussian of standard deviation
``elastic_sigma`` pixels, times ``elastic_alpha``), then warps the batch with one bilinear
interpolation in the compiled kernels (deepnet.functional.affine_warp / elastic_warp).

All randomness comes from the numpy Generator it is given (the trainer's seeded one), and
the arithmetic around the kernels runs single-threaded, so the augmented batch depends only
on the generator's state and the input, never on the thread count.

    augment = Augment.from_spec("rotation=10,scale=0.1,shift=2.5,elastic=34:4", rng=rng)
    x_batch = augment(x_batch)           # (N, C, H, W) -> same shape and dtype
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

from deepnet import _config
from deepnet import functional as F
from deepnet.functional import Array

# What numpy.random.default_rng takes: a seed, a Generator (used as it is), or None (fresh entropy).
Seed = Union[None, int, np.random.Generator]

__all__ = ["Augment", "affine_theta", "elastic_field", "gaussian_blur_matrix"]

MAX_SIGMA = 1000.0  # pixels: far flatter than any image is wide, and a kernel still small to build
MAX_SHIFT = 1000.0  # pixels: far more than any image is wide (1e308 overflowed the uniform draw)
MAX_ALPHA = 10000.0  # elastic alpha, pixels per unit of blurred noise (Simard: 34)
MAX_FILL = 1000.0  # |fill|: far outside [0, 1] images, and finite in float16


def affine_theta(
    image_shape: Sequence[int],
    rotation: ArrayLike = 0.0,
    scale: ArrayLike = 1.0,
    shear: ArrayLike = 0.0,
    shift: ArrayLike = (0.0, 0.0),
) -> NDArray[np.float64]:
    """The (N, 2, 3) matrices for functional.affine_warp of these per-image transforms.

    Rotation, shear and scale are about the image centre ((H - 1) / 2, (W - 1) / 2), the
    shift comes last.  Each argument is a number or one value per image (shift: one pair
    per image).

    Parameters
    ----------
    image_shape : (int, int)
        (H, W).
    rotation : float or array_like
        Degrees, counter-clockwise as displayed (rows down).
    scale : float or array_like
        Zoom factor (> 1 enlarges).
    shear : float or array_like
        Degrees, lower rows move right.
    shift : (float, float) or array_like
        (rows, cols) in pixels, (1, 0) moves the content one pixel down.

    Returns
    -------
    numpy.ndarray
        float64 (N, 2, 3): for each image, the map from output to input coordinates.
    """
    shift = np.asarray(shift, dtype=np.float64)
    rotation, scale, shear, shift_rows, shift_cols = np.broadcast_arrays(
        np.radians(rotation), np.asarray(scale, dtype=np.float64), np.radians(shear), shift[..., 0], shift[..., 1]
    )
    cos, sin, tan = np.cos(rotation), np.sin(rotation), np.tan(shear)
    # The forward map is output = A (input - centre) + centre + shift with
    # A = scale * [[1, 0], [tan, 1]] @ [[cos, -sin], [sin, cos]]; theta holds its inverse.
    inverse = np.empty(rotation.shape + (2, 2))
    inverse[..., 0, 0] = (cos - tan * sin) / scale
    inverse[..., 0, 1] = sin / scale
    inverse[..., 1, 0] = (-sin - tan * cos) / scale
    inverse[..., 1, 1] = cos / scale
    centre = (np.array(image_shape, dtype=np.float64) - 1) / 2
    moved_centre = np.stack([centre[0] + shift_rows, centre[1] + shift_cols], axis=-1)
    theta = np.empty(rotation.shape + (2, 3))
    theta[..., :2] = inverse
    theta[..., 2] = centre - np.einsum("...ij,...j->...i", inverse, moved_centre)
    return theta.reshape(-1, 2, 3)


@functools.lru_cache(maxsize=32)
def gaussian_blur_matrix(size: int, sigma: float) -> NDArray[np.float32]:
    """(size, size) float32 matrix G with G @ v = v blurred by a Gaussian of sigma pixels.

    The kernel is scipy.ndimage.gaussian_filter1d's (truncated at 4 sigma, normalised to
    sum 1) with zeros beyond the ends (its mode="constant").  A dense matrix costs the same
    as the convolution when the kernel is as wide as the image, and BLAS runs it fast.

    Parameters
    ----------
    size : int
        The length of the vectors blurred.
    sigma : float
        The Gaussian's standard deviation, in pixels.

    Returns
    -------
    numpy.ndarray
        float32 (size, size), read-only (cached and shared).
    """
    radius = int(4.0 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    offset = np.arange(size)[None, :] - np.arange(size)[:, None]  # column - row
    matrix = np.where(np.abs(offset) <= radius, taps[np.clip(offset + radius, 0, 2 * radius)], 0.0)
    matrix = matrix.astype(np.float32)
    matrix.flags.writeable = False  # shared by every caller through the cache
    return matrix


def elastic_field(
    rng: np.random.Generator,
    n_images: int,
    image_shape: Tuple[int, int],
    alpha: float,
    sigma: float,
    out: Optional[NDArray[np.float32]] = None,
) -> NDArray[np.float32]:
    """Simard displacement fields (n_images, 2, H, W), float32, in pixels:
    alpha * (uniform noise in [-1, 1), blurred along rows and columns by sigma).

    Parameters
    ----------
    rng : numpy.random.Generator
        Draws the noise.
    n_images : int
        Fields to draw.
    image_shape : (int, int)
        (H, W).
    alpha : float
        The fields' scale, in pixels.
    sigma : float
        The blur's standard deviation, in pixels.
    out : numpy.ndarray, optional
        A float32 (n_images, 2, H, W) array to write the fields into (Augment reuses one:
        fresh pages cost more than the arithmetic here).

    Returns
    -------
    numpy.ndarray
        The fields: ``out`` when given.
    """
    H, W = image_shape
    shape = (n_images, 2, H, W)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    noise = rng.random(shape, dtype=np.float32, out=out)
    noise *= 2
    noise -= 1
    # Single-threaded BLAS: bit-identical for any thread count, and faster at this size.
    with _config.single_threaded_blas():
        blurred_rows = np.matmul(gaussian_blur_matrix(H, sigma), noise)
        np.matmul(
            blurred_rows.reshape(-1, W), np.float32(alpha) * gaussian_blur_matrix(W, sigma).T, out=out.reshape(-1, W)
        )
    return out


class Augment:
    """A batch transform: x (N, C, H, W) -> the batch randomly warped, same shape and dtype.

    Each call draws, in this order and only for the parts that are on: angles, scales,
    shears, shifts, elastic noise.

    Parameters
    ----------
    rotation : float
        Degrees, uniform in [-rotation, rotation].
    scale : float
        Zoom factor uniform in [1 - scale, 1 + scale].
    shear : float
        Degrees, uniform in [-shear, shear].
    shift : float
        Pixels, rows and columns each uniform in [-shift, shift].
    elastic_alpha, elastic_sigma : float
        A Simard elastic field (off while elastic_alpha is 0).
    fill : float
        The value outside the image.
    rng : int or numpy.random.Generator, optional
        The Generator to draw from (or a seed); ``augment(x, rng=...)`` draws from another
        one for that call (a trainer passes its own).
    """

    SPEC_KEYS = ("rotation", "scale", "shear", "shift", "elastic", "fill")

    def __init__(
        self,
        rotation: float = 0.0,
        scale: float = 0.0,
        shear: float = 0.0,
        shift: float = 0.0,
        elastic_alpha: float = 0.0,
        elastic_sigma: float = 4.0,
        fill: float = 0.0,
        rng: Seed = None,
    ) -> None:
        self.rotation = _number("rotation", rotation, 0, 180)
        self.scale = _number("scale", scale, 0, 1, upper_open=True)
        self.shear = _number("shear", shear, 0, 90, upper_open=True)
        self.shift = _number("shift", shift, 0, MAX_SHIFT)
        self.elastic_alpha = _number("elastic_alpha", elastic_alpha, 0, MAX_ALPHA)
        self.elastic_sigma = _number("elastic_sigma", elastic_sigma, 0, MAX_SIGMA, lower_open=True)
        self.fill = _number("fill", fill, -MAX_FILL, MAX_FILL)
        self.rng = np.random.default_rng(rng)
        self._field: Optional[NDArray[np.float32]] = (
            None  # the elastic fields' buffer, reused while the batch shape stays
        )

    @classmethod
    def from_spec(cls, spec: str, rng: Seed = None) -> Augment:
        """Build from a comma-separated spec such as "rotation=10,scale=0.1,shift=2.5,
        elastic=34:4" (elastic=ALPHA:SIGMA; keys: rotation, scale, shear, shift, elastic,
        fill; "none" or "" for no augmentation).  A malformed spec raises ValueError quoting
        it; values out of range raise the constructor's error, which names the parameter.

        Parameters
        ----------
        spec : str
            The transform's settings.
        rng : int or numpy.random.Generator, optional
            As for ``Augment``.

        Returns
        -------
        Augment
            The transform.
        """
        where = f"deepnet.augment.Augment.from_spec({spec!r})"
        if not isinstance(spec, str):
            raise TypeError(f"deepnet.augment.Augment.from_spec: spec must be a str, got {spec!r}")
        kwargs: Dict[str, float] = {}
        items = [] if spec.strip().lower() in ("", "none") else spec.split(",")
        for item in items:
            key, sep, value = (part.strip() for part in item.partition("="))
            if not sep or not value:
                raise ValueError(f"{where}: expected KEY=VALUE items separated by commas, got {item!r}")
            if key not in cls.SPEC_KEYS:
                raise ValueError(f"{where}: unknown key {key!r}; known keys: {', '.join(cls.SPEC_KEYS)}")
            if key in kwargs or (key == "elastic" and "elastic_alpha" in kwargs):
                raise ValueError(f"{where}: {key} is given twice")
            if key == "elastic":
                alpha, colon, sigma = value.partition(":")
                if not colon:
                    raise ValueError(f"{where}: elastic takes ALPHA:SIGMA (e.g. elastic=34:4), got {value!r}")
                kwargs["elastic_alpha"] = _parse_float(where, "elastic alpha", alpha)
                kwargs["elastic_sigma"] = _parse_float(where, "elastic sigma", sigma)
            else:
                kwargs[key] = _parse_float(where, key, value)
        return cls(**kwargs, rng=rng)

    def spec(self) -> str:
        """The spec string from_spec turns back into this transform.

        Returns
        -------
        str
            E.g. "rotation=10.0,shift=2.5" ("none" when nothing is on).
        """
        parts = [
            f"{key}={getattr(self, key)!r}" for key in ("rotation", "scale", "shear", "shift") if getattr(self, key)
        ]
        if self.elastic_alpha:
            parts.append(f"elastic={self.elastic_alpha!r}:{self.elastic_sigma!r}")
        if self.fill:
            parts.append(f"fill={self.fill!r}")
        return ",".join(parts) or "none"

    def __repr__(self) -> str:
        return f"Augment.from_spec({self.spec()!r})"

    def __call__(self, x: ArrayLike, rng: Optional[np.random.Generator] = None) -> Array:
        """The batch, randomly warped.

        Parameters
        ----------
        x : array_like
            Images (N, C, H, W), floating point.
        rng : numpy.random.Generator, optional
            Draw from this generator instead of the transform's own.

        Returns
        -------
        array
            The warped images, of x's shape and dtype (x as an array when no part is on).
        """
        caller = "deepnet.augment.Augment"
        x = F.as_float_array(x, "x", caller, ndim=4)
        rng = self.rng if rng is None else rng
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"{caller}: rng must be a numpy Generator, got {type(rng).__name__}")
        N, _, H, W = x.shape
        theta = self._draw_theta(rng, N, (H, W))
        if self.elastic_alpha:
            if self._field is None or self._field.shape != (N, 2, H, W):
                self._field = np.empty((N, 2, H, W), dtype=np.float32)
            field = elastic_field(rng, N, (H, W), self.elastic_alpha, self.elastic_sigma, out=self._field)
            return F.elastic_warp(x, field, self.fill, theta=theta, caller=caller)
        if theta is not None:
            return F.affine_warp(x, theta, self.fill, caller=caller)
        return x

    def _draw_theta(
        self, rng: np.random.Generator, n: int, image_shape: Tuple[int, int]
    ) -> Optional[NDArray[np.float64]]:
        """The batch's affine matrices, or None when no affine part is on."""
        if not (self.rotation or self.scale or self.shear or self.shift):
            return None
        rotation = rng.uniform(-self.rotation, self.rotation, n) if self.rotation else 0.0
        scale = rng.uniform(1 - self.scale, 1 + self.scale, n) if self.scale else 1.0
        shear = rng.uniform(-self.shear, self.shear, n) if self.shear else 0.0
        shift = rng.uniform(-self.shift, self.shift, (n, 2)) if self.shift else np.zeros((n, 2))
        return affine_theta(image_shape, rotation, scale, shear, shift)


def _number(
    name: str,
    value: Any,
    lower: float = -math.inf,
    upper: float = math.inf,
    lower_open: bool = False,
    upper_open: bool = False,
) -> float:
    """value as a float, checked to be finite and within its bounds."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"deepnet.augment.Augment: {name} must be a real number, got {value!r}")
    value = float(value)
    too_low = value <= lower if lower_open else value < lower
    too_high = value >= upper if upper_open else value > upper
    if not math.isfinite(value) or too_low or too_high:
        bounds = f"{'(' if lower_open else '['}{lower:g}, {upper:g}{')' if upper_open else ']'}"
        raise ValueError(f"deepnet.augment.Augment: {name} must be finite and in {bounds}, got {value!r}")
    return value


def _parse_float(where: str, name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: {name} must be a number, got {text!r}") from None

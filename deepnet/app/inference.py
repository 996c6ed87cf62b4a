"""A trained network, shared by ``deepnet predict`` and the threads of ``deepnet serve``."""

from __future__ import annotations
import os

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..layers import softmax

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, DTypeLike, NDArray

    from ..models import Sequential
    from ..models.files import PathLike
    from ..quant import Int8Model

__all__ = ["MAX_IMAGE_BYTES", "NonFiniteOutput", "load_for_inference", "DigitReader", "image_error_message"]

# The largest image file read, by ``deepnet predict`` from disk and by ``deepnet serve`` from
# a request's body: checked from the file's size (or Content-Length) before reading.
MAX_IMAGE_BYTES = 16 * 1024 * 1024  # a phone's JPEG photo fits (a 16-megapixel one is 3-8 MB)


class NonFiniteOutput(ArithmeticError):
    """The network's scores hold NaN or infinity: a broken model, never an answer.

    ``rows``: the indices of the inputs whose scores are not finite; ``probabilities``:
    all the probabilities computed (those rows NaN)."""

    def __init__(self, rows: NDArray[np.intp], total: int, kinds: Sequence[str], probabilities: NDArray[Any]) -> None:
        self.rows = rows
        self.probabilities = probabilities
        which = "the image" if total == 1 else f"{len(rows)} of the {total} images"
        super().__init__(
            f"the network's output is not finite ({' and '.join(kinds)}) for {which}: "
            f"expected finite scores; the model's parameters are broken "
            f"(NaN, infinite, or so large that they overflow)"
        )


def load_for_inference(path: PathLike, dtype: Optional[DTypeLike] = None) -> Union[Sequential, Int8Model]:
    """The model saved in ``path`` (any model file, a parameter .npz, the book's .pkl, an
    int8 model file or an ONNX file of the operators deepnet has: deepnet.onnx.load),
    computing in ``dtype`` (default float32; an int8 model's float steps compute in float32).
    ValueError for parameters that could only give meaningless predictions (NaN or infinite
    values)."""
    from ..models import load_model

    dtype = np.dtype(np.float32 if dtype is None else dtype)
    if os.fspath(path).endswith(".onnx"):
        try:
            from ..onnx import load as load_onnx
        except ImportError as exc:  # the onnx package, an optional extra
            raise ValueError(f"{os.fspath(path)}: reading ONNX files needs the onnx package ({exc})") from exc
        network: Union[Sequential, Int8Model] = load_onnx(path, dtype)
    else:
        network = load_model(path, dtype=dtype)
    for name, value in network.named_arrays().items():
        if not np.isfinite(value).all():
            raise ValueError(f"{path}: {name!r} holds NaN or infinite values (a diverged run?)")
    return network


class DigitReader:
    """Probabilities, feature maps and first-layer filters of one network, for any thread.

    The layers keep the arrays of their last forward pass, so every pass through the
    network runs on one worker thread, one at a time; callers wait for their result.
    (One long-lived thread also keeps one OpenMP thread team: a new calling thread for
    each request would start a new team each time, 2 ms a request.)
    """

    def __init__(self, network: Union[Sequential, Int8Model]) -> None:
        from ..models.compiled import for_inference

        self.network = network
        self._scores = for_inference(network).predict  # a compiled plan where one runs the network
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepnet-network")

    def probabilities(self, inputs: ArrayLike) -> NDArray[np.float64]:
        """Softmax of the scores for float32 inputs (N, 28, 28): float64 (N, 10)."""
        batch = np.asarray(inputs, dtype=np.float32)[:, None]
        scores = np.asarray(self._worker.submit(self._scores, batch).result(), dtype=np.float64)
        finite = np.isfinite(scores).all(axis=1)
        with np.errstate(invalid="ignore"):
            probabilities = softmax(scores)
        if not finite.all():
            kinds = [
                kind
                for kind, present in (("NaN", np.isnan(scores).any()), ("infinity", np.isinf(scores).any()))
                if present
            ]
            probabilities[~finite] = np.nan
            raise NonFiniteOutput(np.flatnonzero(~finite), len(scores), kinds, probabilities)
        return probabilities

    def feature_maps(self, image: ArrayLike) -> List[Tuple[str, NDArray[Any]]]:
        """[(name, output (C, H, W))] of each layer whose output is a stack of maps (the
        convolutions, fused with their ReLU, and the poolings) for one (28, 28) input."""
        x = np.asarray(image, dtype=np.float32)[None, None]
        return self._worker.submit(self._feature_maps, x).result()

    def _feature_maps(self, x: NDArray[Any]) -> List[Tuple[str, NDArray[Any]]]:
        from ..quant import Int8Model

        if isinstance(self.network, Int8Model):  # its steps' maps, dequantized
            return self.network.feature_maps(x[0])
        maps: List[Tuple[str, NDArray[Any]]] = []
        counts: Dict[str, int] = {}
        for layer in self.network.layers:
            x = layer.forward(x)
            if x.ndim != 4:  # past the last map: the classifier's vectors
                break
            kind = type(layer).__name__
            counts[kind] = counts.get(kind, 0) + 1
            maps.append((f"{kind} {counts[kind]}", x[0].copy()))
        return maps

    def first_filters(self) -> Optional[NDArray[Any]]:
        """The first convolution's filters (FN, C, FH, FW), or None for a net without one."""
        from ..quant import Int8Model

        if isinstance(self.network, Int8Model):  # w_q * w_scale
            return self.network.first_filters()
        for layer in self.network.layers:
            weights = getattr(layer, "W", None)
            if weights is not None and weights.ndim == 4:
                return np.array(weights)
        return None


def image_error_message(exc: BaseException) -> str:
    """The message of a preprocess.ImageError for the user: one line, about their image,
    without the name of the function that raised it ("digit_to_mnist: blank image" ->
    "blank image")."""
    from . import preprocess

    text = " ".join(str(exc).split())
    while True:
        name, colon, rest = text.partition(": ")
        if not (colon and name.isidentifier() and callable(getattr(preprocess, name, None))):
            return text or type(exc).__name__
        text = rest
